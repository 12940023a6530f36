"""Loss registry (pytorch-metric-learning where it has the loss).

Every loss module is called as ``loss_module(outputs, labels)`` with the model's output dict
(``embedding``, ``logits``, ``view_features``, and for CLIP ``logit_scale`` / ``text_embedding``).
Head / model requirements:

* ``ce`` needs ``model.head='classification'``;
* ``arcface``, ``contrastive``, ``ntxent``, ``triplet``, ``multisimilarity`` need
  ``model.head='metric'`` (ArcFace's class weights live in the loss module and are optimised
  with the head learning rate);
* ``clip`` needs ``model.name='clip'``, ``model.head='metric'`` and ``model.embedding_dim=null``
  (the image embedding must stay in CLIP's joint space) and ``ViewData.texts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from .config import (
    ArcFaceParams,
    CEParams,
    ClipLossParams,
    ContrastiveParams,
    LossConfig,
    ModelConfig,
    MultiSimilarityParams,
    NTXentParams,
    TrainingConfig,
    TripletParams,
)


class CELoss(nn.Module):
    """Cross-entropy over ``outputs["logits"]``."""

    def __init__(self, p: CEParams) -> None:
        super().__init__()
        self.loss = nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)

    def forward(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs["logits"].float(), labels)


class PMLLoss(nn.Module):
    """A pml embedding loss (+ optional miner) over ``outputs["embedding"]``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner
        self.log_scale = 1.0

    def distribute(self, world_size: int) -> None:
        """Gather every rank's embeddings (pml ``DistributedLossWrapper`` / ``...MinerWrapper``).

        The wrapped loss is N x the global-batch loss (pml's convention, so that DDP's gradient
        average is the global gradient); ``log_scale`` = 1/N reports the global-batch loss.
        """
        from pytorch_metric_learning.utils.distributed import (
            DistributedLossWrapper,
            DistributedMinerWrapper,
        )

        self.loss = DistributedLossWrapper(self.loss)
        if self.miner is not None:
            self.miner = DistributedMinerWrapper(self.miner)
        self.log_scale = 1.0 / world_size

    def forward(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
        emb = outputs["embedding"].float()
        if self.miner is not None:
            return self.loss(emb, labels, self.miner(emb, labels))
        return self.loss(emb, labels)


class ClipLoss(nn.Module):
    """Symmetric image-text InfoNCE with CLIP's learnable logit scale (``exp`` clamped).

    With ``mask_same_class`` the other same-class entries of a batch are removed from the
    negatives (logit set to -inf); the positive of sample i stays its own text / image.  With
    several views the loss is the mean over views of InfoNCE(view embedding, text embedding).
    """

    def __init__(self, p: ClipLossParams) -> None:
        super().__init__()
        self.mask_same_class = p.mask_same_class
        self.max_logit_scale = p.max_logit_scale
        self.world_size = 1
        self.log_scale = 1.0

    def distribute(self, world_size: int) -> None:
        """Gather image and text embeddings of every rank (as pml's wrapper does): the loss
        is N x the global-batch loss, the logit scale's gradient scaled by 1/N to match."""
        self.world_size = int(world_size)
        self.log_scale = 1.0 / world_size

    def info_nce(
        self, img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """Symmetric InfoNCE of L2-normalised ``img`` and ``txt`` (B, D)."""
        scale = logit_scale.float().exp().clamp(max=self.max_logit_scale)
        logits = scale * img @ txt.t()
        if self.mask_same_class:
            same = labels[:, None] == labels[None, :]
            eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
            logits = logits.masked_fill(same & ~eye, float("-inf"))
        target = torch.arange(len(labels), device=labels.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))

    def forward(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
        if "text_embedding" not in outputs:
            raise ValueError("the clip loss needs outputs['text_embedding'] (ViewData.texts)")
        txt = F.normalize(outputs["text_embedding"].float(), dim=-1)
        vf = outputs["view_features"].float()
        scale = outputs["logit_scale"]
        views = [F.normalize(vf[:, v], dim=-1) for v in range(vf.shape[1])]
        if self.world_size > 1:
            from pytorch_metric_learning.utils.distributed import gather

            txt, labels, _ = gather(txt, labels)  # own rank first, then the others
            views = [gather(img, None)[0] for img in views]
            scale = _scale_grad(scale, 1.0 / self.world_size)
        per_view = [self.info_nce(img, txt, labels, scale) for img in views]
        return torch.stack(per_view).mean() * self.world_size


def _scale_grad(t: torch.Tensor, factor: float) -> torch.Tensor:
    """``t`` in the forward pass, its gradient multiplied by ``factor``."""
    return t * factor + t.detach() * (1.0 - factor)


def _ce(p: CEParams, num_classes: int, embedding_size: int) -> nn.Module:
    return CELoss(p)


def _arcface(p: ArcFaceParams, num_classes: int, embedding_size: int) -> nn.Module:
    return PMLLoss(
        pml_losses.ArcFaceLoss(num_classes, embedding_size, margin=p.margin, scale=p.scale)
    )


def _contrastive(p: ContrastiveParams, num_classes: int, embedding_size: int) -> nn.Module:
    miner: nn.Module | None = None
    if p.miner == "pair_margin":
        miner = pml_miners.PairMarginMiner(
            pos_margin=p.miner_pos_margin, neg_margin=p.miner_neg_margin
        )
    elif p.miner == "batch_hard":
        miner = pml_miners.BatchHardMiner()
    return PMLLoss(
        pml_losses.ContrastiveLoss(pos_margin=p.pos_margin, neg_margin=p.neg_margin), miner
    )


def _ntxent(p: NTXentParams, num_classes: int, embedding_size: int) -> nn.Module:
    return PMLLoss(pml_losses.NTXentLoss(temperature=p.temperature))


def _triplet(p: TripletParams, num_classes: int, embedding_size: int) -> nn.Module:
    margin = p.margin if p.miner_margin is None else p.miner_margin
    return PMLLoss(
        pml_losses.TripletMarginLoss(margin=p.margin),
        pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=p.type_of_triplets),
    )


def _multisimilarity(p: MultiSimilarityParams, num_classes: int, embedding_size: int) -> nn.Module:
    miner = pml_miners.MultiSimilarityMiner(epsilon=p.epsilon) if p.use_miner else None
    return PMLLoss(pml_losses.MultiSimilarityLoss(alpha=p.alpha, beta=p.beta, base=p.base), miner)


def _clip(p: ClipLossParams, num_classes: int, embedding_size: int) -> nn.Module:
    return ClipLoss(p)


@dataclass(frozen=True)
class LossSpec:
    """Registry entry of a loss."""

    builder: Callable[[Any, int, int], nn.Module]
    head: str  # required model.head
    pk_sampler: bool  # 'auto' sampler uses P x K batches
    needs_text: bool = False
    model: str | None = None  # required model.name
    cross_batch: bool = False  # compares samples of a batch (DDP gathers every rank's)


LOSS_REGISTRY: dict[str, LossSpec] = {
    "ce": LossSpec(_ce, head="classification", pk_sampler=False),
    "arcface": LossSpec(_arcface, head="metric", pk_sampler=False),
    "contrastive": LossSpec(_contrastive, head="metric", pk_sampler=True, cross_batch=True),
    "ntxent": LossSpec(_ntxent, head="metric", pk_sampler=True, cross_batch=True),
    "triplet": LossSpec(_triplet, head="metric", pk_sampler=True, cross_batch=True),
    "multisimilarity": LossSpec(_multisimilarity, head="metric", pk_sampler=True, cross_batch=True),
    "clip": LossSpec(
        _clip, head="metric", pk_sampler=False, needs_text=True, model="clip", cross_batch=True
    ),
}


def build_loss(
    loss_cfg: LossConfig, *, num_classes: int, embedding_size: int, world_size: int = 1
) -> nn.Module:
    """Instantiate the loss module of ``loss_cfg`` (may hold parameters, e.g. ArcFace).

    ``world_size > 1`` (DDP): losses comparing the samples of a batch see every rank's
    embeddings; per-sample losses (ce, arcface) stay local (DDP averages their gradients).
    """
    spec = LOSS_REGISTRY[loss_cfg.name]
    module = spec.builder(loss_cfg.hparams, num_classes, embedding_size)
    if world_size > 1 and spec.cross_batch:
        module.distribute(world_size)
    return module


def validate_combination(
    model_cfg: ModelConfig, loss_cfg: LossConfig, train_cfg: TrainingConfig | None = None
) -> None:
    """Reject model / loss / training combinations that cannot work, naming the parameters."""
    spec = LOSS_REGISTRY[loss_cfg.name]
    if model_cfg.head != spec.head:
        raise ValueError(
            f"loss.name={loss_cfg.name!r} requires model.head={spec.head!r} (got {model_cfg.head!r})"
        )
    if spec.model is not None and model_cfg.name != spec.model:
        raise ValueError(
            f"loss.name={loss_cfg.name!r} requires model.name={spec.model!r} (got {model_cfg.name!r})"
        )
    if loss_cfg.name == "clip" and model_cfg.embedding_dim is not None:
        raise ValueError(
            "loss.name='clip' trains CLIP's joint image-text space: set model.embedding_dim to null"
        )
    if model_cfg.name == "clip" and loss_cfg.name != "clip" and model_cfg.clip.phase == "text":
        raise ValueError(
            f"model.clip.phase='text' only trains the text tower, which loss.name={loss_cfg.name!r} "
            "does not use; use loss.name='clip' or model.clip.phase='vision'/'projection'"
        )
    if train_cfg is not None and uses_pk_sampler(loss_cfg, train_cfg):
        m = train_cfg.sampler.m_per_class
        if train_cfg.batch_size % m != 0:
            raise ValueError(
                f"training.batch_size={train_cfg.batch_size} must be a multiple of "
                f"training.sampler.m_per_class={m} for P x K batches"
            )


def uses_pk_sampler(loss_cfg: LossConfig, train_cfg: TrainingConfig) -> bool:
    """Whether batches are P x K (``MPerClassSampler``)."""
    kind = train_cfg.sampler.kind
    if kind == "auto":
        return LOSS_REGISTRY[loss_cfg.name].pk_sampler
    return kind == "m_per_class"
