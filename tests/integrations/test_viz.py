"""kedro-viz: build the static site, serve it on 127.0.0.1, render it in a real headless Chromium."""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import kedro_cli, make_project_copy

pytestmark = pytest.mark.slow

#: nodes of every model pipeline that must be drawn in the flowchart
NODES = ("parse_raw", "validate_images", "finetune", "cluster_embeddings")
#: test-only page (same origin): turn kedro-viz's first-visit feature tour off, then open the app
PRIME = ('<!doctype html><script>localStorage.setItem("KedroViz", '
         'JSON.stringify({showFeatureHints: false})); location.replace("./");</script>')


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = ("Debian chromium is not installed (apt-get install chromium; .ci/run installs it)")
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}: required in CI")
    pytest.skip(reason)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture
def served_build(tmp_path: Path, tiny_sample: Path) -> Iterator[tuple[str, Path]]:
    """(URL, build folder) of `kedro viz build` of a project copy, served on a free port."""
    project = make_project_copy(tmp_path / "project", tiny_sample)
    result = kedro_cli(project, "viz", "build", timeout=300)
    build = project / "build"
    assert result.returncode == 0 and (build / "index.html").is_file(), (
        result.stdout[-3000:] + result.stderr[-3000:])
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_QuietHandler, directory=str(build)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", build
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no network but 127.0.0.1 (Google Fonts etc. resolve to nothing)."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           "--disable-default-apps", "--disable-extensions", "--disable-sync", "--no-pings",
           "--disable-breakpad", "--disable-crash-reporter", "--mute-audio",
           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
           f"--user-data-dir={profile}", "--window-size=1600,1000",
           "--run-all-compositor-stages-before-draw", "--virtual-time-budget=20000", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOME": str(profile)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_viz_static_site_renders_every_pipeline(served_build, tmp_path: Path) -> None:
    chromium = _chromium()
    url, build = served_build
    assert "heapanalytics" not in (build / "index.html").read_text(), "telemetry injected"
    pipelines = sorted(p.name for p in (build / "api" / "pipelines").iterdir())
    assert {"__default__", "data_engineering", "finetuning", "embeddings",
            "clustering"} <= set(pipelines)

    dom = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", url).stdout
    assert 'class="kedro-pipeline"' in dom, dom[:2000]
    for name in NODES:  # drawn in the flowchart (SVG node group), not only listed
        assert f'data-node-fullname="{name}"' in dom, f"node {name} not rendered"
    for name in pipelines:  # every registered pipeline is offered by the selector
        assert f'title="{name}"' in dom, f"pipeline {name} missing from the selector"

    # one pipeline on its own (?pid=): only its nodes are drawn
    dom_de = _headless(chromium, tmp_path / "profile-pid", "--dump-dom",
                       f"{url}?pid=data_engineering").stdout
    assert 'data-node-fullname="parse_raw"' in dom_de
    assert 'data-node-fullname="finetune"' not in dom_de

    # the whole __default__ flowchart, without the feature tour popup over it
    (build / "_prime.html").write_text(PRIME)
    shot = tmp_path / "viz.png"
    _headless(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", f"{url}_prime.html")
    assert shot.is_file() and shot.stat().st_size > 20_000, "empty screenshot"
    assert _png_size(shot) == (1600, 1000)
