"""The latency table L[SubNet][SubGraph] of a SuperNet build, from the cycle-exact performance model.

For every SubNet program and every SubGraph of the build's catalog (and "none"), predicts the
latency, off-chip bytes and off-chip energy of one query with that SubGraph resident, plus each
SubGraph's load cost.  Writes the scheduler's table format (`sushi-latency` v1, docs/scheduler.md)
as OUT/latency_table.json and the latency matrix as OUT/latency_table.csv.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from compiler.catalog import residency_of
from sim.energy import energy
from sim.perf import DramTiming, decode_program, predict

__all__ = ["build_latency_table", "write_latency_table"]


def build_latency_table(build, timing: "DramTiming | None" = None, accuracy: "dict | None" = None) -> dict:
    """The `sushi-latency` table of a version-2 build (``sushi.artifacts.Build``).  ``accuracy``:
    {SubNet: accuracy} to use instead of the manifest's float accuracy (e.g. the measured int8 one)."""
    timing = timing or DramTiming()
    cfg = build.cfg
    to_ms = 1.0 / (cfg.clock_mhz * 1e3)
    img, _, _ = build.dram_image()
    sgs = {sid: build.subgraph(sid) for sid in build.subgraph_ids}
    resident = {"none": None, **{sid: residency_of(sg) for sid, sg in sgs.items()}}
    table = {"format": "sushi-latency", "version": 1, "clock_mhz": cfg.clock_mhz, "pb_bytes": cfg.pb_bytes,
             "timing": {"latency": timing.latency, "bandwidth": timing.bandwidth},
             "config": cfg.name, "subnets": {}, "subgraphs": {}, "latency_ms": {}, "offchip_bytes": {},
             "offchip_energy_uj": {}}
    for name in build.program_names:
        p = build.program(name)
        sub = p.get("subnet", {})
        acc = (accuracy or {}).get(name, sub.get("accuracy"))
        instrs = decode_program(img, int(p["base"]))
        lat, byt, en = {}, {}, {}
        for sid, res in resident.items():
            r = predict(instrs, cfg, timing, resident=res)
            lat[sid] = r["cycles"] * to_ms
            byt[sid] = int(r["dram_rd_bytes"] + r["dram_wr_bytes"])
            en[sid] = energy(r)["offchip_uj"]
        table["subnets"][name] = {"accuracy": float(acc if acc is not None else 0.0), "macs": int(p["macs"])}
        table["latency_ms"][name], table["offchip_bytes"][name], table["offchip_energy_uj"][name] = lat, byt, en
    for sid, sg in sgs.items():
        r = predict(decode_program(img, int(sg["base"])), cfg, timing)
        table["subgraphs"][sid] = {"bytes": int(sg["tiles"]) * cfg.tile_bytes, "tiles": int(sg["tiles"]),
                                   "subnets": list(sg.get("subnets", [])), "load_ms": r["cycles"] * to_ms,
                                   "load_bytes": int(r["dram_rd_bytes"]),
                                   "load_energy_uj": energy(r)["offchip_uj"]}
    return table


def write_latency_table(build, out_dir=None, timing: "DramTiming | None" = None, accuracy=None) -> Path:
    """Write OUT/latency_table.json and OUT/latency_table.csv; returns the JSON path."""
    out = Path(out_dir or build.dir)
    t = build_latency_table(build, timing, accuracy)
    p = out / "latency_table.json"
    p.write_text(json.dumps(t, indent=1) + "\n")
    cols = ["none"] + sorted(t["subgraphs"])
    with open(out / "latency_table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subnet", "accuracy", "macs"] + [f"L_ms[{c}]" for c in cols])
        for name, row in t["latency_ms"].items():
            s = t["subnets"][name]
            w.writerow([name, f"{s['accuracy']:.6f}", s["macs"]] + [f"{row[c]:.6f}" for c in cols])
    return p
