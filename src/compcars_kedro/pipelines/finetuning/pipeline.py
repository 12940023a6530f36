"""finetuning pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.names import FINETUNE_CHECKPOINTS, FINETUNE_NODE, FINETUNED, checkpoint_name
from compcars_kedro.pipelines.finetuning.nodes import finetune, package_model, resolve_config
from compcars_kedro.tracking import training_metrics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(resolve_config,
             ["params:model", "params:loss", "params:views", "params:embedding_dim",
              "params:models", "params:losses", "params:training", "params:finetuning"],
             "finetuning_config", name="resolve_finetuning_config"),
        node(finetune, ["crops", "multiview_samples", "finetuning_config", "image_splits"],
             [*FINETUNE_CHECKPOINTS, "training_history", "finetuning_metrics"],
             name=FINETUNE_NODE, tags=["gpu"]),
        node(training_metrics, ["training_history", "finetuning_metrics"],
             "finetuning_mlflow_metrics", name="track_training"),
        node(package_model, checkpoint_name(FINETUNED), "mlflow_embedding_model",
             name="log_model_to_mlflow"),
    ], tags=["finetuning"])
