"""Fuzzing the compiler with mutated ONNX files: every case must end in a successful compile or a
CompileError, never another exception."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from compiler import CompileError, compile_graph
from models import zoo
from sushi.config import PRESETS

BASE = {name: fn().SerializeToString() for name, fn in zoo.ZOO.items()}
BASE["layer_add"] = zoo.random_layer_model(np.random.default_rng(1), "add")[0].SerializeToString()
BASE["layer_gemm"] = zoo.random_layer_model(np.random.default_rng(2), "gemm")[0].SerializeToString()
NAMES = sorted(BASE)
CALIB = {}

OP_TYPES = ["Conv", "Gemm", "MatMul", "Relu", "Clip", "Add", "MaxPool", "AveragePool",
            "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Identity",
            "BatchNormalization", "Constant", "Mul", "Sigmoid", "Concat", "Softmax", ""]
ATTR_NAMES = ["strides", "pads", "dilations", "group", "kernel_shape", "axis", "transB", "transA",
              "alpha", "count_include_pad", "ceil_mode", "epsilon", "keepdims", "axes", "auto_pad", "bogus"]


def attempt(model_or_bytes, cfg="tiny"):
    """Compile; returns 'ok' or 'error'; any other exception propagates (the test fails)."""
    try:
        m = model_or_bytes
        if isinstance(m, (bytes, bytearray)):
            from compiler.onnx_import import load_model
            m = load_model(m)
        chw = None
        for vi in m.graph.input:
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            if len(dims) == 4:
                chw = dims[1:]
        calib = None
        if chw and all(0 < d < 64 for d in chw):
            calib = np.random.default_rng(0).standard_normal((2, *chw)).astype(np.float32)
        compile_graph(m, PRESETS[cfg], calib=calib)
        return "ok"
    except CompileError as e:
        assert str(e), "a CompileError must have a message"
        return "error"


@st.composite
def attr_value(draw):
    kind = draw(st.sampled_from(["int", "ints", "float", "string", "floats"]))
    if kind == "int":
        return draw(st.integers(-3, 300))
    if kind == "ints":
        return draw(st.lists(st.integers(-3, 20), min_size=1, max_size=6))
    if kind == "float":
        return draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
    if kind == "floats":
        return draw(st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=3))
    return draw(st.sampled_from(["SAME_UPPER", "VALID", "NOTSET", "bogus"]))


@st.composite
def mutated(draw):
    m = onnx.ModelProto()
    m.ParseFromString(BASE[draw(st.sampled_from(NAMES))])
    g = m.graph
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "op", "shape", "del_init", "init_shape", "input",
                                     "del_node", "init_value", "del_attr"]))
        nodes = list(g.node)
        if kind == "attr" and nodes:
            n = nodes[draw(st.integers(0, len(nodes) - 1))]
            name = draw(st.sampled_from(ATTR_NAMES))
            for a in list(n.attribute):
                if a.name == name:
                    n.attribute.remove(a)
            n.attribute.append(helper.make_attribute(name, draw(attr_value())))
        elif kind == "del_attr" and nodes:
            n = nodes[draw(st.integers(0, len(nodes) - 1))]
            if n.attribute:
                del n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
        elif kind == "op" and nodes:
            n = nodes[draw(st.integers(0, len(nodes) - 1))]
            n.op_type = draw(st.sampled_from(OP_TYPES))
        elif kind == "shape":
            dims = g.input[0].type.tensor_type.shape.dim
            i = draw(st.integers(0, len(dims) - 1)) if len(dims) else 0
            if len(dims):
                dims[i].dim_value = draw(st.integers(0, 40))
        elif kind == "del_init" and len(g.initializer):
            del g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        elif kind == "init_shape" and len(g.initializer):
            i = draw(st.integers(0, len(g.initializer) - 1))
            arr = numpy_helper.to_array(g.initializer[i])
            new = arr.reshape(-1)[:max(1, arr.size - draw(st.integers(0, 3)))]
            if draw(st.booleans()) and new.size > 1:
                new = new.reshape(1, -1)
            g.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), g.initializer[i].name))
        elif kind == "init_value" and len(g.initializer):
            i = draw(st.integers(0, len(g.initializer) - 1))
            arr = numpy_helper.to_array(g.initializer[i]).copy()
            if arr.size and arr.dtype.kind == "f":
                arr.reshape(-1)[0] = draw(st.sampled_from([0.0, -1.0, 1e30, np.inf, np.nan]))
                g.initializer[i].CopyFrom(numpy_helper.from_array(arr, g.initializer[i].name))
        elif kind == "input" and nodes:
            n = nodes[draw(st.integers(0, len(nodes) - 1))]
            if len(n.input):
                j = draw(st.integers(0, len(n.input) - 1))
                choices = [g.input[0].name, "nope", ""] + [x.output[0] for x in nodes if x.output]
                n.input[j] = draw(st.sampled_from(choices))
        elif kind == "del_node" and len(nodes) > 1:
            del g.node[draw(st.integers(0, len(nodes) - 1))]
    return m


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated(), st.sampled_from(["tiny", "8x8", "16x8"]))
def test_mutated_models_compile_or_compile_error(model, cfg):
    attempt(model, cfg)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NAMES), st.data())
def test_corrupted_bytes_compile_or_compile_error(name, data):
    raw = bytearray(BASE[name])
    how = data.draw(st.sampled_from(["truncate", "flip", "both"]))
    if how in ("truncate", "both"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    if how in ("flip", "both") and raw:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    attempt(bytes(raw))


@pytest.mark.parametrize("name", NAMES)
def test_unmutated_bases_compile(name):
    assert attempt(BASE[name]) == "ok"
