"""Independent clustering fits on every core, results identical to the sequential order.

:class:`TaskPool` wraps joblib's process executor (loky, the backend of ``joblib.Parallel``)
so that tasks can be submitted as soon as what they depend on is done (a clusterer's fits
start when *its* reduction is ready, while the other reduction is still running). Every
task is a pure function of its arguments (its own seed, no shared state), and the caller
assembles results in its own fixed order, so ``n_jobs=1`` and ``n_jobs=N`` give identical
tables. ``n_jobs=1`` runs every task in-process, immediately, without a pool.

One thread count for every task
-------------------------------
Every task runs with :data:`TASK_THREADS` BLAS/OpenMP threads (``threadpoolctl``), wherever
it runs: in-process (``n_jobs=1``) or in a worker. The thread count changes the numbers:
OpenBLAS and OpenMP split sums across threads, so the randomized SVD of PCA on a 1000 x 128
input already differs (by ~1e-4) between 2 threads and 1, and so do scikit-learn's kNN and
KMeans reductions. UMAP turns such differences into another embedding: on 8000 x 1024
embeddings the driver's PCA (2 BLAS threads) and a worker's (1 thread) fed UMAP different
inputs and HDBSCAN chose ``min_cluster_size`` 10 sequentially vs 20 in parallel. Pinning only
UMAP's own fit (numba and BLAS, :mod:`.reducers`) was not enough; pinning the whole task is.

Worker processes also start with :data:`TASK_THREADS` threads in their environment (unless
the variable is set) and inherit the parent's environment, including ``NUMBA_CACHE_DIR``
(set inside ``.cache`` by :mod:`compcars_kedro._environment`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import joblib
from joblib.externals.loky import get_reusable_executor
from threadpoolctl import threadpool_limits

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
#: BLAS/OpenMP threads of every task, in-process or in a worker: results do not depend on
#: ``n_jobs`` or on the number of cores (parallelism comes from the processes)
TASK_THREADS = 1


def effective_n_jobs(n_jobs: int | None) -> int:
    """Number of worker processes for ``n_jobs`` (``None`` or ``-1``: every core)."""
    if n_jobs is None:
        n_jobs = -1
    if n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be -1 (all cores) or a positive integer, got {n_jobs}")
    return int(joblib.effective_n_jobs(n_jobs))


def run_pinned(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with :data:`TASK_THREADS` BLAS/OpenMP threads (any process)."""
    with threadpool_limits(limits=TASK_THREADS):
        return fn(*args, **kwargs)


class TaskPool:
    """``submit(fn, *args)`` -> Future; in-process and immediate when one job is asked."""

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = effective_n_jobs(n_jobs)
        self._executor = None
        if self.n_jobs > 1:
            env = {var: os.environ.get(var, str(TASK_THREADS)) for var in THREAD_VARS}
            self._executor = get_reusable_executor(
                max_workers=self.n_jobs, timeout=IDLE_TIMEOUT_S, env=env
            )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._executor is not None:
            return self._executor.submit(run_pinned, fn, *args, **kwargs)
        future: Future = Future()
        try:
            future.set_result(run_pinned(fn, *args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, like a pool
            future.set_exception(exc)
        return future
