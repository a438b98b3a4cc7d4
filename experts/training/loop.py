"""The training loop: a few readable lines composed from a loss, batches and callbacks.

No trainer class: :func:`fit` takes the pieces (network, loss, optimiser, schedule, an iterator of
batches) and calls back for logging, validation and checkpoints. Pretraining and adaptation both use
it; what differs between them is which parameters the optimiser owns.

One step: a :class:`~experts.records.Batch` goes into the network, a
:class:`~experts.records.NetOutput` comes out, and the loss (a
:class:`~experts.losses.TrainingLoss` of terms) sees both and the step number.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from experts.errors import ExpertsegError

__all__ = ["fit", "NonFiniteLoss", "Callbacks", "PlainProgress"]


class NonFiniteLoss(ExpertsegError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint is kept."""


@dataclass
class Callbacks:
    """Hooks of :func:`fit`; each is optional.

    ``on_step(step)`` after every optimiser step (a weight average updates there),
    ``on_log(step, parts)`` every ``log_every`` steps with the mean loss parts since the last call,
    ``on_validate(step)`` every ``val_every`` steps and at the end, ``on_checkpoint(step)`` every
    ``checkpoint_every`` steps and at the end. ``step`` counts completed steps.
    """

    on_step: Callable[[int], None] | None = None
    on_log: Callable[[int, dict], None] | None = None
    on_validate: Callable[[int], dict | None] | None = None
    on_checkpoint: Callable[[int], None] | None = None
    log_every: int = 10
    val_every: int = 0
    checkpoint_every: int = 0


def fit(
    *,
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    schedules: list,
    batches: Iterable[dict],
    start_step: int,
    steps: int,
    device: torch.device,
    grad_clip: float = 0.0,
    amp: bool = False,
    cpu_bf16: bool = False,
    callbacks: Callbacks | None = None,
    progress: bool = True,
    desc: str = "train",
    plain_every: float = 30.0,
) -> int:
    """Run steps ``start_step .. steps - 1``.

    Args:
        model: ``model(image, expert, prompts=...) -> NetOutput``.
        loss_fn: ``loss_fn(outputs, batch, step=step)`` returns a dict with ``loss`` and parts to log.
        optimizers: each steps after every backward pass (adaptation keeps new rows in their own).
        schedules: learning-rate schedules stepped with them.
        batches: yields a :class:`~experts.records.Batch` for each remaining step.
        grad_clip: clip the global gradient norm (0: off).
        amp: float16 autocast on CUDA (ignored on CPU).
        cpu_bf16: bfloat16 autocast on the CPU (ignored on CUDA).
        progress: a progress bar (for a terminal).
        plain_every: without the bar (a log file, a cluster job), a plain line every this many
            seconds: step, loss, steps/s and time left, as nnU-Net prints its epochs (0: silent).

    Returns:
        The number of completed steps.

    Raises:
        NonFiniteLoss: the loss became NaN or infinite.
    """
    cb = callbacks or Callbacks()
    params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    meter = _LogMeter()
    step = start_step
    model.train()
    bar = tqdm(total=steps, initial=start_step, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    plain = PlainProgress(desc, start=start_step, total=steps, every=plain_every) if not progress and plain_every > 0 else None
    last = time.perf_counter()
    try:
        for batch in batches:
            if step >= steps:
                break
            meter.waited += time.perf_counter() - last
            batch = batch.to(device, non_blocking=True)
            with _autocast(device, amp=use_amp, cpu_bf16=cpu_bf16):
                outputs = model(batch.image, batch.expert, **{k: batch[k] for k in ("prompts", "target") if batch.get(k) is not None})
            parts = loss_fn(outputs, batch, step=step)
            loss = parts["loss"]
            _optimise(loss, step=step, optimizers=optimizers, schedules=schedules, scaler=scaler, params=params, grad_clip=grad_clip)
            step += 1
            if cb.on_step:
                cb.on_step(step)
            meter.add(parts, seconds=time.perf_counter() - last)
            bar.update(1)
            if plain is not None:
                plain.update(step, float(loss.detach()))
            _periodic(cb, step, steps, meter=meter, lr=optimizers[0].param_groups[0]["lr"], bar=bar, model=model, params=params)
            last = time.perf_counter()  # validation and checkpoints are not the loader's wait
    finally:
        bar.close()
    if step == steps:
        _check_finite(params, step)
        if cb.on_validate:
            cb.on_validate(step)
        if cb.on_checkpoint:
            cb.on_checkpoint(step)
    return step


def _periodic(cb: Callbacks, step: int, steps: int, *, meter: "_LogMeter", lr: float, bar, model: torch.nn.Module, params: list) -> None:
    """After step ``step``: the log line, validation and checkpoint that fall due (the last step's
    validation and checkpoint come after the loop)."""
    if cb.on_log and (step % cb.log_every == 0 or step == steps):
        means = meter.means(lr=lr)
        bar.set_postfix(loss=f"{means['loss']:.4f}")
        cb.on_log(step, means)
    if step == steps:
        return
    if cb.on_validate and cb.val_every and step % cb.val_every == 0:
        cb.on_validate(step)
        model.train()
    if cb.on_checkpoint and cb.checkpoint_every and step % cb.checkpoint_every == 0:
        _check_finite(params, step)
        cb.on_checkpoint(step)


@dataclass
class _LogMeter:
    """The loss parts and timings since the last log line."""

    sums: dict = field(default_factory=dict)
    count: int = 0
    waited: float = 0.0  #: seconds spent waiting for batches
    elapsed: float = 0.0  #: seconds in whole steps, the wait included

    def add(self, parts: dict, *, seconds: float) -> None:
        self.count += 1
        self.elapsed += seconds
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)

    def means(self, *, lr: float) -> dict:
        """The mean of each part, the step size and the loader's share of the time (> 0.1: the
        loader stalls the step); then start again."""
        out = {k: v / self.count for k, v in self.sums.items()}
        out["lr"] = lr
        out["data_wait_fraction"] = self.waited / max(self.elapsed, 1e-9)
        self.sums, self.count, self.waited, self.elapsed = {}, 0, 0.0, 0.0
        return out


def _optimise(loss: torch.Tensor, *, step: int, optimizers, schedules, scaler, params, grad_clip: float) -> None:
    """One optimiser step from ``loss`` (refused if it is not finite): backward, optional
    gradient clipping, every optimiser and schedule."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(
            f"loss became {loss.item()} at step {step + 1}; the run stopped and its last good checkpoint is kept; "
            "lower train.lr, check the images for extreme values, or resume from the checkpoint"
        )
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        for opt in optimizers:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    for sched in schedules:
        sched.step()


def _autocast(device: torch.device, *, amp: bool, cpu_bf16: bool):
    """float16 autocast on CUDA (``amp``), bfloat16 on the CPU (``cpu_bf16``), else none."""
    if amp:
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PlainProgress:
    """One line on stderr every ``every`` seconds: ``desc: step 250/1500, loss 0.4123, 2.1 steps/s, ~10 min left``."""

    def __init__(self, desc: str, *, start: int, total: int, every: float = 30.0, clock=time.monotonic, out=None):
        self.desc, self.start, self.total, self.every, self.clock = desc, start, total, every, clock
        self.out = out or sys.stderr
        self.t0 = self.last = clock()

    def update(self, step: int, loss: float) -> None:
        now = self.clock()
        if now - self.last < self.every and step < self.total:
            return
        self.last = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        left = (self.total - step) / rate if rate > 0 else float("inf")
        eta = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        print(f"{self.desc}: step {step}/{self.total}, loss {loss:.4f}, {rate:.2f} steps/s, ~{eta} left", file=self.out, flush=True)


def _check_finite(params: list[torch.Tensor], step: int) -> None:
    """Refuse to checkpoint or finish with NaN/inf weights (the loss can still look finite)."""
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise NonFiniteLoss(
            f"weights became NaN or infinite by step {step}; the run stopped and its last good checkpoint is kept; "
            "lower train.lr or enable train.grad_clip, or resume from the checkpoint"
        )
