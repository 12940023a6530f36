"""Command line of the sample generator: ``python -m compcars_kedro.sample --out DIR [options]``.

Options override fields of the default spec (or of ``TINY`` with ``--tiny``); an invalid spec or
an output folder that must not be touched exits with status 2 and one logged error line.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from compcars_kedro.sample.layout import generate_sample
from compcars_kedro.sample.spec import TINY, SampleSpec

logger = logging.getLogger("compcars_kedro.sample")

DESCRIPTION = "Deterministic generator of a small sample dataset in the CompCars on-disk layout."


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="compcars-sample", description=DESCRIPTION)
    ap.add_argument(
        "--out", required=True, type=Path, help="output directory (the CompCars data/ root)"
    )
    ap.add_argument(
        "--tiny", action="store_true", help="start from the TINY spec instead of the default"
    )
    ap.add_argument("--n-makes", type=int)
    ap.add_argument("--models-per-make", type=int)
    ap.add_argument("--images-per-view", type=int)
    ap.add_argument("--min-per-view", type=int)
    ap.add_argument("--max-per-view", type=int)
    ap.add_argument("--extra-view-fraction", type=float)
    ap.add_argument("--near-duplicate-fraction", type=float)
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--jpeg-quality", type=int)
    ap.add_argument("--no-broken", action="store_true", help="do not plant broken inputs")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing generated sample")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m compcars_kedro.sample --out DIR [options]``."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    base = TINY if args.tiny else SampleSpec()
    overrides: dict[str, Any] = {
        k: getattr(args, k)
        for k in (
            "n_makes",
            "models_per_make",
            "images_per_view",
            "min_per_view",
            "max_per_view",
            "extra_view_fraction",
            "near_duplicate_fraction",
            "width",
            "height",
            "seed",
            "jpeg_quality",
        )
        if getattr(args, k) is not None
    }
    if args.no_broken:
        overrides["broken"] = False
    try:
        spec = replace(base, **overrides)
        generate_sample(args.out, spec, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        logger.error("%s", exc)
        return 2
    return 0
