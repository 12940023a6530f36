"""Bad real-world inputs: every planted file ends in rejected_images with its reason, the crash
cases are clear errors, nothing else is lost (fixtures built by tests/bad_inputs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from compcars_kedro.data.imaging import CropSpec, crop_image
from compcars_kedro.data.raw import detect_source, parse_label_text
from compcars_kedro.names import REJECT_REASONS
from compcars_kedro.pipelines.data_engineering import create_pipeline
from compcars_kedro.pipelines.data_engineering.nodes import parse_raw, validate_images
from tests.bad_inputs import (
    exif_rotated_jpeg,
    make_bad_compcars,
    make_bad_manifest,
    png_header_only,
)

PARAMS = {"min_images_per_class_per_view": 2, "unseen_fraction": 0.34, "num_workers": 1,
          "crop": {"size": 16, "num_workers": 1}}


def _run(source: Path, params: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    raw = detect_source(source)
    manifest = parse_raw(raw, params or PARAMS)
    valid, rejected, _ = validate_images(manifest, raw, params or PARAMS)
    return manifest, valid, rejected


def _check_planted(manifest, valid, rejected, planted) -> None:
    got = dict(zip(rejected["path"], rejected["reason"], strict=True))
    for path, reason in planted.items():
        if reason is None:
            assert (valid["path"] == path).sum() == 1, f"{path} should be kept"
        else:
            assert got.get(path) == reason, (path, got.get(path), reason)
    # nothing else lost: every manifest row is either valid or rejected, only planted ones rejected
    assert len(valid) + len(rejected) == len(manifest)
    assert set(rejected["path"]) == {p for p, r in planted.items() if r is not None}
    assert manifest["image_id"].is_unique and rejected["detail"].str.len().gt(0).all()
    assert set(rejected["reason"]) <= set(REJECT_REASONS)  # the one list of reasons


def test_manifest_csv_bad_rows_are_rejected_with_their_reason(tmp_path: Path) -> None:
    csv, planted = make_bad_manifest(tmp_path)
    manifest, valid, rejected = _run(csv)
    _check_planted(manifest, valid, rejected, planted)
    assert len(valid) == 3 * 2 * 3 + 1  # every good image + the EXIF-rotated one
    detail = dict(zip(rejected["path"], rejected["detail"], strict=True))
    assert "x0='120px'" in detail["images/box_120px.jpg"]
    assert "x1='inf'" in detail["images/box_inf.jpg"]
    assert "same file as line 2 (kept)" in detail["images/alpha_front_0.jpg"]
    assert "allow_absolute_paths" in detail[str(tmp_path / "outside" / "secret.jpg")]
    assert "max_pixels" in detail["images/huge.png"]
    # duplicates: the first row is kept with its own label, no image twice, no blank class
    assert valid["path"].is_unique and valid["image_id"].is_unique
    first = valid.loc[valid["path"] == "images/alpha_front_0.jpg"]
    assert first["model"].tolist() == ["alpha"]
    assert set(valid["model"]) == {"alpha", "beta", "gamma"}


def test_absolute_paths_are_accepted_when_allowed(tmp_path: Path) -> None:
    csv, _ = make_bad_manifest(tmp_path, ["absolute_path", "parent_path"])
    params = {**PARAMS, "allow_absolute_paths": True}
    _, valid, rejected = _run(csv, params)
    assert str(tmp_path / "outside" / "secret.jpg") in set(valid["path"])
    # a relative path leaving the folder stays refused
    assert rejected.set_index("path").loc["../outside/secret.jpg", "reason"] == "path_outside_root"


def test_compcars_tree_per_file_faults_never_abort(tmp_path: Path) -> None:
    root, planted = make_bad_compcars(tmp_path)
    manifest, valid, rejected = _run(root)
    _check_planted(manifest, valid, rejected, planted)
    detail = dict(zip(rejected["path"], rejected["detail"], strict=True))
    assert "label/1/1/2015/label_0xff.txt" in detail["image/1/1/2015/label_0xff.jpg"]
    assert "UnicodeDecodeError" in detail["image/1/1/2015/label_0xff.jpg"]
    assert "box count 2 but 1 box line" in detail["image/1/1/2015/box_count_2_one_line.jpg"]
    assert "not followed" in detail["image/1/1/2016"]


def test_label_parsing_checks_the_box_count() -> None:
    assert parse_label_text("1\n1\n1 2 30 40\n").bbox_1based == (1, 2, 30, 40)
    assert "box count 2" in parse_label_text("1\n2\n1 2 30 40\n").error
    assert "2 box line" in parse_label_text("1\n1\n1 2 30 40\n1 2 3 4\n").error
    assert "one box per image" in parse_label_text("1\n2\n1 2 30 40\n1 2 3 4\n").error


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("image_path,label\n", "has a header but no rows"),
    ("image_path,label\nimages/a.jpg,   \n", "every label is empty"),
    ("image_path,label,x0,y0\na.jpg,x,1,2\n", "not all of"),
])
def test_manifest_csv_crash_cases_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=message) as exc:
        parse_raw(detect_source(csv), PARAMS)
    assert str(csv) in str(exc.value)


def test_one_class_is_a_clear_error(tmp_path: Path) -> None:
    csv, _ = make_bad_manifest(tmp_path, [])
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ",alpha," in ln]) + "\n")
    with pytest.raises(ValueError, match=r"1 class\(es\).*at least 2 classes"):
        _run(csv)


def test_exif_orientation_6_gives_an_upright_crop_matching_the_box(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    displayed, box = exif_rotated_jpeg(path)
    with Image.open(path) as img:
        assert img.size == (60, 40)  # stored landscape, displayed portrait
    out = crop_image(str(path), box, CropSpec(size=20, margin=0.0, resize_mode="pad"))
    ref = displayed.crop(box).resize((20, int(round(20 * 28 / 30))), Image.Resampling.BILINEAR)
    # the box is 30 x 28 displayed px of red: the crop is red where the box is
    red = out[1:-1, 1:-1]
    assert red[..., 0].mean() > 180 and red[..., 2].mean() < 60, red.mean(axis=(0, 1))
    assert np.asarray(ref)[..., 0].mean() > 180
    # the manifest records the displayed size and the rotation
    csv, _ = make_bad_manifest(tmp_path / "m", ["exif_6"])
    manifest, valid, _ = _run(csv)
    row = valid.set_index("path").loc["images/rotated.jpg"]
    assert (row["width"], row["height"]) == (40, 60) and bool(row["exif_rotated"])
    assert not manifest.loc[manifest["path"] != "images/rotated.jpg", "exif_rotated"].any()


def test_too_large_is_rejected_from_the_header(tmp_path: Path, monkeypatch) -> None:
    import compcars_kedro.data.dedup as dedup

    big = tmp_path / "collection" / "images"
    csv, _ = make_bad_manifest(tmp_path, [])
    png_header_only(big / "wide.png", 3000, 2000)  # 6 MP: above a 5 MP limit
    csv.write_text(csv.read_text() + "images/wide.png,alpha,front,,,,\n")
    decoded: list[str] = []
    real = dedup.check_and_hash
    monkeypatch.setattr(dedup, "check_and_hash", lambda a: decoded.append(a[0]) or real(a))
    _, _, rejected = _run(csv, {**PARAMS, "max_pixels": 5_000_000})
    assert rejected.set_index("path").loc["images/wide.png", "reason"] == "too_large"
    assert decoded and not any(p.endswith("wide.png") for p in decoded)  # never decoded


class _Kept(MemoryDataset):
    """A MemoryDataset the runner does not release (the test reads intermediate outputs)."""

    def _release(self) -> None:
        pass


def test_data_engineering_pipeline_on_bad_inputs_runs_to_the_end(tmp_path: Path) -> None:
    csv, planted = make_bad_manifest(tmp_path)
    pipe = create_pipeline()
    catalog = DataCatalog({name: _Kept(copy_mode="assign") for name in pipe.all_outputs()})
    catalog["compcars_raw"] = MemoryDataset(detect_source(csv), copy_mode="assign")
    catalog["params:data_engineering"] = MemoryDataset(PARAMS)
    SequentialRunner().run(pipe, catalog)
    rejected = catalog.load("rejected_images")
    assert dict(zip(rejected["path"], rejected["reason"], strict=True)) == {
        p: r for p, r in planted.items() if r is not None}
    splits, crops = catalog.load("image_splits"), catalog.load("crops")
    excluded = catalog.load("excluded_images")
    assert len(splits) + len(excluded) == len(catalog.load("validated_images"))
    assert splits["image_id"].is_unique and len(crops.index) == len(splits)


@pytest.mark.slow
def test_kedro_run_data_engineering_on_bad_inputs_exits_0(tmp_path: Path) -> None:
    from tests.conftest import kedro_cli, make_project_copy

    csv, planted = make_bad_manifest(tmp_path / "raw")
    project = make_project_copy(tmp_path / "project", csv)
    params = ("data_engineering.min_images_per_class_per_view=2,data_engineering.crop.size=16,"
              "data_engineering.unseen_fraction=0.34,data_engineering.num_workers=1")
    result = kedro_cli(project, "run", "--pipelines", "data_engineering", "--params", params)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rejected = pd.read_csv(next((project / "data/02_intermediate/rejected_images.csv").glob("*/*")))
    assert dict(zip(rejected["path"], rejected["reason"], strict=True)) == {
        p: r for p, r in planted.items() if r is not None}
