"""One BLAS thread for the numpy work of compiling and evaluating.

The compiler's numpy work is many small matrix products.  With a multi-threaded BLAS on a busy
2-core machine each of them pays thread wake-ups and spinning: measured, one SuperNet compile took
34 s with two OpenBLAS threads and 1.9 s with one.  Everything heavy in the compiler runs under
:func:`one_blas_thread`.
"""
from __future__ import annotations

import contextlib
import functools

__all__ = ["one_blas_thread", "single_blas_thread"]


def one_blas_thread():
    """Context manager limiting BLAS/OpenMP pools to one thread (threadpoolctl), restored on exit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:        # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def single_blas_thread(fn):
    """Decorator: run ``fn`` under :func:`one_blas_thread`."""
    @functools.wraps(fn)
    def wrapper(*a, **k):
        with one_blas_thread():
            return fn(*a, **k)
    return wrapper
