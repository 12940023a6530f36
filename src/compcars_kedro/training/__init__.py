"""Plain-PyTorch training library of compcars-kedro (no Kedro code).

Public API: configs (:class:`ModelConfig`, :class:`LossConfig`, :class:`TrainingConfig`),
:class:`ViewData`, :func:`build_model`, :func:`fit`, :func:`extract_embeddings`,
:func:`retrieval_metrics`, :class:`Checkpoint` / :func:`save_checkpoint` /
:func:`load_checkpoint` / :func:`model_from_checkpoint`, the registries
:data:`MODEL_REGISTRY` / :data:`LOSS_REGISTRY` / :data:`MINERS`, :func:`build_prompt`.
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import (
    AugmentConfig,
    ClipOptions,
    EarlyStoppingConfig,
    SamplerConfig,
    TrainingConfig,
)
from .data import ViewData
from .fit import fit
from .inference import extract_embeddings, model_from_checkpoint
from .loop import FitResult
from .losses import LOSS_REGISTRY, LossConfig, build_loss, validate_combination
from .metrics import retrieval_metrics
from .miners import MINERS, MinerConfig
from .models import MODEL_REGISTRY, EmbeddingModel, ModelConfig, build_model, param_groups
from .seed import seed_everything
from .tokenizer import build_prompt
from .trainer import Trainer
from .weights import WeightsNotAvailableError

__all__ = [
    "AugmentConfig",
    "Checkpoint",
    "ClipOptions",
    "EarlyStoppingConfig",
    "EmbeddingModel",
    "FitResult",
    "LOSS_REGISTRY",
    "LossConfig",
    "MINERS",
    "MODEL_REGISTRY",
    "MinerConfig",
    "ModelConfig",
    "SamplerConfig",
    "Trainer",
    "TrainingConfig",
    "ViewData",
    "WeightsNotAvailableError",
    "build_loss",
    "build_model",
    "build_prompt",
    "extract_embeddings",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "param_groups",
    "retrieval_metrics",
    "save_checkpoint",
    "seed_everything",
    "validate_combination",
]
