"""Pydantic models that validate each pipeline's parameters before any work starts.

Every model forbids unknown keys, so a typo such as ``--params data_engineering.min_image=3``
fails at once with a message naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from compcars_kedro.data.raw import VIEWPOINT_NAMES
from compcars_kedro.names import INTERNAL, TRANSFER, SelectionMode
from compcars_kedro.validation import StrictModel, validate


class CropParams(StrictModel):
    size: int = Field(64, ge=8, le=1024)
    margin: float = Field(0.05, ge=0.0, le=1.0)
    resize_mode: Literal["center_crop", "pad"] = "pad"
    num_workers: int | None = Field(None, ge=0, description="None/0 = one process per core")
    chunksize: int = Field(16, ge=1)


class DedupParams(StrictModel):
    """Near-duplicate grouping before the split (see ``compcars_kedro.data.dedup``)."""

    method: Literal["phash", "dhash", "average_hash", "whash"] = "phash"
    hash_size: int = Field(16, ge=4, le=64, description="hash side; the hash has hash_size**2 bits")
    max_distance: int = Field(24, ge=0, description="Hamming distance (bits) of one group")

    @model_validator(mode="after")
    def _distance(self) -> DedupParams:
        if self.max_distance >= self.hash_size ** 2 // 2:
            raise ValueError(f"dedup.max_distance={self.max_distance} must be below half the "
                             f"{self.hash_size ** 2} hash bits (dedup.hash_size={self.hash_size})")
        return self


class DataEngineeringParams(StrictModel):
    viewpoints: list[str] = ["front", "rear"]
    class_granularity: Literal["model", "model+year"] = "model"
    min_images_per_class_per_view: int = Field(4, ge=1)
    unseen_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 42
    bbox_tolerance: float = Field(0.1, ge=0.0, le=1.0,
                                  description="max fraction of the box area outside the image "
                                              "that is clipped; more is rejected")
    min_bbox_size: int = Field(8, ge=1)
    num_workers: int | None = Field(None, ge=0)
    max_pixels: int = Field(50_000_000, ge=1, description="larger images are rejected as "
                            "too_large from their header, never decoded")
    allow_absolute_paths: bool = Field(False, description="manifest CSV: accept absolute paths "
                                       "outside the CSV's folder")
    crop: CropParams = CropParams()
    dedup: DedupParams = DedupParams()

    @model_validator(mode="after")
    def _check(self) -> DataEngineeringParams:
        unknown = set(self.viewpoints) - VIEWPOINT_NAMES
        if unknown:
            raise ValueError(f"viewpoints: unknown {sorted(unknown)}; valid: {sorted(VIEWPOINT_NAMES)}")
        if not self.viewpoints:
            raise ValueError("viewpoints: at least one viewpoint must be kept")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave room for train (< 0.9)")
        return self


# --------------------------------------------------------------------------- finetuning


class FinetuningRunParams(StrictModel):
    resume: bool = False
    work_dir: str = "data/06_models/finetuning_work"


class FinetuningParams(StrictModel):
    """Top-level selectors (``model``, ``loss``, ``views``) plus per-model / per-loss settings."""

    model: str
    loss: str
    views: str = "front+rear"
    embedding_dim: int | None = Field(128, ge=1)
    models: dict[str, dict[str, Any]] = {}
    losses: dict[str, dict[str, Any]] = {}
    training: dict[str, Any] = {}
    finetuning: FinetuningRunParams = FinetuningRunParams()

    @model_validator(mode="after")
    def _selectors(self) -> FinetuningParams:
        from compcars_kedro.data.views import parse_views
        from compcars_kedro.training.losses import loss_spec
        from compcars_kedro.training.models import model_spec

        model_spec(self.model, key="model")
        loss_spec(self.loss, key="loss")
        parse_views(self.views)
        return self

    @property
    def variant(self) -> str:
        return f"{self.model}-{self.loss}-{self.views}"

    def resolve(self) -> dict[str, Any]:
        """Validated, JSON-able ``{"variant", "keys", "model", "loss", "training", "run"}``.

        ``keys`` (variant, model, loss, views, seed) label every table row this run produces, so
        tables of several runs (the experiment grid) concatenate and aggregate cleanly.
        """
        from compcars_kedro.data.views import parse_views
        from compcars_kedro.training import LOSS_REGISTRY, LossConfig, ModelConfig, TrainingConfig

        head = LOSS_REGISTRY[self.loss].head
        model_raw = {"name": self.model, "views": parse_views(self.views), "head": head,
                     "embedding_dim": resolved_embedding_dim(self.loss, self.embedding_dim),
                     **model_settings(self.model, self.models)}
        model = validate(ModelConfig, model_raw, f"models.{self.model}")
        loss = validate(LossConfig, {"name": self.loss, **self.losses.get(self.loss, {})},
                        f"losses.{self.loss}")
        training = validate(TrainingConfig, self.training, "training")
        keys = {"variant": self.variant, "model": self.model, "loss": self.loss,
                "views": self.views, "seed": training.seed}
        return {"variant": self.variant, "keys": keys, "model": model.model_dump(),
                "loss": loss.model_dump(), "training": training.model_dump(),
                "run": self.finetuning.model_dump()}


FINETUNING_KEYS = ("model", "loss", "views", "embedding_dim", "models", "losses", "training",
                   "finetuning")


def resolved_embedding_dim(loss: str, embedding_dim: int | None) -> int | None:
    """``embedding_dim`` of the head: none for a classification loss (``ce``: classifier over
    the fused features) and a loss that keeps the backbone's own space (``clip``: CLIP's joint
    image-text space, ``projection_dim``), else the parameter."""
    from compcars_kedro.training.losses import LOSS_REGISTRY

    spec = LOSS_REGISTRY[loss]
    return embedding_dim if spec.head == "metric" and spec.projection else None


def model_settings(model: str, models: dict[str, Any]) -> dict[str, Any]:
    """``models.<model>`` for :class:`ModelConfig`; ``arch: null`` (how an env clears the sample's
    tiny architecture under the soft merge) means the model's real architecture.

    Pretrained weights that define their own architecture (a torchvision weights name, a Hugging
    Face id or ``save_pretrained`` folder) cannot be combined with ``arch``: only a state-dict
    file (``.safetensors`` / ``.pt``) needs ``arch`` to describe the architecture it was saved
    from.
    """
    from compcars_kedro.training.weights import STATE_DICT_SUFFIXES

    settings = dict(models.get(model) or {})
    if settings.get("arch", {}) is None:
        settings.pop("arch")
    weights = settings.get("weights")
    if settings.get("arch") and weights is not None and not str(weights).lower().endswith(
            STATE_DICT_SUFFIXES):
        raise ValueError(
            f"models.{model}.arch={settings['arch']} cannot be combined with "
            f"models.{model}.weights={weights!r}: pretrained weights define their own "
            f"architecture. Clear it with `models.{model}.arch: null` (conf/<env> or "
            f"`--params models.{model}.arch=null`); `arch` is only for .safetensors/.pt files")
    return settings


#: Top-level parameter keys that are not a validated section but are legitimate.
EXTRA_TOP_LEVEL_KEYS = frozenset({"raw_path"})
VALIDATED_TOP_LEVEL_KEYS = frozenset({*FINETUNING_KEYS, "data_engineering", "clustering",
                                      "embeddings", "reporting", "grid", "clip_layers"})


def check_top_level_keys(parameters: dict[str, Any], known: set[str] | frozenset[str]) -> None:
    """Unknown top-level keys (``modle=vitb32``) fail with a "did you mean" suggestion.

    ``known`` = the keys conf/base defines (so a section added there is known at once) plus
    :data:`VALIDATED_TOP_LEVEL_KEYS` and :data:`EXTRA_TOP_LEVEL_KEYS`.
    """
    import difflib

    valid = set(known) | VALIDATED_TOP_LEVEL_KEYS | EXTRA_TOP_LEVEL_KEYS
    problems = []
    for key in sorted(set(parameters) - valid):
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(f"  {key}: unknown top-level parameter{hint}")
    if problems:
        raise ValueError("invalid parameters:\n" + "\n".join(problems)
                         + f"\nvalid top-level keys: {sorted(valid)}")


def base_parameter_keys(conf_source: str | Path) -> set[str]:
    """Top-level keys of ``conf/base/parameters*.yml`` (read as plain YAML)."""
    import yaml

    keys: set[str] = set()
    for path in sorted(Path(conf_source, "base").glob("parameters*.y*ml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict):
            keys |= set(data)
    return keys


def validate_parameters(parameters: dict[str, Any], *, check_weights: bool = True,
                        known_keys: set[str] | None = None) -> None:
    """Validate every known section present in ``parameters`` (used before a run starts).

    ``check_weights``: also check that the selected model's pretrained weights are readable
    offline (only when the run trains, so e.g. data_engineering runs without them).
    ``known_keys``: valid top-level keys besides the validated sections (see
    :func:`check_top_level_keys`); ``None`` skips the unknown-key check.
    """
    if known_keys is not None:
        check_top_level_keys(parameters, known_keys)
    if not isinstance(parameters.get("raw_path", ""), str):
        raise ValueError(f"raw_path={parameters['raw_path']!r} must be a path (a folder or a "
                         "manifest CSV); set it in conf/local/globals.yml or with COMPCARS_ROOT")
    if "data_engineering" in parameters:
        validate(DataEngineeringParams, parameters["data_engineering"], "data_engineering")
    if "model" in parameters and "loss" in parameters:
        ft = validate(FinetuningParams, {k: parameters[k] for k in FINETUNING_KEYS
                                         if k in parameters}, "parameters")
        config = ft.resolve()
        check_combination(config)
        if check_weights:
            check_weights_available(config["model"]["name"], config["model"]["weights"])
    if "clustering" in parameters:
        validate(ClusteringParams, parameters["clustering"], "clustering")
    if "reporting" in parameters:
        from compcars_kedro.reporting.params import reporting_params

        reporting_params(parameters["reporting"])


def check_combination(config: dict[str, Any]) -> None:
    """Model x loss x training combinations that cannot train (e.g. a text phase with a loss
    that ignores text), as the training loop would reject them, but before any node runs."""
    from compcars_kedro.training import LossConfig, ModelConfig, TrainingConfig
    from compcars_kedro.training.losses import validate_combination

    try:
        validate_combination(ModelConfig.model_validate(config["model"]),
                             LossConfig.model_validate(config["loss"]),
                             TrainingConfig.model_validate(config["training"]))
    except ValueError as exc:
        raise ValueError(f"invalid parameters for variant {config['variant']}: {exc}") from None


# --------------------------------------------------------------------------- clustering
class MatchedParams(StrictModel):
    """Seen vs unseen on matched subsamples (same #classes, same per-class counts)."""

    draws: int = Field(5, ge=1, description="seeded subsample draws (mean and spread)")
    seed: int = 0
    min_class_size: int = Field(2, ge=1, description="classes smaller than this are not drawn")
    reducers: list[str] = ["pca"]
    clusterers: list[str] | None = Field(None, description="null: clustering.clusterers")


class ClusteringParams(StrictModel):
    """Reducer x clusterer grid and the label-free selection modes (see clustering/selection.py).

    ``internal``: parameters chosen by silhouette (non-noise) penalised by the noise fraction,
    without any label. ``transfer``: chosen on the labelled *val* split of seen models, frozen,
    then applied to the reported split. ``oracle`` (off by default) tunes on the reported split's
    own labels and is labelled ``oracle`` wherever it appears.
    """

    reducers: list[str] = ["pca", "umap"]
    clusterers: list[str] = ["dbscan", "hdbscan", "agglomerative", "optics", "kmeans"]
    selection_modes: list[SelectionMode] = [INTERNAL, TRANSFER]
    reducer_params: dict[str, dict[str, Any]] = {}
    grids: dict[str, dict[str, list[Any]]] = {}
    max_density_dims: int = Field(50, ge=2)
    sample_size: int = Field(5000, ge=100)
    seed: int = 42
    n_jobs: int = Field(-1, description="worker processes for independent fits; -1 = all cores")
    transfer_sizes: Literal["relative", "absolute"] = "relative"
    matched: MatchedParams = MatchedParams()

    @model_validator(mode="after")
    def _names(self) -> ClusteringParams:
        from compcars_kedro.clustering.clusterers import CLUSTERERS
        from compcars_kedro.clustering.reducers import REDUCERS, VIEW_ONLY_REDUCERS

        for key, reducers in (("reducers", self.reducers),
                              ("matched.reducers", self.matched.reducers)):
            bad = [r for r in reducers if r not in REDUCERS or r in VIEW_ONLY_REDUCERS]
            if bad:
                raise ValueError(f"{key}: {bad} not usable as clustering input; valid: "
                                 f"{sorted(set(REDUCERS) - VIEW_ONLY_REDUCERS)} "
                                 "(t-SNE is for 2-D views)")
        for key, clusterers in (("clusterers", self.clusterers),
                                ("matched.clusterers", self.matched.clusterers or [])):
            bad = [c for c in clusterers if c not in CLUSTERERS]
            if bad:
                raise ValueError(f"{key}: unknown {bad}; valid: {sorted(CLUSTERERS)}")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise ValueError(f"n_jobs: {self.n_jobs} is not valid; valid: -1 (all cores) or a "
                             "positive number of worker processes")
        return self


def check_weights_available(model: str, weights: str | None) -> None:
    """Fail before any work when ``models.<model>.weights`` cannot be read offline."""
    if weights is None:
        return
    import os

    from compcars_kedro.training.models import torchvision_name
    from compcars_kedro.training.weights import (
        FETCH_HINT,
        WeightsNotAvailableError,
        classify_weights,
        torchvision_cache_file,
    )

    tv_name = torchvision_name(model)
    try:
        source = classify_weights(weights, torchvision_model=tv_name)
        if source.kind == "torchvision":
            torchvision_cache_file(str(tv_name), weights)
    except WeightsNotAvailableError as exc:
        # the library names the generic key; name the project's parameter instead
        raise ValueError(str(exc).replace("model.weights", f"models.{model}.weights")) from None
    if source.kind == "hf":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(weights, "config.json"), str):
            raise ValueError(
                f"models.{model}.weights={weights!r} is not in the Hugging Face cache "
                f"(HF_HOME={os.environ.get('HF_HOME')}) and nothing is downloaded during runs; "
                f"{FETCH_HINT}, or set models.{model}.weights to a local file or folder, or null "
                "for random init")
