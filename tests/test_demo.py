"""`sushi demo`: its warm-run cache key, the Verilog reuse, and (slow) the whole demo, cold then warm."""
import json
from pathlib import Path

import numpy as np
import pytest

from sushi.config import load_config
from sushi.demo import CACHE_FILE, _cached, _reuse_verilog, inputs_key


def _fake_net(d: Path) -> Path:
    (d / "subnets").mkdir(parents=True)
    (d / "supernet.onnx").write_bytes(b"super")
    (d / "subnets" / "a.onnx").write_bytes(b"a")
    (d / "subnets.json").write_text(json.dumps({"subnets": [{"name": "a", "onnx": "subnets/a.onnx", "macs": 1}]}))
    return d


def test_inputs_key_follows_the_inputs(tmp_path):
    net = _fake_net(tmp_path / "net")
    cfg, calib = load_config("8x8-pb"), np.zeros((4, 1, 8, 8), np.float32)
    k = inputs_key(net, cfg, calib)
    assert k == inputs_key(net, cfg, calib)
    # the int8 evaluation writes its results into subnets.json: not an input
    raw = json.loads((net / "subnets.json").read_text())
    raw["subnets"][0]["quantized"] = {"accuracy": 0.9}
    (net / "subnets.json").write_text(json.dumps(raw))
    assert inputs_key(net, cfg, calib) == k
    assert inputs_key(net, load_config("8x8"), calib) != k
    assert inputs_key(net, cfg, calib + 1) != k
    (net / "subnets" / "a.onnx").write_bytes(b"a2")
    k2 = inputs_key(net, cfg, calib)
    assert k2 != k
    raw["subnets"][0]["macs"] = 2
    (net / "subnets.json").write_text(json.dumps(raw))
    assert inputs_key(net, cfg, calib) != k2


def test_cache_needs_the_key_and_the_build(tmp_path):
    b = tmp_path / "build"
    b.mkdir()
    assert _cached(b, "k") is None
    (b / CACHE_FILE).write_text(json.dumps({"key": "k", "int8": {}, "compile_s": 1, "int8_s": 1}))
    assert _cached(b, "k") is None                 # no build files
    (b / "manifest.json").write_text("{}")
    (b / "latency_table.json").write_text("{}")
    assert _cached(b, "k")["key"] == "k"
    assert _cached(b, "other") is None


def test_reuse_verilog_only_for_its_config(tmp_path):
    import sim.rtl as rtl
    orig = rtl._accel_verilog
    v = tmp_path / "sushi_accel.v"
    v.write_text("module sushi_accel; endmodule\n")
    cfg = load_config("8x8-pb")
    with _reuse_verilog(cfg, v):
        assert rtl._accel_verilog(cfg, tmp_path / "x") == v
        assert rtl._accel_verilog is not orig
    assert rtl._accel_verilog is orig


@pytest.mark.slow
@pytest.mark.rtl
def test_demo_cold_then_warm(tmp_path):
    """A small demo (3 epochs, 200 queries, 4 RTL queries) passes, writes every part of the report;
    the second run reuses the SuperNet, the compile and the int8 evaluation and still verifies."""
    from sushi import tools
    from sushi.demo import run_demo
    tools.setup()
    out = tmp_path / "demo"
    s1 = run_demo(out, epochs=3, queries=200, rtl_queries=4, say=lambda m: None)
    assert s1["ok"]
    assert s1["phases"]["train"]["status"] == "ran" and s1["phases"]["compile"]["status"] == "ran"
    rep = (out / "report.md").read_text()
    for part in ("| phase | lane |", "## SubNets", "pareto.png", "## SubGraph Stationary", "sgs_gain.png",
                 "## Bit-exact on Verilator", "## Policies side by side", "## RTL-in-the-loop"):
        assert part in rep, part
    assert set(s1["rtl_in_the_loop"]) == {"sushi", "no-pb"}
    assert all(m["rtl_queries"] > 0 for m in s1["rtl_in_the_loop"].values())
    s2 = run_demo(out, epochs=3, queries=200, rtl_queries=4, say=lambda m: None)
    assert s2["ok"]
    ph = s2["phases"]
    assert ph["train"]["status"] == "reused" and ph["compile"]["status"] == "cached"
    assert ph["int8_eval"]["status"] == "cached"
    assert ph["verify"]["status"] == "ran"
    wall = ("replay_s", "queries_per_s")             # the replay's own speed: not a result
    assert {p: {k: v for k, v in m.items() if k not in wall} for p, m in s2["policies"].items()} == \
        {p: {k: v for k, v in m.items() if k not in wall} for p, m in s1["policies"].items()}
