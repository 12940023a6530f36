"""Turn the crops store + pairs table into training / extraction samples (one place for both).

A *sample* is one image (``views=["front"]`` or ``["rear"]``) or one front+rear pair
(``views=["front", "rear"]``, pairs from ``multiview_samples``; see the pairing rule in
``split_dataset``). Training and extraction both call :func:`build_view_data`, and the model fuses
the views of a sample by concatenation in both, so the representation that is clustered is
exactly the one that was trained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compcars_kedro.names import TRAIN
from compcars_kedro.training.data import ViewData
from compcars_kedro.training.tokenizer import build_prompt
from compcars_kedro.types import CropsStore

SAMPLE_COLUMNS = ["sample_id", "split", "class_id", "class_name", "make", "model", "type"]


def parse_views(views: str | list[str]) -> list[str]:
    """``"front+rear"`` / ``["front", "rear"]`` -> ``["front", "rear"]`` (order kept)."""
    names = views.split("+") if isinstance(views, str) else list(views)
    names = [v.strip() for v in names if v.strip()]
    bad = [v for v in names if v not in ("front", "rear")]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"views={views!r}: valid settings are 'front', 'rear', 'front+rear'")
    return names


def sample_table(crops: CropsStore, pairs: pd.DataFrame, views: list[str], split: str) -> pd.DataFrame:
    """One row per sample of ``split`` with its metadata and one ``<view>_image_id`` per view."""
    index = crops.index
    if len(views) == 1:
        view = views[0]
        rows = index.loc[(index["split"] == split) & (index["viewpoint"] == view)]
        table = rows.assign(sample_id=rows["image_id"], **{f"{view}_image_id": rows["image_id"]})
    else:
        table = pairs.loc[pairs["split"] == split].merge(
            index.drop_duplicates("class_id")[["class_id", "class_name", "make", "model", "type"]],
            on="class_id", how="left")
    cols = SAMPLE_COLUMNS + [f"{v}_image_id" for v in views]
    return table[cols].sort_values("sample_id").reset_index(drop=True)


def with_splits(crops: CropsStore, image_splits: pd.DataFrame | None) -> CropsStore:
    """The crops store with its ``split`` column taken from ``image_splits`` (no pixel copied).

    The crops store holds every kept image; which split an image belongs to is decided by the
    split table, so an experiment can use another split seed without re-cropping. ``None``
    keeps the split the store was cropped with.
    """
    if image_splits is None:
        return crops
    from compcars_kedro.data.fingerprint import RERUN_DATA, SOURCE_KEY, SPLIT_KEY, fingerprints_of

    # same validated images (source fingerprint); the split fingerprint becomes the table's
    ours, theirs = fingerprints_of(crops), fingerprints_of(image_splits)
    if ours.get(SOURCE_KEY) and theirs.get(SOURCE_KEY) and ours[SOURCE_KEY] != theirs[SOURCE_KEY]:
        raise ValueError(f"crops ({SOURCE_KEY}={ours[SOURCE_KEY]}) and the split table "
                         f"({theirs[SOURCE_KEY]}) come from different validated image sets; "
                         f"rebuild a consistent set with `{RERUN_DATA}`")
    split = image_splits.set_index("image_id")["split"]
    missing = split.index.difference(pd.Index(crops.index["image_id"]))
    if len(missing):
        raise KeyError(f"{len(missing)} images of the split table are not in the crops store "
                       f"(e.g. {missing[0]}); rerun data_engineering (kedro run --pipelines "
                       "data_engineering) so crops and splits come from the same kept images")
    index = crops.index.assign(split=crops.index["image_id"].map(split).fillna("").to_numpy())
    meta = {k: v for k, v in crops.meta.items() if k not in ("data_fingerprints", SPLIT_KEY)}
    meta.update({k: v for k, v in ours.items() if k != SPLIT_KEY})
    if theirs.get(SPLIT_KEY):
        meta[SPLIT_KEY] = theirs[SPLIT_KEY]
    return CropsStore(images=crops.images, index=index, meta=meta)


def label_map(classes: pd.Series) -> dict[str, int]:
    """Deterministic class id -> integer label (sorted class ids)."""
    return {c: i for i, c in enumerate(sorted(pd.unique(classes)))}


def build_view_data(
    crops: CropsStore, pairs: pd.DataFrame, views: list[str], split: str,
    labels: dict[str, int] | None = None, prompt_template: str | None = None,
) -> tuple[ViewData, pd.DataFrame]:
    """ViewData (memmap-backed, nothing copied) and its sample table for one split.

    ``labels`` maps class ids to integers (the training label map for seen splits); classes not
    in it (e.g. the ``unseen`` split) get their own integers after it, for metrics only.
    """
    table = sample_table(crops, pairs, views, split)
    if table.empty:
        raise ValueError(f"split {split!r} has no samples for views {'+'.join(views)}")
    if split != TRAIN:  # no metric on a set in which an image appears twice
        ids = pd.concat([table[f"{v}_image_id"] for v in views])
        if not ids.is_unique:
            raise ValueError(
                f"split {split!r} ({'+'.join(views)}) uses {int(ids.duplicated().sum())} images "
                f"twice (e.g. {ids[ids.duplicated()].iloc[0]}); evaluation pairs must be unique: "
                "rerun data_engineering (kedro run --pipelines data_engineering)")
    mapping = dict(labels or {})
    for c in sorted(set(table["class_id"]) - set(mapping)):
        mapping[c] = len(mapping)
    view_rows = np.stack([crops.rows_for(table[f"{v}_image_id"]) for v in views], axis=1)
    texts = None
    if prompt_template:
        texts = [build_prompt(prompt_template, make=r.make, model=r.model, type=r.type)
                 for r in table.itertuples()]
    y = table["class_id"].map(mapping).to_numpy(dtype=np.int64)
    return ViewData(crops.images, view_rows, y, texts), table.assign(label=y)
