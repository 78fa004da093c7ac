"""Discrete-event replay of a trace against a policy and a backend; metrics.

One or more accelerators, each with its own PB; one shared queue (optionally bounded).  Events are
arrivals and accelerator-free instants; a query's SubNet is chosen when it is dispatched, so its
queueing delay is known exactly (predicted finish = dispatch time + L[s][resident]).  Every query
ends in exactly one of:

* served, deadline met      (status 0)
* served, deadline missed   (status 1: the backend took longer than predicted, or fallback=fastest)
* dropped                   (status 2) with a reason: queue_full (bounded queue at arrival),
  expired (deadline already passed at dispatch), infeasible (no SubNet meets deadline and floor,
  fallback=drop), accuracy_floor (no SubNet at all meets the query's floor).

`replay()` checks that served + dropped == arrivals before it returns.
"""
from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np

from .backend import Backend, ModelBackend
from .errors import SchedulerError
from .policies import Policy, make_policy, oracle_bound
from .tables import LatencyTable
from .trace import Trace

MET, MISSED, DROPPED = 0, 1, 2
REASONS = ("", "queue_full", "expired", "infeasible", "accuracy_floor")
R_QUEUE, R_EXPIRED, R_INFEASIBLE, R_FLOOR = 1, 2, 3, 4


@dataclass
class ReplayResult:
    policy: str
    table: LatencyTable
    arrival_ms: np.ndarray
    deadline_ms: np.ndarray
    subnet: np.ndarray          # SubNet index, -1 if dropped
    status: np.ndarray          # MET / MISSED / DROPPED
    reason: np.ndarray          # index into REASONS
    start_ms: np.ndarray        # dispatch (run start) time, NaN if never dispatched
    finish_ms: np.ndarray       # NaN if dropped
    column: np.ndarray          # PB column resident while it ran (0 = none)
    accel: np.ndarray
    offchip_bytes: np.ndarray   # per query (0 if dropped)
    energy_uj: np.ndarray
    correct: np.ndarray | None  # 1/0 per served query with a prediction and label, -1 otherwise
    swaps: list                 # (t_ms, accel, from_col, to_col, busy_ms, bytes, energy_uj)
    initial_load_bytes: int = 0
    initial_load_energy_uj: float = 0.0
    wall_s: float = 0.0
    backend: str = "model"
    n_accel: int = 1
    notes: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.arrival_ms)

    @property
    def latency_ms(self) -> np.ndarray:
        return self.finish_ms - self.arrival_ms

    def metrics(self) -> dict:
        n = len(self)
        st = self.status
        served = st != DROPPED
        met = st == MET
        ns, nm = int(served.sum()), int(met.sum())
        acc_tab = self.table.accuracy[np.maximum(self.subnet, 0)]
        lat = self.latency_ms[served]
        load_b = sum(s[5] for s in self.swaps) + self.initial_load_bytes
        load_e = sum(s[6] for s in self.swaps) + self.initial_load_energy_uj
        measured = None
        if self.correct is not None:
            m = met & (self.correct >= 0)
            if m.any():
                measured = float(self.correct[m].mean())
        reasons = {REASONS[r]: int((self.reason == r).sum()) for r in range(1, len(REASONS))}
        busy = float(np.nansum(self.finish_ms - self.start_ms)) + sum(s[4] for s in self.swaps)
        span = float(np.nanmax(self.finish_ms) - self.arrival_ms[0]) if ns else 0.0
        out = {
            "policy": self.policy,
            "served_accuracy": float(acc_tab[met].mean()) if nm else 0.0,
            "slo_attainment": nm / n if n else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if ns else None,
            "p99_ms": float(np.percentile(lat, 99)) if ns else None,
            "served": ns,
            "dropped": n - ns,
            "offchip_bytes_per_query": (float(self.offchip_bytes.sum()) + load_b) / ns if ns else None,
            "offchip_energy_uj_per_query": (float(self.energy_uj.sum()) + load_e) / ns if ns else None,
            "swaps": len(self.swaps),
            # extras
            "arrivals": n,
            "met": nm,
            "missed": ns - nm,
            "drop_reasons": reasons,
            "served_accuracy_measured": measured,
            "effective_accuracy": float(acc_tab[met].sum()) / n if n else 0.0,
            "mean_queue_ms": float(np.nanmean(self.start_ms[served] - self.arrival_ms[served])) if ns else None,
            "utilization": busy / (span * self.n_accel) if span > 0 else 0.0,
            "swap_busy_ms": float(sum(s[4] for s in self.swaps)),
            "swap_bytes": int(sum(s[5] for s in self.swaps)),
            "initial_subgraph": self.notes.get("initial_subgraph"),
            "backend": self.backend,
            "n_accel": self.n_accel,
            "replay_s": self.wall_s,
            "queries_per_s": n / self.wall_s if self.wall_s > 0 else None,
        }
        return out


class _Ctx:
    """What a policy's `check` hook sees: the per-query history of the queries that arrived so far."""
    __slots__ = ("n_disp", "target", "slack", "svc", "start", "hi", "floors")

    def __init__(self, n, floors, start):
        self.n_disp = 0
        self.target = 0
        self.slack = [math.nan] * n       # slack at dispatch (ms), NaN until dispatched
        self.svc = [0.0] * n              # accelerator time the query took
        self.start = start
        self.hi = 0                       # queries [0, hi) have arrived
        self.floors = floors

    def _range(self, w):
        lo = max(0, self.hi - w)
        sl = np.array(self.slack[lo:self.hi])
        return lo, sl, ~np.isnan(sl)

    def slack_window(self, k):
        """Slacks of the dispatched queries among the last `k` arrivals."""
        _, sl, m = self._range(k)
        return sl[m]

    def window(self, w):
        """(slacks, floors, busy ms, window start time) of the dispatched queries among the last `w` arrivals."""
        lo, sl, m = self._range(w)
        if not m.any():
            return np.array([]), np.array([]), 0.0, 0.0
        st = np.array(self.start[lo:self.hi])[m]
        return sl[m], self.floors[lo:self.hi][m], float(np.sum(self.svc[lo:self.hi])), float(st.min())


def replay(table: LatencyTable, trace: Trace, policy: Policy | str, backend: Backend | None = None, *,
           n_accel: int = 1, queue_cap: int | None = None, fallback: str = "drop",
           policy_kw: dict | None = None) -> ReplayResult:
    """Replay `trace` under `policy` (a Policy, or a name from policies.POLICIES)."""
    if n_accel < 1:
        raise SchedulerError(f"number of accelerators must be >= 1, got {n_accel}")
    if queue_cap is not None and queue_cap < 0:
        raise SchedulerError(f"queue capacity must be >= 0, got {queue_cap}")
    if len(trace) == 0:
        raise SchedulerError(f"{trace.source}: empty trace")
    floors_np = trace.floors()
    if isinstance(policy, str):
        if policy == "oracle":
            return replay_oracle(table, trace, fallback=fallback, n_accel=n_accel)
        policy = make_policy(policy, table, trace.slo_ms, floors_np, fallback=fallback, **(policy_kw or {}))
    backend = backend or ModelBackend(table)
    t_wall = time.perf_counter()

    n = len(trace)
    arr = (trace.arrival_s * 1000.0).tolist()
    dl = (trace.arrival_s * 1000.0 + trace.slo_ms).tolist()
    flo = floors_np.tolist()
    F = policy.frontier
    fl_lat, fl_idx, fl_acc = F.lat, F.idx, F.acc
    fmin = [l[0] if l else math.inf for l in fl_lat]
    max_acc = [a[-1] if a else -1.0 for a in fl_acc]
    fast = type(backend) is ModelBackend and backend.table is table   # subclasses may measure
    latr = table.latency.tolist()
    byr = table.offchip_bytes.tolist()
    enr = table.energy_uj.tolist()
    names = table.subnets
    sgname = [table.sg_name(c) for c in range(1 + table.n_sgs)]
    edf = policy.discipline == "edf"
    lookahead = policy.lookahead and edf
    inv_n = 1.0 / n_accel   # N accelerators drain the queue N times faster
    look_k = policy.lookahead_k
    look_w = 2 * look_k   # the heap's first 2k entries: its k smallest, approximately (exact for the first log2(2k)+1)
    drop_fb = policy.fallback == "drop"
    cap = queue_cap if queue_cap is not None else n + 1

    sub = [-1] * n
    status = [DROPPED] * n
    reason = [0] * n
    start = [math.nan] * n
    finish = [math.nan] * n
    colv = [0] * n
    accv = [0] * n
    qbytes = [0] * n
    qen = [0.0] * n
    correct = None
    swaps = []

    # PB state: the initial SubGraph is loaded offline, before the first arrival
    init = policy.initial
    init_load = backend.load(sgname[init]) if init else None
    resident = [init] * n_accel
    ctx = _Ctx(n, floors_np, start)
    ctx.target = init
    check_every = policy.check_every
    next_check = check_every if check_every else n + 1
    free = [(0.0, k) for k in range(n_accel)]
    waiting = []
    heappush, heappop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace
    slack_l, svc_l = ctx.slack, ctx.svc
    ndisp = 0
    i = 0
    while True:
        if waiting:
            tf = free[0][0]
            if i < n and arr[i] <= tf:
                if len(waiting) >= cap:
                    reason[i] = R_QUEUE
                else:
                    heappush(waiting, (dl[i] if edf else i, i))
                i += 1
                continue
        elif i < n:
            if cap <= 0 and free[0][0] > arr[i]:
                reason[i] = R_QUEUE
            else:
                heappush(waiting, (dl[i] if edf else i, i))
            i += 1
            continue
        else:
            break
        # ---- dispatch the head of the queue on the earliest-free accelerator
        _, q = heappop(waiting)
        tf, k = free[0]
        a = arr[q]
        t = tf if tf > a else a
        ndisp += 1
        if ndisp >= next_check:
            ctx.n_disp = ndisp - 1
            ctx.hi = i
            target, every = policy.check(ctx, t)
            ctx.target = target
            next_check = ndisp + every
        g = resident[k]
        if g != ctx.target:
            g = ctx.target
            ld = backend.load(sgname[g])
            swaps.append((t, k, resident[k], g, ld.busy_ms, ld.offchip_bytes, ld.energy_uj))
            t += ld.busy_ms
            resident[k] = g
        slack = dl[q] - t
        slack_l[q] = slack
        start[q] = t
        colv[q] = g
        accv[q] = k
        fq = flo[q]
        if slack <= 0.0:
            reason[q] = R_EXPIRED
            if t != tf:
                heapreplace(free, (t, k))
            continue
        budget = slack
        if lookahead and waiting:
            # keep the most urgent waiting queries servable by the fastest SubNet after this one
            fm = fmin[g]
            step = fm * inv_n
            used = t + fm
            horizon = used + step * look_k + budget
            if waiting[0][0] < horizon:
                if len(waiting) == 1:
                    room = waiting[0][0] - used
                    if fm <= room < budget:
                        budget = room
                else:
                    for dj, _ in sorted(waiting[:look_w]):
                        if dj >= horizon:
                            break       # this and later deadlines leave room >= budget
                        room = dj - used
                        if room < fm:
                            continue    # hopeless whatever this query runs: it will be dropped
                        used += step
                        if room < budget:
                            budget = room
        fl = fl_lat[g]
        j = bisect_right(fl, budget) - 1
        if j >= 0 and fl_acc[g][j] >= fq:
            s = fl_idx[g][j]
        elif max_acc[g] < fq:
            reason[q] = R_FLOOR
            if t != tf:
                heapreplace(free, (t, k))
            continue
        elif drop_fb:
            reason[q] = R_INFEASIBLE
            if t != tf:
                heapreplace(free, (t, k))
            continue
        else:
            s = fl_idx[g][bisect_left(fl_acc[g], fq)]
        if fast:
            L = latr[g][s]
            qbytes[q] = byr[g][s]
            qen[q] = enr[g][s]
        else:
            r = backend.run(names[s], sgname[g], q)
            L = r.latency_ms
            qbytes[q] = r.offchip_bytes
            qen[q] = r.energy_uj
            if r.prediction is not None and r.label is not None:
                if correct is None:
                    correct = [-1] * n
                correct[q] = int(r.prediction == r.label)
        fin = t + L
        heapreplace(free, (fin, k))
        svc_l[q] = L
        sub[q] = s
        finish[q] = fin
        status[q] = MET if fin <= dl[q] + 1e-9 else MISSED

    res = ReplayResult(
        policy.name, table, np.array(arr), np.array(dl), np.array(sub), np.array(status, dtype=np.int8),
        np.array(reason, dtype=np.int8), np.array(start), np.array(finish), np.array(colv), np.array(accv),
        np.array(qbytes, dtype=np.int64), np.array(qen), None if correct is None else np.array(correct), swaps,
        init_load.offchip_bytes if init_load else 0, init_load.energy_uj if init_load else 0.0,
        time.perf_counter() - t_wall, getattr(backend, "name", type(backend).__name__), n_accel,
        {"initial_subgraph": sgname[init]})
    _check_conservation(res)
    return res


def _check_conservation(res: ReplayResult) -> None:
    st = res.status
    served = int((st != DROPPED).sum())
    dropped = int((st == DROPPED).sum())
    bad_drop = int(((st == DROPPED) & (res.reason == 0)).sum())
    if served + dropped != len(res) or bad_drop or (res.subnet[st != DROPPED] < 0).any():
        raise AssertionError(f"replay lost queries: served {served} + dropped {dropped} != {len(res)} "
                             f"or {bad_drop} drops without a reason")


def replay_oracle(table: LatencyTable, trace: Trace, *, fallback: str = "drop", n_accel: int = 1) -> ReplayResult:
    """The oracle bound (policies.oracle_bound) in the same result form: no queueing, no swaps."""
    t_wall = time.perf_counter()
    floor = trace.floors()
    s, c = oracle_bound(table, trace.slo_ms, floor)
    arr = trace.arrival_s * 1000.0
    dl = arr + trace.slo_ms
    n = len(trace)
    ok = s >= 0
    status = np.where(ok, MET, DROPPED).astype(np.int8)
    reason = np.where(ok, 0, R_INFEASIBLE).astype(np.int8)
    reason[(~ok) & (floor > table.accuracy.max())] = R_FLOOR
    if fallback == "fastest":  # serve the fastest SubNet meeting the floor, late
        late = (~ok) & (reason == R_INFEASIBLE)
        if late.any():
            for q in np.flatnonzero(late):
                cand = np.flatnonzero(table.accuracy >= floor[q])
                lat = table.latency[:, cand]
                ci, si = np.unravel_index(np.argmin(lat), lat.shape)
                s[q], c[q] = cand[si], ci
            status[late] = MISSED
            reason[late] = 0
    served = status != DROPPED
    si, ci = np.maximum(s, 0), c
    L = np.where(served, table.latency[ci, si], np.nan)
    res = ReplayResult("oracle", table, arr, dl, np.where(served, s, -1), status, reason,
                       np.where(served, arr, np.nan), arr + L, np.where(served, c, 0), np.zeros(n, np.int64),
                       np.where(served, table.offchip_bytes[ci, si], 0), np.where(served, table.energy_uj[ci, si], 0.0),
                       None, [], 0, 0.0, time.perf_counter() - t_wall, "bound", n_accel,
                       {"initial_subgraph": None, "bound": True})
    _check_conservation(res)
    return res


def replay_all(table: LatencyTable, trace: Trace, policies=None, backend: Backend | None = None, **kw) -> dict:
    """Replay several policies on the same trace: {name: ReplayResult}."""
    from .policies import POLICIES
    out = {}
    for p in (policies or POLICIES):
        out[p] = replay(table, trace, p, backend, **kw)
    return out
