"""data_engineering nodes: pure functions from tables (and a raw-source handle) to tables."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from compcars_kedro.data.dedup import check_and_hash_many, near_duplicate_groups
from compcars_kedro.data.fingerprint import (
    SOURCE_KEY,
    fingerprints_of,
    source_fingerprint,
    stamp_split_tables,
)
from compcars_kedro.data.imaging import CropPlan, CropSpec
from compcars_kedro.data.raw import RawSource, parse_compcars, parse_manifest_csv
from compcars_kedro.names import (
    BBOX_OUTSIDE_IMAGE,
    DECODE_ERROR,
    DECOMPRESSION_BOMB,
    DEGENERATE_BBOX,
    LABEL_ERROR,
    MISSING_FILE,
    MISSING_LABEL,
    NOT_AN_IMAGE,
    SPLITS,
    TEST,
    TOO_LARGE,
    TRAIN,
    UNKNOWN_VIEWPOINT,
    UNSEEN,
    VAL,
)
from compcars_kedro.params import DataEngineeringParams
from compcars_kedro.types import CropsStore
from compcars_kedro.validation import validate

logger = logging.getLogger(__name__)

REJECTED_COLUMNS = ["image_id", "path", "reason", "detail"]  # reason: one of names.REJECT_REASONS


def parse_raw(raw: RawSource, parameters: dict[str, Any] | None = None) -> pd.DataFrame:
    """Raw collection -> manifest: one row per file (and per listed-but-missing file)."""
    p = validate(DataEngineeringParams, parameters or {}, "data_engineering")
    manifest = (parse_compcars(raw.root) if raw.kind == "compcars" else
                parse_manifest_csv(raw.root, allow_absolute_paths=p.allow_absolute_paths))
    logger.info("parsed %d entries from %s (%s)", len(manifest), raw.root, raw.kind)
    return manifest


def _bbox_check(row: pd.Series, tolerance: float, min_size: int) -> tuple[str | None, str, tuple]:
    x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
    w, h = float(row["width"]), float(row["height"])
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return DEGENERATE_BBOX, f"box {x0:g},{y0:g},{x1:g},{y1:g} smaller than {min_size}px", ()
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(w, x1), min(h, y1)
    inside = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
    outside = 1.0 - inside / ((x1 - x0) * (y1 - y0))
    if outside > tolerance:
        return (BBOX_OUTSIDE_IMAGE,
                f"{outside:.0%} of box {x0:g},{y0:g},{x1:g},{y1:g} outside {w:g}x{h:g}", ())
    if cx1 - cx0 < min_size or cy1 - cy0 < min_size:
        return DEGENERATE_BBOX, "box degenerate after clipping", ()
    return None, "", (cx0, cy0, cx1, cy1)


def _row_checks(manifest: pd.DataFrame, p: DataEngineeringParams
                ) -> tuple[dict[int, tuple[str, str]], dict[int, tuple[str | None, str, tuple]]]:
    """The checks that need no pixels, in one pass over the rows: ``(reasons, labels)``.

    ``reasons``: parse problems, missing file or label, header, size (the image is not decoded).
    ``labels``: for every other row, :func:`_label_check` (applied after the decode check).
    """
    reasons: dict[int, tuple[str, str]] = {}
    labels: dict[int, tuple[str | None, str, tuple]] = {}
    for i, row in manifest.iterrows():
        if pd.notna(row.get("input_reason")):
            reasons[i] = (str(row["input_reason"]), str(row.get("input_detail") or ""))
        elif not row["exists"]:
            reasons[i] = (MISSING_FILE, "listed in train_test_split but not on disk")
        elif not row["has_label"]:
            reasons[i] = (MISSING_LABEL, "no label file")
        elif pd.notna(row["label_error"]):
            reasons[i] = (LABEL_ERROR, str(row["label_error"]))
        elif pd.isna(row["width"]):
            reasons[i] = (NOT_AN_IMAGE, "file header is not a readable image")
        elif row["width"] * row["height"] > p.max_pixels:
            reasons[i] = (TOO_LARGE, f"{row['width']:.0f}x{row['height']:.0f} = "
                          f"{row['width'] * row['height'] / 1e6:.1f} MP > data_engineering."
                          f"max_pixels={p.max_pixels / 1e6:g} MP (not decoded)")
        else:
            labels[i] = _label_check(row, p)
    return reasons, labels


def _label_check(row: pd.Series, p: DataEngineeringParams) -> tuple[str | None, str, tuple]:
    """Viewpoint known, box not degenerate and inside the image: ``(reason, detail, clipped)``."""
    if row["viewpoint"] in (None, "unknown") or pd.isna(row["viewpoint"]):
        return UNKNOWN_VIEWPOINT, f"viewpoint code {row['viewpoint_code']}", ()
    return _bbox_check(row, p.bbox_tolerance, p.min_bbox_size)


def validate_images(
    manifest: pd.DataFrame, raw: RawSource, parameters: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Check every row; return (valid rows with clipped boxes, rejected rows with one reason
    each, perceptual hashes of the kept-viewpoint valid images).

    Checks in order: problems found while parsing (``input_reason``: path outside the root,
    duplicate path, decompression bomb...), file exists, label present and parsable, file is an
    image, at most ``max_pixels`` (from the header, nothing decoded), it decodes fully, viewpoint
    known, box not degenerate, box inside the image (clipped when at most ``bbox_tolerance`` of
    its area lies outside, rejected beyond). Fewer than 2 valid classes is an error.

    ``image_hashes`` (``image_id``, ``hash``, ``method``, ``hash_size``): the ``dedup.method``
    hash of the clipped box crop of every valid image of a kept viewpoint, computed from the
    same decode as the check (:func:`~compcars_kedro.data.dedup.check_and_hash`), so each image
    is decoded once here. ``split_dataset`` groups the images of a class whose hashes lie
    within ``dedup.max_distance`` bits (near-duplicates: the same photo re-encoded or resized)
    and sends each group to one split. An image that cannot be hashed gets ``""`` (its own group).
    """
    p = validate(DataEngineeringParams, parameters, "data_engineering")
    # the viewpoint and box checks need no pixels: known first, so the decode can hash the box
    reasons, labels = _row_checks(manifest, p)
    to_decode = list(labels)
    views, paths = manifest["viewpoint"].to_dict(), manifest["path"].to_dict()
    hash_boxes = [labels[i][2] if labels[i][0] is None and views[i] in p.viewpoints else None
                  for i in to_decode]
    results = check_and_hash_many(
        [str(raw.resolve(paths[i])) for i in to_decode], hash_boxes,
        method=p.dedup.method, hash_size=p.dedup.hash_size, num_workers=p.num_workers)
    clipped: dict[int, tuple] = {}
    hashes: dict[int, str] = {}
    for i, (err, image_hash) in zip(to_decode, results, strict=True):
        reason, detail, box = labels[i]
        if err is not None:
            bomb = err.startswith("DecompressionBomb")
            reasons[i] = (DECOMPRESSION_BOMB if bomb else DECODE_ERROR, err)
        elif reason:
            reasons[i] = (reason, detail)
        else:
            clipped[i] = box
            if image_hash is not None:
                hashes[i] = image_hash

    rejected = pd.DataFrame(
        [{"image_id": manifest.at[i, "image_id"], "path": manifest.at[i, "path"],
          "reason": r, "detail": d} for i, (r, d) in sorted(reasons.items())],
        columns=REJECTED_COLUMNS,
    )
    valid = manifest.loc[sorted(clipped)].copy()
    boxes = np.array([clipped[i] for i in valid.index], dtype=float).reshape(-1, 4)
    orig = valid[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    valid[["x0", "y0", "x1", "y1"]] = boxes
    valid["bbox_clipped"] = ~np.isclose(orig, boxes).all(axis=1)
    valid["model"] = valid["model"].fillna("model_" + valid["model_id"].astype("string"))
    valid["make"] = valid["make"].fillna("make_" + valid["make_id"].astype("string"))
    hashed = [i for i in valid.index if i in hashes]
    image_hashes = pd.DataFrame({"image_id": valid.loc[hashed, "image_id"].to_numpy(),
                                 "hash": [hashes[i] for i in hashed],
                                 "method": p.dedup.method, "hash_size": p.dedup.hash_size})
    valid = valid.drop(columns=["exists", "has_label", "label_error", "input_reason",
                                "input_detail"], errors="ignore").reset_index(drop=True)
    valid[SOURCE_KEY] = source_fingerprint(valid)  # carried by every table derived from it

    counts = rejected["reason"].value_counts().to_dict()
    failed = int((image_hashes["hash"] == "").sum())
    logger.info("validation: %d valid (%d boxes clipped), %d rejected %s; %d hashed (%s, %d "
                "bits)%s", len(valid), int(valid["bbox_clipped"].sum()), len(rejected),
                counts or "", len(image_hashes), p.dedup.method, p.dedup.hash_size ** 2,
                f", {failed} could not be hashed" if failed else "")
    n_classes = valid["model_id"].nunique()
    if n_classes < 2:
        raise ValueError(
            f"only {len(valid)} valid image(s) of {n_classes} class(es) in {raw.root} "
            f"({len(manifest)} entries, rejected: {counts or 'none'}); retrieval and clustering "
            "need at least 2 classes (labels) - check the labels of the manifest and "
            "rejected_images")
    return valid, rejected, image_hashes


def _class_keys(df: pd.DataFrame, granularity: str) -> tuple[pd.Series, pd.Series]:
    model_key = df["model_id"].astype("string")
    name = df["make"].astype(str) + " " + df["model"].astype(str)
    if granularity == "model+year":
        return model_key + "/" + df["year"].astype(str), name + " (" + df["year"].astype(str) + ")"
    return model_key, name


def _dup_groups(df: pd.DataFrame, hashes: pd.DataFrame | None, p: DataEngineeringParams
                ) -> pd.Series:
    """Near-duplicate group id per image (its own id when no hash table is given)."""
    if hashes is None:
        return df["class_id"].astype(str) + ":" + df["image_id"].astype(str)
    stale = hashes[["method", "hash_size"]].drop_duplicates()
    if len(stale) and (len(stale) > 1 or stale.iloc[0]["method"] != p.dedup.method
                       or int(stale.iloc[0]["hash_size"]) != p.dedup.hash_size):
        raise ValueError("image_hashes were computed with other data_engineering.dedup settings "
                         f"({stale.to_dict('records')}); rerun the validate_images node (it writes image_hashes)")
    h = df[["image_id", "class_id"]].merge(hashes[["image_id", "hash"]], on="image_id", how="left")
    h.index = df.index
    return near_duplicate_groups(h, p.dedup.max_distance)


def _primary_view(df: pd.DataFrame, views: list[str]) -> pd.Series:
    """Per near-duplicate group: the kept viewpoint most of its images have (ties: first kept)."""
    order = {v: i for i, v in enumerate(views)}
    counts = df.groupby(["dup_group", "viewpoint"]).size().reset_index(name="n")
    counts["order"] = counts["viewpoint"].map(order)
    counts = counts.sort_values(["dup_group", "n", "order"], ascending=[True, False, True])
    return counts.drop_duplicates("dup_group").set_index("dup_group")["viewpoint"]


def split_dataset(
    validated: pd.DataFrame, parameters: dict[str, Any], image_hashes: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Filter by viewpoint and class size, hold out unseen classes, split the rest by image.

    Returns ``(image_splits, multiview_samples, excluded, summary)``.

    * Classes (``model`` or ``model+year``) are kept when they have at least
      ``min_images_per_class_per_view`` images in EVERY kept viewpoint, so every view setting
      (front, rear, front+rear) trains and evaluates on the same classes.
    * Near-duplicates (``image_hashes`` from ``validate_images``): within a class, images whose
      perceptual hashes lie within ``dedup.max_distance`` bits form one group (column
      ``dup_group``); a group goes to one split whole, so no near-duplicate pair crosses splits.
    * Open set: ``unseen_fraction`` of the kept classes (seeded permutation) go entirely to the
      ``unseen`` split; no image of theirs is used for training or model selection.
    * Closed set: the groups of every (class, viewpoint) of the other classes (a group counts in
      the viewpoint most of its images have) are shuffled with the seed and cut into val / test /
      train (at least one val group, one test group when ``test_fraction > 0``; the rest train),
      i.e. stratified by class and view.
    * Pairing rule (multi-view samples, ``_pair_views``): within one (class, split), fronts and
      rears are shuffled with the seed and paired by position. In ``train`` the shorter list is
      cycled so every image is trained on (``max(n_front, n_rear)`` pairs, images repeat). In
      ``val``, ``test`` and ``unseen`` the pairs are unique (``min(n_front, n_rear)``): no image
      appears twice in an evaluation set; the images left unpaired are evaluated in the
      single-view sets only. Pairs never cross splits.
    * An empty split, or a train split with fewer than 2 classes, stops here with an error.
    """
    p = validate(DataEngineeringParams, parameters, "data_engineering")
    df = validated.copy()
    df["class_id"], df["class_name"] = _class_keys(df, p.class_granularity)
    excluded = [df.loc[~df["viewpoint"].isin(p.viewpoints)].assign(reason="viewpoint_not_kept")]
    df = df.loc[df["viewpoint"].isin(p.viewpoints)]

    counts = df.groupby(["class_id", "viewpoint"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=p.viewpoints, fill_value=0)
    ok_classes = counts.index[(counts >= p.min_images_per_class_per_view).all(axis=1)]
    small = ~df["class_id"].isin(ok_classes)
    excluded.append(df.loc[small].assign(reason="class_below_min_images_per_view"))
    df = df.loc[~small].copy()
    df["dup_group"] = _dup_groups(df, image_hashes, p) if len(df) else pd.Series(dtype=object)

    rng = np.random.default_rng(p.seed)
    classes = np.array(sorted(ok_classes))
    n_unseen = int(round(p.unseen_fraction * len(classes)))
    if p.unseen_fraction > 0 and len(classes) > 1:
        n_unseen = min(max(1, n_unseen), len(classes) - 1)
    unseen = set(rng.permutation(classes)[:n_unseen].tolist())
    df["split"] = np.where(df["class_id"].isin(unseen), UNSEEN, "")

    seen = df.loc[df["split"] == ""]
    if len(seen):
        group_view = _primary_view(seen, p.viewpoints)
        units = (seen[["class_id", "dup_group"]].drop_duplicates("dup_group")
                 .assign(viewpoint=lambda t: t["dup_group"].map(group_view))
                 .sort_values(["class_id", "viewpoint", "dup_group"]))
        assignment: dict[str, str] = {}
        for _, group in units.groupby(["class_id", "viewpoint"], sort=True):
            ids = rng.permutation(group["dup_group"].to_numpy())
            n = len(ids)
            n_val = max(1, int(round(p.val_fraction * n)))
            n_test = max(1, int(round(p.test_fraction * n))) if p.test_fraction > 0 else 0
            n_val, n_test = min(n_val, n - 1), min(n_test, max(0, n - 1 - n_val))
            assignment.update(dict.fromkeys(ids[:n_val], VAL))
            assignment.update(dict.fromkeys(ids[n_val:n_val + n_test], TEST))
            assignment.update(dict.fromkeys(ids[n_val + n_test:], TRAIN))
        df.loc[seen.index, "split"] = seen["dup_group"].map(assignment)
    image_splits = df.sort_values(["split", "class_id", "viewpoint", "image_id"]).reset_index(drop=True)
    _check_splits(image_splits, validated, p)

    pairs = _pair_views(image_splits, p.viewpoints, rng)
    image_splits, pairs = stamp_split_tables(image_splits, pairs)
    excl = pd.concat(excluded)[["image_id", "path", "viewpoint", "class_id", "reason"]]
    summary = _split_summary(image_splits, pairs, excl, p)
    logger.info("splits: %s; pairs: %s; near-duplicate groups: %s", summary["images_per_split"],
                summary["pairs_per_split"], summary["near_duplicate_groups"]["groups"])
    return image_splits, pairs, excl.reset_index(drop=True), summary


def _check_splits(images: pd.DataFrame, validated: pd.DataFrame, p: DataEngineeringParams) -> None:
    """Stop where the split is made when it cannot work: an empty split or < 2 train classes."""
    needed = [TRAIN, VAL] + ([TEST] if p.test_fraction > 0 else []) \
        + ([UNSEEN] if p.unseen_fraction > 0 else [])
    present = images["split"].value_counts()
    empty = [s for s in needed if present.get(s, 0) == 0]
    n_train = images.loc[images["split"] == TRAIN, "class_id"].nunique()
    if not empty and n_train >= 2:
        return
    column = validated["viewpoint"] if "viewpoint" in validated else pd.Series(dtype=object)
    found = {str(k): int(v) for k, v in column.fillna("<missing>").value_counts().items()}
    problem = (f"split(s) {empty} are empty" if empty else "") + \
        ("; " if empty and n_train < 2 else "") + \
        (f"the train split has {n_train} class(es), at least 2 are needed" if n_train < 2 else "")
    raise ValueError(
        f"split_dataset: {problem} ({len(images)} images in "
        f"{images['class_id'].nunique()} classes were kept). A class is kept when each of "
        f"data_engineering.viewpoints={p.viewpoints} has at least "
        f"data_engineering.min_images_per_class_per_view={p.min_images_per_class_per_view} "
        f"images; the manifest's viewpoint column (viewpoint) holds {found or 'no values'}. "
        "Check that column, or lower min_images_per_class_per_view / change viewpoints.")


def _pair_views(images: pd.DataFrame, views: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """Front+rear samples per (split, class): cycled in train, unique pairs elsewhere."""
    cols = ["sample_id", "split", "class_id"] + [f"{v}_image_id" for v in views]
    rows = []
    if len(views) < 2:
        return pd.DataFrame(columns=cols)
    for (split, cls), group in images.groupby(["split", "class_id"], sort=True):
        per_view = [rng.permutation(group.loc[group["viewpoint"] == v, "image_id"].sort_values()
                                    .to_numpy()) for v in views]
        if min(len(ids) for ids in per_view) == 0:
            # a view is absent from this (class, split): its images stay single-view only
            logger.warning("no %s pair possible for class %s in %s (a view is missing)",
                           "+".join(views), cls, split)
            continue
        # train cycles the shorter view (every image trained on); evaluation pairs are unique
        n = max(len(ids) for ids in per_view) if split == TRAIN else \
            min(len(ids) for ids in per_view)
        for k in range(n):
            rows.append([f"{split}:{cls}:{k}", split, cls] + [ids[k % len(ids)] for ids in per_view])
    return pd.DataFrame(rows, columns=cols)


def _split_summary(images: pd.DataFrame, pairs: pd.DataFrame, excluded: pd.DataFrame,
                   p: DataEngineeringParams) -> dict[str, Any]:
    per_split = images.groupby("split")
    paired = set()
    for v in p.viewpoints if len(p.viewpoints) > 1 else []:
        paired |= set(pairs[f"{v}_image_id"])
    unpaired = images.loc[~images["image_id"].isin(paired)] if len(p.viewpoints) > 1 \
        else images.iloc[0:0]
    sizes = images.groupby("dup_group").size() if "dup_group" in images else pd.Series(dtype=int)
    multi = sizes[sizes > 1]
    return {
        "images_per_split": {s: int(per_split.size().get(s, 0)) for s in SPLITS},
        "classes_per_split": {s: int(per_split["class_id"].nunique().get(s, 0)) for s in SPLITS},
        "pairs_per_split": {s: int((pairs["split"] == s).sum()) for s in SPLITS},
        "unpaired_per_split": {
            s: {v: int(((unpaired["split"] == s) & (unpaired["viewpoint"] == v)).sum())
                for v in p.viewpoints} for s in SPLITS},
        "pairing": "train: shorter view cycled, max(n_front, n_rear) pairs per class (images "
                   "repeat); val/test/unseen: unique pairs, min(n_front, n_rear) per class, "
                   "unpaired images evaluated in the single-view sets only",
        "near_duplicate_groups": {
            "groups": int(len(multi)), "images_in_groups": int(multi.sum()),
            "largest": int(multi.max()) if len(multi) else 1,
            "method": p.dedup.method, "hash_bits": p.dedup.hash_size ** 2,
            "max_distance": p.dedup.max_distance},
        "excluded": {str(k): int(v) for k, v in excluded["reason"].value_counts().items()},
        "params": p.model_dump(),
    }


def crop_images(image_splits: pd.DataFrame, raw: RawSource,
                parameters: dict[str, Any]) -> CropsStore:
    """Crops store of every kept image's box (plus margin), resized to one uint8 array.

    The node stays pure and cheap: it returns the index, the metadata and a lazy
    :class:`~compcars_kedro.data.imaging.CropPlan` (paths, boxes, crop settings) as ``images``.
    The crops themselves are computed when the ``crops`` dataset is saved:
    :class:`~compcars_kedro.datasets.CropsStoreDataset` has the workers write each crop
    straight into ``images.npy`` in the version's ``.partial`` folder (renamed into place on
    success), so peak memory does not grow with the number of images and a killed run leaves
    no half-written version. ``np.asarray(store.images)`` crops in memory instead (tests).
    """
    p = validate(DataEngineeringParams, parameters, "data_engineering")
    spec = CropSpec(size=p.crop.size, margin=p.crop.margin, resize_mode=p.crop.resize_mode)
    paths = [str(raw.resolve(x)) for x in image_splits["path"]]
    boxes = image_splits[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    images = CropPlan(tuple(paths), boxes, spec, num_workers=p.crop.num_workers,
                      chunksize=p.crop.chunksize)
    keep = ["image_id", "path", "split", "class_id", "class_name", "viewpoint", "make", "model",
            "make_id", "model_id", "year", "type", "x0", "y0", "x1", "y1"]
    index = image_splits[keep].reset_index(drop=True)
    meta = {"crop": p.crop.model_dump(), "n": len(index),
            "per_split": index["split"].value_counts().to_dict(), **fingerprints_of(image_splits)}
    logger.info("crop plan: %d images to %dx%d (%s), %.2f GB, written when the crops store "
                "is saved", len(index), spec.size, spec.size, spec.resize_mode, images.nbytes / 1e9)
    return CropsStore(images=images, index=index, meta=meta)
