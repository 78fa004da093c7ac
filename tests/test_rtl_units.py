"""Amaranth-simulator unit tests of the rtl/ blocks against naive Python models, plus small
end-to-end programs on the whole SushiAccel compared with the golden model (no Verilator)."""
import random
from collections import deque
from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from sushi.config import PRESETS, AccelConfig
from sushi.isa import ISA_VERSION, LUT_BYTES, Op, decode, encode, pack_params, requant
from rtl.accel import SushiAccel
from rtl.csr import CSR_MAP
from rtl.pe_array import PeArray, latency as pe_latency
from rtl.postproc import Postproc, latency as pp_latency
from rtl.window import WindowGen

from pbprog import box_load, pbkey

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
        for n in range(len(beats) + pp_latency(cfg) + 1):
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
        steps = [(rng.integers(-128, 128, V), rng.integers(-128, 128, (R, V)), int(rng.integers(0, R)),
                  bool(rng.random() < .8)) for _ in range(n)]
        pixels.append((dw, steps))
    exp = []
    for dw, steps in pixels:
        acc = np.zeros(R, np.int64)
        for a, w, d, inpad in steps:
            a = a * inpad           # a padding step reads zeros
            if dw:
                acc[:V] += w[d] * a
            else:
                acc += w @ a
        exp.append([int(v) for v in acc])
    got = []

    async def tb(ctx):
        seq = [(dw, i == 0, i == len(steps) - 1, s, k) for k, (dw, steps) in enumerate(pixels)
               for i, s in enumerate(steps)]
        for cyc in range(len(seq) + pe_latency(cfg) + 2):
            if ctx.get(dut.res_valid):
                got.append((ctx.get(dut.res_tag), _unpack(ctx.get(dut.res), 32, R)))
            if cyc < len(seq):
                dw, first, last, (a, w, d, inpad), k = seq[cyc]
                ctx.set(dut.en, 1); ctx.set(dut.first, first); ctx.set(dut.last, last); ctx.set(dut.inpad, inpad)
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
@pytest.mark.parametrize("regs", [True, False], ids=["timing-regs", "small-fpga"])
def test_window_gen_matches_loops(c, regs, monkeypatch):
    monkeypatch.setattr("rtl.bus.TIMING_REGS", regs)      # both forms: same steps, same cycles
    dut = WindowGen()
    exp = _window_model(c)
    got = []

    async def tb(ctx):
        for k, v in c.items():
            ctx.set(getattr(dut, k), v)
        await ctx.tick()            # the configuration is stable from a cycle before start
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


@pytest.mark.parametrize("kw", [dict(gap=1), dict(dw=1, kh=5, kw=5, pt=2, pl=2, sh=2, sw=2, in_h=7, in_w=7)],
                         ids=["dense-gaps", "dw5x5s2"])
def test_small_fpga_forms_same_cycles(kw, monkeypatch):
    """Without the timing registers (iCE40 builds: compares instead of registered flags in the
    weight fetcher, no registered copies of the window configuration) the outputs and every cycle
    are those of the default form, with a PB residency entry in play."""
    cfg = TINY_PB
    cycles = []
    for regs in (True, False):
        monkeypatch.setattr("rtl.bus.TIMING_REGS", regs)
        img, pb, wb = _conv_program(cfg, np.random.default_rng(5), **kw)
        body = _conv_body(img)
        f = decode(body[1]).fields
        progs = {"sg": _prog(box_load(f, 1, 2, 1, 0)), "conv": _prog(pbkey(1), body)}
        img, at = _images(img, progs)
        got, _ = _check_seq_vs_golden(cfg, [(bytearray(img), at[k], wb) for k in ("sg", "conv")],
                                      stall=0.2 if kw.get("gap") else 0.0, seed=4)
        assert got[1]["pb_hits"] > 0 and got[1]["pb_misses"] > 0
        cycles.append([g["cycles"] for g in got])
    assert cycles[0] == cycles[1]


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
    (bytes([11]) + bytes(31), 1), (bytes([0xFF]) + bytes(31), 1),
    (encode(Op.LOADSG, tile_lo=0, n_tiles=1, pb_slot=0), 3),                 # no PB at all
    (encode(Op.LOADSG, tile_lo=0, n_tiles=0, pb_slot=1), 3),
    (encode(Op.SETRES, key=0, rows=1, c_res=1, pb_slot=0), 3),               # no PB: no box
    (encode(Op.SETRES, key=0, rows=0, c_res=3, pb_slot=1), 3),
    (encode(Op.SETRES, key=64, rows=0, c_res=0, pb_slot=0), 3),              # key >= res_entries
    (encode(Op.PBKEY, key=64, on=1), 3),                                     # PBKEY on, key >= res_entries
    (encode(Op.PBKEY, key=255, on=1), 3),
], ids=["unknown11", "unknown255", "loadsg_no_pb", "loadsg_slot", "setres_no_pb", "setres_slot",
        "setres_bad_key", "pbkey_bad_key", "pbkey_255"])
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


# ----------------------------------------------------------------------------- ISA v4: Persistent Buffer
def _prog(*parts) -> bytes:
    """A program from instructions (bytes) and lists of them; HALT appended."""
    out = []
    for p in parts:
        out += [p] if isinstance(p, bytes) else list(p)
    return b"".join(out + [encode(Op.HALT)])


def _conv_body(img) -> list:
    """LOAD, CONV, STORE of a :func:`_conv_program` image (its HALT dropped)."""
    return [bytes(img[k:k + 32]) for k in (0, 32, 64)]


def _images(base, progs: dict) -> tuple:
    """``base`` image with every program of ``progs`` appended; -> (image, {name: address})."""
    img, at = bytearray(base), {}
    for k, p in progs.items():
        at[k] = -(-len(img) // 64) * 64
        img += bytes(at[k] - len(img)) + p
    return img, at


def test_accel_pb_instrs_without_pb():
    """No PB: an empty SETRES, PBKEY off (any key) and PBKEY on a valid key are fine (nothing hits)."""
    cfg = TINY
    img, _, wb = _conv_program(cfg, np.random.default_rng(3), kh=3, kw=3, in_h=3, in_w=3, cin_w=2, n_groups=1)
    body = _conv_body(img)
    img, at = _images(img, {"p": _prog(encode(Op.SETRES, key=63, rows=0, c_res=0, pb_slot=0),
                                       encode(Op.SETRES, key=0, rows=5, c_res=0, pb_slot=0),
                                       encode(Op.LOADSG, tile_lo=7, n_tiles=0, pb_slot=0),
                                       encode(Op.PBKEY, key=200, on=0), pbkey(0), body, pbkey(63), body[1])})
    got, _ = _check_seq_vs_golden(cfg, [(bytearray(img), at["p"], wb)], stall=0.1)
    assert got[0]["error"] == 0 and got[0]["pb_hits"] == 0 and got[0]["pb_misses"] == 2 * 18


def test_accel_pb_residency_sequence():
    """One accelerator, one golden model, a sequence of programs (layer boxes, docs/isa.md): a conv
    with nothing resident, a SubGraph load (a whole-column box of rows 0..9 and a one-column box of
    12 rows, one LOADSG per tile), the conv with either key (hits break the DRAM bursts), PBKEY off,
    a key whose entry is invalid, PBKEY persisting only within its program, an invalidation, an
    overflowing LOADSG (error 3: the LOADSG and SETRES before it applied, nothing of the bad one),
    the conv again (correct after the error), bad SETRES / PBKEY (error 3) and the conv once more."""
    cfg = replace(TINY_PB, res_entries=8)         # 4x4, pb_tiles=64
    img, _, wb = _conv_program(cfg, np.random.default_rng(21), kh=3, kw=3, in_h=3, in_w=3, cin_w=2,
                               n_groups=2)           # tiles 0..35: row i (18), column c (2): id 2i + c
    body = _conv_body(img)
    f = decode(body[1]).fields
    progs = {
        "conv": _prog(body),
        "sg1": _prog(box_load(f, 3, 10, 2, 30), box_load(f, 5, 12, 1, 0)),     # 20 + 12 tiles
        "k3": _prog(pbkey(3), body),
        "k5": _prog(pbkey(5), body),
        "off": _prog(pbkey(3), pbkey(None), body),
        "k7": _prog(pbkey(7), body),                                            # valid key, no entry
        "k5_k3_off": _prog(pbkey(5), body, pbkey(3), body, pbkey(None), body),
        "key_only": _prog(pbkey(3)),
        "inval": _prog(encode(Op.SETRES, key=3, rows=0, c_res=5, pb_slot=0)),
        "overflow": _prog(encode(Op.LOADSG, tile_lo=0, n_tiles=36, pb_slot=28),
                          encode(Op.SETRES, key=3, rows=18, c_res=2, pb_slot=28),
                          encode(Op.LOADSG, tile_lo=0, n_tiles=5, pb_slot=60)),
        "bad_setres": _prog(encode(Op.SETRES, key=5, rows=0, c_res=0, pb_slot=0),
                            encode(Op.SETRES, key=2, rows=5, c_res=13, pb_slot=0)),
        "bad_key": _prog(encode(Op.SETRES, key=5, rows=12, c_res=1, pb_slot=0), pbkey(5),
                         encode(Op.SETRES, key=8, rows=1, c_res=1, pb_slot=0)),
        "bad_pbkey": _prog(pbkey(8)),
    }
    img, at = _images(img, progs)
    seq = ["conv", "sg1", "k3", "k5", "off", "k7", "k5_k3_off", "key_only", "conv", "inval", "k3",
           "overflow", "k3", "k5", "bad_setres", "k5", "k3", "bad_key", "bad_pbkey", "k5"]
    runs = [(bytearray(img), at[k], wb) for k in seq]
    got, exp = _check_seq_vs_golden(cfg, runs, stall=0.15, seed=3)
    r = dict(zip(range(len(seq)), got))
    T = cfg.tile_bytes
    assert r[0]["pb_hits"] == 0 and r[0]["pb_misses"] == 36
    assert r[1]["w_rd_bytes"] == 32 * T and r[1]["error"] == 0 and r[1]["instrs"] == 1 + 12 + 1 + 2
    assert r[2]["pb_hits"] == 20 and r[2]["pb_misses"] == 16
    assert r[3]["pb_hits"] == 12 and r[3]["pb_misses"] == 24
    assert r[4]["pb_hits"] == r[5]["pb_hits"] == 0
    assert r[6]["pb_hits"] == 32 and r[6]["pb_misses"] == 3 * 36 - 32
    assert r[8]["pb_hits"] == 0                           # the PBKEY of the program before is gone
    assert r[10]["pb_hits"] == 0                          # entry 3 invalidated
    assert r[11]["error"] == 3 and r[11]["instrs"] == 3 and r[11]["w_rd_bytes"] == 36 * T
    assert r[12]["pb_hits"] == 36 and r[12]["error"] == 0 and r[12]["w_rd_bytes"] == 2 * cfg.pe_rows * 8
    assert r[13]["pb_hits"] == 12                        # entry 5 (slots 0..11) untouched
    assert r[14]["error"] == 3 and r[14]["instrs"] == 2
    assert r[15]["pb_hits"] == 0 and r[16]["pb_hits"] == 36
    assert r[17]["error"] == 3 and r[17]["instrs"] == 3
    assert r[18]["error"] == 3 and r[18]["instrs"] == 1
    assert r[19]["pb_hits"] == 12 and r[19]["error"] == 0
    # a resident layer is faster: same conv, all tiles hit vs all miss
    assert r[12]["cycles"] < r[0]["cycles"]
    assert exp[12]["pb_hits"] == 36


def test_accel_pb_dw_and_1x1_hits():
    """Depthwise and 1x1 convs with partial boxes on the 8x8 geometry with a PB (20 tiles, 3 table
    entries: neither a power of two): a dw box of 1 of 2 rows and 3 of 4 columns; a 1x1 box with
    more rows and columns (c_res = 4 > cin_w = 3) than the conv uses, so the conv's rows are c_res
    slots apart; key 2 (no entry) hits nothing, key 3 is error 3."""
    cfg = AccelConfig(name="pb8", pe_rows=8, pe_cols=8, act_buf_words=1024, wbuf_tiles=32, pb_tiles=20,
                      res_entries=3)
    dwimg, _, wb = _conv_program(cfg, np.random.default_rng(31), dw=1, kh=5, kw=5, pt=2, pl=2, in_h=3, in_w=3,
                                 cin_w=2, n_groups=2)          # NT = 4 tiles per group: 0..7
    pwimg, _, wb2 = _conv_program(cfg, np.random.default_rng(32), kh=1, kw=1, pt=0, pl=0, in_h=2, in_w=2,
                                  cin_w=3, n_groups=2)          # tiles 0..5
    fd, fp = decode(_conv_body(dwimg)[1]).fields, decode(_conv_body(pwimg)[1]).fields
    dwimg, dat = _images(dwimg, {"sg": _prog(box_load(fd, 1, 1, 3, 17)),
                                 "q": _prog(pbkey(1), _conv_body(dwimg), pbkey(0), _conv_body(dwimg)[1],
                                            pbkey(2), _conv_body(dwimg)[1])})
    pwimg, pat = _images(pwimg, {"sg": _prog(box_load(fp, 0, 3, 4, 5, used_rows=2, used_cols=3)),
                                 "q": _prog(pbkey(0), _conv_body(pwimg), pbkey(1), _conv_body(pwimg)[1]),
                                 "bad": _prog(pbkey(2), pbkey(3), _conv_body(pwimg))})
    runs = [(bytearray(dwimg), dat["sg"], wb), (bytearray(pwimg), pat["sg"], wb2),
            (bytearray(dwimg), dat["q"], wb), (bytearray(pwimg), pat["q"], wb2), (bytearray(pwimg), pat["bad"], wb2),
            (bytearray(pwimg), pat["q"], wb2)]
    got, _ = _check_seq_vs_golden(cfg, runs, stall=0.1)
    # dw: 3 hits with its own box, then all 8 tiles with the 1x1's box (rows 2 < 3, columns 4 <= 4)
    assert got[2]["pb_hits"] == 3 + 8 and got[2]["pb_misses"] == 5 + 8
    # 1x1: all 6 tiles with its box, then row 0 columns 0..2 with the dw box
    assert got[3]["pb_hits"] == 6 + 3 and got[3]["pb_misses"] == 3
    assert got[4]["error"] == 3 and got[4]["instrs"] == 2
    assert got[5]["error"] == 0 and got[5]["pb_hits"] == 9
