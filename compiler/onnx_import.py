"""ONNX -> IR: one small handler per ONNX op type, registered with @handler; shapes inferred here."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import CompileError, node_error
from .ir import NO_ACT, X, Graph, Node, Tensor, conv_out, out_chw

__all__ = ["HANDLERS", "OP_DOCS", "handler", "load_model", "import_onnx", "supported_ops", "ops_markdown",
           "FOLDED"]

#: ONNX op type -> handler(ctx, node) ; the published op-coverage table is docs/ops.md
HANDLERS: dict = {}
#: ONNX op type -> (supported attributes / inputs, how it lowers, limitations): docs/ops.md
OP_DOCS: dict = {}
#: pseudo-row of the op table: nodes whose inputs are all constants
FOLDED = "(any op, all inputs constant)"


def handler(*op_types, doc=None):
    """Register an import handler for op_types; ``doc`` = (attributes, lowering, limitations) or a
    dict op -> such a tuple (one row of docs/ops.md per op)."""
    def deco(fn):
        for t in op_types:
            HANDLERS[t] = fn
            d = doc.get(t) if isinstance(doc, dict) else doc
            if d is None:
                raise ValueError(f"handler for {t} registered without documentation")
            OP_DOCS[t] = d
        return fn
    return deco


def supported_ops() -> list:
    return sorted(HANDLERS)


def ops_markdown() -> str:
    """The op-coverage table of docs/ops.md, generated from the registry."""
    rows = ["| op | supported attributes / inputs | lowers to | limitations (CompileError otherwise) |",
            "|---|---|---|---|"]
    for op in supported_ops() + [FOLDED]:
        a, low, lim = OP_DOCS[op]
        rows.append(f"| {op} | {a} | {low} | {lim} |")
    return "\n".join(rows) + "\n"


OP_DOCS[FOLDED] = ("any, evaluated with `onnx.reference` at import (Shape-derived, Constant, "
                   "ConstantOfShape, Gather, Concat, Cast, Unsqueeze, ... subgraphs)",
                   "a constant (no instructions)",
                   "random ops (Random*, Bernoulli, Multinomial) are not folded")


# ---------------------------------------------------------------- loading

def load_model(src) -> onnx.ModelProto:
    """A path, bytes or ModelProto -> ModelProto; a file that is not ONNX is a CompileError."""
    if isinstance(src, onnx.ModelProto):
        return src
    if isinstance(src, (bytes, bytearray)):
        data, where = bytes(src), "<bytes>"
    else:
        p = Path(os.fspath(src))
        if not p.is_file():
            raise CompileError(f"ONNX file {p} does not exist")
        data, where = p.read_bytes(), str(p)
    if not data:
        raise CompileError(f"{where}: empty file, not an ONNX model")
    try:
        m = onnx.ModelProto()
        m.ParseFromString(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise CompileError(f"{where}: not a valid ONNX model (truncated or corrupt protobuf)") from None
    if not m.HasField("graph") or len(m.graph.node) == 0:
        raise CompileError(f"{where}: not a valid ONNX model (no graph or no nodes)")
    return m


# ---------------------------------------------------------------- attribute access

_ATTR_KIND = {"int": onnx.AttributeProto.INT, "ints": onnx.AttributeProto.INTS,
              "float": onnx.AttributeProto.FLOAT, "floats": onnx.AttributeProto.FLOATS,
              "string": onnx.AttributeProto.STRING, "tensor": onnx.AttributeProto.TENSOR}


class Ctx:
    """Import state: constants, activation tensors, the IR being built."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.consts: dict = {}
        self.tensors: dict = {}
        self.nodes: list = []
        self.opset = 13
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        self.cur = None          # the ONNX node being imported

    # -- errors
    def err(self, what: str) -> CompileError:
        return node_error(self.cur.name, self.cur.op_type, what)

    # -- attributes
    def attr(self, name, kind, default=None):
        for a in self.cur.attribute:
            if a.name == name:
                if a.type != _ATTR_KIND[kind]:
                    raise self.err(f"attribute '{name}' has type {onnx.AttributeProto.AttributeType.Name(a.type)}, expected {kind}")
                if kind == "int":
                    return int(a.i)
                if kind == "ints":
                    return [int(v) for v in a.ints]
                if kind == "float":
                    return float(a.f)
                if kind == "floats":
                    return [float(v) for v in a.floats]
                if kind == "string":
                    return a.s.decode("utf-8", "replace")
                return a.t
        return default

    def check_attrs(self, allowed):
        for a in self.cur.attribute:
            if a.name not in allowed:
                raise self.err(f"attribute '{a.name}' is not supported")

    # -- inputs
    def n_inputs(self, lo, hi):
        n = len(self.cur.input)
        if not lo <= n <= hi:
            raise self.err(f"expected {lo}..{hi} inputs, got {n}")
        if len(self.cur.output) < 1 or not self.cur.output[0]:
            raise self.err("has no output")

    def act_in(self, i, what="X") -> Tensor:
        name = self.cur.input[i] if i < len(self.cur.input) else ""
        if name in self.tensors:
            return self.tensors[name]
        if name in self.consts:
            raise self.err(f"input '{what}' ('{name}') is a constant; an activation tensor is required")
        raise self.err(f"input '{what}' ('{name}') is not produced by any node")

    def const_in(self, i, what, optional=False):
        name = self.cur.input[i] if i < len(self.cur.input) else ""
        if not name:
            if optional:
                return None
            raise self.err(f"input '{what}' is missing")
        if name in self.consts:
            return self.consts[name]
        if name in self.tensors:
            raise self.err(f"input '{what}' ('{name}') must be a constant initializer, not an activation tensor")
        raise self.err(f"input '{what}' ('{name}') is not defined")

    def is_const(self, i):
        return i < len(self.cur.input) and self.cur.input[i] in self.consts

    # -- outputs
    def define_const(self, value, i=0):
        out = self.cur.output[i] if len(self.cur.output) > i else ""
        if not out or out in self.consts or out in self.tensors:
            raise self.err(f"output '{out}' is missing or defined twice")
        self.consts[out] = value

    def emit(self, op, inputs, chw, shape=None, attrs=None, params=None):
        out = self.cur.output[0]
        if out in self.tensors or out in self.consts:
            raise self.err(f"output '{out}' is defined twice")
        node = Node(self.cur.name, op, [t.name for t in inputs], out, self.cur.op_type,
                    attrs or {}, params or {})
        self.nodes.append(node)
        t = Tensor(out, tuple(int(v) for v in chw), tuple(int(v) for v in (shape or (1, *chw))))
        self.tensors[out] = t
        # own shape inference check of the canonical node
        g = Graph("", "", self.tensors, [])
        got = out_chw(g, node)
        if tuple(got) != t.chw:
            raise self.err(f"inferred shape {list(got)} differs from {list(t.chw)}")
        return node

    def alias(self, src: Tensor, shape):
        """A no-compute node (Identity / Flatten / Reshape); eliminated by a pass."""
        return self.emit("identity" if self.cur.op_type == "Identity" else "flatten", [src], src.chw, shape)


def _rank4(ctx, t: Tensor, what="X"):
    if len(t.shape) != 4:
        raise ctx.err(f"input '{what}' must be 4-D NCHW, got shape {list(t.shape)}")


def _pads(ctx, kh, kw, sh, sw, H, W, kind):
    """pads (top, left, bottom, right) from 'pads' / 'auto_pad'."""
    auto = ctx.attr("auto_pad", "string", "NOTSET")
    pads = ctx.attr("pads", "ints", None)
    if auto in ("NOTSET", ""):
        pads = pads if pads is not None else [0, 0, 0, 0]
        if len(pads) != 4:
            raise ctx.err(f"attribute 'pads'={pads} must have 4 values for a 2-D {kind}")
        t, l, b, r = pads
    elif auto == "VALID":
        t = l = b = r = 0
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        def same(size, k, s):
            out = -(-size // s)
            tot = max(0, (out - 1) * s + k - size)
            small, big = tot // 2, tot - tot // 2
            return (small, big) if auto == "SAME_UPPER" else (big, small)
        t, b = same(H, kh, sh)
        l, r = same(W, kw, sw)
    else:
        raise ctx.err(f"attribute 'auto_pad'='{auto}' is not supported")
    if min(t, l, b, r) < 0:
        raise ctx.err(f"attribute 'pads'={[t, l, b, r]} must not be negative")
    if t >= kh or b >= kh or l >= kw or r >= kw:
        raise ctx.err(f"attribute 'pads'={[t, l, b, r]} is not supported (each pad must be smaller than the kernel {kh}x{kw})")
    if t > 15 or l > 15:
        raise ctx.err(f"attribute 'pads'={[t, l, b, r]} is not supported (top/left pad at most 15)")
    return (int(t), int(l), int(b), int(r))


def _strides(ctx):
    s = ctx.attr("strides", "ints", [1, 1])
    if len(s) != 2 or min(s) < 1 or max(s) > 7:
        raise ctx.err(f"attribute 'strides'={s} is not supported (2 values in 1..7)")
    return s


def _kernel(ctx, kh, kw):
    if kh < 1 or kw < 1 or kh > 255 or kw > 255:
        raise ctx.err(f"kernel {kh}x{kw} is not supported (1..255)")


def _f32(ctx, a, what):
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise ctx.err(f"input '{what}' has unsupported data type {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ctx.err(f"input '{what}' contains NaN or infinite values")
    return a


# ---------------------------------------------------------------- handlers

@handler("Conv", doc=("2-D; kernel <= 255; stride 1..7; pads (or auto_pad) < kernel, top/left <= 15; "
                     "group 1 or depthwise (group = Cin = Cout); bias B",
                     "CONV (dense or `dw`), BN / bias / uniform affine folded, Relu / Clip as clamp, "
                     "a following LUT op fused into the same band",
                     "dilations != 1, other groups, non-constant W / B"))
def _conv(ctx: Ctx):
    ctx.check_attrs({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
    ctx.n_inputs(2, 3)
    x = ctx.act_in(0)
    _rank4(ctx, x)
    W = _f32(ctx, ctx.const_in(1, "W"), "W")
    if W.ndim != 4:
        raise ctx.err(f"input 'W' has shape {list(W.shape)}; only 2-D convolutions (4-D weights) are supported")
    cout, cin_g, kh, kw = W.shape
    ks = ctx.attr("kernel_shape", "ints", None)
    if ks is not None and list(ks) != [kh, kw]:
        raise ctx.err(f"attribute 'kernel_shape'={ks} does not match the weight shape {list(W.shape)}")
    dil = ctx.attr("dilations", "ints", [1, 1])
    if any(d != 1 for d in dil):
        raise ctx.err(f"attribute 'dilations'={dil} is not supported (only 1)")
    _kernel(ctx, kh, kw)
    group = ctx.attr("group", "int", 1)
    C, H, Wd = x.chw
    if group == 1:
        dw = False
        if cin_g != C:
            raise ctx.err(f"input 'W' has {cin_g} input channels but the input has {C}")
    elif group == C and cin_g == 1 and cout == C:
        dw = True
    else:
        raise ctx.err(f"attribute 'group'={group} is not supported (only 1 or depthwise: group = in = out channels)")
    sh, sw = _strides(ctx)
    pads = _pads(ctx, kh, kw, sh, sw, H, Wd, "Conv")
    B = ctx.const_in(2, "B", optional=True)
    B = np.zeros(cout, np.float32) if B is None else _f32(ctx, B, "B")
    if B.shape != (cout,):
        raise ctx.err(f"input 'B' has shape {list(B.shape)}, expected [{cout}]")
    oh, ow = conv_out(H, kh, sh, pads[0], pads[2]), conv_out(Wd, kw, sw, pads[1], pads[3])
    if oh < 1 or ow < 1:
        raise ctx.err(f"output size {oh}x{ow} is empty (input {H}x{Wd}, kernel {kh}x{kw})")
    ctx.emit("conv", [x], (cout, oh, ow),
             attrs=dict(kh=kh, kw=kw, sh=sh, sw=sw, pads=pads, dw=dw, act=NO_ACT),
             params=dict(W=W, B=B))


def _gemm_common(ctx, x, Wnk, bias):
    N, K = Wnk.shape
    if len(x.shape) != 2:
        raise ctx.err(f"input 'A' must be 2-D [1, K], got shape {list(x.shape)}")
    if K != int(np.prod(x.chw)):
        raise ctx.err(f"weight has K={K} but input 'A' has {int(np.prod(x.chw))} features")
    ctx.emit("gemm", [x], (N, 1, 1), shape=(1, N), attrs=dict(act=NO_ACT), params=dict(W=Wnk, B=bias))


def _bias_vec(ctx, c, n, what):
    if c is None:
        return np.zeros(n, np.float32)
    c = _f32(ctx, c, what)
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]), np.float32)
    if c.shape in ((n,), (1, n)):
        return c.reshape(n)
    raise ctx.err(f"input '{what}' has shape {list(c.shape)}, expected [{n}] or [1, {n}]")


@handler("Gemm", doc=("transB 0/1, alpha, beta; C of shape [N], [1, N] or scalar; A 2-D [1, K]",
                     "CONV with a kh x kw = input spatial size kernel", "transA = 1, non-constant B"))
def _gemm(ctx: Ctx):
    ctx.check_attrs({"alpha", "beta", "transA", "transB"})
    ctx.n_inputs(2, 3)
    x = ctx.act_in(0, "A")
    if ctx.attr("transA", "int", 0) != 0:
        raise ctx.err(f"attribute 'transA'={ctx.attr('transA', 'int')} is not supported (only 0)")
    B = _f32(ctx, ctx.const_in(1, "B"), "B")
    if B.ndim != 2:
        raise ctx.err(f"input 'B' has shape {list(B.shape)}, expected 2-D")
    if ctx.attr("transB", "int", 0) not in (0, 1):
        raise ctx.err(f"attribute 'transB'={ctx.attr('transB', 'int')} is not supported (0 or 1)")
    W = B if ctx.attr("transB", "int", 0) else B.T
    alpha = ctx.attr("alpha", "float", 1.0)
    beta = ctx.attr("beta", "float", 1.0)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ctx.err(f"attribute 'alpha'/'beta'={alpha}/{beta} must be finite")
    c = _bias_vec(ctx, ctx.const_in(2, "C", optional=True), W.shape[0], "C")
    _gemm_common(ctx, x, np.ascontiguousarray(W * alpha, np.float32), (c * beta).astype(np.float32))


@handler("MatMul", doc=("[1, K] x constant [K, N]", "CONV like Gemm (a following constant Add is its bias)",
                       "non-constant B, other ranks"))
def _matmul(ctx: Ctx):
    ctx.check_attrs(set())
    ctx.n_inputs(2, 2)
    x = ctx.act_in(0, "A")
    B = _f32(ctx, ctx.const_in(1, "B"), "B")
    if B.ndim != 2:
        raise ctx.err(f"input 'B' has shape {list(B.shape)}, expected 2-D [K, N]")
    _gemm_common(ctx, x, np.ascontiguousarray(B.T), np.zeros(B.shape[1], np.float32))


def _act(ctx, lo, hi):
    x = ctx.act_in(0)
    if not lo <= hi:
        raise ctx.err(f"min {lo} is greater than max {hi}")
    ctx.emit("act", [x], x.chw, x.shape, attrs=dict(act=(float(lo), float(hi))))


@handler("Relu", doc=("-", "clamp of the producer's requantizer (or a 1x1 max POOL); part of an "
                     "element-wise function when it follows one", "-"))
def _relu(ctx: Ctx):
    ctx.check_attrs(set())
    ctx.n_inputs(1, 1)
    _act(ctx, 0.0, math.inf)


@handler("Clip", doc=("min / max as attributes (opset < 11) or constant inputs",
                     "clamp of the producer's requantizer (or a 1x1 max POOL); part of an element-wise "
                     "function (LUT) when it follows one", "non-constant min / max"))
def _clip(ctx: Ctx):
    ctx.n_inputs(1, 3)
    if ctx.opset < 11 or any(a.name in ("min", "max") for a in ctx.cur.attribute):
        ctx.check_attrs({"min", "max"})
        lo = ctx.attr("min", "float", -math.inf)
        hi = ctx.attr("max", "float", math.inf)
    else:
        ctx.check_attrs(set())
        vals = []
        for i, what, dflt in ((1, "min", -math.inf), (2, "max", math.inf)):
            v = ctx.const_in(i, what, optional=True)
            if v is None:
                vals.append(dflt)
            else:
                v = np.asarray(v)
                if v.size != 1:
                    raise ctx.err(f"input '{what}' must be a scalar, got shape {list(v.shape)}")
                vals.append(float(v.reshape(-1)[0]))
        lo, hi = vals
    if math.isnan(lo) or math.isnan(hi):
        raise ctx.err("min/max must not be NaN")
    _act(ctx, lo, hi)


def _channel_vec(ctx, x: Tensor, c, what):
    """A constant that broadcasts per channel onto x -> [C] vector, else None."""
    C = x.chw[0]
    c = np.asarray(c, np.float32)
    if c.ndim > len(x.shape):
        return None
    shp = (1,) * (len(x.shape) - c.ndim) + tuple(c.shape)
    if c.size == 1:
        return np.full(C, float(c.reshape(-1)[0]), np.float32)
    if len(x.shape) == 4 and shp[0] == 1 and shp[1] == C and shp[2] == shp[3] == 1:
        return c.reshape(C)
    if len(x.shape) == 2 and x.chw[1] == x.chw[2] == 1 and shp == (1, C):
        return c.reshape(C)
    return None


@handler("Add", doc=("two activations of equal shape, or an activation and a scalar / per-channel constant",
                    "ADD (residual); a constant folds into the producer's bias, else part of an element-wise "
                    "function or a 1x1 depthwise CONV", "broadcasting between two activations"))
def _add(ctx: Ctx):
    _binary(ctx)


@handler("Sub", doc=("an activation and a scalar / per-channel constant (either order)",
                     "as a constant Add (x - c) or a negated affine map (c - x)",
                     "two activations"))
def _sub(ctx: Ctx):
    _binary(ctx)


@handler("Mul", doc=("an activation and a scalar / per-channel constant; two activations of equal shape "
                     "when both are element-wise functions of one tensor (x * f(x)); [1, C, H, W] x [1, C, 1, 1] "
                     "(either order)", "constant: folded into the producer / element-wise function; x * f(x): "
                     "LUT; channel-wise: MUL (squeeze-excite)", "other broadcasting; a product of two "
                     "unrelated activations"))
def _mul(ctx: Ctx):
    _binary(ctx)


@handler("Div", doc=("an activation divided by a non-zero scalar / per-channel constant",
                     "as Mul by 1 / c", "a constant divided by an activation, two activations"))
def _div(ctx: Ctx):
    _binary(ctx)


def _binary(ctx: Ctx):
    op = ctx.cur.op_type
    ctx.check_attrs(set())
    ctx.n_inputs(2, 2)
    ca, cb = ctx.is_const(0), ctx.is_const(1)
    if ca and cb:
        raise ctx.err("both inputs are constants (constant folding is not supported)")
    if ca or cb:
        x = ctx.act_in(1 if ca else 0, "B" if ca else "A")
        what = "A" if ca else "B"
        c = _f32(ctx, ctx.const_in(0 if ca else 1, what), what)
        vec = _channel_vec(ctx, x, c, what)
        if vec is None:
            raise ctx.err(f"input '{what}' has shape {list(c.shape)}; only a scalar or per-channel constant "
                          f"can be combined with a tensor of shape {list(x.shape)}")
        one = np.ones_like(vec)
        if op == "Add":
            scale, shift = one, vec
        elif op == "Sub":
            scale, shift = (-one, vec) if ca else (one, -vec)
        elif op == "Mul":
            scale, shift = vec, np.zeros_like(vec)
        else:  # Div
            if ca:
                raise ctx.err("input 'A' is a constant: dividing a constant by an activation is not supported")
            if np.any(vec == 0):
                raise ctx.err("input 'B' contains zeros (division by zero)")
            scale, shift = (1.0 / vec).astype(np.float32), np.zeros_like(vec)
        ctx.emit("affine", [x], x.chw, x.shape, params=dict(scale=scale.astype(np.float32),
                                                             shift=shift.astype(np.float32)))
        return
    a, b = ctx.act_in(0, "A"), ctx.act_in(1, "B")
    if op in ("Sub", "Div"):
        raise ctx.err(f"inputs 'A' and 'B' are both activations; {op} of two activation tensors is not supported")
    if op == "Mul" and a.shape != b.shape:
        for x, gate, what in ((a, b, "B"), (b, a, "A")):
            if len(x.shape) == 4 and tuple(gate.shape) == (1, x.chw[0], 1, 1) and gate.chw == (x.chw[0], 1, 1):
                ctx.emit("chmul", [x, gate], x.chw, x.shape)
                return
        raise ctx.err(f"inputs have shapes {list(a.shape)} and {list(b.shape)}; only equal shapes or "
                      f"[1, C, H, W] x [1, C, 1, 1] (channel-wise) are supported")
    if a.shape != b.shape:
        raise ctx.err(f"inputs have shapes {list(a.shape)} and {list(b.shape)}; broadcasting is not supported")
    if a.chw != b.chw:
        raise ctx.err(f"inputs have different layouts {list(a.chw)} and {list(b.chw)}")
    ctx.emit("add" if op == "Add" else "mul2", [a, b], a.chw, a.shape,
             attrs=dict(act=NO_ACT) if op == "Add" else {})


def _ew(ctx: Ctx, fn):
    x = ctx.act_in(0)
    ctx.emit("ew", [x], x.chw, x.shape, attrs=dict(fn=fn))


@handler("HardSigmoid", doc=("alpha, beta", "clamp of a single-use producing Conv/Gemm (exact: "
                             "max(0, min(1, alpha*x + beta)) is an affine map and a clip), else LUT", "-"))
def _hard_sigmoid(ctx: Ctx):
    ctx.check_attrs({"alpha", "beta"})
    ctx.n_inputs(1, 1)
    alpha, beta = ctx.attr("alpha", "float", 0.2), ctx.attr("beta", "float", 0.5)
    if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha == 0:
        raise ctx.err(f"attribute 'alpha'/'beta'={alpha}/{beta} must be finite (alpha non-zero)")
    _ew(ctx, ("clip", 0.0, 1.0, ("affine", alpha, beta, X)))


@handler("HardSwish", doc=("-", "LUT (fused into the producing Conv's band)", "-"))
def _hard_swish(ctx: Ctx):
    ctx.check_attrs(set())
    ctx.n_inputs(1, 1)
    _ew(ctx, ("hswish", X))


@handler("Sigmoid", "Tanh", doc=("-", "LUT (fused into the producing Conv's band)", "-"))
def _sigmoid(ctx: Ctx):
    ctx.check_attrs(set())
    ctx.n_inputs(1, 1)
    _ew(ctx, (ctx.cur.op_type.lower(), X))


@handler("LeakyRelu", doc=("alpha", "LUT (fused into the producing Conv's band)", "-"))
def _leaky(ctx: Ctx):
    ctx.check_attrs({"alpha"})
    ctx.n_inputs(1, 1)
    alpha = ctx.attr("alpha", "float", 0.01)
    if not math.isfinite(alpha):
        raise ctx.err(f"attribute 'alpha'={alpha} must be finite")
    _ew(ctx, ("leaky", alpha, X))


@handler("BatchNormalization", doc=("inference mode, epsilon", "folded into the producing Conv/Gemm, else a 1x1 depthwise CONV",
                                   "training_mode = 1, spatial = 0, running-stat outputs"))
def _bn(ctx: Ctx):
    ctx.check_attrs({"epsilon", "momentum", "training_mode", "spatial"})
    ctx.n_inputs(5, 5)
    if len(ctx.cur.output) > 1 and any(ctx.cur.output[1:]):
        raise ctx.err("training-mode outputs (running mean/var) are not supported")
    if ctx.attr("training_mode", "int", 0) != 0:
        raise ctx.err(f"attribute 'training_mode'={ctx.attr('training_mode', 'int')} is not supported (only 0)")
    if ctx.attr("spatial", "int", 1) != 1:
        raise ctx.err(f"attribute 'spatial'={ctx.attr('spatial', 'int')} is not supported (only 1)")
    x = ctx.act_in(0)
    if len(x.shape) == 2 and x.chw[1:] != (1, 1):
        raise ctx.err("BatchNormalization of a flattened spatial tensor is not supported")
    eps = ctx.attr("epsilon", "float", 1e-5)
    C = x.chw[0]
    vals = []
    for i, what in ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")):
        v = _f32(ctx, ctx.const_in(i, what), what)
        if v.shape != (C,):
            raise ctx.err(f"input '{what}' has shape {list(v.shape)}, expected [{C}]")
        vals.append(v)
    gamma, beta, mean, var = vals
    if np.any(var + eps <= 0):
        raise ctx.err("input 'input_var' + epsilon must be positive")
    scale = gamma / np.sqrt(var + eps)
    ctx.emit("affine", [x], x.chw, x.shape,
             params=dict(scale=scale.astype(np.float32), shift=(beta - mean * scale).astype(np.float32)))


def _pool(ctx: Ctx, mode):
    allowed = {"auto_pad", "kernel_shape", "pads", "strides", "ceil_mode", "dilations", "storage_order"}
    if mode == "avg":
        allowed = (allowed - {"storage_order"}) | {"count_include_pad"}
    ctx.check_attrs(allowed)
    ctx.n_inputs(1, 1)
    if len(ctx.cur.output) > 1 and any(ctx.cur.output[1:]):
        raise ctx.err("output 'Indices' is not supported")
    x = ctx.act_in(0)
    _rank4(ctx, x)
    ks = ctx.attr("kernel_shape", "ints", None)
    if ks is None or len(ks) != 2:
        raise ctx.err(f"attribute 'kernel_shape'={ks} is not supported (2 values required)")
    kh, kw = ks
    _kernel(ctx, kh, kw)
    dil = ctx.attr("dilations", "ints", [1, 1])
    if any(d != 1 for d in dil):
        raise ctx.err(f"attribute 'dilations'={dil} is not supported (only 1)")
    if ctx.attr("storage_order", "int", 0) != 0:
        raise ctx.err(f"attribute 'storage_order'={ctx.attr('storage_order', 'int')} is not supported (only 0)")
    sh, sw = _strides(ctx)
    C, H, W = x.chw
    pads = _pads(ctx, kh, kw, sh, sw, H, W, ctx.cur.op_type)
    oh, ow = conv_out(H, kh, sh, pads[0], pads[2]), conv_out(W, kw, sw, pads[1], pads[3])
    if ctx.attr("ceil_mode", "int", 0) not in (0,):
        ch = -(-(H + pads[0] + pads[2] - kh) // sh) + 1
        cw = -(-(W + pads[1] + pads[3] - kw) // sw) + 1
        if (ch, cw) != (oh, ow):
            raise ctx.err(f"attribute 'ceil_mode'={ctx.attr('ceil_mode', 'int')} is not supported "
                          f"(it changes the output size here)")
    if oh < 1 or ow < 1:
        raise ctx.err(f"output size {oh}x{ow} is empty (input {H}x{W}, kernel {kh}x{kw})")
    attrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, pads=pads, act=NO_ACT)
    if mode == "avg":
        cip = ctx.attr("count_include_pad", "int", 0)
        if cip == 0 and any(pads):
            raise ctx.err(f"attribute 'count_include_pad'=0 is not supported with pads={list(pads)} "
                          f"(the divisor would vary at the border; use count_include_pad=1 or no padding)")
        attrs["divisor"] = kh * kw
        ctx.emit("avgpool", [x], (C, oh, ow), attrs=attrs)
    else:
        ctx.emit("maxpool", [x], (C, oh, ow), attrs=attrs)


@handler("MaxPool", doc=("kernel <= 255, stride 1..7, pads < kernel, ceil_mode when it does not change the size",
                        "POOL max", "dilations, storage_order, Indices output"))
def _maxpool(ctx):
    _pool(ctx, "max")


@handler("AveragePool", doc=("as MaxPool; count_include_pad 1 with any padding, 0 without padding",
                            "POOL average (a 1x1 stride-1 pool is removed)", "count_include_pad = 0 with padding"))
def _avgpool(ctx):
    _pool(ctx, "avg")


def _gap(ctx, x, keep):
    C, H, W = x.chw
    if H > 255 or W > 255:
        raise ctx.err(f"global pooling over {H}x{W} is not supported (at most 255x255)")
    shape = (1, C, 1, 1) if keep else (1, C)
    ctx.emit("avgpool", [x], (C, 1, 1), shape,
             attrs=dict(kh=H, kw=W, sh=1, sw=1, pads=(0, 0, 0, 0), act=NO_ACT, divisor=H * W))


@handler("GlobalAveragePool", doc=("spatial size <= 255 x 255", "POOL average over the whole input", "-"))
def _global_avg(ctx):
    ctx.check_attrs(set())
    ctx.n_inputs(1, 1)
    x = ctx.act_in(0)
    _rank4(ctx, x)
    _gap(ctx, x, True)


@handler("ReduceMean", doc=("axes (attribute, or input from opset 18) [2, 3] with keepdims 0/1; [3] or [2] alone "
                           "with keepdims 1; noop_with_empty_axes", "POOL average (1 x W, H x 1 or H x W); "
                           "mean over W then H merges into one global POOL", "other axes, spatial size > 255"))
def _reduce_mean(ctx):
    ctx.check_attrs({"axes", "keepdims", "noop_with_empty_axes"})
    ctx.n_inputs(1, 2)
    x = ctx.act_in(0)
    _rank4(ctx, x)
    axes = ctx.attr("axes", "ints", None)
    if axes is None and len(ctx.cur.input) > 1 and ctx.cur.input[1]:
        axes = [int(v) for v in np.asarray(ctx.const_in(1, "axes")).reshape(-1)]
    if axes is None or len(axes) == 0:
        if ctx.attr("noop_with_empty_axes", "int", 0):
            x = ctx.act_in(0)
            ctx.emit("identity", [x], x.chw, x.shape)
            return
        axes = [0, 1, 2, 3]
    keep = ctx.attr("keepdims", "int", 1)
    if keep not in (0, 1):
        raise ctx.err(f"attribute 'keepdims'={keep} is not supported (0 or 1)")
    ax = sorted(a % 4 for a in axes)
    if ax == [2, 3]:
        _gap(ctx, x, keep == 1)
        return
    if ax in ([2], [3]) and keep == 1:
        C, H, W = x.chw
        kh, kw = (H, 1) if ax == [2] else (1, W)
        if kh > 255 or kw > 255:
            raise ctx.err(f"a mean over {max(kh, kw)} positions is not supported (at most 255)")
        ctx.emit("avgpool", [x], (C, H // kh, W // kw),
                 attrs=dict(kh=kh, kw=kw, sh=1, sw=1, pads=(0, 0, 0, 0), act=NO_ACT, divisor=kh * kw))
        return
    raise ctx.err(f"attribute 'axes'={axes} is not supported (only the spatial axes [2, 3], or [2] / [3] "
                  f"with keepdims=1)")


@handler("Flatten", doc=("axis 0/1 (batch 1)", "nothing (the stored layout is kept)", "other axes"))
def _flatten(ctx):
    ctx.check_attrs({"axis"})
    ctx.n_inputs(1, 1)
    x = ctx.act_in(0)
    r = len(x.shape)
    axis = ctx.attr("axis", "int", 1)
    if not -r <= axis <= r:
        raise ctx.err(f"attribute 'axis'={axis} is out of range for rank {r}")
    if (axis + r if axis < 0 else axis) not in (0, 1):
        raise ctx.err(f"attribute 'axis'={axis} is not supported (only 0 or 1 with batch 1)")
    ctx.alias(x, (1, int(np.prod(x.chw))))


@handler("Reshape", doc=("constant shape (folded subgraphs included), allowzero",
                        "nothing (the stored layout is kept)",
                        "only a flatten to [1, N] or a reshape that keeps [1, C, H, W] / [1, C] (H = W = 1)"))
def _reshape(ctx):
    ctx.check_attrs({"allowzero"})
    ctx.n_inputs(2, 2)
    x = ctx.act_in(0, "data")
    shp = np.asarray(ctx.const_in(1, "shape"))
    if shp.dtype.kind not in "iu" or shp.ndim != 1:
        raise ctx.err(f"input 'shape' must be a 1-D integer tensor, got {shp.dtype} {list(shp.shape)}")
    shp = [int(v) for v in shp]
    total = int(np.prod(x.shape))
    allowzero = ctx.attr("allowzero", "int", 0)
    tgt = []
    for i, v in enumerate(shp):
        if v == 0 and not allowzero:
            if i >= len(x.shape):
                raise ctx.err(f"input 'shape'={shp} copies a dimension the input does not have")
            v = x.shape[i]
        tgt.append(v)
    if tgt.count(-1) > 1 or any(v < -1 for v in tgt):
        raise ctx.err(f"input 'shape'={shp} is not a valid shape")
    if -1 in tgt:
        known = int(np.prod([v for v in tgt if v != -1]))
        if known <= 0 or total % known:
            raise ctx.err(f"input 'shape'={shp} does not fit {total} elements")
        tgt[tgt.index(-1)] = total // known
    if int(np.prod(tgt)) != total:
        raise ctx.err(f"input 'shape'={shp} does not fit {total} elements of shape {list(x.shape)}")
    _reshape_to(ctx, x, tgt, f"input 'shape'={shp}")


def _reshape_to(ctx, x, tgt, what):
    C, H, W = x.chw
    total = C * H * W
    tgt = [int(v) for v in tgt]
    ok = (tgt == [1, total] or tgt == [1, C, H, W]
          or (H == W == 1 and tgt in ([1, C], [1, C, 1, 1])))
    if not ok:
        raise ctx.err(f"{what} is not supported (only a flatten to [1, {total}] "
                      f"or a reshape that keeps the layout {[1, C, H, W]})")
    ctx.alias(x, tuple(tgt))


def _axes(ctx, what):
    axes = ctx.attr("axes", "ints", None)
    if axes is None and len(ctx.cur.input) > 1 and ctx.cur.input[1]:
        axes = [int(v) for v in np.asarray(ctx.const_in(1, "axes")).reshape(-1)]
    return axes


@handler("Squeeze", doc=("axes (attribute, or input from opset 13)", "nothing (the stored layout is kept)",
                         "only [1, C, 1, 1] -> [1, C] (or a no-op)"))
def _squeeze(ctx):
    ctx.check_attrs({"axes"})
    ctx.n_inputs(1, 2)
    x = ctx.act_in(0, "data")
    r = len(x.shape)
    axes = _axes(ctx, "axes")
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = sorted({a + r if a < 0 else a for a in axes})
    if any(not 0 <= a < r or x.shape[a] != 1 for a in axes):
        raise ctx.err(f"attribute 'axes'={axes} is not supported (only axes of size 1 of {list(x.shape)})")
    if 0 in axes:
        raise ctx.err("squeezing the batch axis is not supported")
    _reshape_to(ctx, x, [d for i, d in enumerate(x.shape) if i not in axes], f"attribute 'axes'={axes}")


@handler("Unsqueeze", doc=("axes (attribute, or input from opset 13)", "nothing (the stored layout is kept)",
                           "only [1, C] -> [1, C, 1, 1] (or a layout-keeping reshape)"))
def _unsqueeze(ctx):
    ctx.check_attrs({"axes"})
    ctx.n_inputs(1, 2)
    x = ctx.act_in(0, "data")
    axes = _axes(ctx, "axes")
    if not axes:
        raise ctx.err("attribute 'axes' is required")
    r = len(x.shape) + len(axes)
    axes = sorted({a + r if a < 0 else a for a in axes})
    if len(axes) != len(set(axes)) or any(not 0 <= a < r for a in axes):
        raise ctx.err(f"attribute 'axes'={axes} is out of range")
    shp, it = [], iter(x.shape)
    for i in range(r):
        shp.append(1 if i in axes else next(it))
    _reshape_to(ctx, x, shp, f"attribute 'axes'={axes}")


@handler("Shape", doc=("start, end", "a constant (the activation's static shape)", "-"))
def _shape(ctx):
    ctx.check_attrs({"start", "end"})
    ctx.n_inputs(1, 1)
    name = ctx.cur.input[0]
    if name in ctx.tensors:
        shp = list(ctx.tensors[name].shape)
    elif name in ctx.consts:
        shp = list(np.asarray(ctx.consts[name]).shape)
    else:
        raise ctx.err(f"input 'data' ('{name}') is not defined")
    start, end = ctx.attr("start", "int", 0), ctx.attr("end", "int", None)
    ctx.define_const(np.array(shp[start:end], np.int64))


@handler("Identity", "Dropout", doc={"Identity": ("-", "nothing", "-"),
                                     "Dropout": ("ratio, seed (inference)", "nothing", "the mask output")})
def _identity(ctx):
    if ctx.cur.op_type == "Dropout":
        ctx.check_attrs({"seed", "ratio"})
        ctx.n_inputs(1, 3)
        if len(ctx.cur.output) > 1 and any(ctx.cur.output[1:]):
            raise ctx.err("output 'mask' is not supported")
    else:
        ctx.check_attrs(set())
        ctx.n_inputs(1, 1)
    x = ctx.act_in(0, "input")
    ctx.emit("identity", [x], x.chw, x.shape)


@handler("Constant", doc=("value, value_float(s), value_int(s)", "a constant", "sparse_value, value_string(s)"))
def _constant(ctx):
    if len(ctx.cur.attribute) != 1:
        raise ctx.err("exactly one value attribute is required")
    a = ctx.cur.attribute[0]
    if a.name == "value":
        v = numpy_helper.to_array(ctx.attr("value", "tensor"))
    elif a.name in ("value_float", "value_int"):
        v = np.array(ctx.attr(a.name, a.name.split("_")[1]))
    elif a.name in ("value_floats", "value_ints"):
        v = np.array(ctx.attr(a.name, a.name.split("_")[1] + "s"))
    else:
        raise ctx.err(f"attribute '{a.name}' is not supported")
    out = ctx.cur.output[0] if len(ctx.cur.output) else ""
    if not out or out in ctx.consts or out in ctx.tensors:
        raise ctx.err(f"output '{out}' is missing or defined twice")
    ctx.consts[out] = v


# ---------------------------------------------------------------- constant folding

_NO_FOLD = {"Bernoulli", "Multinomial"}


def _fold(ctx, node):
    """Evaluate a node whose inputs are all constants with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator
    feeds = {i: np.asarray(ctx.consts[i]) for i in node.input if i}
    try:
        outs = ReferenceEvaluator(node, opsets={"": ctx.opset}).run(None, feeds)
    except Exception as e:
        raise ctx.err(f"constant folding failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for i, (name, v) in enumerate(zip(node.output, outs)):
        if name:
            ctx.define_const(np.asarray(v), i)


# ---------------------------------------------------------------- driver

def _dims(vi):
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else None)
    return out


def import_onnx(model: onnx.ModelProto) -> Graph:
    """ModelProto -> IR graph (canonical nodes, own shape inference)."""
    ctx = Ctx(model)
    g = model.graph
    for init in g.initializer:
        try:
            ctx.consts[init.name] = numpy_helper.to_array(init)
        except Exception as e:
            raise CompileError(f"initializer '{init.name}': cannot be read ({type(e).__name__}: {e})") from None
    inputs = [vi for vi in g.input if vi.name not in ctx.consts]
    if len(inputs) != 1:
        raise CompileError(f"graph: exactly one (non-initializer) input is supported, got {len(inputs)}: "
                           f"{[vi.name for vi in inputs]}")
    if len(g.output) != 1:
        raise CompileError(f"graph: exactly one output is supported, got {len(g.output)}")
    vi = inputs[0]
    dims = _dims(vi)
    if dims is None or len(dims) != 4:
        raise CompileError(f"graph input '{vi.name}': shape {dims} is not supported (NCHW, 4-D)")
    if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise CompileError(f"graph input '{vi.name}': element type "
                           f"{onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)} is not supported (FLOAT)")
    n = dims[0] if dims[0] is not None else 1
    if n != 1:
        raise CompileError(f"graph input '{vi.name}': batch size {n} is not supported (only 1)")
    if any(d is None or d < 1 for d in dims[1:]):
        raise CompileError(f"graph input '{vi.name}': shape {dims} must have known positive C, H, W")
    C, H, W = dims[1:]
    if H > 1023 or W > 1023:
        raise CompileError(f"graph input '{vi.name}': spatial size {H}x{W} is not supported (at most 1023)")
    ctx.tensors[vi.name] = Tensor(vi.name, (C, H, W), (1, C, H, W))
    for i, node in enumerate(g.node):
        if not isinstance(node.name, str) or not all(isinstance(x, str) for x in (*node.input, *node.output)):
            # a corrupted protobuf string field (invalid UTF-8) decodes to bytes
            raise CompileError(f"node {i} ({node.op_type}): a name is not valid UTF-8 (corrupted model?)")
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        ctx.cur = node
        if node.domain not in ("", "ai.onnx"):
            raise ctx.err(f"op domain '{node.domain}' is not supported")
        ins = [i for i in node.input if i]
        foldable = (ins and all(i in ctx.consts for i in ins) and node.op_type not in _NO_FOLD
                    and not node.op_type.startswith("Random"))
        fn = HANDLERS.get(node.op_type)
        if fn is None and not foldable:
            raise ctx.err(f"op '{node.op_type}' is not supported; supported ops: {', '.join(supported_ops())}")
        try:
            if foldable:
                _fold(ctx, node)
                continue
            fn(ctx)
        except CompileError:
            raise
        except Exception as e:   # malformed content the checks above did not foresee
            raise ctx.err(f"malformed node ({type(e).__name__}: {e})") from None
    out = g.output[0].name
    if out not in ctx.tensors:
        if out in ctx.consts:
            raise CompileError(f"graph output '{out}' is a constant; it must be computed from the input")
        raise CompileError(f"graph output '{out}' is not produced by any node")
    graph = Graph(vi.name, out, ctx.tensors, ctx.nodes, output_shape=ctx.tensors[out].shape,
                  input_name=vi.name, output_name=out)
    graph.prune()
    return graph
