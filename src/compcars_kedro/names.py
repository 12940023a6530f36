"""Every name the pipelines agree on, defined once: splits, embedding sources, clustering
selection modes, reject reasons and the catalog's dataset names.

Pure constants and string helpers (no Kedro, torch or pandas import), so any module can use
them without pulling in a framework. A pipeline builds a dataset name with a helper below
rather than an f-string of its own, so renaming a dataset is one edit here.
"""

from __future__ import annotations

from typing import Literal, get_args

# --- splits ---------------------------------------------------------------------------------
TRAIN, VAL, TEST, UNSEEN = "train", "val", "test", "unseen"
#: every split of the open-set protocol, in order
SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST, UNSEEN)
#: splits that get embeddings and retrieval metrics (val selects; test / unseen are reported)
EVAL_SPLITS: tuple[str, ...] = (VAL, TEST, UNSEEN)
#: splits that are clustered and reported (val is the transfer-selection split)
REPORTED_SPLITS: tuple[str, ...] = (TEST, UNSEEN)
Split = Literal["train", "val", "test", "unseen"]
ReportedSplit = Literal["test", "unseen"]

# --- embedding sources ------------------------------------------------------------------------
BASELINE, FINETUNED = "baseline", "finetuned"
#: where embeddings come from: the starting backbone, or the fine-tuned model
SOURCES: tuple[str, ...] = (BASELINE, FINETUNED)
Source = Literal["baseline", "finetuned"]

# --- clustering selection modes -------------------------------------------------------------
#: how clustering parameters are chosen: ``internal`` (label-free scores on the reported split),
#: ``transfer`` (chosen on val labels, applied to the reported split) and ``oracle`` (the reported
#: split's own labels: an upper bound, always labelled)
INTERNAL, TRANSFER, ORACLE = "internal", "transfer", "oracle"
SelectionMode = Literal["internal", "transfer", "oracle"]
SELECTION_MODES: tuple[str, ...] = get_args(SelectionMode)
#: ``reference`` rows (true k given to the clusterer) are not a selection mode a user picks, but
#: they appear in the tables beside the modes
REFERENCE = "reference"
#: table order of every mode that can appear in a clustering table
MODE_ORDER: tuple[str, ...] = (TRANSFER, INTERNAL, REFERENCE, ORACLE)
#: modes whose numbers use labels of the reported split: labelled wherever they appear
LABELLED_MODES = frozenset({REFERENCE, ORACLE})

# --- reject reasons (the ``reason`` column of ``rejected_images``) ----------------------------
MISSING_FILE = "missing_file"
MISSING_LABEL = "missing_label"
LABEL_ERROR = "label_error"
NOT_AN_IMAGE = "not_an_image"
DECODE_ERROR = "decode_error"
UNKNOWN_VIEWPOINT = "unknown_viewpoint"
DEGENERATE_BBOX = "degenerate_bbox"
BBOX_OUTSIDE_IMAGE = "bbox_outside_image"
DUPLICATE_PATH = "duplicate_path"
PATH_OUTSIDE_ROOT = "path_outside_root"
TOO_LARGE = "too_large"
DECOMPRESSION_BOMB = "decompression_bomb"
REJECT_REASONS: tuple[str, ...] = (
    MISSING_FILE, MISSING_LABEL, LABEL_ERROR, NOT_AN_IMAGE, DECODE_ERROR, UNKNOWN_VIEWPOINT,
    DEGENERATE_BBOX, BBOX_OUTSIDE_IMAGE, DUPLICATE_PATH, PATH_OUTSIDE_ROOT, TOO_LARGE,
    DECOMPRESSION_BOMB,
)

# --- node names the hooks and runners recognise ------------------------------------------------
FINETUNE_NODE = "finetune"


def is_finetune_node(node_name: str) -> bool:
    """True for the training node, plain (``finetune``) or namespaced (``<variant>.finetune``)."""
    return node_name.rsplit(".", 1)[-1] == FINETUNE_NODE


# --- dataset names ----------------------------------------------------------------------------
def namespaced(name: str, namespace: str | None = None) -> str:
    """``<namespace>.<name>`` (a grid variant's copy of a dataset), or ``name`` alone."""
    return f"{namespace}.{name}" if namespace else name


def embeddings_name(source: str, split: str, namespace: str | None = None) -> str:
    """Catalog name of the embeddings of ``source`` on ``split``, e.g. ``embeddings_baseline_val``."""
    return namespaced(f"embeddings_{source}_{split}", namespace)


def embedding_names(sources: tuple[str, ...] = SOURCES, splits: tuple[str, ...] = EVAL_SPLITS,
                    namespace: str | None = None) -> list[str]:
    """Every embeddings dataset of ``sources`` x ``splits`` (source-major order)."""
    return [embeddings_name(s, p, namespace) for s in sources for p in splits]


def checkpoint_name(source: str, namespace: str | None = None) -> str:
    """Catalog name of a stage's checkpoint: ``baseline_checkpoint`` / ``finetuned_checkpoint``."""
    return namespaced(f"{source}_checkpoint", namespace)


LAST_CHECKPOINT = "last_checkpoint"
#: the checkpoints the finetune node writes, in its output order (baseline, best, last)
FINETUNE_CHECKPOINTS: tuple[str, ...] = (checkpoint_name(BASELINE), checkpoint_name(FINETUNED),
                                         LAST_CHECKPOINT)
#: the split tables a grid variant reads from its split seed's namespace
SPLIT_TABLES: tuple[str, ...] = ("multiview_samples", "image_splits")
#: the tables a study's collection node writes, as ``<study>_<table>``
STUDY_TABLES: tuple[str, ...] = ("status", "training_history", "retrieval_metrics",
                                 "clustering_metrics")


def split_namespace(split_seed: int) -> str:
    """Namespace of the split tables of one grid split seed: ``split_ss<seed>``."""
    return f"split_ss{split_seed}"


def study_table(study: str, table: str) -> str:
    """Catalog name of a study's collected table, e.g. ``grid_retrieval_metrics``."""
    return f"{study}_{table}"
