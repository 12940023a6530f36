"""The node data types load without Kedro or torch (reporting/ and data/ depend on them)."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.types import CropsStore, EmbeddingSet, VariantFailed


def test_types_module_imports_no_framework() -> None:
    code = ("import sys, compcars_kedro.types, compcars_kedro.names; "
            "bad = [m for m in ('kedro', 'torch') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"types/names imported {out.stdout.strip()}"


def test_crops_store_checks_shape_and_index() -> None:
    idx = pd.DataFrame({"image_id": ["a", "b"]})
    store = CropsStore(np.zeros((2, 4, 4, 3), np.uint8), idx)
    assert store.size == 4 and list(store.rows_for(["b", "a"])) == [1, 0]
    with pytest.raises(KeyError, match="not in the crops store"):
        store.rows_for(["zz"])
    with pytest.raises(ValueError, match="uint8"):
        CropsStore(np.zeros((2, 4, 4, 3), np.float32), idx)
    with pytest.raises(ValueError, match="index has 1 rows for 2 crops"):
        CropsStore(np.zeros((2, 4, 4, 3), np.uint8), idx.iloc[:1])


def test_embedding_set_and_marker() -> None:
    with pytest.raises(ValueError, match="do not match"):
        EmbeddingSet(np.zeros((3, 2), np.float32), pd.DataFrame({"a": [1, 2]}))
    marker = VariantFailed("v", "n", "boom")
    assert marker.to_json()["status"] == "failed"
