"""The list of files to write: normal photos, near-duplicates and the planted broken inputs.

``plan_jobs`` draws from one generator seeded ``[spec.seed, 2]`` (file names, extra views,
years, order, CRLF coins, near-duplicate and planted picks, in that order); the per-model view
counts come from their own generator ``[spec.seed, 7]``. Nothing is drawn or written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compcars_kedro.names import UNKNOWN_VIEWPOINT
from compcars_kedro.sample.spec import (
    EXTRA_VIEWPOINT_P,
    EXTRA_VIEWPOINTS,
    PLANTED_PLAN,
    MakeTraits,
    ModelTraits,
    SampleSpec,
)
from compcars_kedro.sample.structure import hex_name, stratified

NEAR_DUPLICATE_TRANSFORMS = (("jpeg_quality", 60.0), ("resize", 0.9), ("jpeg_quality", 95.0),
                             ("resize", 0.8))


@dataclass
class Job:
    """One file to write (image + optional label)."""

    rel: str  # "<make>/<model>/<year>/<name>.jpg", relative to image/
    make_idx: int
    model_idx: int
    viewpoint: int  # the drawn view
    key: tuple[int, ...]  # per-image rng key
    kind: str = "normal"  # normal | planted | near_duplicate
    reason: str | None = None
    note: str = ""
    label_viewpoint: int | None = None  # written viewpoint (defaults to the drawn one)
    crlf: bool = False
    bbox: tuple[int, int, int, int] | None = field(default=None)
    source: str | None = None  # near_duplicate: rel path of the photo it copies
    transform: tuple[str, float] | None = None  # ("jpeg_quality", q) | ("resize", factor)


@dataclass
class _Paths:
    """Fresh image paths ``<make>/<model>/<year>/<14 hex>.jpg``, never the same name twice."""

    rng: np.random.Generator
    models: list[ModelTraits]
    used: set[str] = field(default_factory=set)

    def rel(self, mi: int, year: str) -> str:
        m = self.models[mi]
        return f"{m.make_id}/{m.model_id}/{year}/{hex_name(self.rng, self.used)}.jpg"


def view_counts(spec: SampleSpec, rng: np.random.Generator, n_models: int) -> list[tuple[int, int]]:
    """(n_front, n_rear) per model: unequal views and unequal class sizes (see SampleSpec).

    The ratio larger:smaller view is ``max_view_ratio ** (u ** k)`` for stratified ``u`` in
    (0, 1), with ``k`` set so that its median is ``median_view_ratio``; the smaller view is
    log-uniform in ``[min_per_view, max_per_view / ratio]``; a coin decides which view is larger.
    """
    if spec.images_per_view is not None:
        return [(spec.images_per_view, spec.images_per_view)] * n_models
    k = math.log(math.log(spec.median_view_ratio) / math.log(spec.max_view_ratio)) / math.log(0.5)
    ratios = spec.max_view_ratio ** (stratified(rng, n_models, 0.0, 1.0) ** k)
    sizes = stratified(rng, n_models, 0.0, 1.0)
    out = []
    for ratio, u in zip(ratios, sizes, strict=True):
        lo = math.log(spec.min_per_view)
        hi = math.log(max(spec.min_per_view, spec.max_per_view / ratio))
        small = int(round(math.exp(lo + u * (hi - lo))))
        big = max(small, min(spec.max_per_view, int(round(small * ratio))))
        out.append((big, small) if rng.random() < 0.5 else (small, big))
    return out


def _normal_jobs(
    spec: SampleSpec, make_idx: dict[int, int], paths: _Paths, counts: list[tuple[int, int]]
) -> list[Job]:
    """Each model's front, rear and extra-view photos, spread over its year folders."""
    rng, jobs = paths.rng, []
    for mi, model in enumerate(paths.models):
        n_front, n_rear = counts[mi]
        n_extra = int(round(spec.extra_view_fraction * (n_front + n_rear)))
        views = [1] * n_front + [2] * n_rear
        views += [int(v) for v in rng.choice(EXTRA_VIEWPOINTS, n_extra, p=EXTRA_VIEWPOINT_P)]
        # every year folder gets at least one image
        ny = len(model.years)
        years = [
            model.years[k] if k < ny else model.years[int(rng.integers(ny))]
            for k in range(len(views))
        ]
        order = rng.permutation(len(views))
        for k, vi in enumerate(order):
            view = views[vi]
            jobs.append(
                Job(
                    rel=paths.rel(mi, years[k]),
                    make_idx=make_idx[model.make_id],
                    model_idx=mi,
                    viewpoint=view,
                    key=(3, model.model_id, int(vi)),
                    crlf=bool(rng.random() < 1 / 3),
                )
            )
    return jobs


def _near_duplicate_jobs(spec: SampleSpec, paths: _Paths, jobs: list[Job]) -> list[Job]:
    """The same photo again in the same model (re-encoded or slightly resized)."""
    rng, out = paths.rng, []
    front_rear = [j for j in jobs if j.viewpoint in (1, 2)]
    n_dup = int(round(spec.near_duplicate_fraction * len(front_rear)))
    if spec.near_duplicate_fraction > 0:
        n_dup = max(1, n_dup)
    for k, si in enumerate(np.sort(rng.choice(len(front_rear), n_dup, replace=False))):
        src = front_rear[int(si)]
        model = paths.models[src.model_idx]
        out.append(
            Job(
                rel=paths.rel(src.model_idx, model.years[int(rng.integers(len(model.years)))]),
                make_idx=src.make_idx,
                model_idx=src.model_idx,
                viewpoint=src.viewpoint,
                key=src.key,
                kind="near_duplicate",
                crlf=bool(rng.random() < 1 / 3),
                source=src.rel,
                transform=NEAR_DUPLICATE_TRANSFORMS[k % len(NEAR_DUPLICATE_TRANSFORMS)],
            )
        )
    return out


def _planted_jobs(make_idx: dict[int, int], paths: _Paths) -> list[Job]:
    """One file per ``PLANTED_PLAN`` entry, each in a model of its own (while there are enough)."""
    rng, models, out = paths.rng, paths.models, []
    targets = rng.permutation(len(models))
    for k, (reason, view, note) in enumerate(PLANTED_PLAN):
        mi = int(targets[k % len(models)])
        model = models[mi]
        out.append(
            Job(
                rel=paths.rel(mi, model.years[0]),
                make_idx=make_idx[model.make_id],
                model_idx=mi,
                viewpoint=view,
                key=(4, model.model_id, k),
                kind="planted",
                reason=reason,
                note=note,
                label_viewpoint=7 if reason == UNKNOWN_VIEWPOINT else None,
                crlf=bool(rng.random() < 1 / 3),
            )
        )
    return out


def plan_jobs(spec: SampleSpec, makes: list[MakeTraits], models: list[ModelTraits]) -> list[Job]:
    """Every file of the sample, in writing order: normal, near-duplicates, planted."""
    paths = _Paths(np.random.default_rng([spec.seed, 2]), models)
    make_idx = {m.make_id: i for i, m in enumerate(makes)}
    counts = view_counts(spec, np.random.default_rng([spec.seed, 7]), len(models))
    jobs = _normal_jobs(spec, make_idx, paths, counts)
    jobs += _near_duplicate_jobs(spec, paths, jobs)
    if spec.broken:
        jobs += _planted_jobs(make_idx, paths)
    return jobs
