"""Matplotlib figures of the report (object-oriented API: no pyplot state, no GUI backend).

Figures are built as :class:`matplotlib.figure.Figure` objects, never through pyplot, so they
render with the Agg canvas whatever backend is active and are garbage-collected normally.

Every function returns :class:`matplotlib.figure.Figure` objects (or ``{file name: Figure}``
dicts) that Kedro's ``matplotlib.MatplotlibDataset`` saves and :func:`figure_to_base64` embeds.
"""

from __future__ import annotations

import base64
import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compcars_kedro.names import BASELINE, FINETUNED, SOURCES
from compcars_kedro.reporting.analysis import NOISE, GalleryRow
from compcars_kedro.reporting.tables import (
    CONFIG_KEYS,
    RUN_KEYS,
    config_label,
    metric_label,
)

SOURCE_COLORS = {BASELINE: "#9e9e9e", FINETUNED: "#1f77b4"}
DEFAULT_DPI = 100


def new_figure(width: float, height: float, dpi: int = DEFAULT_DPI) -> Figure:
    """A figure outside pyplot (never leaks, needs no GUI backend)."""
    return Figure(figsize=(max(width, 2.0), max(height, 1.5)), dpi=dpi, layout="constrained")


def figure_to_base64(fig: Figure, dpi: int | None = None) -> str:
    """PNG bytes of ``fig`` as base64 text (for ``<img src="data:image/png;base64,...">``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def placeholder_figure(message: str, dpi: int = DEFAULT_DPI) -> Figure:
    """A small figure that states why a real one is missing (a saved output is never empty)."""
    fig = new_figure(6, 1.5, dpi)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(message, 80), ha="center", va="center", fontsize=10)
    return fig


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``-_.+`` kept)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_") or "figure"


def _short(text: str, width: int = 16, lines: int = 2) -> str:
    return textwrap.shorten(str(text), width * lines, placeholder="…") if len(str(text)) > width * lines \
        else "\n".join(textwrap.wrap(str(text), width)[:lines])


# --------------------------------------------------------------------------- training curves
#: (y label, [(column, legend label)], log scale) of each training-curve panel
TRAINING_PANELS = [
    ("loss", [("train_loss", "train"), ("val_loss", "val")], False),
    ("validation metric", [("precision_at_1", "P@1"), ("r_precision", "R-precision"),
                           ("mean_average_precision_at_r", "MAP@R"),
                           ("accuracy", "accuracy")], False),
    ("learning rate", [("lr_backbone", "backbone"), ("lr_head", "head")], True),
]


def training_curves(history: pd.DataFrame, dpi: int = DEFAULT_DPI) -> dict[str, Figure]:
    """One figure per run: losses, validation metrics, learning rates against the epoch."""
    figures: dict[str, Figure] = {}
    if history is None or history.empty:
        return figures
    keys = [k for k in RUN_KEYS if k in history.columns]
    for key, h in history.groupby(keys, sort=True):
        run = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        h = h.sort_values("epoch")
        fig = new_figure(13, 3.4, dpi)
        axes = fig.subplots(1, 3)
        for ax, (ylabel, series, log) in zip(axes, TRAINING_PANELS, strict=True):
            _curve_panel(ax, h, ylabel, series, log)
        title = f"{run.get('variant', '')}  seed {run.get('seed', '')}"
        fig.suptitle(f"Training curves: {title}", fontsize=11)
        figures[safe_name(f"{run.get('variant', 'run')}_seed{run.get('seed', '')}") + ".png"] = fig
    return figures


def _curve_panel(ax: Any, h: pd.DataFrame, ylabel: str, series: Sequence[tuple[str, str]],
                 log: bool) -> None:
    """One panel: each available column of ``series`` against the epoch (or a note)."""
    drawn = 0
    for col, label in series:
        if col in h and h[col].notna().any():
            ax.plot(h["epoch"], h[col].astype(float), marker="o", ms=3, label=label)
            drawn += 1
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
        if log and (h[[c for c, _ in series if c in h]].fillna(1.0) > 0).all().all():
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "not available\n(e.g. a split too small\nfor the metric)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)


# --------------------------------------------------------------------------- comparisons
def baseline_vs_finetuned(comparison: pd.DataFrame, metrics: Sequence[str],
                          dpi: int = DEFAULT_DPI) -> Figure:
    """Bars per configuration: baseline vs fine-tuned, seen (top) and unseen (bottom) models.

    Error bars are the t-interval half widths over seeds (none with a single seed).
    """
    metrics = [m for m in metrics if m in set(comparison["metric"])]
    if comparison.empty or not metrics:
        return placeholder_figure("no metric to compare", dpi)
    configs = (comparison[list(CONFIG_KEYS)].drop_duplicates().sort_values(list(CONFIG_KEYS)))
    labels = [config_label(r) for _, r in configs.iterrows()]
    n = len(labels)
    models_rows = [m for m in ("seen", "unseen") if m in set(comparison["models"])]
    panel_w = max(3.2, 0.55 * n + 1.6)
    fig = new_figure(panel_w * len(metrics), 3.2 * len(models_rows) + (0.8 if n > 2 else 0), dpi)
    axes = np.atleast_2d(fig.subplots(len(models_rows), len(metrics), squeeze=False))
    x = np.arange(n)
    width = 0.38
    for i, models in enumerate(models_rows):
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            for k, source in enumerate(SOURCES):
                sub = comparison[(comparison["metric"] == metric) & (comparison["models"] == models)
                                 & (comparison["source"] == source)]
                _bars(ax, sub, labels, x + (k - 0.5) * width, width, source)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(x, [_short(lb, 20, 3) for lb in labels], rotation=30 if n > 2 else 0,
                          ha="right" if n > 2 else "center", fontsize=8)
            ax.set_title(f"{metric_label(metric)}: {models} models", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper right", fontsize=8, ncols=2)
    fig.suptitle("Baseline vs fine-tuned (mean over seeds, error bars = t-interval)", fontsize=11)
    return fig


def _bars(ax: Any, sub: pd.DataFrame, labels: Sequence[str], pos: np.ndarray, width: float,
          source: str) -> None:
    """One source's bars (one per configuration label), with value labels when few."""
    sub = sub.assign(_label=[config_label(r) for _, r in sub.iterrows()]) \
        .set_index("_label").reindex(labels)
    means = sub["mean"].to_numpy(dtype=float)
    errs = np.nan_to_num(sub["ci_half_width"].to_numpy(dtype=float), nan=0.0)
    ax.bar(pos, np.nan_to_num(means), width, yerr=errs, capsize=3 if errs.any() else 0,
           color=SOURCE_COLORS[source], label=source)
    if len(labels) <= 6:  # value labels above the error bars
        for p_, m_, e_ in zip(pos, means, errs, strict=True):
            top = 0.0 if np.isnan(m_) else m_ + (e_ if m_ >= 0 else 0.0)
            ax.text(p_, top, "n/a" if np.isnan(m_) else f"{m_:.2f}",
                    ha="center", va="bottom", fontsize=7)


def metric_heatmaps(comparison: pd.DataFrame, metrics: Sequence[str], source: str = FINETUNED,
                    dpi: int = DEFAULT_DPI) -> dict[str, Figure]:
    """Per ``views`` value: model x loss heatmaps of each metric, seen and unseen models.

    Cells show the mean over seeds and, below it, the interval half width (when n > 1).
    """
    sub = comparison[(comparison["source"] == source) & comparison["metric"].isin(metrics)]
    figures: dict[str, Figure] = {}
    if sub.empty:
        return figures
    metrics = [m for m in metrics if m in set(sub["metric"])]
    models_cols = [m for m in ("seen", "unseen") if m in set(sub["models"])]
    for views, v in sub.groupby("views", sort=True):
        n_model = v["model"].nunique()
        n_loss = v["loss"].nunique()
        fig = new_figure(max(4.5, 1.3 * n_loss + 2.5) * len(models_cols),
                         max(2.6, 0.6 * n_model + 1.6) * len(metrics), dpi)
        axes = np.atleast_2d(fig.subplots(len(metrics), len(models_cols), squeeze=False))
        for i, metric in enumerate(metrics):
            vm = v[v["metric"] == metric]
            vmin, vmax = vm["mean"].min(), vm["mean"].max()
            if not np.isfinite(vmin) or vmin == vmax:
                vmin, vmax = (vmin - 0.5, vmax + 0.5) if np.isfinite(vmin) else (0, 1)
            for j, models in enumerate(models_cols):
                _heatmap(axes[i, j], vm[vm["models"] == models], vmin, vmax,
                         j == len(models_cols) - 1, f"{metric_label(metric)}: {models} models")
        fig.suptitle(f"{source} model x loss, views = {views} (mean over seeds ± t-interval)",
                     fontsize=11)
        figures[safe_name(f"heatmap_{views}") + ".png"] = fig
    return figures


def _heatmap(ax: Any, cell: pd.DataFrame, vmin: float, vmax: float, cbar: bool,
             title: str) -> None:
    """model x loss heatmap of ``cell``'s means, each annotated with its half width."""
    grid = cell.pivot_table(index="model", columns="loss", values="mean", dropna=False)
    half = cell.pivot_table(index="model", columns="loss", values="ci_half_width",
                            dropna=False).reindex_like(grid)
    annot = grid.copy().astype(object)
    for r in grid.index:
        for c in grid.columns:
            m_, h_ = grid.loc[r, c], half.loc[r, c]
            annot.loc[r, c] = ("n/a" if pd.isna(m_) else
                               f"{m_:.3f}" + ("" if pd.isna(h_) else f"\n±{h_:.3f}"))
    if grid.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "no data", ha="center", va="center")
        return
    sns.heatmap(grid.astype(float), ax=ax, annot=annot.to_numpy(), fmt="",
                cmap="viridis", vmin=vmin, vmax=vmax, cbar=cbar,
                annot_kws={"fontsize": 8}, linewidths=0.5, linecolor="white")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", rotation=0)


# --------------------------------------------------------------------------- embeddings
def _palette(n: int) -> list[Any]:
    if n <= 10:
        return sns.color_palette("tab10", 10)[:n]
    base = sns.color_palette("tab20", 20) + sns.color_palette("tab20b", 20)
    return [base[i % len(base)] for i in range(n)]


def embedding_scatter(panels: Sequence[dict[str, Any]], legend_max_classes: int = 12,
                      dpi: int = DEFAULT_DPI) -> Figure:
    """Rows of two panels: points coloured by true model (left) and by cluster (right).

    Each panel dict: ``title``, ``xy`` (n x 2), ``names`` (true model per point), ``clusters``
    (cluster id per point, ``-1`` noise, ``-2`` unassigned; or None), ``subtitle``.
    """
    if not panels:
        return placeholder_figure("no embeddings to show", dpi)
    fig = new_figure(12, 4.8 * len(panels), dpi)
    axes = np.atleast_2d(fig.subplots(len(panels), 2, squeeze=False))
    for i, p in enumerate(panels):
        xy = np.asarray(p["xy"], dtype=float)
        _by_true_model(axes[i, 0], xy, p, legend_max_classes)
        _by_cluster(axes[i, 1], xy, p)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def _by_true_model(ax: Any, xy: np.ndarray, p: Mapping[str, Any], legend_max_classes: int
                   ) -> None:
    names = np.asarray(p["names"]).astype(str)
    classes = sorted(set(names.tolist()))
    colors = dict(zip(classes, _palette(len(classes)), strict=True))
    for c in classes:
        sel = names == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=colors[c], label=_short(c, 28, 1),
                   alpha=0.85, linewidths=0)
    ax.set_title(f"{p['title']}\ncoloured by true model ({len(classes)} models)", fontsize=10)
    if 0 < len(classes) <= legend_max_classes:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _by_cluster(ax: Any, xy: np.ndarray, p: Mapping[str, Any]) -> None:
    clusters = p.get("clusters")
    if clusters is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no cluster assignment for this run / method", ha="center",
                va="center", transform=ax.transAxes)
        return
    clusters = np.asarray(clusters, dtype=int)
    ids = sorted(c for c in set(clusters.tolist()) if c >= 0)
    ccol = dict(zip(ids, _palette(len(ids)), strict=True))
    for c in ids:
        sel = clusters == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=ccol[c], alpha=0.85, linewidths=0)
    for value, label, marker in ((NOISE, "noise", "x"), (-2, "unassigned", ".")):
        sel = clusters == value
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color="#b0b0b0", marker=marker,
                       label=f"{label} ({int(sel.sum())})")
    if (clusters < 0).any():
        ax.legend(fontsize=7, loc="best")
    ax.set_title(f"coloured by cluster ({len(ids)} clusters)\n{p.get('subtitle', '')}",
                 fontsize=10)


def cluster_gallery(rows: Sequence[GalleryRow], per_row: int, title: str,
                    dpi: int = DEFAULT_DPI) -> Figure:
    """One row of thumbnails per cluster, each captioned with its true model name."""
    if not rows:
        return placeholder_figure(f"{title}: no cluster large enough to show", dpi)
    aspect = max((img.shape[1] / img.shape[0]) for r in rows for img in r.images) if any(
        r.images for r in rows) else 1.0
    thumb_w = 1.25 * aspect
    height = 2.05 * len(rows) + 1.0
    fig = Figure(figsize=(max(6.0, thumb_w * per_row), height), dpi=dpi)
    grid = fig.add_gridspec(len(rows), per_row, hspace=0.95, wspace=0.08, top=1 - 0.85 / height,
                            bottom=0.03, left=0.01, right=0.99)
    for i, row in enumerate(rows):
        for j in range(per_row):
            ax = fig.add_subplot(grid[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(j < len(row.images))
                spine.set_color("#2ca02c" if row.kind == "pure" else "#d62728")
            if j < len(row.images):
                ax.imshow(row.images[j], interpolation="nearest")
                ax.set_xlabel(_short(row.captions[j], 18, 2), fontsize=7)
            if j == 0:
                ax.set_title(row.title, loc="left", fontsize=9, fontweight="bold",
                             color="#2ca02c" if row.kind == "pure" else "#d62728")
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.15 / height, ha="left", va="top")
    return fig


def confusion_figure(matrix: pd.DataFrame, title: str, dpi: int = DEFAULT_DPI) -> Figure:
    """Row-normalised confusion matrix (rows = true model) with the counts' row sums kept."""
    if matrix.empty:
        return placeholder_figure(f"{title}: empty", dpi)
    counts = matrix.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(matrix)
    size = min(4.0 + 0.32 * n, 22.0)
    fig = new_figure(size + 1.5, size, dpi)
    ax = fig.add_subplot()
    labels = [_short(x, 22, 1) for x in matrix.index]
    sns.heatmap(share, ax=ax, cmap="Blues", vmin=0, vmax=1, square=True,
                xticklabels=[_short(x, 22, 1) for x in matrix.columns], yticklabels=labels,
                annot=counts.astype(int) if n <= 15 else False, fmt="d",
                cbar_kws={"label": "share of the true model's samples"})
    ax.set_xlabel("predicted model (nearest val centroid)")
    ax.set_ylabel("true model")
    ax.tick_params(labelsize=7 if n > 15 else 8)
    ax.set_title(title, fontsize=10)
    return fig


def clip_layers_figure(summary_points: pd.DataFrame, metrics: Sequence[str],
                       dpi: int = DEFAULT_DPI) -> Figure:
    """Metric vs number of trainable layers, one line per component, one panel per metric.

    ``summary_points``: component, trainable_layers, metric, mean, ci_half_width.
    """
    fig = new_figure(5.0 * len(metrics), 3.6, dpi)
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)[0])
    for ax, metric in zip(axes, metrics, strict=True):
        m = summary_points[summary_points["metric"] == metric]
        for component, g in m.groupby("component", sort=True):
            g = g.sort_values("trainable_layers")
            ax.errorbar(g["trainable_layers"], g["mean"],
                        yerr=np.nan_to_num(g["ci_half_width"].to_numpy(dtype=float)),
                        marker="o", capsize=3, label=str(component))
        ax.set_xlabel("trainable layers")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{metric_label(metric)} vs trainable layers", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="component")
    return fig
