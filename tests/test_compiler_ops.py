"""Compiler op coverage beyond v1: element-wise functions -> LUT (native and decomposed h-swish /
h-sigmoid, sigmoid), squeeze-excite -> MUL, constant folding of Shape-derived subgraphs, ReduceMean
variants, Squeeze / Unsqueeze, the global-pool split, error messages, and docs/ops.md vs the registry."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import CompileError, compile_graph, ops_markdown, supported_ops
from compiler.ir import X, ew_affine_clip, ew_eval
from compiler.onnx_import import OP_DOCS, import_onnx
from compiler.passes import optimize
from compiler.quantize import lut_bytes, lut_table
from sushi.artifacts import load_build
from sushi.config import AccelConfig
from sushi.isa import Op, unpack_program
from test_compiler import check_float, single, w
from test_golden_vs_onnx import evaluate

ROOT = Path(__file__).resolve().parents[1]


def graph(nodes, inits=None, in_shape=(1, 8, 8, 8), opset=13):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def c(v):
    return np.asarray(v, np.float32)


def conv(x, out, wname, pads=1, name=None):
    return helper.make_node("Conv", [x, wname, wname + "_b"], [out], pads=[pads] * 4, name=name or out)


def hswish_decomposed(x, y, p):
    """x * relu6(x + 3) / 6 as torch's exporters emit OFA's h-swish."""
    return [helper.make_node("Add", [x, p + "three"], [p + "a"]),
            helper.make_node("Clip", [p + "a", p + "zero", p + "six"], [p + "c"]),
            helper.make_node("Mul", [x, p + "c"], [p + "m"]),
            helper.make_node("Div", [p + "m", p + "six"], [y])]


def hconsts(p):
    return {p + "three": c(3), p + "zero": c(0), p + "six": c(6)}


CFG = AccelConfig(name="t16x8", pe_rows=16, pe_cols=8, act_buf_words=4096, wbuf_tiles=256)


def run_eval(m, tmp_path, cfg=CFG, shape=(8, 8, 8), n=4):
    calib = np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32) * 2
    return evaluate(m, cfg, tmp_path / "b", calib, calib)


# ---------------------------------------------------------------- docs / registry

def test_ops_md_matches_registry():
    text = (ROOT / "docs" / "ops.md").read_text()
    table = ops_markdown()
    assert table in text, "docs/ops.md is out of date: regenerate its table from compiler.ops_markdown()"
    for op in supported_ops():
        assert op in OP_DOCS and f"| {op} |" in text
    for op in ("HardSwish", "HardSigmoid", "Sigmoid", "Mul", "Div", "Sub", "Shape", "Squeeze", "Unsqueeze"):
        assert op in supported_ops()


# ---------------------------------------------------------------- LUT table construction

def test_lut_table_construction():
    fn = ("hswish", X)
    s_in, s_out = 0.05, 0.04
    t = lut_table(fn, s_in, s_out)
    q = np.arange(-128, 128)
    ref = np.clip(np.rint(ew_eval(fn, (q * s_in).astype(np.float32)).astype(np.float64) / s_out), -128, 127)
    assert np.array_equal(t, ref.astype(np.int8))
    raw = np.frombuffer(lut_bytes(t), np.int8)
    for qq in (-128, -1, 0, 1, 127):             # byte (q & 0xFF) holds T[q]
        assert raw[qq & 0xFF] == t[qq + 128]


def test_affine_clip_canonical_form():
    hsig = ("clip", 0.0, 1.0, ("affine", 1 / 6, 0.5, X))
    assert ew_affine_clip(hsig) == pytest.approx((1 / 6, 0.5, 0.0, 1.0))
    # relu6(x + 3) / 6 == hard sigmoid
    dec = ("affine", 1 / 6, 0.0, ("clip", 0.0, 6.0, ("affine", 1.0, 3.0, X)))
    a, b, lo, hi = ew_affine_clip(dec)
    v = np.linspace(-8, 8, 101).astype(np.float32)
    np.testing.assert_allclose(np.clip(a * v + b, lo, hi), ew_eval(hsig, v), atol=1e-6)
    assert ew_affine_clip(("hswish", X)) is None


# ---------------------------------------------------------------- element-wise ops

@pytest.mark.parametrize("op,attrs", [("HardSwish", {}), ("HardSigmoid", dict(alpha=0.2, beta=0.5)),
                                      ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", dict(alpha=0.1))])
def test_elementwise_standalone_lut(op, attrs, tmp_path):
    m = single(op, attrs, opset=14)
    g = check_float(m)
    assert [n.op for n in g.nodes] == ["ew"]
    r = run_eval(m, tmp_path, shape=(3, 8, 8))
    assert r["exact"] and r["max_rel"] < 0.03, r
    layers = load_build(tmp_path / "b").program()["layers"]
    assert [layer["op"] for layer in layers] == ["lut"]


@pytest.mark.parametrize("form", ["native", "opset13", "decomposed"])
def test_conv_hswish_fused_lut(form, tmp_path):
    """conv -> h-swish in the three forms the exporters emit becomes CONV + LUT in one layer."""
    nodes = [conv("x", "t", "W")]
    opset = 14
    inits = {"W": w(8, 8, 3, 3) * 0.3, "W_b": w(8)}
    if form == "native":
        nodes.append(helper.make_node("HardSwish", ["t"], ["y"]))
    elif form == "opset13":
        nodes += [helper.make_node("HardSigmoid", ["t"], ["hs"], alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", ["t", "hs"], ["y"])]
        opset = 13
    else:
        nodes += hswish_decomposed("t", "y", "h")
        inits.update(hconsts("h"))
    m = graph(nodes, inits, opset=opset)
    g = check_float(m, (1, 8, 8, 8))
    assert [n.op for n in g.nodes] == ["conv", "ew"]
    r = run_eval(m, tmp_path)
    assert r["exact"] and r["max_rel"] < 0.03, r
    b = load_build(tmp_path / "b")
    (layer,) = b.program()["layers"]
    assert layer["op"] == "conv" and "lut" in layer and b.program()["luts"] == 1
    img, pb, _ = b.dram_image()
    ops = [i.op for i in unpack_program(bytes(img[pb:pb + 32 * b.program()["n_instrs"]]))]
    assert ops[:4] == [Op.LOAD, Op.CONV, Op.LUT, Op.STORE]


@pytest.mark.parametrize("form", ["native", "decomposed"])
def test_hsigmoid_after_conv_folds_into_clamp(form):
    nodes = [conv("x", "t", "W")]
    inits = {"W": w(8, 8, 3, 3), "W_b": w(8)}
    if form == "native":
        nodes.append(helper.make_node("HardSigmoid", ["t"], ["y"], alpha=1 / 6, beta=0.5))
    else:
        nodes += [helper.make_node("Add", ["t", "three"], ["a"]),
                  helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
                  helper.make_node("Div", ["cl", "six"], ["y"])]
        inits.update({"three": c(3), "zero": c(0), "six": c(6)})
    g = check_float(graph(nodes, inits), (1, 8, 8, 8))
    assert [n.op for n in g.nodes] == ["conv"]
    assert g.nodes[0].attrs["act"] == pytest.approx((0.0, 1.0))


def squeeze_excite_model(opset=13, order="x_gate", single_axis=True):
    """conv -> SE (mean over W then H, reduce conv + relu, expand conv + h-sigmoid, channel Mul)."""
    nodes = [conv("x", "t", "W")]
    if single_axis:
        if opset >= 18:
            nodes += [helper.make_node("ReduceMean", ["t", "ax3"], ["m3"], keepdims=1),
                      helper.make_node("ReduceMean", ["m3", "ax2"], ["m"], keepdims=1)]
        else:
            nodes += [helper.make_node("ReduceMean", ["t"], ["m3"], axes=[3], keepdims=1),
                      helper.make_node("ReduceMean", ["m3"], ["m"], axes=[2], keepdims=1)]
    else:
        nodes.append(helper.make_node("GlobalAveragePool", ["t"], ["m"]))
    nodes += [conv("m", "r", "Wr", pads=0), helper.make_node("Relu", ["r"], ["rr"]),
              conv("rr", "e", "We", pads=0),
              helper.make_node("HardSigmoid", ["e"], ["gate"], alpha=1 / 6, beta=0.5),
              helper.make_node("Mul", ["t", "gate"] if order == "x_gate" else ["gate", "t"], ["y"])]
    inits = {"W": w(24, 8, 3, 3) * 0.3, "W_b": w(24), "Wr": w(8, 24, 1, 1) * 0.3, "Wr_b": w(8),
             "We": w(24, 8, 1, 1) * 0.5, "We_b": w(24), "ax3": np.array([3], np.int64),
             "ax2": np.array([2], np.int64)}
    return graph(nodes, inits, opset=opset)


@pytest.mark.parametrize("opset,order,single_axis", [(13, "x_gate", True), (18, "gate_x", True),
                                                      (13, "x_gate", False)])
def test_squeeze_excite_mul(opset, order, single_axis, tmp_path):
    m = squeeze_excite_model(opset, order, single_axis)
    g = check_float(m, (1, 8, 8, 8))
    assert [n.op for n in g.nodes] == ["conv", "avgpool", "conv", "conv", "chmul"]
    r = run_eval(m, tmp_path)
    assert r["exact"] and r["max_rel"] < 0.05, r
    ops = [layer["op"] for layer in load_build(tmp_path / "b").program()["layers"]]
    assert ops == ["conv", "avgpool", "conv", "conv", "mul"]


def test_global_pool_split_when_buffer_is_small(tmp_path):
    """A global pool whose input does not fit the buffer becomes a 1 x W and an H x 1 pool."""
    m = squeeze_excite_model()
    cfg = AccelConfig(name="small", pe_rows=8, pe_cols=8, act_buf_words=150, wbuf_tiles=256)
    r = run_eval(m, tmp_path, cfg=cfg)
    assert r["exact"] and r["max_rel"] < 0.05, r
    b = load_build(tmp_path / "b")
    pools = [layer for layer in b.program()["layers"] if layer["op"] == "avgpool"]
    assert [p["kernel"] for p in pools] == [[1, 8], [8, 1]]
    assert b.manifest["passes"]["split_global_pool"] == 1


def test_mul_by_constants_and_sub(tmp_path):
    nodes = [helper.make_node("Sub", ["x", "k"], ["a"]), helper.make_node("Mul", ["a", "s"], ["b"]),
             helper.make_node("Sub", ["k", "b"], ["y"])]
    m = graph(nodes, {"k": c(0.5), "s": w(1, 8, 1, 1)})
    check_float(m, (1, 8, 8, 8))
    r = run_eval(m, tmp_path)
    assert r["exact"] and r["max_rel"] < 0.05, r


# ---------------------------------------------------------------- constant folding, reshapes

def test_shape_subgraph_folding_and_classifier_reshape():
    """x.view(x.size(0), -1) as the legacy exporter writes it without constant folding, a
    ConstantOfShape, then Gemm; Squeeze / Unsqueeze around the classifier."""
    i64 = lambda v: np.array(v, np.int64)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Shape", ["p"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("ConstantOfShape", ["one"], ["m1"], value=numpy_helper.from_array(i64([-1]))),
             helper.make_node("Concat", ["n1", "m1"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["p", "tgt"], ["f"]),
             helper.make_node("Gemm", ["f", "B", "C"], ["g"], transB=1),
             helper.make_node("Unsqueeze", ["g", "ax23"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax23"], ["y"])]
    m = graph(nodes, {"zero": i64(0), "ax0": i64([0]), "one": i64([1]), "B": w(10, 8), "C": w(10),
                      "ax23": i64([2, 3])})
    g = check_float(m, (1, 8, 8, 8))
    assert [n.op for n in g.nodes] == ["avgpool", "conv"]
    assert g.output_shape == (1, 10)


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_axes_forms(opset):
    if opset >= 18:
        n = [helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=0)]
        m = graph(n, {"ax": np.array([2, 3], np.int64)}, opset=18)
    else:
        m = graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1, -2], keepdims=0)])
    g = check_float(m, (1, 8, 8, 8))
    assert [n.op for n in g.nodes] == ["avgpool"]


# ---------------------------------------------------------------- errors

def test_error_product_of_unrelated_activations():
    m = graph([conv("x", "a", "W"), conv("x", "b", "V"), helper.make_node("Mul", ["a", "b"], ["y"], name="prod")],
              {"W": w(4, 8, 3, 3), "W_b": w(4), "V": w(4, 8, 3, 3), "V_b": w(4)})
    with pytest.raises(CompileError) as e:
        compile_graph(m, CFG, calib=np.zeros((1, 8, 8, 8), np.float32))
    assert str(e.value) == ("node 'prod' (Mul): a product of two activation tensors is supported only as "
                            "x * f(x) with f an element-wise function of the same tensor (e.g. h-swish); "
                            "here the inputs 'a' and 'b' are not")


@pytest.mark.parametrize("nodes,inits,msg", [
    ([helper.make_node("Div", ["k", "x"], ["y"], name="d")], {"k": c(1.0)},
     "node 'd' (Div): input 'A' is a constant: dividing a constant by an activation is not supported"),
    ([helper.make_node("Div", ["x", "x"], ["y"], name="d")], {},
     "node 'd' (Div): inputs 'A' and 'B' are both activations; Div of two activation tensors is not supported"),
    ([helper.make_node("HardSigmoid", ["x"], ["y"], name="h", gamma=1.0)], {},
     "node 'h' (HardSigmoid): attribute 'gamma' is not supported"),
    ([helper.make_node("ReduceMean", ["x"], ["y"], name="r", axes=[1])], {},
     "node 'r' (ReduceMean): attribute 'axes'=[1] is not supported (only the spatial axes [2, 3], or [2] / [3] "
     "with keepdims=1)"),
    ([helper.make_node("Mul", ["x", "k"], ["y"], name="mm")], {"k": w(8, 8)},
     "node 'mm' (Mul): input 'B' has shape [8, 8]; only a scalar or per-channel constant can be combined "
     "with a tensor of shape [1, 8, 8, 8]"),
])
def test_error_messages(nodes, inits, msg):
    with pytest.raises(CompileError) as e:
        import_onnx(graph(nodes, inits))
    assert str(e.value) == msg
