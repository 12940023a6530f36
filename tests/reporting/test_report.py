"""The HTML report from synthetic tables; embedding analyses behind the figures."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from compcars_kedro.datasets.embeddings import EmbeddingSet
from compcars_kedro.reporting import analysis, builders
from compcars_kedro.reporting.report import OPTIONAL_SECTIONS, SECTIONS, render_report
from tests.reporting import (
    FAST_PARAMS,
    SPLIT_SUMMARY,
    clip_layers_table,
    clustering_metrics,
    embedding_set,
    finetuning_config,
    retrieval_metrics,
    training_history,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _report(clip: pd.DataFrame | None = None, params: dict | None = None,
            with_figures: bool = True) -> str:
    p = {**FAST_PARAMS, **(params or {})}
    tables, meta = builders.build_tables(training_history(), retrieval_metrics(),
                                         clustering_metrics(), p)
    payloads = {}
    if with_figures:
        _, payloads["training"] = builders.training_figures(training_history(), p)
        _, _, payloads["comparison"] = builders.comparison_figures(tables["comparison"], p)
    _, _, payloads["clip_layers"] = builders.clip_layers_outputs(clip, p)
    return render_report(tables, payloads, SPLIT_SUMMARY, finetuning_config(),
                         {"reporting": p, "clustering": {"seed": 42}}, p,
                         generated_at="2026-01-01 00:00 UTC")


@pytest.fixture(scope="module")
def page() -> str:
    return _report(clip=clip_layers_table())


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"section {section_id} missing"
    return match.group(1)


def test_report_has_every_section_in_order_with_stable_headings(page: str) -> None:
    ids = re.findall(r'<section id="([a-z0-9-]+)">', page)
    assert ids == [sid for sid, _ in SECTIONS]
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">\n<h2>{title}</h2>' in page
        assert f'href="#{sid}"' in page  # table of contents


def test_clip_layers_section_only_when_a_table_is_given(page: str) -> None:
    clip = _section(page, "clip-layers")
    assert "vision" in clip and "text" in clip and "data:image/png;base64," in clip
    for empty in (None, pd.DataFrame()):
        other = _report(clip=empty, with_figures=False)
        ids = re.findall(r'<section id="([a-z0-9-]+)">', other)
        assert "clip-layers" not in ids and 'href="#clip-layers"' not in other
        assert set(ids) == {sid for sid, _ in SECTIONS} - OPTIONAL_SECTIONS


def test_report_is_self_contained_with_decodable_images(page: str) -> None:
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page and "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # training curves (4 runs) + bars + heatmap + clip layers
    assert len(images) == 4 + 1 + 1 + 1
    assert all(base64.b64decode(i)[:8] == PNG for i in images)


def test_report_states_protocol_numbers_and_parameters(page: str) -> None:
    protocol = _section(page, "protocol")
    for text in ("unseen", "80", "transfer", "Student-t", "hdbscan on pca", "0, 1"):
        assert text in protocol, text
    summary = _section(page, "summary")
    # best configuration by unseen MAP@R: vitb32 / ce (0.2+0.2+0.1 + seeds 0, 0.01 -> 0.505)
    assert "MAP@R (unseen models, finetuned): vitb32 / ce / front+rear = 0.505" in summary
    comparison = _section(page, "comparison")
    # resnet18 fine-tuned unseen ARI over seeds {0.30, 0.31}: 12.706 * 0.00707 / sqrt(2) = 0.0635
    assert "0.305 ± 0.064" in comparison
    params = _section(page, "parameters")
    assert "&quot;clusterer&quot;: &quot;hdbscan&quot;" in params and "clustering" in params


def test_report_escapes_text() -> None:
    page = _report(params={"title": "<script>alert(1)</script>"}, with_figures=False)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_single_run_report_has_no_interval() -> None:
    p = FAST_PARAMS
    keys = {"configs": [("resnet18", "multisimilarity", "front")], "seeds": [3]}
    tables, _ = builders.build_tables(training_history(**keys), retrieval_metrics(**keys),
                                      clustering_metrics(**keys), p)
    assert len(tables["run_summary"]) == 2
    assert tables["comparison"]["ci_half_width"].isna().all()
    html = render_report(tables, {}, SPLIT_SUMMARY, finetuning_config("resnet18",
                         "multisimilarity", "front", 3), {}, p)
    comparison = _section(html, "comparison")
    assert not re.search(r"\d ± \d", comparison)  # no interval from one seed
    assert "<td class=\"txt\">0.430</td>" in comparison  # fine-tuned MAP@R 0.2 + 0.2 + 0.03


def test_report_without_clustering_or_metadata() -> None:
    tables, meta = builders.build_tables(training_history(), retrieval_metrics(), pd.DataFrame(),
                                         FAST_PARAMS)
    assert tables["clustering_methods"].empty and meta["notes"]
    assert set(tables["metrics_long"]["family"]) == {"retrieval"}
    page = render_report(tables, {}, None, None, None, FAST_PARAMS)
    assert re.findall(r'<section id="([a-z0-9-]+)">', page) == [
        sid for sid, _ in SECTIONS if sid not in OPTIONAL_SECTIONS]
    assert "no clustering results" in _section(page, "notes")
    assert "no split summary given" in _section(page, "protocol")


# --------------------------------------------------------------------------- analyses
def test_cluster_composition_and_gallery_choice() -> None:
    clusters = pd.Series([0, 0, 0, 1, 1, 2, 2, 2, 2, -1], index=[f"s{i}" for i in range(10)])
    names = pd.Series(list("AAABBCCCDX"), index=clusters.index)
    comp = analysis.cluster_composition(clusters, names)
    assert list(comp["cluster"]) == [2, 0, 1]  # by size, noise excluded
    c2 = comp.iloc[0]
    assert c2["size"] == 4 and c2["n_models"] == 2 and c2["dominant"] == "C"
    assert c2["purity"] == pytest.approx(0.75)
    pure, mixed = analysis.pick_gallery_clusters(comp, n_pure=1, n_mixed=3, min_size=2)
    assert list(pure["cluster"]) == [0] and list(mixed["cluster"]) == [2]


def test_diverse_members_round_robin() -> None:
    members = pd.DataFrame({"sample_id": [f"s{i}" for i in range(7)],
                            "name": ["A"] * 5 + ["B", "C"]})
    picked = analysis.diverse_members(members, 4)
    assert list(picked["name"]) == ["A", "B", "C", "A"]


def test_class_names_disambiguate_shared_names() -> None:
    index = pd.DataFrame({"class_name": ["Audi A4", "Audi A4", "BMW X5"], "class_id": [1, 2, 3]})
    assert list(analysis.class_names(index)) == ["Audi A4 #1", "Audi A4 #2", "BMW X5"]


def test_nearest_centroid_confusion() -> None:
    names = ["Audi A4", "BMW X5", "Kia Rio"]
    ref = embedding_set(names, "val", "finetuned", seed=1)
    query = embedding_set(names, "test", "finetuned", seed=1)
    out = analysis.nearest_centroid_confusion(ref, query)
    assert out.accuracy == pytest.approx(1.0) and out.n_test == 15
    assert np.array_equal(out.matrix.to_numpy(), np.diag([5, 5, 5]))
    # flip one query vector to another class' centroid -> one confusion
    vectors = query.vectors.copy()
    vectors[0] = ref.vectors[ref.index["class_name"].to_numpy() == "Kia Rio"].mean(axis=0)
    out = analysis.nearest_centroid_confusion(ref, EmbeddingSet(vectors, query.index),
                                              max_classes=2)
    assert out.accuracy == pytest.approx(14 / 15)
    assert out.shown_classes == 2 and "2 of 3" in out.note
    assert out.matrix.loc["Audi A4", "Kia Rio"] == 1


def test_project_2d_falls_back_to_pca_on_few_points() -> None:
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    xy, used = analysis.project_2d(x, "umap")
    assert xy.shape == (6, 2) and used == "pca"
    xy, used = analysis.project_2d(x[:2], "tsne")
    assert xy.shape == (2, 2) and used == "raw"
