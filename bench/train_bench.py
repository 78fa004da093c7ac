"""Delayed shrinking vs shrinking from the start, at the same epoch budget.  JSON out.

    python -m bench.train_bench --json FILE [--epochs N] [--seeds 0 1 ...] [--no-progress]

For each seed and each schedule ("delayed": only the largest SubNet trains for the first 30 % of the
epochs, then the sandwich rule; "start": the sandwich rule from the first step) the digits SuperNet is
trained from scratch with the same seed, data, epochs and optimiser.  Reported per run: the test
accuracy (fixed split, n=360) of the largest and of the smallest SubNet after per-SubNet BatchNorm
recalibration, and the training wall time; then the mean over seeds per schedule.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from models.train import EPOCHS, train


def run(epochs: int, seeds: list[int], progress: bool, log=print) -> dict:
    import torch
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for shrink in ("delayed", "start"):
                log(f"train_bench: seed {seed}, shrink={shrink}, {epochs} epochs")
                t0 = time.perf_counter()
                r = train(Path(tmp) / f"{shrink}{seed}", epochs=epochs, seed=seed, shrink=shrink, progress=progress,
                          export=False)
                runs.append({"seed": seed, "shrink": shrink, "epochs": epochs,
                             "shrink_from_epoch": r["training"]["shrink_from_epoch"],
                             "train_seconds": r["train_seconds"], "wall_seconds": round(time.perf_counter() - t0, 2),
                             "largest_test_accuracy": round(r["largest"]["test_accuracy"], 6),
                             "smallest_test_accuracy": round(r["smallest"]["test_accuracy"], 6),
                             "largest_macs": r["largest"]["macs"], "smallest_macs": r["smallest"]["macs"]})
                log(f"  largest {runs[-1]['largest_test_accuracy']:.4f}  smallest "
                    f"{runs[-1]['smallest_test_accuracy']:.4f}  train {runs[-1]['train_seconds']:.1f} s")
    summary = {}
    for shrink in ("delayed", "start"):
        rs = [r for r in runs if r["shrink"] == shrink]
        summary[shrink] = {k: round(statistics.mean(r[k] for r in rs), 6)
                           for k in ("largest_test_accuracy", "smallest_test_accuracy", "train_seconds")}
    summary["delayed_minus_start"] = {k: round(summary["delayed"][k] - summary["start"][k], 6)
                                      for k in summary["delayed"]}
    return {"benchmark": "train_bench: delayed vs from-start shrinking, same epoch budget",
            "dataset": "sklearn-digits, stratified 60/20/20 split (seed 0), test n=360",
            "epochs": epochs, "seeds": seeds, "runs": runs, "summary": summary,
            "host": {"python": platform.python_version(), "torch": torch.__version__,
                     "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write the results here")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    res = run(a.epochs, a.seeds, progress=not a.no_progress, log=lambda m: print(m, file=sys.stderr))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
