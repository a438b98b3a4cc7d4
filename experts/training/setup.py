"""One training set-up for every stage: the loss, the seeded patches and the batches of a run.

Pretraining, adaptation, updating an expert's row and tuning trials all train the same way; what
differs is which parameters the optimisers own. :func:`build_training` turns a plan, cached
volumes and the training labels into a :class:`TrainingSetup` whose :meth:`~TrainingSetup.loader`
feeds :func:`experts.training.loop.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from experts.data.datasets import PatchDataset, VolumeCache
from experts.data.mixing import MixedPatchDataset
from experts.data.plan import Plan
from experts.data.transforms import training_augmentation
from experts.losses import TermContext, TrainingLoss, build_loss
from experts.records import collate_batch
from experts.training.sampling import ExpertBalancedSampler, SampleItem

__all__ = ["TrainingSetup", "build_training", "DEFAULT_AUGMENT", "DEFAULT_LOSS_TERMS"]

#: the augmentation of the embedded defaults (config ``augment``)
DEFAULT_AUGMENT = {"flip": True, "rotate90": False, "intensity": True, "mix": 0.0, "occlusion": 0.0}
#: the loss of the embedded defaults (config ``loss.terms``)
DEFAULT_LOSS_TERMS = ({"name": "partial_dice_ce"},)


@dataclass
class TrainingSetup:
    """The loss, the patches and the balanced sampler of one run."""

    loss: TrainingLoss
    dataset: PatchDataset | MixedPatchDataset
    sampler: ExpertBalancedSampler

    def loader(self, start: int, steps: int, *, rank: int = 0, world_size: int = 1, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """Batches for steps ``start .. steps - 1`` (this process's share of each global batch)."""
        batches = list(self.sampler.iterate(start, steps, rank=rank, world_size=world_size))
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate_batch, num_workers=num_workers, pin_memory=pin_memory)


def build_training(
    *,
    plan: Plan,
    cache: VolumeCache,
    items: Sequence[SampleItem],
    network,
    batch_size: int,
    seed: int,
    loss_terms: Sequence = DEFAULT_LOSS_TERMS,
    augment: Mapping[str, bool | float] | None = None,
    expert_weights: Mapping[str, float] | None = None,
    kind_weights: Mapping[str, float] | None = None,
    device: torch.device | str = "cpu",
    one_target_class: bool = False,
) -> TrainingSetup:
    """The loss (checked against the features ``network`` returns), augmentation and sampler.

    Args:
        plan: the preprocessing plan (classes, ignore value, spacing).
        cache: padded volumes holding every label of ``items``.
        items: the training labels, each with its expert's row.
        network: the network to train (a :class:`~experts.networks.ConditionedNetwork`).
        batch_size: samples per global batch.
        seed: the sampler's seed.
        loss_terms: config ``loss.terms`` entries (dataclasses or dicts).
        augment: ``flip``, ``rotate90``, ``intensity``, and the probabilities ``mix`` (a scribbled
            patch mixed with another of the same expert) and ``occlusion`` (default
            :data:`DEFAULT_AUGMENT`: neither).
        expert_weights / kind_weights: sampling weights (see the sampler).
        device: where the loss's state lives.
        one_target_class: the network answers for one target class (a promptable network): the
            loss sees two classes (rest, target) and the ignore value 2.
    """
    aug = {**DEFAULT_AUGMENT, **dict(augment or {})}
    classes = 2 if one_target_class else plan.num_classes
    context = TermContext(ignore_label=classes, num_classes=classes, spacing=tuple(float(s) for s in plan.spacing))
    loss = build_loss(loss_terms, context, network_features=network.returned_features).to(device)
    sampler = ExpertBalancedSampler(list(items), batch_size=batch_size, seed=seed, expert_weights=dict(expert_weights or {}), kind_weights=dict(kind_weights or {}))
    dataset = PatchDataset(cache, list(items), training_augmentation(plan, flip=aug["flip"], rotate90=aug["rotate90"], intensity=aug["intensity"]))
    if aug["mix"] or aug["occlusion"]:
        dataset = MixedPatchDataset.from_items(dataset, mix=aug["mix"], occlusion=aug["occlusion"])
    return TrainingSetup(loss=loss, dataset=dataset, sampler=sampler)
