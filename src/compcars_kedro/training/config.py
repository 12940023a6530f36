"""Pydantic (v2) configuration models of the training library.

Every model forbids unknown keys (``extra="forbid"``), so a typo in the YAML parameters fails
early with the offending key named.  Registry names (``model.name``, ``loss.name``) are checked
against :data:`~compcars_kedro.training.models.MODEL_REGISTRY` and
:data:`~compcars_kedro.training.losses.LOSS_REGISTRY`; loss hyper-parameters are validated against
the parameter model of the chosen loss (a parameter that belongs to another loss is rejected).

Epoch semantics: one epoch always draws ``len(train)`` samples (``len(train) // batch_size``
optimizer steps), also with the P x K ``MPerClassSampler`` (its ``length_before_new_iter`` is the
number of training samples).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_PROMPT_TEMPLATE = "a photo of a {make} {model}, a {type}"

EarlyStoppingMetric = Literal[
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "accuracy",
    "val_loss",
    "zero_shot_accuracy",
]


class StrictModel(BaseModel):
    """Base model: unknown keys are errors, and so are inf / nan (e.g. ``lr_backbone=inf``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------- model


class ClipOptions(StrictModel):
    """CLIP-specific options (ignored by the torchvision models).

    ``phase``: ``vision`` trains the last ``trainable_layers`` blocks of the image tower + its
    final norm (``post_layernorm``) + ``visual_projection``; ``text`` the same for the text tower
    (``final_layer_norm`` + ``text_projection``); ``projection`` only the two projections.
    ``trainable_layers: 0`` is the control of the layers study: only the tower's final norm and
    projection train.  With ``phase: text`` the image embedding cannot change, so early stopping
    watches ``val_loss`` (or ``zero_shot_accuracy`` when chosen) instead of an image metric.
    ``train_logit_scale`` additionally trains CLIP's ``logit_scale`` (the temperature of the
    ``clip`` loss) in every phase.
    ``tokenizer``: ``None`` = the CLIPTokenizer next to a Hugging Face ``model.weights`` when it is
    available offline, else a small BPE trained on the training prompts; ``"bpe"`` forces the BPE;
    anything else is a CLIPTokenizer id / folder loaded with ``local_files_only=True``.
    """

    phase: Literal["vision", "text", "projection"] = "vision"
    trainable_layers: int = Field(12, ge=0)
    train_logit_scale: bool = True
    tokenizer: str | None = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    max_length: int = Field(77, ge=4)


class ModelConfig(StrictModel):
    """Backbone, weights, input and head."""

    name: str = "resnet50"
    weights: str | None = None
    image_size: int = Field(224, ge=16)
    views: list[Literal["front", "rear"]] = Field(default_factory=lambda: ["front"])
    head: Literal["classification", "metric"] = "metric"
    embedding_dim: int | None = Field(None, ge=1)
    arch: dict[str, int] = Field(default_factory=dict)
    clip: ClipOptions = Field(default_factory=ClipOptions)

    @field_validator("views")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(
                f"model.views must be a non-empty list of distinct views out of ['front', 'rear'], got {v}"
            )
        return v

    @model_validator(mode="after")
    def _registry(self) -> ModelConfig:
        from .models import MODEL_REGISTRY

        if self.name not in MODEL_REGISTRY:
            raise ValueError(
                f"model.name={self.name!r} is unknown; valid names: {sorted(MODEL_REGISTRY)}"
            )
        spec = MODEL_REGISTRY[self.name]
        bad = sorted(set(self.arch) - set(spec.arch_keys))
        if bad:
            raise ValueError(
                f"model.arch has unknown key(s) {bad} for model {self.name!r}; "
                f"valid keys: {sorted(spec.arch_keys)}"
            )
        patch = spec.patch_size(self.arch)
        if patch is not None and self.image_size % patch != 0:
            raise ValueError(
                f"model.image_size={self.image_size} must be a multiple of the patch size {patch} "
                f"of model {self.name!r}"
            )
        return self

    @property
    def num_views(self) -> int:
        """Number of views fused by concatenation."""
        return len(self.views)


# --------------------------------------------------------------------------- loss


class CEParams(StrictModel):
    """Cross-entropy over the classification logits."""

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class ArcFaceParams(StrictModel):
    """pml ArcFaceLoss; ``margin`` is in DEGREES (pml convention, 28.6 deg = 0.5 rad)."""

    margin: float = Field(28.6, ge=0.0)
    scale: float = Field(64.0, gt=0.0)


class ContrastiveParams(StrictModel):
    """pml ContrastiveLoss (+ optional miner)."""

    pos_margin: float = Field(0.0, ge=0.0)
    neg_margin: float = Field(1.0, gt=0.0)
    miner: Literal["none", "pair_margin", "batch_hard"] = "none"
    miner_pos_margin: float = Field(0.2, ge=0.0)
    miner_neg_margin: float = Field(0.8, gt=0.0)

    @model_validator(mode="after")
    def _margins(self) -> ContrastiveParams:
        if self.neg_margin <= self.pos_margin:
            raise ValueError(f"losses.contrastive.neg_margin ({self.neg_margin}) must exceed "
                             f"pos_margin ({self.pos_margin})")
        return self


class NTXentParams(StrictModel):
    """pml NTXentLoss (supervised: all same-label pairs are positives)."""

    temperature: float = Field(0.07, gt=0.0)


class TripletParams(StrictModel):
    """pml TripletMarginLoss + TripletMarginMiner (same margin unless ``miner_margin`` set)."""

    margin: float = Field(0.05, ge=0.0)
    type_of_triplets: Literal["all", "hard", "semihard", "easy"] = "semihard"
    miner_margin: float | None = Field(None, ge=0.0)


class MultiSimilarityParams(StrictModel):
    """pml MultiSimilarityLoss + MultiSimilarityMiner."""

    alpha: float = Field(2.0, gt=0.0)
    beta: float = Field(50.0, gt=0.0)
    base: float = 0.5
    epsilon: float = Field(0.1, ge=0.0)
    use_miner: bool = True


class ClipLossParams(StrictModel):
    """Symmetric image-text InfoNCE with CLIP's learnable ``logit_scale`` (exp clamped at 100).

    ``mask_same_class``: other same-class texts/images in the batch are removed from the
    negatives (they are not treated as negatives).
    """

    mask_same_class: bool = True
    max_logit_scale: float = Field(100.0, gt=0.0)


LOSS_PARAMS: dict[str, type[StrictModel]] = {
    "ce": CEParams,
    "arcface": ArcFaceParams,
    "contrastive": ContrastiveParams,
    "ntxent": NTXentParams,
    "triplet": TripletParams,
    "multisimilarity": MultiSimilarityParams,
    "clip": ClipLossParams,
}


class LossConfig(StrictModel):
    """Loss name + its hyper-parameters.

    Accepts ``{"name": "triplet", "margin": 0.1}`` (flat) or
    ``{"name": "triplet", "params": {"margin": 0.1}}``; ``params`` is filled with the defaults.
    """

    name: str = "ce"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            extra = {k: data.pop(k) for k in list(data) if k not in ("name", "params")}
            if extra:
                params = dict(data.get("params") or {})
                dup = sorted(set(params) & set(extra))
                if dup:
                    raise ValueError(f"loss parameter(s) {dup} given both flat and under 'params'")
                params.update(extra)
                data["params"] = params
        return data

    @model_validator(mode="after")
    def _validate_params(self) -> LossConfig:
        from .losses import LOSS_REGISTRY

        if self.name not in LOSS_REGISTRY:
            raise ValueError(
                f"loss.name={self.name!r} is unknown; valid names: {sorted(LOSS_REGISTRY)}"
            )
        params_model = LOSS_PARAMS[self.name]
        bad = sorted(set(self.params) - set(params_model.model_fields))
        if bad:
            raise ValueError(
                f"loss {self.name!r} got unknown parameter(s) {bad}; "
                f"valid: {sorted(params_model.model_fields)}"
            )
        self.params = params_model(**self.params).model_dump()
        return self

    @property
    def hparams(self) -> Any:
        """The typed parameter model of this loss (e.g. :class:`ArcFaceParams`)."""
        return LOSS_PARAMS[self.name](**self.params)


# --------------------------------------------------------------------------- training


class SamplerConfig(StrictModel):
    """Batch composition.

    ``auto``: P x K batches (pml ``MPerClassSampler``, ``m_per_class`` samples per class) for
    pair-based metric losses (contrastive, ntxent, triplet, multisimilarity), a seeded random
    permutation otherwise (ce, arcface, clip).
    """

    kind: Literal["auto", "random", "m_per_class"] = "auto"
    m_per_class: int = Field(4, ge=1)


class EarlyStoppingConfig(StrictModel):
    """Early stopping on a validation metric; ``patience=None`` disables stopping (the best
    epoch is still tracked and restored)."""

    metric: EarlyStoppingMetric = "precision_at_1"
    mode: Literal["auto", "max", "min"] = "auto"
    patience: int | None = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0.0)

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        """``min`` for val_loss, ``max`` for the others unless set explicitly."""
        if self.mode == "auto":
            return "min" if self.metric == "val_loss" else "max"
        return self.mode


class AugmentConfig(StrictModel):
    """Batched on-device augmentation (training only)."""

    enabled: bool = True
    hflip_prob: float = Field(0.5, ge=0.0, le=1.0)
    scale: float = Field(0.1, ge=0.0, lt=1.0)
    translate: float = Field(0.1, ge=0.0, le=0.5)
    brightness: float = Field(0.2, ge=0.0, lt=1.0)
    contrast: float = Field(0.2, ge=0.0, lt=1.0)


class DDPConfig(StrictModel):
    """DistributedDataParallel over ``world_size`` local processes (1 = a single process).

    ``backend``: ``auto`` = ``nccl`` on CUDA, ``gloo`` on CPU.  Each global batch of
    ``training.batch_size`` is split into ``world_size`` contiguous shards (so the batch size
    must be a multiple of it); pair losses gather every rank's embeddings.  ``sync_batchnorm``
    converts BatchNorm to SyncBatchNorm on CUDA (CPU / gloo keeps per-rank batch statistics).
    ``timeout_s``: collective timeout (rank 0 validates while the others wait).
    """

    world_size: int = Field(1, ge=1)
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    sync_batchnorm: bool = True
    timeout_s: float = Field(1800.0, gt=0)


class TrainingConfig(StrictModel):
    """Optimisation, schedule, runtime and early stopping."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    eval_batch_size: int | None = Field(None, ge=1)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    lr_backbone: float = Field(1e-4, gt=0.0)
    lr_head: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_fraction: float | None = Field(0.05, ge=0.0, le=1.0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    grad_clip: float | None = 1.0
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    seed: int = 42
    num_workers: int = Field(4, ge=0)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    ddp: DDPConfig = Field(default_factory=DDPConfig)

    @field_validator("grad_clip")
    @classmethod
    def _grad_clip(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError(
                f"training.grad_clip must be > 0 (got {v}); use null to disable gradient clipping"
            )
        return v

    @model_validator(mode="after")
    def _ddp(self) -> TrainingConfig:
        n = self.ddp.world_size
        if n > 1 and self.batch_size % n != 0:
            raise ValueError(
                f"training.batch_size={self.batch_size} must be a multiple of "
                f"training.ddp.world_size={n} (each rank trains an equal share of every batch)"
            )
        return self

    @model_validator(mode="after")
    def _warmup(self) -> TrainingConfig:
        if (
            "warmup_steps" in self.model_fields_set
            and "warmup_fraction" in self.model_fields_set
            and self.warmup_steps is not None
            and self.warmup_fraction is not None
        ):
            raise ValueError("set only one of training.warmup_steps and training.warmup_fraction")
        return self

    def resolve_warmup_steps(self, total_steps: int) -> int:
        """Warm-up length in optimizer steps (``warmup_steps`` wins over ``warmup_fraction``)."""
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        if self.warmup_fraction is not None:
            return int(round(self.warmup_fraction * total_steps))
        return 0
