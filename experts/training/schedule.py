"""Optimisers and learning-rate schedules from plain config values."""

from __future__ import annotations

import math

import torch

__all__ = ["make_optimizer", "make_schedule", "param_groups"]


def param_groups(network, *, lr: float, weight_decay: float, style_lr_scale: float = 1.0) -> list[dict]:
    """Two groups from the network's parameter roles: the experts' CIN rows (learning rate
    ``lr * style_lr_scale``, no weight decay) and every other parameter. Each expert's rows move
    only when that expert is in the batch, so a larger step lets the styles keep pace with the
    shared weights."""
    roles = network.parameter_groups()
    style = list(roles["expert_rows"].values())
    rows = {id(p) for p in style}
    shared = [p for p in network.parameters() if id(p) not in rows]
    groups = [{"params": shared, "lr": lr, "weight_decay": weight_decay}]
    if style:
        groups.append({"params": style, "lr": lr * style_lr_scale, "weight_decay": 0.0})
    return groups


def make_optimizer(params, *, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.99) -> torch.optim.Optimizer:
    """``"adamw"`` or ``"sgd"`` (Nesterov, nnU-Net's choice) over ``params``."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}; use 'adamw' or 'sgd'")


def make_schedule(optimizer: torch.optim.Optimizer, *, name: str, steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then ``"poly"`` (``(1 - t)^0.9``, nnU-Net), ``"cosine"`` or ``"constant"``."""
    if name not in ("poly", "cosine", "constant"):
        raise ValueError(f"unknown schedule {name!r}; use 'poly', 'cosine' or 'constant'")

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        if name == "poly":
            return (1 - t) ** 0.9
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
