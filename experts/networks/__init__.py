"""Expert-conditioned segmentation networks, registered by name (config key ``network.name``).

Every registered network is built as ``create_network(name, in_channels=..., num_classes=...,
num_experts=..., **options)`` and called as ``net(image [B,C,D,H,W], expert LongTensor[B])``.
"""

from experts.networks.cin import ConditionalInstanceNorm, SharedInstanceNorm
from experts.networks.unet import CIN_PLACEMENTS, CINUNet
from experts.registry import Registry

__all__ = ["NETWORKS", "create_network", "ConditionalInstanceNorm", "SharedInstanceNorm", "CINUNet", "CIN_PLACEMENTS"]

NETWORKS: Registry = Registry("network")


@NETWORKS.register("cin_unet")
def cin_unet(**kwargs) -> CINUNet:
    """U-Net with two conv-norm-act units per level (nnU-Net's plain layout)."""
    return CINUNet(residual=False, **kwargs)


@NETWORKS.register("cin_resunet")
def cin_resunet(**kwargs) -> CINUNet:
    """U-Net with one residual unit per level."""
    return CINUNet(residual=True, **kwargs)


def create_network(name: str, **kwargs) -> CINUNet:
    """Build the network registered as ``name``."""
    return NETWORKS.create(name, **kwargs)
