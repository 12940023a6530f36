"""Independent clustering fits on every core, results identical to the sequential order.

:class:`TaskPool` wraps joblib's process executor (loky, the backend of ``joblib.Parallel``)
so that tasks can be submitted as soon as what they depend on is done (a clusterer's fits
start when *its* reduction is ready, while the other reduction is still running). Every
task is a pure function of its arguments (its own seed, no shared state), and the caller
assembles results in its own fixed order, so ``n_jobs=1`` and ``n_jobs=N`` give identical
tables. ``n_jobs=1`` runs every task in-process, immediately, without a pool.

Worker processes get ``cpu_count() // n_jobs`` BLAS/OpenMP/numba threads (joblib's rule,
so 2 workers on 2 cores do not oversubscribe) and inherit the parent's environment,
including ``NUMBA_CACHE_DIR`` (set inside ``.cache`` by :mod:`compcars_kedro._environment`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import joblib
from joblib.externals.loky import cpu_count, get_reusable_executor

#: the thread-pool variables joblib limits in its workers
THREAD_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
IDLE_TIMEOUT_S = 120


def effective_n_jobs(n_jobs: int | None) -> int:
    """Number of worker processes for ``n_jobs`` (``None`` or ``-1``: every core)."""
    if n_jobs is None:
        n_jobs = -1
    if n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be -1 (all cores) or a positive integer, got {n_jobs}")
    return int(joblib.effective_n_jobs(n_jobs))


class TaskPool:
    """``submit(fn, *args)`` -> Future; in-process and immediate when one job is asked."""

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = effective_n_jobs(n_jobs)
        self._executor = None
        if self.n_jobs > 1:
            threads = max(cpu_count() // self.n_jobs, 1)
            env = {var: os.environ.get(var, str(threads)) for var in THREAD_VARS}
            self._executor = get_reusable_executor(
                max_workers=self.n_jobs, timeout=IDLE_TIMEOUT_S, env=env
            )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._executor is not None:
            return self._executor.submit(fn, *args, **kwargs)
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, like a pool
            future.set_exception(exc)
        return future
