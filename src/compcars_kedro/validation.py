"""The base of every parameter model: a strict pydantic model and :func:`validate`.

A module of its own (imports nothing from the package), so ``params.py`` and each pipeline's
own parameter module (e.g. ``reporting/params.py``) share it without importing each other.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    # allow_inf_nan=False: inf / nan (e.g. a fraction or size given as .inf) are invalid values
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
