"""A promptable model from a pretrained multi-expert one; the pretrained model is not changed.

The new model file's architecture is ``{"name": "promptable", "kwargs": {"base": <the pretrained
arch>, "encoding": {...}}}``, so it loads with :func:`experts.bundle.load_bundle` like any other,
and its lineage names the pretrained model it started from.
"""

from __future__ import annotations

import dataclasses

from experts.bundle import ModelBundle
from experts.interactive.prompts import PromptEncoding
from experts.networks import create_network
from experts.networks.promptable import PromptableNetwork

__all__ = ["promptable_bundle"]


def promptable_bundle(bundle: ModelBundle, *, encoding: PromptEncoding = PromptEncoding(), config: dict | None = None) -> ModelBundle:
    """The promptable counterpart of ``bundle`` (new input channels at zero, same experts and plan)."""
    if getattr(bundle.network, "prompt_channels", 0):
        return bundle
    plan, arch = bundle.plan, bundle.arch

    def build(*, in_channels: int):
        return create_network(arch["name"], in_channels=in_channels, num_classes=plan.num_classes, num_experts=len(bundle.experts), **arch.get("kwargs", {}))

    enc = dataclasses.asdict(encoding)
    net = PromptableNetwork.from_pretrained(bundle.network, build=build, in_channels=plan.num_channels, num_classes=plan.num_classes, encoding=enc)
    lineage = {**bundle.lineage, "base_model_id": bundle.model_id, "interactive": True}
    return ModelBundle(network=net, experts=list(bundle.experts), plan=plan, arch={"name": "promptable", "kwargs": {"base": arch, "encoding": enc}}, config=dict(config if config is not None else bundle.config), lineage=lineage)
