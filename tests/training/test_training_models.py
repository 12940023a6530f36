"""Models: fusion, heads, param groups, weights loading, CLIP phases, tokenizer pooling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from compcars_kedro.training import (
    ModelConfig,
    WeightsNotAvailableError,
    build_loss,
    build_model,
    build_prompt,
    param_groups,
)
from compcars_kedro.training.clip import apply_clip_phase, clip_tower
from compcars_kedro.training.config import ClipOptions
from compcars_kedro.training.losses import LossConfig
from compcars_kedro.training.tokenizer import BPETokenizer
from compcars_kedro.training.toy import TINY_ARCH, toy_prompt_meta

VIT = {"name": "vitb32", "image_size": 32, "arch": TINY_ARCH["vitb32"]}
CLIP = {"name": "clip", "image_size": 32, "arch": TINY_ARCH["clip"]}



def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("views", [["front"], ["front", "rear"]])
def test_fusion_is_concatenation_and_embed_normalised(views: list[str]) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**VIT, views=views, head="metric"), num_classes=3).eval()
    v = len(views)
    x = torch.rand(4, v, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        per_view = [
            model.backbone((x[:, i] - model.pixel_mean) / model.pixel_std) for i in range(v)
        ]
        fused = torch.cat(per_view, dim=1)
        assert out["view_features"].shape == (4, v, 32)
        assert torch.allclose(out["view_features"].flatten(1), fused, atol=1e-6)
        emb = model.embed(x)
    assert emb.shape == (4, v * 32) and model.embedding_dim == v * 32
    assert torch.allclose(emb, F.normalize(fused, dim=-1), atol=1e-5)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert out["logits"] is None


def test_projection_and_classification_heads() -> None:
    x = torch.rand(2, 2, 3, 32, 32)
    proj = build_model(ModelConfig(**VIT, views=["front", "rear"], embedding_dim=8), 5).eval()
    with torch.no_grad():
        emb = proj.embed(x)
    assert emb.shape == (2, 8) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    cls = build_model(ModelConfig(**VIT, views=["front", "rear"], head="classification"), 5).eval()
    with torch.no_grad():
        out = cls(x)
    assert out["logits"].shape == (2, 5)
    assert out["embedding"].shape == (2, 64)
    assert torch.allclose(
        out["embedding"], F.normalize(out["view_features"].flatten(1), dim=-1), atol=1e-5
    )


def test_param_groups_no_decay_and_loss_params() -> None:
    model = build_model(ModelConfig(**VIT, embedding_dim=8), 3)
    loss = build_loss(LossConfig(name="arcface"), num_classes=3, embedding_size=8)
    groups = param_groups(model, loss, lr_backbone=1e-4, lr_head=1e-3, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    ids = {k: {id(p) for p in g["params"]} for k, g in by_name.items()}
    named = dict(model.named_parameters())
    assert id(named["backbone.net.encoder.pos_embedding"]) in ids["backbone_no_decay"]
    assert id(named["backbone.net.class_token"]) in ids["backbone_no_decay"]
    assert (
        id(named["backbone.net.encoder.layers.encoder_layer_0.ln_1.weight"])
        in ids["backbone_no_decay"]
    )
    assert id(named["backbone.net.conv_proj.weight"]) in ids["backbone"]
    assert id(named["projection.weight"]) in ids["head"]
    assert id(named["projection.bias"]) in ids["head_no_decay"]
    assert id(loss.loss.W) in ids["head"]
    assert by_name["head"]["lr"] == 1e-3 and by_name["backbone"]["lr"] == 1e-4
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0
    n_all = sum(1 for _ in model.parameters()) + 1
    assert sum(len(g["params"]) for g in groups) == n_all


# --------------------------------------------------------------------------- weights


def test_weights_from_safetensors_and_pt(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_model(ModelConfig(**VIT), 3)
    f = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.net.state_dict().items()}, str(f))
    loaded = build_model(ModelConfig(**VIT, weights=str(f)), 3)
    assert _same_state(src.backbone, loaded.backbone)

    # a full EmbeddingModel state dict as .pt (keys "backbone.net.*", head keys ignored)
    f2 = tmp_path / "full.pt"
    torch.save(src.state_dict(), f2)
    loaded2 = build_model(ModelConfig(**VIT, weights=str(f2)), 3)
    assert _same_state(src.backbone, loaded2.backbone)

    # a plain torchvision resnet18 state dict with its fc layer (dropped)
    import torchvision

    tv = torchvision.models.resnet18()
    f3 = tmp_path / "r18.pth"
    torch.save(tv.state_dict(), f3)
    r18 = build_model(ModelConfig(name="resnet18", image_size=32, weights=str(f3)), 3)
    sd = r18.backbone.net.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in tv.state_dict().items() if not k.startswith("fc."))


def test_torchvision_weights_from_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), cache / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url))
    for name in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"):
        model = build_model(ModelConfig(name="resnet18", image_size=32, weights=name), 3)
        assert torch.equal(model.backbone.net.conv1.weight, tv.conv1.weight)
    with pytest.raises(WeightsNotAvailableError, match="not weights of torchvision model"):
        build_model(
            ModelConfig(name="resnet18", image_size=32, weights="ResNet50_Weights.IMAGENET1K_V2"), 3
        )


def test_weights_vit_interpolates_position_embeddings(tmp_path: Path) -> None:
    src = build_model(ModelConfig(name="vitb32", image_size=64, arch=TINY_ARCH["vitb32"]), 3)
    f = tmp_path / "vit64.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.net.state_dict().items()}, str(f))
    small = build_model(ModelConfig(**VIT, weights=str(f)), 3)
    assert small.backbone.net.encoder.pos_embedding.shape == (1, 1 + 16, 32)
    assert torch.equal(small.backbone.net.conv_proj.weight, src.backbone.net.conv_proj.weight)


def test_clip_weights_from_save_pretrained_folder_and_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(2)
    src = build_model(ModelConfig(**CLIP), 3)
    folder = tmp_path / "tiny_clip"
    src.backbone.clip.save_pretrained(folder)
    loaded = build_model(ModelConfig(name="clip", image_size=32, weights=str(folder)), 3)
    assert _same_state(src.backbone, loaded.backbone)
    f = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.clip.state_dict().items()}, str(f))
    loaded2 = build_model(ModelConfig(**CLIP, weights=str(f)), 3)
    assert _same_state(src.backbone, loaded2.backbone)
    with pytest.raises(ValueError, match="model.arch"):
        build_model(ModelConfig(**CLIP, weights=str(folder)), 3)


def test_missing_weights_errors_name_the_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(
        WeightsNotAvailableError, match=r"model\.weights='IMAGENET1K_V1'.*local cache.*null"
    ):
        build_model(ModelConfig(name="resnet18", image_size=32, weights="IMAGENET1K_V1"), 3)
    with pytest.raises(WeightsNotAvailableError, match=r"model\.weights"):
        build_model(
            ModelConfig(name="resnet50", image_size=32, weights="ResNet50_Weights.IMAGENET1K_V2"), 3
        )
    with pytest.raises(WeightsNotAvailableError, match=r"model\.weights.*valid"):
        build_model(ModelConfig(name="resnet18", image_size=32, weights="NOT_A_WEIGHT"), 3)
    with pytest.raises(WeightsNotAvailableError, match=r"model\.weights.*not found"):
        build_model(ModelConfig(**VIT, weights=str(tmp_path / "nope.safetensors")), 3)
    with pytest.raises(
        WeightsNotAvailableError, match=r"model\.weights='openai/clip-vit-base-patch32'.*null"
    ):
        build_model(
            ModelConfig(name="clip", image_size=32, weights="openai/clip-vit-base-patch32"), 3
        )
    bad = tmp_path / "bad.safetensors"
    save_file({"foo": torch.zeros(2)}, str(bad))
    with pytest.raises(WeightsNotAvailableError, match=r"model\.weights.*does not match"):
        build_model(ModelConfig(**VIT, weights=str(bad)), 3)


# --------------------------------------------------------------------------- CLIP


def _n_trainable(module: torch.nn.Module) -> int:
    return sum(1 for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("phase", ["vision", "text"])
def test_clip_trainable_layers_0_to_12(phase: str) -> None:
    model = build_model(ModelConfig(**CLIP), 3)
    layers, norm, proj = clip_tower(model, phase)
    assert len(layers) == 12
    per_layer = sum(1 for _ in layers[0].parameters())
    fixed = sum(1 for _ in norm.parameters()) + sum(1 for _ in proj.parameters())
    for n in range(0, 13):  # 0: the control, only the final norm and projection train
        for train_scale in (True, False):
            apply_clip_phase(
                model, ClipOptions(phase=phase, trainable_layers=n, train_logit_scale=train_scale)
            )
            expected = n * per_layer + fixed + int(train_scale)
            assert _n_trainable(model.backbone) == expected
            trainable_layers = [i for i, layer in enumerate(layers) if _n_trainable(layer)]
            assert trainable_layers == list(range(12 - n, 12))
    other = "text" if phase == "vision" else "vision"
    other_layers, other_norm, other_proj = clip_tower(model, other)
    assert _n_trainable(other_layers) == _n_trainable(other_norm) == _n_trainable(other_proj) == 0
    with pytest.raises(ValueError, match="trainable_layers"):
        apply_clip_phase(model, ClipOptions(phase=phase, trainable_layers=13))


def test_clip_projection_phase() -> None:
    model = build_model(ModelConfig(**CLIP, clip={"phase": "projection"}), 3)
    clip = model.backbone.clip
    names = {n for n, p in clip.named_parameters() if p.requires_grad}
    assert names == {"visual_projection.weight", "text_projection.weight", "logit_scale"}


def test_bpe_tokenizer_eos_pooling_and_padding_invariance() -> None:
    prompts = [build_prompt(**toy_prompt_meta(c)) for c in range(6)]
    assert prompts[0] == "a photo of a audi m0, a sedan"
    with pytest.raises(KeyError, match="type"):
        build_prompt(make="audi", model="a4")
    model = build_model(ModelConfig(**CLIP), 3).eval()
    vocab = model.backbone.clip.config.text_config.vocab_size
    tok = BPETokenizer.train(prompts, vocab_size=vocab, max_length=32)
    assert tok.vocab_size <= vocab and tok.eos_token_id == 3 and tok.bos_token_id == 2
    model.backbone.set_eos_token_id(tok.eos_token_id)
    texts = [prompts[0], prompts[1] + " with a very long tail of words for padding"]
    ids, mask = tok.encode(texts)
    assert (ids[:, 0] == tok.bos_token_id).all()
    lengths = mask.sum(1)
    assert all(ids[i, lengths[i] - 1] == tok.eos_token_id for i in range(2))
    assert ids[0, lengths[0] :].eq(tok.pad_token_id).all() and lengths[0] < lengths[1]
    with torch.no_grad():
        out = model.backbone.clip.text_model(input_ids=ids, attention_mask=mask)
        eos_pos = lengths - 1
        assert torch.allclose(out.pooler_output, out.last_hidden_state[torch.arange(2), eos_pos])
        alone = model.encode_text(*tok.encode([texts[0]]))
        batched = model.encode_text(ids, mask)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)  # padding never leaks into the pooling
    assert torch.allclose(batched.norm(dim=1), torch.ones(2), atol=1e-5)
    # truncation keeps the EOS token
    short = BPETokenizer.from_str(tok.to_str(), max_length=5)
    ids5, _ = short.encode([texts[1]])
    assert ids5.shape[1] == 5 and ids5[0, -1] == tok.eos_token_id
