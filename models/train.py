"""Train the digits SuperNet (sandwich rule, in-place distillation, delayed shrinking) and export it.

    python -m models.train OUT [--epochs N] [--seed S] [--shrink delayed|start] [--no-progress]

writes OUT/supernet.onnx (the largest SubNet), OUT/subnets/<name>.onnx, OUT/subnets.json (docs/subnets.md),
OUT/pareto.png and OUT/supernet.pt (the trained SuperNet: {"config", "state_dict", "training"}).

Data: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes), split once with a
fixed seed, stratified: 60 % train / 20 % validation / 20 % test.  Input normalisation (documented in
the manifest): x = (pixel / 16 - 0.5) / 0.5, pixels 0..16, so x is in [-1, 1]; shape 1x1x8x8, float32.

Training (per step, the sandwich rule): the largest SubNet learns from the labels; the smallest and
`n_random` random SubNets learn from the largest's soft labels (in-place distillation, KL divergence).
With shrink="delayed" only the largest trains for the first `delay` fraction of the epochs and the
smaller SubNets join after that (delayed epsilon-shrinking); shrink="start" runs the sandwich from the
first step.  Before any evaluation or export every SubNet gets its own BatchNorm recalibration.

Exported SubNets: a log-MACs-spread, Pareto-ish sample of the per-stage-uniform grid, chosen on the
*validation* split; their accuracy is then measured on the *test* split by running the exported ONNX
file in onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.interface import export_family
from models.supernet import DEFAULT_CONFIG, ElasticCNN, SupernetConfig, choice_name

__all__ = ["train", "load_digits_split", "NORMALIZATION", "normalize", "onnx_accuracy", "train_supernet",
           "select_subnets", "evaluate_choice", "calibration_set", "EPOCHS"]

#: x = (pixel * scale - mean) / std, the one normalisation every exported file expects
NORMALIZATION = {"pixel_range": [0, 16], "scale": 1 / 16, "mean": [0.5], "std": [0.5],
                 "formula": "x = (pixel * scale - mean) / std", "layout": "NCHW", "dtype": "float32"}
SPLIT_SEED = 0
EPOCHS = 30
#: BatchNorm recalibration uses the first CALIB_SIZE images of the training split (OFA uses 2,000 images)
CALIB_SIZE = 512


def calibration_set(data: dict) -> torch.Tensor:
    return torch.from_numpy(data["train"][0][:CALIB_SIZE])


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Raw digits pixels (0..16), any shape ending in 64 or 8x8 -> normalised float32 N x 1 x 8 x 8."""
    x = np.asarray(pixels, np.float32).reshape(-1, 1, 8, 8)
    return ((x * NORMALIZATION["scale"] - NORMALIZATION["mean"][0]) / NORMALIZATION["std"][0]).astype(np.float32)


def load_digits_split(seed: int = SPLIT_SEED) -> dict:
    """{"train"|"val"|"test": (x N x 1 x 8 x 8 float32 normalised, y int64)}: a stratified 60/20/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    idx = np.arange(len(d.target))
    rest, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=d.target)
    train, val = train_test_split(rest, test_size=0.25, random_state=seed, stratify=d.target[rest])
    x = normalize(d.data)
    y = d.target.astype(np.int64)
    return {k: (x[v], y[v]) for k, v in (("train", train), ("val", val), ("test", test))}


def onnx_accuracy(path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX file (input "input", batch 1) run in onnxruntime, one sample at a time."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    correct = 0
    for i in range(len(x)):
        logits = sess.run(None, {name: x[i:i + 1]})[0]
        correct += int(np.argmax(logits) == y[i])
    return correct / len(x)


@torch.no_grad()
def evaluate_choice(net: ElasticCNN, choice: dict, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """BN-recalibrate `choice` on `calib`, then its top-1 accuracy on (x, y)."""
    net.recalibrate_bn(calib, choice)
    return (net.forward_choice(x, choice).argmax(1) == y).float().mean().item()


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (pad with the background value, crop)."""
    n = x.shape[0]
    pad = F.pad(x, [max_shift] * 4, value=float(x.min()))
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(8)[None]).view(n, 1, 8, 1).expand(n, 1, 8, 8 + 2 * max_shift)
    out = pad.gather(2, rows)
    cols = (dx[:, None] + torch.arange(8)[None]).view(n, 1, 1, 8).expand(n, 1, 8, 8)
    return out.gather(3, cols)


def train_supernet(net: ElasticCNN, data: dict, *, epochs: int, seed: int, shrink: str, delay: float = 0.3,
                   batch_size: int = 64, lr: float = 4e-3, n_random: int = 2, progress: bool = True,
                   max_train: int | None = None, augment: bool = True) -> dict:
    """The training loop.  Returns {"epochs", "shrink_from_epoch", "steps", "seconds", "final_loss"}."""
    if shrink not in ("delayed", "start"):
        raise ValueError(f"shrink must be 'delayed' or 'start', got {shrink!r}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = (torch.from_numpy(a) for a in data["train"])
    if max_train:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    steps_per_epoch = math.ceil(len(xtr) / batch_size)
    total = epochs * steps_per_epoch
    shrink_from = int(round(delay * epochs)) if shrink == "delayed" else 0
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, total), pct_start=0.15)
    largest, smallest = net.largest_choice(), net.smallest_choice()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"train ({shrink})", unit="step", file=sys.stderr)
    t0 = time.perf_counter()
    loss_val = float("nan")
    net.train()
    for ep in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        sandwich = ep >= shrink_from
        for i in range(0, len(xtr), batch_size):
            b = perm[i:i + batch_size]
            xb, yb = (_shift(xtr[b], gen) if augment else xtr[b]), ytr[b]
            opt.zero_grad(set_to_none=True)
            logits = net.forward_choice(xb, largest)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.1)
            loss.backward()
            total_loss = loss.item()
            if sandwich:
                soft = F.softmax(logits.detach(), 1)
                for ch in [smallest] + [net.random_choice(rng) for _ in range(n_random)]:
                    out = net.forward_choice(xb, ch)
                    kd = F.kl_div(F.log_softmax(out, 1), soft, reduction="batchmean")
                    kd.backward()
                    total_loss += kd.item()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            loss_val = total_loss
            if bar:
                bar.update(1)
                bar.set_postfix(epoch=ep + 1, loss=f"{loss_val:.3f}", sandwich=sandwich)
    if bar:
        bar.close()
    net.eval()
    return {"epochs": epochs, "shrink": shrink, "shrink_from_epoch": shrink_from, "steps": total,
            "seconds": round(time.perf_counter() - t0, 2), "final_loss": round(loss_val, 4)}


def select_subnets(net: ElasticCNN, data: dict, n: int = 24, n_candidates: int = 64, seed: int = 0,
                   progress: bool = False) -> list[tuple[str, dict, float]]:
    """Choose `n` SubNets spread over log-MACs, best validation accuracy per MACs bin (plus the largest
    and smallest).  Candidates: a seeded sample of the per-stage-uniform grid.  Returns (name, choice, val_acc)."""
    calib = calibration_set(data)
    xv, yv = (torch.from_numpy(a) for a in data["val"])
    grid = list(net.uniform_choices())
    rng = random.Random(seed)
    cands = rng.sample(grid, min(n_candidates, len(grid)))
    keys = {json.dumps(c, sort_keys=True) for c in cands}
    for c in (net.largest_choice(), net.smallest_choice()):
        if json.dumps(c, sort_keys=True) not in keys:
            cands.append(c)
    it = cands
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(cands, desc="select (val)", unit="subnet", file=sys.stderr)
    scored = [(net.choice_stats(c)["macs"], evaluate_choice(net, c, calib, xv, yv), c) for c in it]
    lo, hi = math.log(min(s[0] for s in scored)), math.log(max(s[0] for s in scored))
    nb = max(1, n - 2)
    bins: dict[int, tuple] = {}
    for s in scored:
        b = min(nb - 1, int((math.log(s[0]) - lo) / max(1e-9, hi - lo) * nb))
        if b not in bins or s[1] > bins[b][1] or (s[1] == bins[b][1] and s[0] < bins[b][0]):
            bins[b] = s
    chosen = {json.dumps(net.largest_choice(), sort_keys=True), json.dumps(net.smallest_choice(), sort_keys=True)}
    chosen |= {json.dumps(s[2], sort_keys=True) for s in bins.values()}
    # top up from the validation Pareto front, then by accuracy, until n
    rest = sorted((s for s in scored if json.dumps(s[2], sort_keys=True) not in chosen), key=lambda s: (-s[1], s[0]))
    for s in rest:
        if len(chosen) >= n:
            break
        chosen.add(json.dumps(s[2], sort_keys=True))
    by_key = {json.dumps(s[2], sort_keys=True): s for s in scored}
    out = sorted((by_key[k] for k in chosen), key=lambda s: s[0])
    return [(choice_name(s[2]), s[2], s[1]) for s in out]


def train(out_dir, epochs: int = EPOCHS, seed: int = 0, shrink: str = "delayed", progress: bool = True, *,
          cfg: SupernetConfig = DEFAULT_CONFIG, n_subnets: int = 24, n_candidates: int = 64, delay: float = 0.3,
          max_train: int | None = None, export: bool = True, plot: bool = True) -> dict:
    """Train the digits SuperNet, export it with its SubNets into `out_dir`, return a summary dict:
    {"out_dir", "manifest", "train_seconds", "total_seconds", "largest": {...}, "smallest": {...},
     "n_subnets", "macs_min", "macs_max", "macs_span", "training": {...}}."""
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # One intra-op thread: these convolutions are tiny, and on a 2-core machine that is also doing
    # other work two threads were measured 5x *slower* (113 s vs 18-20 s for the same training).
    torch.set_num_threads(1)
    try:
        return _train(out_dir, epochs, seed, shrink, progress, cfg, n_subnets, n_candidates, delay, max_train,
                      export, plot, t0)
    finally:
        torch.set_num_threads(threads)


def _train(out_dir, epochs, seed, shrink, progress, cfg, n_subnets, n_candidates, delay, max_train, export, plot,
           t0) -> dict:
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits_split(SPLIT_SEED)
    net = ElasticCNN(cfg)
    tr = train_supernet(net, data, epochs=epochs, seed=seed, shrink=shrink, delay=delay, progress=progress,
                        max_train=max_train)
    calib = calibration_set(data)
    xte, yte = data["test"]
    result = {"out_dir": str(out_dir), "training": tr, "train_seconds": tr["seconds"]}
    if not export:
        xt, yt = torch.from_numpy(xte), torch.from_numpy(yte)
        for key, ch in (("largest", net.largest_choice()), ("smallest", net.smallest_choice())):
            result[key] = {"name": choice_name(ch), "test_accuracy": evaluate_choice(net, ch, calib, xt, yt),
                           "macs": net.choice_stats(ch)["macs"]}
        result["total_seconds"] = round(time.perf_counter() - t0, 2)
        return result
    picked = select_subnets(net, data, n=n_subnets, n_candidates=n_candidates, seed=seed, progress=progress)
    manifest = export_family(
        net, out_dir, [(name, ch) for name, ch, _ in picked],
        evaluate=lambda p: onnx_accuracy(p, xte, yte),
        evaluation={"dataset": "sklearn-digits", "split": "test", "seed": SPLIT_SEED, "size": int(len(yte)),
                    "metric": "top1",
                    "notes": "stratified 60/20/20 train/val/test split (sklearn train_test_split, random_state=seed, "
                             "test first, then 25 % of the rest as validation); "
                             "accuracy measured by running each exported ONNX file in onnxruntime"},
        normalization=NORMALIZATION, largest=net.largest_choice(),
        prepare=lambda ch: net.recalibrate_bn(calib, ch), name=cfg.name, progress=progress,
        extra={"training": {**tr, "seed": seed, "delay": delay if shrink == "delayed" else 0.0,
                            "rule": "sandwich (largest + smallest + 2 random) with in-place distillation",
                            "bn": "recalibrated per SubNet on the training split before evaluation and export"}},
    )
    manifest["supernet"]["config"] = cfg.to_json()
    torch.save({"config": cfg, "state_dict": net.state_dict(), "training": tr}, out_dir / "supernet.pt")
    (out_dir / "subnets.json").write_text(json.dumps(manifest, indent=1) + "\n")
    from models.subnets import load_subnets, plot_pareto
    m = load_subnets(out_dir / "subnets.json")
    if plot:
        plot_pareto(m, out_dir / "pareto.png")
    lg, sm = m.largest(), m.smallest()
    val = {name: acc for name, _, acc in picked}
    result.update({
        "manifest": str(out_dir / "subnets.json"),
        "n_subnets": len(m.subnets),
        "macs_min": sm.macs, "macs_max": lg.macs, "macs_span": round(lg.macs / sm.macs, 2),
        "largest": {"name": lg.name, "test_accuracy": lg.accuracy, "val_accuracy": val.get(lg.name), "macs": lg.macs},
        "smallest": {"name": sm.name, "test_accuracy": sm.accuracy, "val_accuracy": val.get(sm.name),
                     "macs": sm.macs},
        "test_accuracy_range": [min(s.accuracy for s in m.subnets), max(s.accuracy for s in m.subnets)],
        "total_seconds": round(time.perf_counter() - t0, 2),
    })
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output directory")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shrink", choices=["delayed", "start"], default="delayed")
    ap.add_argument("--subnets", type=int, default=24, help="number of SubNets to export")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args(argv)
    res = train(a.out, epochs=a.epochs, seed=a.seed, shrink=a.shrink, progress=not a.no_progress,
                n_subnets=a.subnets)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
