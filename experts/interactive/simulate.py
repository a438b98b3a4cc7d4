"""Training with simulated interaction: prompts drawn from the labels, corrections where the network errs.

Per sample of a batch (ScribblePrompt's and nnInteractive's training, in 3D):

1. a target class among the foreground classes its label annotates; the label becomes binary
   (target, rest, ignore where unannotated);
2. the previous-prediction channel starts as the automatic model's probability of that class, or,
   with probability ``other_prior``, as another expert's automatic answer (a random other row). On
   the training cases the automatic model is close to right, so a network always started there
   learns to keep the previous prediction and gives prompts little weight; on a new scan the
   automatic answer can be far off, and a prior in another expert's style teaches the network to
   follow the prompts and its own row instead;
3. a first prompt (``first``: a box from the ``box`` style, clicks from the ``clicks`` style, or
   scribbles from the ``line`` style, all on the binary label), or, with probability
   ``no_prompt``, none at all (the network then learns to keep the automatic answer's right parts);
   partial labels get clicks on their annotated voxels;
4. up to ``rounds`` correction rounds (the same number for the whole batch, drawn from 0..rounds):
   the network predicts without gradient, and the next prompt goes to the largest error component
   (:mod:`experts.interactive.corrections`: a click at its EDT maximum, or with probability
   ``scribble_corrections`` a scribble along it), counted on annotated voxels only;
5. the batch that comes out holds the last prompts and previous prediction (no gradient), the
   target class and the binary label: the training step then trains every round's answer with the
   row of the expert whose label it is, so a prompt is answered in that expert's style.

Randomness: one generator per step, ``default_rng([seed, step, rank])``, so a resumed run draws the
same prompts as one that was never interrupted (the corrections depend on the network as well).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Iterator

import numpy as np
import torch

from experts.interactive.corrections import error_click, error_scribble
from experts.interactive.prompts import Prompt, PromptEncoding, render_prompts
from experts.records import Batch

__all__ = ["InteractionSimulator", "interactive_batches", "FIRST_PROMPTS"]

FIRST_PROMPTS = ("box", "clicks", "scribbles")


@dataclass
class InteractionSimulator:
    """Settings of the simulated interaction (config section ``interactive``).

    Args:
        rounds: most correction rounds per step (default 5, as ScribblePrompt).
        no_prompt: probability that a sample gets no prompt at all.
        first: the first-prompt kinds to draw from (``box``, ``clicks``, ``scribbles``).
        scribble_corrections: probability that a correction is a scribble instead of a click.
        other_prior: probability that a sample's previous prediction starts as another expert's
            automatic answer instead of its own expert's.
        encoding: how prompts become channels.
    """

    rounds: int = 5
    no_prompt: float = 0.1
    first: tuple[str, ...] = FIRST_PROMPTS
    scribble_corrections: float = 0.3
    other_prior: float = 0.0
    encoding: PromptEncoding = field(default_factory=PromptEncoding)

    def __post_init__(self):
        unknown = [k for k in self.first if k not in FIRST_PROMPTS]
        if unknown or not self.first:
            raise ValueError(f"interactive.first must list some of {', '.join(FIRST_PROMPTS)}, got {list(self.first)}")
        if self.rounds < 0 or not all(0 <= v <= 1 for v in (self.no_prompt, self.scribble_corrections, self.other_prior)):
            raise ValueError("interactive: rounds must be >= 0, no_prompt, scribble_corrections and other_prior in [0, 1]")

    def get_params(self) -> dict:
        return {**asdict(self), "first": list(self.first)}

    # --- one sample's prompts ---------------------------------------------------------------------
    def first_prompts(self, target: np.ndarray, annotated: np.ndarray, *, rng: np.random.Generator, spacing) -> list[Prompt]:
        """The first prompts of one sample (bool ``[X, Y, Z]`` target and annotated voxels)."""
        if not target.any():
            return []
        if not annotated.all():  # partial labels: clicks on annotated voxels
            return _uniform_clicks(target & annotated, rng.integers(1, 4), rng, positive=True) + _uniform_clicks(~target & annotated, rng.integers(0, 2), rng, positive=False)
        from experts.scribbles import create_scribble_style

        kind = str(rng.choice(list(self.first)))
        binary = target.astype(np.uint8)
        spacing = tuple(float(s) for s in spacing)
        if kind == "box":
            params = create_scribble_style("box", jitter_mm=float(rng.uniform(0, 3)) * min(spacing)).make_params(binary, ignore_label=2, rng=rng, spacing=spacing)
            return [Prompt("box", [b["lower"], b["upper"]]) for b in params["boxes"]]
        if kind == "clicks":
            style = create_scribble_style("clicks", mode=str(rng.choice(["random", "centre"])), n_positive=int(rng.integers(1, 4)), n_negative=int(rng.integers(0, 2)), background=False)
            params = style.make_params(binary, ignore_label=2, rng=rng, spacing=spacing)
            return [Prompt("click", [c["voxel"]], positive=True) for c in params["positive"]] + [Prompt("click", [c["voxel"]], positive=False) for c in params["negative"]]
        style = create_scribble_style("line", mode="3d", thickness_mm=min(spacing), n_strokes=int(rng.integers(1, 3)))
        partial = style.apply(binary, style.make_params(binary, ignore_label=2, rng=rng, spacing=spacing), ignore_label=2, spacing=spacing)
        return [Prompt("scribble", np.argwhere(partial == v), positive=bool(v), connected=False) for v in (1, 0) if (partial == v).any()]

    def correction(self, prediction: np.ndarray, target: np.ndarray, annotated: np.ndarray, *, rng: np.random.Generator, spacing) -> Prompt | None:
        """The next prompt where ``prediction`` is most wrong (None: nothing wrong)."""
        if rng.random() < self.scribble_corrections:
            return error_scribble(prediction, target, annotated, spacing=spacing, axis=int(rng.integers(3)))
        return error_click(prediction, target, annotated, spacing=spacing)

    # --- a batch ------------------------------------------------------------------------------
    def prior(self, network, batch: Batch, target: torch.Tensor, *, rng: np.random.Generator) -> torch.Tensor:
        """``[B, 1, *S]``: the previous prediction a sample starts from: its expert's automatic
        probability of the target class, or (``other_prior``) a random other expert's."""
        rows = batch.expert.clone()
        n = network.automatic.num_experts
        swap = [bool(self.other_prior > 0 and n > 1 and rng.random() < self.other_prior) for _ in range(len(rows))]  # no draw when off: the same prompts as before
        for i in (i for i, on in enumerate(swap) if on):
            others = [r for r in range(n) if r != int(rows[i])]
            rows[i] = int(rng.choice(others))
        return network.automatic_probability(batch.image, rows, target).to(batch.image.dtype)

    def channels(self, previous: torch.Tensor, prompts: list[list[Prompt]]) -> torch.Tensor:
        """``[B, 7, *S]``: the previous prediction ``[B, 1, *S]`` and each sample's prompts."""
        region = tuple(slice(0, s) for s in previous.shape[2:])
        drawn = np.stack([render_prompts(p, region, encoding=self.encoding) for p in prompts])
        return torch.cat([previous, torch.from_numpy(drawn).to(previous)], 1)

    @torch.no_grad()
    def simulate(self, network, batch: Batch, *, rng: np.random.Generator, num_classes: int) -> Batch:
        """A batch with prompts, target classes and binary labels (see the module docstring).

        Args:
            network: a promptable network (``automatic_probability``, ``forward(..., prompts, target)``).
            batch: ``label [B, 1, *S]`` with classes ``0..K-1`` and the ignore value ``K``.
            num_classes: K.
        """
        labels = batch.label[:, 0].cpu().numpy()
        annotated = labels != num_classes
        classes = [_pick_class(lab[ann], num_classes, rng) for lab, ann in zip(labels, annotated)]
        targets = [lab == c for lab, c in zip(labels, classes)]
        target = torch.as_tensor(classes, dtype=torch.long, device=batch.image.device)
        spacing = batch.spacing.cpu().numpy()
        previous = self.prior(network, batch, target, rng=rng)
        prompts = [[] if rng.random() < self.no_prompt else self.first_prompts(t, a, rng=rng, spacing=s) for t, a, s in zip(targets, annotated, spacing)]
        prompted = [bool(p) for p in prompts]
        for r in range(int(rng.integers(0, self.rounds + 1)) + 1):
            if not any(prompted):
                break
            if r > 0:
                for i in (i for i, on in enumerate(prompted) if on):
                    p = self.correction(previous[i, 0].cpu().numpy() > 0.5, targets[i], annotated[i], rng=rng, spacing=spacing[i])
                    prompts[i] += [p] if p is not None else []
            out = network(batch.image, batch.expert, prompts=self.channels(previous, prompts), target=target).logits
            previous = torch.where(torch.as_tensor(prompted, device=out.device).view(-1, 1, 1, 1, 1), out.float().softmax(1)[:, 1:].to(previous.dtype), previous)
        label = torch.from_numpy(np.where(annotated, np.stack(targets), 2)[:, None]).long().to(batch.label.device)
        return replace(batch, label=label, prompts=self.channels(previous, prompts), target=target)


def _pick_class(annotated_values: np.ndarray, num_classes: int, rng: np.random.Generator) -> int:
    present = sorted(set(np.unique(annotated_values).tolist()) - {0})
    return int(rng.choice(present)) if present else int(rng.integers(1, num_classes))


def _uniform_clicks(region: np.ndarray, n: int, rng: np.random.Generator, *, positive: bool) -> list[Prompt]:
    voxels = np.flatnonzero(region)
    if not len(voxels) or n <= 0:
        return []
    pick = rng.choice(voxels, size=min(int(n), len(voxels)), replace=False)
    return [Prompt("click", [np.unravel_index(int(i), region.shape)], positive=positive) for i in pick]


def interactive_batches(batches: Iterable[Batch], network, simulator: InteractionSimulator, *, num_classes: int, seed: int, start_step: int = 0, rank: int = 0, device="cpu") -> Iterator[Batch]:
    """Batches of :func:`experts.training.loop.fit` with simulated interaction, step by step.

    ``network`` is the promptable network itself (not a DDP wrapper): the rounds run without
    gradient on this process's share of the batch."""
    for step, batch in enumerate(batches, start=start_step):
        rng = np.random.default_rng([seed, step, rank])
        yield simulator.simulate(network, batch.to(device), rng=rng, num_classes=num_classes)
