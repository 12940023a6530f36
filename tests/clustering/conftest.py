"""Fixtures of the clustering tests."""

from __future__ import annotations

import numpy as np
import pytest

from tests.clustering import blobs


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """An evaluated split (6 blobs), the same labels permuted, and a selection split (5 blobs)."""
    X_eval, y_eval = blobs(10)
    X_sel, y_sel = blobs(11, k=5)
    perm = np.random.default_rng(0).permutation(len(y_eval))
    return {"X": X_eval, "y": y_eval, "y_perm": y_eval[perm], "Xs": X_sel, "ys": y_sel}
