"""A promptable model from a pretrained multi-expert one; the pretrained model is not changed.

The new model file's architecture is ``{"name": "promptable", "kwargs": {"base": <the pretrained
arch>, "encoding": {...}}}``, so it loads with :func:`experts.bundle.load_bundle` like any other,
and its lineage names the pretrained model it started from.

Adapting an interactive model works on its automatic network (:func:`automatic_bundle`, the
ordinary :class:`~experts.adaptation.Adapter`); :func:`with_automatic` puts the result back: the
adapted automatic network, and for a new expert an interactive row copied from the colleague the
adaptation started from, so a session starts from the doctor's adapted automatic answer and is
refined as that colleague's. An adapter file stacks onto the interactive model the same way.
"""

from __future__ import annotations

import copy
import dataclasses

from experts.bundle import ModelBundle
from experts.interactive.prompts import PromptEncoding
from experts.networks import create_network
from experts.networks.promptable import PromptableNetwork

__all__ = ["promptable_bundle", "automatic_bundle", "with_automatic"]


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


def automatic_bundle(model: ModelBundle) -> ModelBundle:
    """The automatic network of an interactive model as a model of its own (a copy)."""
    from experts.errors import ConfigError

    if not getattr(model.network, "prompt_channels", 0):
        raise ConfigError("the model takes no prompts; pass an interactive model (expertseg pretrain --interactive)")
    net = copy.deepcopy(model.network.automatic)
    return ModelBundle(network=net, experts=list(model.experts), plan=model.plan, arch=model.arch["kwargs"]["base"], config=model.config, model_id=model.model_id, lineage=dict(model.lineage))


def with_automatic(model: ModelBundle, adapted: ModelBundle, *, source: str | None) -> ModelBundle:
    """The interactive ``model`` with the automatic network of ``adapted`` (an adaptation of
    :func:`automatic_bundle` of it: its experts and lineage too). An expert new in ``adapted``
    gets an interactive row copied from ``source``'s, the colleague its automatic row started
    from (the mean of the rows when ``source`` is no expert of the model). ``model`` is not
    changed."""
    from experts.adaptation import create_init

    automatic = copy.deepcopy(adapted.network).cpu()
    automatic.merge_row_blocks()
    for p in automatic.parameters():
        p.requires_grad_(False)
    net = copy.deepcopy(model.network).cpu()
    init = create_init(f"expert:{source}" if source in model.experts else "mean")
    for _ in adapted.experts[len(model.experts):]:
        rows, _ = init(net.interactive.row_tables(), experts=list(model.experts), scores=None)
        net.interactive.add_expert(rows)
    net.interactive.merge_row_blocks()
    net.automatic = automatic
    return ModelBundle(network=net, experts=list(adapted.experts), plan=model.plan, arch=model.arch, config=model.config, model_id=model.model_id, lineage=dict(adapted.lineage))
