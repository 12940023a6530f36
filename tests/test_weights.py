"""``make weights`` (compcars_kedro.weights): downloads with the libraries' own downloaders.

Nothing leaves the machine: a local HTTP server on 127.0.0.1 plays download.pytorch.org (the
weights enum's url is pointed at it) and the Hugging Face Hub (``HF_ENDPOINT``).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from compcars_kedro import weights as cli
from compcars_kedro.params import check_weights_available

REPO, SHA = "org/tiny-clip", "0123456789abcdef0123456789abcdef01234567"


class _Hub(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}      # torchvision: /models/<name>
    repo: dict[str, bytes] = {}       # Hugging Face repo files
    requests: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body: bytes, content_type: str, extra: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        path = self.path.split("?")[0]
        self.requests.append(f"{self.command} {path}")
        if path.startswith("/models/") and path[len("/models/"):] in self.files:
            return self._send(self.files[path[len("/models/"):]], "application/octet-stream",
                              head=head)
        if path.startswith(f"/api/models/{REPO}/tree/"):  # list_repo_tree (newer clients)
            tree = [{"type": "file", "path": f, "size": len(b),
                     "oid": hashlib.sha1(b).hexdigest()} for f, b in sorted(self.repo.items())]
            return self._send(json.dumps(tree).encode(), "application/json", head=head)
        if path.startswith(f"/api/models/{REPO}"):
            info = {"id": REPO, "modelId": REPO, "sha": SHA, "private": False,
                    "siblings": [{"rfilename": f} for f in sorted(self.repo)]}
            return self._send(json.dumps(info).encode(), "application/json", head=head)
        prefix = f"/{REPO}/resolve/"
        if path.startswith(prefix):
            name = path[len(prefix):].split("/", 1)[1]
            if name in self.repo:
                body = self.repo[name]
                return self._send(body, "application/octet-stream", {
                    "X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'},
                    head=head)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)


@pytest.fixture
def hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hub.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _state_dict_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.arange(6.0).reshape(1, 1, 2, 3)}, buf)
    return buf.getvalue()


def test_lists_what_the_compcars_env_names() -> None:
    items = cli.weights_to_fetch(cli.env_parameters("compcars"))
    assert {(i.key, i.kind, i.name) for i in items} == {
        ("models.resnet50.weights", "torchvision", "IMAGENET1K_V2"),
        ("models.resnet18.weights", "torchvision", "IMAGENET1K_V1"),
        ("models.vitb32.weights", "torchvision", "IMAGENET1K_V1"),
        ("models.clip.weights", "hf", "openai/clip-vit-base-patch32"),
    }
    assert cli.weights_to_fetch(cli.env_parameters("local")) == []  # the sample: random init
    assert cli.main(["--env", "compcars", "--dry-run"]) == 0


def test_downloads_torchvision_and_hugging_face_weights_from_a_local_server(
        hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet50_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as in every run: the command lifts it itself
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    data = _state_dict_bytes()
    # torch.hub checks the SHA-256 prefix in the file name (check_hash=True), like the real ones
    name = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    _Hub.files = {name: data}
    entry = ResNet50_Weights.IMAGENET1K_V2
    monkeypatch.setattr(entry.value, "url", f"{hub}/models/{name}")
    from transformers import CLIPConfig

    config = CLIPConfig().to_dict()
    from safetensors.torch import save

    _Hub.repo = {"config.json": json.dumps(config).encode(),
                 "model.safetensors": save({"logit_scale": torch.tensor(2.6592)}),
                 "pytorch_model.bin": b"never downloaded (pickle)"}

    with pytest.raises(ValueError, match="make weights"):
        check_weights_available("resnet50", "IMAGENET1K_V2")
    with pytest.raises(ValueError, match="make weights"):
        check_weights_available("clip", REPO)
    items = [cli.WeightsItem("models.resnet50.weights", "torchvision", "resnet50", "IMAGENET1K_V2"),
             cli.WeightsItem("models.clip.weights", "hf", None, REPO)]
    paths = cli.fetch(items)

    cached = tmp_path / "torch" / "hub" / "checkpoints" / name
    assert paths[0] == cached and cached.read_bytes() == data
    assert (paths[1] / "model.safetensors").is_file() and (paths[1] / "config.json").is_file()
    assert not (paths[1] / "pytorch_model.bin").exists()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hf_constants.HF_HUB_OFFLINE  # restored
    check_weights_available("resnet50", "IMAGENET1K_V2")  # now offline-ready
    check_weights_available("clip", REPO)
    assert any(r.startswith("GET /models/") for r in _Hub.requests)
    cli.fetch(items[:1])  # already cached: nothing downloaded again
    assert sum(r.startswith("GET /models/") for r in _Hub.requests) == 1


def test_download_errors_name_the_parameter(hub: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet50_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _Hub.files = {}
    monkeypatch.setattr(ResNet50_Weights.IMAGENET1K_V2.value, "url",
                        f"{hub}/models/resnet50-deadbeef.pth")
    with pytest.raises(RuntimeError, match=r"models\.resnet50\.weights='IMAGENET1K_V2': "
                                           "download failed"):
        cli.fetch([cli.WeightsItem("models.resnet50.weights", "torchvision", "resnet50",
                                   "IMAGENET1K_V2")])
