"""Pydantic (v2) configuration models of the training library that name no registry entry.

Every model forbids unknown keys (``extra="forbid"``), so a typo in the YAML parameters fails
early with the offending key named.  The configs that name a registry entry live next to their
registry, which validates them: :class:`~compcars_kedro.training.models.ModelConfig`
(``MODEL_REGISTRY``) and :class:`~compcars_kedro.training.losses.LossConfig` (``LOSS_REGISTRY``,
with the miners of ``MINERS``); this module imports no registry.

Epoch semantics: one epoch always draws ``len(train)`` samples (``len(train) // batch_size``
optimizer steps), also with the P x K ``MPerClassSampler`` (its ``length_before_new_iter`` is the
number of training samples).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from compcars_kedro.validation import StrictModel as _ParameterModel

DEFAULT_PROMPT_TEMPLATE = "a photo of a {make} {model}, a {type}"


class StrictModel(_ParameterModel):
    """The parameters' strict base (:mod:`compcars_kedro.validation`: unknown keys, inf and nan
    are errors, e.g. ``lr_backbone=inf``), not frozen: the training configs are completed by
    their own validators (e.g. ``LossConfig`` fills in its loss's parameter defaults)."""

    model_config = ConfigDict(frozen=False)


EarlyStoppingMetric = Literal[
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "accuracy",
    "val_loss",
    "zero_shot_accuracy",
]


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
