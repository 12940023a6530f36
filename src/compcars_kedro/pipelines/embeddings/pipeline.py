"""embeddings pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.names import EVAL_SPLITS, SOURCES, checkpoint_name, embedding_names
from compcars_kedro.pipelines.embeddings.nodes import embed_splits, retrieval_table
from compcars_kedro.tracking import retrieval_mlflow_metrics


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(embed_splits, ["crops", "multiview_samples", checkpoint_name(source),
                            "params:embeddings", "image_splits"],
             embedding_names((source,), EVAL_SPLITS),
             name=f"embed_{source}", tags=["gpu"])
        for source in SOURCES
    ]
    nodes.append(node(
        retrieval_table,
        [*embedding_names(SOURCES, EVAL_SPLITS), "finetuning_config"],
        "retrieval_metrics", name="retrieval_metrics"))
    nodes.append(node(retrieval_mlflow_metrics, "retrieval_metrics", "retrieval_mlflow_metrics",
                      name="track_retrieval"))
    return Pipeline(nodes, tags=["embeddings"])
