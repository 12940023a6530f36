"""Log the fine-tuned embedding model to the active MLflow run as a pyfunc (models from code)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from compcars_kedro.training.checkpoint import Checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).resolve().parents[1] / "mlflow_model.py"


def embedding_signature() -> Any:
    """uint8 images ``(N, V, S, S, 3)`` -> float32 embeddings ``(N, D)``, stated explicitly: an
    ``np.ndarray`` type hint says nothing about shape, so MLflow would warn it cannot infer one."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1, 3))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]))


class MlflowEmbeddingModelDataset(AbstractDataset[Checkpoint, Any]):
    """Save: ``mlflow.pyfunc.log_model`` of a checkpoint into the active run (skipped, with a
    log line, when no run is active). Load: the pyfunc model of ``run_id`` (default: active run).

    Nothing is pickled: the model code is ``compcars_kedro/mlflow_model.py`` and the weights are
    the checkpoint's safetensors file, logged as the ``checkpoint`` artifact.
    """

    def __init__(self, *, name: str = "model", run_id: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._name = name
        self._run_id = run_id
        self.metadata = metadata
        self.model_uri: str | None = None

    def save(self, data: Checkpoint) -> None:
        import mlflow

        run = mlflow.active_run()
        if run is None:
            logger.info("no active MLflow run: the model is not logged to MLflow")
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_checkpoint(data, Path(tmp) / "checkpoint")
            info = mlflow.pyfunc.log_model(
                name=self._name, python_model=str(MODEL_CODE),
                artifacts={"checkpoint": str(folder)}, pip_requirements=[],
                signature=embedding_signature(),
            )
        self.model_uri = info.model_uri
        logger.info("logged embedding model to MLflow: %s", self.model_uri)

    def load(self) -> Any:
        import mlflow

        run_id = self._run_id or (mlflow.active_run().info.run_id if mlflow.active_run() else None)
        if run_id is None:
            raise DatasetError("MlflowEmbeddingModelDataset.load needs run_id or an active run")
        return mlflow.pyfunc.load_model(f"runs:/{run_id}/{self._name}")

    def _describe(self) -> dict[str, Any]:
        return {"name": self._name, "run_id": self._run_id}
