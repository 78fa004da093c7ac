"""`sushi trace` and `sushi serve`: registered on the sushi CLI by `add_commands(subparsers)`.

User errors raise SchedulerError (the CLI prints it and exits with status 2).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import SchedulerError
from .trace import DEFAULT_SLO_MIX, KINDS

POLICY_CHOICES = ("sushi", "no-pb", "fixed", "slackfit", "static-max", "static-min", "oracle", "all")
JSON_KEYS = ("served_accuracy", "slo_attainment", "p50_ms", "p99_ms", "served", "dropped",
             "offchip_bytes_per_query", "offchip_energy_uj_per_query", "swaps")


def add_commands(subparsers) -> None:
    t = subparsers.add_parser("trace", help="generate a query trace (CSV: arrival_s,slo_ms[,min_accuracy])",
                              description="Generate a query trace; the format is in docs/traces.md.")
    t.add_argument("kind", choices=list(KINDS) + ["bursty"],
                   help="arrival process (bursty = gamma inter-arrivals)")
    t.add_argument("-o", "--output", required=True, metavar="FILE.csv")
    t.add_argument("--rate", type=float, required=True, metavar="QPS", help="mean arrival rate, queries/s")
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--queries", type=int, metavar="N", help="number of queries")
    g.add_argument("--duration", type=float, metavar="S", help="trace length in seconds")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--cv", type=float, default=3.0, help="gamma: coefficient of variation of inter-arrivals (default 3)")
    t.add_argument("--burst", type=float, default=4.0, help="mmpp: high/low rate ratio (default 4)")
    t.add_argument("--high-frac", type=float, default=0.2, help="mmpp: fraction of time in the high state (default 0.2)")
    t.add_argument("--dwell", type=float, default=0.5, metavar="S", help="mmpp: mean low-state dwell, s (default 0.5)")
    t.add_argument("--period", type=float, default=60.0, metavar="S", help="diurnal: period, s (default 60)")
    t.add_argument("--amplitude", type=float, default=0.5, help="diurnal: relative amplitude 0..1 (default 0.5)")
    t.add_argument("--slo-mix", default=DEFAULT_SLO_MIX, metavar="MS:W,...|LO-HI",
                   help=f"SLO mix in ms with weights, or a uniform range (default {DEFAULT_SLO_MIX})")
    t.add_argument("--slo-scale", type=float, default=1.0, help="multiply every SLO (default 1)")
    t.add_argument("--min-accuracy", type=float, metavar="A", help="accuracy floor (0..1) given to some queries")
    t.add_argument("--floor-frac", type=float, default=0.0, metavar="P",
                   help="fraction of queries with the floor (default 0; 1 if --min-accuracy alone)")
    t.set_defaults(func=cmd_trace)

    s = subparsers.add_parser("serve", help="replay a trace against scheduling policies and report",
                              description="Replay a trace on the latency table of a build; see docs/scheduler.md.")
    s.add_argument("--trace", required=True, metavar="FILE.csv")
    s.add_argument("--build", required=True, metavar="OUT", help="directory holding latency_table.json")
    s.add_argument("--policy", choices=POLICY_CHOICES, default="all")
    s.add_argument("--backend", default="model",
                   help="model (the latency table) or rtl (every query on the Verilator RTL with a digits test "
                        "image; needs a SuperNet build of the digits SuperNet)")
    s.add_argument("--json", metavar="FILE", help="write the metrics as JSON (plots as PNG beside it)")
    s.add_argument("--fallback", choices=("drop", "fastest"), default="drop",
                   help="a query no SubNet can serve in time: drop it, or serve the fastest late (default drop)")
    s.add_argument("--queue-cap", type=int, metavar="N", help="bound on waiting queries (default unbounded)")
    s.add_argument("--accelerators", type=int, default=1, metavar="N")
    s.add_argument("--period", type=int, default=256, metavar="Q", help="sushi: re-choose the SubGraph every Q queries")
    s.add_argument("--no-plots", action="store_true")
    s.set_defaults(func=cmd_serve)


def cmd_trace(args) -> int:
    from .trace import generate
    floor_frac = args.floor_frac
    if args.min_accuracy is not None and not floor_frac:
        floor_frac = 1.0
    tr = generate(args.kind, rate_qps=args.rate, n=args.queries, duration_s=args.duration, seed=args.seed,
                  cv=args.cv, burst=args.burst, high_frac=args.high_frac, mean_dwell_s=args.dwell,
                  period_s=args.period, amplitude=args.amplitude, slo_mix=args.slo_mix, slo_scale=args.slo_scale,
                  floor=args.min_accuracy, floor_frac=floor_frac)
    out = Path(args.output)
    if out.parent and not out.parent.exists():
        raise SchedulerError(f"-o: directory {out.parent} does not exist")
    tr.write(out)
    _console().print(f"[green]wrote[/green] {out}: {len(tr)} queries, {tr.duration_s:.3f} s, "
                     f"{tr.rate_qps:,.1f} queries/s, SLO mean {tr.slo_ms.mean():.3g} ms")
    return 0


def run_serve(trace_path, build, policy="all", backend="model", fallback="drop", queue_cap=None,
              n_accel=1, period=256) -> dict:
    """Load inputs, replay; returns {policy: ReplayResult}."""
    from .backend import make_backend
    from .policies import POLICIES
    from .replay import replay
    from .tables import load_table
    from .trace import read_trace
    build = Path(build)
    if not build.is_dir():
        raise SchedulerError(f"--build: {build} is not a directory")
    if not (build / "latency_table.json").exists():
        raise SchedulerError(f"--build: {build / 'latency_table.json'} does not exist")
    table = load_table(build / "latency_table.json")
    trace = read_trace(trace_path)
    if policy not in POLICY_CHOICES:
        raise SchedulerError(f"unknown policy {policy!r}; policies: {', '.join(POLICY_CHOICES)}")
    if period < 1:
        raise SchedulerError(f"--period must be >= 1, got {period}")
    names = list(POLICIES) if policy == "all" else [policy]
    if backend == "rtl":
        # RTL-in-the-loop lives in sim/ (the scheduler never sees RTL internals)
        from sim.rtl_backend import serve_on_rtl
        return serve_on_rtl(table, trace, build, names, queue_cap=queue_cap, fallback=fallback, period=period,
                            progress=lambda m: _console().print(f"[cyan]…[/cyan] {m}"))
    be = make_backend(backend, table)
    return {p: replay(table, trace, p, be, n_accel=n_accel, queue_cap=queue_cap, fallback=fallback,
                      policy_kw={"period": period} if p == "sushi" else None) for p in names}


def cmd_serve(args) -> int:
    results = run_serve(args.trace, args.build, args.policy, args.backend, args.fallback, args.queue_cap,
                        args.accelerators, args.period)
    report = {p: {**r.metrics(), **{k: v for k, v in r.notes.items() if k.startswith("rtl_")}}
              for p, r in results.items()}
    print_table(report, f"sushi serve {args.trace} on {args.build}")
    if args.json:
        path = Path(args.json)
        if not path.parent.exists():
            raise SchedulerError(f"--json: directory {path.parent} does not exist")
        path.write_text(json.dumps(report, indent=2) + "\n")
        msg = f"[green]wrote[/green] {path}"
        if not args.no_plots:
            from .plots import plot_all
            pngs = plot_all(results, path.with_suffix(""))
            msg += " and " + ", ".join(p.name for p in pngs)
        _console().print(msg)
    return 0


def print_table(report: dict, title: str) -> None:
    from rich.table import Table
    t = Table(title=title)
    t.add_column("policy")
    cols = [("served_accuracy", "accuracy %", lambda v: f"{100 * v:.2f}"),
            ("slo_attainment", "SLO met %", lambda v: f"{100 * v:.2f}"),
            ("p50_ms", "p50 ms", lambda v: f"{v:.3f}"), ("p99_ms", "p99 ms", lambda v: f"{v:.3f}"),
            ("served_accuracy_measured", "measured %", lambda v: f"{100 * v:.2f}"),
            ("served", "served", str), ("dropped", "dropped", str),
            ("offchip_bytes_per_query", "off-chip B/q", lambda v: f"{v:,.0f}"),
            ("offchip_energy_uj_per_query", "µJ/q", lambda v: f"{v:,.1f}"), ("swaps", "swaps", str)]
    for _, h, _f in cols:
        t.add_column(h, justify="right")
    for p, m in report.items():
        t.add_row(p + (" (bound)" if p == "oracle" else ""),
                  *[("-" if m.get(k) is None else f(m[k])) for k, _, f in cols])
    _console().print(t)


def _console():
    from rich.console import Console
    return Console(stderr=True)
