"""SubGraph catalog: candidate sets of weight tiles to keep in the Persistent Buffer.

Inputs are, per SubNet, how many times one query fetches every tile id (``fetches[s][t]``: a CONV
layer split into B row bands fetches each of its tiles B times).  Then a resident tile t saves
``fetches[s][t] * tile_bytes`` DRAM bytes on every query of SubNet s, and the PB hit count of
that query is the sum of ``fetches[s][t]`` over the resident tiles it uses (exact, not a model).

Candidates: the intersection of all SubNets; intersections of size clusters (SubNets sorted by
their tile count, split into 2, 3 and 4 groups); popularity cores (tiles used by >= f of the
SubNets, f in 1/4, 1/2, 3/4); and every SubNet's own tile set.  Each candidate is fitted to the
hardware in two ways:

* **merged** (``fit = "merge"``): (1) to at most ``pb_tiles`` tiles, keeping tiles in order of value
  (DRAM bytes saved over all SubNets), (2) to at most ``res_ranges`` runs of contiguous ids: while
  there are too many runs, merge the two runs with the smallest gap when the gap tiles still fit
  the PB (the gap tiles ride along), else drop the run of least value.  Gap tiles break containment:
  a SubNet that does not use them no longer *contains* the SubGraph.
* **exact** (``fit = "exact"``, only when the candidate needs more than ``res_ranges`` runs or
  tiles): a subset of the candidate's own runs, never a gap tile, so every SubNet that contains the
  candidate contains the SubGraph.  Runs are taken greedily by value (DRAM bytes saved over the
  SubNets, per table entry), at most ``res_ranges`` of them, the last one cut to the PB's room.

The fitted candidates are deduplicated and ranked by ``score`` = DRAM bytes saved per query summed
over the SubNets that **contain** the SubGraph, per PB byte (a contained query hits on every
resident tile; the other SubNets' partial savings are kept in ``per_subnet`` and
``score_all`` = their mean saving per PB byte).
"""
from __future__ import annotations

import numpy as np

from sushi.isa import Op, encode

from .errors import CompileError

__all__ = ["build_catalog", "runs_of", "loadsg_program", "CATALOG_FORMAT"]

CATALOG_FORMAT = "sushi-catalog"


def runs_of(tiles) -> list:
    """sorted ids -> [(lo, n)] maximal runs of consecutive ids."""
    t = sorted(set(int(x) for x in tiles))
    out = []
    for x in t:
        if out and out[-1][0] + out[-1][1] == x:
            out[-1][1] += 1
        else:
            out.append([x, 1])
    return [tuple(r) for r in out]


def loadsg_program(runs, cfg) -> bytes:
    """LOADSG per run (entries 0..k-1, PB slots packed from 0), the other entries invalidated, HALT."""
    if len(runs) > cfg.res_ranges:
        raise CompileError(f"SubGraph has {len(runs)} runs of tile ids, the residency table has "
                           f"{cfg.res_ranges} entries")
    total = sum(n for _, n in runs)
    if total > cfg.pb_tiles:
        raise CompileError(f"SubGraph has {total} tiles, larger than the Persistent Buffer "
                           f"({cfg.pb_tiles} tiles)")
    prog, slot = [], 0
    for e, (lo, n) in enumerate(runs):
        prog.append(encode(Op.LOADSG, entry=e, tile_lo=int(lo), n_tiles=int(n), pb_slot=slot))
        slot += n
    for e in range(len(runs), cfg.res_ranges):
        prog.append(encode(Op.LOADSG, entry=e, tile_lo=0, n_tiles=0, pb_slot=0))
    prog.append(encode(Op.HALT))
    return b"".join(prog)


def _fit(tiles, value, cfg):
    """-> (runs, notes) fitted to pb_tiles and res_ranges."""
    notes = []
    tiles = sorted(tiles)
    if len(tiles) > cfg.pb_tiles:
        keep = sorted(tiles, key=lambda t: (-value.get(t, 0), t))[:cfg.pb_tiles]
        notes.append(f"trimmed {len(tiles)} -> {cfg.pb_tiles} tiles (pb_tiles)")
        tiles = sorted(keep)
    runs = [list(r) for r in runs_of(tiles)]
    need = len(runs)
    dropped = 0
    while len(runs) > cfg.res_ranges:
        size = sum(n for _, n in runs)
        gaps = [(runs[i + 1][0] - (runs[i][0] + runs[i][1]), i) for i in range(len(runs) - 1)]
        gap, i = min(gaps)
        if size + gap <= cfg.pb_tiles:
            runs[i][1] = runs[i + 1][0] + runs[i + 1][1] - runs[i][0]
            del runs[i + 1]
            continue
        vals = [sum(value.get(t, 0) for t in range(lo, lo + n)) for lo, n in runs]
        del runs[int(np.argmin(vals))]
        dropped += 1
    if need > cfg.res_ranges:
        notes.append(f"{need} runs > res_ranges {cfg.res_ranges}: merged gaps"
                     + (f", dropped {dropped} least valuable run(s) (res_ranges binding)" if dropped else ""))
    return [tuple(r) for r in runs], notes, need, dropped


def _fit_exact(tiles, value, cfg):
    """-> (runs, notes, need, dropped): a subset of the candidate's runs (no gap tiles), greedily by
    value, at most res_ranges runs and pb_tiles tiles (the last run cut to fit)."""
    runs = runs_of(tiles)
    need = len(runs)
    vals = [(sum(value.get(t, 0) for t in range(lo, lo + n)), lo, n) for lo, n in runs]
    vals.sort(key=lambda v: (-v[0], v[1]))
    out, room = [], cfg.pb_tiles
    for v, lo, n in vals:
        if len(out) >= cfg.res_ranges or room <= 0:
            break
        if n > room:
            # keep the most valuable contiguous window of `room` tiles of this run
            pv = np.cumsum([0] + [value.get(t, 0) for t in range(lo, lo + n)])
            w = int(np.argmax(pv[room:] - pv[:-room]))
            lo, n = lo + w, room
        out.append((lo, n))
        room -= n
    out.sort()
    dropped = need - len(out)
    notes = [f"exact fit: {len(out)} of {need} runs, no gap tiles"] if dropped or len(out) != need else []
    return out, notes, need, dropped


def build_catalog(fetches: dict, cfg, n_shared_tiles: int, max_subgraphs: int = 8) -> dict:
    """fetches {subnet: {tile id: fetches per query}} -> catalog dict (catalog.json)."""
    T = cfg.tile_bytes
    names = list(fetches)
    sets = {s: set(fetches[s]) for s in names}
    cat = {"format": CATALOG_FORMAT, "version": 1, "tile_bytes": T, "pb_tiles": cfg.pb_tiles,
           "res_ranges": cfg.res_ranges, "subgraphs": [], "binding": [], "notes": []}
    if cfg.pb_tiles == 0:
        cat["notes"].append("pb_tiles = 0: this configuration has no Persistent Buffer; no SubGraphs")
        return cat
    value = {}
    for s in names:
        for t, k in fetches[s].items():
            value[t] = value.get(t, 0) + k * T
    cands = []

    def add(kind, members, tiles):
        tiles = set(tiles)
        if tiles:
            cands.append((kind, list(members), tiles))

    inter = set.intersection(*sets.values()) if sets else set()
    add("intersection(all)", names, inter)
    by_size = sorted(names, key=lambda s: len(sets[s]))
    for k in (2, 3, 4):
        for j, grp in enumerate(np.array_split(np.array(by_size, dtype=object), k)):
            grp = list(grp)
            if len(grp) > 1:
                add(f"intersection(size cluster {j + 1}/{k})", grp, set.intersection(*(sets[s] for s in grp)))
    count = {}
    for s in names:
        for t in sets[s]:
            count[t] = count.get(t, 0) + 1
    for f in (0.25, 0.5, 0.75):
        add(f"popularity core (used by >= {f:.0%} of SubNets)", [], {t for t, c in count.items() if c >= f * len(names)})
    for s in names:
        add(f"subnet {s}", [s], sets[s])

    seen, fitted = set(), []
    for (kind, members, tiles), how in [(c, h) for c in cands for h in ("merge", "exact")]:
        if how == "merge":
            runs, notes, need, dropped = _fit(tiles, value, cfg)
        else:
            if len(tiles) <= cfg.pb_tiles and len(runs_of(tiles)) <= cfg.res_ranges:
                continue            # fits as it is: the merged fit is the candidate itself
            runs, notes, need, dropped = _fit_exact(tiles, value, cfg)
        if not runs:
            continue
        key = tuple(runs)
        if key in seen:
            continue
        seen.add(key)
        ids = set()
        for lo, n in runs:
            ids.update(range(lo, lo + n))
        per = {}
        saved_total = 0
        for s in names:
            cov = ids & sets[s]
            hits = sum(fetches[s][t] for t in cov)
            per[s] = {"tiles": len(cov), "of": len(sets[s]), "pb_hits": int(hits),
                      "dram_bytes_saved": int(hits * T)}
            saved_total += hits * T
        contains = [s for s in names if ids <= sets[s]]
        nbytes = len(ids) * T
        score = sum(per[s]["dram_bytes_saved"] for s in contains) / nbytes
        fitted.append(dict(kind=kind, fit=how, tiles=len(ids), bytes=nbytes, runs=[list(r) for r in runs],
                           runs_needed=need, runs_dropped=dropped, notes=notes, subnets=contains,
                           candidate_members=members, per_subnet=per,
                           saved_bytes_per_query=round(saved_total / len(names), 1),
                           score=round(score, 6), score_all=round(saved_total / len(names) / nbytes, 6)))
    fitted.sort(key=lambda c: (-c["score"], -c["score_all"], c["bytes"]))
    # always keep the intersection of all SubNets if it survived fitting
    chosen = fitted[:max_subgraphs]
    inter_c = [c for c in fitted if c["kind"] == "intersection(all)"]
    if inter_c and inter_c[0] not in chosen:
        chosen = chosen[:max_subgraphs - 1] + inter_c
    # and, for every SubNet, the SubGraph that saves it the most among those it contains (the
    # scheduler's pick for a stream of that SubNet), even if that makes the catalog longer
    for s in names:
        mine = [c for c in fitted if s in c["subnets"]]
        if mine:
            b = max(mine, key=lambda c: (c["per_subnet"][s]["dram_bytes_saved"], c["score"]))
            if not any(b is c for c in chosen):
                chosen.append(b)
    chosen.sort(key=lambda c: (-c["score"], -c["score_all"], c["bytes"]))
    for i, c in enumerate(chosen):
        c["id"] = f"sg{i}"
    cat["subgraphs"] = [dict(id=c.pop("id"), **c) for c in chosen]
    if any(c["runs_dropped"] for c in chosen):
        worst = max(c["runs_needed"] for c in chosen)
        cat["binding"].append("res_ranges")
        cat["notes"].append(f"the residency table is the binding constraint for "
                            f"{sum(1 for c in chosen if c['runs_dropped'])} SubGraph(s): they need up to "
                            f"{worst} runs, the hardware has res_ranges = {cfg.res_ranges}")
        cat["suggested_res_ranges"] = worst
    if any(any("pb_tiles" in n for n in c["notes"]) for c in chosen):
        cat["binding"].append("pb_tiles")
    cat["shared_tiles"] = n_shared_tiles
    return cat
