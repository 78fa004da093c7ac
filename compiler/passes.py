"""Graph transformations: match/apply passes run to a fixed point, grouped into named flows."""
from __future__ import annotations

import abc
import math

import numpy as np

from .errors import CompileError
from .ir import NO_ACT, X, Graph, Node, ew_affine_clip, ew_compose, infer_shapes

__all__ = ["Pass", "PASSES", "register_pass", "FLOWS", "run_flow", "optimize"]


class Pass(abc.ABC):
    """``match(g) -> node | None`` finds one place to rewrite; ``apply(g, node)`` rewrites it."""
    name = "pass"

    @abc.abstractmethod
    def match(self, g: Graph):
        """The node to rewrite, or None when the pass has nothing left to do."""

    @abc.abstractmethod
    def apply(self, g: Graph, node: Node):
        """Rewrite ``g`` at ``node`` (found by :meth:`match`)."""


PASSES: dict = {}


def register_pass(cls):
    PASSES[cls.name] = cls()
    return cls


def _uses(g: Graph) -> dict:
    u = {}
    for n in g.nodes:
        for i in n.inputs:
            u[i] = u.get(i, 0) + 1
    if g.output:
        u[g.output] = u.get(g.output, 0) + 1
    return u


def _producers(g: Graph) -> dict:
    return {n.output: n for n in g.nodes}


def _single_use_producer(g, n, ops, uses, prod):
    """The producer of n's first input if it is one of ops and n is its only consumer."""
    p = prod.get(n.inputs[0])
    if p is not None and p.op in ops and uses.get(p.output, 0) == 1:
        return p
    return None


def _bypass(g: Graph, n: Node):
    """Remove n (one input, no compute); its consumers read its input instead."""
    g.nodes.remove(n)
    g.replace_uses(n.output, n.inputs[0])
    g.tensors.pop(n.output, None)


@register_pass
class EliminateIdentity(Pass):
    """Identity, Dropout, Flatten and Reshape-as-flatten move no data: the stored layout stays HWC and
    consumers (Gemm) read the producer's tensor directly."""
    name = "eliminate_identity"

    def match(self, g):
        return next((n for n in g.nodes if n.op in ("identity", "flatten") or _unit_pool(n)), None)

    def apply(self, g, n):
        _bypass(g, n)


def _unit_pool(n: Node) -> bool:
    """A 1x1 stride-1 unpadded pool without activation (e.g. OFA's AvgPool2d(1) shortcut) is a no-op."""
    a = n.attrs
    return (n.op in ("avgpool", "maxpool") and a["kh"] == a["kw"] == a["sh"] == a["sw"] == 1
            and not any(a["pads"]) and a.get("act", NO_ACT) == NO_ACT)


@register_pass
class FoldAffine(Pass):
    """BatchNormalization (or a constant per-channel Add) after a Conv/Gemm folds into its weights."""
    name = "fold_batchnorm"

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            if n.op == "affine":
                p = _single_use_producer(g, n, ("conv", "gemm"), uses, prod)
                if p is not None and (p.attrs.get("act", NO_ACT) == NO_ACT or _uniform(n) is not None):
                    return n
        return None

    def apply(self, g, n):
        p = _producers(g)[n.inputs[0]]
        s, t = n.params["scale"], n.params["shift"]
        if p.attrs.get("act", NO_ACT) != NO_ACT:
            # a uniform s*clip(z, lo, hi) + t == clip(s*z + t, bounds mapped): exact
            a, b = _uniform(n)
            lo, hi = p.attrs["act"]
            l2, h2 = a * lo + b, a * hi + b
            p.attrs["act"] = (min(l2, h2), max(l2, h2))
        W = p.params["W"]
        p.params["W"] = (W * s.reshape((-1,) + (1,) * (W.ndim - 1))).astype(np.float32)
        p.params["B"] = (p.params["B"] * s + t).astype(np.float32)
        p.name = f"{p.name}+{n.name}" if not p.name.endswith(n.name) else p.name
        g.nodes.remove(n)
        old = p.output
        g.replace_uses(n.output, old)
        g.tensors.pop(n.output, None)


def _uniform(n: Node):
    """(a, b) if the affine node n is the same a*x + b on every channel (a != 0), else None."""
    if n.op != "affine":
        return None
    sc, sh = n.params["scale"], n.params["shift"]
    if sc.size and np.all(sc == sc.flat[0]) and np.all(sh == sh.flat[0]) and sc.flat[0] != 0:
        return float(sc.flat[0]), float(sh.flat[0])
    return None


def _ew_fn(n: Node):
    """The element-wise function of a node of one input (ew, act, uniform affine), else None."""
    if n.op == "ew":
        return n.attrs["fn"]
    if n.op == "act":
        lo, hi = n.attrs["act"]
        return ("clip", lo, hi, X)
    u = _uniform(n)
    if u is not None:
        return ("affine", u[0], u[1], X)
    return None


def _trace(g: Graph, t: str, uses: dict, prod: dict):
    """Walk back from tensor t through element-wise nodes (ew, act, uniform affine) whose output is
    used only once -> (source tensor, composed function, [nodes])."""
    fn, chain = X, []
    while True:
        p = prod.get(t)
        if p is None or uses.get(t, 0) != 1 or _ew_fn(p) is None:
            return t, fn, chain
        fn = ew_compose(fn, _ew_fn(p))
        chain.append(p)
        t = p.inputs[0]


@register_pass
class CollapseProduct(Pass):
    """x * f(x) (h-swish decomposed as x * relu6(x + 3) / 6, x * sigmoid(x), ...): a Mul of two
    activations that are element-wise functions of one tensor becomes one element-wise function."""
    name = "collapse_product"

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            if n.op == "mul2":
                a = _trace(g, n.inputs[0], uses, prod)
                b = _trace(g, n.inputs[1], uses, prod) if n.inputs[1] != n.inputs[0] else a
                if a[0] == b[0]:
                    n.attrs["_collapse"] = (a, b)
                    return n
        return None

    def apply(self, g, n):
        (src, fa, ca), (_, fb, cb) = n.attrs.pop("_collapse")
        for p in ca + [p for p in cb if p not in ca]:
            g.nodes.remove(p)
            g.tensors.pop(p.output, None)
        n.op = "ew"
        n.inputs = [src]
        n.attrs = dict(fn=("mul", fa, fb))


@register_pass
class MergeElementwise(Pass):
    """Consecutive element-wise functions of one tensor merge into one ew node (one LUT): an ew absorbs
    a single-use producer that is element-wise (ew, act, uniform affine) and a consumer that is."""
    name = "merge_elementwise"

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            p = prod.get(n.inputs[0]) if n.inputs else None
            if p is None or uses.get(p.output, 0) != 1 or len(n.inputs) != 1:
                continue
            if (n.op == "ew" and _ew_fn(p) is not None) or (p.op == "ew" and _ew_fn(n) is not None):
                return n
        return None

    def apply(self, g, n):
        p = _producers(g)[n.inputs[0]]
        fn = ew_compose(_ew_fn(n), _ew_fn(p))
        g.nodes.remove(p)
        g.tensors.pop(p.output, None)
        n.op, n.inputs, n.src_op = "ew", list(p.inputs), n.src_op
        n.name = f"{p.name}+{n.name}"
        n.attrs = dict(fn=fn)
        n.params = {}


@register_pass
class FoldAffineClip(Pass):
    """An element-wise function that is an affine map and clips, clip(a*x + b, lo, hi) (HardSigmoid,
    relu6(x + 3) / 6), after a single-use Conv/Gemm: folded into its weights, bias and clamp (exact)."""
    name = "fold_affine_clip"

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            if n.op == "ew" and ew_affine_clip(n.attrs["fn"]) is not None:
                p = _single_use_producer(g, n, ("conv", "gemm"), uses, prod)
                if p is not None:
                    a, b, lo, hi = ew_affine_clip(n.attrs["fn"])
                    l0, h0 = p.attrs.get("act", NO_ACT)
                    l2, h2 = a * l0 + b, a * h0 + b
                    if max(lo, min(l2, h2)) <= min(hi, max(l2, h2)):
                        return n
        return None

    def apply(self, g, n):
        p = _producers(g)[n.inputs[0]]
        a, b, lo, hi = ew_affine_clip(n.attrs["fn"])
        l0, h0 = p.attrs.get("act", NO_ACT)
        l2, h2 = a * l0 + b, a * h0 + b
        p.params["W"] = (p.params["W"] * np.float32(a)).astype(np.float32)
        p.params["B"] = (p.params["B"] * np.float32(a) + np.float32(b)).astype(np.float32)
        p.attrs["act"] = (max(lo, min(l2, h2)), min(hi, max(l2, h2)))
        p.name = f"{p.name}+{n.name}"
        g.nodes.remove(n)
        old = p.output
        p.output = n.output
        g.replace_uses(old, n.output)
        g.tensors.pop(old, None)


@register_pass
class MergeGlobalPool(Pass):
    """x.mean(3, keepdim=True).mean(2, keepdim=True) (OFA's global pooling): a 1 x W average pool
    followed by an H x 1 one over its single-column output is one H x W global average pool."""
    name = "merge_global_pool"

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            if n.op != "avgpool":
                continue
            p = _single_use_producer(g, n, ("avgpool",), uses, prod)
            if p is None or p.attrs.get("act", NO_ACT) != NO_ACT:
                continue
            C, H, W = g.tensors[p.inputs[0]].chw
            pa, na = p.attrs, n.attrs
            flat = lambda a: not any(a["pads"]) and a["sh"] == a["sw"] == 1
            if (flat(pa) and flat(na) and (pa["kh"], pa["kw"]) == (1, W) and (na["kh"], na["kw"]) == (H, 1)
                    and H * W <= 255 * 255 and H <= 255 and W <= 255):
                return n
        return None

    def apply(self, g, n):
        p = _producers(g)[n.inputs[0]]
        C, H, W = g.tensors[p.inputs[0]].chw
        n.attrs.update(kh=H, kw=W, divisor=H * W)
        n.inputs = list(p.inputs)
        n.name = f"{p.name}+{n.name}"
        g.nodes.remove(p)
        g.tensors.pop(p.output, None)


@register_pass
class FuseActivation(Pass):
    """Relu / Clip into the producing Conv / Gemm / Add / pool: the clamp bounds of the requantizer."""
    name = "fuse_activation"
    targets = ("conv", "gemm", "add", "maxpool", "avgpool", "act")

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            if n.op == "act" and _single_use_producer(g, n, self.targets, uses, prod) is not None:
                return n
        return None

    def apply(self, g, n):
        p = _producers(g)[n.inputs[0]]
        lo0, hi0 = p.attrs.get("act", NO_ACT)
        lo1, hi1 = n.attrs["act"]
        lo, hi = max(lo0, lo1), min(hi0, hi1)
        if lo > hi:          # disjoint ranges: the result is the constant of the outer clip
            lo = hi = min(max(lo0, lo1), hi1) if lo1 > hi0 else max(lo1, min(hi0, hi1))
        p.attrs["act"] = (lo, hi)
        g.nodes.remove(n)
        # the fused node now produces the activation's output tensor
        old = p.output
        p.output = n.output
        g.replace_uses(old, n.output)
        g.tensors.pop(old, None)


@register_pass
class GemmToConv(Pass):
    """Gemm / MatMul (after a flatten) -> CONV with kh x kw = the input's spatial size; the weight
    columns go from CHW flatten order to a [N, C, H, W] kernel, which tiles in HWC order."""
    name = "gemm_to_conv"

    def match(self, g):
        return next((n for n in g.nodes if n.op == "gemm"), None)

    def apply(self, g, n):
        C, H, W = g.tensors[n.inputs[0]].chw
        Wt = n.params["W"]
        n.op = "conv"
        n.params["W"] = np.ascontiguousarray(Wt.reshape(Wt.shape[0], C, H, W))
        n.attrs.update(kh=H, kw=W, sh=1, sw=1, pads=(0, 0, 0, 0), dw=False, gemm=True)


@register_pass
class AffineToDepthwise(Pass):
    """A BatchNormalization / bias Add that cannot fold becomes a 1x1 depthwise CONV."""
    name = "affine_to_depthwise"

    def match(self, g):
        return next((n for n in g.nodes if n.op == "affine"), None)

    def apply(self, g, n):
        C = len(n.params["scale"])
        n.op = "conv"
        n.params = dict(W=n.params["scale"].reshape(C, 1, 1, 1).astype(np.float32),
                        B=n.params["shift"].astype(np.float32))
        n.attrs = dict(kh=1, kw=1, sh=1, sw=1, pads=(0, 0, 0, 0), dw=True, act=NO_ACT)


@register_pass
class ActToPool(Pass):
    """A Relu / Clip with nothing to fuse into (e.g. on the graph input) becomes a 1x1 max POOL with
    the clamp bounds."""
    name = "act_to_pool"

    def match(self, g):
        return next((n for n in g.nodes if n.op == "act"), None)

    def apply(self, g, n):
        n.op = "maxpool"
        n.attrs = dict(kh=1, kw=1, sh=1, sw=1, pads=(0, 0, 0, 0), act=n.attrs["act"])


#: named flows; in each, the first pass that matches is applied, until none matches
FLOWS = {
    "simplify": ["eliminate_identity", "merge_global_pool", "collapse_product", "merge_elementwise",
                 "fold_affine_clip", "fold_batchnorm", "fuse_activation", "gemm_to_conv"],
    "materialize": ["affine_to_depthwise", "act_to_pool"],
}


def run_flow(g: Graph, names, max_steps: int = 100000) -> dict:
    """Apply the passes to a fixed point; returns {pass name: times applied}."""
    count = {n: 0 for n in names}
    for _ in range(max_steps):
        for name in names:
            p = PASSES[name]
            m = p.match(g)
            if m is not None:
                p.apply(g, m)
                count[name] += 1
                break
        else:
            return count
    raise RuntimeError("passes did not reach a fixed point")


def optimize(g: Graph) -> dict:
    """simplify, then materialize what is left, then simplify again (new CONVs take activations)."""
    stats = {}
    for flow in ("simplify", "materialize", "simplify"):
        for k, v in run_flow(g, FLOWS[flow]).items():
            stats[k] = stats.get(k, 0) + v
    g.prune()
    for n in g.nodes:
        if n.op == "mul2":
            raise n.err("a product of two activation tensors is supported only as x * f(x) with f an "
                        "element-wise function of the same tensor (e.g. h-swish); here the inputs "
                        f"'{n.inputs[0]}' and '{n.inputs[1]}' are not")
    infer_shapes(g)
    return stats
