"""Learning-rate schedule: linear warm-up then cosine decay, stepped per optimizer step.

Factor of the base lr after ``s`` completed optimizer steps (``LambdaLR``'s counter), with ``W``
warm-up steps, ``T`` total steps and ``m = min_lr_ratio``:

* ``s < W``: ``(s + 1) / W``  (step 0 uses ``lr / W``; the last warm-up step uses exactly ``lr``;
  the lr never exceeds its configured value);
* ``s >= W``: ``m + (1 - m) * 0.5 * (1 + cos(pi * min(1, (s - W) / max(1, T - W))))``
  (``lr`` at ``s = W``, ``m * lr`` at ``s = T``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_lr_lambda(
    total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> Callable[[int], float]:
    """``lr_lambda`` for :class:`~torch.optim.lr_scheduler.LambdaLR`."""

    def fn(step: int) -> float:
        return lr_factor(
            step, total_steps=total_steps, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio
        )

    return fn


def build_scheduler(
    optimizer: Optimizer, *, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> LambdaLR:
    """Warm-up + cosine ``LambdaLR``; call ``scheduler.step()`` after every ``optimizer.step()``."""
    if warmup_steps > total_steps:
        warmup_steps = total_steps
    return LambdaLR(optimizer, make_lr_lambda(total_steps, warmup_steps, min_lr_ratio))
