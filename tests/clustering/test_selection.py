"""Selection never reads the evaluated split's labels."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from compcars_kedro.clustering import run_grid, select_and_cluster
from compcars_kedro.clustering import selection as sel
from tests.clustering import ALL, RAW


def _run(d: dict[str, np.ndarray], y: np.ndarray, mode: str):
    kw = {"X_select": d["Xs"], "y_select": d["ys"]} if mode == "transfer" else {}
    return run_grid(
        d["X"], y, ["none"], ALL, mode, seed=0, reducer_params=RAW, progress=False, **kw
    )


def test_eval_labels_are_not_a_selection_parameter() -> None:
    for fn in (sel._select_internal, sel._select_transfer):
        params = set(inspect.signature(fn).parameters)
        assert not params & {"y_eval", "y_true", "y", "y_eval_for_oracle"}
    assert "y_eval" not in inspect.signature(select_and_cluster).parameters


@pytest.mark.parametrize("mode", ["internal", "transfer"])
def test_permuting_eval_labels_leaves_chosen_params_unchanged(data, mode: str) -> None:
    a, _ = _run(data, data["y"], mode)
    b, _ = _run(data, data["y_perm"], mode)
    assert list(a["params"]) == list(b["params"])
    assert list(a["resolved_params"]) == list(b["resolved_params"])
    np.testing.assert_allclose(a["selection_score"], b["selection_score"], equal_nan=True)
    chosen = ~a["uses_true_k"]
    assert (a.loc[chosen, "selection_mode"] == mode).all()
    assert (a.loc[~chosen, "selection_mode"] == "reference").all()  # kmeans with the true k
    # ... while the metrics do see the labels
    assert (a["ari"] > b["ari"] + 0.5).all()


def test_oracle_rows_are_labelled_and_selection_can_change(data) -> None:
    a, _ = _run(data, data["y"], "oracle")
    b, _ = _run(data, data["y_perm"], "oracle")
    for t in (a, b):
        assert (t["selection_mode"] == np.where(t["uses_true_k"], "reference", "oracle")).all()
    # oracle selection reads the evaluated labels: its choice depends on them
    multi = a["n_grid_points"] > 1
    assert (a.loc[multi, "params"] != b.loc[multi, "params"]).any()
    assert not np.allclose(a.loc[multi, "selection_score"], b.loc[multi, "selection_score"])


def test_y_eval_for_oracle_rejected_outside_oracle(data) -> None:
    with pytest.raises(ValueError, match="oracle"):
        select_and_cluster(data["X"], "dbscan", None, "internal", y_eval_for_oracle=data["y"])
    with pytest.raises(ValueError, match="X_select"):
        select_and_cluster(data["X"], "dbscan", None, "transfer")
    with pytest.raises(ValueError, match="mode"):
        select_and_cluster(data["X"], "dbscan", None, "cheat")
