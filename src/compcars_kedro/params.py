"""Pydantic models that validate each pipeline's parameters before any work starts.

Every model forbids unknown keys, so a typo such as ``--params data_engineering.min_image=3``
fails at once with a message naming the key.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compcars_kedro.data.raw import VIEWPOINT_NAMES

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CropParams(StrictModel):
    size: int = Field(64, ge=8, le=1024)
    margin: float = Field(0.05, ge=0.0, le=1.0)
    resize_mode: Literal["center_crop", "pad"] = "pad"
    num_workers: int | None = Field(None, ge=0, description="None/0 = one process per core")
    chunksize: int = Field(16, ge=1)


class DataEngineeringParams(StrictModel):
    viewpoints: list[str] = ["front", "rear"]
    class_granularity: Literal["model", "model+year"] = "model"
    min_images_per_class_per_view: int = Field(4, ge=1)
    unseen_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: int = 42
    bbox_tolerance: float = Field(0.1, ge=0.0, le=1.0,
                                  description="max fraction of the box area outside the image "
                                              "that is clipped; more is rejected")
    min_bbox_size: int = Field(8, ge=1)
    num_workers: int | None = Field(None, ge=0)
    crop: CropParams = CropParams()

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


def validate(model: type[M], raw: dict[str, Any] | BaseModel, section: str) -> M:
    """Validate ``raw`` against ``model``; errors name the full parameter key (``section.key``)."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in (section, *err["loc"]))
            problems.append(f"  {loc}: {err['msg']}")
        raise ValueError(f"invalid parameters in '{section}':\n" + "\n".join(problems)) from None
