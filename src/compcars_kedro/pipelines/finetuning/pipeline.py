"""finetuning pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.pipelines.finetuning.nodes import finetune, package_model, resolve_config
from compcars_kedro.tracking import training_metrics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(resolve_config,
             ["params:model", "params:loss", "params:views", "params:embedding_dim",
              "params:models", "params:losses", "params:training", "params:finetuning"],
             "finetuning_config", name="resolve_finetuning_config"),
        node(finetune, ["crops", "multiview_samples", "finetuning_config", "image_splits"],
             ["baseline_checkpoint", "finetuned_checkpoint", "last_checkpoint", "training_history",
              "finetuning_metrics"],
             name="finetune", tags=["gpu"]),
        node(training_metrics, ["training_history", "finetuning_metrics"],
             "finetuning_mlflow_metrics", name="track_training"),
        node(package_model, "finetuned_checkpoint", "mlflow_embedding_model",
             name="log_model_to_mlflow"),
    ], tags=["finetuning"])
