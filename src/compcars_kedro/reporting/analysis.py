"""Embedding-level analyses behind the figures: 2-D views, cluster composition, centroid confusion.

Nothing here chooses a model or a parameter: it describes results that exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix
from sklearn.preprocessing import normalize

from compcars_kedro.clustering.reducers import reduce
from compcars_kedro.types import CropsStore, EmbeddingSet

logger = logging.getLogger(__name__)

NOISE = -1
#: below this many points UMAP / t-SNE are meaningless: the 2-D view falls back to PCA
MIN_POINTS_NONLINEAR = 15


def class_names(index: pd.DataFrame) -> pd.Series:
    """Readable true-model names of a sample table (``class_name``, else ``make model``, else id).

    A name shared by several ``class_id`` values gets `` #<class_id>`` appended, so distinct
    models never merge in a legend, a gallery caption or a confusion matrix.
    """
    if "class_name" in index:
        names = index["class_name"].astype(str)
    elif {"make", "model"} <= set(index.columns):
        names = index["make"].astype(str) + " " + index["model"].astype(str)
    else:
        names = index["class_id"].astype(str)
    if "class_id" in index:
        ids = index["class_id"].astype(str)
        shared = pd.DataFrame({"n": names, "i": ids}).groupby("n")["i"].nunique()
        dup = names.map(shared).gt(1)
        names = names.where(~dup, names + " #" + ids)
    return names


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted row numbers of a seeded subsample of at most ``max_points`` of ``n`` rows."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def project_2d(vectors: np.ndarray, reducer: str, params: dict[str, Any] | None = None,
               seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates for a scatter plot and the reducer actually used.

    UMAP / t-SNE need enough points; below :data:`MIN_POINTS_NONLINEAR` (or if they fail on a
    degenerate input) PCA is used and the returned name says so.
    """
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32), reducer
    if n < 3 or vectors.shape[1] < 2:
        xy = np.zeros((n, 2), dtype=np.float32)
        xy[:, : min(2, vectors.shape[1])] = vectors[:, :2]
        return xy, "raw"
    used = reducer
    if reducer != "pca" and n < MIN_POINTS_NONLINEAR:
        used = "pca"
    merged = {**(params or {}), "n_components": 2}
    if used == "pca":
        merged = {"n_components": 2}
    try:
        xy = reduce(vectors, used, merged, seed, for_clustering=False)
    except Exception as exc:  # noqa: BLE001 - a plot must not kill the report
        logger.warning("2-D %s failed (%s); using PCA", used, exc)
        used = "pca"
        xy = reduce(vectors, "pca", {"n_components": 2}, seed, for_clustering=False)
    if xy.shape[1] < 2:
        xy = np.column_stack([xy, np.zeros(len(xy), dtype=np.float32)])
    return xy[:, :2], used


def assignment_for(assignments: pd.DataFrame, keys: dict[str, Any], source: str, split: str,
                   method: dict[str, str]) -> pd.Series:
    """Cluster id per ``sample_id`` of one run / source / split / method (empty if absent)."""
    if assignments is None or assignments.empty:
        return pd.Series(dtype="int64")
    mask = ((assignments["source"] == source) & (assignments["split"] == split)
            & (assignments["selection_mode"] == method["selection_mode"])
            & (assignments["reducer"] == method["reducer"])
            & (assignments["clusterer"] == method["clusterer"]))
    for key, value in keys.items():
        if key in assignments:
            mask &= assignments[key].astype(str) == str(value)
    sel = assignments.loc[mask, ["sample_id", "cluster"]].drop_duplicates("sample_id")
    return sel.set_index("sample_id")["cluster"].astype("int64")


def cluster_composition(clusters: pd.Series, names: pd.Series) -> pd.DataFrame:
    """Per non-noise cluster: size, number of true models, dominant model and purity.

    ``clusters`` and ``names`` are aligned by sample id. Sorted by size (desc), then cluster id.
    """
    df = pd.DataFrame({"cluster": clusters, "name": names}).dropna()
    df = df[df["cluster"] != NOISE]
    cols = ["cluster", "size", "n_models", "dominant", "dominant_count", "purity"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for cluster, g in df.groupby("cluster", sort=True):
        counts = g["name"].value_counts(sort=True)
        top = counts.sort_values(ascending=False, kind="mergesort")
        rows.append({"cluster": int(cluster), "size": len(g), "n_models": int(len(counts)),
                     "dominant": str(top.index[0]), "dominant_count": int(top.iloc[0]),
                     "purity": float(top.iloc[0] / len(g))})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["size", "cluster"], ascending=[False, True], ignore_index=True)


def pick_gallery_clusters(composition: pd.DataFrame, n_pure: int, n_mixed: int,
                          min_size: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n_pure`` largest pure clusters and the ``n_mixed`` largest mixed ones."""
    big = composition[composition["size"] >= min_size]
    pure = big[big["purity"] >= 1.0].head(n_pure)
    mixed = big[big["purity"] < 1.0].head(n_mixed)
    return pure, mixed


def _image_columns(index: pd.DataFrame) -> list[str]:
    cols = [c for c in index.columns if c.endswith("_image_id")]
    if not cols and "image_id" in index:
        cols = ["image_id"]
    return cols


def sample_thumbnail(crops: CropsStore, row: pd.Series, image_cols: list[str]) -> np.ndarray:
    """The crops of one sample's views side by side (front | rear), uint8 ``S x (V*S) x 3``."""
    ids = [row[c] for c in image_cols if isinstance(row[c], str) and row[c]]
    if not ids:
        return np.zeros((crops.size, crops.size, 3), dtype=np.uint8)
    rows = crops.rows_for(ids)
    return np.concatenate([np.asarray(crops.images[r]) for r in rows], axis=1)


def diverse_members(members: pd.DataFrame, k: int) -> pd.DataFrame:
    """Up to ``k`` members, round-robin over true models (largest first) so a mix is visible."""
    if len(members) <= k:
        return members.sort_values(["name", "sample_id"])
    groups = [g.sort_values("sample_id") for _, g in
              sorted(members.groupby("name"), key=lambda kv: (-len(kv[1]), kv[0]))]
    picked: list[pd.Series] = []
    i = 0
    while len(picked) < k:
        for g in groups:
            if i < len(g) and len(picked) < k:
                picked.append(g.iloc[i])
        i += 1
    return pd.DataFrame(picked)


@dataclass
class GalleryRow:
    title: str
    kind: str  # "pure" | "mixed"
    images: list[np.ndarray] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


def gallery_rows(crops: CropsStore, embeddings: EmbeddingSet, clusters: pd.Series, n_pure: int,
                 n_mixed: int, per_cluster: int, min_size: int = 2) -> list[GalleryRow]:
    """Thumbnails (with true model names) of the largest pure and mixed clusters."""
    index = embeddings.index.reset_index(drop=True)
    names = pd.Series(class_names(index).to_numpy(), index=index["sample_id"].to_numpy())
    comp = cluster_composition(clusters, names.reindex(clusters.index))
    pure, mixed = pick_gallery_clusters(comp, n_pure, n_mixed, min_size)
    image_cols = _image_columns(index)
    by_id = index.set_index("sample_id")
    out = []
    for kind, chosen in (("pure", pure), ("mixed", mixed)):
        for c in chosen.itertuples():
            ids = clusters.index[clusters.to_numpy() == c.cluster]
            members = pd.DataFrame({"sample_id": ids, "name": names.reindex(ids).to_numpy()})
            members = diverse_members(members, per_cluster)
            if kind == "pure":
                title = f"cluster {c.cluster}: pure, {c.size} samples, all {c.dominant}"
            else:
                title = (f"cluster {c.cluster}: mixed, {c.size} samples, {c.n_models} models, "
                         f"purity {c.purity:.2f} (dominant {c.dominant})")
            row = GalleryRow(title=title, kind=kind)
            for m in members.itertuples():
                row.images.append(sample_thumbnail(crops, by_id.loc[m.sample_id], image_cols))
                row.captions.append(str(m.name))
            out.append(row)
    return out


@dataclass
class CentroidConfusion:
    matrix: pd.DataFrame          # counts; rows = true model, columns = predicted model
    accuracy: float
    n_test: int
    n_classes: int
    shown_classes: int
    note: str


def nearest_centroid_confusion(reference: EmbeddingSet, query: EmbeddingSet,
                               max_classes: int = 30) -> CentroidConfusion:
    """Classify ``query`` embeddings by the nearest (cosine) class centroid of ``reference``.

    Centroids are the means of the L2-normalised reference embeddings of each true model
    (re-normalised). With more than ``max_classes`` models the matrix keeps the
    ``max_classes`` models with the most confusions (errors as true or as predicted class);
    the accuracy always counts every query sample.
    """
    ref_names = class_names(reference.index).to_numpy()
    q_names = class_names(query.index).to_numpy()
    classes = np.array(sorted(set(ref_names)))
    if len(classes) == 0 or len(query.vectors) == 0:
        return CentroidConfusion(pd.DataFrame(), float("nan"), len(query.vectors), 0, 0,
                                 "no reference or query samples")
    ref = normalize(np.asarray(reference.vectors, dtype=np.float32))
    centroids = normalize(np.stack([ref[ref_names == c].mean(axis=0) for c in classes]))
    sims = normalize(np.asarray(query.vectors, dtype=np.float32)) @ centroids.T
    pred = classes[np.argmax(sims, axis=1)]
    accuracy = float(np.mean(pred == q_names))
    labels = np.array(sorted(set(classes) | set(q_names)))
    cm = pd.DataFrame(confusion_matrix(q_names, pred, labels=labels), index=labels, columns=labels)
    note = ""
    if len(labels) > max_classes:
        off = cm.to_numpy().copy()
        np.fill_diagonal(off, 0)
        errors = off.sum(axis=0) + off.sum(axis=1)
        keep = labels[np.sort(np.argsort(-errors, kind="stable")[:max_classes])]
        cm = cm.loc[keep, keep]
        note = (f"showing the {max_classes} of {len(labels)} models with the most confusions; "
                "accuracy counts every sample")
    return CentroidConfusion(cm, accuracy, len(q_names), len(labels), len(cm), note)
