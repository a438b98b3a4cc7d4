"""Expert-conditioned segmentation networks, registered by name (config key ``network.name``).

Every registered network is built as ``create_network(name, in_channels=..., num_classes=...,
num_experts=..., **options)``, called as ``net(image [B,C,D,H,W], expert LongTensor[B]) ->
NetOutput`` and implements the :class:`~experts.networks.protocol.ConditionedNetwork` protocol
(parameter groups by role, expert rows, per-expert heads), which is all other code may use.
"""

from experts.networks.cin import ConditionalInstanceNorm, SharedInstanceNorm
from experts.networks.protocol import ROW_ROLES, SHARED_ROLES, ConditionedNetwork
from experts.networks.unet import CIN_PLACEMENTS, CINUNet
from experts.registry import Registry

__all__ = [
    "NETWORKS",
    "PROMPTABLE",
    "create_network",
    "ConditionedNetwork",
    "ConditionalInstanceNorm",
    "SharedInstanceNorm",
    "CINUNet",
    "CIN_PLACEMENTS",
    "SHARED_ROLES",
    "ROW_ROLES",
]

NETWORKS: Registry = Registry("network")
#: registered networks that take prompts and answer for one target class (a contract of their own)
PROMPTABLE = ("promptable",)


@NETWORKS.register("cin_unet")
def cin_unet(**kwargs) -> CINUNet:
    """U-Net with two conv-norm-act units per level (nnU-Net's plain layout)."""
    return CINUNet(residual=False, **kwargs)


@NETWORKS.register("cin_resunet")
def cin_resunet(**kwargs) -> CINUNet:
    """U-Net with one residual unit per level."""
    return CINUNet(residual=True, **kwargs)


@NETWORKS.register("promptable")
def promptable(*, in_channels: int, num_classes: int, num_experts: int, base: dict, encoding: dict | None = None) -> ConditionedNetwork:
    """A pretrained network ``base`` (``{name, kwargs}``) with seven prompt channels
    (:class:`~experts.networks.promptable.PromptableNetwork`); its weights come from a model file."""
    from experts.networks.promptable import PromptableNetwork

    def build(*, in_channels: int) -> ConditionedNetwork:
        return create_network(base["name"], in_channels=in_channels, num_classes=num_classes, num_experts=num_experts, **base.get("kwargs", {}))

    return PromptableNetwork(interactive=build(in_channels=in_channels + PromptableNetwork.prompt_channels), automatic=build(in_channels=in_channels), in_channels=in_channels, num_classes=num_classes, encoding=encoding)


def create_network(name: str, **kwargs) -> ConditionedNetwork:
    """Build the network registered as ``name``."""
    net = NETWORKS.create(name, **kwargs)
    if not isinstance(net, ConditionedNetwork):
        raise TypeError(f"network {name!r} does not implement the ConditionedNetwork protocol")
    return net
