"""The reporting library loads without Kedro or torch (the pipeline wraps it; nothing in it
needs either), so it can be used from a notebook or a script as plain functions."""

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import compcars_kedro.reporting as pkg
names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."))
for name in [pkg.__name__, *names]:  # the package's __init__ first: it imports several
    importlib.import_module(name)
    bad = [m for m in ("kedro", "torch") if m in sys.modules]
    if bad:
        sys.exit(f"{name} imported {', '.join(bad)}")
print(len(names))
"""


def test_reporting_modules_import_no_kedro_or_torch() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    assert int(out.stdout) >= 14  # every module was imported (report, sections, tables, ...)
