"""Retrieval metrics (pml's ``AccuracyCalculator``) and the metric / history column names of
the training loop.

:func:`retrieval_metrics`: query == reference, self-matches excluded, ``k="max_bin_count"``,
cosine similarity, no faiss.
"""

from __future__ import annotations

import numpy as np
import torch

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
#: validation metrics of one epoch (``zero_shot_accuracy``: CLIP image-text runs, single view)
VAL_METRICS = ("val_loss", *RETRIEVAL_METRICS, "accuracy", "zero_shot_accuracy")
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    *VAL_METRICS,
    "lr_backbone",
    "lr_head",
    "train_img_per_s",
    "epoch_time_s",
    "monitor",  # the early-stopping metric of the run (a string column)
]


def _tensor(values: np.ndarray | torch.Tensor, dtype: type) -> torch.Tensor:
    """A tensor of ``values``; read-only arrays (memmaps, pandas/arrow buffers) are copied, since
    torch cannot share memory it may not write (it warns instead)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device | None = None,
    knn_batch_size: int = 4096,
) -> dict[str, float]:
    """precision@1, R-precision and MAP@R (pml ``AccuracyCalculator``), query == reference.

    Self-matches are excluded (``ref_includes_query=True``); classes with a single sample are
    ignored as queries by pml.  Cosine similarity, exact kNN in chunks of ``knn_batch_size``.
    """
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    emb = _tensor(embeddings, np.float32)
    lab = _tensor(labels, np.int64)
    if len(emb) < 2 or len(np.unique(lab.numpy())) == len(lab):
        return {m: float("nan") for m in RETRIEVAL_METRICS}
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    calc = AccuracyCalculator(
        include=RETRIEVAL_METRICS,
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity(), batch_size=knn_batch_size),
        device=torch.device(device),
    )
    res = calc.get_accuracy(emb, lab, emb, lab, ref_includes_query=True)
    return {m: float(res[m]) for m in RETRIEVAL_METRICS}
