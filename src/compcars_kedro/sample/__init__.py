"""Deterministic generator of a small sample dataset in the CompCars on-disk layout.

The real CompCars data cannot be redistributed, so tests, docs and demo runs use this
generator instead. It writes procedurally drawn cars (make-level family traits plus
model-level proportions; body colour deliberately uninformative) into the same folder
layout, with the same file formats and quirks as ``data/`` of CompCars:

* ``image/<make>/<model>/<year>/<14 hex>.jpg`` and ``label/<same>.txt`` (viewpoint, ``1``,
  1-based inclusive ``x1 y1 x2 y2``; some files with CRLF after line 1),
* ``misc/make_model_name.mat``, ``misc/attributes.txt``, ``misc/car_type.mat``,
* ``train_test_split/classification/{train,test}.txt``,

plus ``sample_info.json`` (not part of CompCars) describing the spec, counts and the
deliberately planted broken inputs.

Run ``python -m compcars_kedro.sample --out data/01_raw/compcars_sample``.

Modules: ``spec`` (SampleSpec, TINY, trait vocabularies), ``structure`` (makes and models),
``parts`` / ``face`` / ``drawing`` (one photo), ``plan`` (the files to write, planted inputs,
near-duplicates), ``layout`` (writing the CompCars layout, ``generate_sample``), ``cli``.
"""

from compcars_kedro.sample.cli import main
from compcars_kedro.sample.layout import generate_sample
from compcars_kedro.sample.spec import (
    CAR_TYPES,
    GENERATOR,
    GENERATOR_VERSION,
    PLANTED_REASONS,
    TINY,
    MakeTraits,
    ModelTraits,
    SampleSpec,
)

__all__ = [
    "CAR_TYPES",
    "GENERATOR",
    "GENERATOR_VERSION",
    "PLANTED_REASONS",
    "TINY",
    "MakeTraits",
    "ModelTraits",
    "SampleSpec",
    "generate_sample",
    "main",
]
