"""SuperNet builds (compiler/supernet.py, share.py, catalog.py; build format v2).

One weight image for every SubNet of a digits SuperNet: each SubNet's program on the golden model
equals the integer executor of its quantized graph, is close to onnxruntime on its own ONNX, gives
the same bytes with nothing resident, with a SubGraph resident and across a SubGraph swap, and the
Verilator RTL matches the golden model byte for byte and counter for counter.
"""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler import CompileError
from compiler.catalog import loadsg_program
from compiler.quantize import run_int
from compiler.supernet import compile_supernet, run_steps_golden, steps_to_rtl_jobs, verify_steps
from sim.golden import COUNTER_NAMES, GoldenModel
from sushi.artifacts import BuildError, load_build
from sushi.config import PRESETS

CFG = PRESETS["8x8-pb"]
PICK = [0, 5, 9, 15, 20, 23]          # 6 SubNets of the bundled 24, smallest .. largest by MACs


def _supernet_dir(root: Path) -> Path:
    src = Path("/tmp/digits")
    if (src / "subnets.json").is_file() and len(json.loads((src / "subnets.json").read_text())["subnets"]) >= 24:
        d = root / "digits"
        shutil.copytree(src, d)
        m = json.loads((d / "subnets.json").read_text())
        m["subnets"] = [m["subnets"][i] for i in PICK]
    else:                                  # no trained SuperNet around: a quick one
        from models.train import train
        d = root / "digits"
        train(d, epochs=2, n_subnets=6, n_candidates=12, progress=False, plot=False)
        m = json.loads((d / "subnets.json").read_text())
    # one SubNet that shares nothing: every Conv/Gemm weight negated (alpha < 0 everywhere)
    base = m["subnets"][0]
    neg = onnx.load(d / base["onnx"])
    wnames = {n.input[1] for n in neg.graph.node if n.op_type in ("Conv", "Gemm")}
    for init in neg.graph.initializer:
        if init.name in wnames:
            a = -onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(a, init.name))
    onnx.save(neg, d / "subnets" / "negated.onnx")
    m["subnets"].append(dict(base, name="negated", onnx="subnets/negated.onnx"))
    (d / "subnets.json").write_text(json.dumps(m, indent=1))
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from models.train import load_digits_split
    root = tmp_path_factory.mktemp("supernet")
    d = _supernet_dir(root)
    data = load_digits_split()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        man, plan = compile_supernet(d / "supernet.onnx", d / "subnets.json", CFG, root / "out",
                                     calib=data["train"][0][:256], progress=False, return_plan=True)
    return dict(dir=d, out=root / "out", man=man, plan=plan, data=data, warnings=[str(x.message) for x in w])


def _names(built):
    return list(built["plan"].subnets)


def test_share_report_and_weight_image(built):
    man, out = built["man"], built["out"]
    rep = json.loads((out / "share.json").read_text())
    assert (out / "share.txt").read_text().startswith("share analysis")
    for name, s in rep["subnets"].items():
        if name == "negated":
            assert s["shared"] == 0 and all("negative scale" in L["reason"] for L in s["layers"])
        else:
            assert s["private"] == 0, [L["reason"] for L in s["layers"] if not L["shared"]]
            assert all(L["matched_by"] == "initializer" and min(L["alpha"]) > 0 for L in s["layers"])
    assert any("shares nothing" in w and "negated" in w for w in built["warnings"])
    sn = man["supernet"]
    assert sn["weight_image_bytes"] == man["weights"]["bytes"] < sn["sum_subnet_tile_bytes"]
    # the negated SubNet's tiles are private, after the SuperNet's
    assert man["programs"]["negated"]["tiles"]["private"][0] == sn["tiles"]
    assert man["programs"]["negated"]["tiles"]["shared"] == 0
    b = load_build(out)
    assert b.version == 2 and set(b.program_names) == set(_names(built))
    assert b.program("main") is b.program(man["default_program"])


def _query(b, name, xq, gm=None):
    img, pb, wb = b.dram_image(program=name)
    b.write_input(img, xq, program=name)
    c = (gm or GoldenModel(b.cfg)).run(img, pb, wb)
    a, n = b.output_region(name)
    return b.decode_output(img[a:a + n], program=name), c


def test_golden_equals_integer_reference_for_every_subnet(built):
    b = load_build(built["out"])
    xt = built["data"]["test"][0]
    for name, s in built["plan"].subnets.items():
        g = s["graph"]
        for i in range(3):
            xq = b.quantize_input(xt[i:i + 1], program=name)
            out, c = _query(b, name, xq)
            ref = run_int(g, xq.astype(np.int64))[g.output]
            assert c.error == 0 and np.array_equal(out.reshape(-1), ref.reshape(-1)), name


def test_close_to_onnxruntime(built):
    import onnxruntime as ort
    x, y = built["data"]["test"]
    b = load_build(built["out"])
    accs = {}
    for name, s in built["plan"].subnets.items():
        g = s["graph"]
        sess = ort.InferenceSession(str(s["path"]), providers=["CPUExecutionProvider"])
        f = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(len(x))])
        xq = np.stack([b.quantize_input(x[i:i + 1], program=name)[0] for i in range(len(x))])
        q = run_int(g, xq.astype(np.int64))[g.output].reshape(len(x), -1)
        agree = float(np.mean(f.argmax(1) == q.argmax(1)))
        accs[name] = (float(np.mean(f.argmax(1) == y)), float(np.mean(q.argmax(1) == y)), agree)
        assert agree >= 0.95, (name, accs[name])
    largest = built["man"]["default_program"]
    fa, qa, _ = accs[largest]
    assert qa >= fa - 0.015, accs[largest]


def test_resident_subgraph_and_swap_same_bytes_fewer_dram_bytes(built):
    b = load_build(built["out"])
    cat = b.catalog()
    ids = [c["id"] for c in cat["subgraphs"]]
    assert len(ids) >= 2 and all(c["tiles"] <= CFG.pb_tiles and len(c["boxes"]) <= CFG.res_entries
                                 for c in cat["subgraphs"])
    # every SubNet (but the one that shares nothing) is contained by a SubGraph: it hits on every
    # resident tile of it, and the smallest SubNet's whole weight set fits the 512-tile PB
    assert {n for c in cat["subgraphs"] for n in c["subnets"]} == set(_names(built)) - {"negated"}
    T = CFG.tile_bytes
    x = built["data"]["test"][0][7:8]
    any_hits = False
    for name in _names(built):
        steps = verify_steps(built["out"], name, resident=ids[0], swap=ids[1], inputs=x)
        r = run_steps_golden(steps, b.cfg)
        cold, load_a, hot_a, load_b, hot_b = r
        assert cold["regions"] == hot_a["regions"] == hot_b["regions"]
        for load, sg, hot in ((load_a, cat["subgraphs"][0], hot_a), (load_b, cat["subgraphs"][1], hot_b)):
            assert load["counters"]["error"] == 0 and load["counters"]["w_rd_bytes"] == sg["tiles"] * T
            hits = hot["counters"]["pb_hits"]
            assert hits == sg["per_subnet"][name]["pb_hits"]
            assert cold["counters"]["w_rd_bytes"] - hot["counters"]["w_rd_bytes"] == hits * T
            assert hot["counters"]["pb_hits"] + hot["counters"]["pb_misses"] == cold["counters"]["pb_misses"]
            any_hits |= hits > 0
        if name != "negated":
            assert hot_a["counters"]["pb_hits"] > 0
    assert any_hits


def test_errors(built, tmp_path):
    d = built["dir"]
    with pytest.raises(CompileError, match="does not exist"):
        compile_supernet(d / "nope.onnx", d / "subnets.json", CFG, tmp_path / "o", progress=False)
    with pytest.raises(CompileError, match="does not exist"):
        compile_supernet(d / "supernet.onnx", d / "nope.json", CFG, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    b = load_build(built["out"])
    with pytest.raises(BuildError, match="no SubGraph 'sg99'"):
        b.subgraph("sg99")
    with pytest.raises(BuildError, match="sg99"):
        verify_steps(built["out"], _names(built)[0], resident="sg99")
    # a SubGraph larger than the PB: the compiler refuses to write its program ...
    with pytest.raises(CompileError, match="larger than the Persistent Buffer"):
        loadsg_program([(0, CFG.pb_tiles + 1, 1)], {0: dict(base=0, sg=1, sky=0, skx=0, kh=1, kw=1, dw=1)}, CFG)
    # ... and a hand-made one is error 3 on the accelerator, nothing resident
    from sushi.isa import Op, encode
    img, pb, wb = b.dram_image(program=_names(built)[0])
    raw = encode(Op.LOADSG, tile_lo=0, n_tiles=CFG.pb_tiles + 1, pb_slot=0) + encode(Op.HALT)
    img[0:len(raw)] = raw
    gm = GoldenModel(CFG)
    assert gm.run(img, 0, wb).error == 3 and gm.resident_tiles() == 0
    # ... as is a residency key the table does not have (SETRES, PBKEY), nothing changed
    for bad in (encode(Op.SETRES, key=CFG.res_entries, rows=1, c_res=1, pb_slot=0),
                encode(Op.SETRES, key=0, rows=CFG.pb_tiles, c_res=2, pb_slot=0),
                encode(Op.PBKEY, key=CFG.res_entries, on=1)):
        img[0:64] = bad + encode(Op.HALT)
        assert gm.run(img, 0, wb).error == 3 and gm.resident_tiles() == 0


@pytest.mark.rtl
def test_rtl_bit_exact_cold_resident_and_swap(built):
    from sim.rtl import RtlSim
    b = load_build(built["out"])
    ids = b.subgraph_ids
    x = built["data"]["test"][0][3:4]
    steps = []
    for name in _names(built):
        st = verify_steps(built["out"], name, resident=ids[0], swap=ids[1], inputs=x)
        steps += st
    gold = run_steps_golden(steps, CFG)       # one accelerator state for the whole list, like the RTL
    rtl = RtlSim(CFG, dram_bytes=1 << 20).run_jobs(steps_to_rtl_jobs(steps))
    for st, g, r in zip(steps, gold, rtl):
        assert not r.timed_out and not r.dram_addr_err, st["label"]
        assert r.regions == g["regions"], st["label"]
        for k in COUNTER_NAMES:
            assert r.counters[k] == g["counters"][k], (st["label"], k)
        assert r.counters["error"] == g["counters"]["error"] == 0
    assert any(g["counters"]["pb_hits"] > 0 for g in gold)
