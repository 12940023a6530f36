"""Shared data of the clustering tests: small well-separated blobs."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs

from compcars_kedro.clustering import CLUSTERERS

ALL = list(CLUSTERERS)
#: the ``none`` reducer without L2 normalisation (blobs are euclidean)
RAW = {"none": {"l2_normalize": False}}


def blobs(seed: int, k: int = 6, n_per: int = 30, *, n_features: int = 6,
          cluster_std: float = 1.0, box: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` Gaussian blobs of ``n_per`` points, centres uniform in ``[-box, box]``."""
    return make_blobs(
        n_samples=k * n_per,
        centers=k,
        n_features=n_features,
        cluster_std=cluster_std,
        center_box=(-box, box),
        random_state=seed,
    )
