"""Backends: what actually runs a SubNet during a replay.

The replay asks a backend two things: `load(sg)` (make SubGraph `sg` resident; "none" empties the PB)
and `run(subnet, resident_sg, query)` (run one query).  The scheduler decides with the latency
table's *predictions*; the replay advances time by what the backend *reports*, so a backend that
measures (RTL-in-the-loop, a board) changes the outcome, not just the bookkeeping.

A backend that runs real inputs returns the SubNet's `prediction` and the input's `label`; the
replay then measures served accuracy from them instead of using the table's accuracy.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from .tables import NONE, LatencyTable


class RunResult(NamedTuple):
    latency_ms: float          # accelerator busy time for this query (measured or modelled)
    offchip_bytes: int
    energy_uj: float           # off-chip access energy
    prediction: int | None = None   # class the SubNet predicted for the query's input, if real
    label: int | None = None        # the input's true label, if known


class LoadResult(NamedTuple):
    busy_ms: float             # accelerator busy time to load the SubGraph into the PB
    offchip_bytes: int
    energy_uj: float


@runtime_checkable
class Backend(Protocol):
    """What the replay needs from an accelerator.  `query` is the trace index of the query (a backend
    with a data set maps it to an input, e.g. `inputs[query % len(inputs)]`)."""

    name: str

    def run(self, subnet: str, resident_sg: str, query: int | None = None) -> RunResult: ...

    def load(self, sg: str) -> LoadResult: ...


class ModelBackend:
    """The performance model: every number comes from the latency table (no predictions).

    `lookup` exposes the dense arrays so the replay can skip the per-query call (the hot loop)."""

    name = "model"

    def __init__(self, table: LatencyTable):
        self.table = table
        self.lookup = (table.latency, table.offchip_bytes, table.energy_uj)

    def run(self, subnet: str, resident_sg: str, query: int | None = None) -> RunResult:
        t = self.table
        s, g = t.subnet_index(subnet), t.column(resident_sg)
        return RunResult(float(t.latency[g, s]), int(t.offchip_bytes[g, s]), float(t.energy_uj[g, s]))

    def load(self, sg: str) -> LoadResult:
        if sg is None or sg == NONE:
            return LoadResult(0.0, 0, 0.0)
        j = self.table.column(sg) - 1
        t = self.table
        return LoadResult(float(t.load_ms[j]), int(t.load_bytes[j]), float(t.load_energy_uj[j]))


BACKENDS = {"model": ModelBackend}


def make_backend(name: str, table: LatencyTable) -> Backend:
    from .errors import SchedulerError
    if name not in BACKENDS:
        raise SchedulerError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    return BACKENDS[name](table)


def register_backend(name: str, factory) -> None:
    """Register `factory(table) -> Backend` under `name` (e.g. an RTL-in-the-loop backend)."""
    BACKENDS[name] = factory
