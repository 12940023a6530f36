"""The report's wording: what each selection mode and model group is called, human column
names, and how numbers, ``mean ± half width`` cells and intervals are written.

Pure text helpers (no HTML): :mod:`.display` builds the display tables from them and
:mod:`.sections` the page's sections.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from compcars_kedro.names import FINETUNED, TRANSFER
from compcars_kedro.reporting import html as H
from compcars_kedro.reporting.tables import metric_label

MODE_TEXT = {
    "internal": "internal: parameters chosen without any label (silhouette of non-noise points "
                "penalised by the noise fraction) on the reported split itself",
    "transfer": "transfer: parameters chosen on the labelled val split of seen models (AMI), "
                "frozen, then applied once to the reported split",
    "reference": "reference: kmeans given the true number of models -- a labelled bound, not "
                 "a discovery result",
    "oracle": "oracle: parameters tuned on the reported split's own labels -- an upper bound, "
              "not a result",
}
MODELS_TEXT = {"seen": "seen models (test split)", "unseen": "unseen models (unseen split)",
               "val": "val split (seen models, used for choices)"}

#: display names of table columns (anything else: underscores become spaces)
COLUMN_LABELS = {
    "model": "backbone", "loss": "loss", "views": "views", "seed": "seed", "variant": "variant",
    "source": "source", "models": "models", "metric": "metric", "n_seeds": "n",
    "n_runs": "n runs", "n_configs": "n configs", "n": "n", "mean": "mean", "std": "std",
    "ci_low": "CI low", "ci_high": "CI high", "ci_half_width": "± (CI)",
    "selection_mode": "selection", "reducer": "reducer", "clusterer": "clusterer",
    "ari_ci_half_width": "ARI ± (CI)", "uses_true_k": "true k", "label": "labelled as",
    "epochs": "epochs", "best_epoch": "best epoch", "best_val_map_at_r": "best val MAP@R",
    "final_train_loss": "final train loss", "train_time_s": "train time (s)",
    "n_matched_configs": "matched configs", "mean_a": "mean A", "mean_b": "mean B",
    "diff": "A − B", "diff_ci_low": "A − B CI low", "diff_ci_high": "A − B CI high",
    "p_value": "p", "verdict": "verdict", "claim": "claim", "a": "A", "b": "B",
    "status": "status", "replicates": "replicates", "component": "component",
    "trainable_layers": "trainable layers", "layer_counts": "layer counts",
    "split": "split", "n_draws": "draws", "n_classes": "classes", "per_class": "per class",
}


def column_label(column: str) -> str:
    """Human name of a table column: ``seen_mean_average_precision_at_r`` -> ``seen MAP@R``."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    for prefix in ("seen_", "unseen_", "val_"):
        if column.startswith(prefix):
            return f"{prefix[:-1]} {metric_label(column[len(prefix):])}"
    label = metric_label(column)
    return label if label != column else column.replace("_", " ")


def humanize(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with human column names and metric names (for display only)."""
    if df is None or df.empty:
        return df
    out = df.copy()
    if "metric" in out:
        out["metric"] = out["metric"].map(lambda m: metric_label(str(m)))
    return out.rename(columns={c: column_label(c) for c in out.columns})


def source_text(source: str) -> str:
    """``fine-tuned`` for the fine-tuned source, any other source as is."""
    return "fine-tuned" if source == FINETUNED else source


def method_text(method: Mapping[str, str]) -> str:
    """``hdbscan on umap, transfer selection (parameters chosen on val)``."""
    return (f"{method['clusterer']} on {method['reducer']}, {method['selection_mode']} "
            "selection (parameters chosen on val)" if method.get("selection_mode") == TRANSFER
            else f"{method['clusterer']} on {method['reducer']}, {method['selection_mode']} "
                 "selection")


# --------------------------------------------------------------------------- numbers
def num(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (``-0`` shown as ``0``)."""
    return H.format_value(float(value), digits)


def num_or_dash(value: float) -> str:
    return "–" if pd.isna(value) else num(value)


def mean_ci(mean: float, half: float, digits: int = 3) -> str:
    """``mean ± half`` (no half width when undefined; ``–`` when there is no mean)."""
    if pd.isna(mean):
        return "–"
    return num(mean, digits) + ("" if pd.isna(half) else f" ± {num(half, digits)}")


def interval(mean: float, low: float, high: float) -> str:
    """``mean [low, high]``; just the mean when the interval is undefined (one replicate)."""
    if pd.isna(mean):
        return "–"
    if pd.isna(low) or pd.isna(high):
        return num(mean)
    return f"{num(mean)} [{num(low)}, {num(high)}]"
