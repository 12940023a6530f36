"""report.html in a real headless Chromium at a 1400 px viewport: the answer comes first and no
table makes the page wider than the viewport (wide tables scroll inside their section)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from compcars_kedro.reporting import builders
from compcars_kedro.reporting.report import SECTIONS, render_report
from tests.integrations.test_viz import _chromium, _headless
from tests.reporting import (
    FAST_PARAMS,
    SPLIT_SUMMARY,
    clip_layers_table,
    clustering_metrics,
    finetuning_config,
    retrieval_metrics,
    training_history,
)

VIEWPORT = 1400
#: measured in the page after layout; written into the DOM so --dump-dom returns it
PROBE = """<script>
const r = {width: document.documentElement.scrollWidth,
  sections: [...document.querySelectorAll('section')].map(s => s.id),
  firstTop: document.querySelector('section').getBoundingClientRect().top,
  tables: [...document.querySelectorAll('table')].map(t => {
    const box = t.closest('.table-wrap') || t;
    const b = box.getBoundingClientRect();
    return {id: t.closest('section').id, right: b.right, width: b.width};
  })};
const pre = document.createElement('pre'); pre.id = 'probe';
pre.textContent = JSON.stringify(r); document.body.appendChild(pre);
</script>"""


def _measure(page: str, tmp_path: Path, name: str) -> dict:
    chromium = _chromium()
    path = tmp_path / f"{name}.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _headless(chromium, tmp_path / f"profile-{name}", f"--window-size={VIEWPORT},900",
                    "--dump-dom", path.as_uri()).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match, dom[-2000:]
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _page(configs=None, seeds=None, clip=None) -> str:
    keys = {k: v for k, v in (("configs", configs), ("seeds", seeds)) if v is not None}
    p = FAST_PARAMS
    tables, _ = builders.build_tables(training_history(**keys), retrieval_metrics(**keys),
                                      clustering_metrics(**keys), p)
    payloads = {}
    _, payloads["training"] = builders.training_figures(training_history(**keys), p)
    _, _, payloads["comparison"] = builders.comparison_figures(tables["comparison"], p)
    _, _, payloads["clip_layers"] = builders.clip_layers_outputs(clip, p)
    return render_report(tables, payloads, SPLIT_SUMMARY, finetuning_config(),
                         {"reporting": p}, p, data_info={"raw_path": "data/01_raw/x" * 30,
                                                        "kind_text": "generated sample"})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grid", "single"])
def test_report_fits_a_1400px_viewport_and_opens_with_the_answer(tmp_path: Path, kind: str) -> None:
    page = (_page(clip=clip_layers_table()) if kind == "grid" else
            _page(configs=[("resnet18", "multisimilarity", "front")], seeds=[0]))
    r = _measure(page, tmp_path, kind)
    assert r["sections"][0] == "answer" == SECTIONS[0][0]
    assert r["sections"][1] == "data"
    assert r["firstTop"] < 900, "the answer is not on the first screen"
    assert r["tables"] and r["tables"][0]["id"] == "answer"  # the headline table comes first
    assert r["width"] <= VIEWPORT, f"page is {r['width']} px wide"
    too_wide = [t for t in r["tables"] if t["right"] > VIEWPORT or t["width"] > VIEWPORT]
    assert not too_wide, too_wide
