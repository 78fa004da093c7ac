"""Plots of a set of replays (matplotlib, Agg): PNG files beside the JSON report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .replay import DROPPED, MET


def plot_all(results: dict, stem: Path) -> list[Path]:
    """results: {policy: ReplayResult}.  Writes STEM_latency_cdf.png, STEM_accuracy_time.png,
    STEM_subgraph_timeline.png, STEM_accuracy_slo.png; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    out = []
    names = list(results)
    colors = {p: plt.cm.tab10(i % 10) for i, p in enumerate(names)}

    # 1. latency CDF of served queries
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p, r in results.items():
        lat = np.sort(r.latency_ms[r.status != DROPPED])
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(r), label=p, color=colors[p])
    ax.set_xlabel("latency (ms, arrival to finish)")
    ax.set_ylabel("fraction of all queries served within x")
    ax.set_title("Latency CDF (dropped queries never reach 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.append(_save(fig, stem, "latency_cdf"))

    # 2. served accuracy over time (met queries, rolling)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p, r in results.items():
        met = r.status == MET
        if met.sum() < 2:
            continue
        t = r.arrival_ms[met] / 1000.0
        acc = r.table.accuracy[r.subnet[met]]
        w = max(1, len(acc) // 200)
        sm = np.convolve(acc, np.ones(w) / w, mode="valid")
        ax.plot(t[w - 1:], sm * 100, label=p, color=colors[p], lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("served accuracy (%, rolling mean over met queries)")
    ax.set_title("Served accuracy over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.append(_save(fig, stem, "accuracy_time"))

    # 3. resident SubGraph timeline
    fig, ax = plt.subplots(figsize=(7, 4.5))
    table = next(iter(results.values())).table
    labels = [table.sg_name(c) for c in range(1 + table.n_sgs)]
    for k, (p, r) in enumerate(results.items()):
        if r.notes.get("bound"):
            continue
        d = ~np.isnan(r.start_ms)
        if not d.any():
            continue
        order = np.argsort(r.start_ms[d])
        ax.step(r.start_ms[d][order] / 1000.0, r.column[d][order] + 0.06 * k, where="post", label=p,
                color=colors[p])
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title("Resident SubGraph (PB contents) over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.append(_save(fig, stem, "subgraph_timeline"))

    # 4. policies on the accuracy-SLO plane
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for p, r in results.items():
        m = r.metrics()
        ax.scatter(m["slo_attainment"] * 100, m["served_accuracy"] * 100, s=60, color=colors[p],
                   marker="*" if p == "oracle" else "o")
        ax.annotate(p, (m["slo_attainment"] * 100, m["served_accuracy"] * 100), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("SLO attainment (%)")
    ax.set_ylabel("served accuracy (%)")
    ax.set_title("Policies on the accuracy–SLO plane (up and right is better)")
    ax.grid(alpha=0.3)
    out.append(_save(fig, stem, "accuracy_slo"))
    return out


def _save(fig, stem: Path, what: str) -> Path:
    import matplotlib.pyplot as plt
    path = stem.parent / f"{stem.name}_{what}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
