"""Scale benchmark: full reducer x clusterer grid on synthetic embeddings (internal selection).

Budget: the default run (20,000 x 2048, 200 classes, pca + umap, all 5 clusterers, default
grids) must finish in <= 5 minutes on 2 CPU cores.

    NUMBA_CACHE_DIR=.cache/numba python benchmarks/clustering_scale.py
    python benchmarks/clustering_scale.py --n 3000 --dim 256 --classes 30   # quick check
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
from sklearn.preprocessing import normalize

from compcars_kedro.clustering import CLUSTERERS, run_grid

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
    ap.add_argument("--budget-s", type=float, default=300.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    t0 = time.perf_counter()
    X, y = make_embeddings(args.n, args.dim, args.classes, args.noise, args.seed)
    gen_s = time.perf_counter() - t0
    metrics, assign = run_grid(
        X, y, args.reducers, args.clusterers, "internal", seed=args.seed, progress=False
    )
    total = time.perf_counter() - t0

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
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(metrics[cols].round(3).to_string(index=False))
    red = metrics.groupby("reducer", sort=False)["reduce_runtime_s"].first()
    print("\nreducer times (s): " + ", ".join(f"{k}={v:.1f}" for k, v in red.items()))
    print(f"data generation: {gen_s:.1f}s; clustering+selection: {metrics['runtime_s'].sum():.1f}s")
    print(
        f"TOTAL {total:.1f}s for n={args.n} dim={args.dim} classes={args.classes} "
        f"({'within' if total <= args.budget_s else 'OVER'} the {args.budget_s:.0f}s budget); "
        f"{len(assign)} assignment rows"
    )


if __name__ == "__main__":
    main()
