"""``python -m compcars_kedro.sample --out DIR [options]`` (see ``cli.py``)."""

from compcars_kedro.sample.cli import main

raise SystemExit(main())
