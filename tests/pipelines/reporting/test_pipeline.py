"""reporting pipeline through a Kedro runner: synthetic inputs in memory, real output datasets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from compcars_kedro.pipelines.reporting import create_pipeline
from compcars_kedro.pipelines.reporting.pipeline import create_namespaced_pipeline
from compcars_kedro.reporting.params import reporting_params
from compcars_kedro.reporting.report import SECTIONS
from tests.reporting import clip_layers_table, finetuning_config, pipeline_inputs

ROOT = Path(__file__).resolve().parents[3]
CATALOG_FILE = ROOT / "conf" / "base" / "catalog_reporting.yml"
PNG = b"\x89PNG\r\n\x1a\n"


def _output_config(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """catalog_reporting.yml with every filepath moved under ``tmp_path``."""
    conf = yaml.safe_load(CATALOG_FILE.read_text())
    conf = {k: v for k, v in conf.items() if not k.startswith("_")}
    for entry in conf.values():
        if "filepath" in entry:
            entry["filepath"] = str(tmp_path / entry["filepath"])
    return conf


def _catalog(tmp_path: Path, inputs: dict[str, Any]) -> DataCatalog:
    catalog = DataCatalog.from_config(_output_config(tmp_path))
    for name, value in inputs.items():
        catalog[name] = MemoryDataset(value)
    return catalog


def _versions(folder: Path) -> list[Path]:
    assert folder.is_dir(), folder
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _latest(tmp_path: Path, rel: str) -> Path:
    base = tmp_path / "data" / "08_reporting" / rel
    versions = _versions(base)
    assert len(versions) == 1, versions
    return versions[0] / base.name


def _project_catalog() -> tuple[DataCatalog, dict[str, Any]]:
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base",
                               default_run_env="local")
    return DataCatalog.from_config(loader["catalog"]), loader["parameters"]


def test_catalog_and_parameters_cover_the_pipeline() -> None:
    catalog, parameters = _project_catalog()
    pipeline = create_pipeline()
    for name in pipeline.inputs() - {"parameters", "params:reporting"}:
        assert catalog.get(name) is not None, f"pipeline input {name} is in no catalog"
    for name in pipeline.outputs() | {"report_table_comparison_by_configuration"}:
        dataset = catalog.get(name)
        if name.startswith("report_images_"):
            assert dataset is None, name  # payloads stay in memory
            continue
        assert dataset is not None, name
        versioned = getattr(dataset, "_version", None) is not None
        assert versioned is (name != "report_html"), name
    assert str(catalog.get("report_html")._filepath) == "data/08_reporting/report.html"
    assert str(catalog.get("report_figures_training_curves")._filepath) == \
        "data/08_reporting/figures/training_curves"
    params = reporting_params(parameters["reporting"])
    assert params.headline.selection_mode == "transfer"


def test_namespaced_pipeline_maps_inputs_and_writes_under_its_folder() -> None:
    catalog, _ = _project_catalog()
    ns = create_namespaced_pipeline("study", {"training_history": "study_training_history",
                                              "finetuning_config": "v1_config"})
    assert {"study_training_history", "v1_config", "crops", "params:reporting",
            "parameters"} <= ns.inputs()
    assert "training_history" not in ns.inputs()
    assert "study.report_html" in ns.outputs()
    assert str(catalog.get("study.report_html")._filepath) == \
        "data/08_reporting/study_report/report.html"
    table = catalog.get("study.report_table_run_summary")
    assert str(table._filepath) == "data/08_reporting/study_report/tables/run_summary.csv"
    assert catalog.get("study.report_images_training") is None
    with pytest.raises(KeyError, match="not inputs"):
        create_namespaced_pipeline("study", {"no_such_input": "x"})


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The whole reporting pipeline on 2 configurations x 2 seeds; the catalog's run is ce."""
    tmp_path = tmp_path_factory.mktemp("reporting")
    inputs = pipeline_inputs(clip_layers=clip_layers_table(), raw_root=tmp_path / "raw")
    SequentialRunner().run(create_pipeline(), _catalog(tmp_path, inputs))
    return tmp_path, inputs


def test_pipeline_writes_tables_figures_and_report(many_runs) -> None:
    tmp_path, _ = many_runs
    summary = pd.read_csv(_latest(tmp_path, "tables/run_summary.csv"))
    assert len(summary) == 2 * 2 * 2  # configs x seeds x sources
    comparison = pd.read_csv(_latest(tmp_path, "tables/comparison_by_configuration.csv"))
    assert set(comparison["n_seeds"]) == {2}
    best = pd.read_csv(_latest(tmp_path, "tables/best_configuration.csv"))
    assert set(best["model"]) == {"resnet18"}  # best val MAP@R (vitb32 is better on unseen)
    claims = pd.read_csv(_latest(tmp_path, "tables/claims.csv"))
    assert len(claims) == 3 and claims["n"].isna().all()  # no claim testable on this grid
    clip_claims = pd.read_csv(_latest(tmp_path, "tables/clip_layers_claims.csv"))
    assert "CLIP vision tower vs text tower" in set(clip_claims["claim"])
    clip = pd.read_csv(_latest(tmp_path, "tables/clip_layers_summary.csv"))
    assert set(clip["component"]) == {"vision", "text"}
    for rel in ("figures/baseline_vs_finetuned.png", "figures/embedding_maps.png",
                "figures/confusion_matrix.png", "figures/clip_layers.png"):
        assert _latest(tmp_path, rel).read_bytes()[:8] == PNG, rel
    curves = sorted(p.name for p in _latest(tmp_path, "figures/training_curves").iterdir())
    assert curves == ["resnet18-multisimilarity-front+rear_seed0.png",
                      "resnet18-multisimilarity-front+rear_seed1.png",
                      "vitb32-ce-front+rear_seed0.png", "vitb32-ce-front+rear_seed1.png"]
    galleries = [p.name for p in _latest(tmp_path, "figures/cluster_galleries").iterdir()]
    assert galleries == ["gallery_finetuned_unseen.png"]
    assert [p.name for p in _latest(tmp_path, "figures/heatmaps").iterdir()] == [
        "heatmap_front+rear.png"]


def test_report_html_has_every_section_and_embedded_figures(many_runs) -> None:
    tmp_path, _ = many_runs
    report = tmp_path / "data" / "08_reporting" / "report.html"
    assert report.is_file()  # stable path, not versioned
    page = report.read_text(encoding="utf-8")
    assert re.findall(r'<section id="([a-z0-9-]+)">', page) == [sid for sid, _ in SECTIONS]
    confusion = re.search(r'<section id="confusion-matrix">(.*?)</section>', page, re.S).group(1)
    assert "data:image/png;base64," in confusion and "nearest" in confusion
    galleries = re.search(r'<section id="cluster-galleries">(.*?)</section>', page, re.S).group(1)
    assert galleries.count("data:image/png;base64,") == 1
    assert "mixed" in galleries and "Seat Ibiza" not in galleries  # names live inside the PNG
    assert "vitb32-ce-front+rear (seed 0)" in page  # the run of the embedding figures
    data = re.search(r'<section id="data">(.*?)</section>', page, re.S).group(1)
    assert "generated synthetic sample" in data
    matched = re.search(r'<section id="matched">(.*?)</section>', page, re.S).group(1)
    assert 'id="matched-table"' in matched and "0.51 ± 0.01" in matched  # seen ARI over draws
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_sliced_pipeline_single_run_without_clip_or_ce(tmp_path: Path) -> None:
    """Only the tables and comparison figures, for ONE metric-learning run."""
    config = finetuning_config("resnet18", "multisimilarity", "front", 7)
    inputs = pipeline_inputs(config, configs=[("resnet18", "multisimilarity", "front")],
                             seeds=[7])
    pipeline = create_pipeline().only_nodes("build_report_tables", "plot_metric_comparisons")
    needed = {k: v for k, v in inputs.items() if k in pipeline.inputs()}
    assert set(needed) == {"training_history", "retrieval_metrics", "clustering_metrics",
                           "params:reporting"}
    out = SequentialRunner().run(pipeline, _catalog(tmp_path, needed))
    assert "report_images_comparison" in out  # the in-memory payload is a free output
    payload = out["report_images_comparison"].load()
    assert len(payload["bars"]["figures"]) == 1
    assert payload["heatmaps"]["figures"] == []  # one model x one loss: no 1 x 1 heatmap
    comparison = pd.read_csv(_latest(tmp_path, "tables/comparison_by_configuration.csv"))
    assert comparison["n_seeds"].eq(1).all() and comparison["ci_half_width"].isna().all()
    improvement = pd.read_csv(_latest(tmp_path, "tables/improvement.csv"))
    row = improvement[(improvement["metric"] == "mean_average_precision_at_r")
                      & (improvement["models"] == "unseen")].iloc[0]
    # synthetic values: baseline 0.2 + 0.07, fine-tuned 0.4 + 0.07 (seed 7 adds 0.01 * 7)
    assert row["abs"] == pytest.approx(0.2) and row["pct"] == pytest.approx(100 * 0.2 / 0.27)
    assert _latest(tmp_path, "figures/baseline_vs_finetuned.png").read_bytes()[:8] == PNG


def test_grid_report_reads_the_grid_tables_and_the_raw_source() -> None:
    from compcars_kedro.pipelines.grid_report import create_pipeline as grid_report

    catalog, _ = _project_catalog()
    pipe = grid_report()
    inputs = pipe.inputs() - {"parameters", "params:reporting"}
    assert {"grid_retrieval_metrics", "grid_clustering_metrics", "grid_training_history",
            "compcars_raw", "split_summary", "grid_matched_metrics"} <= inputs
    assert "matched_metrics" not in inputs  # never the default run's table
    for name in inputs:
        assert catalog.get(name) is not None, f"grid_report input {name} is in no catalog"
    assert str(catalog.get("grid.report_html")._filepath) == \
        "data/08_reporting/grid_report/report.html"
    assert "grid.report_table_claims" in pipe.all_outputs()
