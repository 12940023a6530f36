"""Fingerprints that tie the data_engineering outputs (and the checkpoints trained on them) together.

Two fingerprints, each a short hash of a table's content:

* ``source_fingerprint``: the validated image set (``image_id``, ``path``, box) every later table
  is derived from. ``validate_images`` stamps it on ``validated_images``; it travels with
  ``image_splits`` and ``multiview_samples`` and is recorded in the crops store's meta.
* ``split_fingerprint``: the split assignment (``image_id``, ``split``, ``class_id``) of
  ``image_splits``, stamped on ``image_splits`` and ``multiview_samples`` and recorded in the
  crops store's meta when the store carries a ``split`` column.

Checkpoints record the fingerprints of the data they were trained on. Finetuning and embeddings
call :func:`check_versions` on their inputs: every fingerprint present in several of them must
be equal, else the inputs come from different data_engineering runs (e.g. one interrupted during
the crop stage) and the run stops, naming the datasets. Inputs without fingerprints (written by
an older version) are not checked (a warning says so).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

SOURCE_KEY = "source_fingerprint"
SPLIT_KEY = "split_fingerprint"
KEYS = (SOURCE_KEY, SPLIT_KEY)
RERUN_DATA = "kedro run --pipelines data_engineering"


def table_fingerprint(df: pd.DataFrame, columns: list[str]) -> str:
    """Order-independent 16-hex-digit hash of ``df[columns]``."""
    part = df[columns].astype("string").fillna("<NA>")
    rows = sorted("\x1f".join(r) for r in part.itertuples(index=False, name=None))
    return hashlib.sha256("\x1e".join(rows).encode()).hexdigest()[:16]


def source_fingerprint(validated: pd.DataFrame) -> str:
    """Fingerprint of the validated image set (ids, paths and boxes)."""
    return table_fingerprint(validated, ["image_id", "path", "x0", "y0", "x1", "y1"])


def split_fingerprint(image_splits: pd.DataFrame) -> str:
    """Fingerprint of a split assignment (ids, splits and classes)."""
    return table_fingerprint(image_splits, ["image_id", "split", "class_id"])


def stamp_split_tables(image_splits: pd.DataFrame, pairs: pd.DataFrame
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``image_splits`` and ``multiview_samples`` with their split (and source) fingerprints."""
    stamp = {SPLIT_KEY: split_fingerprint(image_splits)}
    source = fingerprints_of(image_splits).get(SOURCE_KEY)
    if source:
        stamp[SOURCE_KEY] = source
    return image_splits.assign(**stamp), pairs.assign(**stamp)


def fingerprints_of(obj: Any) -> dict[str, str]:
    """The fingerprints a table (constant columns), a crops store or a checkpoint carries."""
    if isinstance(obj, pd.DataFrame):
        out = {}
        for key in KEYS:
            if key in obj.columns and len(obj):
                values = obj[key].dropna().unique()
                out[key] = ",".join(sorted(map(str, values)))  # >1 value: mixed, never equal
        return out
    meta = getattr(obj, "meta", None)
    if isinstance(meta, Mapping):
        recorded = meta.get("data_fingerprints", meta)
        return {k: str(recorded[k]) for k in KEYS if recorded.get(k)}
    return {}


def check_versions(rerun: str = RERUN_DATA, **datasets: Any) -> dict[str, str]:
    """Refuse inputs whose fingerprints disagree; return the agreed fingerprints.

    ``datasets``: catalog name -> table, crops store or checkpoint. ``rerun``: the command that
    rebuilds a consistent set, named in the error.
    """
    found = {name: fingerprints_of(obj) for name, obj in datasets.items()}
    unchecked = sorted(name for name, fps in found.items() if not fps)
    if unchecked:
        logger.warning("no data fingerprint in %s (written by an older version): their version "
                       "cannot be checked against the others", ", ".join(unchecked))
    agreed: dict[str, str] = {}
    for key in KEYS:
        values = {name: fps[key] for name, fps in found.items() if key in fps}
        if len(set(values.values())) > 1:
            listing = ", ".join(f"{name}={value}" for name, value in values.items())
            raise ValueError(
                f"inputs come from different data_engineering runs ({key} differs: {listing}); "
                f"a run was probably interrupted or only part of the pipeline re-ran. "
                f"Rebuild a consistent set with `{rerun}`")
        if values:
            agreed[key] = next(iter(values.values()))
    return agreed
