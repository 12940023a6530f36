"""DDP (training.ddp.world_size=2, gloo on CPU): same global batch, same training, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compcars_kedro.training import LossConfig, ModelConfig, TrainingConfig, fit
from compcars_kedro.training.dist_context import DistContext
from compcars_kedro.training.distributed import loopback_store, resolve_backend
from compcars_kedro.training.toy import TINY_ARCH, make_toy_data

#: LayerNorm model (no BatchNorm): DDP over 2 ranks must reproduce one process up to float
#: reduction order; val metrics within this absolute tolerance.
TOLERANCE = 1e-3
METRICS = ["train_loss", "val_loss", "precision_at_1", "mean_average_precision_at_r"]


def _cfg(world_size: int) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "epochs": 3, "batch_size": 8, "lr_backbone": 1e-3, "lr_head": 1e-2, "warmup_steps": 2,
        "num_workers": 0, "seed": 7, "sampler": {"m_per_class": 2},
        "early_stopping": {"metric": "val_loss", "patience": 10},
        "ddp": {"world_size": world_size}})


def test_ddp_two_ranks_match_one_process_and_resume(tmp_path: Path) -> None:
    train = make_toy_data(4, 8, 32, 1, seed=0, memmap_path=tmp_path / "crops.npy")
    val = make_toy_data(4, 4, 32, 1, seed=1)
    mc = ModelConfig(name="vitb32", image_size=32, arch=TINY_ARCH["vitb32"], embedding_dim=16)
    lc = LossConfig(name="multisimilarity")  # a pair loss: gathered over ranks
    kw = {"num_classes": 4, "device": "cpu", "progress": False}
    one = fit(mc, lc, _cfg(1), train, val, work_dir=tmp_path / "one", **kw)
    # two ranks, interrupted after epoch 2, then resumed (every rank loads last/)
    part = fit(mc, lc, _cfg(2), train, val, work_dir=tmp_path / "two", stop_after_epoch=2, **kw)
    assert list(part.history["epoch"]) == [1, 2]
    two = fit(mc, lc, _cfg(2), train, val, work_dir=tmp_path / "two", resume=True, **kw)
    assert list(two.history["epoch"]) == [1, 2, 3]
    h1, h2 = one.history, two.history
    assert h2["train_loss"].iloc[-1] < h2["train_loss"].iloc[0]  # it trains
    np.testing.assert_allclose(h2[METRICS].to_numpy(), h1[METRICS].to_numpy(), atol=TOLERANCE)
    # the returned model and baseline come from rank 0's checkpoints
    assert two.best.meta["epoch"] == one.best.meta["epoch"]
    assert two.baseline is not None and two.baseline.meta["stage"] == "baseline"
    for k, v in one.baseline.model_state.items():
        assert torch.equal(v, two.baseline.model_state[k]), k
    for k, v in one.best.model_state.items():
        torch.testing.assert_close(two.best.model_state[k], v, atol=5e-3, rtol=0)


def test_ddp_config_and_helpers() -> None:
    with pytest.raises(ValueError, match=r"batch_size=9 must be a multiple of .*world_size=2"):
        TrainingConfig.model_validate({"batch_size": 9, "ddp": {"world_size": 2}})
    assert resolve_backend("auto", cuda=False) == "gloo"
    assert resolve_backend("auto", cuda=True) == "nccl"
    with pytest.raises(ValueError, match="nccl"):
        resolve_backend("nccl", cuda=False)
    ctx = DistContext(1, 2, "gloo", torch.device("cpu"))
    assert ctx.shard(np.arange(8)).tolist() == [4, 5, 6, 7]  # contiguous share
    assert ctx.shard(np.arange(5)).tolist() == [2, 3]


def test_rendezvous_store_listens_on_localhost_only() -> None:
    import datetime

    with loopback_store(datetime.timedelta(seconds=10)) as port:
        listening = _listening_addresses(port)
    assert listening and all(addr.startswith("127.") for addr in listening), listening


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of sockets in LISTEN state on ``port`` (Linux /proc/net/tcp[6])."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            pytest.skip("no /proc/net/tcp")
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            host, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(host) == 8:
                    out.append(".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    out.append("::" if set(host) == {"0"} else host)
    return out
