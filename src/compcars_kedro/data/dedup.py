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

from compcars_kedro.data.imaging import check_decodes, parallel_map

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


def _hash_draft(img: Image.Image, box: Sequence[float], hash_size: int) -> float:
    """Ask for a reduced-size JPEG decode keeping >= 8 x hash_size pixels on the box's short
    side (nothing decoded yet); return the decoded / full width ratio."""
    short = max(1.0, min(float(box[2]) - float(box[0]), float(box[3]) - float(box[1])))
    full_w, full_h = img.size
    s = min(1.0, max(64, 8 * hash_size) / short)
    img.draft("RGB", (max(1, int(full_w * s + 1)), max(1, int(full_h * s + 1))))
    return img.size[0] / full_w


def _hash_shown(img: Image.Image, box: Sequence[float], scale: float, method: str,
                hash_size: int) -> str:
    shown = ImageOps.exif_transpose(img).convert("RGB")
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    return str(HASH_METHODS[method](shown.crop((x0, y0, x1, y1)), hash_size=hash_size))


def _crop_hash(path: str, box: Sequence[float], method: str, hash_size: int) -> str:
    with Image.open(path) as img:
        return _hash_shown(img, box, _hash_draft(img, box, hash_size), method, hash_size)


def check_and_hash(args: tuple[str, Sequence[float] | None, str, int]
                   ) -> tuple[str | None, str | None]:
    """Decode check and perceptual hash from ONE decode: ``(decode error or None, hash)``.

    Without a box: :func:`~compcars_kedro.data.imaging.check_decodes` only, hash ``None``.
    With one, the image is decoded fully once at the hash's reduced size (every entropy-coded
    byte is read, as in the check's 1/8-scale decode) and hashed exactly as :func:`crop_hash`
    does (same draft, same PIL ops, same imagehash call). When that decode fails, the error is
    taken from ``check_decodes`` (the check's own wording, and its verdict: an image it decodes
    stays valid, with hash ``""``); a failure after the decode gives hash ``""``.
    """
    path, box, method, hash_size = args
    if box is None:
        return check_decodes(path), None
    img = None
    try:
        img = Image.open(path)
        scale = _hash_draft(img, box, hash_size)
        img.load()
    except Exception:  # noqa: BLE001 - reworded (and re-judged) by the decode check
        if img is not None:
            img.close()
        return check_decodes(path), ""
    try:
        with img:
            return None, _hash_shown(img, box, scale, method, hash_size)
    except Exception:  # noqa: BLE001 - decodes but cannot be hashed: its own group
        return None, ""


def check_and_hash_many(paths: Sequence[str], boxes: Sequence[Sequence[float] | None], *,
                        method: str = "phash", hash_size: int = 8,
                        num_workers: int | None = None) -> list[tuple[str | None, str | None]]:
    """:func:`check_and_hash` of every ``(path, box or None)`` (input order), over processes
    with a progress bar."""
    if method not in HASH_METHODS:
        raise ValueError(f"dedup.method={method!r}; valid: {sorted(HASH_METHODS)}")
    tasks = [(str(p), None if b is None else tuple(map(float, b)), method, hash_size)
             for p, b in zip(paths, boxes, strict=True)]
    return parallel_map(check_and_hash, tasks, total=len(tasks), num_workers=num_workers,
                        chunksize=32, desc="validate+hash")


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
