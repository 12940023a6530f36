"""Unit tests for the data_engineering nodes on a tiny generated CompCars-layout sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compcars_kedro.data.imaging import CropSpec, crop_image
from compcars_kedro.data.raw import bbox_1based_to_0based, detect_source, parse_label_text
from compcars_kedro.pipelines.data_engineering.nodes import (
    crop_images,
    parse_raw,
    split_dataset,
    validate_images,
)
from tests.conftest import ROOT

PARAMS = {
    "min_images_per_class_per_view": 3,
    "unseen_fraction": 0.34,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
    "seed": 7,
    "num_workers": 1,
    "crop": {"size": 32, "num_workers": 1},
}


@pytest.fixture(scope="module")
def raw(tiny_sample: Path):
    return detect_source(tiny_sample)


@pytest.fixture(scope="module")
def manifest(raw) -> pd.DataFrame:
    return parse_raw(raw)


@pytest.fixture(scope="module")
def validated(manifest, raw):
    return validate_images(manifest, raw, PARAMS)


def test_label_parsing_handles_crlf_and_converts_to_zero_based() -> None:
    label = parse_label_text("4\r\n1\n92 67 669 566")
    assert label.viewpoint_code == 4 and label.bbox_1based == (92, 67, 669, 566)
    assert bbox_1based_to_0based(label.bbox_1based) == (91, 66, 669, 566)
    # a full-image box 1..W, 1..H becomes 0..W, 0..H (half-open)
    assert bbox_1based_to_0based((1, 1, 800, 600)) == (0, 0, 800, 600)
    assert parse_label_text("1\n1\n").error is not None


def test_parse_reads_compcars_quirks(manifest: pd.DataFrame, tiny_sample: Path) -> None:
    info = json.loads((tiny_sample / "sample_info.json").read_text())
    on_disk = [p for p in (tiny_sample / "image").rglob("*") if p.is_file()]
    assert manifest["exists"].sum() == len(on_disk)
    # files listed in train_test_split but absent are kept as rows, marked missing
    assert (~manifest["exists"]).sum() >= 1
    assert (manifest["year"] == "unknown").any()
    # names are stripped of stray whitespace; duplicate make names stay separate make ids
    assert not manifest["make"].dropna().str.endswith(" ").any()
    assert not manifest["model"].dropna().str.endswith(" ").any()
    per_name = manifest.dropna(subset=["make"]).groupby("make")["make_id"].nunique()
    assert (per_name > 1).any(), "sample plants a make name shared by two ids"
    # labels with CRLF after line 1 parse like the others
    crlf = [p for p in (tiny_sample / "label").rglob("*.txt") if b"\r\n" in p.read_bytes()]
    assert crlf, "sample should contain CRLF label files"
    rel = "image/" + crlf[0].relative_to(tiny_sample / "label").with_suffix(".jpg").as_posix()
    row = manifest.loc[manifest["path"] == rel].iloc[0]
    assert row["viewpoint"] in {"uncertain", "front", "rear", "side", "front-side", "rear-side"}
    # bbox stored 0-based: compare with the raw 1-based label
    lines = crlf[0].read_text().replace("\r", "").split("\n")
    x1, y1, x2, y2 = map(int, lines[2].split())
    assert (row["x0"], row["y0"], row["x1"], row["y1"]) == (x1 - 1, y1 - 1, x2, y2)
    assert manifest["image_id"].is_unique
    assert info["planted"], "the sample plants broken inputs"


def test_validate_rejects_each_planted_input_with_its_reason(validated, tiny_sample: Path) -> None:
    valid, rejected, _ = validated
    info = json.loads((tiny_sample / "sample_info.json").read_text())
    reasons = dict(zip(rejected["path"], rejected["reason"], strict=True))
    for planted in info["planted"]:
        if planted["expected_reason"] is None:  # slightly-out box: clipped, kept
            row = valid.loc[valid["path"] == planted["path"]]
            assert len(row) == 1 and bool(row["bbox_clipped"].iloc[0])
            assert row["x1"].iloc[0] <= row["width"].iloc[0]
        else:
            assert reasons.get(planted["path"]) == planted["expected_reason"], planted
    assert (rejected["reason"] == "missing_file").sum() >= 1
    assert set(valid["image_id"]).isdisjoint(rejected["image_id"])
    # nothing dropped silently: every manifest row is valid or rejected
    assert rejected["detail"].notna().all()


def test_validate_accounts_for_every_row(manifest, validated) -> None:
    valid, rejected, _ = validated
    assert len(valid) + len(rejected) == len(manifest)
    boxes = valid[["x0", "y0", "x1", "y1"]].to_numpy()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= valid["width"].to_numpy()).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_split_is_deterministic_and_open_set(validated) -> None:
    valid, _, _ = validated
    a = split_dataset(valid, PARAMS)
    b = split_dataset(valid, PARAMS)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    images, pairs, excluded, summary = a
    unseen = set(images.loc[images["split"] == "unseen", "class_id"])
    seen = set(images.loc[images["split"] != "unseen", "class_id"])
    assert unseen and seen and unseen.isdisjoint(seen)
    # stratified: every seen class has train and val images in every kept view
    for split in ("train", "val"):
        groups = images.loc[images["split"] == split].groupby("class_id")["viewpoint"].nunique()
        assert set(groups.index) == seen and (groups == 2).all()
    # filtered inputs are recorded, never silently dropped
    assert "viewpoint_not_kept" in set(excluded["reason"])
    assert len(images) + len(excluded) == len(valid)
    assert summary["images_per_split"]["unseen"] == int((images["split"] == "unseen").sum())
    # another seed gives another split
    c = split_dataset(valid, {**PARAMS, "seed": 8})[0]
    assert not c["split"].equals(images["split"]) or not c["image_id"].equals(images["image_id"])


def test_pairs_stay_inside_class_and_split_train_uses_every_image(validated) -> None:
    images, pairs, _, _ = split_dataset(validated[0], PARAMS)
    lookup = images.set_index("image_id")
    for view in ("front", "rear"):
        col = f"{view}_image_id"
        assert (lookup.loc[pairs[col], "viewpoint"].to_numpy() == view).all()
        assert (lookup.loc[pairs[col], "split"].to_numpy() == pairs["split"].to_numpy()).all()
        assert (lookup.loc[pairs[col], "class_id"].to_numpy() == pairs["class_id"].to_numpy()).all()
        train = images.loc[(images["viewpoint"] == view) & (images["split"] == "train")]
        assert set(pairs.loc[pairs["split"] == "train", col]) == set(train["image_id"])
        # evaluation pairs are unique: no image twice in val / test / unseen
        for split in ("val", "test", "unseen"):
            assert pairs.loc[pairs["split"] == split, col].is_unique, (split, view)


def _toy_images(n_front: int, n_rear: int, split: str) -> pd.DataFrame:
    rows = [{"image_id": f"{v}{i:02d}", "viewpoint": v, "split": split, "class_id": "c"}
            for v, n in (("front", n_front), ("rear", n_rear)) for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("split", ["val", "test", "unseen"])
def test_ten_fronts_three_rears_give_three_unique_pairs_and_seven_single_fronts(split) -> None:
    from compcars_kedro.params import DataEngineeringParams
    from compcars_kedro.pipelines.data_engineering.nodes import _pair_views, _split_summary

    images = _toy_images(10, 3, split)
    pairs = _pair_views(images, ["front", "rear"], np.random.default_rng(0))
    assert len(pairs) == 3
    assert pairs["front_image_id"].is_unique and pairs["rear_image_id"].is_unique
    assert set(pairs["rear_image_id"]) == {"rear00", "rear01", "rear02"}
    summary = _split_summary(images, pairs, pd.DataFrame(columns=["reason"]),
                             DataEngineeringParams())
    assert summary["pairs_per_split"][split] == 3
    assert summary["unpaired_per_split"][split] == {"front": 7, "rear": 0}
    # the 7 unpaired fronts remain in the single-view (front) evaluation set
    from compcars_kedro.data.views import sample_table
    from compcars_kedro.datasets.crops import CropsStore

    index = images.assign(class_name="c", make="m", model="c", type="t")
    crops = CropsStore(np.zeros((len(index), 8, 8, 3), np.uint8), index)
    assert len(sample_table(crops, pairs, ["front"], split)) == 10
    assert len(sample_table(crops, pairs, ["front", "rear"], split)) == 3


def test_evaluation_set_with_a_repeated_image_is_refused() -> None:
    from compcars_kedro.data.views import build_view_data
    from compcars_kedro.datasets.crops import CropsStore

    images = pd.concat([_toy_images(4, 2, "test"), _toy_images(4, 2, "train")])
    images["image_id"] = images["split"] + "_" + images["image_id"]
    index = images.assign(class_name="c", make="m", model="c", type="t").reset_index(drop=True)
    crops = CropsStore(np.zeros((len(index), 8, 8, 3), np.uint8), index)
    # the old rule, the shorter view cycled in every split: rears used twice
    cycled = pd.DataFrame([
        {"sample_id": f"{s}:c:{k}", "split": s, "class_id": "c",
         "front_image_id": f"{s}_front{k:02d}", "rear_image_id": f"{s}_rear{k % 2:02d}"}
        for s in ("train", "test") for k in range(4)])
    build_view_data(crops, cycled, ["front", "rear"], "train")  # train may repeat images
    with pytest.raises(ValueError, match="twice.*rerun data_engineering"):
        build_view_data(crops, cycled, ["front", "rear"], "test")


def test_train_cycles_the_shorter_view() -> None:
    from compcars_kedro.pipelines.data_engineering.nodes import _pair_views

    pairs = _pair_views(_toy_images(10, 3, "train"), ["front", "rear"], np.random.default_rng(0))
    assert len(pairs) == 10 and pairs["front_image_id"].is_unique
    assert set(pairs["rear_image_id"]) == {"rear00", "rear01", "rear02"}


def test_image_hashes_come_from_the_validation_decode(validated, raw) -> None:
    """The hashes validate_images returns are the box-crop hashes of every kept-viewpoint valid
    image (what a separate pass of ``crop_hash`` gives), and decode errors keep their text."""
    from compcars_kedro.data.dedup import crop_hash
    from compcars_kedro.data.imaging import check_decodes

    valid, rejected, hashes = validated
    kept = valid.loc[valid["viewpoint"].isin(["front", "rear"])]
    assert list(hashes.columns) == ["image_id", "hash", "method", "hash_size"]
    assert list(hashes["image_id"]) == list(kept["image_id"]) and len(kept) < len(valid)
    assert set(hashes["method"]) == {"phash"} and set(hashes["hash_size"]) == {16}
    expected = [crop_hash((str(raw.resolve(r.path)), (r.x0, r.y0, r.x1, r.y1), "phash", 16))
                for r in kept.itertuples()]
    assert list(hashes["hash"]) == expected and "" not in expected
    broken = rejected.loc[rejected["reason"] == "decode_error"]
    assert len(broken) >= 1 and rejected["image_id"].is_unique
    for r in broken.itertuples():
        assert r.detail == check_decodes(str(raw.resolve(r.path)))


def test_planted_near_duplicates_land_in_one_split(validated, raw, tiny_sample: Path) -> None:
    info = json.loads((tiny_sample / "sample_info.json").read_text())
    assert info["near_duplicates"]
    hashes = validated[2]
    for seed in range(6):  # whatever the seed, a group is never cut
        images, _, _, summary = split_dataset(validated[0], {**PARAMS, "seed": seed}, hashes)
        by_path = images.set_index("path")
        for d in info["near_duplicates"]:
            dup, src = by_path.loc[d["path"]], by_path.loc[d["source"]]
            assert dup["dup_group"] == src["dup_group"], d
            assert dup["split"] == src["split"], (seed, d)
        groups = images.groupby("dup_group")["split"].nunique()
        assert (groups == 1).all()
        assert summary["near_duplicate_groups"]["groups"] >= len(info["near_duplicates"])
    # different photos are not merged: (nearly) every image is its own group
    assert images["dup_group"].nunique() >= len(images) - 2 * len(info["near_duplicates"])


def test_split_that_cannot_work_stops_with_a_clear_message(validated) -> None:
    valid = validated[0]
    # no class has enough images in every kept viewpoint -> every split is empty
    with pytest.raises(ValueError, match=r"(?s)empty.*viewpoints.*min_images_per_class_per_view"
                                         r".*viewpoint column"):
        split_dataset(valid, {**PARAMS, "min_images_per_class_per_view": 1000})
    # the viewpoint column lost (e.g. a manifest without it): named in the message
    no_view = valid.assign(viewpoint=None)
    with pytest.raises(ValueError, match=r"viewpoint column \(viewpoint\) holds \{'<missing>'"):
        split_dataset(no_view, PARAMS)
    # two classes: one goes unseen, train keeps one class
    two = valid.loc[valid["model_id"].isin(sorted(valid["model_id"].unique())[:2])]
    with pytest.raises(ValueError, match="train split has 1 class"):
        split_dataset(two, PARAMS)


def test_class_granularity_model_year(validated) -> None:
    images = split_dataset(validated[0], {**PARAMS, "class_granularity": "model+year",
                                          "min_images_per_class_per_view": 1})[0]
    assert images["class_id"].str.contains("/").all()


def test_bad_parameter_is_named() -> None:
    with pytest.raises(ValueError, match="data_engineering.min_image"):
        split_dataset(pd.DataFrame(), {"min_image": 3})
    with pytest.raises(ValueError, match="viewpoints"):
        split_dataset(pd.DataFrame(), {"viewpoints": ["top"]})


def test_crops_store_shape_and_matches_direct_pil_crop(validated, raw) -> None:
    images = split_dataset(validated[0], PARAMS)[0].head(12)
    store = crop_images(images, raw, {**PARAMS, "crop": {"size": 32, "num_workers": 1,
                                                          "resize_mode": "center_crop",
                                                          "margin": 0.0}})
    assert store.images.shape == (12, 32, 32, 3) and store.images.dtype == np.uint8
    assert list(store.index["image_id"]) == list(images["image_id"])
    for i in range(3):
        row = images.iloc[i]
        with Image.open(raw.resolve(row["path"])) as img:
            rgb = img.convert("RGB")
        x0, y0, x1, y1 = row[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
        side = min(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ref = rgb.resize((32, 32), Image.Resampling.BILINEAR,
                         box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        diff = np.abs(store.images[i].astype(int) - np.asarray(ref).astype(int))
        assert diff.mean() < 12, f"crop {i} differs from the direct PIL crop by {diff.mean():.1f}"


def test_pad_mode_keeps_whole_box(tmp_path: Path) -> None:
    img = np.zeros((60, 100, 3), dtype=np.uint8)
    img[10:30, 20:80] = 255  # white box 60 x 20
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    out = crop_image(str(path), (20, 10, 80, 30), CropSpec(size=30, resize_mode="pad"))
    assert out.shape == (30, 30, 3)
    # letterboxed: box rescaled to 30 x 10, rows 10..20 white, padding black
    assert out[15, :, 0].min() > 200 and out[2, :, 0].max() < 50 and out[27, :, 0].max() < 50


def test_parallel_crops_equal_serial_crops(validated, raw) -> None:
    from compcars_kedro.data.imaging import crop_many

    images = split_dataset(validated[0], PARAMS)[0].head(40)
    paths = [str(raw.resolve(p)) for p in images["path"]]
    boxes = images[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    spec = CropSpec(size=24)
    serial = crop_many(paths, boxes, spec, num_workers=1)
    parallel = crop_many(paths, boxes, spec, num_workers=2, chunksize=4)  # shared-memory path
    assert np.array_equal(serial, parallel)


def test_default_parameters_group_every_planted_near_duplicate_of_the_default_sample(
        tmp_path: Path) -> None:
    """The default sample (``make sample``) with conf/base's dedup settings: every planted copy
    lies within ``dedup.max_distance`` of its source, so no copy can land in another split
    (at the former default of 20 bits one resized copy, at 24 bits, escaped its group)."""
    import yaml

    from compcars_kedro.data.dedup import hamming_matrix
    from compcars_kedro.sample import generate_sample

    params = yaml.safe_load(
        (ROOT / "conf" / "base" / "parameters_data_engineering.yml").read_text()
    )["data_engineering"]
    generate_sample(tmp_path / "sample")
    info = json.loads((tmp_path / "sample" / "sample_info.json").read_text())
    pairs = [(d["path"], d["source"]) for d in info["near_duplicates"]]
    assert len(pairs) >= 30
    raw = detect_source(tmp_path / "sample")
    manifest = parse_raw(raw)
    wanted = manifest.loc[manifest["path"].isin({p for pair in pairs for p in pair})]
    valid, _, hashes = validate_images(wanted.reset_index(drop=True), raw,
                                       {**params, "num_workers": 1})
    by_path = dict(zip(valid["path"], valid["image_id"].map(
        hashes.set_index("image_id")["hash"]), strict=True))
    bits = {pair: int(hamming_matrix([by_path[pair[0]], by_path[pair[1]]])[0, 1])
            for pair in pairs}
    far = {pair: b for pair, b in bits.items() if b > params["dedup"]["max_distance"]}
    assert not far, f"planted copies beyond dedup.max_distance: {far}"
