"""clustering pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.names import embedding_names
from compcars_kedro.pipelines.clustering.nodes import cluster_embeddings, matched_metrics
from compcars_kedro.tracking import clustering_mlflow_metrics


def create_pipeline(**kwargs) -> Pipeline:
    embeddings = embedding_names()  # baseline/finetuned x val/test/unseen, the nodes' order
    return Pipeline([
        node(cluster_embeddings, [*embeddings, "params:clustering", "finetuning_config"],
             ["clustering_metrics", "cluster_assignments"], name="cluster_embeddings"),
        node(matched_metrics, [*embeddings, "params:clustering", "finetuning_config"],
             "matched_metrics", name="matched_metrics"),
        node(clustering_mlflow_metrics, "clustering_metrics", "clustering_mlflow_metrics",
             name="track_clustering"),
    ], tags=["clustering"])
