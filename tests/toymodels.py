"""A toy interactive model for tests: an untrained 2-level CIN U-Net of the toy spheres' classes
(background, core, rim) made promptable, with random prompt weights so that clicks change the mask."""

from __future__ import annotations

import torch


def toy_interactive_model(experts=("small", "medium")):
    from experts.bundle import ModelBundle
    from experts.data.plan import Plan
    from experts.interactive.building import promptable_bundle
    from experts.networks import create_network

    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=3, num_experts=len(experts), channels=(4, 8))
    plan = Plan(spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16], normalization=["zscore"], channel_names=["MR"], class_names=["background", "core", "rim"], ignore_label=3, median_shape=[20, 20, 20])
    bundle = promptable_bundle(ModelBundle(network=net, experts=list(experts), plan=plan, arch={"name": "cin_unet", "kwargs": {"channels": [4, 8]}}))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in bundle.network.interactive.parameters():
            p.normal_(0, 0.3)
    return bundle
