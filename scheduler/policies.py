"""Scheduling policies: SushiSched and the baselines (docs/scheduler.md has the prose).

Every queued policy is described by the same few things, which the replay's hot loop consumes:

* a *frontier* per PB column g (0 = nothing resident, 1 + j = SubGraph j): SubNets sorted by the
  latency the policy *believes* they take with g resident, keeping only those more accurate than
  every faster one.  "Most accurate SubNet that finishes within the slack" is then one bisection;
* a queue discipline (`fifo` or `edf`, earliest deadline first);
* the SubGraph resident before the trace starts (`initial`) and, for SushiSched, a `check` hook
  the replay calls every `check_every` dispatches to re-choose the resident SubGraph;
* `fallback`: what happens to a query no SubNet can serve in time: `drop` it, or serve the
  `fastest` SubNet that meets its accuracy floor (late).

The oracle is not a queued policy: `oracle_bound` computes it directly (see its docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import SchedulerError
from .tables import LatencyTable

POLICIES = ("sushi", "no-pb", "fixed", "slackfit", "static-max", "static-min", "oracle")
FALLBACKS = ("drop", "fastest")


@dataclass
class Frontier:
    lat: list          # per column: ascending decision latencies (ms)
    idx: list          # per column: SubNet index at each frontier point
    acc: list          # per column: accuracy at each frontier point (ascending)
    lat_np: list       # numpy versions of lat / idx (for vectorised window scoring)
    idx_np: list


def build_frontier(keys: np.ndarray, acc: np.ndarray, allowed: np.ndarray | None = None) -> Frontier:
    """keys: (C, S) decision latency per column and SubNet."""
    C, S = keys.shape
    allowed = np.ones(S, bool) if allowed is None else allowed
    F = Frontier([], [], [], [], [])
    for c in range(C):
        order = sorted((i for i in range(S) if allowed[i]), key=lambda i: (keys[c, i], -acc[i]))
        lat, idx, ac = [], [], []
        best = -1.0
        for i in order:
            if acc[i] > best:
                if lat and keys[c, i] == lat[-1]:      # same latency, more accurate: replace
                    lat.pop(); idx.pop(); ac.pop()
                lat.append(float(keys[c, i])); idx.append(i); ac.append(float(acc[i]))
                best = acc[i]
        F.lat.append(lat); F.idx.append(idx); F.acc.append(ac)
        F.lat_np.append(np.array(lat)); F.idx_np.append(np.array(idx, dtype=np.int64))
    return F


def window_choice(F: Frontier, col: int, slack: np.ndarray, floor: np.ndarray):
    """Vectorised selection for many queries under one column: (subnet idx or -1, feasible mask)."""
    j = np.searchsorted(F.lat_np[col], slack, side="right") - 1
    ok = j >= 0
    s = np.where(ok, F.idx_np[col][np.maximum(j, 0)], -1)
    return s, ok


def _stacked(F: Frontier):
    """All columns' frontiers in one sorted array (column c offset by c x span) for one searchsorted."""
    st = getattr(F, "_stack", None)
    if st is None:
        top = max((l[-1] for l in F.lat if l), default=1.0)
        span = top * 2 + 10.0
        keys = np.concatenate([F.lat_np[c] + c * span for c in range(len(F.lat))])
        idx = np.concatenate([F.idx_np[c] for c in range(len(F.lat))])
        starts = np.cumsum([0] + [len(l) for l in F.lat])[:-1]
        st = F._stack = (keys, idx, starts, span, top)
    return st


GRID = 1024


def _value_grid(table: LatencyTable, F: Frontier, energy_weight: float):
    """Per column, the value (accuracy - energy term) of the SubNet chosen at each slack of a fine
    grid from 0 to the slowest frontier latency (grid point 0 stands for 'no slack': value 0)."""
    cache = getattr(F, "_grid", None)
    if cache is not None and cache[0] == energy_weight:
        return cache[1], cache[2]
    keys, idx, starts, span, top = _stacked(F)
    grid = np.linspace(0.0, top * 1.0001, GRID)
    eref = float(table.energy_uj[0].mean()) or 1.0
    val = np.zeros((len(F.lat), GRID))
    for c in range(len(F.lat)):
        j = np.searchsorted(F.lat_np[c], grid, side="right") - 1
        ok = j >= 0
        sn = F.idx_np[c][np.maximum(j, 0)]
        val[c] = np.where(ok, table.accuracy[sn] - energy_weight * table.energy_uj[c][sn] / eref, 0.0)
    F._grid = (energy_weight, grid, val)
    return grid, val


def score_columns(table: LatencyTable, F: Frontier, slack: np.ndarray, floor: np.ndarray,
                  energy_weight: float, cols=None) -> np.ndarray:
    """Mean per-query value of each PB column for queries with these slacks and floors:
    accuracy of the SubNet chosen (0 if none fits or it is below the floor) minus
    `energy_weight` x its off-chip energy relative to the table's mean "none" energy."""
    keys, idx, starts, span, top = _stacked(F)
    C = len(F.lat)
    cs = np.arange(C) if cols is None else np.asarray(list(cols))
    floor = np.asarray(floor, float)
    if len(slack) > 64 and not floor.any():
        # no floors: a histogram of the slacks on a fine grid against each column's value curve
        grid, val = _value_grid(table, F, energy_weight)
        b = np.clip(((np.asarray(slack, float) - grid[0]) / (grid[1] - grid[0])).astype(np.int64),
                    0, len(grid) - 1)
        b[np.asarray(slack) < grid[0]] = 0
        cnt = np.bincount(b, minlength=len(grid))
        out = np.full(C, -np.inf)
        out[cs] = val[cs] @ cnt / len(slack)
        return out
    sl = np.clip(np.asarray(slack, float), -1.0, top + 1.0)
    pos = np.searchsorted(keys, sl[None, :] + (cs * span)[:, None], side="right") - 1   # (C', W)
    ok = pos >= starts[cs][:, None]
    s = idx[np.maximum(pos, 0)]
    a = table.accuracy[s]
    ok &= a >= np.asarray(floor)[None, :]
    a = np.where(ok, a, 0.0)
    e = np.where(ok, table.energy_uj[cs[:, None], s], 0.0)
    eref = float(table.energy_uj[0].mean()) or 1.0
    out = np.full(C, -np.inf)
    out[cs] = a.mean(axis=1) - energy_weight * e.mean(axis=1) / eref
    return out


@dataclass
class Policy:
    name: str
    frontier: Frontier
    discipline: str = "edf"          # fifo | edf
    initial: int = 0                 # PB column resident before the trace (loaded offline)
    fallback: str = "drop"
    lookahead: bool = False
    check_every: int = 0             # call check() every this many dispatches (0: never)
    lookahead_k: int = 16            # waiting queries the lookahead protects
    doc: str = ""

    def check(self, ctx, t_ms: float):  # -> (target column, dispatches until the next call)
        raise TypeError(f"policy {self.name!r} sets check_every = {self.check_every} but defines no check()")


def offline_column(table: LatencyTable, F: Frontier, slo_ms: np.ndarray, floor: np.ndarray,
                   energy_weight: float = 0.02) -> int:
    """The SubGraph best for a whole SLO mix assuming no queueing (slack = SLO)."""
    if table.n_sgs == 0:
        return 0
    if len(slo_ms) > 8192:
        sel = np.linspace(0, len(slo_ms) - 1, 8192).astype(int)
        slo_ms, floor = slo_ms[sel], floor[sel]
    sc = score_columns(table, F, slo_ms, floor, energy_weight, cols=range(1, 1 + table.n_sgs))
    return int(np.argmax(sc))


def _exact_frontier(table: LatencyTable) -> Frontier:
    return build_frontier(table.latency, table.accuracy)


def _pin(frontier_none_only: Frontier, C: int) -> Frontier:
    return Frontier([frontier_none_only.lat[0]] * C, [frontier_none_only.idx[0]] * C,
                    [frontier_none_only.acc[0]] * C, [frontier_none_only.lat_np[0]] * C,
                    [frontier_none_only.idx_np[0]] * C)


# ---------------------------------------------------------------- SushiSched
@dataclass
class SushiSched(Policy):
    """Per query: the most accurate SubNet whose predicted finish (now + L[s][resident]) meets the
    deadline (and, with `lookahead`, still leaves the most urgent waiting query time for the fastest
    SubNet) and whose accuracy meets the floor.  Every `period` dispatches, or (at least period/2
    dispatches after the last choice) when the mean slack of the last 4 x `drift_every` dispatches
    moves by more than `drift_tol` from the one at the last choice, the resident SubGraph is re-chosen over the last `window` dispatched queries: each
    candidate is scored by the accuracy (and energy) the window's queries would have got with it
    resident, and a swap happens only if the gain over the next `period` queries beats the swap's
    cost (the accelerator time the load takes, valued at the current per-query score and weighted by
    utilisation, plus its off-chip energy)."""
    table: LatencyTable = None
    period: int = 256
    window: int = 512
    drift_every: int = 32
    drift_tol: float = 0.25
    energy_weight: float = 0.02
    swap_weight: float = 1.0
    rho_min: float = 0.2
    _last_choice: int = 0
    _ref_slack: float = math.nan
    history: list = field(default_factory=list)

    def check(self, ctx, t_ms):
        n = ctx.n_disp
        since = n - self._last_choice
        due = since >= self.period
        if not due and since >= self.period // 2:
            recent = ctx.slack_window(4 * self.drift_every)
            ref = self._ref_slack
            due = (len(recent) > 0 and math.isfinite(ref) and ref > 0
                   and abs(float(recent.mean()) - ref) > self.drift_tol * ref)
        if due:
            return self.rechoose(ctx, t_ms), self.drift_every
        return ctx.target, self.drift_every

    def rechoose(self, ctx, t_ms) -> int:
        self._last_choice = ctx.n_disp
        slack, floor, busy, t0 = ctx.window(self.window)
        if len(slack) == 0:
            return ctx.target
        self._ref_slack = float(np.mean(slack[-4 * self.drift_every:]))
        sc = score_columns(self.table, self.frontier, slack, floor, self.energy_weight)
        cur = ctx.target
        best = int(np.argmax(sc))
        if best == cur:
            return cur
        gain = (sc[best] - sc[cur]) * self.period
        span = max(t_ms - t0, 1e-9)
        rho = min(1.0, busy / span)
        mean_service = busy / len(slack) if busy > 0 else 1.0
        T = self.table
        load_ms = T.load_ms[best - 1] if best else 0.0
        load_e = T.load_energy_uj[best - 1] if best else 0.0
        eref = float(T.energy_uj[0].mean()) or 1.0
        cost = (self.swap_weight * (load_ms / mean_service) * max(sc[cur], 0.0) * max(rho, self.rho_min)
                + self.energy_weight * load_e / eref)
        if gain > cost:
            self.history.append((t_ms, cur, best, float(gain), float(cost)))
            return best
        return cur


# ---------------------------------------------------------------- factory
def make_policy(name: str, table: LatencyTable, slo_ms: np.ndarray | None = None,
                floor: np.ndarray | None = None, *, fallback: str = "drop", n_buckets: int = 8,
                fixed_sg: str | None = None, slackfit_lookahead: bool = True, **sushi_kw) -> Policy:
    """Build a policy for `table`.  `slo_ms` / `floor` (the trace's SLO mix) inform the offline
    SubGraph choice of `fixed` and the initial SubGraph of `sushi`."""
    if fallback not in FALLBACKS:
        raise SchedulerError(f"unknown fallback {fallback!r}; choose from {', '.join(FALLBACKS)}")
    if name not in POLICIES:
        raise SchedulerError(f"unknown policy {name!r}; policies: {', '.join(POLICIES)}, all")
    if name == "oracle":
        raise SchedulerError("the oracle is a bound, not a queued policy: use oracle_bound()")
    C = 1 + table.n_sgs
    slo_ms = np.array([10.0]) if slo_ms is None else np.asarray(slo_ms, float)
    floor = np.zeros(len(slo_ms)) if floor is None else np.asarray(floor, float)
    F = _exact_frontier(table)
    if name == "sushi":
        init = offline_column(table, F, slo_ms, floor, sushi_kw.get("energy_weight", 0.02))
        lookahead = sushi_kw.pop("lookahead", True)
        p = SushiSched("sushi", F, "edf", init, fallback, lookahead, table=table, **sushi_kw)
        p.check_every = p.drift_every
        p.doc = SushiSched.__doc__
        return p
    if name == "no-pb":
        return Policy(name, _pin(F, C), "edf", 0, fallback, True,
                      doc="SushiSched's per-query rule with the PB never loaded: L[s]['none'].")
    if name == "fixed":
        col = table.column(fixed_sg) if fixed_sg else offline_column(table, F, slo_ms, floor)
        return Policy(name, F, "edf", col, fallback, True,
                      doc="SushiSched's per-query rule with one SubGraph chosen offline from the trace's "
                          "SLO mix (no queueing assumed), loaded before the trace and never swapped.")
    if name == "slackfit":
        lat0 = table.latency[0]
        lo, hi = float(lat0.min()), float(lat0.max())
        edges = np.linspace(lo, hi, n_buckets + 1)[1:] if hi > lo else np.array([hi])
        # each SubNet is believed to take its bucket's upper edge; PB empty (cache-unaware)
        keys = edges[np.minimum(np.searchsorted(edges, lat0 - 1e-12), len(edges) - 1)]
        Fb = build_frontier(keys[None, :], table.accuracy)
        return Policy(name, _pin(Fb, C), "edf", 0, fallback, slackfit_lookahead,
                      doc=f"SlackFit-style, cache-unaware: SubNets grouped into {n_buckets} equal-width "
                          "latency buckets of L[s]['none']; the most urgent query (EDF) gets the most "
                          "accurate SubNet of the slowest bucket whose upper edge fits its slack. Issues "
                          "no PB loads, so the hardware runs with the PB empty (L[s]['none']). With "
                          "slackfit_lookahead (default) it shares SushiSched's queue lookahead, so the "
                          "comparison isolates PB awareness.")
    # static policies: one SubNet, its best SubGraph pinned before the trace
    s = int(np.argmax(table.accuracy)) if name == "static-max" else int(np.argmin(table.latency[0]))
    col = int(np.argmin(table.latency[:, s]))
    allowed = np.zeros(table.n_subnets, bool)
    allowed[s] = True
    Fs = build_frontier(table.latency, table.accuracy, allowed)
    return Policy(name, Fs, "fifo", col, fallback, False,
                  doc=f"always SubNet {table.subnets[s]} ({'most accurate' if name == 'static-max' else 'fastest'}), "
                      f"FIFO, with the SubGraph that helps it most ({table.sg_name(col)}) loaded before the "
                      "trace; a query it cannot finish in time is handled by the fallback.")


def oracle_bound(table: LatencyTable, slo_ms: np.ndarray, floor: np.ndarray):
    """Offline bound with future knowledge: every query gets an idle accelerator at its arrival with
    the best SubGraph for it already resident (no queueing, no swap cost).  Per query the most
    accurate SubNet over all (SubNet, SubGraph) pairs with L[s][g] <= SLO and accuracy >= floor (ties:
    least energy).  No schedule on any number of these accelerators can meet a query this bound cannot,
    nor serve a met query more accurately, so its `slo_attainment` and its per-query accuracy of met
    queries are upper bounds (its energy and latency are not bounds)."""
    n = len(slo_ms)
    best_acc = np.full(n, -1.0)
    best_s = np.full(n, -1, np.int64)
    best_c = np.zeros(n, np.int64)
    best_e = np.full(n, np.inf)
    F = _exact_frontier(table)
    acc = table.accuracy
    for c in range(1 + table.n_sgs):
        s, ok = window_choice(F, c, slo_ms, floor)
        a = np.where(ok, acc[np.maximum(s, 0)], -1.0)
        ok &= a >= floor
        e = table.energy_uj[c][np.maximum(s, 0)]
        better = ok & ((a > best_acc) | ((a == best_acc) & (e < best_e)))
        best_acc = np.where(better, a, best_acc)
        best_s = np.where(better, s, best_s)
        best_c = np.where(better, c, best_c)
        best_e = np.where(better, e, best_e)
    return best_s, best_c
