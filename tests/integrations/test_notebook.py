"""notebooks/metrics.ipynb runs headless (nbclient, the venv's kernel) on a tiny run's outputs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, latest

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "notebooks" / "metrics.ipynb"
KERNEL = "compcars-venv"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kedro.ipython renders reprs with rich


def _tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r} expected"
    return cells[0]


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running THIS interpreter (the project's .venv), found first via JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "compcars-kedro (.venv)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return KERNEL


def test_metrics_notebook_executes_and_plots(tiny_run, venv_kernel: str, tmp_path: Path) -> None:
    project, result = tiny_run
    assert result.returncode == 0, result.stderr[-3000:]
    (project / "notebooks").mkdir(exist_ok=True)
    notebook = project / "notebooks" / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name=venv_kernel, allow_errors=False,
                            resources={"metadata": {"path": str(project)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(nb, tmp_path / "metrics.executed.ipynb")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]

    # the table it loaded through the catalog is the run's latest clustering_metrics version
    expected_rows = len(pd.read_csv(latest(project, "08_reporting/clustering_metrics.csv")))
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{expected_rows} rows" in streams, streams

    table = _tagged(nb, "ari-table").outputs
    text = ANSI.sub("", "".join(o["data"].get("text/plain", "") for o in table if "data" in o))
    assert "ari_median_internal" in text and "ari_median_transfer" in text, text
    for source in ("baseline", "finetuned"):
        for models in ("seen", "unseen"):
            assert re.search(rf"\b{source}\s+{models}\b", text), f"row {source}/{models}:\n{text}"

    plot = _tagged(nb, "ari-plot").outputs
    images = [o["data"]["image/png"] for o in plot if "image/png" in o.get("data", {})]
    assert images and len(images[0]) > 5_000, "no plot in the output"
