"""Stand-in pretrained weights in the real formats, and the compcars env's parameters.

* torchvision: randomly initialised ``resnet50`` / ``vit_b_32`` state dicts saved under the
  weights enum's real cache file name, ``<TORCH_HOME>/hub/checkpoints/<basename of the url>``,
  in a temporary ``TORCH_HOME`` (exactly where ``make weights`` / torchvision put them);
* CLIP: a ``CLIPModel`` with the real ViT-B/32 configuration (``CLIPConfig()`` defaults), random
  init, ``save_pretrained`` into a folder, plus a tiny byte-level CLIP tokenizer (``vocab.json``
  + ``merges.txt``, no merges) made locally. Nothing is downloaded.

``COMPCARS_REALCONFIG_DEVICE=cuda`` (benchmarks/gpu_check.sh) runs the same tests on the GPU with
the env's bf16 / channels_last and DataLoader workers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import ROOT, TINY_DE_PARAMS

DEVICE = os.environ.get("COMPCARS_REALCONFIG_DEVICE", "cpu")
NUM_WORKERS = int(os.environ.get("COMPCARS_REALCONFIG_WORKERS", "2" if DEVICE != "cpu" else "0"))
TORCHVISION = {"resnet50": "resnet50", "vitb32": "vit_b_32"}


def compcars_parameters(runtime_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--env compcars`` parameters through the project's own config loader."""
    from compcars_kedro import settings

    args = dict(settings.CONFIG_LOADER_ARGS)
    args.pop("default_run_env")
    loader = settings.CONFIG_LOADER_CLASS(str(ROOT / "conf"), env="compcars",
                                          runtime_params=runtime_params, **args)
    return dict(loader["parameters"])


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (the base of CLIP's vocabulary)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_tiny_clip_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer with the byte alphabet only (514 tokens, no merges)."""
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def save_torchvision_standins(torch_home: Path, weights: dict[str, str]
                              ) -> dict[str, tuple[str, torch.Tensor]]:
    """Random-init state dicts of ``{model: enum name}`` (project model names) saved where
    torchvision caches the real ones; returns a reference tensor per model."""
    import torchvision
    from torchvision.models import get_model_weights

    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    reference = {}
    torch.manual_seed(0)
    for model, enum_name in weights.items():
        tv_name = TORCHVISION[model]
        entry = get_model_weights(tv_name)[enum_name]
        state = torchvision.models.get_model(tv_name, weights=None).state_dict()
        torch.save(state, cache / os.path.basename(entry.url))
        key = "conv1.weight" if model == "resnet50" else "conv_proj.weight"
        reference[model] = (key, state[key].clone())
    return reference


# package scope: TORCH_HOME is restored when the real-config tests end, so later tests
# (e.g. "weights not in the local cache") see the project cache again
@pytest.fixture(scope="package")
def standin_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Stand-ins for every weight the compcars env names (see the module docstring).

    Returns ``{"torch_home", "clip_dir", "reference": {model: (param name, tensor)}}``; the
    reference tensors prove that the built model holds the stand-in's values.
    """
    from transformers import CLIPConfig, CLIPModel

    params = compcars_parameters()
    root = tmp_path_factory.mktemp("weights")
    torch_home = root / "torch"
    reference = save_torchvision_standins(
        torch_home, {m: params["models"][m]["weights"] for m in TORCHVISION})
    clip_dir = root / "clip-vit-base-patch32"
    clip = CLIPModel(CLIPConfig())  # the real ViT-B/32 architecture, random init
    clip.save_pretrained(clip_dir)
    write_tiny_clip_tokenizer(clip_dir)
    reference["clip"] = ("visual_projection.weight",
                         clip.state_dict()["visual_projection.weight"].clone())
    del clip
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    yield {"torch_home": torch_home, "clip_dir": clip_dir, "reference": reference}
    if saved is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = saved
    shutil.rmtree(root, ignore_errors=True)  # ~1 GB of real-size weights


@pytest.fixture(scope="session")
def crops_224(tiny_sample: Path):
    """The tiny sample through the real data_engineering nodes with the compcars env's
    data_engineering parameters (224 px crops, its margin, resize mode, dedup), except the class
    filter and split fractions, which are sized for the tiny sample (TINY_DE_PARAMS: the
    compcars minimum of 5 images per class and view keeps too few classes of it)."""
    from compcars_kedro.data.raw import detect_source
    from compcars_kedro.pipelines.data_engineering.nodes import (
        crop_images,
        parse_raw,
        split_dataset,
        validate_images,
    )

    de = compcars_parameters()["data_engineering"]
    de = {**de, **{k: v for k, v in TINY_DE_PARAMS.items() if k != "crop"},
          "crop": {**de["crop"], "num_workers": 1}}
    raw = detect_source(tiny_sample)
    valid, _, _ = validate_images(parse_raw(raw), raw, de)
    images, pairs, _, _ = split_dataset(valid, de)
    crops = crop_images(images, raw, de)
    assert crops.images.shape[1:] == (224, 224, 3)
    return crops, pairs
