"""``make weights``: download every pretrained weight an env names into the project caches.

    python -m compcars_kedro.weights --env compcars            # what `make weights` runs
    python -m compcars_kedro.weights --env compcars --dry-run  # only list what it would fetch

Runs are offline (``compcars_kedro._environment``); this command alone lifts ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` and downloads with the libraries' own downloaders, with progress:

* torchvision weights names (``models.<m>.weights: IMAGENET1K_V2``): the weights enum's
  ``get_state_dict(progress=True, check_hash=True, weights_only=True)`` (torch.hub: the file
  lands in ``$TORCH_HOME/hub/checkpoints/<file name of the enum's url>``, its SHA-256 prefix is
  checked, and it is read back without unpickling arbitrary objects);
* Hugging Face ids (``models.clip.weights: openai/clip-vit-base-patch32``, and an id in
  ``models.clip.clip.tokenizer``): ``huggingface_hub.snapshot_download`` into ``$HF_HOME/hub``
  (configs, tokenizer files and ``*.safetensors`` only; ``$HF_ENDPOINT`` picks a mirror).

Local paths and ``null`` need nothing. Afterwards every ``kedro run --env <env>`` finds the
weights offline. To bring them to other machines with the data: ``make weights-dvc`` (see
docs/tracking_and_versioning.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HF_ALLOW_PATTERNS = ["*.json", "*.txt", "*.safetensors"]


@dataclass(frozen=True)
class WeightsItem:
    """One thing to download: ``kind`` is ``torchvision`` or ``hf``."""

    key: str          # the parameter that names it, e.g. models.resnet50.weights
    kind: str
    model: str | None  # torchvision model name (torchvision only)
    name: str         # enum name or Hugging Face id


def env_parameters(env: str, conf_source: str | Path | None = None) -> dict[str, Any]:
    """The parameters of ``env`` exactly as ``kedro run --env <env>`` reads them."""
    from compcars_kedro import settings

    conf = Path(conf_source) if conf_source else _project_root() / getattr(
        settings, "CONF_SOURCE", "conf")
    args = dict(settings.CONFIG_LOADER_ARGS)
    args.pop("default_run_env", None)
    loader = settings.CONFIG_LOADER_CLASS(str(conf), env=env, **args)
    return dict(loader["parameters"])


def _project_root() -> Path:
    from kedro.utils import find_kedro_project

    from compcars_kedro._environment import PROJECT_ROOT

    return find_kedro_project(Path.cwd()) or PROJECT_ROOT


def weights_to_fetch(parameters: dict[str, Any], models: list[str] | None = None
                     ) -> list[WeightsItem]:
    """Every downloadable weight named in ``models.<name>.weights`` (and CLIP's tokenizer id)."""
    from compcars_kedro.training.models import torchvision_name
    from compcars_kedro.training.weights import WeightsNotAvailableError, classify_weights

    items: list[WeightsItem] = []
    for name, settings in sorted((parameters.get("models") or {}).items()):
        if models and name not in models:
            continue
        settings = settings or {}
        weights = settings.get("weights")
        tv = torchvision_name(name)
        try:
            source = classify_weights(weights, torchvision_model=tv)
        except WeightsNotAvailableError as exc:  # a local path: nothing to download
            logger.warning("models.%s.weights: %s", name, exc)
            continue
        if source.kind == "torchvision":
            items.append(WeightsItem(f"models.{name}.weights", "torchvision", tv, str(weights)))
        elif source.kind == "hf":
            items.append(WeightsItem(f"models.{name}.weights", "hf", None, str(weights)))
        tokenizer = (settings.get("clip") or {}).get("tokenizer")
        if name == "clip" and tokenizer not in (None, "bpe") and not Path(tokenizer).exists() \
                and tokenizer != weights:
            items.append(WeightsItem(f"models.{name}.clip.tokenizer", "hf", None, str(tokenizer)))
    return items


@contextlib.contextmanager
def online() -> Iterator[None]:
    """Lift the project's offline switches for the duration (this command only)."""
    saved = {k: os.environ.get(k) for k in OFFLINE_VARS}
    for key in OFFLINE_VARS:
        os.environ[key] = "0"
    constants = sys.modules.get("huggingface_hub.constants")
    saved_const = getattr(constants, "HF_HUB_OFFLINE", None) if constants else None
    if constants is not None:  # already imported (in-process use): read at import time
        constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


def fetch_torchvision(model: str, weights: str) -> Path:
    """Download a torchvision weights enum entry into the torch hub cache; return the file."""
    from torchvision.models import get_model_weights, get_weight

    from compcars_kedro.training.weights import torch_hub_checkpoint_dir

    enum_cls = get_model_weights(model)
    entry = get_weight(weights) if "." in weights else enum_cls[weights]
    target = torch_hub_checkpoint_dir() / os.path.basename(entry.url)
    if target.is_file():
        logger.info("%s.%s: already in %s", enum_cls.__name__, entry.name, target)
        return target
    logger.info("downloading %s.%s from %s", enum_cls.__name__, entry.name, entry.url)
    entry.get_state_dict(progress=True, check_hash=True, weights_only=True)
    return target


def fetch_hf(repo_id: str, *, need_weights: bool = True) -> Path:
    """``snapshot_download`` of a Hugging Face model repo into ``$HF_HOME/hub``."""
    from huggingface_hub import snapshot_download

    logger.info("downloading Hugging Face %s (%s)", repo_id, ", ".join(HF_ALLOW_PATTERNS))
    path = Path(snapshot_download(repo_id, allow_patterns=HF_ALLOW_PATTERNS,
                                  endpoint=os.environ.get("HF_ENDPOINT") or None))
    if need_weights and not any(path.glob("*.safetensors")):
        raise RuntimeError(f"{repo_id}: no .safetensors weights in the repository (pickled "
                           ".bin checkpoints are never used); use a repository or revision "
                           "with model.safetensors")
    return path


def fetch(items: list[WeightsItem]) -> list[Path]:
    """Download ``items``; errors name the parameter and what was tried."""
    paths = []
    with online():
        for item in items:
            try:
                if item.kind == "torchvision":
                    paths.append(fetch_torchvision(str(item.model), item.name))
                else:
                    paths.append(fetch_hf(item.name, need_weights=item.key.endswith(".weights")))
            except Exception as exc:  # noqa: BLE001 - re-raised with the parameter named
                raise RuntimeError(f"{item.key}={item.name!r}: download failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            logger.info("%s=%s -> %s", item.key, item.name, paths[-1])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compcars_kedro.weights",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="compcars",
                        help="Kedro env whose models.<name>.weights to fetch (default compcars)")
    parser.add_argument("--models", default="",
                        help="comma-separated subset of models (default: every model)")
    parser.add_argument("--dry-run", action="store_true", help="list, do not download")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from compcars_kedro._environment import configure_environment

    configure_environment()
    items = weights_to_fetch(env_parameters(args.env),
                             [m for m in args.models.split(",") if m] or None)
    if not items:
        logger.info("env %r names no downloadable weights (null or local paths)", args.env)
        return 0
    for item in items:
        logger.info("%s: %s %s", item.key, item.kind, item.name)
    if args.dry_run:
        return 0
    try:
        fetch(items)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("done: %d weight(s) in TORCH_HOME=%s / HF_HOME=%s", len(items),
                os.environ.get("TORCH_HOME"), os.environ.get("HF_HOME"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
