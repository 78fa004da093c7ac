"""The SubNet manifest (subnets.json): format, validator, Pareto plot.  Specified in docs/subnets.md.

    python -m models.subnets check OUT/subnets.json          validate (exit 2 with one clear line on error)
    python -m models.subnets plot OUT/subnets.json pareto.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from models.interface import (META_FINGERPRINT, ElasticChoiceError, onnx_input, validate_choice)

__all__ = ["FORMAT", "VERSION", "ManifestError", "SubnetEntry", "SubnetManifest", "load_subnets",
           "plot_pareto", "pareto_front"]

FORMAT = "sushi-subnets"
VERSION = 1

_TOP = {"format", "version", "supernet", "evaluation", "subnets", "training", "notes"}
_SUPERNET = {"name", "onnx", "fingerprint", "input", "normalization", "elastic_space", "largest", "config", "notes"}
_EVAL = {"dataset", "split", "seed", "size", "metric", "notes"}
_SUBNET_REQ = ("name", "choice", "onnx", "accuracy", "macs", "weight_bytes", "params")
_SUBNET = set(_SUBNET_REQ) | {"notes", "quantized"}


class ManifestError(ValueError):
    """A subnets.json that does not follow docs/subnets.md; the message names the SubNet and field."""


@dataclass(frozen=True)
class SubnetEntry:
    name: str
    choice: dict
    onnx: Path              # absolute
    accuracy: float         # top-1 on the manifest's evaluation split, in [0, 1]
    macs: int
    weight_bytes: int
    params: int


@dataclass(frozen=True)
class SubnetManifest:
    path: Path
    version: int
    supernet_name: str
    supernet_onnx: Path
    fingerprint: str | None
    input_name: str
    input_shape: tuple
    normalization: dict
    elastic_space: dict
    evaluation: dict
    subnets: tuple[SubnetEntry, ...]
    raw: dict

    def __getitem__(self, name: str) -> SubnetEntry:
        for s in self.subnets:
            if s.name == name:
                return s
        raise KeyError(f"no SubNet named {name!r} in {self.path}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.subnets]

    def largest(self) -> SubnetEntry:
        return max(self.subnets, key=lambda s: s.macs)

    def smallest(self) -> SubnetEntry:
        return min(self.subnets, key=lambda s: s.macs)


def _nonneg_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def load_subnets(path, check_files: bool = True) -> SubnetManifest:
    """Read and validate a SubNet manifest.  Raises ManifestError naming the file, the SubNet and the field.

    With check_files (default) every ONNX file must exist, have the SuperNet's input name and shape, and,
    when the manifest records a SuperNet fingerprint, carry the same one in its metadata_props."""
    path = Path(path)
    P = str(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{P}: no such file") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{P}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{P}: the top level must be a JSON object")
    if raw.get("format") != FORMAT:
        raise ManifestError(f"{P}: field 'format' is {json.dumps(raw.get('format'))}, expected \"{FORMAT}\"")
    if raw.get("version") != VERSION:
        raise ManifestError(f"{P}: field 'version' is {json.dumps(raw.get('version'))}; "
                            f"this SUSHI reads version {VERSION}")
    _unknown(P, "", raw, _TOP)
    for key in ("supernet", "evaluation", "subnets"):
        if key not in raw:
            raise ManifestError(f"{P}: field '{key}' is missing")

    sup = raw["supernet"]
    if not isinstance(sup, dict):
        raise ManifestError(f"{P}: field 'supernet' must be an object")
    _unknown(P, "supernet.", sup, _SUPERNET)
    for key in ("onnx", "input", "elastic_space", "normalization"):
        if key not in sup:
            raise ManifestError(f"{P}: field 'supernet.{key}' is missing")
    inp = sup["input"]
    if not (isinstance(inp, dict) and isinstance(inp.get("name"), str) and isinstance(inp.get("shape"), list)
            and all(_nonneg_int(d) and d > 0 for d in inp["shape"])):
        raise ManifestError(f"{P}: field 'supernet.input' must be {{\"name\": str, \"shape\": [positive ints]}}, "
                            f"got {json.dumps(inp)}")
    space = sup["elastic_space"]
    _check_space(P, space)
    ev = raw["evaluation"]
    if not isinstance(ev, dict):
        raise ManifestError(f"{P}: field 'evaluation' must be an object")
    _unknown(P, "evaluation.", ev, _EVAL)
    for key in ("dataset", "split", "seed", "size"):
        if key not in ev:
            raise ManifestError(f"{P}: field 'evaluation.{key}' is missing")
    if not (_nonneg_int(ev["size"]) and ev["size"] > 0):
        raise ManifestError(f"{P}: field 'evaluation.size' must be a positive integer, got {json.dumps(ev['size'])}")
    fp = sup.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise ManifestError(f"{P}: field 'supernet.fingerprint' must be a string")
    if "largest" in sup:
        try:
            validate_choice(space, sup["largest"], "supernet.largest")
        except ElasticChoiceError as e:
            raise ManifestError(f"{P}: {e}") from None

    base = path.parent
    sup_onnx = (base / str(sup["onnx"])).resolve()
    want = (inp["name"], list(inp["shape"]))
    if check_files:
        _check_onnx(P, "supernet", sup["onnx"], sup_onnx, want, fp)

    subs = raw["subnets"]
    if not isinstance(subs, list) or not subs:
        raise ManifestError(f"{P}: field 'subnets' must be a non-empty list")
    entries, names = [], set()
    for i, s in enumerate(subs):
        if not isinstance(s, dict):
            raise ManifestError(f"{P}: subnets[{i}] must be an object")
        if not isinstance(s.get("name"), str) or not s["name"]:
            raise ManifestError(f"{P}: subnets[{i}]: field 'name' is missing or not a non-empty string")
        who = f"{P}: SubNet {s['name']!r}"
        if s["name"] in names:
            raise ManifestError(f"{who}: field 'name': the name is used twice")
        names.add(s["name"])
        for key in _SUBNET_REQ:
            if key not in s:
                raise ManifestError(f"{who}: field '{key}' is missing ({_WHAT[key]})")
        extra = sorted(set(s) - _SUBNET)
        if extra:
            raise ManifestError(f"{who}: unknown field(s) {extra} (allowed: {sorted(_SUBNET)})")
        try:
            choice = validate_choice(space, s["choice"], "choice")
        except ElasticChoiceError as e:
            raise ManifestError(f"{who}: field 'choice': {e}") from None
        acc = s["accuracy"]
        if not (isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0.0 <= acc <= 1.0
                and math.isfinite(acc)):
            raise ManifestError(f"{who}: field 'accuracy' must be a number in [0, 1] (a fraction, not a percent), "
                                f"got {json.dumps(acc)}")
        for key in ("macs", "weight_bytes", "params"):
            if not _nonneg_int(s[key]):
                raise ManifestError(f"{who}: field '{key}' must be a non-negative integer, got {json.dumps(s[key])}")
        if not isinstance(s["onnx"], str):
            raise ManifestError(f"{who}: field 'onnx' must be a path string")
        onnx_path = (base / s["onnx"]).resolve()
        if check_files:
            _check_onnx(P, f"SubNet {s['name']!r}", s["onnx"], onnx_path, want, fp)
        entries.append(SubnetEntry(s["name"], choice, onnx_path, float(acc), s["macs"], s["weight_bytes"],
                                   s["params"]))
    return SubnetManifest(path=path, version=VERSION, supernet_name=str(sup.get("name", "supernet")),
                          supernet_onnx=sup_onnx, fingerprint=fp, input_name=inp["name"],
                          input_shape=tuple(inp["shape"]), normalization=sup["normalization"],
                          elastic_space=space, evaluation=ev, subnets=tuple(entries), raw=raw)


_WHAT = {"name": "a unique string", "choice": "the elastic choice, e.g. {\"stages\": [{\"depth\": 2, ...}]}",
         "onnx": "path of the SubNet's ONNX file, relative to the manifest",
         "accuracy": "measured top-1 accuracy on the evaluation split, a number in [0, 1]",
         "macs": "multiply-accumulates per inference, batch 1", "weight_bytes": "int8 bytes of Conv/Gemm weights",
         "params": "parameter count"}


def _unknown(P, prefix, obj, allowed):
    extra = sorted(k for k in obj if k not in allowed and not k.startswith("x-"))
    if extra:
        raise ManifestError(f"{P}: unknown field(s) {[prefix + k for k in extra]} "
                            f"(allowed: {sorted(prefix + k for k in allowed)}, or any 'x-' prefixed key)")


def _check_space(P, space):
    ok = isinstance(space, dict) and isinstance(space.get("stages"), list) and space["stages"]
    if not ok:
        raise ManifestError(f"{P}: field 'supernet.elastic_space' must be {{\"stages\": [...]}} with at least "
                            "one stage")
    for i, st in enumerate(space["stages"]):
        if not isinstance(st, dict):
            raise ManifestError(f"{P}: field 'supernet.elastic_space.stages[{i}]' must be an object")
        for dim, vals in st.items():
            if not (isinstance(vals, list) and vals and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in vals)):
                raise ManifestError(f"{P}: field 'supernet.elastic_space.stages[{i}].{dim}' must be a non-empty "
                                    f"list of numbers, got {json.dumps(vals)}")
            if dim in ("depth", "width", "kernel") and not all(isinstance(v, int) and v > 0 for v in vals):
                raise ManifestError(f"{P}: field 'supernet.elastic_space.stages[{i}].{dim}' must hold positive "
                                    f"integers, got {json.dumps(vals)}")


def _check_onnx(P, who, rel, abspath: Path, want, fp):
    import onnx
    if not abspath.is_file():
        raise ManifestError(f"{P}: {who}: field 'onnx': file {rel} does not exist (looked for {abspath})")
    try:
        model = onnx.load(str(abspath), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any decode failure is the user's file
        raise ManifestError(f"{P}: {who}: field 'onnx': {rel} is not a readable ONNX model ({e})") from None
    try:
        got = onnx_input(model)
    except ValueError as e:
        raise ManifestError(f"{P}: {who}: field 'onnx': {rel}: {e}") from None
    if (got[0], list(got[1])) != (want[0], want[1]):
        raise ManifestError(f"{P}: {who}: field 'onnx': {rel} has input {got[0]!r} of shape {list(got[1])}, but "
                            f"the SuperNet's input is {want[0]!r} of shape {want[1]}; it belongs to another SuperNet")
    if fp is not None:
        meta = {p.key: p.value for p in model.metadata_props}
        theirs = meta.get(META_FINGERPRINT)
        if theirs is None:
            raise ManifestError(f"{P}: {who}: field 'onnx': {rel} has no '{META_FINGERPRINT}' metadata, but the "
                                f"manifest names SuperNet {fp}; re-export it, or stamp it with "
                                "models.interface.stamp_onnx, or drop 'supernet.fingerprint'")
        if theirs != fp:
            raise ManifestError(f"{P}: {who}: field 'onnx': {rel} belongs to another SuperNet (its metadata says "
                                f"{_short(theirs)}, the manifest's SuperNet is {_short(fp)})")


def _short(fp: str) -> str:
    return fp[:23] + "..." if len(fp) > 26 else fp


# ------------------------------------------------------------------ Pareto plot

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) not dominated by a cheaper-or-equal, more accurate one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(manifest, path, latency=None, title: str | None = None) -> Path:
    """PNG of accuracy against MACs (or against predicted latency: `latency` maps SubNet name -> ms,
    or is a callable SubnetEntry -> ms).  The Pareto front is drawn as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not isinstance(manifest, SubnetManifest):
        manifest = load_subnets(manifest, check_files=False)
    subs = list(manifest.subnets)
    if latency is None:
        xs = [s.macs / 1e6 for s in subs]
        xlabel = "MACs per inference (millions, batch 1)"
    else:
        f = latency if callable(latency) else (lambda s: latency[s.name])
        xs = [float(f(s)) for s in subs]
        xlabel = "predicted latency (ms)"
    ys = [100.0 * s.accuracy for s in subs]
    front = pareto_front(list(zip(xs, ys)))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(xs, ys, s=22, c="#4a7fb5", alpha=0.75, label=f"SubNets ({len(subs)})")
    fx = [xs[i] for i in front]
    fy = [ys[i] for i in front]
    ax.plot(fx, fy, "-o", c="#d1495b", ms=4, lw=1.5, label="Pareto front")
    lg, sm = manifest.largest(), manifest.smallest()
    for s, x, y in zip(subs, xs, ys):
        if s is lg or s is sm:
            ax.annotate(s.name, (x, y), fontsize=6, xytext=(-4 if s is lg else 4, -10), textcoords="offset points",
                        ha="right" if s is lg else "left")
    ax.margins(x=0.08, y=0.12)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ev = manifest.evaluation
    ax.set_ylabel(f"top-1 accuracy (%), {ev.get('dataset', '?')} {ev.get('split', '?')} "
                  f"(n={ev.get('size', '?')}, seed {ev.get('seed', '?')})")
    ax.set_title(title or f"{manifest.supernet_name}: accuracy vs {'MACs' if latency is None else 'latency'}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.subnets", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a subnets.json")
    c.add_argument("manifest")
    p = sub.add_parser("plot", help="Pareto plot (accuracy vs MACs) as PNG")
    p.add_argument("manifest")
    p.add_argument("png")
    a = ap.parse_args(argv)
    try:
        m = load_subnets(a.manifest)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.cmd == "check":
        accs = [s.accuracy for s in m.subnets]
        macs = [s.macs for s in m.subnets]
        print(f"{a.manifest}: ok, {len(m.subnets)} SubNets, MACs {min(macs):,}..{max(macs):,} "
              f"({max(macs) / max(1, min(macs)):.1f}x), accuracy {min(accs):.4f}..{max(accs):.4f}")
    else:
        print(plot_pareto(m, a.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
