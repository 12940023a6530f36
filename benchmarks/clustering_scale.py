"""Scale benchmark: full reducer x clusterer grid on synthetic embeddings (internal selection).

Target: the default run (20,000 x 2048, 200 classes, pca + umap, all 5 clusterers, default
grids) in <= 200 s on 2 CPU cores with every core in use. The same process first runs the
grid sequentially (``n_jobs=1``, the baseline) and then on all cores (``--n-jobs``, default
-1) and prints, per run, the wall time, the CPU time and CPU% of the process and its
workers, and the machine load (1-minute load average before/after; on a busy machine the
ratio is the number to compare); then the per-method table (reducer x clusterer: chosen
parameters, selection score, metrics), whether the two runs are identical (the reductions
bit for bit, every table column but the timings, the assignments; any difference is
listed and the exit status is 1) and the speed-up ratio.

Before timing, a small UMAP fit warms numba's on-disk cache (``NUMBA_CACHE_DIR``, set inside
``.cache`` by ``compcars_kedro._environment``), so neither timed run pays JIT compilation; its
time is printed (a cold cache costs minutes once per machine, later runs load it).

    nice -n 0 python benchmarks/clustering_scale.py                 # the target (both runs)
    python benchmarks/clustering_scale.py --skip-sequential         # the target, parallel only
    python benchmarks/clustering_scale.py --n 8000 --dim 1024 --classes 80   # identity check
    python benchmarks/clustering_scale.py --n 3000 --dim 256 --classes 30    # quick check
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import pandas as pd

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None
from sklearn.preprocessing import normalize

from compcars_kedro._environment import configure_environment
from compcars_kedro.clustering import CLUSTERERS, run_grid
from compcars_kedro.clustering.parallel import effective_n_jobs
from compcars_kedro.clustering.reducers import UMAP_APPROX_MIN_ROWS
from compcars_kedro.names import INTERNAL

logger = logging.getLogger("clustering_scale")


def make_embeddings(
    n: int, dim: int, classes: int, noise: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised noisy points around L2-normalised random class centres.

    Class sizes are uneven (Dirichlet proportions) like real per-model image counts.
    ``noise`` is the expected norm of the per-point noise relative to the unit centre.
    """
    rng = np.random.default_rng(seed)
    centres = normalize(rng.standard_normal((classes, dim), dtype=np.float32))
    props = rng.dirichlet(np.full(classes, 5.0))
    y = rng.choice(classes, size=n, p=props)
    X = centres[y] + rng.standard_normal((n, dim), dtype=np.float32) * (noise / np.sqrt(dim))
    return normalize(X).astype(np.float32), y.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--reducers", nargs="+", default=["pca", "umap"])
    ap.add_argument("--clusterers", nargs="+", default=list(CLUSTERERS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=200.0)
    ap.add_argument("--n-jobs", type=int, default=-1, help="-1: all cores")
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    env = configure_environment()
    print(f"NUMBA_CACHE_DIR={env['NUMBA_CACHE_DIR']}")

    X, y = make_embeddings(args.n, args.dim, args.classes, args.noise, args.seed)
    if not args.no_warmup and "umap" in args.reducers:
        t0 = time.perf_counter()
        # as many rows as the exact-kNN path needs: the path of the timed runs (a smaller
        # input would compile pynndescent's uncacheable nn_descent, which they never use)
        Xw, yw = make_embeddings(UMAP_APPROX_MIN_ROWS, 64, 10, args.noise, args.seed)
        run_grid(Xw, yw, ["umap"], ["kmeans"], INTERNAL, seed=args.seed, n_jobs=1,
                 progress=False)
        print(f"numba warm-up (UMAP on {len(Xw)} points, in-process): "
              f"{time.perf_counter() - t0:.1f}s")

    runs = {} if args.skip_sequential else {"sequential": 1}
    runs[f"parallel (n_jobs={args.n_jobs} -> {effective_n_jobs(args.n_jobs)})"] = args.n_jobs
    results = {}
    for name, n_jobs in runs.items():
        load0 = os.getloadavg()[0]
        cpu0 = cpu_seconds()
        cache: dict = {}  # filled with this run's reductions (compared below)
        t0 = time.perf_counter()
        metrics, assign = run_grid(
            X, y, args.reducers, args.clusterers, INTERNAL, seed=args.seed, progress=False,
            n_jobs=n_jobs, reduction_cache=cache,
        )
        total = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        results[name] = (total, metrics, assign, load0, os.getloadavg()[0], cpu, cache)

    cols = [
        "reducer",
        "clusterer",
        "runtime_s",
        "n_grid_points",
        "ari",
        "ami",
        "ari_nonnoise",
        "purity",
        "noise_fraction",
        "n_clusters",
        "selection_score",
        "params",
    ]
    last = list(results.values())[-1]
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(last[1][cols].round(3).to_string(index=False))
    red = last[1].groupby("reducer", sort=False)["reduce_runtime_s"].first()
    print("\nreducer times (s): " + ", ".join(f"{k}={v:.1f}" for k, v in red.items()))
    for name, (total, metrics, assign, load0, load1, cpu, _) in results.items():
        print(
            f"{name}: TOTAL {total:.1f}s, CPU {cpu:.1f}s = {100 * cpu / total:.0f}% "
            f"(sum of task times {metrics['runtime_s'].sum():.1f}s) for n={args.n} "
            f"dim={args.dim} classes={args.classes}; load average (1 min) {load0:.2f} -> "
            f"{load1:.2f} on {os.cpu_count()} cores; {len(assign)} assignment rows"
        )
    identical = True
    if len(results) == 2:
        (t_seq, m_seq, a_seq, *_, c_seq), (t_par, m_par, a_par, *_, c_par) = results.values()
        identical = compare(m_seq, a_seq, c_seq, m_par, a_par, c_par)
        print(f"RATIO sequential/parallel = {t_seq / t_par:.2f}x ({t_seq:.1f}s -> {t_par:.1f}s)")
    t_final = list(results.values())[-1][0]
    print(f"{'within' if t_final <= args.budget_s else 'OVER'} the {args.budget_s:.0f}s budget")
    if not identical:
        raise SystemExit(1)


def cpu_seconds() -> float:
    """CPU time of this process and of its children (live loky workers included)."""
    if psutil is None:  # pragma: no cover - psutil comes with dvc
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:  # exited meanwhile: counted in children_* once waited
            pass
    return total


def compare(m_seq: pd.DataFrame, a_seq: pd.DataFrame, c_seq: dict, m_par: pd.DataFrame,
            a_par: pd.DataFrame, c_par: dict) -> bool:
    """Print whether the sequential and parallel runs agree: reductions bit for bit, then
    every table column but the timings; True when everything is identical."""
    same_keys = list(c_seq) == list(c_par)
    reductions = same_keys and all(
        all((a is None and b is None) or np.array_equal(a, b)
            for a, b in zip(c_seq[k][:2], c_par[k][:2], strict=True))
        for k in c_seq)
    print(f"reductions identical (bit for bit): {'yes' if reductions else 'NO'}")
    timing = ["runtime_s", "reduce_runtime_s"]
    ms, mp = m_seq.drop(columns=timing), m_par.drop(columns=timing)
    differing = [c for c in ms.columns if not ms[c].equals(mp[c])]
    for c in differing:
        rows = ms.index[ms[c].ne(mp[c]) & ~(ms[c].isna() & mp[c].isna())]
        for i in rows:
            print(f"  DIFFERS {ms.at[i, 'reducer']}/{ms.at[i, 'clusterer']} {c}: "
                  f"sequential {ms.at[i, c]!r} vs parallel {mp.at[i, c]!r}")
    assign_same = a_seq.equals(a_par)
    identical = reductions and not differing and assign_same
    print(f"sequential == parallel (params, metrics, assignments; timings aside): "
          f"{'yes' if identical else 'NO'}")
    return identical

if __name__ == "__main__":
    main()
