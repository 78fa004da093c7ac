"""`sushi demo`: the whole idea on real data, end to end, with a report a person wants to read.

train (or reuse) the digits SuperNet -> int8 accuracy of every SubNet -> compile the SuperNet
(one weight image, a program per SubNet, SubGraph catalog, latency table) -> generate the
accelerator -> verify on Verilator (largest SubNet cold, smallest with a SubGraph resident) ->
replay a bursty trace with SushiSched and the baselines (performance model), and a part of it
RTL-in-the-loop with real test images -> OUT/report.md with tables and plots.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo"]


def _fmt(v, pct=False):
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.2f} %"
    if isinstance(v, float):
        return f"{v:,.4g}"
    return str(v)


def run_demo(out_dir, config: str = "8x8-pb", epochs: int = 30, queries: int = 2000, rtl_queries: int = 40,
             say=print) -> dict:
    from compiler.supernet import compile_supernet
    from gen.verilog import generate
    from models.quant_eval import evaluate_quantized
    from models.subnets import load_subnets
    from models.train import CALIB_SIZE, SPLIT_SEED, load_digits_split, train
    from scheduler.commands import print_table
    from scheduler.plots import plot_all
    from scheduler.policies import POLICIES
    from scheduler.replay import replay
    from scheduler.tables import load_table
    from scheduler.trace import generate as gen_trace
    from sim.latency import write_latency_table
    from sim.rtl_backend import serve_on_rtl
    from sushi.artifacts import load_build
    from sushi.config import load_config
    from sushi.verify import verify_build

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config)
    times, summary = {}, {"config": cfg.name}
    t_all = time.perf_counter()

    def step(name):
        times[name] = round(time.perf_counter() - step.t0, 1)
        step.t0 = time.perf_counter()
    step.t0 = time.perf_counter()

    # 1. the SuperNet, trained on real scans
    net = out / "digits"
    if (net / "subnets.json").exists():
        say(f"[1/7] reusing the trained SuperNet in {net}")
    else:
        say(f"[1/7] training the digits SuperNet ({epochs} epochs, sandwich rule, delayed shrinking)")
        train(net, epochs=epochs, progress=True)
    man = load_subnets(net / "subnets.json")
    step("train")
    # 2. the SuperNet build
    build = out / "build"
    calib = load_digits_split(SPLIT_SEED)["train"][0][:CALIB_SIZE]
    say(f"[2/7] compiling the SuperNet for {cfg.name}: share analysis, one weight image, SubGraph catalog")
    bm, plan = compile_supernet(net / "supernet.onnx", net / "subnets.json", cfg, build, calib=calib,
                                progress=False, return_plan=True)
    b = load_build(build)
    share = b.share_report()
    step("compile")
    # 3. int8 accuracy of every SubNet as served (the shared weight image), on the whole test split
    say("[3/7] int8 accuracy of every SubNet as served (golden-checked), RTL on a sample")
    q = evaluate_quantized(net / "subnets.json", golden_sample=8, rtl_sample=4, supernet_build=(build, plan))
    write_latency_table(b, accuracy={n: r["accuracy"] for n, r in q.items()})   # int8, measured
    table = load_table(build / "latency_table.json")
    step("int8_eval")
    # 4. the accelerator
    say(f"[4/7] generating the accelerator's Verilog ({cfg.pe_rows}x{cfg.pe_cols} PEs, PB {cfg.pb_bytes} bytes)")
    generate(cfg, out / "rtl")
    step("gen")
    # 5. bit-exact on Verilator
    lg, sm = man.largest().name, man.smallest().name
    sg_for_small = max(b.subgraph_ids, key=lambda s: table.latency[0, table.subnet_index(sm)]
                       - table.latency[table.column(s), table.subnet_index(sm)])
    say(f"[5/7] verifying on Verilator: {lg} (nothing resident) and {sm} ({sg_for_small} resident)")
    v_big = verify_build(build, sim="verilator", n_inputs=2, program=lg).report
    v_small = verify_build(build, sim="verilator", n_inputs=2, program=sm, resident=sg_for_small).report
    step("verify")
    # 6. serving
    lat = table.latency
    cap = 1e3 / lat[0, int(np.argmax(table.accuracy))]           # static-max capacity, queries/s
    slo = lat[0].max()
    mix = f"{1.0 * slo:.4f}:0.3,{2.0 * slo:.4f}:0.4,{4.0 * slo:.4f}:0.3"
    trace = gen_trace("bursty", rate_qps=1.3 * cap, n=queries, seed=7, cv=2.0, slo_mix=mix)
    trace.write(out / "trace.csv")
    say(f"[6/7] replaying {queries} bursty queries ({1.3 * cap:,.0f} q/s, 1.3x static-max capacity) "
        f"with {', '.join(POLICIES)}")
    results = {p: replay(table, trace, p, policy_kw={"period": 128} if p == "sushi" else None) for p in POLICIES}
    report = {p: r.metrics() for p, r in results.items()}
    print_table(report, "policies side by side (performance model, cycle-exact vs RTL)")
    plots = plot_all(results, out / "serve")
    rtl_trace = gen_trace("bursty", rate_qps=1.3 * cap, n=rtl_queries, seed=8, cv=2.0, slo_mix=mix)
    say(f"[6/7] RTL-in-the-loop: {rtl_queries} queries with real test images, sushi and no-pb")
    rtl = serve_on_rtl(table, rtl_trace, build, ["sushi", "no-pb"])
    rtl_report = {p: {**r.metrics(), **{k: v for k, v in r.notes.items() if k.startswith("rtl_")}}
                  for p, r in rtl.items()}
    print_table(rtl_report, "RTL-in-the-loop (every query on Verilator)")
    step("serve")
    # 7. the report
    say("[7/7] writing the report")
    from models.subnets import plot_pareto
    pareto = plot_pareto(load_subnets(net / "subnets.json"), out / "pareto.png",
                         latency={n: table.latency[0, table.subnet_index(n)] for n in table.subnets})
    sgs_png = _plot_sgs(table, out / "sgs_gain.png")
    summary.update(times=times, total_s=round(time.perf_counter() - t_all, 1), verify={lg: v_big, sm: v_small},
                   policies=report, rtl_in_the_loop=rtl_report,
                   share={"tiles": bm["weights"]["n_tiles"], "subgraphs": len(b.subgraph_ids)})
    (out / "demo.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    _write_report(out, man, q, table, share, b, v_big, v_small, lg, sm, sg_for_small, report, rtl_report,
                  times, summary["total_s"], [pareto, sgs_png] + plots)
    summary["ok"] = bool(v_big["bit_exact"] and v_small["bit_exact"])
    return summary


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


def _write_report(out, man, q, table, share, b, v_big, v_small, lg, sm, sg, report, rtl_report, times, total,
                  pngs):
    L = ["# SUSHI demo report", "",
         f"Accelerator `{b.cfg.name}`: {b.cfg.pe_rows}x{b.cfg.pe_cols} int8 PEs, Persistent Buffer "
         f"{b.cfg.pb_bytes} bytes ({b.cfg.pb_tiles} tiles), {b.cfg.clock_mhz:g} MHz. Total time {total:.0f} s "
         f"({', '.join(f'{k} {v:.0f} s' for k, v in times.items())}).", "",
         "## SubNets of the digits SuperNet (real scans, test split of 360 images)", "",
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
    L += ["", "## Policies side by side (bursty trace, performance model)", "",
          "| policy | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for p, m in report.items():
        L.append(f"| {p} | " + " | ".join(_fmt(m.get(c), c in ("served_accuracy", "slo_attainment"))
                                          for c in cols) + " |")
    L += ["", "## RTL-in-the-loop (every query on Verilator with a real test image)", "",
          "| policy | served accuracy (RTL predictions vs labels) | SLO met | queries on RTL | RTL = model latency |",
          "|---|---:|---:|---:|---:|"]
    for p, m in rtl_report.items():
        L.append(f"| {p} | {_fmt(m.get('served_accuracy_measured'), True)} | {_fmt(m['slo_attainment'], True)} | "
                 f"{m.get('rtl_queries')} | {_fmt(m.get('rtl_vs_model_exact_fraction'), True)} |")
    L += [""] + [f"![{p.stem}]({p.name})" for p in pngs[2:]] + [""]
    (out / "report.md").write_text("\n".join(L))
