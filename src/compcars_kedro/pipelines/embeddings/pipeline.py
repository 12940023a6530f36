"""embeddings pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.pipelines.embeddings.nodes import embed_splits, retrieval_table
from compcars_kedro.tracking import retrieval_mlflow_metrics


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(embed_splits, ["crops", "multiview_samples", f"{source}_checkpoint",
                            "params:embeddings", "image_splits"],
             [f"embeddings_{source}_{split}" for split in ("val", "test", "unseen")],
             name=f"embed_{source}", tags=["gpu"])
        for source in ("baseline", "finetuned")
    ]
    nodes.append(node(
        retrieval_table,
        [f"embeddings_{s}_{p}" for s in ("baseline", "finetuned") for p in ("val", "test", "unseen")]
        + ["finetuning_config"],
        "retrieval_metrics", name="retrieval_metrics"))
    nodes.append(node(retrieval_mlflow_metrics, "retrieval_metrics", "retrieval_mlflow_metrics",
                      name="track_retrieval"))
    return Pipeline(nodes, tags=["embeddings"])
