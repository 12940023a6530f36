"""Near-duplicate photos: perceptual hashes of the box crops and groups of close hashes.

The same photo re-encoded at another JPEG quality, or slightly resized, has (nearly) the same
perceptual hash (``imagehash``), while two different photos of one car model do not. Images
whose hashes lie within ``max_distance`` bits (Hamming) of each other, transitively, form one
group; ``split_dataset`` sends every group to one split whole, so no near-duplicate pair crosses
train / val / test.
"""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from compcars_kedro.data.imaging import parallel_map

#: perceptual hash functions of imagehash by parameter name
HASH_METHODS = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "average_hash": imagehash.average_hash,
    "whash": imagehash.whash,
}


def crop_hash(args: tuple[str, Sequence[float], str, int]) -> str:
    """Hex perceptual hash of the box ``(x0, y0, x1, y1)`` (0-based, displayed orientation);
    ``""`` when the file cannot be hashed."""
    path, box, method, hash_size = args
    try:
        return _crop_hash(path, box, method, hash_size)
    except Exception:  # noqa: BLE001 - an unhashable image is its own group (counted by the node)
        return ""


def _crop_hash(path: str, box: Sequence[float], method: str, hash_size: int) -> str:
    short = max(1.0, min(float(box[2]) - float(box[0]), float(box[3]) - float(box[1])))
    with Image.open(path) as img:
        full_w, full_h = img.size
        # reduced-size JPEG decode, keeping >= 8 x hash_size pixels on the box's short side
        s = min(1.0, max(64, 8 * hash_size) / short)
        img.draft("RGB", (max(1, int(full_w * s + 1)), max(1, int(full_h * s + 1))))
        scale = img.size[0] / full_w
        shown = ImageOps.exif_transpose(img).convert("RGB")
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    crop = shown.crop((x0, y0, x1, y1))
    return str(HASH_METHODS[method](crop, hash_size=hash_size))


def hash_crops(paths: Sequence[str], boxes: np.ndarray, *, method: str = "phash",
               hash_size: int = 8, num_workers: int | None = None) -> list[str]:
    """Hex hash of every ``(path, box)`` (input order), over processes with a progress bar."""
    if method not in HASH_METHODS:
        raise ValueError(f"dedup.method={method!r}; valid: {sorted(HASH_METHODS)}")
    tasks = [(p, tuple(map(float, b)), method, hash_size) for p, b in zip(paths, boxes, strict=True)]
    return parallel_map(crop_hash, tasks, total=len(tasks), num_workers=num_workers,
                        chunksize=32, desc="hash")


def _bits(hashes: Sequence[str]) -> np.ndarray:
    """``n x n_bits`` bool array of hex hashes (all of one length)."""
    raw = np.array([bytearray.fromhex(h) for h in hashes], dtype=np.uint8).reshape(len(hashes), -1)
    return np.unpackbits(raw, axis=1).astype(bool)


def hamming_matrix(hashes: Sequence[str]) -> np.ndarray:
    """Pairwise Hamming distances (bits) of hex hashes."""
    bits = _bits(hashes)
    return (bits[:, None, :] != bits[None, :, :]).sum(-1)


def group_labels(hashes: Sequence[str], max_distance: int) -> np.ndarray:
    """Connected components of "within ``max_distance`` bits": one integer label per hash.

    Labels are the index of the component's first member, so they are deterministic.
    """
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    close = hamming_matrix(hashes) <= max_distance
    labels = np.full(n, -1, dtype=np.int64)
    for start in range(n):
        if labels[start] >= 0:
            continue
        stack = [start]
        labels[start] = start
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(close[i] & (labels < 0)):
                labels[j] = start
                stack.append(int(j))
    return labels


def near_duplicate_groups(images: pd.DataFrame, max_distance: int,
                          by: str = "class_id") -> pd.Series:
    """Group id per row of ``images`` (columns ``image_id``, ``hash``, ``by``), within ``by``.

    A group id is ``"<by value>:<image_id of its first member>"`` (rows sorted by image id), so
    an image without a near-duplicate is its own group. Rows without a hash form their own group.
    """
    out = pd.Series(index=images.index, dtype=object)
    for key, grp in images.sort_values("image_id").groupby(by, sort=True):
        has = grp["hash"].notna() & (grp["hash"].astype(str) != "")
        for idx, image_id in zip(grp.index[~has], grp.loc[~has, "image_id"], strict=True):
            out[idx] = f"{key}:{image_id}"
        hashed = grp.loc[has]
        labels = group_labels(hashed["hash"].tolist(), max_distance)
        first = hashed["image_id"].to_numpy()[labels]
        out[hashed.index] = [f"{key}:{f}" for f in first]
    return out
