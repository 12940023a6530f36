"""Scale benchmark: full reducer x clusterer grid on synthetic embeddings (internal selection).

Target: the default run (20,000 x 2048, 200 classes, pca + umap, all 5 clusterers, default
grids) in <= 200 s on 2 CPU cores with every core in use. The same process first runs the
grid sequentially (``n_jobs=1``, the baseline) and then on all cores (``--n-jobs``, default
-1), checks that both tables are identical (timings aside) and prints the speed-up ratio
and the machine load (1-minute load average before/after; the ratio is the number to
compare on a busy machine).

Before timing, a small UMAP fit warms numba's on-disk cache (``NUMBA_CACHE_DIR``, set inside
``.cache`` by ``compcars_kedro._environment``), so neither timed run pays JIT compilation; its
time is printed (a cold cache costs minutes once per machine, later runs load it).

    nice -n 0 python benchmarks/clustering_scale.py
    python benchmarks/clustering_scale.py --n 3000 --dim 256 --classes 30   # quick check
    python benchmarks/clustering_scale.py --skip-sequential                 # parallel only
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import pandas as pd
from sklearn.preprocessing import normalize

from compcars_kedro._environment import configure_environment
from compcars_kedro.clustering import CLUSTERERS, run_grid
from compcars_kedro.clustering.parallel import effective_n_jobs

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
        Xw, yw = make_embeddings(600, 64, 10, args.noise, args.seed)
        run_grid(Xw, yw, ["umap"], ["kmeans"], "internal", seed=args.seed, n_jobs=1,
                 progress=False)
        print(f"numba warm-up (UMAP on 600 points, in-process): {time.perf_counter() - t0:.1f}s")

    runs = {} if args.skip_sequential else {"sequential": 1}
    runs[f"parallel (n_jobs={args.n_jobs} -> {effective_n_jobs(args.n_jobs)})"] = args.n_jobs
    results = {}
    for name, n_jobs in runs.items():
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        metrics, assign = run_grid(
            X, y, args.reducers, args.clusterers, "internal", seed=args.seed, progress=False,
            n_jobs=n_jobs,
        )
        total = time.perf_counter() - t0
        results[name] = (total, metrics, assign, load0, os.getloadavg()[0])

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
    for name, (total, metrics, assign, load0, load1) in results.items():
        print(
            f"{name}: TOTAL {total:.1f}s (sum of task times {metrics['runtime_s'].sum():.1f}s) "
            f"for n={args.n} dim={args.dim} classes={args.classes}; load average (1 min) "
            f"{load0:.2f} -> {load1:.2f} on {os.cpu_count()} cores; {len(assign)} assignment rows"
        )
    if len(results) == 2:
        (t_seq, m_seq, a_seq, *_), (t_par, m_par, a_par, *_) = results.values()
        timing = ["runtime_s", "reduce_runtime_s"]
        pd.testing.assert_frame_equal(m_seq.drop(columns=timing), m_par.drop(columns=timing))
        pd.testing.assert_frame_equal(a_seq, a_par)
        print("tables identical (sequential vs parallel, timings aside)")
        print(f"RATIO sequential/parallel = {t_seq / t_par:.2f}x ({t_seq:.1f}s -> {t_par:.1f}s)")
    t_final = list(results.values())[-1][0]
    print(f"{'within' if t_final <= args.budget_s else 'OVER'} the {args.budget_s:.0f}s budget")


if __name__ == "__main__":
    main()
