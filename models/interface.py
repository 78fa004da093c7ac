"""Bring your own SuperNet: the minimal interface SUSHI's export path needs, and that export path.

A SuperNet (any PyTorch module, or anything else) that implements `ElasticSupernet` goes through
`export_family`, which writes supernet.onnx, subnets/<name>.onnx and subnets.json exactly as
`models.train` does for the bundled digits SuperNet.  See docs/byo_supernet.md.

The elastic space and a choice share one JSON schema (see docs/subnets.md):

    space  = {"stages": [{"depth": [1, 2, 3], "width": [16, 24], "expand": [0.5, 1.0], "kernel": [3, 5]}, ...]}
    choice = {"stages": [{"depth": 2,         "width": 16,       "expand": [0.5, 1.0], "kernel": [3, 5]}, ...]}

Every dimension of a stage is optional (a stage without "kernel" has no elastic kernel); `expand` and
`kernel` may be given per block (a list of `depth` values) or as one value for every block.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np

__all__ = ["ElasticSupernet", "ElasticChoiceError", "validate_choice", "export_family", "onnx_stats",
           "onnx_fingerprint", "stamp_onnx", "onnx_input", "META_FINGERPRINT", "META_SUBNET", "META_CHOICE"]

META_FINGERPRINT = "sushi.supernet_fingerprint"
META_SUBNET = "sushi.subnet"
META_CHOICE = "sushi.choice"
#: dimensions that may be given per block (a list of `depth` values)
PER_BLOCK = ("expand", "kernel")


@runtime_checkable
class ElasticSupernet(Protocol):
    """What SUSHI needs from a weight-shared SuperNet."""

    def elastic_space(self) -> dict:
        """{"stages": [{"depth": [...], "width": [...], "expand": [...], "kernel": [...]}, ...]}"""

    def set_active(self, choice: dict) -> None:
        """Make `choice` the active SubNet; raise ElasticChoiceError (a ValueError) outside the space."""

    def active_choice(self) -> dict:
        """The active SubNet's choice, in the schema above."""

    def export_subnet(self, choice: dict, path) -> object:
        """Write SubNet `choice` as ONNX to `path`: eval mode, one input named "input" (batch 1),
        weights that are slices of the SuperNet's (channel prefix, kernel centre crop)."""


class ElasticChoiceError(ValueError):
    """A choice outside the elastic space, or malformed."""


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_choice(space: dict, choice, where: str = "choice") -> dict:
    """Check `choice` against `space`; return it in canonical form (per-block dims as lists of `depth`).
    Errors name the exact field, e.g. "choice.stages[1].depth = 4 is not in the elastic space [1, 2, 3]"."""
    if not isinstance(choice, dict) or not isinstance(choice.get("stages"), list):
        raise ElasticChoiceError(f"{where} must be an object with a list 'stages', got {json.dumps(choice)}")
    sstages, cstages = space["stages"], choice["stages"]
    if set(choice) != {"stages"}:
        raise ElasticChoiceError(f"{where} has unknown field(s) {sorted(set(choice) - {'stages'})}; "
                                 "only 'stages' is allowed")
    if len(cstages) != len(sstages):
        raise ElasticChoiceError(f"{where}.stages has {len(cstages)} stages; the elastic space has {len(sstages)}")
    out = []
    for i, (sp, st) in enumerate(zip(sstages, cstages)):
        at = f"{where}.stages[{i}]"
        if not isinstance(st, dict):
            raise ElasticChoiceError(f"{at} must be an object, got {json.dumps(st)}")
        missing = [d for d in sp if d not in st]
        if missing:
            raise ElasticChoiceError(f"{at} is missing {', '.join(repr(d) for d in missing)} "
                                     f"(the elastic space has {sorted(sp)})")
        extra = [d for d in st if d not in sp]
        if extra:
            raise ElasticChoiceError(f"{at} has {', '.join(repr(d) for d in extra)}, which is not an elastic "
                                     f"dimension of this stage (the space has {sorted(sp)})")
        canon = {}
        depth = None
        if "depth" in sp:
            depth = st["depth"]
            if not isinstance(depth, int) or isinstance(depth, bool) or depth not in sp["depth"]:
                raise ElasticChoiceError(f"{at}.depth = {json.dumps(depth)} is not in the elastic space {sp['depth']}")
            canon["depth"] = depth
        for dim in sp:
            if dim == "depth":
                continue
            v = st[dim]
            if dim in PER_BLOCK and isinstance(v, list):
                if depth is None:
                    raise ElasticChoiceError(f"{at}.{dim} is a list but the stage has no elastic depth; give one value")
                if len(v) != depth:
                    raise ElasticChoiceError(f"{at}.{dim} has {len(v)} values but depth is {depth} "
                                             "(one per active block, or a single value)")
                vals = v
            else:
                vals = [v]
            for j, x in enumerate(vals):
                if not _is_num(x) or x not in sp[dim]:
                    idx = f"[{j}]" if isinstance(v, list) else ""
                    raise ElasticChoiceError(f"{at}.{dim}{idx} = {json.dumps(x)} is not in the elastic space {sp[dim]}")
            vals = [sp[dim][sp[dim].index(x)] for x in vals]     # the space's own value and type (16.0 -> 16)
            if dim in PER_BLOCK and depth is not None:
                canon[dim] = vals if isinstance(v, list) else vals * depth
            else:
                canon[dim] = vals[0]
        out.append(canon)
    return {"stages": out}


# ------------------------------------------------------------------ ONNX helpers

def onnx_input(model) -> tuple[str, list]:
    """(name, shape) of the graph's single non-initializer input; unknown dims as strings."""
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1:
        raise ValueError(f"expected one graph input, found {len(ins)}: {[i.name for i in ins]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in ins[0].type.tensor_type.shape.dim]
    return ins[0].name, dims


def _bn_stat_names(model) -> set[str]:
    return {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)
            if len(n.input) > i}


def onnx_fingerprint(model) -> str:
    """sha256 over the input signature and every learned initializer (BN running stats excluded)."""
    from onnx import numpy_helper
    h = hashlib.sha256(json.dumps(onnx_input(model)).encode())
    skip = _bn_stat_names(model)
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        if init.name in skip:
            continue
        h.update(init.name.encode())
        h.update(np.ascontiguousarray(numpy_helper.to_array(init)).tobytes())
    return "sha256:" + h.hexdigest()


def stamp_onnx(path, fingerprint: str, name: str | None = None, choice: dict | None = None) -> None:
    """Write SUSHI's metadata_props (SuperNet fingerprint, SubNet name and choice) into an ONNX file."""
    import onnx
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    meta[META_FINGERPRINT] = fingerprint
    if name is not None:
        meta[META_SUBNET] = name
    if choice is not None:
        meta[META_CHOICE] = json.dumps(choice, sort_keys=True)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


def onnx_stats(model) -> dict:
    """MACs (batch 1; Conv, Gemm, MatMul), parameter count (all initializers except BN running stats)
    and weight_bytes (Conv/Gemm/MatMul weights at int8: one byte per weight) of an ONNX model."""
    import onnx
    from onnx import numpy_helper
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    m = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for i in inits:
        shapes[i] = list(inits[i].shape)
    skip = _bn_stat_names(m)
    params = int(sum(a.size for n, a in inits.items() if n not in skip))
    macs = wbytes = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            out = shapes[n.output[0]]
            macs += int(np.prod(out[1:])) * int(np.prod(w[1:]))
            wbytes += int(np.prod(w))
        elif n.op_type in ("Gemm", "MatMul"):
            a, b = shapes[n.input[0]], shapes[n.input[1]]
            trans_b = any(at.name == "transB" and at.i for at in n.attribute)
            k = a[-1] if not any(at.name == "transA" and at.i for at in n.attribute) else a[-2]
            nout = b[-2] if trans_b else b[-1]
            rows = int(np.prod(shapes[n.output[0]][:-1])) if n.output[0] in shapes else 1
            macs += rows * k * nout
            wbytes += int(np.prod(b)) if n.input[1] in inits else 0
    return {"macs": int(macs), "params": params, "weight_bytes": int(wbytes)}


# ------------------------------------------------------------------ the export path

def export_family(net: ElasticSupernet, out_dir, subnets: Iterable[tuple[str, dict]], *,
                  evaluate: Callable[[Path], float], evaluation: dict, normalization: dict,
                  largest: dict, prepare: Callable[[dict], None] | None = None,
                  name: str = "supernet", progress: bool = False, extra: dict | None = None) -> dict:
    """Export a SuperNet and its SubNets the way SUSHI expects, and write OUT/subnets.json.

    net         an ElasticSupernet
    subnets     (name, choice) pairs; names become subnets/<name>.onnx
    evaluate    path of an ONNX file -> measured top-1 accuracy on the evaluation split (a float in [0, 1])
    evaluation  {"dataset", "split", "seed", "size", "metric"} describing that split
    largest     the choice that uses every weight; exported as supernet.onnx
    prepare     called with each choice before it is exported (e.g. BatchNorm recalibration)

    MACs, parameter count and weight bytes are computed from each exported ONNX graph, accuracy is
    measured on the exported file itself, and every file is stamped with the SuperNet's fingerprint.
    """
    from models import subnets as sn
    out_dir = Path(out_dir)
    (out_dir / "subnets").mkdir(parents=True, exist_ok=True)
    space = net.elastic_space()
    largest = validate_choice(space, largest, "largest")
    if prepare:
        prepare(largest)
    net.set_active(largest)
    sup_path = out_dir / "supernet.onnx"
    net.export_subnet(largest, sup_path)
    import onnx
    sup_model = onnx.load(str(sup_path))
    fp = net.fingerprint() if callable(getattr(net, "fingerprint", None)) else onnx_fingerprint(sup_model)
    stamp_onnx(sup_path, fp, "supernet", largest)
    in_name, in_shape = onnx_input(sup_model)
    if in_name != "input":
        raise ValueError(f"{sup_path}: the SuperNet's ONNX input is named {in_name!r}; SUSHI expects 'input'")
    entries = []
    items = list(subnets)
    it = items
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(items, desc="export", unit="subnet")
    seen = set()
    for sname, choice in it:
        if sname in seen:
            raise ValueError(f"SubNet name {sname!r} is used twice")
        seen.add(sname)
        choice = validate_choice(space, choice, f"SubNet {sname!r}: choice")
        if prepare:
            prepare(choice)
        net.set_active(choice)
        rel = Path("subnets") / f"{sname}.onnx"
        net.export_subnet(choice, out_dir / rel)
        stamp_onnx(out_dir / rel, fp, sname, choice)
        st = onnx_stats(out_dir / rel)
        entries.append({"name": sname, "choice": choice, "onnx": rel.as_posix(),
                        "accuracy": round(float(evaluate(out_dir / rel)), 6), **st})
    manifest = {
        "format": sn.FORMAT, "version": sn.VERSION,
        "supernet": {"name": name, "onnx": "supernet.onnx", "fingerprint": fp,
                     "input": {"name": in_name, "shape": in_shape, "dtype": "float32"},
                     "normalization": normalization, "elastic_space": space, "largest": largest},
        "evaluation": evaluation,
        "subnets": entries,
    }
    if extra:
        manifest.update(extra)
    (out_dir / "subnets.json").write_text(json.dumps(manifest, indent=1) + "\n")
    sn.load_subnets(out_dir / "subnets.json")       # the writer obeys its own validator
    return manifest
