"""Errors of the scheduler package."""
from __future__ import annotations


class SchedulerError(Exception):
    """Bad user input to the scheduler (a trace, a latency table, an option): one clear line.

    The `sushi` CLI maps it to exit status 2.
    """
