"""Plain-Python clustering + cluster-metrics library (no Kedro code).

Pipeline: embeddings -> :func:`reduce` (registry :data:`REDUCERS`) -> clusterer from
:data:`CLUSTERERS` with parameters chosen by :func:`select_and_cluster` (``internal`` /
``transfer`` / reference-only ``oracle``; label-free score in :mod:`.scoring`) ->
:func:`cluster_metrics`. :func:`run_grid` (:mod:`.run`) runs a whole reducer x clusterer grid
and returns tidy tables.
"""

from .clusterers import (
    CLUSTERERS,
    DEFAULT_GRIDS,
    ClustererSpec,
    GridFit,
    cluster,
    default_grid,
    expand_grid,
    fit_grid,
)
from .metrics import METRIC_KEYS, cluster_metrics, noise_as_singletons
from .reducers import (
    DEFAULT_REDUCER_PARAMS,
    REDUCERS,
    check_clustering_reducer,
    density_input,
    reduce,
)
from .run import ASSIGNMENT_COLUMNS, METRICS_COLUMNS, run_grid
from .scoring import internal_score
from .selection import ClusterResult, select_and_cluster

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "CLUSTERERS",
    "DEFAULT_GRIDS",
    "DEFAULT_REDUCER_PARAMS",
    "METRICS_COLUMNS",
    "METRIC_KEYS",
    "REDUCERS",
    "ClusterResult",
    "ClustererSpec",
    "GridFit",
    "check_clustering_reducer",
    "cluster",
    "cluster_metrics",
    "default_grid",
    "density_input",
    "expand_grid",
    "fit_grid",
    "internal_score",
    "noise_as_singletons",
    "reduce",
    "run_grid",
    "select_and_cluster",
]
