"""Timing analysis of the board builds.  Before placement, a quick estimate of a synthesized
netlist (yosys JSON, after synth_ecp5 or synth_ice40): every register-to-register path's logic
delays from the device family's cell delays, plus a fixed routing estimate per net hop.  Placement
and routing of the ULX3S SoC take ~5 min; synthesis ~35 s, and this estimate seconds.  It ranks
paths (every failing endpoint, grouped by signal), it does not sign off: nextpnr's report is the
measurement.

    python -m boards.sta build/sushi_soc.json --family ecp5 --period 10 [--top 40]

After place and route, ``--sdf FILE`` (nextpnr's ``--sdf``: every routed connection's and cell
arc's delay) gives the post-route analysis with nextpnr's own delays: every failing register
input, grouped by signal, where nextpnr's report prints only the single worst path.

    python -m boards.sta --sdf build/sushi_soc.sdf --period 10 [--top 40]
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from dataclasses import dataclass

__all__ = ["Family", "FAMILIES", "estimate", "sdf_timing", "main"]


@dataclass(frozen=True)
class Family:
    """Delays in ns.  ``comb`` maps cell type -> delay from any input to any output (for carry
    cells: from a data input); ``clk_q`` maps sequential cell type -> clock-to-output;
    ``carry`` = carry-in -> carry-out/sum along a dedicated chain (no routing hop)."""
    name: str
    route: float
    comb: dict
    clk_q: dict
    carry_cells: dict            # type -> (carry in port, carry out port)
    carry: float
    setup: float
    comb_ports: dict             # sequential type -> its combinational output ports (LUT RAM reads)


ECP5 = Family(
    "ecp5", route=1.1,
    comb={"LUT4": 0.24, "PFUMX": 0.2, "L6MUX21": 0.2, "CCU2C": 0.4, "MULT18X18D": 3.93,
          "TRELLIS_DPR16X4": 0.6, "ALU54B": 3.0},
    clk_q={"TRELLIS_FF": 0.52, "DP16KD": 5.83, "TRELLIS_DPR16X4": 0.0, "MULT18X18D": 0.8},
    carry_cells={"CCU2C": ("CIN", "COUT")}, carry=0.06, setup=0.1,
    comb_ports={"TRELLIS_DPR16X4": {"DO"}})

ICE40 = Family(
    "ice40", route=1.6,
    comb={"SB_LUT4": 0.45, "SB_CARRY": 0.13, "SB_MAC16": 6.0},
    clk_q={"SB_DFF": 0.54, "SB_RAM40_4K": 2.2, "SB_SPRAM256KA": 3.0, "SB_MAC16": 1.0},
    carry_cells={"SB_CARRY": ("CI", "CO")}, carry=0.13, setup=0.1, comb_ports={})

FAMILIES = {"ecp5": ECP5, "ice40": ICE40}


def _longest(node, arr: dict, start, preds):
    """(arrival, predecessor) of ``node``: the longest path to it over ``preds(n)`` ((source,
    delay) pairs) from nodes where ``start(n)`` is not None (their arrival); memoised in ``arr``.
    Iterative (deep netlists); a source still being visited (a combinational loop) counts as 0."""
    visiting = set()
    stack = [node]
    while stack:
        n = stack[-1]
        if n in arr:
            stack.pop()
            continue
        t0 = start(n)
        if t0 is not None:
            arr[n] = (t0, None)
            stack.pop()
            continue
        if n not in visiting:
            visiting.add(n)
            stack.extend(q for q, _ in preds(n) if q not in arr and q not in visiting)
            continue
        best = (None, None)
        for q, d in preds(n):
            t = (arr[q][0] if q in arr else 0.0) + d
            if best[0] is None or t > best[0]:
                best = (t, q if q in arr else None)
        arr[n] = best if best[0] is not None else (0.0, None)
        visiting.discard(n)
        stack.pop()
    return arr[node]


def _is_seq(fam: Family, cell: dict) -> bool:
    t = cell["type"]
    if fam is ICE40 and t.startswith("SB_DFF"):
        return True
    if t in fam.comb:
        if t == "MULT18X18D":       # registered when yosys absorbed registers into it
            return any(k.startswith("REG_") and v not in ("NONE",) for k, v in cell["parameters"].items())
        if t == "SB_MAC16":         # yosys writes parameters as binary strings
            p = cell["parameters"]
            return any("1" in str(p.get(k, "0"))
                       for k in ("TOP_8x8_MULT_REG", "BOT_8x8_MULT_REG", "PIPELINE_16x16_MULT_REG2"))
        return False
    return True


def _names(module: dict) -> dict:
    """bit -> a readable name (the shortest public net name holding it)."""
    best = {}
    for name, n in module["netnames"].items():
        hidden = n.get("hide_name", 0)
        for i, b in enumerate(n["bits"]):
            if not isinstance(b, int):
                continue
            label = name if len(n["bits"]) == 1 else f"{name}[{i}]"
            key = (hidden, len(name))
            if b not in best or key < best[b][0]:
                best[b] = (key, label)
    return {b: v[1] for b, v in best.items()}


def _top(netlist: dict, top: "str | None") -> dict:
    mods = netlist["modules"]
    if top is None:
        top = next(n for n, m in mods.items() if m.get("attributes", {}).get("top"))
    return mods[top]


def estimate(netlist: dict, family: str, period: float, top: str | None = None) -> dict:
    """Worst estimated arrival (ns) per register/memory input, the path behind it, and the
    endpoints grouped by signal; see the module docstring."""
    fam = FAMILIES[family]
    mod = _top(netlist, top)
    cells = mod["cells"]
    driver = {}                  # bit -> (cell name, port)
    for cname, c in cells.items():
        for port, d in c["port_directions"].items():
            if d == "output":
                for b in c["connections"].get(port, []):
                    if isinstance(b, int):
                        driver[b] = (cname, port)
    seq = {cname: _is_seq(fam, c) for cname, c in cells.items()}
    arr: dict = {}               # bit -> (arrival at the driver's output, predecessor bit)

    def start(b):
        drv = driver.get(b)
        if drv is None:
            return 0.0
        cname, port = drv
        t = cells[cname]["type"]
        if seq[cname] and port not in fam.comb_ports.get(t, ()):
            return fam.clk_q.get(t, 0.5)
        return None

    def preds(b):
        cname, _ = driver[b]
        c = cells[cname]
        t = c["type"]
        cc = fam.carry_cells.get(t)
        for p, d in c["port_directions"].items():
            if d != "input" or (t == "TRELLIS_DPR16X4" and p != "RAD"):
                continue
            for ib in c["connections"].get(p, []):
                if isinstance(ib, int):        # a dedicated carry chain, or a routed hop and the cell
                    yield ib, fam.carry if cc and p == cc[0] else fam.route + fam.comb.get(t, 0.3)

    def out_arrival(bit):
        return _longest(bit, arr, start, preds)

    ends = []
    for cname, c in cells.items():
        if not seq[cname]:
            continue
        for p, d in c["port_directions"].items():
            if d != "input" or p in ("CLK", "WCK", "CLKA", "CLKB", "CLKI"):
                continue
            for ib in c["connections"].get(p, []):
                if isinstance(ib, int) and ib in driver:
                    a = out_arrival(ib)[0] + fam.route + fam.setup
                    ends.append((a, cname, p, ib))
    names = _names(mod)

    def path(bit):
        out = []
        while bit is not None:
            out.append(names.get(bit, str(bit)))
            bit = arr[bit][1]
        return out[::-1]


    def endpoint(cname):             # a register by the name of its output
        c = cells[cname]
        for p, d in c["port_directions"].items():
            if d == "output":
                for b in c["connections"].get(p, []):
                    if isinstance(b, int) and b in names:
                        return names[b]
        return cname

    groups = defaultdict(lambda: [0.0, 0, None])
    for a, cname, p, ib in ends:
        if a <= period:
            continue
        g = groups[_group(endpoint(cname))]
        g[1] += 1
        if a > g[0]:
            g[0], g[2] = a, (cname, p, ib)
    rows = []
    for gname, (a, n, (cname, p, ib)) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        pth = path(ib)
        rows.append({"signal": gname, "endpoints": n, "est_ns": round(a, 2), "cell": cname,
                     "port": p, "source": pth[0], "path": pth})
    return {"family": family, "period_ns": period, "endpoints": len(ends),
            "failing": sum(1 for e in ends if e[0] > period),
            "worst_ns": round(max((e[0] for e in ends), default=0.0), 2), "groups": rows}


def _group(label: str) -> str:
    return re.sub(r"\[\d+\]$", "", label)


_SDF_TOKEN = re.compile(r'\(|\)|"[^"]*"|[^\s()]+')


def _sdf_tree(text: str):
    """SDF text -> nested lists of tokens (the backslash escapes removed from names)."""
    stack = [[]]
    for tok in _SDF_TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok.replace("\\", ""))
    return stack[0]


def _sdf_max(triple) -> float:
    """The max of an SDF delay ``(min:typ:max)`` (a one-element list), in ps."""
    return max(float(v) for v in triple[0].split(":") if v)


_CLOCK_PINS = ("WCK", "RCLK", "WCLK", "CLOCK")     # besides CLK*: ECP5 LUT RAM, iCE40 RAM, SPRAM


def _sdf_port(p) -> str:
    """An IOPATH / SETUPHOLD port's name: ``NAME`` or ``(posedge NAME)``."""
    return p[1] if isinstance(p, list) else p


def sdf_timing(text: str, period: float) -> dict:
    """Post-route static timing from nextpnr's SDF (``--sdf``; TIMESCALE 1ps): arrival times from
    every clock-to-output arc through the cells' combinational arcs and the routed
    interconnect, checked against every SETUPHOLD setup time.  Endpoints (a cell input with a
    setup check) over ``period`` ns, grouped by signal (the endpoint cell's name, nextpnr keeps
    yosys' names), worst first, each with its path (pin, arrival ns)."""
    root = _sdf_tree(text)[0]
    edges = defaultdict(list)            # sink pin -> [(source pin, ps)]
    launch = {}                          # output pin -> clock-to-output ps
    setup = {}                           # input pin -> setup ps
    for item in root:
        if not isinstance(item, list) or not item or item[0] != "CELL":
            continue
        inst = ""
        for part in item[1:]:
            if part[0] == "INSTANCE":
                inst = part[1] if len(part) > 1 else ""
            elif part[0] == "DELAY":
                for absolute in part[1:]:
                    for arc in absolute[1:]:
                        if arc[0] == "INTERCONNECT":
                            edges[arc[2]].append((arc[1], _sdf_max(arc[3])))
                        elif arc[0] == "IOPATH":
                            src, dst = _sdf_port(arc[1]), _sdf_port(arc[2])
                            d = _sdf_max(arc[3])
                            if src.startswith("CLK") or src in _CLOCK_PINS:
                                launch[f"{inst}/{dst}"] = max(launch.get(f"{inst}/{dst}", 0.0), d)
                            else:
                                edges[f"{inst}/{dst}"].append((f"{inst}/{src}", d))
            elif part[0] == "TIMINGCHECK":
                for chk in part[1:]:
                    if chk[0] == "SETUPHOLD":
                        pin, d = _sdf_port(chk[1]), _sdf_max(chk[3])
                        key = f"{inst}/{pin}"
                        setup[key] = max(setup.get(key, 0.0), d)
    arr = {}                             # pin -> (arrival ps, predecessor pin)
    const = ("$PACKER_GND/", "$PACKER_VCC/")     # constant drivers start no path

    def start(p):
        if p.startswith(const):
            return -1e9
        return launch.get(p)             # a register's (or block RAM's) output

    def arrival(pin):
        return _longest(pin, arr, start, lambda p: edges.get(p, ()))[0]

    ends = []
    for pin, su in setup.items():
        if pin not in edges:
            continue
        ends.append(((arrival(pin) + su) / 1000.0, pin))
    ends.sort(reverse=True)

    def path(pin):
        out = []
        while pin is not None:
            out.append((pin, round(arr[pin][0] / 1000.0, 3)))
            pin = arr[pin][1]
        return out[::-1]

    def cell_group(pin):
        inst = pin.rsplit("/", 1)[0]
        return re.sub(r"(_TRELLIS_FF_Q|_SB_DFF|\$).*$", "", inst)

    groups = {}                          # first seen = worst: ``ends`` is sorted
    for a, pin in ends:
        if a <= period:
            break
        name = cell_group(pin)
        g = groups.setdefault(name, {"signal": name, "endpoints": 0, "ns": round(a, 3), "pin": pin})
        g["endpoints"] += 1
    rows = list(groups.values())
    for g in rows:
        g["path"] = path(g["pin"])
        g["source"] = g["path"][0][0]
    # the same endpoints by where their worst path starts: (source, its worst, its endpoints,
    # their signal groups by count)
    by_src = {}
    for a, pin in ends:
        if a <= period:
            break
        src = cell_group(path(pin)[0][0])
        s = by_src.setdefault(src, {"source": src, "endpoints": 0, "ns": round(a, 3), "to": {}})
        s["endpoints"] += 1
        dst = cell_group(pin)
        s["to"][dst] = s["to"].get(dst, 0) + 1
    sources = sorted(by_src.values(), key=lambda s: -s["endpoints"])
    return {"period_ns": period, "endpoints": len(ends), "sources": sources,
            "failing": sum(1 for a, _ in ends if a > period),
            "worst_ns": round(ends[0][0], 3) if ends else 0.0,
            "fmax_mhz": round(1000.0 / ends[0][0], 2) if ends else None, "groups": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boards.sta", description=__doc__.splitlines()[0])
    ap.add_argument("netlist", nargs="?", help="yosys JSON (the pre-placement estimate)")
    ap.add_argument("--family", choices=sorted(FAMILIES), help="with a netlist")
    ap.add_argument("--period", type=float, required=True, help="target clock period, ns")
    ap.add_argument("--top", type=int, default=40, help="signal groups to print")
    ap.add_argument("--full", action="store_true", help="print each group's path")
    ap.add_argument("--sdf", metavar="FILE", help="nextpnr's --sdf output: post-route timing")
    ap.add_argument("--by-source", action="store_true",
                    help="with --sdf: the failing endpoints grouped by their worst path's start")
    args = ap.parse_args(argv)
    if args.sdf:
        with open(args.sdf) as fh:
            r = sdf_timing(fh.read(), args.period)
        head = f"(post-route, SDF); worst {r['worst_ns']} ns ({r['fmax_mhz']} MHz)"
        if args.by_source:
            print(f"{r['failing']} of {r['endpoints']} endpoints over {args.period} ns {head}; "
                  f"{len(r['sources'])} sources")
            for s in r["sources"][:args.top]:
                to = sorted(s["to"].items(), key=lambda kv: -kv[1])
                print(f"{s['ns']:6.2f}  {s['endpoints']:5d}  {s['source']}  ->  "
                      + ", ".join(f"{n} ({c})" for n, c in to[:4]) + (" ..." if len(to) > 4 else ""))
            return 0
        _print_groups(r, args, head, "ns", "pins", lambda step: f"{step[1]:7.3f}  {step[0]}")
        return 0
    if not args.netlist or not args.family:
        ap.error("a netlist and --family, or --sdf")
    with open(args.netlist) as fh:
        r = estimate(json.load(fh), args.family, args.period)
    _print_groups(r, args, f"(estimate); worst {r['worst_ns']} ns", "est_ns", "hops", str)
    return 0


def _print_groups(r: dict, args, head: str, ns_key: str, unit: str, step) -> None:
    print(f"{r['failing']} of {r['endpoints']} endpoints over {args.period} ns {head}; "
          f"{len(r['groups'])} signal groups")
    for g in r["groups"][:args.top]:
        print(f"{g[ns_key]:6.2f}  {g['endpoints']:5d}  {g['signal']}  <-  {g['source']}  "
              f"({len(g['path'])} {unit})")
        if args.full:
            for s in g["path"]:
                print("          ", step(s))


if __name__ == "__main__":
    raise SystemExit(main())
