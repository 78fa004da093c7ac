"""Amaranth-simulator unit tests of the rtl/ blocks against naive Python models, plus small
end-to-end programs on the whole SushiAccel compared with the golden model (no Verilator)."""
import random
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from sushi.config import PRESETS, AccelConfig
from sushi.isa import ISA_VERSION, LUT_BYTES, Op, encode, pack_params, requant
from rtl.accel import SushiAccel
from rtl.csr import CSR_MAP
from rtl.pe_array import PeArray
from rtl.postproc import LATENCY, Postproc
from rtl.weight_fetch import ResidencyCheck
from rtl.window import WindowGen

TINY = PRESETS["tiny"]
TINY_PB = PRESETS["tiny-pb"]


def _run(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-8, if_exists=True)
    sim.add_testbench(tb)
    sim.run()


def _pack(vals, bits):
    m = (1 << bits) - 1
    return sum((int(v) & m) << (bits * i) for i, v in enumerate(vals))


def _unpack(x, bits, n, signed=True):
    out = []
    for i in range(n):
        v = (x >> (bits * i)) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


# ----------------------------------------------------------------------------- postproc
@pytest.mark.parametrize("cfg", [TINY, PRESETS["8x8"]], ids=["tiny", "8x8"])
def test_postproc_matches_requant(cfg):
    V = cfg.pe_cols
    dut = Postproc(cfg)
    rng = random.Random(1)
    beats = []
    for _ in range(400):
        acc = [rng.randint(-2**31, 2**31 - 1) if rng.random() < .3 else rng.randint(-9000, 9000) for _ in range(V)]
        bias = [rng.randint(-2**31, 2**31 - 1) if rng.random() < .1 else rng.randint(-3000, 3000) for _ in range(V)]
        mult = [rng.randint(0, 65535) for _ in range(V)]
        sh = [rng.choice([0, 1, 2, 7, 15, 16, 24, 31, 40, 63]) if rng.random() < .5 else rng.randint(0, 63)
              for _ in range(V)]
        lo, hi = rng.choice([(-128, 127), (0, 127), (0, 48), (-5, 5)])
        beats.append((acc, bias, mult, sh, lo, hi))
    exp = []
    for acc, bias, mult, sh, lo, hi in beats:
        x = ((np.array(acc, np.int64) + np.array(bias)) + 2**31) % 2**32 - 2**31    # int32 wrap
        exp.append([int(v) for v in requant(x, np.array(mult), np.array(sh), lo, hi)])
    got = []

    async def tb(ctx):
        for n in range(len(beats) + LATENCY + 1):
            if ctx.get(dut.o_valid):
                got.append((ctx.get(dut.o_tag), _unpack(ctx.get(dut.o_data), 8, V)))
            if n >= len(beats):
                ctx.set(dut.i.valid, 0)
            else:
                acc, bias, mult, sh, lo, hi = beats[n]
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.acc, _pack(acc, 32)); ctx.set(dut.i.bias, _pack(bias, 32))
                ctx.set(dut.i.mult, _pack(mult, 16)); ctx.set(dut.i.shift, _pack(sh, 6))
                ctx.set(dut.i.lo, lo); ctx.set(dut.i.hi, hi); ctx.set(dut.i.tag, n)
            await ctx.tick()
    _run(dut, tb)
    assert [t for t, _ in got] == list(range(len(beats)))
    assert [y for _, y in got] == exp


# ----------------------------------------------------------------------------- PE array
@pytest.mark.parametrize("cfg", [TINY, PRESETS["16x8"]], ids=["tiny", "16x8"])
def test_pe_array_dense_and_depthwise(cfg):
    R, V = cfg.pe_rows, cfg.pe_cols
    dut = PeArray(cfg)
    rng = np.random.default_rng(2)
    # pixels: (dw, [(a, w, dsel)] steps)
    pixels = []
    for p in range(12):
        dw = p % 3 == 2
        n = int(rng.integers(1, 6))
        steps = [(rng.integers(-128, 128, V), rng.integers(-128, 128, (R, V)), int(rng.integers(0, R)))
                 for _ in range(n)]
        pixels.append((dw, steps))
    exp = []
    for dw, steps in pixels:
        acc = np.zeros(R, np.int64)
        for a, w, d in steps:
            if dw:
                acc[:V] += w[d] * a
            else:
                acc += w @ a
        exp.append([int(v) for v in acc])
    got = []

    async def tb(ctx):
        seq = [(dw, i == 0, i == len(steps) - 1, s, k) for k, (dw, steps) in enumerate(pixels)
               for i, s in enumerate(steps)]
        for cyc in range(len(seq) + 4):
            if ctx.get(dut.res_valid):
                got.append((ctx.get(dut.res_tag), _unpack(ctx.get(dut.res), 32, R)))
            if cyc < len(seq):
                dw, first, last, (a, w, d), k = seq[cyc]
                ctx.set(dut.en, 1); ctx.set(dut.first, first); ctx.set(dut.last, last)
                ctx.set(dut.dw, dw); ctx.set(dut.dsel, d); ctx.set(dut.tag, k)
                ctx.set(dut.a, _pack(a, 8)); ctx.set(dut.w, _pack(w.reshape(-1), 8))
            else:
                ctx.set(dut.en, 0)
            await ctx.tick()
    _run(dut, tb)
    assert [t for t, _ in got] == list(range(len(pixels)))
    for (dw, _), e, (_, g) in zip(pixels, exp, got):
        assert (g[:V] if dw else g) == (e[:V] if dw else e)


# ----------------------------------------------------------------------------- window generator
def _window_model(c):
    out = []
    unit = 0
    for oy in range(c["out_h"]):
        for ox in range(c["out_w"]):
            for cc in range(c["n_cc"]):
                for ky in range(c["kh"]):
                    for kx in range(c["kw"]):
                        for ch in range(c["n_c"]):
                            iy, ix = oy * c["sh"] + ky - c["pad_top"], ox * c["sw"] + kx - c["pad_left"]
                            inpad = 0 <= iy < c["in_h"] and 0 <= ix < c["in_w"]
                            addr = (c["ioff"] + (iy * c["in_w"] + ix) * c["stride"] + cc + ch) & 0xFFFF
                            first = ky == 0 and kx == 0 and ch == 0
                            last = ky == c["kh"] - 1 and kx == c["kw"] - 1 and ch == c["n_c"] - 1
                            ob = c["obase0"] + unit * c["ostride"]
                            out.append((addr if inpad else None, inpad, first, last, ob))
                unit += 1
    return out


@pytest.mark.parametrize("c", [
    dict(in_h=5, in_w=4, out_h=5, out_w=4, kh=3, kw=3, sh=1, sw=1, pad_top=1, pad_left=1, n_cc=1, n_c=2,
         stride=2, ioff=10, obase0=100, ostride=3),
    dict(in_h=7, in_w=6, out_h=3, out_w=3, kh=3, kw=2, sh=2, sw=2, pad_top=0, pad_left=1, n_cc=3, n_c=1,
         stride=3, ioff=0, obase0=7, ostride=1),
    dict(in_h=2, in_w=3, out_h=1, out_w=1, kh=2, kw=3, sh=1, sw=1, pad_top=0, pad_left=0, n_cc=1, n_c=4,
         stride=4, ioff=5, obase0=0, ostride=1),
])
def test_window_gen_matches_loops(c):
    dut = WindowGen()
    exp = _window_model(c)
    got = []

    async def tb(ctx):
        for k, v in c.items():
            ctx.set(getattr(dut, k), v)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        rng = random.Random(3)
        for _ in range(4 * len(exp) + 10):
            adv = rng.random() < 0.7
            ctx.set(dut.advance, adv)
            if ctx.get(dut.valid) and adv:
                inpad = bool(ctx.get(dut.inpad))
                got.append((ctx.get(dut.addr) if inpad else None, inpad, bool(ctx.get(dut.first)),
                            bool(ctx.get(dut.last)), ctx.get(dut.obase)))
                if ctx.get(dut.final):
                    assert len(got) == len(exp)
            await ctx.tick()
    _run(dut, tb)
    assert got == exp


# ----------------------------------------------------------------------------- residency hook
def test_residency_without_pb_always_misses():
    dut = ResidencyCheck(TINY)

    async def tb(ctx):
        for t in (0, 1, 77, (1 << 24) - 1):
            ctx.set(dut.tile_id, t)
            assert ctx.get(dut.hit) == 0
    _run(dut, tb)


def test_residency_table_ranges():
    cfg = AccelConfig(pe_rows=4, pe_cols=4, pb_tiles=64, res_ranges=3)
    dut = ResidencyCheck(cfg)

    async def tb(ctx):
        for t in (0, 10, 20):                       # reset: every entry invalid
            ctx.set(dut.tile_id, t)
            assert ctx.get(dut.hit) == 0
        for idx, lo, n, slot in ((1, 10, 10, 40), (2, 5, 10, 0), (0, 0, 0, 7)):
            ctx.set(dut.set_en, 1); ctx.set(dut.set_idx, idx); ctx.set(dut.set_lo, lo)
            ctx.set(dut.set_n, n); ctx.set(dut.set_slot, slot)
            await ctx.tick()
        ctx.set(dut.set_en, 0)
        # entry 1 (lower index) wins over entry 2 on their overlap 10..14
        for t, h, sl in ((4, 0, None), (5, 1, 0), (9, 1, 4), (10, 1, 40), (14, 1, 44), (19, 1, 49), (20, 0, None)):
            ctx.set(dut.tile_id, t)
            assert ctx.get(dut.hit) == h, t
            if h:
                assert ctx.get(dut.slot) == sl, t
        ctx.set(dut.set_en, 1); ctx.set(dut.set_idx, 1); ctx.set(dut.set_n, 0)     # invalidate
        await ctx.tick()
        ctx.set(dut.set_en, 0)
        ctx.set(dut.tile_id, 10)
        assert ctx.get(dut.hit) == 1 and ctx.get(dut.slot) == 5
        ctx.set(dut.tile_id, 15)
        assert ctx.get(dut.hit) == 0
    _run(dut, tb)


# ----------------------------------------------------------------------------- whole accelerator
_COUNTERS = {"w_rd_bytes": "W_RD_BYTES", "act_rd_bytes": "ACT_RD_BYTES", "act_wr_bytes": "ACT_WR_BYTES",
             "instr_rd_bytes": "INSTR_RD_BYTES", "pb_hits": "PB_HITS", "pb_misses": "PB_MISSES",
             "instrs": "INSTRS", "mac_cycles": "MAC_CYCLES", "cycles": "CYCLES"}


def run_accel_seq(cfg, runs, stall: float = 0.0, seed: int = 0, max_cycles: int = 200_000) -> list:
    """Run programs one after the other on ONE SushiAccel (state such as the Persistent Buffer is
    kept between them, as on the hardware) in the Amaranth simulator, with a Python DRAM model that
    stalls each handshake with probability ``stall``.  ``runs``: [(dram bytearray, prog_base,
    weight_base)]; each dram is updated in place; returns the CSRs after each program."""
    V = cfg.pe_cols
    dut = SushiAccel(cfg)
    rng = random.Random(seed)
    out = []

    async def tb(ctx):
        async def csr_write(a, v):
            ctx.set(dut.csr.addr, a); ctx.set(dut.csr.wdata, v); ctx.set(dut.csr.we, 1)
            await ctx.tick()
            ctx.set(dut.csr.we, 0)

        def csr_read(a):
            ctx.set(dut.csr.addr, a)
            return ctx.get(dut.csr.rdata)

        for dram, prog_base, weight_base in runs:
            res = {}
            res["status_before"] = csr_read(CSR_MAP["STATUS"])
            await csr_write(CSR_MAP["PROG_BASE"], prog_base)
            await csr_write(CSR_MAP["WEIGHT_BASE"], weight_base)
            await csr_write(CSR_MAP["CTRL"], 1)
            res["busy_after_start"] = csr_read(CSR_MAP["STATUS"]) & 1
            rq, wq = deque(), deque()
            ctx.set(dut.csr.addr, CSR_MAP["STATUS"])
            for _ in range(max_cycles):
                go = lambda: rng.random() >= stall
                rc_rdy, wc_rdy, wd_rdy, have = go(), go(), go(), bool(rq) and go()
                ctx.set(dut.rd_cmd.ready, rc_rdy)
                ctx.set(dut.wr_cmd.ready, wc_rdy)
                ctx.set(dut.wr_data.ready, wd_rdy and bool(wq))
                ctx.set(dut.rd_data.valid, have)
                if have:
                    ctx.set(dut.rd_data.data, int.from_bytes(dram[rq[0]:rq[0] + V], "little"))
                if ctx.get(dut.rd_cmd.valid) and rc_rdy:
                    a, n = ctx.get(dut.rd_cmd.addr), ctx.get(dut.rd_cmd.len)
                    assert a % V == 0 and n > 0 and a + n * V <= len(dram), (hex(a), n)
                    rq.extend(a + i * V for i in range(n))
                if have and ctx.get(dut.rd_data.ready):
                    rq.popleft()
                if ctx.get(dut.wr_cmd.valid) and wc_rdy:
                    a, n = ctx.get(dut.wr_cmd.addr), ctx.get(dut.wr_cmd.len)
                    assert a % V == 0 and n > 0 and a + n * V <= len(dram), (hex(a), n)
                    wq.extend(a + i * V for i in range(n))
                if wd_rdy and wq and ctx.get(dut.wr_data.valid):
                    a = wq.popleft()
                    dram[a:a + V] = ctx.get(dut.wr_data.data).to_bytes(V, "little")
                st = ctx.get(dut.csr.rdata)
                if st & 2 and not st & 1:
                    break
                await ctx.tick()
            else:
                raise TimeoutError(f"no done within {max_cycles} cycles")
            assert not rq and not wq
            ctx.set(dut.rd_data.valid, 0)
            res["status"] = st
            res["error"] = (st >> 8) & 0xFF
            for k, n in _COUNTERS.items():
                res[k] = csr_read(CSR_MAP[n])
            res["hw_id"] = csr_read(CSR_MAP["HW_ID"])
            out.append(res)
            await ctx.tick()

    _run(dut, tb)
    return out


def run_accel(cfg, dram: bytearray, prog_base: int, weight_base: int, stall: float = 0.0,
              seed: int = 0, max_cycles: int = 200_000) -> dict:
    """One program on a fresh SushiAccel (see :func:`run_accel_seq`)."""
    return run_accel_seq(cfg, [(dram, prog_base, weight_base)], stall, seed, max_cycles)[0]


def _check_seq_vs_golden(cfg, runs, stall=0.0, seed=0):
    """Run a sequence of programs on one accelerator and on one GoldenModel; every DRAM byte and
    every counter (and the error code) must agree after each program."""
    golden = pytest.importorskip("sim.golden")
    assert len({id(d) for d, _, _ in runs}) == len(runs), "give every program its own DRAM bytearray"
    refs = [bytearray(d) for d, _, _ in runs]
    got = run_accel_seq(cfg, runs, stall=stall, seed=seed)
    gm = golden.GoldenModel(cfg)
    exps = []
    for k, ((dram, pb, wb), ref, g) in enumerate(zip(runs, refs, got)):
        exp = gm.run(ref, pb, wb).as_dict()
        exps.append(exp)
        assert dram == ref, f"program {k}: DRAM differs"
        assert {n: g[n] for n in exp} == exp, f"program {k}"
        assert g["status"] & 3 == 2
    return got, exps


def _check_vs_golden(cfg, dram, prog_base, weight_base, stall=0.0):
    golden = pytest.importorskip("sim.golden")
    ref = bytearray(dram)
    got = run_accel(cfg, dram, prog_base, weight_base, stall=stall)
    exp = golden.GoldenModel(cfg).run(ref, prog_base, weight_base).as_dict()
    assert dram == ref
    assert {k: got[k] for k in exp} == exp
    return got


def _conv_program(cfg, rng, dw=0, kh=3, kw=3, sh=1, sw=1, pt=1, pl=1, in_h=5, in_w=5, cin_w=2,
                  n_groups=2, gap=0):
    """LOAD input, CONV, STORE output, HALT; tile strides ``gap`` apart to break bursts."""
    R, V = cfg.pe_rows, cfg.pe_cols
    RW = R // V
    out_h, out_w = (in_h + 2 * pt - kh) // sh + 1, (in_w + 2 * pl - kw) // sw + 1
    if dw:
        cout_w, tsg, tsky, tskx, nrec = cin_w, -(-kh * kw // R) + gap, 0, 0, n_groups * V
    else:
        cout_w, tskx, nrec = n_groups * RW, cin_w + gap, n_groups * R
        tsky = kw * tskx
        tsg = kh * tsky
    ntiles = n_groups * tsg
    in_words, out_words = in_h * in_w * cin_w, out_h * out_w * cout_w
    par = 1024
    inp = par + (nrec * 8 + V - 1) // V * V + 64
    out = inp + in_words * V + 64
    wb = out + out_words * V + 64
    dram = bytearray(wb + ntiles * R * V)
    dram[par:par + nrec * 8] = pack_params(rng.integers(-2000, 2000, nrec), rng.integers(1, 30000, nrec),
                                           rng.integers(10, 20, nrec))
    dram[inp:inp + in_words * V] = rng.integers(-128, 128, in_words * V).astype(np.int8).tobytes()
    dram[wb:] = rng.integers(-128, 128, ntiles * R * V).astype(np.int8).tobytes()
    ia, oa = 3, 3 + in_words + 2
    prog = [encode(Op.LOAD, buf_addr=ia, n_words=in_words, dram_addr=inp),
            encode(Op.CONV, dw=dw, kh=kh, kw=kw, sh=sh, sw=sw, pad_top=pt, pad_left=pl, in_h=in_h, in_w=in_w,
                   out_h=out_h, out_w=out_w, cin_w=cin_w, cout_w=cout_w, n_groups=n_groups, in_addr=ia,
                   out_addr=oa, clamp_lo=0, clamp_hi=127, tile_base=0, tile_sg=tsg, tile_sky=tsky,
                   tile_skx=tskx, param_addr=par),
            encode(Op.STORE, buf_addr=oa, n_words=out_words, dram_addr=out),
            encode(Op.HALT)]
    p = b"".join(prog)
    dram[:len(p)] = p
    return dram, 0, wb


@pytest.mark.parametrize("kw", [
    dict(), dict(gap=1), dict(kh=1, kw=1, pt=0, pl=0, cin_w=1, n_groups=3), dict(sh=2, sw=2, in_h=7, in_w=6),
    dict(dw=1, cin_w=3, n_groups=3), dict(dw=1, kh=5, kw=5, pt=2, pl=2, sh=2, sw=2, in_h=7, in_w=7),
], ids=["dense3x3", "gaps", "1x1", "stride2", "dw3x3", "dw5x5s2"])
def test_accel_conv_matches_golden(kw):
    cfg = TINY
    got = _check_vs_golden(cfg, *_conv_program(cfg, np.random.default_rng(5), **kw),
                           stall=0.3 if kw.get("gap") else 0.0)
    assert got["hw_id"] == (ISA_VERSION << 24) | (cfg.pe_rows << 8) | cfg.pe_cols


def test_accel_conv_16x8():
    cfg = PRESETS["16x8"]
    _check_vs_golden(cfg, *_conv_program(cfg, np.random.default_rng(6), in_h=4, in_w=4, cin_w=2, n_groups=2),
                     stall=0.2)


def _pool_add_program(cfg, rng, mode, kh=3, kw=3, sh=2, sw=2, pt=1, pl=1, in_h=7, in_w=6, c_w=2):
    V = cfg.pe_cols
    out_h, out_w = (in_h + 2 * pt - kh) // sh + 1, (in_w + 2 * pl - kw) // sw + 1
    inw, outw = in_h * in_w * c_w, out_h * out_w * c_w
    inp = 1024
    out = inp + inw * V + 64
    dram = bytearray(out + 2 * outw * V + 64)
    dram[inp:inp + inw * V] = rng.integers(-128, 128, inw * V).astype(np.int8).tobytes()
    ia, oa = 7, 8 + inw
    ob = oa + outw
    prog = [encode(Op.LOAD, buf_addr=ia, n_words=inw, dram_addr=inp),
            encode(Op.POOL, mode=mode, kh=kh, kw=kw, sh=sh, sw=sw, pad_top=pt, pad_left=pl, in_h=in_h,
                   in_w=in_w, out_h=out_h, out_w=out_w, c_w=c_w, in_addr=ia, out_addr=oa, mult=1234,
                   shift=12, clamp_lo=-20 if mode == 0 else -128, clamp_hi=100),
            encode(Op.ADD, a_addr=oa, b_addr=ia, out_addr=ob, n_words=outw, mult_a=40000, mult_b=9000,
                   shift=15, clamp_lo=-128, clamp_hi=127),
            encode(Op.ADD, a_addr=ob, b_addr=oa, out_addr=oa, n_words=outw, mult_a=3, mult_b=65535,
                   shift=0, clamp_lo=0, clamp_hi=127),
            encode(Op.STORE, buf_addr=oa, n_words=2 * outw, dram_addr=out),
            encode(Op.HALT)]
    p = b"".join(prog)
    dram[:len(p)] = p
    return dram, 0, 0


@pytest.mark.parametrize("mode,kw", [(0, {}), (1, {}), (1, dict(kh=4, kw=5, sh=1, sw=1, pt=0, pl=0, in_h=4, in_w=5)),
                                     (0, dict(kh=1, kw=1, sh=1, sw=1, pt=0, pl=0, c_w=1))],
                         ids=["max3x3s2", "avg3x3s2", "global_avg", "max1x1"])
def test_accel_pool_add_matches_golden(mode, kw):
    _check_vs_golden(TINY, *_pool_add_program(TINY, np.random.default_rng(7), mode, **kw), stall=0.2)


def test_accel_load_store_bursts_split(monkeypatch):
    import rtl.dma
    monkeypatch.setattr(rtl.dma, "MAX_BURST", 3)
    cfg, V = TINY, TINY.pe_cols
    dram = bytearray(1024)
    dram[256:256 + 10 * V] = bytes(range(10 * V))
    prog = [encode(Op.LOAD, buf_addr=9, n_words=10, dram_addr=256),
            encode(Op.LOAD, buf_addr=30, n_words=0, dram_addr=256),
            encode(Op.STORE, buf_addr=9, n_words=10, dram_addr=512), encode(Op.HALT)]
    dram[:128] = b"".join(prog)
    got = _check_vs_golden(cfg, dram, 0, 0, stall=0.4)
    assert dram[512:512 + 10 * V] == bytes(range(10 * V))
    assert got["act_rd_bytes"] == got["act_wr_bytes"] == 10 * V and got["instrs"] == 4


@pytest.mark.parametrize("raw,code", [
    (bytes([9]) + bytes(31), 1), (bytes([0xFF]) + bytes(31), 1),
    (encode(Op.LOADSG, entry=0, tile_lo=0, n_tiles=1, pb_slot=0), 3),        # no PB at all
    (encode(Op.LOADSG, entry=8, tile_lo=0, n_tiles=0, pb_slot=0), 3),        # entry >= res_ranges
], ids=["unknown9", "unknown255", "loadsg_no_pb", "loadsg_bad_entry"])
def test_accel_error_codes_then_next_start_runs(raw, code):
    """An error stops the program (STATUS shows it until the next START); the next START runs a
    real program correctly and clears the error."""
    cfg = TINY
    bad = bytearray(_conv_program(cfg, np.random.default_rng(1), kh=1, kw=1, pt=0, pl=0, in_h=2, in_w=2,
                                  cin_w=1, n_groups=1)[0])
    bad[32:64] = raw
    good, _, wb = _conv_program(cfg, np.random.default_rng(2), kh=1, kw=1, pt=0, pl=0, in_h=3, in_w=3)
    got, _ = _check_seq_vs_golden(cfg, [(bad, 32, wb), (good, 0, wb)])
    assert got[0]["error"] == code and got[0]["instrs"] == 1 and got[0]["busy_after_start"] == 1
    assert got[1]["status_before"] >> 8 == code          # still shown until the next START
    assert got[1]["error"] == 0 and got[1]["mac_cycles"] > 0


def test_start_ignored_while_busy_and_counters_reset():
    cfg = TINY
    dram = bytearray(2048)
    dram[:64] = encode(Op.LOAD, buf_addr=0, n_words=100, dram_addr=512) + encode(Op.HALT)
    dut = SushiAccel(cfg)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.rd_cmd.ready, 1)
        ctx.set(dut.csr.addr, CSR_MAP["CTRL"]); ctx.set(dut.csr.wdata, 1); ctx.set(dut.csr.we, 1)
        await ctx.tick()
        ctx.set(dut.csr.addr, CSR_MAP["STATUS"]); ctx.set(dut.csr.we, 0)
        assert ctx.get(dut.csr.rdata) & 1
        for _ in range(5):
            await ctx.tick()
        ctx.set(dut.csr.addr, CSR_MAP["PROG_BASE"]); ctx.set(dut.csr.wdata, 0x40); ctx.set(dut.csr.we, 1)
        await ctx.tick()
        ctx.set(dut.csr.addr, CSR_MAP["CTRL"]); ctx.set(dut.csr.wdata, 1)   # ignored: busy
        await ctx.tick()
        ctx.set(dut.csr.we, 0)
        ctx.set(dut.csr.addr, CSR_MAP["CYCLES"])
        seen["cycles"] = ctx.get(dut.csr.rdata)
        ctx.set(dut.csr.addr, CSR_MAP["PROG_BASE"])
        seen["prog_base"] = ctx.get(dut.csr.rdata)
    _run(dut, tb)
    assert seen["cycles"] >= 6 and seen["prog_base"] == 0x40


@pytest.mark.parametrize("name", ["tiny", "8x8", "16x8"])
def test_generate_verilog(tmp_path, name):
    import json
    from gen.verilog import generate
    v = generate(name, tmp_path)
    text = v.read_text()
    assert "module sushi_accel(" in text
    meta = json.loads((tmp_path / "accel.json").read_text())
    names = [p["name"] for p in meta["ports"]]
    for p in ("clk", "rst", "csr__addr", "csr__rdata", "rd_cmd__len", "rd_data__data", "wr_data__ready"):
        assert p in names and p in text
    assert meta["csr_map"]["HW_ID"] == 13 and meta["accel"]["name"] == name


# ----------------------------------------------------------------------------- ISA v2: LUT, MUL
def _lut_mul_program(cfg, rng, n_pix=7, c_w=3, mult=777, shift=9, lo=-50, hi=90):
    V = cfg.pe_cols
    n = n_pix * c_w
    x = rng.integers(-128, 128, n * V).astype(np.int8)
    x[:256] = np.arange(256).astype(np.uint8).view(np.int8)[:min(256, n * V)]   # every table index
    s = rng.integers(-128, 128, c_w * V).astype(np.int8)
    table = rng.integers(-128, 128, LUT_BYTES).astype(np.int8)
    xa, sa, ta, oa = 1024, 1024 + n * V + 64, 2048 + n * V, 3072 + n * V
    dram = bytearray(oa + 3 * n * V + 64)
    dram[xa:xa + n * V] = x.tobytes()
    dram[sa:sa + c_w * V] = s.tobytes()
    dram[ta:ta + LUT_BYTES] = table.tobytes()
    prog = [encode(Op.LOAD, buf_addr=0, n_words=n, dram_addr=xa),
            encode(Op.LOAD, buf_addr=500, n_words=c_w, dram_addr=sa),
            encode(Op.LUT, in_addr=0, out_addr=200, n_words=n, lut_addr=ta),
            encode(Op.LUT, in_addr=0, out_addr=0, n_words=0, lut_addr=ta),            # empty: table read only
            encode(Op.MUL, a_addr=200, b_addr=500, out_addr=600, n_pix=n_pix, c_w=c_w, mult=mult, shift=shift,
                   clamp_lo=lo, clamp_hi=hi),
            encode(Op.MUL, a_addr=0, b_addr=500, out_addr=0, n_pix=n_pix, c_w=c_w, mult=65535, shift=0,
                   clamp_lo=-128, clamp_hi=127),                                        # in place, shift 0
            encode(Op.LUT, in_addr=200, out_addr=200, n_words=n, lut_addr=ta),       # in place
            encode(Op.STORE, buf_addr=0, n_words=n, dram_addr=oa),
            encode(Op.STORE, buf_addr=200, n_words=n, dram_addr=oa + n * V),
            encode(Op.STORE, buf_addr=600, n_words=n, dram_addr=oa + 2 * n * V),
            encode(Op.HALT)]
    p = b"".join(prog)
    dram[:len(p)] = p
    return dram, 0, 0


@pytest.mark.parametrize("cfg,kw", [(TINY, {}), (PRESETS["8x8"], dict(n_pix=5, c_w=2, shift=0, lo=-128, hi=127))],
                         ids=["tiny", "8x8"])
def test_accel_lut_mul_match_golden(cfg, kw):
    got = _check_vs_golden(cfg, *_lut_mul_program(cfg, np.random.default_rng(12), **kw), stall=0.2)
    assert got["w_rd_bytes"] == 3 * LUT_BYTES


# ----------------------------------------------------------------------------- ISA v2: Persistent Buffer
def _sg(ranges) -> bytes:
    return b"".join([encode(Op.LOADSG, entry=e, tile_lo=lo, n_tiles=n, pb_slot=s) for e, lo, n, s in ranges]
                    + [encode(Op.HALT)])


def test_accel_pb_residency_sequence():
    """One accelerator, one golden model, a sequence of programs: a conv with nothing resident, a
    SubGraph load (overlapping entries: the first wins; a gap in the middle breaks the bursts), the
    conv with hits, an invalidation, an overflowing LOADSG (error 3, the LOADSG before it applied,
    nothing of the bad one), the conv again (correct after the error), a bad entry index, a swap to
    a full-residency SubGraph and the conv once more."""
    cfg = TINY_PB                    # 4x4, pb_tiles=64, res_ranges=8
    base, _, wb = _conv_program(cfg, np.random.default_rng(21), kh=3, kw=3, in_h=3, in_w=3, cin_w=2,
                                n_groups=2)           # tiles 0..35
    progs = {
        "sg1": _sg([(3, 0, 10, 50), (0, 4, 8, 0), (5, 20, 12, 20)]),    # 0..3 @50.., 4..11 @0.. (entry 0 wins), 20..31
        "inval": _sg([(0, 0, 0, 0)]),                                  # 4..9 fall back to entry 3
        "overflow": _sg([(1, 12, 4, 40), (2, 0, 30, 40), (4, 0, 1, 0)]),
        "bad_entry": _sg([(9, 0, 1, 0)]),
        "swap": _sg([(e, 0, 0, 0) for e in range(8)] + [(7, 0, 36, 28)]),
    }
    at = {}
    img = bytearray(base)
    for k, p in progs.items():
        at[k] = len(img)
        img += p
    seq = ["conv", "sg1", "conv", "inval", "conv", "overflow", "conv", "bad_entry", "conv", "swap", "conv"]
    runs = [(bytearray(img), at.get(k, 0), wb) for k in seq]
    got, exp = _check_seq_vs_golden(cfg, runs, stall=0.15, seed=3)
    r = dict(zip(range(len(seq)), got))
    assert r[0]["pb_hits"] == 0 and r[0]["pb_misses"] == 36
    assert r[1]["w_rd_bytes"] == 30 * cfg.tile_bytes and r[1]["error"] == 0
    assert r[2]["pb_hits"] == 24 and r[2]["pb_misses"] == 12
    assert r[4]["pb_hits"] == 22                      # 0..9 (entry 3) + 20..31
    assert r[5]["error"] == 3 and r[5]["instrs"] == 2 and r[5]["w_rd_bytes"] == 4 * cfg.tile_bytes
    assert r[6]["pb_hits"] == 26 and r[6]["error"] == 0   # + 12..15 from the LOADSG before the bad one
    assert r[7]["error"] == 3 and r[7]["w_rd_bytes"] == 0
    assert r[10]["pb_hits"] == 36 and r[10]["pb_misses"] == 0
    assert r[10]["w_rd_bytes"] == exp[10]["w_rd_bytes"] == 2 * cfg.pe_rows * 8    # records only
    # a resident SubGraph is faster: same conv, all tiles hit vs all miss
    assert r[10]["cycles"] < r[0]["cycles"]


def test_accel_pb_dw_and_1x1_hits():
    """Depthwise and 1x1 convs with a partly resident weight set on the 8x8 geometry with a PB."""
    cfg = AccelConfig(name="pb8", pe_rows=8, pe_cols=8, act_buf_words=1024, wbuf_tiles=32, pb_tiles=16,
                      res_ranges=2)
    dwimg, _, wb = _conv_program(cfg, np.random.default_rng(31), dw=1, kh=5, kw=5, pt=2, pl=2, in_h=3, in_w=3,
                                 cin_w=2, n_groups=2)          # NT = 4 tiles per group: 0..7
    pwimg, _, wb2 = _conv_program(cfg, np.random.default_rng(32), kh=1, kw=1, pt=0, pl=0, in_h=2, in_w=2,
                                  cin_w=3, n_groups=2)          # tiles 0..5
    sgimg = bytearray(max(len(dwimg), len(pwimg)))
    sgimg[:] = dwimg + bytes(len(sgimg) - len(dwimg))
    sgimg[512:512 + 3 * 32] = _sg([(1, 1, 2, 14), (0, 5, 3, 0)])
    runs = [(bytearray(sgimg), 512, wb), (bytearray(dwimg), 0, wb), (bytearray(pwimg), 0, wb2)]
    got, _ = _check_seq_vs_golden(cfg, runs, stall=0.1)
    assert got[1]["pb_hits"] == 5 and got[2]["pb_hits"] == 3
