"""The programs in examples/ are integration tests too: each main(out_dir) runs as a user would run
it and returns the figures it printed; the assertions are on behaviour, not on exact numbers."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    """Import examples/<name>.py (file names start with digits, so not as a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_is_listed_and_has_main():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(scripts) >= 4
    for s in scripts:
        assert f"{s}.py" in readme, f"examples/README.md does not list {s}.py"
        assert callable(_example(s).main)


@pytest.mark.rtl
def test_01_compile_verify(tmp_path):
    fig = _example("01_compile_verify").main(tmp_path)
    assert fig["bit_exact"]                        # golden == RTL, every byte and counter
    assert fig["rtl_cycles"] > 0 and fig["macs"] > 0 and fig["dram_weight_bytes"] > 0
    assert fig["onnx_max_abs_err"] < 0.05 * fig["onnx_range"]
    assert fig["top1_agrees"]


@pytest.fixture(scope="module")
def supernet_example(tmp_path_factory):
    # 2 epochs are enough here: the assertions are about the Persistent Buffer, not accuracy
    return _example("02_supernet_subgraph").main(tmp_path_factory.mktemp("ex02"), epochs=2)


def test_02_supernet_subgraph(supernet_example):
    fig = supernet_example
    assert fig["same_output"]                       # identical bytes cold and with the SubGraph
    assert fig["pb_hits_cold"] == 0 and fig["pb_hits"] > 0
    assert fig["dram_weight_bytes"] < fig["dram_weight_bytes_cold"]
    assert fig["dram_weight_bytes_cold"] - fig["dram_weight_bytes"] == fig["pb_hits"] * fig["tile_bytes"]
    assert fig["load_w_bytes"] >= fig["sg_tiles"] * fig["tile_bytes"]
    assert (Path(fig["build"]) / "latency_table.json").is_file()


def _check_serving(fig):
    from scheduler import POLICIES
    pol = fig["policies"]
    assert set(pol) == set(POLICIES)
    for name, m in pol.items():
        assert m["served"] + m["dropped"] == fig["arrivals"], name
        assert 0.0 <= m["slo_attainment"] <= 1.0
    assert pol["oracle"]["slo_attainment"] >= pol["sushi"]["slo_attainment"]
    assert pol["sushi"]["slo_attainment"] > pol["static-max"]["slo_attainment"]
    assert pol["sushi"]["served_accuracy"] > pol["static-min"]["served_accuracy"]


def test_03_schedule_trace_synthetic(tmp_path):
    fig = _example("03_schedule_trace").main(tmp_path)
    _check_serving(fig)
    assert (tmp_path / "trace.csv").is_file() and (tmp_path / "serve.json").is_file()


def test_03_schedule_trace_on_the_example_02_build(tmp_path, supernet_example):
    fig = _example("03_schedule_trace").main(tmp_path, table=supernet_example["build"], queries=2000)
    _check_serving(fig)


@pytest.mark.rtl
def test_04_host_runtime(tmp_path):
    from sushi.isa import ISA_VERSION
    # timeout_cycles as in tests/test_runtime_soc.py: the same SoC, one Verilator build for both
    fig = _example("04_host_runtime").main(tmp_path, timeout_cycles=2000)
    assert fig["bit_exact"] and fig["isa_version"] == ISA_VERSION
    assert len(fig["cycles"]) == fig["queries"] and min(fig["cycles"]) > 0
    c = fig["last_counters"]
    assert c["error"] == 0 and c["busy"] == 0 and c["cycles"] == fig["cycles"][-1]
