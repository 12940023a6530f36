"""Warm-up + cosine LR stepped per optimizer step."""

from __future__ import annotations

import math

import pytest
import torch

from compcars_kedro.training.schedule import build_scheduler, lr_factor


def _lrs(total: int, warmup: int, min_ratio: float, base: float) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=base)
    sched = build_scheduler(opt, total_steps=total, warmup_steps=warmup, min_lr_ratio=min_ratio)
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_exact_lr_values() -> None:
    base = 0.1
    lrs = _lrs(total=10, warmup=4, min_ratio=0.1, base=base)
    assert lrs[0] == pytest.approx(base / 4)  # step 0: lr / warmup_steps, no spike
    assert lrs[1] == pytest.approx(base * 2 / 4)
    assert lrs[3] == pytest.approx(base)  # last warm-up step
    assert lrs[4] == pytest.approx(base)  # cosine start
    assert lrs[7] == pytest.approx(base * (0.1 + 0.9 * 0.5))  # middle of the cosine
    assert lrs[10] == pytest.approx(base * 0.1)  # end: min_lr_ratio * lr
    assert max(lrs) <= base + 1e-12
    assert all(a >= b - 1e-12 for a, b in zip(lrs[3:], lrs[4:], strict=False))


def test_no_warmup_and_factor_formula() -> None:
    lrs = _lrs(total=8, warmup=0, min_ratio=0.0, base=1.0)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.5)
    assert lrs[8] == pytest.approx(0.0)
    f = lr_factor(5, total_steps=20, warmup_steps=2, min_lr_ratio=0.01)
    assert f == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 3 / 18)))
