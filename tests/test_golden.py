"""The golden model against a naive, literal transcription of docs/isa.md on random instructions."""
import numpy as np
import pytest

from sushi import isa
from sushi.config import PRESETS, AccelConfig
from sushi.isa import Op
from sim.golden import GoldenModel, GoldenError, wrap32

from pbprog import box_load, conv_shape, conv_tile, pbkey


def s8(b):
    return b - 256 if b > 127 else b


def naive_requant(x, m, s, lo, hi):
    x = int(x) * int(m)
    if s:
        x = (x + (1 << (s - 1))) >> s
    return max(lo, min(hi, x))


def naive_conv(cfg, buf, dram, wb, f):
    R, V = cfg.pe_rows, cfg.pe_cols
    out = {}
    G = f["n_groups"]
    for g in range(G):
        lanes = V if f["dw"] else R
        recs = [isa.unpack_params(bytes(dram[f["param_addr"] + (g * lanes + r) * 8:][:8])) for r in range(lanes)]
        for oy in range(f["out_h"]):
            for ox in range(f["out_w"]):
                acc = [0] * lanes
                for ky in range(f["kh"]):
                    for kx in range(f["kw"]):
                        iy, ix = oy * f["sh"] + ky - f["pad_top"], ox * f["sw"] + kx - f["pad_left"]
                        ok = 0 <= iy < f["in_h"] and 0 <= ix < f["in_w"]
                        for c in range(1 if f["dw"] else f["cin_w"]):
                            cw = g if f["dw"] else c
                            a = buf[f["in_addr"] + (iy * f["in_w"] + ix) * f["cin_w"] + cw] if ok else np.zeros(V, int)
                            if f["dw"]:
                                p = ky * f["kw"] + kx
                                t = f["tile_base"] + g * f["tile_sg"] + p // R
                                for j in range(V):
                                    acc[j] += s8(dram[wb + t * R * V + (p % R) * V + j]) * int(a[j])
                            else:
                                t = f["tile_base"] + g * f["tile_sg"] + ky * f["tile_sky"] + kx * f["tile_skx"] + c
                                for r in range(R):
                                    for j in range(V):
                                        acc[r] += s8(dram[wb + t * R * V + r * V + j]) * int(a[j])
                y = [naive_requant(int(wrap32(int(wrap32(acc[r])) + int(recs[r][0][0]))), recs[r][1][0], recs[r][2][0],
                                   f["clamp_lo"], f["clamp_hi"]) for r in range(lanes)]
                base = f["out_addr"] + (oy * f["out_w"] + ox) * f["cout_w"] + (g if f["dw"] else g * (R // V))
                for q in range(lanes // V):
                    out[base + q] = y[q * V:(q + 1) * V]
    return out


def random_conv(rng, cfg, dw):
    R, V = cfg.pe_rows, cfg.pe_cols
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    in_h, in_w = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    out_h = max(1, (in_h + 2 * pt - kh) // sh + 1)
    out_w = max(1, (in_w + 2 * pl - kw) // sw + 1)
    cin_w = int(rng.integers(1, 3))
    if dw:
        G, cout_w = cin_w, cin_w
        sg = -(-kh * kw // R)
        n_tiles = G * sg
    else:
        G = int(rng.integers(1, 3))
        cout_w = G * (R // V) + int(rng.integers(0, 2))
        sg = kh * kw * cin_w
        n_tiles = G * sg
    f = dict(dw=int(dw), kh=kh, kw=kw, sh=sh, sw=sw, pad_top=pt, pad_left=pl, in_h=in_h, in_w=in_w,
             out_h=out_h, out_w=out_w, cin_w=cin_w, cout_w=cout_w, n_groups=G, in_addr=0,
             out_addr=in_h * in_w * cin_w + 3, clamp_lo=int(rng.integers(-128, 1)), clamp_hi=int(rng.integers(0, 128)),
             tile_base=2, tile_sg=sg, tile_sky=kw * cin_w, tile_skx=cin_w, param_addr=0)
    return f, n_tiles + 2


@pytest.mark.parametrize("preset", ["tiny", "16x8"])
@pytest.mark.parametrize("dw", [0, 1])
def test_conv_matches_naive(preset, dw):
    cfg = PRESETS[preset]
    rng = np.random.default_rng(7 + dw)
    for trial in range(6):
        f, n_tiles = random_conv(rng, cfg, dw)
        lanes = cfg.pe_cols if dw else cfg.pe_rows
        n_rec = f["n_groups"] * lanes
        prog_base, param_off = 0, 64
        weight_base = 1024
        dram = bytearray(weight_base + n_tiles * cfg.tile_bytes + 64)
        f["param_addr"] = param_off
        dram[prog_base:prog_base + 32] = isa.encode(Op.CONV, **f)
        dram[32:64] = isa.encode(Op.HALT)
        dram[param_off:param_off + 8 * n_rec] = isa.pack_params(
            rng.integers(-3000, 3000, n_rec), rng.integers(1, 1 << 16, n_rec), rng.integers(0, 24, n_rec))
        dram[weight_base:weight_base + n_tiles * cfg.tile_bytes] = rng.integers(-128, 128, n_tiles * cfg.tile_bytes).astype(np.int8).tobytes()
        gm = GoldenModel(cfg)
        gm.buf[:] = rng.integers(-128, 128, gm.buf.shape)
        before = gm.buf.astype(int).copy()
        expect = naive_conv(cfg, before, dram, weight_base, f)
        c = gm.run(dram, prog_base, weight_base)
        for addr, y in expect.items():
            assert list(gm.buf[addr]) == list(y), (trial, addr)
        untouched = set(range(len(before))) - set(expect)
        assert all((gm.buf[a] == before[a]).all() for a in untouched)
        per_group = f["kh"] * f["kw"] * (1 if dw else f["cin_w"])
        assert c.mac_cycles == f["n_groups"] * f["out_h"] * f["out_w"] * per_group
        tiles = f["n_groups"] * f["tile_sg"]
        assert c.pb_misses == tiles and c.w_rd_bytes == tiles * cfg.tile_bytes + 8 * n_rec
        assert c.instrs == 2 and c.instr_rd_bytes == 64


def test_pool_add_load_store_match_naive():
    cfg = PRESETS["tiny"]
    V = cfg.pe_cols
    rng = np.random.default_rng(3)
    for mode in (0, 1):
        in_h, in_w, c_w, k, s, pad = 5, 4, 2, 3, 2, 1
        out_h, out_w = (in_h + 2 * pad - k) // s + 1, (in_w + 2 * pad - k) // s + 1
        n_in = in_h * in_w * c_w
        x = rng.integers(-128, 128, (n_in, V)).astype(np.int8)
        dram = bytearray(4096)
        dram[1024:1024 + n_in * V] = x.tobytes()
        prog = [isa.encode(Op.LOAD, buf_addr=10, n_words=n_in, dram_addr=1024),
                isa.encode(Op.POOL, mode=mode, kh=k, kw=k, sh=s, sw=s, pad_top=pad, pad_left=pad, in_h=in_h, in_w=in_w,
                           out_h=out_h, out_w=out_w, c_w=c_w, in_addr=10, out_addr=200, mult=21845, shift=17,
                           clamp_lo=-100, clamp_hi=100),
                isa.encode(Op.ADD, a_addr=200, b_addr=10, out_addr=300, n_words=out_h * out_w * c_w,
                           mult_a=3000, mult_b=5000, shift=12, clamp_lo=0, clamp_hi=127),
                isa.encode(Op.STORE, buf_addr=300, n_words=out_h * out_w * c_w, dram_addr=2048),
                isa.encode(Op.HALT)]
        dram[0:32 * len(prog)] = b"".join(prog)
        c = GoldenModel(cfg).run(dram, 0, 0)
        xi = x.astype(int).reshape(in_h, in_w, c_w * V)
        pooled = np.zeros((out_h, out_w, c_w * V), int)
        for oy in range(out_h):
            for ox in range(out_w):
                for ch in range(c_w * V):
                    vals = [xi[oy * s + a - pad, ox * s + b - pad, ch] for a in range(k) for b in range(k)
                            if 0 <= oy * s + a - pad < in_h and 0 <= ox * s + b - pad < in_w]
                    pooled[oy, ox, ch] = max(-100, min(100, max(vals))) if mode == 0 else naive_requant(sum(vals), 21845, 17, -100, 100)
        flat = pooled.reshape(-1)
        bflat = xi.reshape(-1)[:flat.size]
        added = [naive_requant(a * 3000 + b * 5000, 1, 12, 0, 127) for a, b in zip(flat, bflat)]
        got = np.frombuffer(bytes(dram[2048:2048 + flat.size]), dtype=np.int8)
        assert list(got) == added
        assert c.act_rd_bytes == n_in * V and c.act_wr_bytes == flat.size and c.instrs == 5


def test_unknown_opcode_sets_error_and_stops():
    cfg = PRESETS["tiny"]
    dram = bytearray(256)
    dram[0] = 0x7F
    c = GoldenModel(cfg).run(dram, 0, 0)
    assert c.error == 1 and c.instrs == 1


def test_out_of_range_buffer_is_named():
    cfg = AccelConfig(pe_rows=4, pe_cols=4, act_buf_words=16, wbuf_tiles=4)
    dram = bytearray(256)
    dram[0:32] = isa.encode(Op.LOAD, buf_addr=10, n_words=8, dram_addr=64)
    with pytest.raises(GoldenError, match=r"LOAD: activation buffer words \[10, 18\) outside \[0, 16\)"):
        GoldenModel(cfg).run(dram, 0, 0)


def _conv_program(cfg, rng):
    f, n_tiles = random_conv(rng, cfg, 0)
    n_rec = f["n_groups"] * cfg.pe_rows
    dram = bytearray(1024 + n_tiles * cfg.tile_bytes)
    f["param_addr"] = 64
    dram[0:32] = isa.encode(Op.CONV, **f)
    dram[32:64] = isa.encode(Op.HALT)
    dram[64:64 + 8 * n_rec] = isa.pack_params([0] * n_rec, [1] * n_rec, [0] * n_rec)
    dram[1024:] = rng.integers(-128, 128, n_tiles * cfg.tile_bytes).astype(np.int8).tobytes()
    return f, dram


def _put(dram: bytearray, at: int, instrs: list) -> int:
    """Write a program (instruction bytes, HALT appended) at ``at``; returns ``at``."""
    raw = b"".join(list(instrs) + [isa.encode(Op.HALT)])
    dram[at:at + len(raw)] = raw
    return at


def test_pb_resident_tiles_are_hits_not_dram_bytes():
    from dataclasses import replace
    cfg = replace(PRESETS["tiny"], pb_tiles=64)
    f, dram = _conv_program(cfg, np.random.default_rng(0))
    T = cfg.tile_bytes
    base = GoldenModel(cfg).run(bytearray(dram), 0, 1024)
    rows, cols = conv_shape(f, cfg.pe_rows)
    want = bytearray(dram)
    gm_ref = GoldenModel(cfg)
    gm_ref.run(want, 0, 1024)
    gm = GoldenModel(cfg)
    d2 = bytearray(dram) + bytearray(4096)
    sg = _put(d2, len(dram), box_load(f, 5, rows, cols, 3))         # the whole layer, key 5, slots 3..
    load = gm.run(d2, sg, 1024)
    assert load.error == 0 and load.w_rd_bytes == rows * cols * T and load.pb_hits == load.pb_misses == 0
    assert gm.resident_tiles() == rows * cols and gm.res_table[5] == (rows, cols, 3)
    # the query selects the entry with PBKEY (the program at 0 is the CONV at 0, HALT)
    q = _put(d2, len(dram) + 1024, [pbkey(5), bytes(d2[0:32])])
    # PB contents must be what the query uses: corrupt the DRAM copy, the PB copy keeps the result
    d2[1024:1024 + (f["n_groups"] * f["tile_sg"] + 2) * T] = bytes((f["n_groups"] * f["tile_sg"] + 2) * T)
    res = gm.run(d2, q, 1024)
    assert res.error == 0 and res.pb_hits == rows * cols and res.pb_misses == 0
    assert res.w_rd_bytes == base.w_rd_bytes - rows * cols * T
    assert res.instrs == 3 and res.instr_rd_bytes == 96
    assert (gm.buf[f["out_addr"]:] == gm_ref.buf[f["out_addr"]:]).all()
    # without PBKEY (every program starts with none) nothing hits: the key does not persist
    assert gm.run(d2, 0, 1024).pb_hits == 0
    # invalidate the entry (rows*c_res == 0): everything misses again
    inv = _put(d2, len(dram) + 2048, [isa.encode(Op.SETRES, key=5, rows=rows, c_res=0, pb_slot=0)])
    assert gm.run(d2, inv, 1024).error == 0
    assert gm.resident_tiles() == 0 and gm.res_table[5] is None
    assert gm.run(d2, q, 1024).pb_hits == 0


@pytest.mark.parametrize("preset", ["tiny", "16x8"])
@pytest.mark.parametrize("dw", [0, 1])
def test_pb_box_matches_naive(preset, dw):
    """A random box (rows x c_res, partial or wider than the CONV) over random PB contents: tile
    (i, c) with i < rows and c < c_res is PB slot slot + i*c_res + c, every other tile DRAM."""
    from dataclasses import replace
    cfg = replace(PRESETS[preset], pb_tiles=96, res_entries=4)
    R, T = cfg.pe_rows, cfg.tile_bytes
    rng = np.random.default_rng(40 + dw)
    for trial in range(8):
        f, n_tiles = random_conv(rng, cfg, dw)
        rows, cols = conv_shape(f, R)
        lanes = cfg.pe_cols if dw else R
        n_rec = f["n_groups"] * lanes
        weight_base = 2048
        src = n_tiles                                   # PB contents: tiles n_tiles .. + pb_tiles
        dram = bytearray(weight_base + (n_tiles + cfg.pb_tiles) * T)
        f["param_addr"] = 1024
        dram[1024:1024 + 8 * n_rec] = isa.pack_params(
            rng.integers(-3000, 3000, n_rec), rng.integers(1, 1 << 16, n_rec), rng.integers(0, 24, n_rec))
        dram[weight_base:] = rng.integers(-128, 128, len(dram) - weight_base).astype(np.int8).tobytes()
        while True:
            br, bc = int(rng.integers(1, rows + 3)), int(rng.integers(1, cols + 3))
            if br * bc <= cfg.pb_tiles:
                break
        slot = int(rng.integers(0, cfg.pb_tiles - br * bc + 1))
        key = int(rng.integers(0, 4))
        sgp = _put(dram, 0, [isa.encode(Op.LOADSG, tile_lo=src, n_tiles=cfg.pb_tiles, pb_slot=0),
                             isa.encode(Op.SETRES, key=key, rows=br, c_res=bc, pb_slot=slot)])
        qp = _put(dram, 128, [pbkey(key), isa.encode(Op.CONV, **f)])
        gm = GoldenModel(cfg)
        assert gm.run(dram, sgp, weight_base).w_rd_bytes == cfg.pb_tiles * T
        gm.buf[:] = rng.integers(-128, 128, gm.buf.shape)
        before = gm.buf.astype(int).copy()
        # the naive result: the hit tiles' DRAM copies replaced by their PB slots
        eff = bytearray(dram)
        hits = 0
        for i in range(rows):
            for c in range(cols):
                if i < br and c < bc:
                    t, s = conv_tile(f, i, c), src + slot + i * bc + c
                    eff[weight_base + t * T:weight_base + (t + 1) * T] = dram[weight_base + s * T:weight_base + (s + 1) * T]
                    hits += 1
        expect = naive_conv(cfg, before, eff, weight_base, f)
        cnt = gm.run(dram, qp, weight_base)
        assert cnt.error == 0
        for addr, y in expect.items():
            assert list(gm.buf[addr]) == list(y), (trial, addr)
        assert cnt.pb_hits == hits == min(br, rows) * min(bc, cols)
        assert cnt.pb_misses == rows * cols - hits
        assert cnt.w_rd_bytes == (rows * cols - hits) * T + 8 * n_rec


def _state(gm):
    return list(gm.res_table), gm.pb.copy()


@pytest.mark.parametrize("prog,instrs", [
    ([isa.encode(Op.LOADSG, tile_lo=0, n_tiles=9, pb_slot=0)], 1),                 # n_tiles > pb_tiles
    ([isa.encode(Op.LOADSG, tile_lo=0, n_tiles=2, pb_slot=1),
      isa.encode(Op.LOADSG, tile_lo=0, n_tiles=4, pb_slot=5)], 2),                  # slot + n > pb_tiles
    ([isa.encode(Op.SETRES, key=8, rows=1, c_res=1, pb_slot=0)], 1),               # key >= res_entries
    ([isa.encode(Op.SETRES, key=8, rows=0, c_res=0, pb_slot=0)], 1),               # even to invalidate
    ([isa.encode(Op.SETRES, key=1, rows=1, c_res=4, pb_slot=0),
      isa.encode(Op.SETRES, key=2, rows=3, c_res=3, pb_slot=0)], 2),               # rows*c_res > pb_tiles
    ([isa.encode(Op.SETRES, key=2, rows=0xFFFF, c_res=0xFFFF, pb_slot=0)], 1),     # no 16-bit wrap
    ([isa.encode(Op.SETRES, key=2, rows=2, c_res=2, pb_slot=5)], 1),               # slot + rows*c_res
    ([isa.encode(Op.PBKEY, key=8, on=1)], 1),                                       # PBKEY on, bad key
    ([isa.encode(Op.PBKEY, key=255, on=1)], 1),
], ids=["loadsg_n", "loadsg_slot", "setres_key", "setres_key_inval", "setres_size", "setres_wrap",
        "setres_slot", "pbkey_key", "pbkey_255"])
def test_pb_errors_are_error_3_and_change_nothing(prog, instrs):
    from dataclasses import replace
    cfg = replace(PRESETS["tiny"], pb_tiles=8, res_entries=8)
    dram = bytearray(4096)
    dram[1024:] = np.random.default_rng(1).integers(-128, 128, 3072).astype(np.int8).tobytes()
    gm = GoldenModel(cfg)
    ok = _put(dram, 512, [isa.encode(Op.LOADSG, tile_lo=20, n_tiles=8, pb_slot=0),
                          isa.encode(Op.SETRES, key=3, rows=2, c_res=3, pb_slot=1)])
    assert gm.run(dram, ok, 1024).error == 0
    before = _state(gm)
    c = gm.run(dram, _put(dram, 0, prog + [isa.encode(Op.LOADSG, tile_lo=0, n_tiles=1, pb_slot=0)]), 1024)
    assert c.error == 3 and c.instrs == instrs                 # the bad one ends the program
    after = _state(gm)
    if instrs == 1:
        assert after[0] == before[0] and (after[1] == before[1]).all() and c.w_rd_bytes == 0
    # what ran before the bad instruction is applied, the bad one changes nothing
    if prog[0][0] == Op.SETRES and instrs == 2:
        assert after[0][1] == (1, 4, 0) and after[0][2] is None and after[0][3] == (2, 3, 1)


def test_pbkey_off_ignores_key_and_persistence():
    """PBKEY off (any key) selects none; PBKEY on a valid key whose entry is invalid hits nothing;
    the table and the PB persist across programs, the PBKEY does not."""
    from dataclasses import replace
    cfg = replace(PRESETS["tiny"], pb_tiles=64, res_entries=4)
    f, dram = _conv_program(cfg, np.random.default_rng(2))
    rows, cols = conv_shape(f, cfg.pe_rows)
    d = bytearray(dram) + bytearray(4096)
    conv = bytes(d[0:32])
    gm = GoldenModel(cfg)
    assert gm.run(d, _put(d, len(dram), box_load(f, 2, rows, cols, 0)), 1024).error == 0
    n = rows * cols
    cases = [([pbkey(2), conv], n), ([isa.encode(Op.PBKEY, key=200, on=0), conv], 0),
             ([pbkey(2), pbkey(None), conv], 0), ([pbkey(1), conv], 0), ([pbkey(3), conv], 0),
             ([pbkey(1), conv, pbkey(2), conv, pbkey(None), conv], n), ([pbkey(2)], 0), ([conv], 0)]
    for k, (prog, hits) in enumerate(cases):
        c = gm.run(d, _put(d, len(dram) + 1024, prog), 1024)
        assert c.error == 0 and c.pb_hits == hits, k
        assert c.instrs == len(prog) + 1
    assert [op.op for op in c.trace] == [Op.CONV, Op.HALT]


def test_lut_and_mul_match_naive():
    cfg = PRESETS["tiny"]
    V = cfg.pe_cols
    rng = np.random.default_rng(11)
    n_pix, c_w = 6, 2
    x = rng.integers(-128, 128, (n_pix * c_w, V)).astype(np.int8)
    s = rng.integers(-128, 128, (c_w, V)).astype(np.int8)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    dram = bytearray(4096)
    dram[1024:1024 + x.size] = x.tobytes()
    dram[2048:2048 + s.size] = s.tobytes()
    dram[3072:3328] = table.tobytes()
    n = n_pix * c_w
    prog = [isa.encode(Op.LOAD, buf_addr=0, n_words=n, dram_addr=1024),
            isa.encode(Op.LOAD, buf_addr=100, n_words=c_w, dram_addr=2048),
            isa.encode(Op.LUT, in_addr=0, out_addr=200, n_words=n, lut_addr=3072),
            isa.encode(Op.MUL, a_addr=200, b_addr=100, out_addr=300, n_pix=n_pix, c_w=c_w, mult=777, shift=9,
                       clamp_lo=-50, clamp_hi=90),
            isa.encode(Op.STORE, buf_addr=300, n_words=n, dram_addr=3584),
            isa.encode(Op.HALT)]
    dram[0:32 * len(prog)] = b"".join(prog)
    c = GoldenModel(cfg).run(dram, 0, 0)
    got = np.frombuffer(bytes(dram[3584:3584 + x.size]), np.int8).reshape(n_pix, c_w, V)
    xs = x.reshape(n_pix, c_w, V)
    for p in range(n_pix):
        for cc in range(c_w):
            for j in range(V):
                a = int(table[int(xs[p, cc, j]) & 0xFF])
                assert got[p, cc, j] == naive_requant(a * int(s[cc, j]), 777, 9, -50, 90)
    assert c.w_rd_bytes == 256
