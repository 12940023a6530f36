"""benchmarks/gpu_check.sh --cpu-smoke: the GPU readiness script's plumbing, on CPU in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_gpu_check_cpu_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "realconfig tests collected: 5" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("resnet18 ")]
    assert len(rows) == 1 and rows[0][1] == "off"
    train_rate, train_ratio, embed_rate, embed_ratio = map(float, rows[0][2:])
    assert min(train_rate, train_ratio, embed_rate, embed_ratio) > 0
    assert (tmp_path / "train_resnet18_compile-off.log").is_file()
