"""A toy regulariser added the way a lab adds its own term: this one file plus a config entry.

It reads the image and the last decoder features, and keeps a running mean of what it penalises
(buffers, so checkpoints carry it and resume restores it). Load it with
``EXPERTSEG_PLUGINS=tests/plugins/toy_feature_term.py`` and name it in ``loss.terms``.
"""

from dataclasses import dataclass

import torch

from experts.losses import LossTerm, register_term


@register_term("toy_feature_energy")
class ToyFeatureEnergy(LossTerm):
    """Mean squared decoder activation, weighted by image brightness: ``mean(sigmoid(I) * |f|^2)``."""

    features = ("decoder.0",)

    @dataclass
    class Params:
        momentum: float = 0.9  #: of the running mean

    def __init__(self, context, **params):
        super().__init__(context, **params)
        self.register_buffer("running", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, outputs, batch):
        f = outputs.feature("decoder.0")
        brightness = batch.image.mean(1, keepdim=True).sigmoid()
        energy = (f.square().mean(1, keepdim=True) * brightness).mean()
        m = self.params.momentum
        with torch.no_grad():
            self.running.mul_(m).add_((1 - m) * energy.detach())
            self.updates.add_(1)
        return {"loss": energy, "energy": energy.detach(), "running": self.running.clone()}
