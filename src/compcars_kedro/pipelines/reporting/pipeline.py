"""reporting pipeline: tables (CSV), figures (PNG) and report.html from the results tables.

Works for one run (the default ``kedro run``) and for many: the tables may hold several runs
(concatenated by the experiment grid) and are aggregated over seeds per configuration.
Embedding-level figures (maps, galleries, confusion) use the run of ``finetuning_config``.
``clip_layers_table`` is optional: an empty/None table omits the CLIP layers section.

Dataset names: ``report_table_<file>`` (CSV), ``report_figure_<file>`` (one PNG),
``report_figures_<folder>`` (a folder of PNGs), ``report_html``; the catalog patterns in
catalog_reporting.yml map them to data/08_reporting/{tables,figures}/. ``report_images_*``
(base64 PNGs for the HTML) stay in memory. :func:`create_namespaced_pipeline` reuses the same
nodes on other tables (e.g. a study's concatenated results).
"""

from kedro.pipeline import Pipeline, node, pipeline

from compcars_kedro.names import FINETUNED, REPORTED_SPLITS, SOURCES, TEST, VAL, embeddings_name
from compcars_kedro.pipelines.reporting.nodes import (
    TABLE_NAMES,
    build_html_report,
    build_report_tables,
    describe_report_data,
    plot_cluster_galleries,
    plot_confusion_matrix,
    plot_embedding_maps,
    plot_metric_comparisons,
    plot_training_curves,
    summarise_clip_layers,
)

#: file name (without .csv) of each table of ``build_report_tables``
TABLE_FILES = {name: name for name in TABLE_NAMES} | {
    "comparison": "comparison_by_configuration", "factor_comparison": "comparison_by_factor"}
#: catalog names of the CSV tables, in the output order of ``build_report_tables``
TABLE_OUTPUTS = [f"report_table_{TABLE_FILES[name]}" for name in TABLE_NAMES]
TABLE = dict(zip(TABLE_NAMES, TABLE_OUTPUTS, strict=True))
#: the embedding inputs of the figure nodes (argument ``<source>_<split>``) -> dataset
EMBEDDINGS = {f"{s}_{p}": embeddings_name(s, p) for s in SOURCES for p in REPORTED_SPLITS}
P = "params:reporting"
SHARED = {P, "parameters"}


def create_pipeline(**kwargs) -> Pipeline:
    embedding_inputs = {**EMBEDDINGS, "cluster_assignments": "cluster_assignments",
                        "clustering_metrics": "clustering_metrics",
                        "finetuning_config": "finetuning_config", "parameters": P}
    return Pipeline([
        node(build_report_tables,
             ["training_history", "retrieval_metrics", "clustering_metrics", P],
             TABLE_OUTPUTS, name="build_report_tables"),
        node(plot_training_curves, ["training_history", P],
             ["report_figures_training_curves", "report_images_training"],
             name="plot_training_curves"),
        node(plot_metric_comparisons, [TABLE["comparison"], P],
             ["report_figure_baseline_vs_finetuned", "report_figures_heatmaps",
              "report_images_comparison"], name="plot_metric_comparisons"),
        node(plot_embedding_maps, embedding_inputs,
             ["report_figure_embedding_maps", "report_images_scatter"],
             name="plot_embedding_maps"),
        node(plot_cluster_galleries, {"crops": "crops", **embedding_inputs},
             ["report_figures_cluster_galleries", "report_images_galleries"],
             name="plot_cluster_galleries"),
        node(plot_confusion_matrix,
             [embeddings_name(FINETUNED, VAL), embeddings_name(FINETUNED, TEST),
              "finetuning_config", P],
             ["report_figure_confusion_matrix", "report_images_confusion"],
             name="plot_confusion_matrix"),
        node(summarise_clip_layers, ["clip_layers_table", P],
             ["report_table_clip_layers_summary", "report_table_clip_layers_claims",
              "report_figure_clip_layers", "report_images_clip_layers"],
             name="summarise_clip_layers"),
        node(describe_report_data,
             ["compcars_raw", "split_summary", "finetuning_config", TABLE["run_summary"],
              "parameters"], "report_data_info", name="describe_report_data"),
        node(build_html_report,
             {"run_summary": TABLE["run_summary"], "comparison": TABLE["comparison"],
              "factor_comparison": TABLE["factor_comparison"],
              "improvement": TABLE["improvement"],
              "best_configuration": TABLE["best_configuration"],
              "claims": TABLE["claims"],
              "clustering_methods": TABLE["clustering_methods"],
              "metrics_long": TABLE["metrics_long"],
              "data_info": "report_data_info", "matched_metrics": "matched_metrics",
              "training_images": "report_images_training",
              "comparison_images": "report_images_comparison",
              "scatter_images": "report_images_scatter",
              "gallery_images": "report_images_galleries",
              "confusion_images": "report_images_confusion",
              "clip_layers_images": "report_images_clip_layers",
              "split_summary": "split_summary", "finetuning_config": "finetuning_config",
              "all_parameters": "parameters", "parameters": P},
             "report_html", name="build_html_report"),
    ], tags=["reporting"])


def create_namespaced_pipeline(namespace: str, inputs: dict[str, str] | None = None) -> Pipeline:
    """The reporting pipeline under ``namespace``, reading the datasets mapped in ``inputs``.

    Example (experiment grid, embedding figures of variant ``v``)::

        create_namespaced_pipeline("grid", {
            "training_history": "grid_training_history",
            "retrieval_metrics": "grid_retrieval_metrics",
            "clustering_metrics": "grid_clustering_metrics",
            "finetuning_config": namespaced("config", v),
            "cluster_assignments": namespaced("cluster_assignments", v),
            **{name: namespaced(name, v) for name in embedding_names()},
        })

    Unmapped inputs keep their names (``crops``, ``split_summary``, ``clip_layers_table`` ...);
    ``params:reporting`` and ``parameters`` are shared. Outputs become ``<namespace>.report_*``,
    written under ``data/08_reporting/<namespace>_report/`` by the catalog patterns.
    """
    base = create_pipeline()
    free = set(base.inputs()) - SHARED
    unknown = set(inputs or {}) - free
    if unknown:
        raise KeyError(f"not inputs of the reporting pipeline: {sorted(unknown)}")
    mapping = {name: (inputs or {}).get(name, name) for name in free}
    return pipeline(base, namespace=namespace, inputs=mapping, parameters=SHARED)
