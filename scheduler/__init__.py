"""SUSHI scheduler: latency tables, traces, SushiSched and baselines, discrete-event replay.

See docs/scheduler.md and docs/traces.md.
"""
from .errors import SchedulerError
from .tables import LatencyTable, load_table, validate_table, synthetic_table
from .trace import Trace, read_trace, parse_trace, generate
from .backend import Backend, ModelBackend, RunResult, LoadResult, register_backend
from .policies import POLICIES, make_policy, oracle_bound
from .replay import replay, replay_all, ReplayResult

__all__ = ["SchedulerError", "LatencyTable", "load_table", "validate_table", "synthetic_table", "Trace",
           "read_trace", "parse_trace", "generate", "Backend", "ModelBackend", "RunResult", "LoadResult",
           "register_backend", "POLICIES", "make_policy", "oracle_bound", "replay", "replay_all", "ReplayResult"]
