"""SubGraph-Stationary (SGS) benchmark: what a resident SubGraph in the Persistent Buffer buys.

    python -m bench.sgs OUT --json FILE [--quick] [--no-rtl] [--no-r50]

For every SubNet and candidate SubGraph: latency, off-chip bytes and off-chip energy with the PB
(SubGraph resident) and without it, at the SAME TOTAL ON-CHIP MEMORY: the no-PB baseline is the
same SuperNet lowered for ``pb_tiles = 0`` and ``act_buf_words += pb_bytes / V`` (capped at the
ISA's 65536 words), so its bigger activation buffer can cut row-band weight re-fetches.

(a) OFA-ResNet50 SubNets at 224x224 (random weights) compiled as one SuperNet build
    (``compile_supernet``) for a 16x8 array; the cycle-exact performance model (sim/perf.py) at
    several DRAM bandwidths (memory-bound 1-2 B/cycle .. full) and several PB sizes; the SubGraphs
    of every PB size are the compiler's catalog (compiler/catalog.py) of SuperNet layer boxes
    fitted to that size (ISA v4: one residency entry per layer box, ``res_entries`` = 256).
(b) the digits SuperNet on the Verilator RTL (8x8-pb): a handful of SubNets x {none, each SubGraph
    that covers them}: RTL cycles, the RTL's DRAM weight-byte counters, and the model's error.

Writes FILE (JSON) and FILE with suffix .png (the PB-size curve).  OUT holds the builds (None: a
temporary directory, removed at the end).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from compiler.catalog import residency_of

__all__ = ["run_sgs", "main", "FORMAT", "TARGET_LATENCY", "TARGET_WEIGHT_ENERGY"]

FORMAT = "sushi-sgs-bench"
TARGET_LATENCY = 0.30          # >= 30 % lower latency (memory-bound, SubNet contains the SubGraph)
TARGET_WEIGHT_ENERGY = 0.80    # >= 80 % less off-chip weight energy
ACT_BUF_MAX = 1 << 16          # 16-bit activation-buffer addresses
DRAM_LATENCY = 20              # RtlSim's default read latency (cycles)

R50_CFG = dict(name="r50-pb", pe_rows=16, pe_cols=8, act_buf_words=16384, wbuf_tiles=1024, res_entries=256,
               clock_mhz=100.0)
# residency tables evaluated: (res_entries, label); "isa" = the ISA v4 maximum (SETRES.key is 8 bits)
R50_TABLES = ((256, "isa"),)
R50_PB = (2048, 8192, 32768, 65536, 131072, 262144)   # tiles of 128 B: 256 KiB .. 32 MiB
R50_PB_QUICK = (8192, 65536)
R50_BW = (1, 2, 4, None)                     # bytes/cycle; None = full (one 8-B beat per cycle each way)
R50_BW_QUICK = (1, None)
DIGITS_PICK = (0, 5, 9, 15, 20, 23)          # by MACs, smallest .. largest of the bundled 24
DIGITS_PICK_QUICK = (0, 9, 23)
DIGITS_BW = (1, 2, None)                     # model; 2 B/cycle ~ the ULX3S's 16-bit SDRAM at the core clock
DIGITS_BW_QUICK = (2,)
DIGITS_RTL_BW = (2, None)                    # RTL runs (the model is checked against each)
DIGITS_RTL_BW_QUICK = (2,)


def _bw_key(bw) -> str:
    return "full" if bw is None else f"{bw:g}"


def _baseline_cfg(cfg):
    """The no-PB configuration with the same total on-chip bytes: the PB's bytes become activation
    buffer (capped at 65536 words)."""
    want = cfg.act_buf_words + cfg.pb_bytes // cfg.pe_cols
    return replace(cfg, name=f"{cfg.name}-nopb", pb_tiles=0, act_buf_words=min(ACT_BUF_MAX, want)), want


def _box_uses(build) -> dict:
    """{subnet: {residency key: {rows, c, bands}}} from the build's layer records (as the compiler)."""
    from compiler.supernet import _box_use
    return {n: _box_use(SimpleNamespace(layers=build.program(n)["layers"])) for n in build.program_names}


def _geoms(build) -> dict:
    return {int(k): v for k, v in build.manifest.get("residency_keys", {}).items()}


def _fetches(build) -> dict:
    """{subnet: {tile id: fetches per query}} from the build's layer records (as the compiler counts)."""
    from compiler.supernet import _tile_fetches
    return {n: _tile_fetches(SimpleNamespace(layers=build.program(n)["layers"])) for n in build.program_names}


def _catalog(uses, geoms, cfg, n_super, pb_tiles, res_entries, max_subgraphs=8):
    from compiler.catalog import build_catalog
    # the catalog reads tile_bytes, pb_tiles and res_entries only
    c = SimpleNamespace(tile_bytes=cfg.tile_bytes, pb_tiles=pb_tiles, res_entries=res_entries)
    return build_catalog(uses, geoms, c, n_super, max_subgraphs=max_subgraphs)




class _Model:
    """Cached performance-model runs: (program key, bandwidth, resident key) -> figures."""

    def __init__(self, log):
        self.cache, self.log, self.n, self.s = {}, log, 0, 0.0

    def run(self, key, instrs, cfg, bw, resident=None, res_key="none"):
        from sim.energy import DEFAULT, energy
        from sim.perf import DramTiming, predict
        k = (key, _bw_key(bw), res_key)
        if k in self.cache:
            return self.cache[k]
        t = time.perf_counter()
        r = predict(instrs, cfg, DramTiming(DRAM_LATENCY, bw), resident=resident)
        e = energy(r)
        out = {"cycles": int(r["cycles"]), "latency_ms": r["cycles"] / (cfg.clock_mhz * 1e3),
               "w_rd_bytes": int(r["w_rd_bytes"]), "act_rd_bytes": int(r["act_rd_bytes"]),
               "act_wr_bytes": int(r["act_wr_bytes"]), "offchip_bytes": int(r["dram_rd_bytes"] + r["dram_wr_bytes"]),
               "offchip_uj": e["offchip_uj"], "offchip_weight_uj": r["w_rd_bytes"] * DEFAULT.dram_pj_per_byte * 1e-6,
               "pb_hits": int(r["pb_hits"]), "mac_cycles": int(r["mac_cycles"])}
        self.cache[k] = out
        self.n += 1
        self.s += time.perf_counter() - t
        return out


def _gain(base: dict, pb: dict) -> dict:
    def red(k):
        return 1.0 - pb[k] / base[k] if base[k] else 0.0
    return {"latency_reduction": red("latency_ms"), "offchip_bytes_reduction": red("offchip_bytes"),
            "offchip_energy_reduction": red("offchip_uj"), "weight_energy_reduction": red("offchip_weight_uj")}


def _stats(v) -> dict:
    return {"mean": float(np.mean(v)) if v else 0.0, "min": float(np.min(v)) if v else 0.0,
            "max": float(np.max(v)) if v else 0.0, "n": len(v)}


def _bytes_only(none: dict, saved: int) -> dict:
    """Off-chip figures of a query with a SubGraph resident from the catalog's exact PB-hit count
    (the same program; only weight-tile reads change), without a latency prediction."""
    from sim.energy import DEFAULT
    w = none["w_rd_bytes"] - saved
    pj = DEFAULT.dram_pj_per_byte * 1e-6
    return {"w_rd_bytes": w, "offchip_bytes": none["offchip_bytes"] - saved,
            "offchip_uj": none["offchip_uj"] - saved * pj, "offchip_weight_uj": w * pj,
            "pb_hits": None}


# ============================================================================ (a) OFA-ResNet50
def _r50(work: Path, quick: bool, bandwidths, pb_sizes, log) -> dict:
    from compiler.lower import lower
    from compiler.supernet import compile_supernet
    from sim.perf import decode_program
    from sushi.artifacts import load_build
    from sushi.config import AccelConfig
    from .sgs_r50 import R50_QUICK, export_r50_family
    t0 = time.perf_counter()
    fam = work / "r50_family"
    man = export_r50_family(fam, names=R50_QUICK if quick else None, log=log)
    t_export = time.perf_counter() - t0
    cfg = AccelConfig(pb_tiles=max(pb_sizes), **R50_CFG)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    t1 = time.perf_counter()
    _, plan = compile_supernet(fam / "supernet.onnx", man, cfg, work / "r50_build", calib=x, progress=False,
                               return_plan=True)
    t_compile = time.perf_counter() - t1
    b = load_build(work / "r50_build")
    log(f"[r50] compiled {len(b.program_names)} SubNets in {t_compile:.0f} s "
        f"({b.manifest['weights']['n_tiles']} tiles, {b.manifest['supernet']['tiles']} SuperNet tiles)")
    img, _, _ = b.dram_image()
    progs = {n: decode_program(img, int(b.program(n)["base"])) for n in b.program_names}
    fetches = _fetches(b)
    uses, geoms = _box_uses(b), _geoms(b)
    n_super = int(b.manifest["supernet"]["tiles"])
    T = cfg.tile_bytes
    share = json.loads((b.dir / "share.json").read_text())
    subnets = {n: {"macs": int(b.program(n)["macs"]), "weight_bytes": int(b.program(n)["subnet"]["weight_bytes"]),
                   "tiles_used": len(fetches[n]), "tile_fetches": int(sum(fetches[n].values())),
                   "tile_bytes_per_query": int(sum(fetches[n].values())) * T,
                   "shared_layers": share["subnets"][n]["shared"], "private_layers": share["subnets"][n]["private"]}
               for n in b.program_names}
    # baselines: the same quantized graphs lowered for the no-PB configuration of each PB size
    base_prog, base_cfgs = {}, {}
    for pb in pb_sizes:
        bc, want = _baseline_cfg(replace(cfg, pb_tiles=pb))
        base_cfgs[pb] = (bc, want)
        if bc.act_buf_words not in base_prog:
            base_prog[bc.act_buf_words] = {
                n: decode_program(lower(s["graph"], bc, ext_tiles=s["ext"]).prog_image, 0)
                for n, s in plan.subnets.items()}
    del plan
    m = _Model(log)
    res = {"config": cfg.to_json(), "subnets": subnets, "bandwidths": [_bw_key(bw) for bw in bandwidths],
           "pb_sizes": list(pb_sizes), "dram_latency": DRAM_LATENCY, "pb_runs": [], "curve": [],
           "res_entries_isa_max": 256}
    res["intersection_all_tiles"] = len(set.intersection(*(set(f) for f in fetches.values())))

    def none_of(n, bw):
        return m.run(("pb", n), progs[n], cfg, bw)

    def base_of(n, pb, bw):
        bc = base_cfgs[pb][0]
        return m.run(("base", bc.act_buf_words, n), base_prog[bc.act_buf_words][n], bc, bw)

    for pb in pb_sizes:
        bc, want = base_cfgs[pb]
        for rr, label in R50_TABLES:
            if quick and label == "unlimited" and pb != max(pb_sizes):
                continue
            cat = _catalog(uses, geoms, cfg, n_super, pb, rr)
            sgs = {}
            for c in cat["subgraphs"]:
                sgs[c["id"]] = {"kind": c["kind"], "tiles": c["tiles"], "bytes": c["bytes"], "n_boxes": len(c["boxes"]),
                                "keys_needed": c["keys_needed"], "keys_dropped": c["keys_dropped"],
                                "loadsg_runs": c["loadsg_runs"], "subnets": c["subnets"], "notes": c["notes"],
                                "saved_bytes": {s: v["dram_bytes_saved"] for s, v in c["per_subnet"].items()}}
            ids = {c["id"]: residency_of(c) for c in cat["subgraphs"]}
            # per SubNet: the SubGraph that contains it and saves it the most (the scheduler's pick
            # for a stream of that SubNet), plus the catalog's top SubGraph for all SubNets
            best = {}
            for n in b.program_names:
                cands = [c for c in cat["subgraphs"] if n in c["subnets"]]
                if cands:
                    best[n] = max(cands, key=lambda c: c["per_subnet"][n]["dram_bytes_saved"])["id"]
            top = cat["subgraphs"][0]["id"] if cat["subgraphs"] else None
            run = {"pb_tiles": pb, "pb_bytes": pb * T, "res_entries": rr, "table": label,
                   "baseline": {"act_buf_words": bc.act_buf_words, "act_buf_words_wanted": want,
                                "capped": want > ACT_BUF_MAX,
                                "extra_act_bytes": (bc.act_buf_words - cfg.act_buf_words) * cfg.pe_cols},
                   "catalog": {"binding": cat["binding"], "notes": cat["notes"], "keys": cat["keys"]},
                   "subgraphs": sgs, "best_containing": best, "top": top, "bandwidths": {}}
            for bw in bandwidths:
                q = {}
                for n in b.program_names:
                    none, base = none_of(n, bw), base_of(n, pb, bw)
                    row = {"none": none, "baseline_nopb": base, "subgraphs": {}}
                    for sid, c in zip(ids, cat["subgraphs"]):
                        saved = c["per_subnet"][n]["dram_bytes_saved"]
                        r = m.run(("pb", n), progs[n], cfg, bw, ids[sid], (pb, rr, sid)) if saved else dict(none)
                        r = dict(r, contains=n in c["subnets"], bytes_saved=saved,
                                 vs_baseline=_gain(base, r), vs_none=_gain(none, r))
                        row["subgraphs"][sid] = r
                    q[n] = row
                run["bandwidths"][_bw_key(bw)] = q
                # the curve point: queries whose SubNet contains its best SubGraph
                g = [q[n]["subgraphs"][best[n]]["vs_baseline"] for n in best]
                pt = {"pb_tiles": pb, "pb_bytes": pb * T, "table": label, "res_entries": rr, "bandwidth": _bw_key(bw),
                      "n_subnets_covered": len(best), "n_subnets": len(b.program_names),
                      "per_subnet": {n: {"subgraph": best[n], **q[n]["subgraphs"][best[n]]["vs_baseline"]} for n in best}}
                for k in ("latency_reduction", "weight_energy_reduction", "offchip_energy_reduction"):
                    pt[k] = _stats([x[k] for x in g])
                # the same queries against the PB hardware with nothing resident (no equal-memory credit)
                pt["vs_none"] = {k: _stats([q[n]["subgraphs"][best[n]]["vs_none"][k] for n in best])
                                 for k in ("latency_reduction", "weight_energy_reduction")}
                # every SubNet with the SubGraph that saves it the most, contained or not (partial coverage)
                anyb = {n: max(q[n]["subgraphs"], key=lambda sid: q[n]["subgraphs"][sid]["bytes_saved"])
                        for n in b.program_names if q[n]["subgraphs"]}
                pt["any_subgraph"] = {k: _stats([q[n]["subgraphs"][anyb[n]]["vs_baseline"][k] for n in anyb])
                                      for k in ("latency_reduction", "weight_energy_reduction")}
                pt["any_subgraph"]["per_subnet"] = {n: {"subgraph": anyb[n], **q[n]["subgraphs"][anyb[n]]["vs_baseline"]}
                                                    for n in anyb}
                # compute-boundness: MAC cycles / total cycles of the baseline
                pt["mac_fraction_baseline"] = _stats([base_of(n, pb, bw)["mac_cycles"] / base_of(n, pb, bw)["cycles"]
                                                      for n in b.program_names])
                # the baseline's own gain from the extra activation buffer (vs the PB build, nothing resident)
                pt["baseline_vs_none_latency"] = float(np.mean([1 - base_of(n, pb, bw)["latency_ms"] / none_of(n, bw)["latency_ms"]
                                                                for n in b.program_names]))
                res["curve"].append(pt)
                log(f"[r50] PB {pb * T / 2**20:5.2f} MiB res_entries {label:9s} bw {_bw_key(bw):>4s}: "
                    f"{len(best)}/{len(b.program_names)} SubNets covered, latency -{100 * pt['latency_reduction']['mean']:.1f} % "
                    f"(max {100 * pt['latency_reduction']['max']:.1f}), weight energy -{100 * pt['weight_energy_reduction']['mean']:.1f} %; best-any: latency -{100 * pt['any_subgraph']['latency_reduction']['mean']:.1f} %, weight energy -{100 * pt['any_subgraph']['weight_energy_reduction']['mean']:.1f} % "
                    f"[{m.n} model runs, {m.s:.0f} s]")
            res["pb_runs"].append(run)
    res["timing_s"] = {"export": t_export, "compile": t_compile, "model": m.s, "model_runs": m.n,
                       "total": time.perf_counter() - t0}
    return res


# ============================================================================ (b) digits on the RTL
def _digits_source(work: Path, pick, log) -> Path:
    src = Path("/tmp/digits")
    d = work / "digits"
    if d.exists():
        shutil.rmtree(d)
    if (src / "subnets.json").is_file() and len(json.loads((src / "subnets.json").read_text())["subnets"]) >= 24:
        shutil.copytree(src, d)
        log(f"[digits] using a copy of {src}")
    else:
        from models.train import train
        log("[digits] no trained SuperNet at /tmp/digits: training a quick one (2 epochs)")
        train(d, epochs=2, n_subnets=max(pick) + 1, n_candidates=max(12, 2 * max(pick) + 2), progress=False, plot=False)
    m = json.loads((d / "subnets.json").read_text())
    subs = sorted(m["subnets"], key=lambda s: s["macs"])
    m["subnets"] = [subs[i] for i in pick if i < len(subs)]
    (d / "subnets.json").write_text(json.dumps(m, indent=1))
    return d


def _digits(work: Path, quick: bool, bandwidths, rtl: bool, log, pb_sizes=None) -> dict:
    from compiler.supernet import compile_supernet, verify_steps, steps_to_rtl_jobs
    from models.train import load_digits_split
    from sim.perf import decode_program
    from sushi.artifacts import load_build
    from sushi.config import PRESETS
    t0 = time.perf_counter()
    pick = DIGITS_PICK_QUICK if quick else DIGITS_PICK
    d = _digits_source(work, pick, log)
    cfg = PRESETS["8x8-pb"]
    bcfg, want = _baseline_cfg(cfg)
    calib = load_digits_split()["train"][0][:256]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_supernet(d / "supernet.onnx", d / "subnets.json", cfg, work / "digits_pb", calib=calib, progress=False)
        compile_supernet(d / "supernet.onnx", d / "subnets.json", bcfg, work / "digits_nopb", calib=calib, progress=False)
    b, bb = load_build(work / "digits_pb"), load_build(work / "digits_nopb")
    names = b.program_names
    img, _, _ = b.dram_image()
    bimg, _, _ = bb.dram_image()
    progs = {n: decode_program(img, int(b.program(n)["base"])) for n in names}
    bprogs = {n: decode_program(bimg, int(bb.program(n)["base"])) for n in names}
    cat = b.catalog()
    sg_ids = {c["id"]: residency_of(c) for c in cat["subgraphs"]}
    m = _Model(log)
    res = {"config": cfg.to_json(), "baseline_config": bcfg.to_json(), "baseline_act_buf_words_wanted": want,
           "subnets": {n: {"macs": int(b.program(n)["macs"]), "accuracy": b.program(n)["subnet"]["accuracy"],
                           "tiles_used": b.program(n)["tiles"]["used"]} for n in names},
           "subgraphs": {c["id"]: {"kind": c["kind"], "tiles": c["tiles"], "bytes": c["bytes"], "boxes": c["boxes"],
                                   "subnets": c["subnets"]} for c in cat["subgraphs"]},
           "catalog_binding": cat["binding"], "bandwidths": [_bw_key(bw) for bw in bandwidths], "model": {}, "rtl": {}}
    for bw in bandwidths:
        q = {}
        for n in names:
            none = m.run(("pb", n), progs[n], cfg, bw)
            base = m.run(("base", n), bprogs[n], bcfg, bw)
            row = {"none": none, "baseline_nopb": base, "subgraphs": {}}
            for sid, ids in sg_ids.items():
                r = m.run(("pb", n), progs[n], cfg, bw, ids, sid)
                row["subgraphs"][sid] = dict(r, contains=n in res["subgraphs"][sid]["subnets"],
                                             vs_baseline=_gain(base, r), vs_none=_gain(none, r))
            q[n] = row
        res["model"][_bw_key(bw)] = q
    res["model_s"] = m.s
    res["curve"] = _digits_curve(work, d, cfg, calib, pb_sizes or pb_sizes_digits(quick), bandwidths, m, log)
    if rtl:
        from sim.golden import COUNTER_NAMES
        from sim.perf import DramTiming, predict
        from sim.rtl import RtlSim
        for bw in (DIGITS_RTL_BW_QUICK if quick else DIGITS_RTL_BW):
            t1 = time.perf_counter()
            # one accelerator state: every cold query first (reset: nothing resident), then per
            # SubGraph its LOADSG program and the queries of the SubNets it covers
            plan = [("query", n, None) for n in names]
            for sid in sg_ids:
                cov = res["subgraphs"][sid]["subnets"]
                if cov:
                    plan.append(("loadsg", None, sid))
                    plan += [("query", n, sid) for n in cov if n in names]
            steps = []
            cold = {n: verify_steps(b.dir, n)[0] for n in names}
            for kind, n, sid in plan:
                if kind == "query":
                    steps.append(cold[n])
                else:
                    st = dict(cold[names[0]])
                    st.update(kind="loadsg", prog_base=int(b.subgraph(sid)["base"]), read_back=[])
                    steps.append(st)
            dram = 1 << max(21, (int(b.memory["total_bytes"]) - 1).bit_length())
            sim = RtlSim(cfg, dram_bytes=dram, latency=DRAM_LATENCY, bandwidth=bw)
            out = sim.run_jobs(steps_to_rtl_jobs(steps))
            # the model on the same sequence (residency carried over as the hardware does)
            resid, rows = None, []
            cold_out = {}
            for (kind, n, sid), st, r in zip(plan, steps, out):
                ins = decode_program(st["image"], st["prog_base"])
                p = predict(ins, cfg, DramTiming(DRAM_LATENCY, bw), resident=resid)
                resid = p["residency_after"]
                c = r.counters
                row = {"kind": kind, "subnet": n, "subgraph": sid, "rtl_cycles": int(c["cycles"]),
                       "model_cycles": int(p["cycles"]), "cycle_error": int(p["cycles"]) - int(c["cycles"]),
                       "rtl_w_rd_bytes": int(c["w_rd_bytes"]), "model_w_rd_bytes": int(p["w_rd_bytes"]),
                       "rtl_pb_hits": int(c["pb_hits"]), "rtl_error": int(c["error"]), "timed_out": bool(r.timed_out),
                       "counters_match": all(int(c[k]) == int(p[k]) for k in COUNTER_NAMES if k in p and k != "instrs")
                       and int(c["instrs"]) == len(p["instrs"])}
                if kind == "query":
                    if sid is None:
                        cold_out[n] = (r.regions, row)
                    else:
                        cr, crow = cold_out[n]
                        row["output_same_as_cold"] = r.regions == cr
                        row["latency_reduction_vs_cold"] = 1 - row["rtl_cycles"] / crow["rtl_cycles"]
                        row["weight_bytes_reduction_vs_cold"] = 1 - row["rtl_w_rd_bytes"] / crow["rtl_w_rd_bytes"]
                rows.append(row)
            errs = [abs(r_["cycle_error"]) / r_["rtl_cycles"] for r_ in rows if r_["rtl_cycles"]]
            res["rtl"][_bw_key(bw)] = {"runs": rows, "wall_s": time.perf_counter() - t1,
                                       "max_abs_cycle_error": max(abs(r_["cycle_error"]) for r_ in rows),
                                       "max_rel_cycle_error": max(errs) if errs else 0.0,
                                       "all_counters_match": all(r_["counters_match"] for r_ in rows),
                                       "all_outputs_match": all(r_.get("output_same_as_cold", True) for r_ in rows)}
            log(f"[digits] RTL bw {_bw_key(bw)}: {len(rows)} runs in {time.perf_counter() - t1:.0f} s, "
                f"max |model - RTL| = {res['rtl'][_bw_key(bw)]['max_abs_cycle_error']} cycles")
    res["timing_s"] = {"total": time.perf_counter() - t0}
    return res


DIGITS_PB = (64, 128, 256, 512, 1024, 2048)      # tiles of 64 B: 4 KiB .. 128 KiB
DIGITS_PB_QUICK = (128, 512, 2048)


def pb_sizes_digits(quick: bool):
    return DIGITS_PB_QUICK if quick else DIGITS_PB


def _curve_point(names, q, cat, pb, T, bw) -> dict:
    """Mean gain over the SubNets that contain their best catalog SubGraph (vs the equal-memory
    baseline); ``q[n]`` = {"baseline_nopb", "subgraphs": {sid: figures}}."""
    best = {}
    for n in names:
        cands = [c for c in cat["subgraphs"] if n in c["subnets"]]
        if cands:
            best[n] = max(cands, key=lambda c: c["per_subnet"][n]["dram_bytes_saved"])["id"]
    g = {n: _gain(q[n]["baseline_nopb"], q[n]["subgraphs"][best[n]]) for n in best}
    pt = {"pb_tiles": pb, "pb_bytes": pb * T, "bandwidth": _bw_key(bw), "n_subnets_covered": len(best),
          "n_subnets": len(names), "per_subnet": {n: {"subgraph": best[n], **g[n]} for n in best}}
    for k in ("latency_reduction", "weight_energy_reduction", "offchip_energy_reduction"):
        pt[k] = _stats([x[k] for x in g.values()])
    return pt


def _digits_curve(work, d, cfg, calib, pb_sizes, bandwidths, m, log) -> list:
    """The digits SuperNet compiled for every PB size (and its equal-memory baseline), the
    performance model: gain of each SubNet with its best containing SubGraph."""
    import warnings
    from compiler.supernet import compile_supernet
    from sim.perf import decode_program
    from sushi.artifacts import load_build
    out = []
    for pb in pb_sizes:
        c = replace(cfg, name=f"8x8-pb{pb}", pb_tiles=pb)
        bc, _ = _baseline_cfg(c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile_supernet(d / "supernet.onnx", d / "subnets.json", c, work / f"digits_pb{pb}", calib=calib, progress=False)
            compile_supernet(d / "supernet.onnx", d / "subnets.json", bc, work / f"digits_pb{pb}_nopb", calib=calib,
                             progress=False)
        b, bb = load_build(work / f"digits_pb{pb}"), load_build(work / f"digits_pb{pb}_nopb")
        img, _, _ = b.dram_image()
        bimg, _, _ = bb.dram_image()
        cat = b.catalog()
        for bw in bandwidths:
            q = {}
            for n in b.program_names:
                pr = decode_program(img, int(b.program(n)["base"]))
                q[n] = {"baseline_nopb": m.run(("base", pb, n), decode_program(bimg, int(bb.program(n)["base"])), bc, bw),
                        "subgraphs": {sg["id"]: m.run(("pb", pb, n), pr, c, bw, residency_of(sg), sg["id"])
                                      for sg in cat["subgraphs"] if n in sg["subnets"]}}
            pt = _curve_point(b.program_names, q, cat, pb, c.tile_bytes, bw)
            out.append(pt)
            log(f"[digits] PB {pb * c.tile_bytes / 1024:6.1f} KiB bw {_bw_key(bw):>4s}: {pt['n_subnets_covered']}/"
                f"{pt['n_subnets']} covered, latency -{100 * pt['latency_reduction']['mean']:.1f} % "
                f"(max {100 * pt['latency_reduction']['max']:.1f}), weight energy "
                f"-{100 * pt['weight_energy_reduction']['mean']:.1f} % (max {100 * pt['weight_energy_reduction']['max']:.1f})")
    return out


# ============================================================================ targets, plot, entry
def _targets(res: dict) -> list:
    out = []
    for part in ("r50", "digits"):
        r = res.get(part)
        if r and r.get("curve"):
            out += _targets_of(part, [p for p in r["curve"] if p.get("table", "isa") == "isa"])
    return out


def _targets_of(part: str, pts: list) -> list:
    out = []
    mem = [p for p in pts if p["bandwidth"] in ("1", "2")]
    for key, tgt, what in (("latency_reduction", TARGET_LATENCY, "lower latency"),
                           ("weight_energy_reduction", TARGET_WEIGHT_ENERGY, "less off-chip weight energy")):
        best = max(mem, key=lambda p: p[key]["mean"], default=None)
        if best is None:
            continue
        met = [p for p in mem if p[key]["mean"] >= tgt]
        out.append({"part": part,
                    "target": f">= {100 * tgt:.0f} % {what} ({part}, memory-bound, queries whose SubNet contains the "
                              f"SubGraph, mean over covered SubNets)",
                    "met": bool(met), "best_mean": best[key]["mean"], "best_max": max(p[key]["max"] for p in mem),
                    "at": {"pb_tiles": best["pb_tiles"], "bandwidth": best["bandwidth"]},
                    "subnets_meeting_at_best": sum(v[key] >= tgt for v in best["per_subnet"].values()),
                    "subnets_at_best": len(best["per_subnet"]),
                    "met_at": [{"pb_tiles": p["pb_tiles"], "bandwidth": p["bandwidth"], "mean": p[key]["mean"]} for p in met]})
    return out


def _plot(res: dict, png: Path) -> "Path | None":
    parts = [(k, res[k]) for k in ("r50", "digits") if res.get(k) and res[k].get("curve")]
    if not parts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(len(parts), 2, figsize=(11, 4.0 * len(parts)), squeeze=False)
    titles = {"r50": "OFA-ResNet50 (224x224, 16x8 PEs, perf model)", "digits": "digits SuperNet (8x8 PEs, perf model)"}
    for row, (part, r) in zip(ax, parts):
        unit, div = ("MiB", 2**20) if part == "r50" else ("KiB", 2**10)
        cols = {}
        for p in r["curve"]:
            cols.setdefault(p["bandwidth"], []).append(p)
        for bw, pts in sorted(cols.items()):
            pts = sorted(pts, key=lambda p: p["pb_bytes"])
            x = [p["pb_bytes"] / div for p in pts]
            lab = f"{bw} B/cycle" if bw != "full" else "full bandwidth"
            for a, k in zip(row, ("latency_reduction", "weight_energy_reduction")):
                if k == "weight_energy_reduction" and bw != min(cols):
                    continue            # bytes do not depend on the bandwidth: one curve
                a.plot(x, [100 * p[k]["mean"] for p in pts], "-", marker="o", label=f"{lab}, mean")
                a.plot(x, [100 * p[k]["max"] for p in pts], ":", marker=".", label=f"{lab}, best SubNet")
        row[0].axhline(100 * TARGET_LATENCY, color="gray", lw=0.8, ls="--")
        row[1].axhline(100 * TARGET_WEIGHT_ENERGY, color="gray", lw=0.8, ls="--")
        for a, t in zip(row, ("latency reduction (%)", "off-chip weight-energy saving (%)")):
            a.set_xscale("log", base=2)
            a.set_xlabel(f"Persistent Buffer size ({unit})")
            a.set_ylabel(t)
            a.set_title(titles[part], fontsize=9)
            a.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.suptitle("SubGraph resident vs no PB at equal on-chip memory: SubNets that contain their best catalog "
                 "SubGraph", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def run_sgs(out_dir=None, json_path="sgs.json", quick: bool = False, *, r50: bool = True, digits: bool = True,
            rtl: bool = True, bandwidths=None, pb_sizes=None, digits_bandwidths=None, digits_pb_sizes=None,
            log=None) -> dict:
    """Run the SGS benchmark; write ``json_path`` and the plot beside it (``.png``); return the results.

    out_dir: where the builds go (None: a temporary directory, removed afterwards).
    quick: 3 ResNet50 SubNets, 2 PB sizes, 2 bandwidths, 3 digits SubNets, RTL at one bandwidth.
    r50 / digits / rtl: run part (a) / part (b) / the RTL runs of part (b).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    tmp = None
    if out_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="sushi-sgs-"))
        work = tmp
    else:
        work = Path(out_dir)
        work.mkdir(parents=True, exist_ok=True)
    res = {"format": FORMAT, "version": 1, "quick": bool(quick),
           "host": {"python": platform.python_version(), "machine": platform.machine()},
           "definitions": {
               "baseline_nopb": "the same SubNet lowered for pb_tiles = 0 and act_buf_words += pb_bytes / V (cap 65536)",
               "none": "the PB build's program with nothing resident",
               "latency_reduction": "1 - latency(SubGraph resident) / latency(baseline_nopb)",
               "weight_energy_reduction": "1 - w_rd_bytes(resident) / w_rd_bytes(baseline_nopb); off-chip weight energy "
                                          "= w_rd_bytes (tiles + requant records + LUTs) x DRAM pJ/B",
               "offchip_energy_reduction": "the same on all off-chip bytes (weights, activations, instructions)",
               "subgraph_load": "not included: a resident SubGraph is loaded once and serves many queries"},
           "targets_def": {"latency_reduction": TARGET_LATENCY, "weight_energy_reduction": TARGET_WEIGHT_ENERGY}}
    from sim.energy import DEFAULT
    from dataclasses import asdict
    res["energy_model"] = asdict(DEFAULT)
    try:
        if digits:
            res["digits"] = _digits(work, quick, digits_bandwidths or (DIGITS_BW_QUICK if quick else DIGITS_BW), rtl, log,
                                    pb_sizes=digits_pb_sizes)
        if r50:
            res["r50"] = _r50(work, quick, bandwidths or (R50_BW_QUICK if quick else R50_BW),
                              sorted(pb_sizes or (R50_PB_QUICK if quick else R50_PB)), log)
        res["targets"] = _targets(res)
        res["wall_s"] = time.perf_counter() - t0
        jp = Path(json_path)
        jp.parent.mkdir(parents=True, exist_ok=True)
        png = _plot(res, jp.with_suffix(".png"))
        res["plot"] = png.name if png else None
        jp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sgs", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", metavar="OUT", help="work directory for the builds")
    ap.add_argument("--json", required=True, metavar="FILE", help="results JSON (the plot goes beside it, .png)")
    ap.add_argument("--quick", action="store_true", help="fewer SubNets, PB sizes and bandwidths (a few minutes)")
    ap.add_argument("--no-rtl", action="store_true", help="skip the Verilator runs of part (b)")
    ap.add_argument("--no-r50", action="store_true", help="skip part (a), OFA-ResNet50")
    ap.add_argument("--no-digits", action="store_true", help="skip part (b), the digits SuperNet")
    a = ap.parse_args(argv)
    res = run_sgs(a.out, a.json, quick=a.quick, r50=not a.no_r50, digits=not a.no_digits, rtl=not a.no_rtl)
    for t in res.get("targets", []):
        print(f"{'MET ' if t['met'] else 'MISS'} {t['target']}: best mean {100 * t['best_mean']:.1f} % "
              f"(max {100 * t['best_max']:.1f} %)")
    print(f"wrote {a.json} ({res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
