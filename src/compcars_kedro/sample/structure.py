"""The sample's makes and models: ids, names, family traits and per-model proportions.

Everything is drawn from one generator seeded ``[spec.seed, 1]``, in a fixed order (make ids,
model ids, make names, family permutations, then make by make and model by model), so the same
spec always gives the same structure.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from compcars_kedro.sample.spec import (
    BADGE_SHAPES,
    DUPLICATE_MAKE_NAME,
    EXHAUST_LAYOUTS,
    GRILLE_STYLES,
    HEADLIGHT_SHAPES,
    MAKE_NAME_POOL,
    MAX_MAKE_ID,
    MAX_MODEL_ID,
    MODEL_NAME_STEMS,
    MODEL_SUFFIXES,
    PALETTE_NAMES,
    TAILLIGHT_STYLES,
    TRAILING_SPACE_MAKE_NAME,
    WINDOW_STYLES,
    MakeTraits,
    ModelTraits,
    SampleSpec,
)


def stratified(rng: np.random.Generator, k: int, lo: float, hi: float) -> np.ndarray:
    """k values spread over [lo, hi] (one per stratum, shuffled) so siblings differ."""
    u = (rng.permutation(k) + rng.uniform(0.15, 0.85, size=k)) / k
    return lo + u * (hi - lo)


def hex_name(rng: np.random.Generator, used: set[str]) -> str:
    """A fresh 14-hex-digit file stem (CompCars style), added to ``used``."""
    while True:
        name = "".join("0123456789abcdef"[i] for i in rng.integers(0, 16, size=14))
        if name not in used:
            used.add(name)
            return name


def _make_names(rng: np.random.Generator, n: int) -> list[str]:
    pool = [p for p in MAKE_NAME_POOL if p not in ("SAAB", "Saab")]
    order = rng.permutation(len(pool))
    names = [pool[i] for i in order[:n]] + [f"Make{i}" for i in range(len(pool), n)]
    slots = rng.permutation(n)
    if n >= 2:  # two different make ids, same name
        names[slots[0]] = DUPLICATE_MAKE_NAME
        names[slots[1]] = DUPLICATE_MAKE_NAME
    names[slots[2] if n >= 3 else slots[0]] = (
        TRAILING_SPACE_MAKE_NAME if n >= 3 else names[slots[0]] + " "
    )
    return names


def _draw_makes(
    rng: np.random.Generator, make_ids: np.ndarray, names: list[str]
) -> list[MakeTraits]:
    """Family traits: each make takes the next entry of a shuffled style list."""
    perms = {
        "grille": rng.permutation(len(GRILLE_STYLES)),
        "headlight": rng.permutation(len(HEADLIGHT_SHAPES)),
        "taillight": rng.permutation(len(TAILLIGHT_STYLES)),
        "badge": rng.permutation(len(BADGE_SHAPES)),
    }
    makes = []
    for i in range(len(make_ids)):
        makes.append(
            MakeTraits(
                make_id=int(make_ids[i]),
                name=names[i],
                grille=GRILLE_STYLES[perms["grille"][i % len(GRILLE_STYLES)]],
                headlight=HEADLIGHT_SHAPES[perms["headlight"][i % len(HEADLIGHT_SHAPES)]],
                taillight=TAILLIGHT_STYLES[perms["taillight"][i % len(TAILLIGHT_STYLES)]],
                badge=BADGE_SHAPES[perms["badge"][(i // 2 + i) % len(BADGE_SHAPES)]],
                chrome_grille=bool(rng.random() < 0.5),
            )
        )
    return makes


def _model_strata(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    """The k sibling models' proportions, each spread over its range (see ``stratified``)."""
    return {
        "aspect": stratified(rng, k, 1.08, 1.55),
        "cabin_h": stratified(rng, k, 0.27, 0.44),
        "cabin_w": stratified(rng, k, 0.76, 0.93),
        "taper": stratified(rng, k, 0.58, 0.9),
        "clearance": stratified(rng, k, 0.035, 0.11),
        "bumper_v": stratified(rng, k, 0.55, 0.78),
        "wheel_w": stratified(rng, k, 0.085, 0.155),
        "grille_w": stratified(rng, k, 0.26, 0.56),
        "grille_h": stratified(rng, k, 0.2, 0.4),
        "light_w": stratified(rng, k, 0.12, 0.23),
        "light_h": stratified(rng, k, 0.1, 0.24),
    }


def _model_name(rng: np.random.Generator, stems: np.ndarray, gi: int, used: set[str]) -> str:
    """A model name not used yet: stem + random suffix (+ a number once the stems run out)."""
    while True:
        name = MODEL_NAME_STEMS[stems[gi % len(stems)]] + str(
            MODEL_SUFFIXES[int(rng.integers(len(MODEL_SUFFIXES)))]
        )
        if gi >= len(stems):
            name += f" {gi // len(stems) + 1}"
        if name not in used:
            break
    used.add(name)
    return name


def _model_years(rng: np.random.Generator, force_unknown: bool) -> list[str]:
    """1 to 3 sorted years; the last one is ``unknown`` when forced or by chance (15%)."""
    n_years = int(rng.integers(1, 4))
    years = [str(y) for y in np.sort(rng.choice(np.arange(2005, 2016), n_years, replace=False))]
    if force_unknown or rng.random() < 0.15:
        years[-1] = "unknown"
    return years


def _model_traits(
    rng: np.random.Generator,
    ids: tuple[int, int],
    name: str,
    years: list[str],
    colours: np.ndarray,
    s: dict[str, np.ndarray],
    j: int,
    grille_n: np.ndarray,
) -> ModelTraits:
    """Model ``j`` of its make: its strata values plus its own draws (type, lights, ...)."""
    model_id, make_id = ids
    return ModelTraits(
        model_id=model_id,
        make_id=make_id,
        name=name,
        years=tuple(years),
        colours=tuple(PALETTE_NAMES[c] for c in np.sort(colours)),
        car_type=int(rng.integers(1, 13)),
        aspect=float(s["aspect"][j]),
        cabin_h=float(s["cabin_h"][j]),
        cabin_w=float(s["cabin_w"][j]),
        taper=float(s["taper"][j]),
        clearance=float(s["clearance"][j]),
        bumper_v=float(s["bumper_v"][j]),
        wheel_w=float(s["wheel_w"][j]),
        grille_w=float(s["grille_w"][j]),
        grille_h=float(s["grille_h"][j]),
        grille_n=int(grille_n[j % len(grille_n)]),
        light_w=float(s["light_w"][j]),
        light_h=float(s["light_h"][j]),
        light_v=float(rng.uniform(0.08, 0.3)),
        window_style=WINDOW_STYLES[int(rng.integers(len(WINDOW_STYLES)))],
        window_inset=float(rng.uniform(0.05, 0.13)),
        roof_thick=float(rng.uniform(0.08, 0.26)),
        front_plate_v=float(rng.uniform(0.25, 0.7)),
        rear_plate_on_trunk=bool(rng.random() < 0.5),
        exhaust=EXHAUST_LAYOUTS[int(rng.integers(len(EXHAUST_LAYOUTS)))],
        spoiler=bool(rng.random() < 0.35),
        side_aspect=float(rng.uniform(2.2, 2.9)),
    )


def _draw_models(
    rng: np.random.Generator, k: int, makes: list[MakeTraits], model_ids: np.ndarray
) -> list[ModelTraits]:
    """``k`` models per make; one model's name gets a trailing space, one an unknown year."""
    n_models = len(model_ids)
    stems = rng.permutation(len(MODEL_NAME_STEMS))
    used_names: set[str] = set()
    trailing_space_model = int(rng.integers(n_models))
    unknown_year_model = int(rng.integers(n_models))
    models: list[ModelTraits] = []
    for mi, make in enumerate(makes):
        s = _model_strata(rng, k)
        grille_n = rng.permutation(np.arange(2, 8))
        for j in range(k):
            gi = mi * k + j
            name = _model_name(rng, stems, gi, used_names)
            if gi == trailing_space_model:
                name += " "
            years = _model_years(rng, gi == unknown_year_model)
            colours = rng.choice(len(PALETTE_NAMES), int(rng.integers(3, 5)), replace=False)
            ids = (int(model_ids[gi]), make.make_id)
            models.append(_model_traits(rng, ids, name, years, colours, s, j, grille_n))
    return models


def build_structure(
    spec: SampleSpec,
) -> tuple[list[MakeTraits], list[ModelTraits]]:
    """The makes and their models of ``spec`` (deterministic in ``spec.seed``)."""
    rng = np.random.default_rng([spec.seed, 1])
    n_models = spec.n_makes * spec.models_per_make
    make_ids = np.sort(rng.choice(np.arange(1, MAX_MAKE_ID + 1), spec.n_makes, replace=False))
    model_ids = np.sort(rng.choice(np.arange(1, MAX_MODEL_ID + 1), n_models, replace=False))
    names = _make_names(rng, spec.n_makes)
    makes = _draw_makes(rng, make_ids, names)
    models = _draw_models(rng, spec.models_per_make, makes, model_ids)
    # at least one model of unknown car type (type 0)
    zero = int(rng.integers(n_models))
    models[zero] = replace(models[zero], car_type=0)
    return makes, models
