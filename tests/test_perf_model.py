"""The performance model (sim/perf.py) against the RTL's CYCLES counter, and the energy model.

The RTL part runs one Verilator build (8x8-pb, latency 20, 2 bytes/cycle: the memory-bound timing
tests/test_rtl_pb.py also uses, so the build is shared) and one simulator run holding every job:
random single layers, a network and its layers, and the layers again with a SubGraph resident.
"""
import numpy as np
import pytest

from compiler import compile_onnx
from models import zoo
from sim.energy import EnergyModel, energy
from sim.golden import GoldenModel
from sim.perf import DramTiming, decode_program, instr_cycles, predict, program_cycles
from sushi.artifacts import load_build
from sushi.config import PRESETS
from sushi.isa import INSTR_BYTES, Op, encode

CFG = PRESETS["8x8-pb"]
LATENCY, BANDWIDTH = 20, 2
TOL = 0.05
N_LAYERS = 12
HALT = encode(Op.HALT)


def _append(img: bytearray, prog: bytes) -> int:
    at = -(-len(img) // 64) * 64
    img += bytes(at - len(img)) + prog
    return at


def _jobs(root):
    """-> (images, jobs): each job {name, cat, img, pb, wb}; images by key."""
    images, jobs = {}, []
    for i in range(N_LAYERS):
        rng = np.random.default_rng(2000 + i)
        model, desc = zoo.random_layer_model(rng)
        compile_onnx(model, CFG, root / f"l{i}")
        b = load_build(root / f"l{i}")
        img, pb, wb = b.dram_image()
        images[f"l{i}"] = bytes(img)
        jobs.append(dict(name=f"layer {i} {desc['kind']}", cat="layer", img=f"l{i}", pb=pb, wb=wb))
    compile_onnx(zoo.tiny_cnn(), CFG, root / "net")
    b = load_build(root / "net")
    img, pb, wb = b.dram_image()
    prog = b.program("main")
    raw = bytes(img[pb:pb + prog["n_instrs"] * INSTR_BYTES])
    layer_pb = []
    for L in prog["layers"]:
        f, n = L["instrs"]
        layer_pb.append((L["name"], _append(img, raw[f * INSTR_BYTES:(f + n) * INSTR_BYTES] + HALT)))
    # SubGraph: the tiles of every other layer that has tiles (one residency entry each)
    ents, slot = [], 0
    for k, L in enumerate(prog["layers"]):
        lo, n = L["tiles"]
        if n and k % 2 == 0 and len(ents) < CFG.res_ranges and slot + n <= CFG.pb_tiles:
            ents.append(encode(Op.LOADSG, entry=len(ents), tile_lo=lo, n_tiles=n, pb_slot=slot))
            slot += n
    assert ents
    sg = _append(img, b"".join(ents) + HALT)
    evict = _append(img, b"".join(encode(Op.LOADSG, entry=e, tile_lo=0, n_tiles=0, pb_slot=0)
                                  for e in range(CFG.res_ranges)) + HALT)
    images["net"] = bytes(img)
    net = lambda name, cat, at: jobs.append(dict(name=name, cat=cat, img="net", pb=at, wb=wb))  # noqa: E731
    net("tiny_cnn", "network", pb)
    for name, at in layer_pb:
        net(f"cold {name}", "cold", at)
    net("load SubGraph", "loadsg", sg)
    net("tiny_cnn resident", "network", pb)
    for name, at in layer_pb:
        net(f"resident {name}", "resident", at)
    net("evict", "loadsg", evict)
    return images, jobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from sim.rtl import Job, RtlSim
    images, jobs = _jobs(tmp_path_factory.mktemp("perf"))
    gm = GoldenModel(CFG)
    for j in jobs:        # residency before each job, carried from job to job like the RTL's
        j["resident"] = list(gm.res_table)
        j["trace"] = decode_program(images[j["img"]], j["pb"])
        gm.run(bytearray(images[j["img"]]), j["pb"], j["wb"])
    sim = RtlSim(CFG, latency=LATENCY, bandwidth=BANDWIDTH)
    res = sim.run_jobs([Job(dram_image=images[j["img"]], prog_base=j["pb"], weight_base=j["wb"])
                        for j in jobs])
    t = DramTiming(latency=LATENCY, bandwidth=BANDWIDTH)
    for j, r in zip(jobs, res):
        assert not r.timed_out and r.counters["error"] == 0, j["name"]
        j["rtl"] = r.counters
        j["model"] = predict(j["trace"], CFG, t, j["resident"])
    return jobs


@pytest.mark.rtl
def test_cycles_within_5_percent(runs):
    bad = []
    for j in runs:
        r, m = j["rtl"]["cycles"], j["model"]["cycles"]
        if abs(m - r) > TOL * r:
            bad.append(f"{j['name']}: RTL {r}, model {m} ({(m - r) / r:+.1%})")
    assert not bad, "\n".join(bad)
    cats = {j["cat"] for j in runs}
    assert {"layer", "network", "cold", "resident", "loadsg"} <= cats


@pytest.mark.rtl
def test_traffic_counters_exact(runs):
    for j in runs:
        for k in ("w_rd_bytes", "act_rd_bytes", "act_wr_bytes", "instr_rd_bytes", "pb_hits", "pb_misses",
                  "mac_cycles"):
            assert j["model"][k] == j["rtl"][k], (j["name"], k)


@pytest.mark.rtl
def test_residency_speedup_agrees(runs):
    cold = {j["name"][5:]: j for j in runs if j["cat"] == "cold"}
    res = {j["name"][9:]: j for j in runs if j["cat"] == "resident"}
    assert cold.keys() == res.keys()
    n_faster = 0
    for name in cold:
        rtl_faster = res[name]["rtl"]["cycles"] < cold[name]["rtl"]["cycles"]
        model_faster = res[name]["model"]["cycles"] < cold[name]["model"]["cycles"]
        assert rtl_faster == model_faster, name
        n_faster += rtl_faster
    assert 0 < n_faster < len(cold)          # some layers gain from the SubGraph, some do not
    nets = [j for j in runs if j["cat"] == "network"]
    assert nets[1]["rtl"]["cycles"] < nets[0]["rtl"]["cycles"]
    assert nets[1]["model"]["cycles"] < nets[0]["model"]["cycles"]


# ------------------------------------------------------------------ pure python
def _conv_prog():
    R = CFG.pe_rows
    return [encode(Op.LOAD, buf_addr=0, n_words=64, dram_addr=0x2000),
            encode(Op.CONV, dw=0, kh=3, kw=3, sh=1, sw=1, pad_top=1, pad_left=1, in_h=4, in_w=4, out_h=4,
                   out_w=4, cin_w=4, cout_w=4 * R // CFG.pe_cols, n_groups=4, in_addr=0, out_addr=100,
                   clamp_lo=-128, clamp_hi=127, tile_base=0, tile_sg=36, tile_sky=12, tile_skx=4,
                   param_addr=0x1000),
            encode(Op.STORE, buf_addr=100, n_words=64, dram_addr=0x3000), HALT]


def _trace():
    return decode_program(b"".join(_conv_prog()))


def test_model_basics():
    tr = _trace()
    full = predict(tr, CFG, DramTiming(20, None))
    slow = predict(tr, CFG, DramTiming(20, 2))
    assert slow["cycles"] > full["cycles"] > 0
    assert full["cycles"] == sum(i["cycles"] for i in full["instrs"])
    assert program_cycles(tr, CFG, DramTiming(**{})) == predict(tr, CFG)["cycles"]
    assert instr_cycles(tr[-1], CFG, DramTiming()) == 20 + 4 + 1     # HALT: latency + 4 beats + DECODE
    assert full["w_rd_bytes"] == 4 * 36 * CFG.tile_bytes + 4 * CFG.pe_rows * 8
    assert full["mac_cycles"] == 4 * 16 * 36 and full["macs"] == full["mac_cycles"] * CFG.tile_bytes
    # legacy spelling: beats per cycle
    assert predict(tr, CFG, DramTiming(20, beats_per_cycle=0.25))["cycles"] == slow["cycles"]


def test_residency_forms_agree():
    tr = _trace()
    none = predict(tr, CFG, DramTiming(20, 2))
    ids = predict(tr, CFG, DramTiming(20, 2), set(range(36, 72)))
    table = predict(tr, CFG, DramTiming(20, 2), [(36, 36, 0)] + [None] * 7)
    assert ids["cycles"] == table["cycles"] < none["cycles"]
    assert table["pb_hits"] == 36 and table["w_rd_bytes"] == none["w_rd_bytes"] - 36 * CFG.tile_bytes
    assert table["pb_rd_bytes"] == 36 * CFG.tile_bytes
    # a LOADSG inside the program updates the residency for what follows
    sg = decode_program(encode(Op.LOADSG, entry=0, tile_lo=36, n_tiles=36, pb_slot=0) + b"".join(_conv_prog()))
    p = predict(sg, CFG, DramTiming(20, 2))
    assert p["pb_hits"] == 36 and p["residency_after"][0] == (36, 36, 0)


def test_layer_breakdown():
    tr = _trace()
    layers = [{"name": "io", "op": "conv", "instrs": [0, 3]}]
    p = predict(tr, CFG, DramTiming(), layers=layers)
    assert p["layers"][0]["cycles"] == p["cycles"] - p["instrs"][-1]["cycles"]
    assert p["layers"][0]["act_rd_bytes"] == 64 * CFG.pe_cols


def test_energy_constants_and_sums():
    e = EnergyModel()
    assert e.dram_pj_per_byte == pytest.approx(243.75)
    assert e.sram_pj_per_byte == pytest.approx(1.25) and e.mac_pj == pytest.approx(0.3)
    c = {"w_rd_bytes": 1000, "act_rd_bytes": 500, "act_wr_bytes": 250, "instr_rd_bytes": 250,
         "sram_rd_bytes": 4000, "sram_wr_bytes": 4000, "pb_rd_bytes": 800, "pb_wr_bytes": 0, "macs": 10 ** 6}
    r = energy(c)
    assert r["offchip_uj"] == pytest.approx(2000 * 243.75e-6)
    assert r["onchip_uj"] == pytest.approx(8000 * 1.25e-6 + 800 * 2.5e-6)
    assert r["compute_uj"] == pytest.approx(0.3)
    assert r["total_uj"] == pytest.approx(r["offchip_uj"] + r["onchip_uj"] + r["compute_uj"])
    assert energy(c, EnergyModel(dram_pj_per_byte=0))["offchip_uj"] == 0


def test_energy_of_prediction_resident_is_cheaper():
    tr = _trace()
    none = energy(predict(tr, CFG, DramTiming()))
    res = energy(predict(tr, CFG, DramTiming(), set(range(144))))
    assert res["offchip_uj"] < none["offchip_uj"] and res["total_uj"] < none["total_uj"]
    assert res["compute_uj"] == none["compute_uj"] > 0
    # counters only (RTL / golden): still works, on-chip as a lower bound
    cnt = energy({"w_rd_bytes": 64, "act_rd_bytes": 0, "act_wr_bytes": 0, "instr_rd_bytes": 32,
                  "pb_hits": 2, "mac_cycles": 10, "tile_bytes": 64})
    assert cnt["offchip_bytes"] == 96 and cnt["pb_bytes"] == 128 and cnt["macs"] == 640
