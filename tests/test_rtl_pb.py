"""ISA v4 Persistent Buffer on the Verilated accelerator (sim.rtl.RtlSim): SubGraph residency.

The jobs of one ``RtlSim.run_jobs`` batch run on one accelerator without a reset in between, so
the Persistent Buffer and the residency table persist from job to job exactly as they do between
queries on the hardware (and between ``GoldenModel.run`` calls).  Every output byte and counter is
compared with the golden model run through the same sequence.
"""
import numpy as np
import pytest

from sim.golden import COUNTER_NAMES, GoldenModel
from sim.rtl import Job, RtlSim
from sushi.config import PRESETS
from sushi.isa import Op, encode, pack_params

CFG = PRESETS["8x8-pb"]


def conv_prog(cfg, *, k, in_hw, cin_w, n_groups, tile_base, in_dram, out_dram, param_addr):
    """LOAD input, dense k x k CONV (same padding) with tiles tile_base.., STORE, HALT."""
    R, V = cfg.pe_rows, cfg.pe_cols
    pad = k // 2
    tskx = cin_w
    tsky = k * tskx
    tsg = k * tsky
    in_words = in_hw * in_hw * cin_w
    cout_w = n_groups * (R // V)
    out_words = in_hw * in_hw * cout_w
    ia, oa = 0, in_words + 16
    prog = [encode(Op.LOAD, buf_addr=ia, n_words=in_words, dram_addr=in_dram),
            encode(Op.CONV, dw=0, kh=k, kw=k, sh=1, sw=1, pad_top=pad, pad_left=pad, in_h=in_hw, in_w=in_hw,
                   out_h=in_hw, out_w=in_hw, cin_w=cin_w, cout_w=cout_w, n_groups=n_groups, in_addr=ia,
                   out_addr=oa, clamp_lo=-128, clamp_hi=127, tile_base=tile_base, tile_sg=tsg, tile_sky=tsky,
                   tile_skx=tskx, param_addr=param_addr),
            encode(Op.STORE, buf_addr=oa, n_words=out_words, dram_addr=out_dram),
            encode(Op.HALT)]
    return b"".join(prog), n_groups * tsg, out_words * V


def sg_prog(loads, boxes):
    """LOADSG per (tile_lo, n_tiles, pb_slot), SETRES per (key, rows, c_res, pb_slot), HALT."""
    return b"".join([encode(Op.LOADSG, tile_lo=lo, n_tiles=n, pb_slot=s) for lo, n, s in loads]
                    + [encode(Op.SETRES, key=k, rows=r, c_res=c, pb_slot=s) for k, r, c, s in boxes]
                    + [encode(Op.HALT)])


class Scenario:
    """One DRAM image with two convs (A: 3x3, B: 1x1) sharing one weight image, their SubGraph
    load programs and an eviction program; ``job(name)`` runs program ``name``.  Conv A runs with
    PBKEY 0, conv B with PBKEY 1 (layer boxes: A's rows (g, ky, kx) x cin_w words, B's groups x
    cin_w words)."""

    def __init__(self, cfg, seed=0, a=dict(k=3, in_hw=4, cin_w=4, n_groups=4), b=dict(k=1, in_hw=2, cin_w=8, n_groups=8)):
        V, T, R = cfg.pe_cols, cfg.tile_bytes, cfg.pe_rows
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        lay = {"progs": 0, "params": 0x1000, "in": 0x2000, "out": 0x4000, "weights": 0x8000}
        img = bytearray(lay["weights"])
        self.outs = {}
        self.progs = {}
        pos = 0
        tile = 0
        for key, (name, g) in enumerate((("A", a), ("B", b))):
            in_words = g["in_hw"] ** 2 * g["cin_w"]
            in_dram = lay["in"] + (0 if name == "A" else 0x1000)
            out_dram = lay["out"] + (0 if name == "A" else 0x2000)
            par = lay["params"] + (0 if name == "A" else 0x800)
            nrec = g["n_groups"] * R
            img[par:par + 8 * nrec] = pack_params(rng.integers(-3000, 3000, nrec), rng.integers(1, 3000, nrec),
                                                 rng.integers(12, 18, nrec))
            img[in_dram:in_dram + in_words * V] = rng.integers(-128, 128, in_words * V).astype(np.int8).tobytes()
            p, ntiles, out_bytes = conv_prog(cfg, tile_base=tile, in_dram=in_dram, out_dram=out_dram,
                                             param_addr=par, **g)
            self.progs[name] = (pos, encode(Op.PBKEY, key=key, on=1) + p)
            pos += 0x100
            self.outs[name] = (out_dram, out_bytes)
            setattr(self, f"tiles_{name}", (tile, ntiles))
            tile += ntiles
        self.n_tiles = tile
        img += rng.integers(-128, 128, tile * T).astype(np.int8).tobytes()
        lo_a, n_a = self.tiles_A
        lo_b, n_b = self.tiles_B
        assert n_a + n_b <= cfg.pb_tiles
        # SubGraph A: A's tiles loaded in two runs, one box; SubGraph B: evict A, load B at the other
        # end of the PB
        ra, rb = a["k"] ** 2 * a["n_groups"], b["k"] ** 2 * b["n_groups"]
        self.progs["load_A"] = (pos, sg_prog([(lo_a, n_a // 2, 0), (lo_a + n_a // 2, n_a - n_a // 2, n_a // 2)],
                                             [(0, ra, a["cin_w"], 0)]))
        pos += 0x100
        self.progs["swap_B"] = (pos, sg_prog([(lo_b, n_b, cfg.pb_tiles - n_b)],
                                             [(0, 0, 0, 0), (1, rb, b["cin_w"], cfg.pb_tiles - n_b)]))
        pos += 0x100
        for name, (at, p) in self.progs.items():
            assert at + len(p) <= lay["params"]
            img[at:at + len(p)] = p
        self.image = bytes(img)
        self.weight_base = lay["weights"]

    def job(self, name):
        at, _ = self.progs[name]
        return Job(dram_image=self.image, prog_base=at, weight_base=self.weight_base,
                   read_back=[self.outs["A"], self.outs["B"]], timeout_cycles=2_000_000)

    def golden(self, seq):
        gm = GoldenModel(self.cfg)
        out = []
        for name in seq:
            d = bytearray(self.image)
            c = gm.run(d, self.progs[name][0], self.weight_base)
            out.append((c.as_dict(), [bytes(d[a:a + n]) for a, n in self.outs.values()]))
        return out


SEQ = ["A", "load_A", "A", "B", "swap_B", "B", "A"]


def check(results, expected, seq):
    for name, r, (c, regions) in zip(seq, results, expected):
        assert not r.timed_out, name
        assert r.regions == regions, f"{name}: output bytes differ"
        assert {k: r.counters[k] for k in (*COUNTER_NAMES, "error")} == {k: c[k] for k in (*COUNTER_NAMES, "error")}, name
        assert r.counters["done"] == 1 and r.counters["busy"] == 0
        # the DRAM model saw exactly the traffic the counters claim
        cc = r.counters
        assert r.dram_rd_bytes == cc["w_rd_bytes"] + cc["act_rd_bytes"] + cc["instr_rd_bytes"], name
        assert r.dram_wr_bytes == cc["act_wr_bytes"], name


@pytest.mark.rtl
@pytest.mark.parametrize("bandwidth", [None, 2], ids=["full_bw", "2B_per_cycle"])
def test_subgraph_residency_sequence(bandwidth):
    sc = Scenario(CFG)
    sim = RtlSim(CFG, latency=20, bandwidth=bandwidth)
    results = sim.run_jobs([sc.job(n) for n in SEQ])
    check(results, sc.golden(SEQ), SEQ)
    cyc = [r.counters["cycles"] for r in results]
    hits = [r.counters["pb_hits"] for r in results]
    n_a, n_b = sc.tiles_A[1], sc.tiles_B[1]
    assert hits == [0, 0, n_a, 0, 0, n_b, 0]
    assert results[1].counters["w_rd_bytes"] == n_a * CFG.tile_bytes
    # resident SubGraph -> lower latency; evicted -> back to the miss latency
    assert cyc[2] < cyc[0] and cyc[5] < cyc[3]
    assert cyc[6] > cyc[2]
    print(f"\nbandwidth={bandwidth}: conv A (3x3, {n_a} tiles) {cyc[0]} cycles cold -> {cyc[2]} resident; "
          f"conv B (1x1, {n_b} tiles) {cyc[3]} -> {cyc[5]}; SubGraph loads {cyc[1]} / {cyc[4]} cycles")
