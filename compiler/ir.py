"""The compiler's small IR: activation tensors (C, H, W) and canonical layer nodes, with shape inference
and a float reference executor (used for calibration and to check every pass against ONNX)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import CompileError, node_error

__all__ = ["Tensor", "Node", "Graph", "IR_OPS", "conv_out", "infer_shapes", "run_float",
           "NO_ACT", "act_range", "X", "ew_eval", "ew_compose", "ew_affine_clip", "ew_describe"]

#: (lo, hi) of a fused activation; (-inf, inf) = none
NO_ACT = (-math.inf, math.inf)

#: canonical IR ops
#:  conv    params W [Cout, Cin/group, kh, kw], B [Cout]; attrs kh kw sh sw pads(t,l,b,r) dw act
#:  gemm    params W [N, K], B [N]; attrs act                (becomes conv by a pass)
#:  affine  params scale [C], shift [C]                       (BatchNormalization, constant Add)
#:  act     attrs act                                         (standalone Relu / Clip)
#:  add     two activation inputs; attrs act
#:  maxpool / avgpool  attrs kh kw sh sw pads act (avgpool: divisor)
#:  flatten / identity  no compute, eliminated by a pass
#:  ew      attrs fn: an element-wise function of one tensor (expression below)      -> ISA LUT
#:  mul2    two activation inputs of equal shape (only as x * f(x), collapsed to ew by a pass)
#:  chmul   inputs [x (C,H,W), gate (C,1,1)]: channel-wise product (squeeze-excite)  -> ISA MUL
IR_OPS = ("conv", "gemm", "affine", "act", "add", "maxpool", "avgpool", "flatten", "identity",
          "ew", "mul2", "chmul")


# ---------------------------------------------------------------- element-wise expressions
#: An element-wise function of one tensor is a nested tuple over the leaf X = ("x",):
#:   ("affine", a, b, e) = a*e + b       ("clip", lo, hi, e)     ("mul", e1, e2) = e1 * e2
#:   ("hswish", e) = e * clip(e/6 + 1/2, 0, 1)    ("sigmoid", e)    ("tanh", e)
#:   ("leaky", alpha, e) = e if e >= 0 else alpha*e
#: HardSigmoid(alpha, beta) is ("clip", 0, 1, ("affine", alpha, beta, e)).
X = ("x",)


def ew_eval(e, v):
    """Evaluate expression e on the float array v (float32 arithmetic)."""
    k = e[0]
    if k == "x":
        return v
    if k == "affine":
        return ew_eval(e[3], v) * np.float32(e[1]) + np.float32(e[2])
    if k == "clip":
        y = ew_eval(e[3], v)
        return np.clip(y, np.float32(e[1]) if e[1] != -math.inf else None,
                       np.float32(e[2]) if e[2] != math.inf else None)
    if k == "mul":
        return ew_eval(e[1], v) * ew_eval(e[2], v)
    if k == "hswish":
        y = ew_eval(e[1], v)
        return y * np.clip(y * np.float32(1.0 / 6.0) + np.float32(0.5), 0, 1)
    if k == "sigmoid":
        y = ew_eval(e[1], v).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-y))).astype(np.float32)
    if k == "tanh":
        return np.tanh(ew_eval(e[1], v))
    if k == "leaky":
        y = ew_eval(e[2], v)
        return np.where(y >= 0, y, y * np.float32(e[1]))
    raise ValueError(f"unknown element-wise function {k!r}")


def ew_compose(outer, inner):
    """outer(inner(x)): every leaf of outer replaced by inner."""
    if outer == X:
        return inner
    return tuple(ew_compose(a, inner) if isinstance(a, tuple) else a for a in outer)


def ew_affine_clip(e):
    """(a, b, lo, hi) with e(x) == clip(a*x + b, lo, hi) if e is made only of affine maps and clips
    (a != 0), else None."""
    k = e[0]
    if k == "x":
        return (1.0, 0.0, -math.inf, math.inf)
    if k not in ("affine", "clip"):
        return None
    inner = ew_affine_clip(e[3])
    if inner is None:
        return None
    a, b, lo, hi = inner
    if k == "affine":
        a2, b2 = float(e[1]), float(e[2])
        if a2 == 0:
            return None
        l2, h2 = a2 * lo + b2, a2 * hi + b2
        return (a2 * a, a2 * b + b2, min(l2, h2), max(l2, h2))
    lo2, hi2 = max(lo, float(e[1])), min(hi, float(e[2]))
    if lo2 > hi2:
        return None
    return (a, b, lo2, hi2)


def ew_describe(e) -> str:
    k = e[0]
    if k == "x":
        return "x"
    if k == "affine":
        return f"({ew_describe(e[3])}*{e[1]:.6g}+{e[2]:.6g})"
    if k == "clip":
        return f"clip({ew_describe(e[3])}, {e[1]:.6g}, {e[2]:.6g})"
    if k == "mul":
        return f"({ew_describe(e[1])}*{ew_describe(e[2])})"
    if k == "leaky":
        return f"leaky_relu({ew_describe(e[2])}, {e[1]:.6g})"
    return f"{k}({ew_describe(e[1])})"


@dataclass
class Tensor:
    name: str
    chw: tuple          # stored layout: C, H, W (stored HWC in memory)
    shape: tuple        # the ONNX logical shape (batch 1)


@dataclass
class Node:
    name: str
    op: str                       # one of IR_OPS
    inputs: list
    output: str
    src_op: str                   # the ONNX op type it came from (for messages)
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def err(self, what: str) -> CompileError:
        return node_error(self.name, self.src_op, what)


@dataclass
class Graph:
    input: str
    output: str
    tensors: dict                 # name -> Tensor
    nodes: list                   # topological order
    output_shape: tuple = ()      # the ONNX output shape (kept when the output tensor is aliased)
    input_name: str = ""          # the ONNX names of the graph input / output
    output_name: str = ""

    def producer(self, tname: str):
        for n in self.nodes:
            if n.output == tname:
                return n
        return None

    def consumers(self, tname: str) -> list:
        return [n for n in self.nodes if tname in n.inputs]

    def replace_uses(self, old: str, new: str):
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        if self.output == old:
            self.output = new

    def prune(self):
        """Drop nodes whose output nobody uses, and tensors nothing references."""
        changed = True
        while changed:
            used = {self.output} | {i for n in self.nodes for i in n.inputs}
            keep = [n for n in self.nodes if n.output in used]
            changed = len(keep) != len(self.nodes)
            self.nodes = keep
        live = {self.input, self.output} | {i for n in self.nodes for i in n.inputs} | {n.output for n in self.nodes}
        self.tensors = {k: v for k, v in self.tensors.items() if k in live}


def conv_out(size: int, k: int, s: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - k) // s + 1


def _spatial_out(n: Node, chw):
    a = n.attrs
    t, l, b, r = a["pads"]
    return conv_out(chw[1], a["kh"], a["sh"], t, b), conv_out(chw[2], a["kw"], a["sw"], l, r)


def out_chw(g: Graph, n: Node) -> tuple:
    """Shape inference of one IR node from its inputs' stored shapes."""
    ins = [g.tensors[i].chw for i in n.inputs]
    c, h, w = ins[0]
    if n.op == "conv":
        W = n.params["W"]
        if n.attrs.get("dw"):
            if W.shape[0] != c:
                raise n.err(f"weight has {W.shape[0]} output channels for a depthwise conv of {c} channels")
        elif W.shape[1] != c:
            raise n.err(f"input 'W' has {W.shape[1]} input channels but the input tensor has {c}")
        oh, ow = _spatial_out(n, ins[0])
        if oh < 1 or ow < 1:
            raise n.err(f"output size {oh}x{ow} is empty (input {h}x{w}, kernel {n.attrs['kh']}x{n.attrs['kw']})")
        return (W.shape[0], oh, ow)
    if n.op == "gemm":
        K = n.params["W"].shape[1]
        if K != c * h * w:
            raise n.err(f"input 'B' has K={K} but the input has {c * h * w} features")
        return (n.params["W"].shape[0], 1, 1)
    if n.op in ("maxpool", "avgpool"):
        oh, ow = _spatial_out(n, ins[0])
        if oh < 1 or ow < 1:
            raise n.err(f"output size {oh}x{ow} is empty")
        return (c, oh, ow)
    if n.op in ("add", "mul2"):
        if ins[1] != ins[0]:
            raise n.err(f"inputs have different shapes {list(ins[0])} and {list(ins[1])} (no broadcasting)")
        return ins[0]
    if n.op == "chmul":
        if tuple(ins[1]) != (c, 1, 1):
            raise n.err(f"gate has shape {list(ins[1])}, expected [{c}, 1, 1] for an input of shape {list(ins[0])}")
        return ins[0]
    return ins[0]     # affine, act, ew, flatten, identity


def infer_shapes(g: Graph):
    """Recompute every tensor's stored shape from the graph input (never trusts value_info)."""
    for n in g.nodes:
        chw = out_chw(g, n)
        t = g.tensors.get(n.output)
        if t is None:
            g.tensors[n.output] = Tensor(n.output, chw, (1, *chw))
        elif tuple(t.chw) != tuple(chw):
            raise n.err(f"inferred output shape {list(chw)} differs from {list(t.chw)}")


def act_range(n: Node) -> tuple:
    return n.attrs.get("act", NO_ACT)


# ---------------------------------------------------------------- float reference executor

def _windows(x, kh, kw, sh, sw, pads, oh, ow, fill):
    """x [N,C,H,W] -> view [N,C,oh,ow,kh,kw] over the padded input."""
    t, l, b, r = pads
    N, C, H, W = x.shape
    need_h = (oh - 1) * sh + kh
    need_w = (ow - 1) * sw + kw
    xp = np.full((N, C, max(need_h, H + t), max(need_w, W + l)), fill, dtype=x.dtype)
    xp[:, :, t:t + H, l:l + W] = x
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (N, C, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]), writeable=False)


def _conv_float(n: Node, x, oshape):
    a = n.attrs
    W = n.params["W"].astype(np.float32)
    B = n.params["B"].astype(np.float32)
    _, oh, ow = oshape
    N = x.shape[0]
    if a["kh"] == 1 and a["kw"] == 1 and not any(a["pads"]):
        xs = x[:, :, ::a["sh"], ::a["sw"]][:, :, :oh, :ow]
        if a.get("dw"):
            y = xs * W[:, 0, 0, 0][None, :, None, None]
        else:
            y = np.einsum("nchw,oc->nohw", xs, W[:, :, 0, 0], optimize=True)
    else:
        win = _windows(x, a["kh"], a["kw"], a["sh"], a["sw"], a["pads"], oh, ow, 0.0)
        if a.get("dw"):
            y = np.zeros((N, x.shape[1], oh, ow), np.float32)
            for ky in range(a["kh"]):
                for kx in range(a["kw"]):
                    y += win[..., ky, kx] * W[:, 0, ky, kx][None, :, None, None]
        else:
            C = x.shape[1]
            cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(N * oh * ow, C * a["kh"] * a["kw"])
            y = (cols @ W.reshape(W.shape[0], -1).T).reshape(N, oh, ow, -1).transpose(0, 3, 1, 2)
    return y + B[None, :, None, None]


def _pool_float(n: Node, x, oshape):
    a = n.attrs
    _, oh, ow = oshape
    if n.op == "maxpool":
        return _windows(x, a["kh"], a["kw"], a["sh"], a["sw"], a["pads"], oh, ow, -np.inf).max(axis=(4, 5))
    win = _windows(x, a["kh"], a["kw"], a["sh"], a["sw"], a["pads"], oh, ow, 0.0)
    return win.sum(axis=(4, 5), dtype=np.float32) / np.float32(a["divisor"])


def _apply_act(n: Node, y):
    lo, hi = act_range(n)
    if lo == -math.inf and hi == math.inf:
        return y
    return np.clip(y, lo, hi)


def run_float(g: Graph, x: np.ndarray, keep: bool = True) -> dict:
    """Execute the IR in float32 on x [N, C, H, W]; returns {tensor: [N, C, H, W]} (all tensors if
    keep, else only the output)."""
    vals = {g.input: np.asarray(x, np.float32)}
    refs = {}
    for n in g.nodes:
        for i in n.inputs:
            refs[i] = refs.get(i, 0) + 1
    for n in g.nodes:
        xs = [vals[i] for i in n.inputs]
        N = xs[0].shape[0]
        oshape = g.tensors[n.output].chw
        if n.op == "conv":
            y = _conv_float(n, xs[0], oshape)
        elif n.op == "gemm":
            y = (xs[0].reshape(N, -1) @ n.params["W"].astype(np.float32).T + n.params["B"]).reshape(N, -1, 1, 1)
        elif n.op == "affine":
            y = xs[0] * n.params["scale"][None, :, None, None] + n.params["shift"][None, :, None, None]
        elif n.op == "add":
            y = xs[0] + xs[1]
        elif n.op in ("mul2", "chmul"):
            y = xs[0] * xs[1]
        elif n.op == "ew":
            y = ew_eval(n.attrs["fn"], xs[0])
        elif n.op in ("maxpool", "avgpool"):
            y = _pool_float(n, xs[0], oshape)
        else:  # act, flatten, identity
            y = xs[0]
        vals[n.output] = _apply_act(n, y).astype(np.float32)
        if not keep:
            for i in n.inputs:
                refs[i] -= 1
                if refs[i] == 0 and i != g.output:
                    vals.pop(i, None)
    return vals
