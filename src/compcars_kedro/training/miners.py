"""Miner registry (pytorch-metric-learning miners), configured as ``{name, args}``.

A pair-based loss takes ``miner: {name: pair_margin, args: {pos_margin: 0.2}}`` (``args`` is
filled with the miner's defaults), a bare name (``miner: batch_hard``: its defaults), or
``null`` / ``none`` (no miner: every pair / triplet of the batch).  Each :data:`MINERS` entry
carries the pydantic model of its arguments (their names are the pml keyword arguments) and
the pml class built from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from .config import StrictModel


class PairMarginArgs(StrictModel):
    """pml PairMarginMiner: positives farther than ``pos_margin``, negatives closer than
    ``neg_margin``."""

    pos_margin: float = Field(0.2, ge=0.0)
    neg_margin: float = Field(0.8, gt=0.0)


class NoArgs(StrictModel):
    """A miner without arguments."""


class TripletMarginArgs(StrictModel):
    """pml TripletMarginMiner."""

    margin: float = Field(0.2, ge=0.0)
    type_of_triplets: Literal["all", "hard", "semihard", "easy"] = "all"


class MultiSimilarityArgs(StrictModel):
    """pml MultiSimilarityMiner."""

    epsilon: float = Field(0.1, ge=0.0)


@dataclass(frozen=True)
class MinerSpec:
    """Registry entry of a miner: its argument model and the pml class built from them."""

    params: type[StrictModel]
    miner: type[nn.Module]

    def build(self, args: dict[str, Any]) -> nn.Module:
        """The pml miner with ``args`` (validated, defaults filled) as keyword arguments."""
        return self.miner(**self.params(**args).model_dump())


MINERS: dict[str, MinerSpec] = {
    "pair_margin": MinerSpec(PairMarginArgs, pml_miners.PairMarginMiner),
    "batch_hard": MinerSpec(NoArgs, pml_miners.BatchHardMiner),
    "triplet_margin": MinerSpec(TripletMarginArgs, pml_miners.TripletMarginMiner),
    "multisimilarity": MinerSpec(MultiSimilarityArgs, pml_miners.MultiSimilarityMiner),
}


def miner_spec(name: str, key: str = "miner.name") -> MinerSpec:
    """The :data:`MINERS` entry of ``name``; an unknown name names ``key`` and the valid names."""
    if name not in MINERS:
        raise ValueError(f"{key}={name!r} is unknown; valid names: {sorted(MINERS)}")
    return MINERS[name]


class MinerConfig(StrictModel):
    """``{name, args}`` of a :data:`MINERS` entry; a bare name means its default arguments."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _args(self) -> MinerConfig:
        params = miner_spec(self.name).params
        bad = sorted(set(self.args) - set(params.model_fields))
        if bad:
            raise ValueError(f"miner {self.name!r} got unknown argument(s) {bad}; "
                             f"valid: {sorted(params.model_fields)}")
        self.args = params(**self.args).model_dump()
        return self

    def build(self) -> nn.Module:
        """The pml miner."""
        return MINERS[self.name].build(self.args)


def _none_is_null(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in ("none", "null") else value


#: The ``miner`` field of a loss's parameters: ``{name, args}``, a bare name, or null / "none".
OptionalMiner = Annotated[MinerConfig | None, BeforeValidator(_none_is_null)]
