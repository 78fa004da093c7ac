"""`sushi build --board` and `sushi deploy --board`: add_commands(subparsers) for sushi/cli.py."""
from __future__ import annotations

import json

from .build import BOARDS, DEFAULT_BAUD, BoardError

__all__ = ["add_commands", "BoardError", "cmd_build", "cmd_deploy"]


def add_commands(subparsers) -> None:
    """Register `build` and `deploy`; each parser's ``func(args) -> int`` runs it (BoardError on
    user errors: exit status 2)."""
    b = subparsers.add_parser("build", help="build a SUSHI SoC bitstream for a board",
                              description="Synthesise, place and route SushiSoC (accelerator + UART "
                                          "link + memory) for a board; writes OUT/report.json")
    b.add_argument("--board", required=True, choices=sorted(BOARDS))
    b.add_argument("--config", default=None,
                   help="accelerator preset or JSON file (default: the board's preset)")
    b.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    b.add_argument("-o", "--out", required=True, help="output directory")
    b.add_argument("--seed", type=int, default=None,
                   help="nextpnr's placement seed (default: the board's; one netlist with one seed "
                        "always builds the same, another seed places differently: docs/boards.md)")
    b.add_argument("--elaborate-only", action="store_true",
                   help="stop before the vendor tools: elaborate the SoC and write OUT/build (RTLIL, Verilog, "
                        "pin constraints, the synthesis script) and OUT/report.json with built: false")
    b.add_argument("--synth-only", action="store_true",
                   help="synthesis only, then a pre-placement timing estimate (python -m boards.sta): "
                        "the register paths longer than the clock period, worst first, in seconds")
    b.set_defaults(func=cmd_build)
    d = subparsers.add_parser("deploy", help="program a board with a built bitstream (openFPGALoader)")
    d.add_argument("--board", required=True, choices=sorted(BOARDS))
    d.add_argument("out", help="directory written by `sushi build --board`")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds for openFPGALoader")
    d.add_argument("--port", default=None, help="serial port: check the SoC answers after programming")
    d.set_defaults(func=cmd_deploy)


def cmd_build(args) -> int:
    from sushi.config import ConfigError, load_config
    from .build import build
    try:
        cfg = load_config(args.config) if args.config else None
    except ConfigError as e:
        raise BoardError(str(e)) from None
    mode = False if args.elaborate_only else ("synth" if args.synth_only else True)
    rep = build(args.board, cfg, args.out, baud=args.baud, do_build=mode, seed=args.seed,
                progress=lambda m: print(f"[build] {m}"))
    if mode == "synth":
        est = rep["sta"]
        print(f"estimate at {est['period_ns']:.2f} ns: {est['failing']} of {est['endpoints']} endpoints over, "
              f"worst {est['worst_ns']} ns (pre-placement; nextpnr decides)")
        for g in est["groups"][:20]:
            print(f"  {g['est_ns']:6.2f} ns  {g['endpoints']:4d}  {g['signal']}  <-  {g['source']}")
        return 0
    if args.elaborate_only:
        keys = ("board", "device", "preset", "clock_mhz", "target_mhz", "uart_divisor", "mem_bytes", "steps")
        print(json.dumps({k: rep.get(k) for k in keys}, indent=2))
        print(f"elaborated only (no synthesis, place and route): the build tree is in {args.out}/build")
        return 0
    keys = ("board", "preset", "seed", "fmax_mhz", "target_mhz", "timing_met", "utilization", "build_s",
            "bitstream")
    print(json.dumps({k: rep.get(k) for k in keys}, indent=2))
    if not rep.get("timing_met"):
        print(f"warning: timing not met: fmax {rep.get('fmax_mhz')} MHz < {rep.get('clock_mhz')} MHz")
    return 0


def cmd_deploy(args) -> int:
    from .deploy import deploy
    r = deploy(args.board, args.out, timeout=args.timeout, port=args.port)
    print(f"programmed {r['board']} with {r['bitstream']}")
    if "status" in r:
        print(json.dumps(r["status"], indent=2))
    return 0
