"""MLflow "models from code" definition of the embedding model (no pickling).

Logged by :class:`compcars_kedro.datasets.MlflowEmbeddingModelDataset` with the safetensors
checkpoint as the ``checkpoint`` artifact. Load it back with::

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    embeddings = model.predict(images)   # uint8 (N, V, S, S, 3) -> (N, D) (the logged signature)

The returned embeddings are L2-normalised, computed with the same per-view fusion
(concatenation) as training and the embeddings pipeline.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class EmbeddingModel(PythonModel):
    """pyfunc wrapper around ``model_from_checkpoint(...).embed``."""

    def load_context(self, context: Any) -> None:
        from compcars_kedro.training.inference import model_from_checkpoint

        self.model = model_from_checkpoint(context.artifacts["checkpoint"], device="cpu")

    def predict(self, context: Any, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        """uint8 images -> L2-normalised embeddings (``np.ndarray`` in: MLflow skips schema
        inference for it, and the type hint silences its "add type hints" warning)."""
        import torch
        import torch.nn.functional as F

        from compcars_kedro.training.augment import prepare_images

        images = np.array(model_input, dtype=np.uint8)  # a writable copy (torch warns otherwise)
        if images.ndim == 4:
            images = images[:, None]
        with torch.no_grad():
            x = prepare_images(torch.from_numpy(images), image_size=self.model.image_size)
            return F.normalize(self.model.embed(x).float(), dim=-1).numpy()


mlflow.models.set_model(EmbeddingModel())
