"""OFA-ResNet50 SubNet family (random weights) for the SubGraph-Stationary benchmark (bench/sgs.py).

Writes OUT/supernet.onnx, OUT/subnets/<name>.onnx and OUT/subnets.json (models/subnets.py format).
The OFA choice ``{"d", "e", "w"}`` is expressed in the manifest's ``stages`` form: stage 0 is the
input stem (``d`` 0..2: d0 = 2 keeps the stem's residual conv; ``w0``, ``w1`` width indices), stages
1..4 the bottleneck stages (``depth`` = base + d, ``expand`` per block, ``width`` = output channels).
Accuracy is 0.0 with a note: random weights, not measured; the benchmark uses performance only.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["R50_CHOICES", "R50_QUICK", "export_r50_family"]

#: (name, d, e, w): uniform choices spanning the published space (largest and smallest included)
R50_CHOICES = [
    ("r50_d2_e035_w2", 2, 0.35, 2),     # largest: every weight
    ("r50_d2_e025_w2", 2, 0.25, 2),
    ("r50_d1_e035_w2", 1, 0.35, 2),
    ("r50_d2_e020_w1", 2, 0.20, 1),
    ("r50_d1_e025_w1", 1, 0.25, 1),
    ("r50_d0_e035_w1", 0, 0.35, 1),
    ("r50_d1_e020_w0", 1, 0.20, 0),
    ("r50_d0_e020_w0", 0, 0.20, 0),     # smallest
]
R50_QUICK = ["r50_d2_e035_w2", "r50_d1_e025_w1", "r50_d0_e020_w0"]


def _ofa_choice(net, d, e, w):
    return {"d": [d] * 5, "e": [e] * net.n_blocks, "w": [w] * 6}


def _stages_space(net):
    st = [{"d": list(net.DEPTH), "w0": [0, 1, 2], "w1": [0, 1, 2]}]
    for si, base in enumerate(net.BASE_DEPTH):
        st.append({"depth": [base + d for d in net.DEPTH], "expand": list(net.EXPAND),
                   "width": list(net.stage_widths[si])})
    return {"stages": st}


def _stages_choice(net, d, e, w):
    st = [{"d": d, "w0": w, "w1": w}]
    for si, base in enumerate(net.BASE_DEPTH):
        st.append({"depth": base + d, "expand": [e] * (base + d), "width": net.stage_widths[si][w]})
    return {"stages": st}


def _align_names(path, net, d, super_wn):
    """Rename the SubNet's ONNX node names and weight initializers to the SuperNet's.

    ``ResNetSubNet`` numbers its modules densely (``blocks.0..N``, ``input_stem.0..K``), so a SubNet
    with fewer blocks than the SuperNet names its layers differently from the SuperNet's, and the
    share analysis (which matches layers by initializer name, then by node name) would find no
    match for every layer after the first skipped block.  Block j of the SubNet is SuperNet block
    kept[j] (the first ``base + d`` blocks of every stage); the stem's second module is the SuperNet's
    third when the stem residual conv is skipped (d0 < 2)."""
    import onnx
    kept = []
    for si, idx in enumerate(net.stage_blocks):
        kept += idx[:len(idx) - (max(net.DEPTH) - d)]
    stem = [0, 1, 2] if d == max(net.DEPTH) else [0, 2]
    m = onnx.load(str(path))

    def fix(name):
        name = re.sub(r"/blocks/blocks\.(\d+)(?=/|$)", lambda g: f"/blocks/blocks.{kept[int(g[1])]}", name)
        return re.sub(r"/input_stem/input_stem\.(\d+)(?=/|$)", lambda g: f"/input_stem/input_stem.{stem[int(g[1])]}", name)
    ren = {}
    for n in m.graph.node:
        n.name = fix(n.name)
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 1 and n.name in super_wn:
            ren[n.input[1]] = super_wn[n.name]
    inits = {i.name for i in m.graph.initializer}
    for i in m.graph.initializer:        # every other initializer gets a name no SuperNet tensor has
        if i.name not in ren and i.name.startswith("onnx::"):
            ren[i.name] = "sub::" + i.name
    for i in m.graph.initializer:
        i.name = ren.get(i.name, i.name)
    for n in m.graph.node:
        for k, x in enumerate(n.input):
            if x in ren and x in inits:
                n.input[k] = ren[x]
    onnx.save(m, str(path))


def export_r50_family(out_dir, names=None, resolution: int = 224, seed: int = 0, log=print) -> Path:
    """Export the SuperNet (largest SubNet) and the chosen SubNets; returns OUT/subnets.json."""
    from models.interface import onnx_stats
    from models.ofa import OFAResNet50
    from models.subnets import load_subnets
    out = Path(out_dir)
    man = out / "subnets.json"
    chosen = [c for c in R50_CHOICES if names is None or c[0] in names]
    if man.is_file():
        try:
            m = json.loads(man.read_text())
            if [s["name"] for s in m["subnets"]] == [c[0] for c in chosen] and \
                    m["supernet"].get("config", {}).get("resolution") == resolution:
                load_subnets(man)
                log(f"reusing {man}")
                return man
        except Exception:  # noqa: BLE001 - stale or partial: export again
            pass
    (out / "subnets").mkdir(parents=True, exist_ok=True)
    net = OFAResNet50(resolution=resolution, seed=seed)
    net.export_subnet(net.largest_choice(), out / "supernet.onnx")
    from compiler.share import weight_names
    import onnx
    super_wn = weight_names(onnx.load(str(out / "supernet.onnx")))
    entries = []
    for name, d, e, w in chosen:
        rel = f"subnets/{name}.onnx"
        net.export_subnet(_ofa_choice(net, d, e, w), out / rel)
        _align_names(out / rel, net, d, super_wn)
        st = onnx_stats(out / rel)
        entries.append({"name": name, "choice": _stages_choice(net, d, e, w), "onnx": rel, "accuracy": 0.0,
                        "notes": "accuracy is not measured (random weights); the SGS benchmark uses performance only",
                        **st})
        log(f"exported {name}: {st['macs'] / 1e9:.2f} GMACs, {st['weight_bytes'] / 1e6:.2f} MB int8 weights")
    manifest = {
        "format": "sushi-subnets", "version": 1,
        "supernet": {"name": "ofa-resnet50-random", "onnx": "supernet.onnx",
                     "input": {"name": "input", "shape": [1, 3, resolution, resolution], "dtype": "float32"},
                     "normalization": {"notes": "random weights; any float NCHW input"},
                     "elastic_space": _stages_space(net),
                     "config": {"family": "ofa_resnet50", "resolution": resolution, "seed": seed}},
        "evaluation": {"dataset": "none", "split": "none", "seed": seed, "size": 1,
                       "notes": "accuracy is not measured (random weights)"},
        "subnets": entries,
        "notes": "OFA-ResNet50 SubNets with random weights for performance studies (bench/sgs.py)",
    }
    man.write_text(json.dumps(manifest, indent=1) + "\n")
    load_subnets(man)
    return man
