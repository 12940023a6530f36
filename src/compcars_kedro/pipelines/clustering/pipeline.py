"""clustering pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.pipelines.clustering.nodes import cluster_embeddings


def create_pipeline(**kwargs) -> Pipeline:
    embeddings = [f"embeddings_{s}_{p}" for s in ("baseline", "finetuned")
                  for p in ("val", "test", "unseen")]
    return Pipeline([
        node(cluster_embeddings, [*embeddings, "params:clustering", "finetuning_config"],
             ["clustering_metrics", "cluster_assignments"], name="cluster_embeddings"),
    ], tags=["clustering"])
