"""SubGraph catalog: which *layer boxes* of the SuperNet to keep in the Persistent Buffer (ISA v4).

A SuperNet layer (with one kernel crop) has a residency **key**; every SubNet CONV that reads that
layer's tiles runs with PBKEY = key.  The SubNet's tiles of the layer are a box in (row, column)
coordinates: rows ``i < rows_s`` (dense: output groups x kernel positions, ``i = (g*kh+ky)*kw+kx``;
depthwise: groups) and columns ``c < c_s`` (input-channel words; depthwise: the group's tiles),
because OFA width / expand / depth choices take channel *prefixes*.  A SubGraph is a set of boxes
``{key: (rows, c_res)}``, one residency entry each (docs/isa.md).

Inputs (``use``), per SubNet and key: ``rows``, ``c`` and ``bands`` = how many CONV instructions
of one query fetch that box (a layer split into B row bands fetches every tile B times).  A
resident box then saves exactly ``bands * min(rows, rows_s) * min(c_res, c_s)`` tile fetches per
query of SubNet s (the PB hit count: exact, not a model).

Candidates: the intersection of all SubNets (per key used by all: the smallest rows and columns),
intersections of size clusters (SubNets sorted by weight tiles, split into 2, 3 and 4 groups),
and every SubNet's own boxes.  Each is fitted to the hardware (``pb_tiles`` tiles, ``res_entries``
keys) *exactly*: boxes are taken by value density (tile fetches saved per PB tile, summed over
the candidate's SubNets), the last one cut to the PB's room by rows.  A fitted SubGraph is a
subset of its candidate, so every SubNet that contains the candidate contains the SubGraph and
hits on every resident tile.  Ranking: ``score`` = DRAM bytes saved per query summed over the
SubNets that contain the SubGraph, per PB byte (``score_all``: mean over all SubNets, ties).
"""
from __future__ import annotations

import numpy as np

from sushi.isa import Op, encode

from .errors import CompileError

__all__ = ["build_catalog", "runs_of", "box_runs", "box_tile_ids", "loadsg_program", "residency_of",
           "CATALOG_FORMAT"]

CATALOG_FORMAT = "sushi-catalog"
CATALOG_VERSION = 2


def runs_of(tiles) -> list:
    """sorted ids -> [(lo, n)] maximal runs of consecutive ids."""
    ids = sorted(int(t) for t in tiles)
    out = []
    for t in ids:
        if out and t == out[-1][0] + out[-1][1]:
            out[-1][1] += 1
        else:
            out.append([t, 1])
    return [tuple(r) for r in out]


def box_runs(geom: dict, rows: int, c_res: int) -> list:
    """Tile-id runs of a box in PB-slot order: [(first id, n)], consecutive rows merged when their
    ids are contiguous (a row with c_res == the layer's full width continues the previous one)."""
    out = []
    K = geom["kh"] * geom["kw"]
    for i in range(rows):
        if geom["dw"]:
            lo = geom["base"] + i * geom["sg"]
        else:
            g, r = divmod(i, K)
            ky, kx = divmod(r, geom["kw"])
            lo = geom["base"] + g * geom["sg"] + ky * geom["sky"] + kx * geom["skx"]
        if out and out[-1][0] + out[-1][1] == lo:
            out[-1][1] += c_res
        else:
            out.append([lo, c_res])
    return [tuple(r) for r in out]


def box_tile_ids(geom: dict, rows: int, c_res: int) -> list:
    return [lo + j for lo, n in box_runs(geom, rows, c_res) for j in range(n)]


def residency_of(sg: dict) -> dict:
    """The residency table a catalog SubGraph's load program leaves: {key: (rows, c_res, slot)}."""
    return {int(b["key"]): (int(b["rows"]), int(b["c_res"]), int(b["slot"])) for b in sg["boxes"]}


def loadsg_program(boxes, geoms: dict, cfg) -> bytes:
    """The load program of a SubGraph: LOADSG per contiguous run of every box (PB slots packed from
    0 in box order), SETRES per box, SETRES invalidating every other key, HALT.  ``boxes`` =
    [(key, rows, c_res)]."""
    if len(boxes) > cfg.res_entries:
        raise CompileError(f"SubGraph has {len(boxes)} layer boxes, the residency table has "
                           f"{cfg.res_entries} entries")
    total = sum(r * c for _, r, c in boxes)
    if total > cfg.pb_tiles:
        raise CompileError(f"SubGraph of {total} tiles is larger than the Persistent Buffer "
                           f"({cfg.pb_tiles} tiles)")
    prog, slot, used = [], 0, set()
    for key, rows, c_res in boxes:
        if key >= cfg.res_entries:
            raise CompileError(f"SubGraph box key {key} >= res_entries {cfg.res_entries}")
        s0 = slot
        for lo, n in box_runs(geoms[key], rows, c_res):
            prog.append(encode(Op.LOADSG, tile_lo=int(lo), n_tiles=int(n), pb_slot=slot))
            slot += n
        prog.append(encode(Op.SETRES, key=int(key), rows=int(rows), c_res=int(c_res), pb_slot=s0))
        used.add(key)
    for key in range(cfg.res_entries):
        if key not in used:
            prog.append(encode(Op.SETRES, key=key, rows=0, c_res=0, pb_slot=0))
    prog.append(encode(Op.HALT))
    return b"".join(prog)


def _saved(use_s: dict, boxes: dict) -> int:
    """Tile fetches per query a SubNet (its use {key: {rows, c, bands}}) saves with ``boxes``."""
    n = 0
    for k, (r, c) in boxes.items():
        u = use_s.get(k)
        if u:
            n += u["bands"] * min(r, u["rows"]) * min(c, u["c"])
    return n


def _contains(use_s: dict, boxes: dict) -> bool:
    return all(k in use_s and r <= use_s[k]["rows"] and c <= use_s[k]["c"] for k, (r, c) in boxes.items())


def _fit(cand: dict, members: list, use: dict, cfg) -> tuple:
    """-> (boxes {key: (rows, c)} in PB order, notes, keys needed, keys dropped)."""
    dens = []
    for k, (r, c) in cand.items():
        d = sum(use[s][k]["bands"] for s in members if k in use[s]) if members else 1
        dens.append((-d, k))
    dens.sort()
    room, out, notes, dropped = cfg.pb_tiles, {}, [], 0
    for _, k in dens:
        r, c = cand[k]
        if len(out) >= cfg.res_entries or room < c:
            dropped += 1
            continue
        take = min(r, room // c)
        if take < r:
            notes.append(f"key {k}: {take} of {r} rows (pb_tiles binding)")
        out[k] = (take, c)
        room -= take * c
    if dropped:
        notes.append(f"{dropped} of {len(cand)} layer boxes left out "
                     f"({'res_entries' if len(out) >= cfg.res_entries else 'pb_tiles'} binding)")
    return out, notes, len(cand), dropped


def build_catalog(use: dict, geoms: dict, cfg, n_shared_tiles: int, max_subgraphs: int = 8) -> dict:
    """use {subnet: {key: {"rows", "c", "bands"}}}, geoms {key: layer geometry (base, sg, sky, skx,
    kh, kw, dw)} -> catalog dict (catalog.json)."""
    T = cfg.tile_bytes
    names = list(use)
    cat = {"format": CATALOG_FORMAT, "version": CATALOG_VERSION, "tile_bytes": T, "pb_tiles": cfg.pb_tiles,
           "res_entries": cfg.res_entries, "keys": len(geoms), "subgraphs": [], "binding": [], "notes": []}
    if cfg.pb_tiles == 0:
        cat["notes"].append("pb_tiles = 0: this configuration has no Persistent Buffer; no SubGraphs")
        return cat
    if not geoms:
        cat["notes"].append("no SubNet layer reads SuperNet tiles: nothing to keep resident")
        return cat
    cands = []

    def inter(grp):
        keys = set.intersection(*(set(use[s]) for s in grp))
        return {k: (min(use[s][k]["rows"] for s in grp), min(use[s][k]["c"] for s in grp)) for k in sorted(keys)}

    cands.append(("intersection(all)", names, inter(names)))
    size = {s: sum(u["rows"] * u["c"] for u in use[s].values()) for s in names}
    by_size = sorted(names, key=lambda s: size[s])
    for k in (2, 3, 4):
        for j, grp in enumerate(np.array_split(np.array(by_size, dtype=object), k)):
            grp = list(grp)
            if len(grp) > 1:
                cands.append((f"intersection(size cluster {j + 1}/{k})", grp, inter(grp)))
    for s in names:
        cands.append((f"subnet {s}", [s], {k: (u["rows"], u["c"]) for k, u in sorted(use[s].items())}))

    seen, fitted = set(), []
    for kind, members, cand in cands:
        if not cand:
            continue
        boxes, notes, need, dropped = _fit(cand, members, use, cfg)
        if not boxes:
            continue
        key = tuple(sorted(boxes.items()))
        if key in seen:
            continue
        seen.add(key)
        tiles = sum(r * c for r, c in boxes.values())
        per, saved_total = {}, 0
        for s in names:
            hits = _saved(use[s], boxes)
            per[s] = {"tiles": int(sum(min(r, use[s][k]["rows"]) * min(c, use[s][k]["c"])
                                       for k, (r, c) in boxes.items() if k in use[s])),
                      "of": int(size[s]), "pb_hits": int(hits), "dram_bytes_saved": int(hits * T)}
            saved_total += hits * T
        contains = [s for s in names if _contains(use[s], boxes)]
        nbytes = tiles * T
        score = sum(per[s]["dram_bytes_saved"] for s in contains) / nbytes
        slot, blist = 0, []
        for k, (r, c) in boxes.items():
            blist.append({"key": int(k), "rows": int(r), "c_res": int(c), "slot": slot, "tiles": int(r * c),
                          "layer": geoms[k].get("layer", "")})
            slot += r * c
        n_runs = sum(len(box_runs(geoms[b["key"]], b["rows"], b["c_res"])) for b in blist)
        fitted.append(dict(kind=kind, tiles=int(tiles), bytes=int(nbytes), boxes=blist, loadsg_runs=n_runs,
                           keys_needed=need, keys_dropped=dropped, notes=notes, subnets=contains,
                           candidate_members=list(members), per_subnet=per,
                           saved_bytes_per_query=round(saved_total / len(names), 1),
                           score=round(score, 6), score_all=round(saved_total / len(names) / nbytes, 6)))
    fitted.sort(key=lambda c: (-c["score"], -c["score_all"], c["bytes"]))
    chosen = fitted[:max_subgraphs]
    inter_c = [c for c in fitted if c["kind"] == "intersection(all)"]
    if inter_c and inter_c[0] not in chosen:
        chosen = chosen[:max_subgraphs - 1] + inter_c
    # for every SubNet, the SubGraph that saves it the most among those it contains (the scheduler's
    # pick for a stream of that SubNet), even if that makes the catalog longer
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
    if any(c["keys_dropped"] for c in chosen):
        cat["binding"].append("res_entries" if any("res_entries binding" in n for c in chosen for n in c["notes"])
                              else "pb_tiles")
    if any(any("pb_tiles" in n for n in c["notes"]) for c in chosen) and "pb_tiles" not in cat["binding"]:
        cat["binding"].append("pb_tiles")
    cat["shared_tiles"] = n_shared_tiles
    return cat
