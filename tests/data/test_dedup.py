"""One decode for the validation check and the perceptual hash (``check_and_hash``): same verdict
and error text as ``check_decodes``, same hash as ``crop_hash`` (its own decode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compcars_kedro.data import dedup
from compcars_kedro.data.dedup import check_and_hash, check_and_hash_many, crop_hash
from compcars_kedro.data.imaging import check_decodes
from tests.bad_inputs import exif_rotated_jpeg


def _photo(path: Path, size: tuple[int, int], seed: int, fmt: str = "JPEG") -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, tuple]]:
    root = tmp_path_factory.mktemp("dedup")
    big = _photo(root / "big.jpg", (900, 650), 1)  # reduced-size (draft) decode for the hash
    truncated = root / "truncated.jpg"
    truncated.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    garbage = root / "garbage.jpg"
    garbage.write_bytes(big.read_bytes()[:600] + b"\x00\xff" * 4000)  # header fine, data not
    _, rot_box = exif_rotated_jpeg(root / "rotated.jpg")
    return {
        "big": (big, (60.0, 70.5, 840.0, 600.0)),
        "small": (_photo(root / "small.jpg", (96, 64), 2), (4.0, 3.0, 90.0, 60.0)),
        "png": (_photo(root / "img.png", (120, 80), 3, "PNG"), (10.0, 5.0, 110.0, 75.0)),
        "rotated": (root / "rotated.jpg", tuple(map(float, rot_box))),
        "truncated": (truncated, (60.0, 70.0, 840.0, 600.0)),
        "garbage": (garbage, (60.0, 70.0, 840.0, 600.0)),
    }


@pytest.mark.parametrize("hash_size", [8, 16])
def test_one_decode_gives_the_check_and_the_hash_of_two(files, hash_size: int) -> None:
    for name, (path, box) in files.items():
        err, h = check_and_hash((str(path), box, "phash", hash_size))
        assert err == check_decodes(str(path)), name  # same verdict and wording
        if err is None:
            assert h == crop_hash((str(path), box, "phash", hash_size)) != "", name
        else:
            assert h == "", name
    assert check_and_hash((str(files["truncated"][0]), files["truncated"][1], "phash", 8))[0]
    # no box: the decode check only
    for path, _ in files.values():
        assert check_and_hash((str(path), None, "phash", 8)) == (check_decodes(str(path)), None)


def test_an_image_that_decodes_but_cannot_be_hashed_stays_valid(files, monkeypatch) -> None:
    def broken(image, hash_size):
        raise ValueError("no hash")

    monkeypatch.setitem(dedup.HASH_METHODS, "phash", broken)
    path, box = files["big"]
    assert check_and_hash((str(path), box, "phash", 8)) == (None, "")


def test_many_keeps_input_order_over_processes(files) -> None:
    items = [files[k] for k in ("big", "truncated", "small", "png", "rotated")] * 8  # > 1 chunk
    boxes = [None if i % 3 == 0 else box for i, (_, box) in enumerate(items)]
    paths = [str(p) for p, _ in items]
    expected = [check_and_hash((p, b, "dhash", 8)) for p, b in zip(paths, boxes, strict=True)]
    got = check_and_hash_many(paths, boxes, method="dhash", hash_size=8, num_workers=2)
    assert got == expected
    with pytest.raises(ValueError, match="dedup.method='nope'"):
        check_and_hash_many(paths, boxes, method="nope")
