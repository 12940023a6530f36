"""Loss registry (pytorch-metric-learning where it has the loss).

One :data:`LOSS_REGISTRY` entry per loss carries everything about it: its parameter model
(the keys of ``losses.<name>`` in the parameters, with their defaults), how to build it, the
head it trains and its batch / model requirements.  Adding a loss = one entry (+ its
parameter model) and its defaults in ``conf/base/parameters_finetuning.yml``.

Every loss module is called as ``loss_module(outputs, labels)`` with the model's output dict
(``embedding``, ``logits``, ``view_features``, and for CLIP ``logit_scale`` / ``text_embedding``).
Head / model requirements:

* ``ce`` needs ``model.head='classification'``;
* ``arcface``, ``contrastive``, ``ntxent``, ``triplet``, ``multisimilarity`` need
  ``model.head='metric'`` (ArcFace's class weights live in the loss module and are optimised
  with the head learning rate); the pair losses take an optional miner (:mod:`.miners`);
* ``clip`` needs ``model.name='clip'``, ``model.head='metric'`` and ``model.embedding_dim=null``
  (the image embedding must stay in CLIP's joint space) and ``ViewData.texts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from pytorch_metric_learning import losses as pml_losses
from torch import nn

from .config import StrictModel, TrainingConfig
from .miners import MinerConfig, OptionalMiner

if TYPE_CHECKING:
    from .models import ModelConfig


# --------------------------------------------------------------------------- loss modules


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


# --------------------------------------------------------------------------- parameters


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
    miner: OptionalMiner = None

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
    """pml TripletMarginLoss + a miner (TripletMarginMiner by default)."""

    margin: float = Field(0.05, ge=0.0)
    miner: OptionalMiner = Field(default_factory=lambda: MinerConfig(
        name="triplet_margin", args={"margin": 0.05, "type_of_triplets": "semihard"}))


class MultiSimilarityParams(StrictModel):
    """pml MultiSimilarityLoss + a miner (MultiSimilarityMiner by default)."""

    alpha: float = Field(2.0, gt=0.0)
    beta: float = Field(50.0, gt=0.0)
    base: float = 0.5
    miner: OptionalMiner = Field(default_factory=lambda: MinerConfig(name="multisimilarity"))


class ClipLossParams(StrictModel):
    """Symmetric image-text InfoNCE with CLIP's learnable ``logit_scale`` (exp clamped at 100).

    ``mask_same_class``: other same-class texts/images in the batch are removed from the
    negatives (they are not treated as negatives).
    """

    mask_same_class: bool = True
    max_logit_scale: float = Field(100.0, gt=0.0)


# --------------------------------------------------------------------------- registry

Builder = Callable[[Any, int, int], nn.Module]  # (params, num_classes, embedding_size)


def pml_loss(loss_cls: type[nn.Module], *, class_weights: bool = False) -> Builder:
    """Builder of a pml embedding loss whose keyword arguments are its parameters' fields
    (``miner`` aside, built from :data:`~.miners.MINERS`); ``class_weights`` losses (ArcFace)
    also get ``(num_classes, embedding_size)``."""

    def build(p: StrictModel, num_classes: int, embedding_size: int) -> nn.Module:
        miner_cfg: MinerConfig | None = getattr(p, "miner", None)
        args = (num_classes, embedding_size) if class_weights else ()
        loss = loss_cls(*args, **p.model_dump(exclude={"miner"}))
        return PMLLoss(loss, miner_cfg.build() if miner_cfg is not None else None)

    return build


@dataclass(frozen=True)
class LossSpec:
    """Registry entry of a loss: everything about it."""

    params: type[StrictModel]  # its parameters (losses.<name>) and their defaults
    build: Builder
    head: Literal["classification", "metric"]  # required model.head
    pk_sampler: bool  # 'auto' sampler uses P x K batches
    needs_text: bool = False  # trains on ViewData.texts (CLIP's text tower)
    model: str | None = None  # required model.name
    cross_batch: bool = False  # compares samples of a batch (DDP gathers every rank's)
    projection: bool = True  # a metric head may project (model.embedding_dim); False: own space


LOSS_REGISTRY: dict[str, LossSpec] = {
    "ce": LossSpec(CEParams, lambda p, _n, _d: CELoss(p), head="classification",
                   pk_sampler=False),
    "arcface": LossSpec(ArcFaceParams, pml_loss(pml_losses.ArcFaceLoss, class_weights=True),
                        head="metric", pk_sampler=False),
    "contrastive": LossSpec(ContrastiveParams, pml_loss(pml_losses.ContrastiveLoss),
                            head="metric", pk_sampler=True, cross_batch=True),
    "ntxent": LossSpec(NTXentParams, pml_loss(pml_losses.NTXentLoss), head="metric",
                       pk_sampler=True, cross_batch=True),
    "triplet": LossSpec(TripletParams, pml_loss(pml_losses.TripletMarginLoss), head="metric",
                        pk_sampler=True, cross_batch=True),
    "multisimilarity": LossSpec(MultiSimilarityParams, pml_loss(pml_losses.MultiSimilarityLoss),
                                head="metric", pk_sampler=True, cross_batch=True),
    "clip": LossSpec(ClipLossParams, lambda p, _n, _d: ClipLoss(p), head="metric",
                     pk_sampler=False, needs_text=True, model="clip", cross_batch=True,
                     projection=False),
}


def loss_spec(name: str, key: str = "loss.name") -> LossSpec:
    """The :data:`LOSS_REGISTRY` entry of ``name``; an unknown name names ``key`` and the
    valid names."""
    if name not in LOSS_REGISTRY:
        raise ValueError(f"{key}={name!r} is unknown; valid names: {sorted(LOSS_REGISTRY)}")
    return LOSS_REGISTRY[name]


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
        params_model = loss_spec(self.name).params
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
        return LOSS_REGISTRY[self.name].params(**self.params)


# --------------------------------------------------------------------------- use


def build_loss(
    loss_cfg: LossConfig, *, num_classes: int, embedding_size: int, world_size: int = 1
) -> nn.Module:
    """Instantiate the loss module of ``loss_cfg`` (may hold parameters, e.g. ArcFace).

    ``world_size > 1`` (DDP): losses comparing the samples of a batch see every rank's
    embeddings; per-sample losses (ce, arcface) stay local (DDP averages their gradients).
    """
    spec = LOSS_REGISTRY[loss_cfg.name]
    module = spec.build(loss_cfg.hparams, num_classes, embedding_size)
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
    if not spec.projection and model_cfg.embedding_dim is not None:
        raise ValueError(
            f"loss.name={loss_cfg.name!r} trains the backbone's own embedding space (CLIP's joint "
            "image-text space): set model.embedding_dim to null"
        )
    if model_cfg.name == "clip" and not spec.needs_text and model_cfg.clip.phase == "text":
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
