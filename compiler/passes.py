"""Graph transformations: match/apply passes run to a fixed point, grouped into named flows."""
from __future__ import annotations

import numpy as np

from .ir import NO_ACT, Graph, Node, infer_shapes

__all__ = ["Pass", "PASSES", "register_pass", "FLOWS", "run_flow", "optimize"]


class Pass:
    """``match(g) -> node | None`` finds one place to rewrite; ``apply(g, node)`` rewrites it."""
    name = "pass"

    def match(self, g: Graph):
        raise NotImplementedError

    def apply(self, g: Graph, node: Node):
        raise NotImplementedError


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
        return next((n for n in g.nodes if n.op in ("identity", "flatten")), None)

    def apply(self, g, n):
        _bypass(g, n)


@register_pass
class FoldAffine(Pass):
    """BatchNormalization (or a constant per-channel Add) after a Conv/Gemm folds into its weights."""
    name = "fold_batchnorm"

    def match(self, g):
        uses, prod = _uses(g), _producers(g)
        for n in g.nodes:
            if n.op == "affine":
                p = _single_use_producer(g, n, ("conv", "gemm"), uses, prod)
                if p is not None and p.attrs.get("act", NO_ACT) == NO_ACT:
                    return n
        return None

    def apply(self, g, n):
        p = _producers(g)[n.inputs[0]]
        s, t = n.params["scale"], n.params["shift"]
        W = p.params["W"]
        p.params["W"] = (W * s.reshape((-1,) + (1,) * (W.ndim - 1))).astype(np.float32)
        p.params["B"] = (p.params["B"] * s + t).astype(np.float32)
        p.name = f"{p.name}+{n.name}" if not p.name.endswith(n.name) else p.name
        g.nodes.remove(n)
        old = p.output
        g.replace_uses(n.output, old)
        g.tensors.pop(n.output, None)


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
    "simplify": ["eliminate_identity", "fold_batchnorm", "fuse_activation", "gemm_to_conv"],
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
    infer_shapes(g)
    return stats
