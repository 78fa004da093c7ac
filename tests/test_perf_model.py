"""The performance model (sim/perf.py) against the RTL's CYCLES counter, and the energy model.

The RTL part runs one Verilator build (8x8-pb, latency 20, 2 bytes/cycle: the memory-bound timing
tests/test_rtl_pb.py also uses, so the build is shared) and one simulator run holding every job:
random single layers, each with a layer box resident (whole, partial rows, partial columns, wider
than the layer; LOADSG + SETRES, PBKEY), a network and its layers, and the layers again with a
SubGraph resident; then the same jobs at a second timing (short latency, full bandwidth).
"""
import numpy as np
import pytest

from compiler import compile_onnx
from models import zoo
from sim.energy import EnergyModel, energy
from sim.golden import GoldenModel
from sim.perf import DramTiming, Residency, decode_program, instr_cycles, predict, program_cycles
from sushi.artifacts import load_build
from sushi.config import PRESETS
from sushi.isa import INSTR_BYTES, Op, decode, encode

from pbprog import box_load, conv_shape, pbkey, split, with_keys

CFG = PRESETS["8x8-pb"]
LATENCY, BANDWIDTH = 20, 2
FAST = (5, None)           # the second timing of the PB programs: short latency, full bandwidth
TOL = 0.05
N_LAYERS = 12
HALT = encode(Op.HALT)


def _append(img: bytearray, prog: bytes) -> int:
    at = -(-len(img) // 64) * 64
    img += bytes(at - len(img)) + prog
    return at


def _box_shape(f, R: int, variant: int, room: int) -> tuple:
    """A box for CONV ``f``: the whole layer (0), half its rows (1), fewer columns (2), more rows
    and columns than the CONV uses (3); at most ``room`` tiles."""
    rows, cols = conv_shape(f, R)
    br, bc = [(rows, cols), (-(-rows // 2), cols), (rows, max(1, cols - 1)), (rows + 1, cols + 1)][variant % 4]
    return max(1, min(br, room // bc)), bc


def _geom(f) -> tuple:
    return f["dw"], f["tile_base"], f["tile_sg"], f["tile_sky"], f["tile_skx"], f["kh"], f["kw"]


def _jobs(root):
    """-> (images, jobs): each job {name, cat, img, pb, wb}; images by key."""
    R = CFG.pe_rows
    images, jobs = {}, []
    for i in range(N_LAYERS):
        rng = np.random.default_rng(2000 + i)
        model, desc = zoo.random_layer_model(rng)
        compile_onnx(model, CFG, root / f"l{i}")
        b = load_build(root / f"l{i}")
        img, pb, wb = b.dram_image()
        jobs.append(dict(name=f"layer {i} {desc['kind']}", cat="layer", img=f"l{i}", pb=pb, wb=wb))
        # the layer with a box of its first CONV resident (key 32 + i, partial boxes too): the load
        # program, the layer with PBKEY, then with PBKEY toggling between the box and none
        raw = split(img[pb:])
        convs = [decode(w).fields for w in raw if w[0] == Op.CONV]
        if convs:
            f0 = convs[0]
            br, bc = _box_shape(f0, R, i, CFG.pb_tiles)
            rows, cols = conv_shape(f0, R)
            key = 32 + i
            sg = _append(img, b"".join(box_load(f0, key, br, bc, i % 3, used_rows=rows, used_cols=cols))
                         + HALT)
            q = _append(img, b"".join(with_keys(raw, lambda k, f: key if _geom(f) == _geom(f0) else None)))
            alt = _append(img, b"".join(with_keys(raw, lambda k, f: key if k % 2 == 0 and _geom(f) == _geom(f0)
                                                  else None)))
            jobs += [dict(name=f"load box {i} {br}x{bc} of {rows}x{cols}", cat="loadsg", img=f"l{i}", pb=sg, wb=wb),
                     dict(name=f"box layer {i}", cat="pb", img=f"l{i}", pb=q, wb=wb),
                     dict(name=f"box layer {i} toggling", cat="pb", img=f"l{i}", pb=alt, wb=wb)]
        images[f"l{i}"] = bytes(img)
    compile_onnx(zoo.tiny_cnn(), CFG, root / "net")
    b = load_build(root / "net")
    img, pb, wb = b.dram_image()
    prog = b.program("main")
    raw = split(img[pb:pb + prog["n_instrs"] * INSTR_BYTES])
    # SubGraph: every other layer with tiles, one box (key = the layer's index) each; every layer's
    # CONVs run with PBKEY = their layer's key (an invalid entry for the layers not resident)
    keys, ents, slot = {}, [], 0
    for k, L in enumerate(prog["layers"]):
        f, n = L["instrs"]
        convs = [decode(w).fields for w in raw[f:f + n] if w[0] == Op.CONV]
        if not convs:
            continue
        keys[_geom(convs[0])] = k
        br, bc = _box_shape(convs[0], R, k // 2, CFG.pb_tiles - slot)
        if k % 2 == 0 and br * bc <= CFG.pb_tiles - slot:
            rows, cols = conv_shape(convs[0], R)
            ents += box_load(convs[0], k, br, bc, slot, used_rows=rows, used_cols=cols)
            slot += br * bc
    assert ents and keys
    by_key = lambda k, f: keys.get(_geom(f))  # noqa: E731
    layer_pb = []
    for L in prog["layers"]:
        f, n = L["instrs"]
        layer_pb.append((L["name"], _append(img, b"".join(raw[f:f + n]) + HALT),
                         _append(img, b"".join(with_keys(raw[f:f + n], by_key)) + HALT)))
    sg = _append(img, b"".join(ents) + HALT)
    net_keys = _append(img, b"".join(with_keys(raw, by_key)))
    evict = _append(img, b"".join(encode(Op.SETRES, key=k, rows=0, c_res=0, pb_slot=0)
                                  for k in range(CFG.res_entries)) + HALT)
    images["net"] = bytes(img)
    net = lambda name, cat, at: jobs.append(dict(name=name, cat=cat, img="net", pb=at, wb=wb))  # noqa: E731
    net("tiny_cnn", "network", pb)
    for name, at, _ in layer_pb:
        net(f"cold {name}", "cold", at)
    net("load SubGraph", "loadsg", sg)
    net("tiny_cnn resident", "network", net_keys)
    for name, _, at in layer_pb:
        net(f"resident {name}", "resident", at)
    net("tiny_cnn no PBKEY", "network", pb)
    net("evict", "loadsg", evict)
    net("tiny_cnn evicted", "network", net_keys)
    return images, jobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every job on the RTL at the memory-bound timing (``rtl``, ``model``) and again, in a second
    batch, at a short latency and full bandwidth (``rtl2``, ``model2``)."""
    from sim.rtl import Job, RtlSim
    images, jobs = _jobs(tmp_path_factory.mktemp("perf"))
    gm = GoldenModel(CFG)
    for j in jobs:        # residency before each job, carried from job to job like the RTL's
        j["resident"] = list(gm.res_table)
        j["trace"] = decode_program(images[j["img"]], j["pb"])
        j["golden"] = gm.run(bytearray(images[j["img"]]), j["pb"], j["wb"]).as_dict()
    for sfx, (lat, bw) in (("", (LATENCY, BANDWIDTH)), ("2", FAST)):
        sim = RtlSim(CFG, latency=lat, bandwidth=bw)
        res = sim.run_jobs([Job(dram_image=images[j["img"]], prog_base=j["pb"], weight_base=j["wb"])
                            for j in jobs])
        t = DramTiming(latency=lat, bandwidth=bw)
        for j, r in zip(jobs, res):
            assert not r.timed_out and r.counters["error"] == 0, j["name"]
            j["rtl" + sfx] = r.counters
            j["model" + sfx] = predict(j["trace"], CFG, t, j["resident"])
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
    assert {"layer", "network", "cold", "resident", "loadsg", "pb"} <= cats


@pytest.mark.rtl
def test_pb_programs_cycle_exact(runs):
    """LOADSG / SETRES / PBKEY programs and every run with PB hits: the model is cycle-exact, at
    both timings."""
    pb_ops = {Op.LOADSG, Op.SETRES, Op.PBKEY}
    sel = [j for j in runs if j["rtl"]["pb_hits"] or any(i.op in pb_ops for i in j["trace"])]
    assert sum(1 for j in sel if j["rtl"]["pb_hits"]) >= 12
    assert {Op.LOADSG, Op.SETRES, Op.PBKEY} <= {i.op for j in sel for i in j["trace"]}
    bad = [f"{j['name']}{s}: RTL {j['rtl' + s]['cycles']}, model {j['model' + s]['cycles']}"
           for j in sel for s in ("", "2") if j["model" + s]["cycles"] != j["rtl" + s]["cycles"]]
    worst = max(abs(j["model" + s]["cycles"] - j["rtl" + s]["cycles"]) for j in runs for s in ("", "2"))
    print(f"perf model: {len(runs)} programs x 2 timings ({len(sel)} PB), worst error {worst} cycles")
    assert not bad, "\n".join(bad)


@pytest.mark.rtl
def test_traffic_counters_exact(runs):
    for j in runs:
        for s in ("", "2"):
            for k in ("w_rd_bytes", "act_rd_bytes", "act_wr_bytes", "instr_rd_bytes", "pb_hits", "pb_misses",
                      "mac_cycles"):
                assert j["model" + s][k] == j["rtl" + s][k] == j["golden"][k], (j["name"], s, k)
            assert j["rtl" + s]["instrs"] == j["golden"]["instrs"], j["name"]


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
    assert nets[1]["rtl"]["pb_hits"] > 0
    assert nets[1]["rtl"]["cycles"] < nets[0]["rtl"]["cycles"]
    assert nets[1]["model"]["cycles"] < nets[0]["model"]["cycles"]
    # without PBKEY nothing hits although the SubGraph is resident; after the evict nothing hits
    assert nets[2]["rtl"]["pb_hits"] == nets[3]["rtl"]["pb_hits"] == 0
    boxes = [j for j in runs if j["cat"] == "pb"]
    assert all(j["rtl"]["pb_hits"] > 0 for j in boxes if "toggling" not in j["name"])
    assert any(0 < j["rtl"]["pb_hits"] < j["rtl"]["pb_hits"] + j["rtl"]["pb_misses"] for j in boxes)


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
    assert instr_cycles(tr[-1], CFG, DramTiming()) == 20 + 4 + 3     # HALT: latency + 4 beats + CHECK, CHECK2, DECODE
    assert full["w_rd_bytes"] == 4 * 36 * CFG.tile_bytes + 4 * CFG.pe_rows * 8
    assert full["mac_cycles"] == 4 * 16 * 36 and full["macs"] == full["mac_cycles"] * CFG.tile_bytes
    # legacy spelling: beats per cycle
    assert predict(tr, CFG, DramTiming(20, beats_per_cycle=0.25))["cycles"] == slow["cycles"]


def test_residency_forms_agree():
    tr = decode_program(pbkey(0) + b"".join(_conv_prog()))
    t = DramTiming(20, 2)
    none = predict(tr, CFG, t)
    ids = predict(tr, CFG, t, set(range(36)))                      # group 0: rows 0..8, columns 0..3
    table = predict(tr, CFG, t, [(9, 4, 0)] + [None] * 7)
    keyed = predict(tr, CFG, t, {0: (9, 4, 100)})
    assert ids["cycles"] == table["cycles"] == keyed["cycles"] < none["cycles"]
    assert table["pb_hits"] == 36 and table["w_rd_bytes"] == none["w_rd_bytes"] - 36 * CFG.tile_bytes
    assert table["pb_rd_bytes"] == 36 * CFG.tile_bytes
    # the entry is used only with PBKEY: without it, or with another key, nothing hits
    assert predict(_trace(), CFG, t, {0: (9, 4, 0)})["pb_hits"] == 0
    assert predict(decode_program(pbkey(1) + b"".join(_conv_prog())), CFG, t, {0: (9, 4, 0)})["pb_hits"] == 0
    assert predict(decode_program(pbkey(0) + pbkey(None) + b"".join(_conv_prog())), CFG, t,
                   {0: (9, 4, 0)})["pb_hits"] == 0
    # a SETRES inside the program updates the residency for what follows (LOADSG does not)
    sg = decode_program(encode(Op.LOADSG, tile_lo=0, n_tiles=36, pb_slot=0)
                        + encode(Op.SETRES, key=3, rows=9, c_res=4, pb_slot=0) + pbkey(3) + b"".join(_conv_prog()))
    p = predict(sg, CFG, t)
    assert p["pb_hits"] == 36 and p["residency_after"][3] == (9, 4, 0)
    assert p["instrs"][1]["cycles"] > 0 and p["instrs"][0]["w_rd_bytes"] == 36 * CFG.tile_bytes
    inv = decode_program(encode(Op.SETRES, key=3, rows=0, c_res=4, pb_slot=0) + pbkey(3) + b"".join(_conv_prog()))
    p = predict(inv, CFG, t, {3: (9, 4, 0)})
    assert p["pb_hits"] == 0 and p["residency_after"][3] is None


@pytest.mark.parametrize("seed", range(4))
def test_box_fetch_agrees_with_per_tile_path(seed):
    """The per-row closed form of the weight fetch (boxes) equals the per-tile walk (taken when a
    what-if id set is given: an id no CONV names forces it) for random boxes and timings."""
    rng = np.random.default_rng(seed)
    tr = decode_program(pbkey(0) + b"".join(_conv_prog()))
    dw = decode_program(pbkey(0) + encode(Op.CONV, dw=1, kh=5, kw=5, sh=1, sw=1, pad_top=2, pad_left=2, in_h=4,
                                          in_w=4, out_h=4, out_w=4, cin_w=4, cout_w=4, n_groups=4, in_addr=0,
                                          out_addr=100, clamp_lo=-128, clamp_hi=127, tile_base=5, tile_sg=7,
                                          tile_sky=0, tile_skx=0, param_addr=0x1000) + HALT)
    for _ in range(6):
        box = (int(rng.integers(0, 40)), int(rng.integers(0, 6)), 0)
        t = DramTiming(int(rng.integers(3, 30)), [None, 2, 3.5, 8][int(rng.integers(0, 4))])
        for prog in (tr, dw):
            a = predict(prog, CFG, t, {0: box})
            r = Residency(CFG, {0: box})
            r.ids = frozenset({1 << 30})
            b = predict(prog, CFG, t, r)
            assert {k: a[k] for k in ("cycles", "pb_hits", "pb_misses", "w_rd_bytes")} == \
                   {k: b[k] for k in ("cycles", "pb_hits", "pb_misses", "w_rd_bytes")}, (box, t)


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
