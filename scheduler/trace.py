"""Query traces: the CSV format (docs/traces.md), its reader/writer, and arrival/SLO generators.

A trace is three arrays of equal length, sorted by arrival: `arrival_s` (seconds from the start),
`slo_ms` (latency target, > 0) and `min_accuracy` (accuracy floor in 0..1, NaN = none).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SchedulerError

HEADER = ("arrival_s", "slo_ms")
FLOOR = "min_accuracy"


@dataclass
class Trace:
    arrival_s: np.ndarray
    slo_ms: np.ndarray
    min_accuracy: np.ndarray | None = None     # NaN where a query has no floor
    source: str = "<trace>"

    def __post_init__(self):
        self.arrival_s = np.asarray(self.arrival_s, dtype=float)
        self.slo_ms = np.asarray(self.slo_ms, dtype=float)
        if self.min_accuracy is not None:
            self.min_accuracy = np.asarray(self.min_accuracy, dtype=float)
            if len(self.min_accuracy) != len(self.arrival_s):
                raise SchedulerError(f"{self.source}: min_accuracy has {len(self.min_accuracy)} entries, "
                                     f"arrival_s {len(self.arrival_s)}")
        if len(self.slo_ms) != len(self.arrival_s):
            raise SchedulerError(f"{self.source}: slo_ms has {len(self.slo_ms)} entries, arrival_s {len(self.arrival_s)}")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def rate_qps(self) -> float:
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else float("nan")

    def floors(self) -> np.ndarray:
        """Accuracy floor per query, 0.0 where none."""
        if self.min_accuracy is None:
            return np.zeros(len(self))
        return np.nan_to_num(self.min_accuracy, nan=0.0)

    def scaled(self, load: float) -> "Trace":
        """The same queries with arrivals compressed by `load` (2.0 = twice the rate)."""
        return Trace(self.arrival_s / load, self.slo_ms.copy(),
                     None if self.min_accuracy is None else self.min_accuracy.copy(), self.source)

    # ------------------------------------------------------------ CSV
    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        has_floor = self.min_accuracy is not None
        w.writerow(list(HEADER) + ([FLOOR] if has_floor else []))
        for i in range(len(self)):
            row = [f"{self.arrival_s[i]:.9f}", f"{self.slo_ms[i]:.6g}"]
            if has_floor:
                f = self.min_accuracy[i]
                row.append("" if math.isnan(f) else f"{f:.6g}")
            w.writerow(row)
        return buf.getvalue()

    def write(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_csv())
        return path


def read_trace(path) -> Trace:
    """Read a trace CSV; errors name the file, the line and the column."""
    path = Path(path)
    if not path.exists():
        raise SchedulerError(f"{path}: trace file does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise SchedulerError(f"{path}: not a text file ({e})") from None
    return parse_trace(text, str(path))


def parse_trace(text: str, source: str = "<trace>") -> Trace:
    rows = csv.reader(io.StringIO(text))
    header = None
    arr, slo, flo = [], [], []
    prev = -math.inf
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if header is None:
            if tuple(cells[:2]) != HEADER or len(cells) > 3 or (len(cells) == 3 and cells[2] != FLOOR):
                raise SchedulerError(f"{source}:{lineno}: header must be 'arrival_s,slo_ms' or "
                                     f"'arrival_s,slo_ms,min_accuracy', got {','.join(cells)!r}")
            header = cells
            continue
        if len(cells) != len(header):
            raise SchedulerError(f"{source}:{lineno}: expected {len(header)} columns "
                                 f"({','.join(header)}), got {len(cells)}")
        vals = []
        for col, c in zip(header, cells):
            if col == FLOOR and c == "":
                vals.append(math.nan)
                continue
            try:
                v = float(c)
            except ValueError:
                raise SchedulerError(f"{source}:{lineno}: {col}: not a number: {c!r}") from None
            if not math.isfinite(v):
                raise SchedulerError(f"{source}:{lineno}: {col}: must be finite, got {c!r}")
            vals.append(v)
        a, s = vals[0], vals[1]
        if a < 0:
            raise SchedulerError(f"{source}:{lineno}: arrival_s: must be >= 0, got {a:g}")
        if a < prev:
            raise SchedulerError(f"{source}:{lineno}: arrival_s: {a:g} is earlier than the previous "
                                 f"arrival {prev:g} (arrivals must be sorted)")
        if s <= 0:
            raise SchedulerError(f"{source}:{lineno}: slo_ms: must be > 0, got {s:g}")
        if len(vals) == 3 and not math.isnan(vals[2]) and not 0 <= vals[2] <= 1:
            raise SchedulerError(f"{source}:{lineno}: min_accuracy: must be in 0..1, got {vals[2]:g}")
        prev = a
        arr.append(a)
        slo.append(s)
        if len(vals) == 3:
            flo.append(vals[2])
    if header is None:
        raise SchedulerError(f"{source}: empty trace (no 'arrival_s,slo_ms' header)")
    if not arr:
        raise SchedulerError(f"{source}: trace has a header but no queries")
    return Trace(np.array(arr), np.array(slo), np.array(flo) if len(header) == 3 else None, source)


# ---------------------------------------------------------------- arrivals
def poisson_arrivals(rate_qps: float, n: int, rng) -> np.ndarray:
    """Poisson process: exponential inter-arrivals, mean 1/rate (CV 1)."""
    if not rate_qps > 0:
        raise SchedulerError(f"rate must be > 0 queries/s, got {rate_qps}")
    return np.cumsum(rng.exponential(1.0 / rate_qps, n))


def gamma_arrivals(rate_qps: float, cv: float, n: int, rng) -> np.ndarray:
    """Renewal process with gamma inter-arrivals: mean 1/rate, coefficient of variation `cv`
    (shape 1/cv^2; cv = 1 is Poisson, cv > 1 bursty)."""
    if not rate_qps > 0:
        raise SchedulerError(f"rate must be > 0 queries/s, got {rate_qps}")
    if not cv > 0:
        raise SchedulerError(f"cv must be > 0, got {cv}")
    k = 1.0 / cv ** 2
    return np.cumsum(rng.gamma(k, 1.0 / (rate_qps * k), n))


def mmpp_arrivals(rate_qps: float, n: int, rng, burst: float = 4.0, high_frac: float = 0.2,
                  mean_dwell_s: float = 0.5) -> np.ndarray:
    """Two-state Markov-modulated Poisson process with mean rate `rate_qps`.

    The high state has `burst` times the rate of the low state and is occupied a fraction
    `high_frac` of the time; state dwell times are exponential, the high state's mean is
    `mean_dwell_s * high_frac / (1 - high_frac)` and the low state's `mean_dwell_s`.
    """
    if not rate_qps > 0 or not burst >= 1 or not 0 < high_frac < 1 or not mean_dwell_s > 0:
        raise SchedulerError("mmpp: need rate > 0, burst >= 1, 0 < high_frac < 1, mean_dwell_s > 0")
    lo = rate_qps / (1 - high_frac + high_frac * burst)
    hi = lo * burst
    dwell = {0: mean_dwell_s, 1: mean_dwell_s * high_frac / (1 - high_frac)}
    out = np.empty(n)
    t, state, k = 0.0, 0, 0
    while k < n:
        d = rng.exponential(dwell[state])
        r = hi if state else lo
        m = rng.poisson(r * d)
        if m:
            ts = np.sort(t + rng.uniform(0, d, m))[: n - k]
            out[k:k + len(ts)] = ts
            k += len(ts)
        t += d
        state ^= 1
    return out


def diurnal_arrivals(rate_qps: float, n: int, rng, period_s: float = 60.0, amplitude: float = 0.5) -> np.ndarray:
    """Non-homogeneous Poisson, rate(t) = rate * (1 + amplitude * sin(2 pi t / period)), by thinning."""
    if not rate_qps > 0 or not 0 <= amplitude <= 1 or not period_s > 0:
        raise SchedulerError("diurnal: need rate > 0, 0 <= amplitude <= 1, period_s > 0")
    peak = rate_qps * (1 + amplitude)
    out = []
    t, k = 0.0, 0
    while k < n:
        m = max(1024, int(1.2 * (n - k) * (1 + amplitude)))
        cand = t + np.cumsum(rng.exponential(1.0 / peak, m))
        keep = rng.uniform(0, peak, m) < rate_qps * (1 + amplitude * np.sin(2 * np.pi * cand / period_s))
        sel = cand[keep][: n - k]
        out.append(sel)
        k += len(sel)
        t = cand[-1]
    return np.concatenate(out)[:n]


# ---------------------------------------------------------------- SLOs
#: The default SLO mix, in ms: value:weight pairs (documented in docs/traces.md).  The values suit a
#: table whose SubNets take ~0.25-1.2 ms (the synthetic table); scale them with `slo_scale`.
DEFAULT_SLO_MIX = "1.5:0.3,3:0.4,6:0.3"


def parse_slo_mix(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """`"V:W,V:W,..."` -> (values ms, probabilities).  `"lo-hi"` means uniform in [lo, hi] ms
    (returned as values=(lo, hi), probs=None)."""
    spec = spec.strip()
    if "-" in spec and ":" not in spec:
        try:
            lo, hi = (float(x) for x in spec.split("-"))
        except ValueError:
            raise SchedulerError(f"SLO mix {spec!r}: expected 'LO-HI' ms") from None
        if not 0 < lo <= hi:
            raise SchedulerError(f"SLO mix {spec!r}: need 0 < LO <= HI")
        return np.array([lo, hi]), None
    vals, ws = [], []
    for part in spec.split(","):
        try:
            v, w = part.split(":")
            v, w = float(v), float(w)
        except ValueError:
            raise SchedulerError(f"SLO mix {spec!r}: entry {part!r} is not VALUE_MS:WEIGHT") from None
        if not v > 0 or not w >= 0 or not math.isfinite(v) or not math.isfinite(w):
            raise SchedulerError(f"SLO mix {spec!r}: entry {part!r}: need value > 0 and weight >= 0")
        vals.append(v)
        ws.append(w)
    ws = np.array(ws)
    if ws.sum() <= 0:
        raise SchedulerError(f"SLO mix {spec!r}: weights sum to zero")
    return np.array(vals), ws / ws.sum()


def draw_slos(n: int, rng, mix: str = DEFAULT_SLO_MIX, scale: float = 1.0) -> np.ndarray:
    vals, p = parse_slo_mix(mix)
    if p is None:
        return rng.uniform(vals[0], vals[1], n) * scale
    return rng.choice(vals, n, p=p) * scale


# ---------------------------------------------------------------- one entry point
KINDS = ("poisson", "gamma", "mmpp", "diurnal")


def generate(kind: str, *, rate_qps: float, n: int | None = None, duration_s: float | None = None,
             seed: int = 0, cv: float = 3.0, burst: float = 4.0, high_frac: float = 0.2,
             mean_dwell_s: float = 0.5, period_s: float = 60.0, amplitude: float = 0.5,
             slo_mix: str = DEFAULT_SLO_MIX, slo_scale: float = 1.0,
             floor: float | None = None, floor_frac: float = 0.0) -> Trace:
    """Generate a trace.  `kind` is poisson | gamma | mmpp | diurnal ("bursty" = gamma).

    Give `n` (queries) or `duration_s` (then n = rate x duration, arrivals past the duration cut).
    A fraction `floor_frac` of queries gets the accuracy floor `floor`.
    """
    if kind == "bursty":
        kind = "gamma"
    if kind not in KINDS:
        raise SchedulerError(f"unknown trace kind {kind!r}; kinds: {', '.join(KINDS)}, bursty")
    if not (isinstance(rate_qps, (int, float)) and rate_qps > 0):
        raise SchedulerError(f"rate must be > 0 queries/s, got {rate_qps}")
    if n is None:
        if duration_s is None or not duration_s > 0:
            raise SchedulerError("give --queries N or --duration S (> 0)")
        n_gen = int(math.ceil(rate_qps * duration_s * 1.5)) + 16
    else:
        if n < 1:
            raise SchedulerError(f"number of queries must be >= 1, got {n}")
        n_gen = n
    if not slo_scale > 0:
        raise SchedulerError(f"slo scale must be > 0, got {slo_scale}")
    rng = np.random.default_rng(seed)
    if kind == "poisson":
        a = poisson_arrivals(rate_qps, n_gen, rng)
    elif kind == "gamma":
        a = gamma_arrivals(rate_qps, cv, n_gen, rng)
    elif kind == "mmpp":
        a = mmpp_arrivals(rate_qps, n_gen, rng, burst, high_frac, mean_dwell_s)
    else:
        a = diurnal_arrivals(rate_qps, n_gen, rng, period_s, amplitude)
    a = a - a[0] if n is not None else a
    if n is None:
        a = a[a <= duration_s]
        if len(a) == 0:
            raise SchedulerError(f"no arrivals within {duration_s} s at {rate_qps} queries/s")
    m = len(a)
    slo = draw_slos(m, rng, slo_mix, slo_scale)
    fl = None
    if floor is not None or floor_frac:
        if floor is None or not 0 <= floor <= 1 or not 0 <= floor_frac <= 1:
            raise SchedulerError("accuracy floor: need 0 <= floor <= 1 and 0 <= floor_frac <= 1")
        fl = np.where(rng.uniform(size=m) < floor_frac, floor, np.nan)
    return Trace(a, slo, fl, f"<{kind}>")
