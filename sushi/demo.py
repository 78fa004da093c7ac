"""`sushi demo`: the whole idea on real data, end to end, with a report a person wants to read.

train (or reuse) the digits SuperNet -> compile the SuperNet (one weight image, a program per
SubNet, SubGraph catalog, latency table) -> int8 accuracy of every SubNet as served -> generate the
accelerator -> verify on Verilator (largest SubNet cold, smallest with a SubGraph resident) ->
replay a bursty trace with SushiSched and the baselines (performance model), and a part of it
RTL-in-the-loop with real test images -> OUT/report.md with tables and plots.

Two lanes run at once (the machine this was measured on has two cores): the main process trains,
compiles, evaluates and replays; one worker process generates the Verilog and builds the Verilator
model while the SuperNet trains, then verifies on Verilator, then runs one policy RTL-in-the-loop
while the main process runs the other.  The RTL work uses one Verilog file and one Verilator
build throughout.  On a second run the trained SuperNet is reused and the compile + int8
evaluation are reused when their inputs (SuperNet files, configuration, calibration images and
the source of the code that produces them) hash to the same key; Verilator verification and
RTL-in-the-loop always run.  BLAS is limited to one thread: on two shared cores the
multi-threaded OpenBLAS was measured ~10x slower on the compiler's small matrices (44 s vs 4 s).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo", "inputs_key"]

REPO = Path(__file__).resolve().parent.parent
#: bump when what the cache holds changes
CACHE_VERSION = 1
CACHE_FILE = "demo_cache.json"
#: the simulated DRAM of every RTL run of the demo (verify and serve_on_rtl pick the same size for
#: a build below 2 MiB), so the Verilator model built in the background is the one they use
RTL_DRAM_BYTES = 1 << 21
#: code whose change invalidates a cached compile + int8 evaluation
_CODE_DIRS = ("compiler", "sim", "sushi", "models")
_ENV_1T = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _fmt(v, pct=False):
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.2f} %"
    if isinstance(v, float):
        return f"{v:,.4g}"
    return str(v)


from sushi.blas import one_blas_thread as _one_blas_thread   # noqa: E402


@contextlib.contextmanager
def _env(extra: dict):
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _reuse_verilog(cfg, verilog):
    """RtlSim instances made inside this block (sim.rtl_backend.serve_on_rtl makes its own) take
    ``verilog`` -- this process's gen.verilog.generate(cfg) output -- instead of elaborating the
    same accelerator again (~4 s each).  Any other configuration is generated as usual."""
    import sim.rtl as rtl
    orig = getattr(rtl, "_accel_verilog", None)
    if orig is None or verilog is None:
        yield
        return
    want = json.dumps(cfg.to_json(), sort_keys=True)

    def cached(c, out_dir, *a, **kw):
        if json.dumps(c.to_json(), sort_keys=True) == want:
            return Path(verilog)
        return orig(c, out_dir, *a, **kw)
    rtl._accel_verilog = cached
    try:
        yield
    finally:
        rtl._accel_verilog = orig


# ------------------------------------------------------------------ the worker lane (RTL)
def _worker_init(env: dict) -> None:
    os.environ.update(env)
    from sushi import tools
    tools.setup()
    _one_blas_thread()          # (libraries loaded later read OPENBLAS_NUM_THREADS=1 from env)


def _rtl_prepare(cfg, rtl_dir: str) -> dict:
    """Generate the accelerator's Verilog and build (or find cached) its Verilator model."""
    from gen.verilog import generate
    from sim.rtl import RtlSim
    t0 = time.perf_counter()
    v = generate(cfg, rtl_dir)
    t1 = time.perf_counter()
    rs = RtlSim(cfg, accel_verilog=v, dram_bytes=RTL_DRAM_BYTES)
    bdir = rs.build()
    t2 = time.perf_counter()
    stamp = Path(bdir) / "BUILD_OK"
    cached = stamp.exists() and stamp.stat().st_mtime < t1 + time.time() - time.perf_counter()
    return {"verilog": str(v), "gen_s": round(t1 - t0, 1), "verilator_s": round(t2 - t1, 1),
            "verilator_cached": bool(cached), "verilator_dir": str(bdir)}


def _rtl_verify(build: str, verilog: str, lg: str, sm: str, sg: str) -> dict:
    """Bit-exact on Verilator: the largest SubNet with nothing resident, the smallest with ``sg``."""
    from sushi.verify import verify_build
    t0 = time.perf_counter()
    opts = {"accel_verilog": verilog}
    big = verify_build(build, sim="verilator", n_inputs=2, program=lg, rtl_options=dict(opts)).report
    small = verify_build(build, sim="verilator", n_inputs=2, program=sm, resident=sg, rtl_options=dict(opts)).report
    return {"big": big, "small": small, "s": round(time.perf_counter() - t0, 1)}


def _rtl_serve(cfg, build: str, verilog: str, trace_csv: str, policies: list) -> dict:
    """RTL-in-the-loop for ``policies``: every query on Verilator with a real test image."""
    from scheduler.tables import load_table
    from scheduler.trace import read_trace
    from sim.rtl_backend import serve_on_rtl
    t0 = time.perf_counter()
    table = load_table(Path(build) / "latency_table.json")
    with _reuse_verilog(cfg, verilog):
        rtl = serve_on_rtl(table, read_trace(trace_csv), build, policies)
    rep = {p: {**r.metrics(), **{k: v for k, v in r.notes.items() if k.startswith("rtl_")}} for p, r in rtl.items()}
    return {"report": rep, "s": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------ the cache of compile + int8 eval
def inputs_key(net, cfg, calib) -> str:
    """What a compile + int8 evaluation depends on: the SuperNet's ONNX files, its SubNet list (without
    the `quantized` results the evaluation writes back), the accelerator configuration, the
    calibration images and the source of compiler/, sim/, sushi/ and models/."""
    net = Path(net)
    h = hashlib.sha256(f"demo-cache v{CACHE_VERSION}\0".encode())
    h.update(json.dumps(cfg.to_json(), sort_keys=True).encode() + b"\0")
    h.update(np.ascontiguousarray(calib).tobytes())
    raw = json.loads((net / "subnets.json").read_text())
    subs = [{k: v for k, v in s.items() if k != "quantized"} for s in raw.get("subnets", [])]
    h.update(json.dumps(subs, sort_keys=True).encode() + b"\0")
    for p in sorted(net.glob("*.onnx")) + sorted(net.glob("subnets/*.onnx")):
        h.update(str(p.relative_to(net)).encode() + b"\0" + p.read_bytes())
    for d in _CODE_DIRS:
        for p in sorted((REPO / d).rglob("*.py")):
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:24]


def _cached(build: Path, key: str):
    f = build / CACHE_FILE
    try:
        c = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if c.get("key") != key or not (build / "latency_table.json").exists() or not (build / "manifest.json").exists():
        return None
    return c


# ------------------------------------------------------------------ the demo
def run_demo(out_dir, config: str = "8x8-pb", epochs: int = 30, queries: int = 2000, rtl_queries: int = 40,
             say=print, reuse: bool = True) -> dict:
    """Run the demo into ``out_dir``; returns the summary written to OUT/demo.json.  ``reuse``: reuse a
    trained SuperNet and a compile + int8 evaluation whose inputs are unchanged (a warm run)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    from sushi import tools
    from sushi.config import load_config

    tools.setup()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config)
    phases = {}          # name -> {"s", "lane", "status", ...}
    summary = {"config": cfg.name, "cores": os.cpu_count(), "load_avg_start": _loadavg()}
    t_all = time.perf_counter()

    def phase(name, s, lane="main", status="ran", **kw):
        phases[name] = {"s": round(float(s), 1), "lane": lane, "status": status, **kw}

    with _env(_ENV_1T):       # the worker and every simulator process start with one BLAS thread
        ex = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(dict(os.environ),))
        try:
            with _one_blas_thread():
                res = _run(out, cfg, epochs, queries, rtl_queries, say, reuse, ex, phase)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
    render, t_report = res.pop("_render"), res.pop("_t_report")
    summary.update(res)
    phase("report", time.perf_counter() - t_report)
    summary.update(total_s=round(time.perf_counter() - t_all, 1), load_avg_end=_loadavg(), phases=phases,
                   times={k: v["s"] for k, v in phases.items()})
    (out / "demo.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    _write_report(out, summary, render)
    return summary


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _run(out, cfg, epochs, queries, rtl_queries, say, reuse, ex, phase) -> dict:
    from compiler.supernet import compile_supernet
    from models.quant_eval import evaluate_quantized
    from models.subnets import load_subnets, plot_pareto
    from models.train import CALIB_SIZE, SPLIT_SEED, load_digits_split, train
    from scheduler.commands import print_table
    from scheduler.plots import plot_all
    from scheduler.policies import POLICIES
    from scheduler.replay import replay
    from scheduler.tables import load_table
    from scheduler.trace import generate as gen_trace
    from sim.latency import write_latency_table
    from sushi.artifacts import load_build

    # the worker lane starts at once: the Verilog and the Verilator model do not depend on the SuperNet
    verilog = str(out / "rtl" / "sushi_accel.v")
    f_rtl = ex.submit(_rtl_prepare, cfg, str(out / "rtl"))
    say(f"[bg]  in the background: the accelerator's Verilog ({cfg.pe_rows}x{cfg.pe_cols} PEs, PB {cfg.pb_bytes} "
        "bytes) and its Verilator model, then verification")
    # 1. the SuperNet, trained on real scans
    t = time.perf_counter()
    net = out / "digits"
    if reuse and (net / "subnets.json").exists():
        say(f"[1/7] reusing the trained SuperNet in {net}")
        status = "reused"
    else:
        say(f"[1/7] training the digits SuperNet ({epochs} epochs, sandwich rule, delayed shrinking)")
        train(net, epochs=epochs, progress=True)
        status = "ran"
    man = load_subnets(net / "subnets.json")
    trained = json.loads((net / "subnets.json").read_text()).get("training", {})
    phase("train", time.perf_counter() - t, status=status, epochs=trained.get("epochs"))
    lg, sm = man.largest().name, man.smallest().name
    # 2. the SuperNet build and 3. the int8 accuracy of every SubNet as served: cached together
    t = time.perf_counter()
    build = out / "build"
    calib = load_digits_split(SPLIT_SEED)["train"][0][:CALIB_SIZE]
    key = inputs_key(net, cfg, calib)
    hit = _cached(build, key) if reuse else None
    if hit:
        say(f"[2/7] reusing the SuperNet build in {build} (SuperNet, configuration and code unchanged: key {key})")
        b = load_build(build)
        sg_small = _best_subgraph(b, load_table(build / "latency_table.json"), sm)
        f_verify = ex.submit(_rtl_verify, str(build), verilog, lg, sm, sg_small)
        phase("compile", time.perf_counter() - t, status="cached", ran_s=hit["compile_s"])
        say("[3/7] reusing the int8 accuracy of every SubNet (same key)")
        q = hit["int8"]
        phase("int8_eval", 0.0, status="cached", ran_s=hit["int8_s"])
    else:
        (build / CACHE_FILE).unlink(missing_ok=True)
        say(f"[2/7] compiling the SuperNet for {cfg.name}: share analysis, one weight image, SubGraph catalog")
        _, plan = compile_supernet(net / "supernet.onnx", net / "subnets.json", cfg, build, calib=calib,
                                   progress=False, return_plan=True)
        b = load_build(build)
        write_latency_table(b)        # predicted latencies (accuracy column: float, replaced below)
        sg_small = _best_subgraph(b, load_table(build / "latency_table.json"), sm)
        # verification needs only the build: the worker runs it while the int8 evaluation runs here
        f_verify = ex.submit(_rtl_verify, str(build), verilog, lg, sm, sg_small)
        compile_s = time.perf_counter() - t
        phase("compile", compile_s)
        t = time.perf_counter()
        say("[3/7] int8 accuracy of every SubNet as served (whole test split, golden-checked)")
        q = evaluate_quantized(net / "subnets.json", golden_sample=8, rtl_sample=0, supernet_build=(build, plan))
        write_latency_table(b, accuracy={n: r["accuracy"] for n, r in q.items()})   # int8, measured
        int8_s = time.perf_counter() - t
        phase("int8_eval", int8_s)
        (build / CACHE_FILE).write_text(json.dumps({"key": key, "compile_s": round(compile_s, 1),
                                                    "int8_s": round(int8_s, 1), "int8": q}, indent=1) + "\n")
    table = load_table(build / "latency_table.json")
    share = b.share_report()
    # 4. serving on the performance model
    t = time.perf_counter()
    lat = table.latency
    cap = 1e3 / lat[0, int(np.argmax(table.accuracy))]           # static-max capacity, queries/s
    slo = lat[0].max()
    mix = f"{1.0 * slo:.4f}:0.3,{2.0 * slo:.4f}:0.4,{4.0 * slo:.4f}:0.3"
    trace = gen_trace("bursty", rate_qps=1.3 * cap, n=queries, seed=7, cv=2.0, slo_mix=mix)
    trace.write(out / "trace.csv")
    gen_trace("bursty", rate_qps=1.3 * cap, n=rtl_queries, seed=8, cv=2.0, slo_mix=mix).write(out / "trace_rtl.csv")
    say(f"[4/7] replaying {queries} bursty queries ({1.3 * cap:,.0f} q/s, 1.3x static-max capacity) "
        f"with {', '.join(POLICIES)}")
    results = {p: replay(table, trace, p, policy_kw={"period": 128} if p == "sushi" else None) for p in POLICIES}
    report = {p: r.metrics() for p, r in results.items()}
    print_table(report, "policies side by side (performance model, cycle-exact vs RTL)")
    plots = plot_all(results, out / "serve")
    pareto = plot_pareto(load_subnets(net / "subnets.json"), out / "pareto.png",
                         latency={n: table.latency[0, table.subnet_index(n)] for n in table.subnets})
    sgs_png = _plot_sgs(table, out / "sgs_gain.png")
    phase("serve_model", time.perf_counter() - t, note="replay of every policy and the plots")
    # the worker's Verilog and Verilator model
    rtl = f_rtl.result()
    phase("gen", rtl["gen_s"], lane="worker")
    phase("verilator_build", rtl["verilator_s"], lane="worker", status="cached" if rtl["verilator_cached"] else "ran")
    # 6. RTL-in-the-loop: sushi on the worker (after verification), no-pb here, one Verilator process each
    say(f"[6/7] RTL-in-the-loop: {rtl_queries} queries with real test images, sushi (background) and no-pb")
    f_serve = ex.submit(_rtl_serve, cfg, str(build), rtl["verilog"], str(out / "trace_rtl.csv"), ["sushi"])
    here = _rtl_serve(cfg, str(build), rtl["verilog"], str(out / "trace_rtl.csv"), ["no-pb"])
    phase("serve_rtl_no_pb", here["s"])
    # 5. bit-exact on Verilator (ran on the worker since the compile finished)
    v = f_verify.result()
    say(f"[5/7] bit-exact on Verilator (golden model, onnxruntime): {lg} (nothing resident) bit_exact={v['big']['bit_exact']}, "
        f"{sm} ({sg_small} resident) bit_exact={v['small']['bit_exact']}")
    phase("verify", v["s"], lane="worker")
    there = f_serve.result()
    phase("serve_rtl_sushi", there["s"], lane="worker")
    rtl_report = {**there["report"], **here["report"]}
    print_table(rtl_report, "RTL-in-the-loop (every query on Verilator)")
    say("[7/7] writing the report")
    ok = bool(v["big"]["bit_exact"] and v["small"]["bit_exact"])
    return {"ok": ok, "verify": {lg: v["big"], sm: v["small"]}, "policies": report, "rtl_in_the_loop": rtl_report,
            "share": {"tiles": b.manifest["weights"]["n_tiles"], "subgraphs": len(b.subgraph_ids)},
            "cache_key": key, "verilator_dir": rtl["verilator_dir"], "queries": queries, "rtl_queries": rtl_queries,
            "training": {k: trained.get(k) for k in ("epochs", "seconds", "steps", "shrink")},
            "_render": (man, q, table, share, b, lg, sm, sg_small, [pareto, sgs_png] + plots),
            "_t_report": time.perf_counter()}


def _best_subgraph(b, table, sm):
    """The SubGraph that saves the smallest SubNet the most predicted latency."""
    return max(b.subgraph_ids, key=lambda s: table.latency[0, table.subnet_index(sm)]
               - table.latency[table.column(s), table.subnet_index(sm)])


def _plot_sgs(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lat = table.latency
    names = table.subnets
    order = np.argsort(lat[0])
    best = lat[1:].min(axis=0) if lat.shape[0] > 1 else lat[0]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, lat[0][order], 0.4, label="nothing resident")
    ax.bar(x + 0.2, best[order], 0.4, label="best SubGraph resident")
    ax.set_xticks(x, [names[i] for i in order], rotation=90, fontsize=6)
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title("SubGraph Stationary: latency per SubNet with and without its best SubGraph")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _write_report(out, summary, render):
    man, q, table, share, b, lg, sm, sg, pngs = render
    v_big, v_small = summary["verify"][lg], summary["verify"][sm]
    report, rtl_report, phases = summary["policies"], summary["rtl_in_the_loop"], summary["phases"]
    total = summary["total_s"]
    la0, la1 = summary.get("load_avg_start"), summary.get("load_avg_end")
    tr = summary.get("training") or {}
    L = ["# SUSHI demo report", "",
         f"Accelerator `{b.cfg.name}`: {b.cfg.pe_rows}x{b.cfg.pe_cols} int8 PEs, Persistent Buffer "
         f"{b.cfg.pb_bytes} bytes ({b.cfg.pb_tiles} tiles), {b.cfg.clock_mhz:g} MHz.  Wall time {total:.0f} s on "
         f"{summary.get('cores')} cores (load average {la0[0] if la0 else '-'} at the start, "
         f"{la1[0] if la1 else '-'} at the end).", "",
         "| phase | lane | wall (s) | status |", "|---|---|---:|---|"]
    for name, p in phases.items():
        st = p["status"] + (f" (ran in {p['ran_s']:.0f} s)" if p.get("ran_s") is not None else "")
        if name == "train" and p.get("epochs"):
            st += f", {p['epochs']} epochs"
        L.append(f"| {name} | {p['lane']} | {p['s']:.1f} | {st} |")
    L += ["", "The worker lane (Verilog, Verilator build, verification, RTL-in-the-loop for `sushi`) runs beside "
          "the main lane, so the phases add up to more than the wall time.  `cached`: the compile and int8 "
          "evaluation of an earlier run whose inputs (SuperNet files, configuration, calibration images, code) "
          f"hash to the same key (`{summary.get('cache_key')}`).", "",
          "## SubNets of the digits SuperNet (real scans, test split of 360 images)", "",
          f"SuperNet trained {tr.get('epochs', '-')} epochs ({tr.get('seconds', '-')} s of training steps).", "",
          "| SubNet | MACs | float acc | int8 acc | predicted latency (ms) |", "|---|---:|---:|---:|---:|"]
    for s in sorted(man.subnets, key=lambda s: s.macs):
        qq = q.get(s.name, {})
        L.append(f"| `{s.name}` | {s.macs:,} | {100 * s.accuracy:.2f} | "
                 f"{_fmt(qq.get('accuracy'), True)} | {table.latency[0, table.subnet_index(s.name)]:.4f} |")
    n_shared = sum(1 for sub in share.get("subnets", {}).values() for L_ in sub.get("layers", [])
                   if L_.get("shared")) if isinstance(share.get("subnets"), dict) else None
    L += ["", "![Pareto front](pareto.png)", "",
          "## SubGraph Stationary", "",
          f"One weight image of {b.manifest['weights']['n_tiles']} tiles serves every SubNet "
          f"(shared tensors: {n_shared if n_shared is not None else 'see share.json'}); the catalog holds "
          f"{len(b.subgraph_ids)} SubGraphs.", "",
          "![SGS gain](sgs_gain.png)", "",
          "## Bit-exact on Verilator", "",
          "| SubNet | resident | bit_exact | cycles | DRAM weight bytes | without PB | PB hits | onnx top-1 |",
          "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, v, res in ((lg, v_big, "none"), (sm, v_small, sg)):
        L.append(f"| `{name}` | {res} | {v['bit_exact']} | {v['cycles']:,.0f} | {v['dram_weight_bytes']:,.0f} | "
                 f"{_fmt(v.get('dram_weight_bytes_no_pb'))} | {v['pb_hits']:,.0f} | {v['onnx_top1_agreement']:.2f} |")
    cols = ["served_accuracy", "slo_attainment", "p50_ms", "p99_ms", "served", "dropped",
            "offchip_energy_uj_per_query", "swaps"]
    L += ["", f"## Policies side by side (bursty trace of {summary.get('queries')} queries, performance model)", "",
          "| policy | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for p, m in report.items():
        L.append(f"| {p} | " + " | ".join(_fmt(m.get(c), c in ("served_accuracy", "slo_attainment"))
                                          for c in cols) + " |")
    L += ["", f"## RTL-in-the-loop (every query on Verilator with a real test image; "
              f"{summary.get('rtl_queries')} queries)", "",
          "| policy | served accuracy (RTL predictions vs labels) | SLO met | queries on RTL | RTL = model latency |",
          "|---|---:|---:|---:|---:|"]
    for p, m in rtl_report.items():
        L.append(f"| {p} | {_fmt(m.get('served_accuracy_measured'), True)} | {_fmt(m['slo_attainment'], True)} | "
                 f"{m.get('rtl_queries')} | {_fmt(m.get('rtl_vs_model_exact_fraction'), True)} |")
    L += [""] + [f"![{p.stem}]({p.name})" for p in pngs[2:]] + [""]
    (out / "report.md").write_text("\n".join(L))
