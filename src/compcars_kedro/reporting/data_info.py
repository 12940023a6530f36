"""What the report ran on: raw path, its kind, image and class counts, weights used."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compcars_kedro.data.raw import RawSource

logger = logging.getLogger(__name__)

#: file the sample generator (``python -m compcars_kedro.sample``) writes in its root
SAMPLE_INFO = "sample_info.json"
KIND_TEXT = {
    "sample": "generated synthetic sample (compcars_kedro.sample): drawn car fronts and rears, "
              "not photographs; numbers check the pipeline, they say nothing about real cars",
    "compcars": "CompCars (real photographs, CompCars folder layout)",
    "manifest_csv": "manifest CSV (image paths and labels listed in a CSV file)",
}


def describe_data(raw: RawSource | None, split_summary: Mapping[str, Any] | None,
                  finetuning_config: Mapping[str, Any] | None,
                  parameters: Mapping[str, Any] | None,
                  models: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON-able description of the data and weights behind the report.

    ``kind`` is ``sample`` when the raw root holds the generator's ``sample_info.json``,
    else the raw source's kind (``compcars`` | ``manifest_csv``); ``unknown`` without a raw
    source. Image and class counts come from the split summary (images kept per split; car
    models seen in training and held out). ``weights``: per backbone, the configured weights
    (``random init`` when null).
    """
    info: dict[str, Any] = {"raw_path": None, "kind": "unknown", "kind_text": "unknown"}
    if raw is not None:
        info.update(_raw_kind(raw))
    summary = dict(split_summary or {})
    images = summary.get("images_per_split") or {}
    classes = summary.get("classes_per_split") or {}
    info["images_per_split"] = {str(k): int(v) for k, v in images.items()}
    info["classes_per_split"] = {str(k): int(v) for k, v in classes.items()}
    info["images_total"] = int(sum(images.values())) if images else None
    info["models_seen"] = classes.get("train")
    info["models_unseen"] = classes.get("unseen")
    info["weights"] = _weights(models, finetuning_config, dict(parameters or {}))
    return info


def _raw_kind(raw: RawSource) -> dict[str, Any]:
    """``raw_path``, ``kind``, ``kind_text`` (and ``sample``: the generator's counts)."""
    info: dict[str, Any] = {"raw_path": str(raw.root)}
    kind = raw.kind
    sample = raw.root / SAMPLE_INFO if raw.kind == "compcars" else None
    if sample is not None and sample.is_file():
        kind = "sample"
        try:
            meta = json.loads(Path(sample).read_text())
            info["sample"] = {k: meta.get("counts", {}).get(k) for k in
                              ("images_on_disk", "images_planted", "makes", "models")}
            info["sample"]["generator_version"] = meta.get("generator_version")
        except (OSError, ValueError) as exc:  # described, not fatal: the data is fine
            logger.warning("could not read %s: %s", sample, exc)
    info["kind"] = kind
    info["kind_text"] = KIND_TEXT.get(kind, kind)
    return info


def _weights(models: Sequence[str], finetuning_config: Mapping[str, Any] | None,
             params: Mapping[str, Any]) -> dict[str, str]:
    """Per backbone (the runs' models and the run's own), the configured weights."""
    weights: dict[str, str] = {}
    conf_models = params.get("models") or {}
    for name in dict.fromkeys([*models, *([] if not finetuning_config else
                                          [(finetuning_config.get("model") or {}).get("name")])]):
        if not name:
            continue
        w = (conf_models.get(name) or {}).get("weights") if name in conf_models else None
        if finetuning_config and (finetuning_config.get("model") or {}).get("name") == name:
            w = (finetuning_config.get("model") or {}).get("weights", w)
        weights[str(name)] = str(w) if w else "random init (no pretrained weights)"
    return weights
