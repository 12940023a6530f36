"""Experiment grid and CLIP-layers study: variant expansion and failure isolation.

A *variant* is one finetuning -> embeddings -> clustering chain with fixed selectors (model,
loss, views, seed, and for the CLIP study the tower and number of trainable layers). Each variant
runs as a namespaced copy of the chain (namespace = variant name), so its outputs live under
``data/*/grid/<variant>/`` (catalog factory patterns ``{variant}.<dataset>``).

Failure isolation: every node of a variant is wrapped by :func:`guard`. When a node raises, the
guard logs the error and returns a :class:`VariantFailed` marker for each output; nodes that
receive a marker pass it on without running; the folder datasets store a marker as
``failed.json``. So one broken variant ends as a *failed* row with its error in the grid status
table, while every other variant runs and keeps its results.

Skip-existing: the grid is built when the pipeline is registered; a variant whose
``status`` output already holds a successful version is left out (logged), unless
``COMPCARS_GRID_RERUN=1``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compcars_kedro.names import split_namespace
from compcars_kedro.types import VariantFailed

logger = logging.getLogger(__name__)

RERUN_ENV = "COMPCARS_GRID_RERUN"


@dataclass(frozen=True)
class Variant:
    """Selectors of one run; ``overrides`` are nested parameter overrides (e.g. CLIP layers).

    ``seed`` is the training seed; ``split_seed`` the seed of the class split (which classes are
    unseen, which images val/test): the variant trains and evaluates on its own split tables,
    made from the shared crops store without re-cropping. ``None``: the data_engineering split.
    """

    model: str
    loss: str
    views: str
    seed: int
    study: str = "grid"
    extra: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    split_seed: int | None = None

    @property
    def split_namespace(self) -> str | None:
        """Namespace of this variant's split tables (``split_ss<seed>``), None = top level."""
        return None if self.split_seed is None else split_namespace(self.split_seed)

    @property
    def name(self) -> str:
        base = f"{self.model}_{self.loss}_{self.views.replace('+', '')}_s{self.seed}"
        if self.split_seed is not None:
            base += f"_ss{self.split_seed}"
        if self.study == "clip_layers":
            return f"clip_{self.extra['component']}_l{self.extra['trainable_layers']:02d}_s{self.seed}"
        return base

    @property
    def keys(self) -> dict[str, Any]:
        return {"study": self.study, "variant": self.name, "model": self.model, "loss": self.loss,
                "views": self.views, "seed": self.seed, "split_seed": self.split_seed,
                **self.extra}


def expand_grid(grid: dict[str, Any], default_split_seed: int = 42) -> list[Variant]:
    """models x losses x views x seeds x split_seeds, dropping combinations that cannot train
    (logged). ``split_seeds`` defaults to ``[default_split_seed]`` (data_engineering.seed)."""
    out = []
    for model, loss, views, seed, split_seed in itertools.product(
            grid.get("models", []), grid.get("losses", []), grid.get("views", ["front+rear"]),
            grid.get("seeds", [0]), grid.get("split_seeds") or [default_split_seed]):
        if loss == "clip" and model != "clip":
            logger.info("grid: skipping %s x %s (the clip loss needs the clip model)", model, loss)
            continue
        out.append(Variant(model, loss, views, int(seed), split_seed=int(split_seed)))
    return out


def expand_clip_layers(study: dict[str, Any]) -> list[Variant]:
    """component (vision, text) x trainable layers x seeds: CLIP runs trained with the clip loss.

    ``layers`` 0 is the control (only the tower's final norm and projection train). ``seeds``
    (or a single ``seed``) repeat every point. Text-tower runs early-stop on ``val_loss``: the
    image embedding, and so every image retrieval metric, cannot move when only the text
    tower trains.
    """
    out = []
    seeds = study.get("seeds", [study.get("seed", 0)])
    for component, layers, seed in itertools.product(study.get("components", ["vision", "text"]),
                                                     study.get("layers", list(range(0, 13))),
                                                     seeds):
        n = int(layers)
        if not 0 <= n <= 12:
            raise ValueError(f"clip_layers.layers: {n} is outside 0..12")
        overrides: dict[str, Any] = {
            "models": {"clip": {"clip": {"phase": component, "trainable_layers": n}}}}
        if component == "text":
            overrides["training"] = {"early_stopping": {"metric": "val_loss", "mode": "auto"}}
        out.append(Variant(
            "clip", study.get("loss", "clip"), study.get("views", "front"), int(seed),
            study="clip_layers", extra={"component": component, "trainable_layers": n},
            overrides=overrides,
        ))
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def guard(func: Callable[..., Any], variant: str, n_outputs: int) -> Callable[..., Any]:
    """Wrap a node function of ``variant``: pass markers on, turn exceptions into markers."""

    def _fail(marker: VariantFailed) -> Any:
        return marker if n_outputs == 1 else tuple([marker] * n_outputs)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, VariantFailed):
                logger.warning("variant %s: skipping %s (failed upstream in %s)", variant,
                               func.__name__, value.node)
                return _fail(value)
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded as the variant's failure
            logger.error("variant %s failed in %s: %s: %s", variant, func.__name__,
                         type(exc).__name__, exc)
            return _fail(VariantFailed(variant, func.__name__, f"{type(exc).__name__}: {exc}",
                                       traceback.format_exc(limit=8)))

    return guarded


def variant_done(status_dir: Path) -> bool:
    """True when the newest version of a variant's status says ``ok``."""
    from compcars_kedro.datasets.tables import newest_version

    newest = newest_version(status_dir)
    if newest is None or not (newest / "data.json").exists():
        return False
    return json.loads((newest / "data.json").read_text()).get("status") == "ok"


def _env_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("--env", "-e") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--env="):
            return arg.split("=", 1)[1]
    return None


def load_study_parameters() -> dict[str, Any]:
    """Parameters as the run will see them (base + the run env), read at registration time.

    The grid shape must be known when pipelines are built, before ``--params`` are applied, so
    edit ``grid`` / ``clip_layers`` in ``conf/<env>/parameters_grid.yml`` (or use ``--env``).
    """
    from kedro.framework.project import settings

    env = _env_from_argv(sys.argv) or os.environ.get("KEDRO_ENV") or "local"
    conf_source = Path(settings.CONF_SOURCE)
    if not conf_source.is_dir():
        return {}
    args = dict(settings.CONFIG_LOADER_ARGS)
    args.pop("default_run_env", None)
    loader = settings.CONFIG_LOADER_CLASS(str(conf_source), env=env, **args)
    try:
        return dict(loader["parameters"])
    except Exception as exc:  # noqa: BLE001 - registration must not crash other pipelines
        logger.warning("could not read study parameters (%s); grid pipelines are empty", exc)
        return {}


def rerun_requested() -> bool:
    return os.environ.get(RERUN_ENV, "").lower() in {"1", "true", "yes"}
