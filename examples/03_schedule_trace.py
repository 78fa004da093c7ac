"""03 - serve a bursty query stream: SushiSched against the baselines.

A latency table L[SubNet][SubGraph] (what each SubNet costs with each SubGraph resident in the
Persistent Buffer) and a bursty trace (gamma inter-arrivals, CV 3) with per-query deadlines go
through the discrete-event replay once per policy.  The table is the scheduler's synthetic
OFA-MobileNetV3-like one, or a build's (e.g. example 02's OUT/build).

    .venv/bin/python examples/03_schedule_trace.py [OUT_DIR [BUILD_OR_TABLE]]          (~10 s)
"""
import json
import sys
from pathlib import Path

import numpy as np

from scheduler import POLICIES, generate, load_table, replay, synthetic_table


def main(out_dir="out/examples/03", table=None, load=1.5, queries=4000):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = load_table(table) if table else synthetic_table()
    print(f"table {t.source}: {t.n_subnets} SubNets, {t.n_sgs} SubGraphs, "
          f"accuracy {t.accuracy.min():.3f}..{t.accuracy.max():.3f}")

    # deadlines 1.25 / 2.5 / 5 x the most accurate SubNet's latency (nothing resident), and an
    # arrival rate `load` x what that SubNet alone can sustain (its best SubGraph resident)
    best = int(np.argmax(t.accuracy))
    l_best = float(t.latency[0, best])
    mix = f"{1.25 * l_best:.6g}:0.3,{2.5 * l_best:.6g}:0.4,{5 * l_best:.6g}:0.3"
    rate = load * 1000.0 / float(t.latency[:, best].min())
    trace = generate("bursty", rate_qps=rate, n=queries, seed=1, slo_mix=mix)
    trace.write(out / "trace.csv")                 # the CSV `sushi serve --trace` reads

    # one replay per policy on the same trace (performance-model backend)
    report = {}
    print(f"{queries} queries at {rate:,.0f}/s, SLOs {mix} (ms:weight)")
    print(f"{'policy':11s} {'SLO met':>8s} {'accuracy':>9s} {'served':>7s} {'dropped':>8s} "
          f"{'uJ/query':>9s} {'swaps':>6s}")
    for p in POLICIES:
        m = replay(t, trace, p).metrics()
        report[p] = m
        print(f"{p:11s} {100 * m['slo_attainment']:7.1f}% {100 * m['served_accuracy']:8.2f}% "
              f"{m['served']:7d} {m['dropped']:8d} {m['offchip_energy_uj_per_query'] or 0:9.2f} "
              f"{m['swaps']:6d}")
    (out / "serve.json").write_text(json.dumps(report, indent=1) + "\n")
    return dict(arrivals=queries, rate_qps=rate, table=t.source, policies=report)


if __name__ == "__main__":
    main(*sys.argv[1:3])
