"""The `sushi` command line: compile, gen, verify, demo.  Errors in user input exit with status 2."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from . import __version__

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
#: exception types that mean "bad user input": one clear line and exit status 2
USER_ERROR_TYPES = [("compiler.errors", "CompileError"), ("sushi.artifacts", "BuildError"),
                    ("models.subnets", "ManifestError"), ("scheduler.errors", "SchedulerError"),
                    ("boards.build", "BoardError"), ("sushi.runtime.device", "DeviceError"), ("sushi.runtime.transport", "LinkError")]


class UserError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


def _console():
    from rich.console import Console
    return Console(stderr=True)


def _progress(msg: str) -> None:
    _console().print(f"[cyan]…[/cyan] {msg}")


# ---------------------------------------------------------------- commands
def cmd_compile(args) -> int:
    from sushi.config import load_config
    from compiler import compile_onnx
    cfg = load_config(args.config)
    calib = None
    if args.calib:
        calib = Path(args.calib)
        if not calib.exists():
            raise UserError(f"--calib: file {calib} does not exist")
    model = Path(args.model)
    if not model.exists():
        raise UserError(f"model file {model} does not exist")
    t0 = time.perf_counter()
    if args.subnets:
        from compiler.supernet import compile_supernet
        spec = Path(args.subnets)
        if not spec.exists():
            raise UserError(f"--subnets: SubNet manifest {spec} does not exist")
        man = compile_supernet(model, spec, cfg, args.output, calib=calib)
        from sim.latency import write_latency_table
        from sushi.artifacts import load_build
        lt = write_latency_table(load_build(args.output))
        _console().print(f"[green]compiled[/green] SuperNet {model} with {len(man['programs'])} SubNets -> "
                         f"{args.output}: {man['weights']['n_tiles']} tiles in one weight image, "
                         f"{len(man.get('subgraphs', {}))} SubGraphs in the catalog, latency table {lt} "
                         f"({time.perf_counter() - t0:.1f} s)")
        return 0
    man = compile_onnx(model, cfg, args.output, calib=calib)
    prog = man["programs"]["main"]
    _console().print(f"[green]compiled[/green] {model} -> {args.output}: {prog['n_instrs']} instructions, "
                     f"{man['weights']['n_tiles']} tiles, {prog['macs']:,} MACs "
                     f"({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_gen(args) -> int:
    from sushi.config import load_config
    from gen.verilog import generate
    cfg = load_config(args.config)
    t0 = time.perf_counter()
    path = generate(cfg, Path(args.output))
    _console().print(f"[green]generated[/green] {path} and {Path(args.output) / 'accel.json'} "
                     f"({cfg.pe_rows}x{cfg.pe_cols} PEs, {time.perf_counter() - t0:.1f} s)")
    return 0


def _rtl_options(args) -> dict:
    opts = {}
    if getattr(args, "waves", False):
        opts["waves"] = True
    return opts


def cmd_verify(args) -> int:
    from sushi.verify import verify_build
    out = Path(args.build)
    if not (out / "manifest.json").exists():
        raise UserError(f"{out} is not a build directory: {out / 'manifest.json'} does not exist "
                        f"(run 'sushi compile MODEL.onnx -o {out}' first)")
    if args.inputs < 1:
        raise UserError(f"--inputs must be at least 1, not {args.inputs}")
    from sushi.artifacts import load_build
    b = load_build(out)
    program = args.subnet or "main"
    b.program(program)                      # names the available SubNets if it does not exist
    if args.resident is not None:
        b.subgraph(args.resident)           # names the available SubGraphs if it does not exist
    res = verify_build(out, sim=args.sim, n_inputs=args.inputs, rtl_options=_rtl_options(args),
                       progress=_progress, program=program, resident=args.resident)
    rep = res.report
    _print_report(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0 if rep["bit_exact"] else 1


def _print_report(rep: dict) -> None:
    from rich.table import Table
    t = Table(title=f"sushi verify {rep['build']} ({rep['sim']})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("bit_exact", "mismatched_bytes", "counters_match", "cycles", "cycles_estimate", "macs",
              "pe_utilization", "dram_weight_bytes", "dram_weight_bytes_no_pb", "pb_hits", "pb_misses",
              "dram_act_bytes", "onnx_max_abs_err",
              "onnx_output_range", "onnx_top1_agreement", "sim_cycles_per_s"):
        v = rep.get(k)
        if isinstance(v, float):
            v = f"{v:,.4g}"
        style = "" if k != "bit_exact" else ("green" if rep[k] else "bold red")
        t.add_row(k, f"[{style}]{v}[/{style}]" if style else str(v))
    _console().print(t)
    for d in rep.get("counter_diffs", []):
        _console().print(f"[red]counter mismatch[/red] {d}")


def cmd_bench(args) -> int:
    """`sushi bench sgs OUT --json FILE [--quick]`: the SubGraph Stationary benchmark (bench/sgs.py)."""
    from bench import sgs
    argv = [args.out, "--json", args.json] + (["--quick"] if args.quick else []) + \
        (["--no-rtl"] if args.no_rtl else [])
    return sgs.main(argv)


def cmd_train(args) -> int:
    from models.train import train
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    res = train(args.output, epochs=args.epochs, seed=args.seed, shrink=args.shrink, progress=True,
                n_subnets=args.subnets)
    _console().print(f"[green]trained[/green] {res['n_subnets']} SubNets in {res['total_seconds']:.0f} s: "
                     f"largest {res['largest']['test_accuracy']:.2%} ({res['largest']['macs']:,} MACs), "
                     f"smallest {res['smallest']['test_accuracy']:.2%} ({res['smallest']['macs']:,} MACs); "
                     f"manifest {res['manifest']}")
    if not args.no_quant:
        from models.quant_eval import evaluate_quantized
        _progress(f"int8 accuracy of every SubNet on preset {args.config} (golden-checked; RTL on a sample)")
        q = evaluate_quantized(res["manifest"], cfg=args.config, progress=True)
        big = q[res["largest"]["name"]]
        worst = max(v["drop_pp"] for v in q.values())
        _console().print(f"[green]int8[/green]: largest SubNet {big['accuracy']:.2%} "
                         f"(float {big['float_accuracy']:.2%}), worst drop {worst:.2f} pp; RTL sample "
                         + ", ".join(f"{k}: {v['rtl']['accuracy']:.0%} bit-exact={v['rtl']['bit_exact']}"
                                     for k, v in q.items() if "rtl" in v))
    return 0


def cmd_demo(args) -> int:
    """The main job: the whole flow on the digits SuperNet, with a report."""
    from sushi.demo import run_demo
    summary = run_demo(args.output, config=args.config, epochs=args.epochs, queries=args.queries,
                       rtl_queries=args.rtl_queries, say=_progress)
    out = Path(args.output)
    _console().print(("[bold green]demo passed[/bold green]" if summary["ok"] else "[bold red]demo FAILED[/bold red]")
                     + f" in {summary['total_s']:.0f} s: report {out / 'report.md'}, results {out / 'demo.json'}")
    return 0 if summary["ok"] else 1


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sushi", description="SUSHI: SubGraph-Stationary serving of "
                                "weight-shared neural networks on FPGAs.")
    p.add_argument("--version", action="version", version=f"sushi {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("compile", help="compile an ONNX model into int8 tiles, a program and a manifest")
    c.add_argument("model", metavar="MODEL.onnx")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="build directory to write")
    c.add_argument("--config", default="8x8", metavar="PRESET|FILE.json", help="accelerator configuration")
    c.add_argument("--calib", metavar="FILE.npz", help="calibration inputs (N x C x H x W float)")
    c.add_argument("--subnets", metavar="SPEC",
                   help="SubNet manifest (subnets.json): compile the SuperNet with one program per SubNet, "
                        "the share report and the SubGraph catalog")
    c.set_defaults(func=cmd_compile)

    g = sub.add_parser("gen", help="generate the accelerator's Verilog and accel.json")
    g.add_argument("--config", default="8x8", metavar="PRESET|FILE.json")
    g.add_argument("-o", "--output", required=True, metavar="OUT")
    g.set_defaults(func=cmd_gen)

    v = sub.add_parser("verify", help="compare the RTL with the golden model (and onnxruntime)")
    v.add_argument("build", metavar="OUT", help="a build directory written by 'sushi compile'")
    v.add_argument("--sim", choices=["verilator", "golden"], default="verilator")
    v.add_argument("--inputs", type=int, default=4, metavar="N", help="number of inputs (default 4)")
    v.add_argument("--json", metavar="FILE", help="write the report as JSON")
    v.add_argument("--waves", action="store_true", help="write a waveform (VCD) of the RTL run")
    v.add_argument("--subnet", metavar="NAME", help="the SubNet program to verify (SuperNet builds)")
    v.add_argument("--resident", metavar="SUBGRAPH_ID",
                   help="load this SubGraph of the catalog into the Persistent Buffer before the queries")
    v.set_defaults(func=cmd_verify)

    t = sub.add_parser("train", help="train the digits SuperNet; export its ONNX, SubNets and SubNet manifest")
    t.add_argument("-o", "--output", required=True, metavar="DIR")
    t.add_argument("--epochs", type=int, default=30, metavar="N")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--shrink", choices=["delayed", "start"], default="delayed",
                   help="delayed: smaller SubNets join part-way through training (default)")
    t.add_argument("--subnets", type=int, default=24, metavar="N", help="SubNets to export (default 24)")
    t.add_argument("--config", default="8x8", metavar="PRESET|FILE.json",
                   help="accelerator for the int8 evaluation and predicted latencies")
    t.add_argument("--no-quant", action="store_true", help="skip the int8 / RTL evaluation")
    t.set_defaults(func=cmd_train)

    from scheduler.commands import add_commands as add_scheduler_commands
    add_scheduler_commands(sub)
    from boards.commands import add_commands as add_board_commands
    add_board_commands(sub)

    bn = sub.add_parser("bench", help="benchmarks with JSON output (sgs: SubGraph Stationary with/without the PB)")
    bn.add_argument("which", choices=["sgs"])
    bn.add_argument("out", metavar="OUT", help="work directory for the builds")
    bn.add_argument("--json", required=True, metavar="FILE")
    bn.add_argument("--quick", action="store_true", help="fewer SubNets, PB sizes and bandwidths")
    bn.add_argument("--no-rtl", action="store_true", help="skip the Verilator part")
    bn.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="the main job: train, compile, generate, verify on Verilator, serve, report")
    d.add_argument("-o", "--output", default="out/demo", metavar="OUT")
    d.add_argument("--config", default="8x8-pb", metavar="PRESET|FILE.json")
    d.add_argument("--epochs", type=int, default=30, metavar="N")
    d.add_argument("--queries", type=int, default=2000, metavar="N", help="queries in the model-backend replay")
    d.add_argument("--rtl-queries", type=int, default=40, metavar="N", help="queries run RTL-in-the-loop")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    from . import tools
    from .config import ConfigError
    tools.setup()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    user_errors = [UserError, ConfigError]
    for mod, name in USER_ERROR_TYPES:
        try:
            user_errors.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    try:
        return args.func(args)
    except tuple(user_errors) as e:
        print(f"sushi {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
