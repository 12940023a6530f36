"""grid pipeline: data_engineering, then one namespaced chain per variant, then collection."""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path

from kedro.pipeline import Pipeline, node, pipeline

from compcars_kedro.grid import (
    Variant,
    expand_grid,
    guard,
    load_study_parameters,
    rerun_requested,
    variant_done,
)
from compcars_kedro.names import (
    EVAL_SPLITS,
    FINETUNE_CHECKPOINTS,
    FINETUNE_NODE,
    SOURCES,
    SPLIT_TABLES,
    STUDY_TABLES,
    checkpoint_name,
    embedding_names,
    namespaced,
    split_namespace,
    study_table,
)
from compcars_kedro.pipelines.clustering.nodes import cluster_embeddings
from compcars_kedro.pipelines.embeddings.nodes import embed_splits, retrieval_table
from compcars_kedro.pipelines.finetuning.nodes import finetune
from compcars_kedro.pipelines.grid.nodes import (
    collect_results,
    split_for_seed,
    variant_config,
    variant_status,
)

logger = logging.getLogger(__name__)

STATUS_ROOT = Path("data/08_reporting/grid")
SHARED_PARAMS = ["params:embedding_dim", "params:models", "params:losses", "params:training",
                 "params:finetuning", "params:embeddings", "params:clustering"]


def _bind(func, variant: Variant):
    """``func`` with the variant bound; a plain function (kedro-viz rejects partials) whose
    signature lists only the remaining parameters, so Kedro maps inputs to them."""

    @functools.wraps(func, assigned=("__module__", "__name__", "__qualname__", "__doc__"),
                     updated=())
    def bound(*args, **kwargs):
        return func(variant, *args, **kwargs)

    bound.__signature__ = inspect.signature(functools.partial(func, variant))
    return bound


def variant_pipeline(variant: Variant) -> Pipeline:
    """The finetuning -> embeddings -> clustering chain of one variant (guarded)."""
    v = variant.name
    emb = embedding_names(SOURCES, EVAL_SPLITS)
    nodes = [
        node(guard(_bind(variant_config, variant), v, 1),
             ["params:embedding_dim", "params:models", "params:losses", "params:training",
              "params:finetuning"], "config", name="resolve_config"),
        node(guard(finetune, v, 5), ["crops", "multiview_samples", "config", "image_splits"],
             [*FINETUNE_CHECKPOINTS, "training_history", "finetuning_metrics"],
             name=FINETUNE_NODE, tags=["gpu"]),
        *[node(guard(embed_splits, v, 3),
               ["crops", "multiview_samples", checkpoint_name(s), "params:embeddings",
                "image_splits"],
               embedding_names((s,), EVAL_SPLITS), name=f"embed_{s}", tags=["gpu"])
          for s in SOURCES],
        node(guard(retrieval_table, v, 1), [*emb, "config"], "retrieval_metrics",
             name="retrieval_metrics"),
        node(guard(cluster_embeddings, v, 2), [*emb, "params:clustering", "config"],
             ["clustering_metrics", "cluster_assignments"], name="cluster_embeddings"),
        node(_bind(variant_status, variant),
             ["config", "finetuning_metrics", "retrieval_metrics", "clustering_metrics"],
             "status", name="status"),
    ]
    ns = variant.split_namespace  # the variant's split tables (its split seed)
    inputs = {"crops": "crops", **{name: namespaced(name, ns) for name in SPLIT_TABLES}}
    return pipeline(Pipeline(nodes), namespace=v, inputs=inputs,
                    parameters=set(SHARED_PARAMS), tags=["study", variant.study])


def split_pipeline(split_seed: int) -> Pipeline:
    """The class split of one split seed (``split_ss<seed>.image_splits`` / ``.multiview_samples``)
    from the kept images and their hashes; the crops store is shared, nothing is re-cropped."""
    return pipeline(Pipeline([node(
        _bind(split_for_seed, split_seed), ["validated_images", "params:data_engineering",
                                            "image_hashes"],
        ["image_splits", "multiview_samples", "excluded_images", "split_summary"],
        name="split_dataset")]), namespace=split_namespace(split_seed),
        inputs={"validated_images", "image_hashes"}, parameters={"params:data_engineering"},
        tags=["study", "split"])


def study_pipeline(variants: list[Variant], study: str) -> Pipeline:
    """Variants not yet done (skip-existing rule) + the collection node of ``study``."""
    todo = []
    for variant in variants:
        if not rerun_requested() and variant_done(STATUS_ROOT / variant.name / "status"):
            logger.info("%s: skipping variant %s (outputs exist; %s=1 reruns it)", study,
                        variant.name, "COMPCARS_GRID_RERUN")
            continue
        todo.append(variant)
    chains = sum((variant_pipeline(v) for v in todo), Pipeline([]))
    for split_seed in sorted({v.split_seed for v in todo if v.split_seed is not None}):
        chains += split_pipeline(split_seed)
    collect = node(collect_results,
                   [study_table(study, "results"), *[namespaced("status", v.name) for v in todo]],
                   [study_table(study, t) for t in STUDY_TABLES], name=f"collect_{study}",
                   tags=["study"])
    return chains + Pipeline([collect])


def create_pipeline(**kwargs) -> Pipeline:
    params = load_study_parameters()
    default_split_seed = int((params.get("data_engineering") or {}).get("seed", 42))
    return study_pipeline(expand_grid(params.get("grid", {}), default_split_seed), "grid")
