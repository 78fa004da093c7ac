"""Compile zoo nets and random layers, run the golden model on the program, compare with onnxruntime
(within quantization error) and with the compiler's integer reference of the IR (bit exact)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from compiler import compile_graph, compile_onnx
from compiler.quantize import run_int
from models import zoo
from sushi.artifacts import load_build
from sushi.config import PRESETS

golden = pytest.importorskip("sim.golden")


def ort_run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def input_chw(model):
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]


def run_golden(build, x):
    """float NCHW x -> (int8 output in ONNX shape, dequantized float output, counters, image)."""
    img, pb, wb = build.dram_image()
    xq = build.quantize_input(x)
    build.write_input(img, xq)
    counters = golden.GoldenModel(build.cfg).run(img, pb, wb)
    a, n = build.output_region()
    yq = build.decode_output(img[a:a + n])
    return yq, build.dequantize_output(yq), counters, img


def evaluate(model, cfg, out_dir, xs, calib, held_out=()):
    compile_onnx(model, cfg, out_dir, calib=calib, progress=False)
    b = load_build(out_dir)
    g, _, _ = compile_graph(model, PRESETS[cfg] if isinstance(cfg, str) else cfg, calib=calib)
    s_out = b.program()["output"]["scale"]
    agree, errs, rel, exact = 0, [], [], True
    for x in held_out:
        x = x[None]
        agree += int(np.argmax(run_golden(b, x)[1]) == np.argmax(ort_run(model, x)))
    for x in xs:
        x = x[None]
        yq, y, _, _ = run_golden(b, x)
        ref_int = run_int(g, b.quantize_input(x))[g.output]
        exact &= np.array_equal(yq.reshape(-1), _flat_chw(ref_int, g).reshape(-1))
        r = ort_run(model, x)
        errs.append(float(np.abs(y - r).max()))
        rel.append(errs[-1] / (127 * s_out))          # relative to the output's full scale
        agree += int(np.argmax(y) == np.argmax(r))
    return dict(top1=agree / (len(xs) + len(held_out)), max_abs=max(errs), max_rel=max(rel), s_out=s_out, exact=exact)


def _flat_chw(v, g):
    return np.asarray(v)[0]          # [C, H, W] in CHW order == ONNX flatten order


@pytest.mark.parametrize("cfg", ["tiny", "8x8", "16x8"])
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_net_golden_vs_onnxruntime(name, cfg, tmp_path):
    model = zoo.ZOO[name]()
    chw = input_chw(model)
    rng = np.random.default_rng(123)
    calib = rng.standard_normal((16, *chw)).astype(np.float32)
    held_out = rng.standard_normal((16, *chw)).astype(np.float32)
    # error bound on in-calibration-range inputs (held-out inputs may also saturate)
    r = evaluate(model, cfg, tmp_path / "b", calib[:8], calib, held_out)
    print(f"\n{name:15s} {cfg:5s} top-1 agreement {r['top1']:.2f}  max|err| {r['max_abs']:.4f} "
          f"(= {r['max_rel']:.4f} of full scale, s_out {r['s_out']:.4f})  bit-exact vs IR: {r['exact']}")
    assert r["exact"], "golden model output differs from the compiler's integer reference"
    assert r["top1"] >= 0.85
    assert r["max_rel"] < 0.05


@pytest.mark.parametrize("seed", range(24))
def test_random_layer_golden_vs_onnxruntime(seed, tmp_path):
    model, desc = zoo.random_layer_model(np.random.default_rng(seed))
    chw = input_chw(model)
    rng = np.random.default_rng(seed + 1000)
    calib = rng.standard_normal((8, *chw)).astype(np.float32)
    xs = calib[:3]
    cfg = ["tiny", "8x8", "16x8"][seed % 3]
    r = evaluate(model, cfg, tmp_path / "b", xs, calib)
    print(f"\n{desc} {cfg}: max|err| {r['max_abs']:.4f} (rel {r['max_rel']:.4f}) exact {r['exact']}")
    assert r["exact"]
    # a few output quantization steps plus propagated input/weight rounding
    assert r["max_rel"] < 0.03, (desc, r)


def _edge_models():
    from onnx import helper
    from test_compiler import single, w
    return {
        "add_x_x": single("Add", extra_inputs=["x"]),
        "relu_on_input": single("Relu"),
        "batchnorm_on_input": single("BatchNormalization", {}, {"s": w(3), "b": w(3), "m": w(3),
                                     "v": np.abs(w(3)) + 0.5}, extra_inputs=["s", "b", "m", "v"]),
        "clip_after_maxpool": single("Clip", {}, {"lo": np.float32(-0.5), "hi": np.float32(1.0)},
                                     extra_inputs=["lo", "hi"],
                                     pre=[helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2])]),
        "flattened_conv_output": single("Flatten", inits={"W": w(5, 3, 3, 3)},
                                        pre=[helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1])]),
    }


@pytest.mark.parametrize("name", ["add_x_x", "relu_on_input", "batchnorm_on_input", "clip_after_maxpool",
                                  "flattened_conv_output"])
@pytest.mark.parametrize("cfg", ["tiny", "16x8"])
def test_edge_graphs_golden(name, cfg, tmp_path):
    model = _edge_models()[name]
    calib = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    r = evaluate(model, cfg, tmp_path / "b", calib, calib)
    assert r["exact"] and r["max_rel"] < 0.03, r


def test_banded_layers_golden(tmp_path):
    """A small activation buffer forces row bands with halos on every conv / pool layer."""
    from sushi.config import AccelConfig
    cfg = AccelConfig(name="small", pe_rows=8, pe_cols=4, act_buf_words=160, wbuf_tiles=128)
    model = zoo.mobilenet_tiny()
    calib = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    r = evaluate(model, cfg, tmp_path / "b", calib, calib)
    layers = load_build(tmp_path / "b").program()["layers"]
    assert max(layer["bands"] for layer in layers) >= 3
    assert r["exact"] and r["max_rel"] < 0.05, r
