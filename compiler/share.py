"""Share analysis: prove that every weight tensor of a SubNet is a slice of the SuperNet's.

Works on the compiler IR after ``optimize`` (BatchNorm folded into the Conv/Gemm weights), so a
SubNet's folded weights are compared with the SuperNet's folded weights.

Matching (per IR conv/gemm node of the SubNet, in this order):
  1. the ONNX weight initializer name of the node's Conv/Gemm/MatMul (``stages.0.1.conv1.weight``):
     the exporters keep PyTorch module names, so the same parameter has the same name in every file;
  2. the IR node name (ONNX node names joined by ``+``, e.g. ``/stages.0.1/conv1/Conv+/.../bn1/...``).

Proof: with W the SuperNet's folded weight [Co, Ci, KH, KW] and w the SubNet's [co, ci, kh, kw]:
  co <= Co (output-channel prefix), ci <= Ci (input-channel prefix), kh <= KH, kw <= KW with
  KH - kh, KW - kw even (kernel centre crop at (oy, ox) = ((KH-kh)/2, (KW-kw)/2)), and for every
  output channel o a factor alpha_o > 0 with
      |w[o] - alpha_o * W[o, :ci, oy:oy+kh, ox:ox+kw]| <= RTOL * max|w[o]| + ATOL   (elementwise).
  alpha_o is the least-squares ratio; it absorbs the per-SubNet BatchNorm statistics (recalibrated
  per SubNet) and goes into the SubNet's requantization multiplier, never into the shared bytes.
  A channel that is zero in both files has alpha 1.  Biases are never shared (they live in the
  per-SubNet requantization records).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["LayerShare", "weight_names", "match_subnet", "prove_slice", "zero_padded_tensors",
           "RTOL", "ATOL"]

RTOL = 1e-4
ATOL = 1e-7


@dataclass
class LayerShare:
    layer: str                     # SubNet IR node name
    weight: str                    # ONNX initializer name of the weight ('' when unknown)
    shape: list                    # SubNet weight shape [co, ci, kh, kw]
    shared: bool = False
    super_layer: str = ""          # matched SuperNet IR node name
    matched_by: str = ""           # "initializer" | "node name" | ""
    super_shape: list = field(default_factory=list)
    crop: list = field(default_factory=list)        # [oy, ox] centre-crop offset
    alpha: list = field(default_factory=list)       # per output channel (shared only)
    max_rel_err: float = 0.0
    reason: str = ""               # why private (exact)

    def spec(self) -> str:
        if not self.shared:
            return f"private: {self.reason}"
        co, ci, kh, kw = self.shape
        Co, Ci, KH, KW = self.super_shape
        return (f"shared = {self.super_layer}[:{co}/{Co}, :{ci}/{Ci}, crop {kh}x{kw} of {KH}x{KW} at "
                f"({self.crop[0]},{self.crop[1]})], alpha in [{min(self.alpha):.4g}, {max(self.alpha):.4g}]")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["alpha"] = [float(a) for a in self.alpha]
        d["spec"] = self.spec()
        return d


def weight_names(model) -> dict:
    """{ONNX node name: weight initializer name} for Conv / Gemm / MatMul nodes with a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1:
            w = n.input[1]
            if w in inits or w in consts:
                out[n.name] = w
    return out


def _ir_weight_name(node, wn: dict) -> str:
    for part in node.name.split("+"):
        if part in wn:
            return wn[part]
    return ""


def prove_slice(w: np.ndarray, W: np.ndarray):
    """-> (crop [oy, ox], alpha [co], max_rel_err, reason or '')."""
    w = np.asarray(w, np.float64)
    W = np.asarray(W, np.float64)
    co, ci, kh, kw = w.shape
    Co, Ci, KH, KW = W.shape
    if co > Co:
        return None, None, 0.0, f"shape not a prefix: {co} output channels > SuperNet's {Co}"
    if ci > Ci:
        return None, None, 0.0, f"shape not a prefix: {ci} input channels > SuperNet's {Ci}"
    if kh > KH or kw > KW:
        return None, None, 0.0, f"kernel {kh}x{kw} larger than the SuperNet's {KH}x{KW}"
    if (KH - kh) % 2 or (KW - kw) % 2:
        return None, None, 0.0, f"kernel {kh}x{kw} is not a centre crop of {KH}x{KW} (odd margin)"
    oy, ox = (KH - kh) // 2, (KW - kw) // 2
    b = W[:co, :ci, oy:oy + kh, ox:ox + kw].reshape(co, -1)
    a = w.reshape(co, -1)
    bb = (b * b).sum(1)
    ab = (a * b).sum(1)
    amax = np.abs(a).max(1)
    alpha = np.where(bb > 0, ab / np.where(bb > 0, bb, 1.0), 1.0)
    worst = 0.0
    for o in range(co):
        if bb[o] == 0 and amax[o] > 0:
            j = int(np.argmax(np.abs(a[o])))
            idx = np.unravel_index(j, (ci, kh, kw))
            return None, None, 0.0, (f"values differ at index [{o}, {idx[0]}, {idx[1]}, {idx[2]}]: SubNet "
                                     f"{a[o, j]:.6g}, SuperNet channel {o} is all zero")
        if bb[o] > 0 and amax[o] == 0:
            return None, None, 0.0, (f"values differ in output channel {o}: all zero in the SubNet, not in the "
                                     f"SuperNet (scale 0 is not a positive factor)")
        if alpha[o] <= 0:
            return None, None, 0.0, f"negative scale: output channel {o} is SuperNet x {alpha[o]:.4g} (must be > 0)"
        d = np.abs(a[o] - alpha[o] * b[o])
        tol = RTOL * amax[o] + ATOL
        if d.max() > tol:
            j = int(np.argmax(d))
            idx = np.unravel_index(j, (ci, kh, kw))
            return None, None, 0.0, (f"values differ at index [{o}, {idx[0]}, {idx[1]}, {idx[2]}] (SuperNet "
                                     f"[{o}, {idx[0]}, {idx[1] + oy}, {idx[2] + ox}]): SubNet {a[o, j]:.6g}, "
                                     f"alpha*SuperNet {alpha[o] * b[o, j]:.6g} (alpha {alpha[o]:.6g})")
        worst = max(worst, float(d.max() / max(amax[o], 1e-30)))
    return [oy, ox], alpha, worst, ""


def zero_padded_tensors(g) -> set:
    """Tensors whose padding channels (beyond C, up to c_words*V) are provably zero in a program:
    the graph input (written so), CONV outputs (padding records have mult 0), and ADD / pools / MUL
    of such tensors; a LUT output only if f(0) = 0."""
    ok = {g.input}
    for n in g.nodes:
        if n.op == "conv":
            ok.add(n.output)
        elif n.op == "chmul":               # x * gate: zero where x is zero
            if n.inputs[0] in ok:
                ok.add(n.output)
        elif n.op in ("add", "maxpool", "avgpool"):
            if all(i in ok for i in n.inputs):
                ok.add(n.output)
        elif n.op == "ew":
            t = n.attrs.get("q", {}).get("table")
            if n.inputs[0] in ok and t is not None and int(t[128]) == 0:
                ok.add(n.output)
    return ok


def match_subnet(super_g, super_model, sub_g, sub_model) -> list:
    """-> [LayerShare] for every conv/gemm node of the SubNet IR (optimized, BN folded)."""
    swn, wn = weight_names(super_model), weight_names(sub_model)
    by_w, by_name = {}, {}
    for n in super_g.nodes:
        if n.op == "conv":
            by_name[n.name] = n
            w = _ir_weight_name(n, swn)
            if w:
                by_w[w] = n
    out = []
    for n in sub_g.nodes:
        if n.op != "conv":
            continue
        w = _ir_weight_name(n, wn)
        ls = LayerShare(layer=n.name, weight=w, shape=[int(v) for v in n.params["W"].shape])
        out.append(ls)
        S = by_w.get(w) if w else None
        if S is not None:
            ls.matched_by = "initializer"
        elif n.name in by_name:
            S, ls.matched_by = by_name[n.name], "node name"
        if S is None:
            ls.reason = (f"name not found: no SuperNet layer with weight initializer '{w}' or node name "
                         f"'{n.name}'")
            continue
        ls.super_layer = S.name
        ls.super_shape = [int(v) for v in S.params["W"].shape]
        a, A = n.attrs, S.attrs
        if bool(a.get("dw")) != bool(A.get("dw")):
            ls.reason = f"layer kind differs (depthwise {bool(a.get('dw'))} vs SuperNet {bool(A.get('dw'))})"
            continue
        if (a["sh"], a["sw"]) != (A["sh"], A["sw"]):
            ls.reason = f"stride {a['sh']}x{a['sw']} differs from the SuperNet's {A['sh']}x{A['sw']}"
            continue
        if bool(a.get("gemm")) != bool(A.get("gemm")):
            ls.reason = "Gemm vs Conv differ"
            continue
        crop, alpha, err, reason = prove_slice(n.params["W"], S.params["W"])
        if reason:
            ls.reason = reason
            continue
        ls.shared, ls.crop, ls.alpha, ls.max_rel_err = True, crop, list(alpha), err
    return out
