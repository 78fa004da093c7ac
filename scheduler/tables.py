"""The latency table (`latency_table.json`, `"format": "sushi-latency"`, `"version": 1`).

`load_table(path)` reads and validates one; `validate_table(obj, source)` validates a parsed object;
`synthetic_table(...)` builds a plausible one for tests and benchmarks; `LatencyTable.to_json()` writes
one back.  The format is defined in docs/scheduler.md.  Every error names the file and the field.

In memory the table is dense: column 0 is "none" (nothing resident), column 1 + j is SubGraph
`sg_ids[j]`.  An entry missing from `latency_ms[s]` (or the bytes / energy maps) means the SubGraph does
not help that SubNet: the "none" value is used.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SchedulerError

FORMAT = "sushi-latency"
VERSION = 1
NONE = "none"

#: Off-chip (DRAM) access energy used by the synthetic table and, when a SubGraph gives no
#: `load_energy_uj`, the fallback estimate of a load's energy when the table has no bytes to
#: derive a ratio from.  ~20 pJ/bit for LPDDR4 device + PHY (Horowitz, ISSCC'14 gives 1.3-2.6 nJ per
#: 64-bit DRAM access, i.e. 20-40 pJ/bit); 160 pJ per byte.
DRAM_PJ_PER_BYTE = 160.0


@dataclass
class LatencyTable:
    subnets: list[str]
    accuracy: np.ndarray            # (S,) float
    macs: np.ndarray                # (S,) int
    sg_ids: list[str]
    sg_bytes: np.ndarray            # (G,) int
    sg_tiles: np.ndarray            # (G,) int
    sg_subnets: list[list[str]]
    load_ms: np.ndarray             # (G,) float: accelerator busy time to load the SubGraph
    load_bytes: np.ndarray          # (G,) int
    load_energy_uj: np.ndarray      # (G,) float (given, or load_bytes x the table's energy per byte)
    latency: np.ndarray             # (1+G, S) ms; row 0 = none
    offchip_bytes: np.ndarray       # (1+G, S)
    energy_uj: np.ndarray           # (1+G, S)
    clock_mhz: float = 0.0
    pb_bytes: int = 0
    source: str = "<table>"
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------ helpers
    @property
    def n_subnets(self) -> int:
        return len(self.subnets)

    @property
    def n_sgs(self) -> int:
        return len(self.sg_ids)

    def column(self, sg: str | None) -> int:
        """Dense column of a SubGraph id (None or "none" -> 0)."""
        if sg is None or sg == NONE:
            return 0
        try:
            return 1 + self.sg_ids.index(sg)
        except ValueError:
            raise SchedulerError(f"{self.source}: unknown SubGraph {sg!r}; SubGraphs: "
                                 f"{', '.join(self.sg_ids) or '(none)'}") from None

    def sg_name(self, col: int) -> str:
        return NONE if col == 0 else self.sg_ids[col - 1]

    def subnet_index(self, name: str) -> int:
        try:
            return self.subnets.index(name)
        except ValueError:
            raise SchedulerError(f"{self.source}: unknown SubNet {name!r}") from None

    def to_json(self) -> dict:
        def row(arr, s, cast):
            d = {NONE: cast(arr[0, s])}
            for j, g in enumerate(self.sg_ids):
                if arr[1 + j, s] != arr[0, s]:
                    d[g] = cast(arr[1 + j, s])
            return d
        return {
            "format": FORMAT, "version": VERSION, "clock_mhz": float(self.clock_mhz), "pb_bytes": int(self.pb_bytes),
            "subnets": {n: {"accuracy": float(self.accuracy[i]), "macs": int(self.macs[i])}
                        for i, n in enumerate(self.subnets)},
            "subgraphs": {g: {"bytes": int(self.sg_bytes[j]), "tiles": int(self.sg_tiles[j]),
                              "subnets": list(self.sg_subnets[j]), "load_ms": float(self.load_ms[j]),
                              "load_bytes": int(self.load_bytes[j]),
                              "load_energy_uj": float(self.load_energy_uj[j])}
                          for j, g in enumerate(self.sg_ids)},
            "latency_ms": {n: row(self.latency, i, float) for i, n in enumerate(self.subnets)},
            "offchip_bytes": {n: row(self.offchip_bytes, i, int) for i, n in enumerate(self.subnets)},
            "offchip_energy_uj": {n: row(self.energy_uj, i, float) for i, n in enumerate(self.subnets)},
        }

    def write(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path


# ---------------------------------------------------------------- loading
def load_table(path) -> LatencyTable:
    """Read `path` (a latency_table.json, or a build directory holding one) and validate it."""
    path = Path(path)
    if path.is_dir():
        path = path / "latency_table.json"
    if not path.exists():
        raise SchedulerError(f"{path}: latency table does not exist")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchedulerError(f"{path}: not valid JSON: {e}") from None
    return validate_table(obj, str(path))


def _num(v, where, *, integer=False, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchedulerError(f"{where}: expected a number, got {v!r}")
    if integer and not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
        raise SchedulerError(f"{where}: expected an integer, got {v!r}")
    if not math.isfinite(v):
        raise SchedulerError(f"{where}: must be finite, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise SchedulerError(f"{where}: must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise SchedulerError(f"{where}: must be <= {hi}, got {v!r}")
    return int(v) if integer else float(v)


def _dict(v, where):
    if not isinstance(v, dict):
        raise SchedulerError(f"{where}: expected an object, got {type(v).__name__}")
    return v


def validate_table(obj, source: str = "<table>") -> LatencyTable:
    """Check every field of a parsed latency table; return the dense in-memory form."""
    src = source
    _dict(obj, f"{src}: top level")
    if obj.get("format") != FORMAT:
        raise SchedulerError(f"{src}: format: expected {FORMAT!r}, got {obj.get('format')!r}")
    if obj.get("version") != VERSION:
        raise SchedulerError(f"{src}: version: expected {VERSION}, got {obj.get('version')!r}")
    for k in ("clock_mhz", "pb_bytes", "subnets", "subgraphs", "latency_ms", "offchip_bytes", "offchip_energy_uj"):
        if k not in obj:
            raise SchedulerError(f"{src}: missing field {k!r}")
    clock = _num(obj["clock_mhz"], f"{src}: clock_mhz", lo=0, lo_open=True)
    pb = _num(obj["pb_bytes"], f"{src}: pb_bytes", integer=True, lo=0)

    sn = _dict(obj["subnets"], f"{src}: subnets")
    if not sn:
        raise SchedulerError(f"{src}: subnets: at least one SubNet is needed")
    names = list(sn)
    acc = np.empty(len(names))
    macs = np.empty(len(names), dtype=np.int64)
    for i, n in enumerate(names):
        e = _dict(sn[n], f"{src}: subnets.{n}")
        for k in ("accuracy", "macs"):
            if k not in e:
                raise SchedulerError(f"{src}: subnets.{n}: missing field {k!r}")
        acc[i] = _num(e["accuracy"], f"{src}: subnets.{n}.accuracy", lo=0, hi=1)
        macs[i] = _num(e["macs"], f"{src}: subnets.{n}.macs", integer=True, lo=0)
    nameset = set(names)

    sgs = _dict(obj["subgraphs"], f"{src}: subgraphs")
    sg_ids = list(sgs)
    if NONE in sgs:
        raise SchedulerError(f"{src}: subgraphs.none: 'none' is reserved for 'nothing resident'")
    G = len(sg_ids)
    sg_bytes = np.zeros(G, dtype=np.int64)
    sg_tiles = np.zeros(G, dtype=np.int64)
    load_ms = np.zeros(G)
    load_bytes = np.zeros(G, dtype=np.int64)
    load_e = np.full(G, np.nan)
    sg_sub = []
    for j, g in enumerate(sg_ids):
        w = f"{src}: subgraphs.{g}"
        e = _dict(sgs[g], w)
        for k in ("bytes", "tiles", "subnets", "load_ms", "load_bytes"):
            if k not in e:
                raise SchedulerError(f"{w}: missing field {k!r}")
        sg_bytes[j] = _num(e["bytes"], f"{w}.bytes", integer=True, lo=0)
        if pb and sg_bytes[j] > pb:
            raise SchedulerError(f"{w}.bytes: {sg_bytes[j]} does not fit the PB (pb_bytes = {pb})")
        sg_tiles[j] = _num(e["tiles"], f"{w}.tiles", integer=True, lo=0)
        load_ms[j] = _num(e["load_ms"], f"{w}.load_ms", lo=0)
        load_bytes[j] = _num(e["load_bytes"], f"{w}.load_bytes", integer=True, lo=0)
        if "load_energy_uj" in e:
            load_e[j] = _num(e["load_energy_uj"], f"{w}.load_energy_uj", lo=0)
        if not isinstance(e["subnets"], list) or not all(isinstance(x, str) for x in e["subnets"]):
            raise SchedulerError(f"{w}.subnets: expected a list of SubNet names")
        for x in e["subnets"]:
            if x not in nameset:
                raise SchedulerError(f"{w}.subnets: unknown SubNet {x!r}")
        sg_sub.append(list(e["subnets"]))

    cols = {NONE: 0, **{g: 1 + j for j, g in enumerate(sg_ids)}}

    def dense(key, integer, lo_open):
        m = _dict(obj[key], f"{src}: {key}")
        out = np.zeros((1 + G, len(names)), dtype=np.int64 if integer else float)
        for n in m:
            if n not in nameset:
                raise SchedulerError(f"{src}: {key}.{n}: unknown SubNet {n!r}")
        for i, n in enumerate(names):
            if n not in m:
                raise SchedulerError(f"{src}: {key}: missing SubNet {n!r}")
            row = _dict(m[n], f"{src}: {key}.{n}")
            if NONE not in row:
                raise SchedulerError(f"{src}: {key}.{n}: missing 'none' entry")
            base = _num(row[NONE], f"{src}: {key}.{n}.none", integer=integer, lo=0, lo_open=lo_open)
            out[:, i] = base
            for g, v in row.items():
                if g == NONE:
                    continue
                if g not in cols:
                    raise SchedulerError(f"{src}: {key}.{n}.{g}: unknown SubGraph {g!r}")
                out[cols[g], i] = _num(v, f"{src}: {key}.{n}.{g}", integer=integer, lo=0, lo_open=lo_open)
        return out

    lat = dense("latency_ms", False, True)
    ob = dense("offchip_bytes", True, False)
    en = dense("offchip_energy_uj", False, False)
    # a load's energy: given, else the table's own off-chip energy per byte
    if np.isnan(load_e).any():
        tb = ob[0].sum()
        pj_per_byte = (en[0].sum() * 1e6 / tb) if tb > 0 else DRAM_PJ_PER_BYTE
        load_e = np.where(np.isnan(load_e), load_bytes * pj_per_byte * 1e-6, load_e)
    extra = {k: v for k, v in obj.items() if k not in (
        "format", "version", "clock_mhz", "pb_bytes", "subnets", "subgraphs", "latency_ms", "offchip_bytes",
        "offchip_energy_uj")}
    return LatencyTable(names, acc, macs, sg_ids, sg_bytes, sg_tiles, sg_sub, load_ms, load_bytes, load_e,
                        lat, ob, en, clock, pb, src, extra)


# ---------------------------------------------------------------- synthetic
def synthetic_table(n_stages: int = 4, seed: int = 0, pb_frac: float = 0.45, dram_gbps: float = 4.0,
                    tops: float = 0.4, overlap: float = 0.2) -> LatencyTable:
    """An OFA-MobileNetV3-like table: SubNets from (depth, expand, kernel) choices per stage.

    SubNet s = (d, e, k) per stage; its weights are the first d blocks of each stage, expand-ratio
    channel prefix e/6 and kernel centre crop k.  A SubGraph g = (d, e, k) uniform over stages is the
    set of tiles every SubNet with d_s >= d, e_s >= e, k_s >= k per stage shares; it is resident-useful
    for exactly those SubNets.  Latency = compute + (1 - overlap) x memory time (weights not in the
    PB + activations), i.e. a weight-streaming, partly memory-bound accelerator at batch 1.
    Accuracy is a concave function of MACs plus a per-SubNet spread, in 0.70..0.80.
    """
    rng = np.random.default_rng(seed)
    D, E, K = (2, 3, 4), (3, 4, 6), (3, 5, 7)
    ch = [24 * 2 ** i for i in range(n_stages)]            # stage widths
    hw = [max(28 // 2 ** i, 2) for i in range(n_stages)]           # stage resolutions
    def block_w(st, e, k):                                 # int8 weight bytes of one MBConv block
        c = ch[st]; m = c * e
        return c * m + m * k * k + m * c
    def block_macs(st, e, k):
        return block_w(st, e, k) * hw[st] ** 2
    def weights(cfg):
        return sum(block_w(st, cfg[st][1], cfg[st][2]) * cfg[st][0] for st in range(n_stages))
    def macs(cfg):
        return sum(block_macs(st, cfg[st][1], cfg[st][2]) * cfg[st][0] for st in range(n_stages))
    def acts(cfg):
        # only stage inputs/outputs spill off chip; the rest stays in the activation buffers
        return sum(ch[st] * hw[st] ** 2 * 2 for st in range(n_stages))

    cfgs = {}
    for d in D:                                            # uniform SubNets
        for e in E:
            for k in K:
                cfgs[f"d{d}e{e}k{k}"] = tuple((d, e, k) for _ in range(n_stages))
    while len(cfgs) < 64:                                  # and random mixed ones
        c = tuple((int(rng.choice(D)), int(rng.choice(E)), int(rng.choice(K))) for _ in range(n_stages))
        cfgs["m" + "".join(f"{d}{e}{k}" for d, e, k in c)] = c
    names = list(cfgs)
    M = np.array([macs(cfgs[n]) for n in names], dtype=np.int64)
    lm = np.log(M)
    acc = 0.70 + 0.10 * ((lm - lm.min()) / (lm.max() - lm.min())) ** 0.7 + rng.normal(0, 0.004, len(names))
    acc = np.clip(acc, 0.0, 1.0).round(4)

    wmax = max(weights(c) for c in cfgs.values())
    pb = int(pb_frac * wmax)
    sgs = {}
    for d in D:
        for e in E:
            for k in K:
                g = tuple((d, e, k) for _ in range(n_stages))
                b = weights(g)
                if b <= pb:
                    sgs[f"sg_d{d}e{e}k{k}"] = (g, b)
    bw = dram_gbps * 1e9 / 1e3                               # bytes per ms
    ops = tops * 1e12 / 1e3 / 2                              # MACs per ms
    def contains(s, g):
        return all(s[i][0] >= g[i][0] and s[i][1] >= g[i][1] and s[i][2] >= g[i][2] for i in range(n_stages))
    lat, ob, en = {}, {}, {}
    for n in names:
        c = cfgs[n]
        w, a, mc = weights(c), acts(c), macs(c)
        def point(res):
            byt = w - res + a
            return compute + (1 - overlap) * byt / bw, byt
        compute = mc / ops
        l0, b0 = point(0)
        lat[n], ob[n], en[n] = {NONE: round(l0, 6)}, {NONE: int(b0)}, {NONE: round(b0 * DRAM_PJ_PER_BYTE * 1e-6, 6)}
        for gid, (g, b) in sgs.items():
            if contains(c, g):
                l1, b1 = point(b)
                lat[n][gid], ob[n][gid], en[n][gid] = round(l1, 6), int(b1), round(b1 * DRAM_PJ_PER_BYTE * 1e-6, 6)
    obj = {"format": FORMAT, "version": VERSION, "clock_mhz": 200.0, "pb_bytes": pb,
           "subnets": {n: {"accuracy": float(acc[i]), "macs": int(M[i])} for i, n in enumerate(names)},
           "subgraphs": {gid: {"bytes": int(b), "tiles": int(math.ceil(b / 512)),
                               "subnets": [n for n in names if contains(cfgs[n], g)],
                               "load_ms": round(b / bw, 6), "load_bytes": int(b)}
                         for gid, (g, b) in sgs.items()},
           "latency_ms": lat, "offchip_bytes": ob, "offchip_energy_uj": en,
           "generator": f"scheduler.tables.synthetic_table(n_stages={n_stages}, seed={seed})"}
    return validate_table(obj, "<synthetic>")
