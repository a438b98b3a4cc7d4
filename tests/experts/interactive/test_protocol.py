"""The evaluation protocol on a toy session: a replay gives the same prompts to another row."""

import numpy as np
import torch

from experts.interactive.protocol import run_protocol
from experts.interactive.session import InteractiveSession
from test_session import blob_image, toy_bundle


def test_a_replay_gives_another_session_exactly_the_prompts_of_the_first():
    bundle = toy_bundle()
    torch.manual_seed(2)
    for p in bundle.network.interactive.parameters():  # some answer that is not the truth
        p.data.normal_(0, 0.3)
    truth = blob_image() > 0
    first = run_protocol(InteractiveSession(bundle, blob_image(), "a"), truth, clicks=3, spacing=(1.0, 1.0, 1.0))
    again = run_protocol(InteractiveSession(bundle, blob_image(), "b"), truth, clicks=3, spacing=(1.0, 1.0, 1.0), replay=first["prompts"])
    assert len(first["prompts"]) == len(again["prompts"]) == 4 and first["prompts"][0].kind == "box"
    for a, b in zip(first["prompts"], again["prompts"]):
        assert (a is None and b is None) or (a.kind == b.kind and a.positive == b.positive and np.array_equal(a.points, b.points))
    assert [s["prompt"] for s in first["steps"]] == [s["prompt"] for s in again["steps"]]
    assert all(s["network_voxels"] > 0 for s in first["steps"] if s["prompt"] != "none")
