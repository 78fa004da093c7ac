"""Compiler unit tests: op handlers (against onnxruntime), folding, fusion, tiling, build files and the
exact error messages."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import CompileError, compile_graph, compile_onnx, supported_ops
from compiler.ir import run_float
from compiler.lower import pack_dense_tiles, pack_dw_tiles
from compiler.onnx_import import import_onnx
from compiler.passes import optimize
from compiler.quantize import mult_shift, mult_shift_shared
from models import zoo
from sushi.artifacts import BuildError, load_build
from sushi.config import AccelConfig, PRESETS
from sushi.isa import Op, requant, unpack_program, unpack_params

RNG = np.random.default_rng(0)


def single(op, attrs=None, inits=None, in_shape=(1, 3, 8, 8), out_shape=None, extra_inputs=(),
           name="n0", opset=13, pre=None):
    """A one-node model: x -> op(x, *extra_inputs) -> y."""
    nodes = list(pre or [])
    first = nodes[-1].output[0] if nodes else "x"
    nodes.append(helper.make_node(op, [first, *extra_inputs], ["y"], name=name, **(attrs or {})))
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def ort_run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def check_float(m, in_shape=(1, 3, 8, 8)):
    """Import + optimize, run the float IR, compare with onnxruntime; returns the graph."""
    g = import_onnx(m)
    optimize(g)
    x = RNG.standard_normal(in_shape).astype(np.float32)
    y = run_float(g, x)[g.output]
    r = ort_run(m, x)
    np.testing.assert_allclose(y.reshape(r.shape), r, rtol=1e-4, atol=1e-4)
    return g


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- op handlers

@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),
    dict(kernel_shape=[5, 5], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[1, 1]),
])
def test_conv_dense(attrs):
    k = attrs["kernel_shape"][0]
    g = check_float(single("Conv", attrs, {"W": w(5, 3, k, k), "B": w(5)}, extra_inputs=["W", "B"]))
    assert [n.op for n in g.nodes] == ["conv"] and not g.nodes[0].attrs["dw"]


def test_conv_depthwise_and_group_error():
    g = check_float(single("Conv", dict(group=3, pads=[1, 1, 1, 1]), {"W": w(3, 1, 3, 3)}, extra_inputs=["W"]))
    assert g.nodes[0].attrs["dw"]
    with pytest.raises(CompileError) as e:
        import_onnx(single("Conv", dict(group=2), {"W": w(4, 1, 1, 1)}, in_shape=(1, 2, 4, 4), extra_inputs=["W"]))
    assert str(e.value) == ("node 'n0' (Conv): attribute 'group'=2 is not supported "
                            "(only 1 or depthwise: group = in = out channels)")


def test_conv_dilation_error_message():
    m = single("Conv", dict(dilations=[2, 2]), {"W": w(4, 3, 3, 3)}, extra_inputs=["W"], name="conv3")
    with pytest.raises(CompileError) as e:
        import_onnx(m)
    assert str(e.value) == "node 'conv3' (Conv): attribute 'dilations'=[2, 2] is not supported (only 1)"


@pytest.mark.parametrize("transB,alpha,beta", [(0, 1.0, 1.0), (1, 0.5, 2.0)])
def test_gemm(transB, alpha, beta):
    B = w(10, 48) if transB else w(48, 10)
    m = single("Gemm", dict(transB=transB, alpha=alpha, beta=beta), {"B": B, "C": w(10)},
               extra_inputs=["B", "C"], pre=[helper.make_node("Flatten", ["x"], ["f"], name="flat")],
               in_shape=(1, 3, 4, 4))
    g = check_float(m, (1, 3, 4, 4))
    n = g.nodes[0]
    assert n.op == "conv" and (n.attrs["kh"], n.attrs["kw"]) == (4, 4)   # Flatten+Gemm -> CONV 4x4


def test_matmul_with_bias_add():
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "B"], ["mm"], name="mm")]
    m = single("Add", {}, {"B": w(12, 6), "bias": w(6)}, in_shape=(1, 3, 2, 2), extra_inputs=["bias"],
               pre=nodes)
    g = check_float(m, (1, 3, 2, 2))
    assert [n.op for n in g.nodes] == ["conv"]          # the bias Add folded into the MatMul


@pytest.mark.parametrize("op,attrs,extra,inits,act", [
    ("Relu", {}, [], {}, (0.0, math.inf)),
    ("Clip", {}, ["lo", "hi"], {"lo": np.float32(0), "hi": np.float32(6)}, (0.0, 6.0)),
    ("Clip", {}, ["lo", "hi"], {"lo": np.float32(-0.5), "hi": np.float32(1.5)}, (-0.5, 1.5)),
])
def test_activation_fusion(op, attrs, extra, inits, act):
    conv = helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1])
    m = single(op, attrs, {"W": w(4, 3, 3, 3), **inits}, extra_inputs=extra, pre=[conv])
    g = check_float(m)
    assert [n.op for n in g.nodes] == ["conv"] and g.nodes[0].attrs["act"] == act


def test_clip_opset6_attributes():
    conv = helper.make_node("Conv", ["x", "W"], ["c"], name="conv")
    m = single("Clip", dict(min=0.0, max=6.0), {"W": w(4, 3, 1, 1)}, pre=[conv], opset=6)
    g = import_onnx(m)
    optimize(g)
    assert g.nodes[0].attrs["act"] == (0.0, 6.0)


def test_standalone_relu_becomes_pool_and_bn_becomes_depthwise():
    g = check_float(single("Relu"))
    assert g.nodes[0].op == "maxpool" and g.nodes[0].attrs["kh"] == 1
    c = 3
    m = single("BatchNormalization", {}, {"s": w(c), "b": w(c), "m": w(c), "v": np.abs(w(c)) + 0.5},
               extra_inputs=["s", "b", "m", "v"])
    g = check_float(m)
    assert g.nodes[0].op == "conv" and g.nodes[0].attrs["dw"]


def test_batchnorm_folding():
    conv = helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1])
    m = single("BatchNormalization", dict(epsilon=1e-3), {"W": w(4, 3, 3, 3), "B": w(4), "s": w(4), "b": w(4),
               "m": w(4), "v": np.abs(w(4)) + 0.1}, extra_inputs=["s", "b", "m", "v"], pre=[conv], name="bn")
    g = check_float(m)
    assert [n.name for n in g.nodes] == ["conv+bn"]


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("GlobalAveragePool", {}),
])
def test_pools(op, attrs):
    check_float(single(op, attrs))


def test_avgpool_count_include_pad_error():
    with pytest.raises(CompileError) as e:
        import_onnx(single("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), name="ap"))
    assert str(e.value) == ("node 'ap' (AveragePool): attribute 'count_include_pad'=0 is not supported with "
                            "pads=[1, 1, 1, 1] (the divisor would vary at the border; use "
                            "count_include_pad=1 or no padding)")


@pytest.mark.parametrize("keep", [0, 1])
def test_reduce_mean(keep):
    check_float(single("ReduceMean", dict(axes=[2, 3], keepdims=keep)))


def test_reshape_identity_constant():
    shape_c = helper.make_node("Constant", [], ["shp"], value=numpy_helper.from_array(np.array([1, -1], np.int64)))
    ident = helper.make_node("Identity", ["x"], ["i"])
    m = single("Reshape", {}, {}, extra_inputs=["shp"], pre=[shape_c, ident])
    m.graph.node[1].input[0], m.graph.node[2].input[0] = "x", "i"
    g = import_onnx(m)
    optimize(g)
    assert g.nodes == [] and g.output == "x" and g.output_shape == (1, 192)


def test_residual_add_fusion():
    m = zoo.resnet_tiny()
    g = check_float(m, (1, 3, 16, 16))
    adds = [n for n in g.nodes if n.op == "add"]
    assert len(adds) == 2 and all(n.attrs["act"] == (0.0, math.inf) for n in adds)


# ---------------------------------------------------------------- errors

def test_unknown_op_error_message():
    with pytest.raises(CompileError) as e:
        import_onnx(single("Softmax", name="sm"))
    assert str(e.value) == ("node 'sm' (Softmax): op 'Softmax' is not supported; supported ops: "
                            + ", ".join(supported_ops()))


def test_unsupported_attribute_error_message():
    with pytest.raises(CompileError) as e:
        import_onnx(single("Relu", dict(alpha=0.1), name="r"))
    assert str(e.value) == "node 'r' (Relu): attribute 'alpha' is not supported"


def test_truncated_file_error_message(tmp_path):
    raw = zoo.tiny_cnn().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(CompileError) as e:
        compile_onnx(p, "tiny", tmp_path / "out", progress=False)
    assert str(e.value) == f"{p}: not a valid ONNX model (truncated or corrupt protobuf)"
    assert not (tmp_path / "out").exists()
    with pytest.raises(CompileError) as e:
        compile_onnx(tmp_path / "missing.onnx", "tiny", tmp_path / "out", progress=False)
    assert str(e.value) == f"ONNX file {tmp_path / 'missing.onnx'} does not exist"


def test_activation_buffer_overflow_error_message():
    cfg = AccelConfig(name="small", pe_rows=4, pe_cols=4, act_buf_words=100, wbuf_tiles=128)
    with pytest.raises(CompileError) as e:
        compile_graph(zoo.resnet_tiny(), cfg, calib=np.zeros((1, 3, 16, 16), np.float32))
    assert str(e.value) == ("layer 'layer1.conv1+layer1.bn1' (Conv): one output row needs 192 activation-buffer "
                            "words (3 input rows x 48 + 48 output words) but act_buf_words is 100")


def test_weight_buffer_overflow_error_message():
    cfg = AccelConfig(name="small", pe_rows=4, pe_cols=4, act_buf_words=2048, wbuf_tiles=16)
    with pytest.raises(CompileError) as e:
        compile_graph(zoo.tiny_cnn(), cfg, calib=np.zeros((1, 1, 8, 8), np.float32))
    assert str(e.value) == "layer 'conv2' (Conv): one group needs 18 weight tiles (3x3x2) but wbuf_tiles is 16"


def test_batch_size_error():
    with pytest.raises(CompileError) as e:
        import_onnx(single("Relu", in_shape=(2, 3, 8, 8)))
    assert str(e.value) == "graph input 'x': batch size 2 is not supported (only 1)"


# ---------------------------------------------------------------- quantization and tiling

def test_mult_shift_ranges_and_precision():
    M = np.array([1e-6, 0.001, 0.37, 1.0, 3.9, 1000.0])
    m, s = mult_shift(M)
    assert np.all(m < 1 << 16) and np.all((0 <= s) & (s < 64))
    np.testing.assert_allclose(m / 2.0 ** s, M, rtol=1e-4)
    (ma, mb), sh = mult_shift_shared([0.5, 0.02])
    assert max(ma, mb) < 1 << 16 and abs(ma / 2 ** sh - 0.5) < 1e-4 and abs(mb / 2 ** sh - 0.02) < 1e-4
    assert int(requant(1000, m[2], s[2])) == 127 and int(requant(100, m[2], s[2])) == 37


def test_dense_tile_layout():
    R, V = 8, 4
    Wq = RNG.integers(-127, 128, (10, 6, 3, 2)).astype(np.int8)
    T = pack_dense_tiles(Wq, R, V)
    cin_w, kh, kw = 2, 3, 2
    for g in range(2):
        for ky in range(kh):
            for kx in range(kw):
                for c in range(cin_w):
                    t = T[((g * kh + ky) * kw + kx) * cin_w + c]
                    for r in range(R):
                        for j in range(V):
                            co, ci = g * R + r, c * V + j
                            exp = Wq[co, ci, ky, kx] if co < 10 and ci < 6 else 0
                            assert t[r, j] == exp


def test_depthwise_tile_layout():
    R, V = 4, 4
    Wq = RNG.integers(-127, 128, (6, 1, 3, 3)).astype(np.int8)
    T = pack_dw_tiles(Wq, R, V)
    NT = 3
    assert T.shape == (2 * NT, R, V)
    for c in range(6):
        for p in range(9):
            assert T[(c // V) * NT + p // R, p % R, c % V] == Wq[c, 0, p // 3, p % 3]


# ---------------------------------------------------------------- build directory

def test_build_files_and_manifest(tmp_path):
    out = tmp_path / "b"
    x = RNG.standard_normal((4, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    man = compile_onnx(zoo.mobilenet_tiny(), "8x8", out, calib=tmp_path / "calib.npz", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "program_main.bin", "weights.bin"]
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(man))
    assert man["format"] == "sushi-build" and man["version"] == 1
    b = load_build(out)
    assert b.cfg == PRESETS["8x8"] and b.macs() == man["programs"]["main"]["macs"] > 0
    img, pb, wb = b.dram_image()
    assert len(img) == man["memory"]["total_bytes"]
    instrs = unpack_program(bytes(img[pb:pb + 32 * man["programs"]["main"]["n_instrs"]]))
    assert instrs[-1].op == Op.HALT and len(instrs) == man["programs"]["main"]["n_instrs"]
    assert {i.op for i in instrs} >= {Op.LOAD, Op.STORE, Op.CONV, Op.POOL}
    rec = man["programs"]["main"]["records"]
    bias, mult, shift = unpack_params(bytes(img[pb + rec["offset"]:pb + rec["offset"] + 8 * 8]))
    assert np.all(shift < 64) and np.any(mult > 0)
    xq = b.quantize_input(x[:1])
    assert xq.dtype == np.int8 and xq.shape == (1, 3, 16, 16)
    b.write_input(img, xq)
    a, n = b.output_region()
    assert b.decode_output(bytes(n)).shape == (1, 10)
    assert onnx.load(str(b.onnx_path)).graph.name == "mobilenet_tiny"


def test_load_build_errors(tmp_path):
    with pytest.raises(BuildError) as e:
        load_build(tmp_path)
    assert str(e.value) == f"{tmp_path / 'manifest.json'}: manifest is missing (not a build directory?)"
    compile_onnx(zoo.tiny_cnn(), "tiny", tmp_path / "b", calib=np.zeros((1, 1, 8, 8), np.float32), progress=False)
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    del m["programs"]["main"]["output"]["scale"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BuildError) as e:
        load_build(tmp_path / "b")
    assert str(e.value) == f"{tmp_path / 'b' / 'manifest.json'}: programs.main: missing field 'output.scale'"


def test_failed_compile_keeps_previous_build(tmp_path):
    out = tmp_path / "b"
    compile_onnx(zoo.tiny_cnn(), "tiny", out, calib=np.zeros((1, 1, 8, 8), np.float32), progress=False)
    before = (out / "manifest.json").read_text()
    with pytest.raises(CompileError):
        compile_onnx(single("Softmax"), "tiny", out, progress=False)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_resnet50_compile_time(tmp_path):
    """Benchmark target: a ResNet-50-sized ONNX (224x224, ~25 M params) in <= 10 s incl. calibration."""
    m = zoo.resnet50()
    p = tmp_path / "r50.onnx"
    onnx.save(m, str(p))
    np.savez(tmp_path / "calib.npz", RNG.standard_normal((1, 3, 224, 224)).astype(np.float32))
    # the presets' weight buffers (256 tiles) cannot hold a 3x3x512 group (576 tiles at V=8)
    cfg = AccelConfig(name="r50", pe_rows=16, pe_cols=8, act_buf_words=16384, wbuf_tiles=1024)
    t = time.perf_counter()
    man = compile_onnx(p, cfg, tmp_path / "b", calib=tmp_path / "calib.npz", progress=False)
    dt = time.perf_counter() - t
    print(f"\nResNet-50 compile: {dt:.2f} s, {man['weights']['n_tiles']} tiles, "
          f"{man['programs']['main']['n_instrs']} instructions, {man['programs']['main']['macs'] / 1e9:.2f} GMACs")
    assert 4.0e9 < man["programs"]["main"]["macs"] < 4.2e9
    assert dt <= 10.0
