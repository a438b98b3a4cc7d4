"""A batch of one on the CPU runs through oneDNN's convolutions (as a batch of two), not PyTorch's
native 3D kernel, which its size heuristic picks for one small sample and which is ~9x slower."""

import torch
from torch.profiler import profile

from experts.networks import create_network


def _net(**kw):
    torch.manual_seed(0)
    return create_network("cin_unet", in_channels=1, num_classes=3, num_experts=2, channels=[8, 16, 32], **kw)


def test_a_batch_of_one_never_takes_the_native_convolution_and_answers_as_in_a_batch():
    net = _net()
    x = torch.randn(2, 1, 16, 16, 16)
    expert = torch.tensor([1, 0])
    with torch.no_grad():
        together = net(x, expert).logits
        with profile(record_shapes=True) as prof:
            alone = net(x[:1], expert[:1]).logits
    # (1x1x1 kernels may take the native kernel: PyTorch prefers it for them on one thread)
    native = [e.input_shapes for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::slow_conv3d" and e.input_shapes[1][2:] != [1, 1, 1]]
    assert not native, native
    assert alone.shape == (1, 3, 16, 16, 16)
    torch.testing.assert_close(alone, together[:1], atol=1e-5, rtol=1e-4)  # instance norm: samples never mix


def test_a_batch_of_one_trains_with_the_gradients_of_that_sample_alone():
    x = torch.randn(1, 1, 16, 16, 16)
    grads = []
    for doubled in (True, False):
        net = _net()
        out = net(x, torch.tensor([1])).logits if doubled else net(torch.cat([x, torch.randn_like(x)]), torch.tensor([1, 0])).logits[:1]
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-3)


def test_cin_decoder_predicts_every_expert_for_a_batch_of_one():
    net = _net(cin="decoder").eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        both = net.expert_logits(x, torch.tensor([0, 1]))
        each = torch.cat([net(x, torch.tensor([r])).logits for r in (0, 1)])
    assert both.shape == (1, 2, 3, 16, 16, 16)
    torch.testing.assert_close(both[0], each, atol=1e-5, rtol=1e-4)
