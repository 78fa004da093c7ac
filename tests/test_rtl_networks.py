"""Whole networks on Verilator: bit-exact against the golden model, close to onnxruntime."""
from pathlib import Path

import onnx
import pytest

from compiler import compile_onnx
from sushi.config import PRESETS
from sushi.verify import verify_build
from models import zoo


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("nets")
    out = {}
    for name in ("tiny_cnn", "resnet_tiny", "mobilenet_tiny"):
        compile_onnx(getattr(zoo, name)(), PRESETS["8x8"], root / name)
        out[name] = root / name
    return out


@pytest.mark.rtl
@pytest.mark.xdist_group("rtl_nets")
@pytest.mark.parametrize("name", ["tiny_cnn", "resnet_tiny", "mobilenet_tiny"])
def test_network_bit_exact_on_verilator(builds, name):
    rep = verify_build(builds[name], sim="verilator", n_inputs=3).report
    assert rep["mismatched_bytes"] == 0, rep
    assert rep["counters_match"], rep["counter_diffs"]
    assert rep["bit_exact"] is True
    assert rep["cycles"] > 0 and 0 < rep["pe_utilization"] <= 1
    assert rep["dram_weight_bytes"] > 0 and rep["dram_act_bytes"] > 0
    # int8 quantization error: dequantized outputs close to onnxruntime's float outputs
    assert rep["onnx_max_abs_err"] <= 0.15 * rep["onnx_output_range"] + 1e-6, rep
    assert rep["onnx_top1_agreement"] >= 2 / 3, rep


@pytest.mark.rtl
@pytest.mark.xdist_group("rtl_nets")
def test_checker_catches_a_corrupted_output_byte(builds):
    rep = verify_build(builds["tiny_cnn"], sim="verilator", n_inputs=1, corrupt_byte=3).report
    assert rep["bit_exact"] is False
    assert rep["mismatched_bytes"] == 1


@pytest.mark.rtl
@pytest.mark.xdist_group("rtl_nets")
def test_verify_waves_writes_a_vcd(builds):
    rep = verify_build(builds["tiny_cnn"], sim="verilator", n_inputs=1, rtl_options={"waves": True}).report
    assert rep["bit_exact"] is True
    vcd = Path(rep["waves"])
    assert vcd.exists() and vcd.parent.joinpath("sim.log").exists()
    head = vcd.read_text(errors="replace")[:20000]
    assert head.startswith("$version") and "$scope module" in head and " clk " in head
