"""masked_crf: the Potts energy on unannotated voxels, on hand-made volumes with known answers."""

import pytest
import torch

from experts.errors import ConfigError
from experts.losses import LOSS_TERMS, TermContext
from experts.losses.crf import masked_crf_energy
from experts.records import Batch, NetOutput
from experts.windows import pair_slices, window_offsets

K, IGNORE = 2, 2
CONTEXT = TermContext(ignore_label=IGNORE, num_classes=K)


def one_hot(label):
    return torch.nn.functional.one_hot(label, K).permute(0, 4, 1, 2, 3).double()


def reference_energy(p, image, mask, spacing, radius, sigma_xy, sigma_i):
    """The formula voxel by voxel: sum_i m_i sum_{j in N(i)} K_ij (1 - p_i . p_j) / sum m."""
    total, (_, _, d, h, w) = 0.0, p.shape
    for z in range(d):
        for y in range(h):
            for x in range(w):
                for o in window_offsets(radius):
                    j = (z + o[0], y + o[1], x + o[2])
                    if not all(0 <= j[a] < (d, h, w)[a] for a in range(3)):
                        continue
                    dist2 = sum((o[a] * spacing[a]) ** 2 for a in range(3))
                    k = torch.exp(-dist2 / (2 * sigma_xy**2) - (image[0, :, z, y, x] - image[0, :, j[0], j[1], j[2]]).square().sum() / (2 * sigma_i**2))
                    total += mask[0, 0, z, y, x] * k * (1 - (p[0, :, z, y, x] * p[0, :, j[0], j[1], j[2]]).sum())
    return total / mask.sum()


def test_pair_slices_pair_each_voxel_with_its_neighbour():
    x = torch.arange(5 * 4 * 3).reshape(5, 4, 3)
    src, dst = pair_slices(x.shape, (2, -1, 0))
    assert torch.equal(x[dst], x[2:, :3, :]) and torch.equal(x[src], x[:3, 1:, :])


def test_energy_equals_the_formula_voxel_by_voxel():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(1, K, 4, 3, 3, generator=g, dtype=torch.float64).softmax(1)  # [1, 2, 4, 3, 3]
    image = torch.randn(1, 1, 4, 3, 3, generator=g, dtype=torch.float64)
    mask = (torch.rand(1, 1, 4, 3, 3, generator=g) > 0.4).double()
    spacing = torch.tensor([[2.0, 1.0, 1.5]], dtype=torch.float64)
    got = masked_crf_energy(p, image, mask, spacing, radius=(1, 1, 1), sigma_xy_mm=2.0, sigma_intensity=0.7)
    want = reference_energy(p, image, mask, spacing[0].tolist(), (1, 1, 1), 2.0, 0.7)
    assert got.item() == pytest.approx(float(want), rel=1e-10)


def test_a_constant_one_hot_prediction_costs_nothing():
    p = one_hot(torch.ones(1, 6, 6, 6, dtype=torch.long))  # [1, 2, 6, 6, 6]
    e = masked_crf_energy(p, torch.randn(1, 1, 6, 6, 6, dtype=torch.float64), torch.ones(1, 1, 6, 6, 6, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64))
    assert e.item() == 0.0


def test_a_split_on_an_intensity_edge_costs_less_than_a_split_across_a_flat_region():
    # [1, 1, 8, 8, 8]: dark left half (x < 4), bright right half
    image = torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64)
    image[..., 4:] = 3.0
    on_edge = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    on_edge[..., 4:] = 1
    across = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    across[..., 2:] = 1  # the cut runs through the dark, flat half
    mask, sp = torch.ones(1, 1, 8, 8, 8, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    e_edge = masked_crf_energy(one_hot(on_edge), image, mask, sp, radius=(2, 2, 2), sigma_xy_mm=3.0, sigma_intensity=0.5)
    e_across = masked_crf_energy(one_hot(across), image, mask, sp, radius=(2, 2, 2), sigma_xy_mm=3.0, sigma_intensity=0.5)
    assert 0 < e_edge < 0.01 * e_across


def test_energy_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)  # [B=2, K=3, 4, 4, 3]
    image = torch.randn(2, 1, 4, 4, 3, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 1, 4, 4, 3, generator=g) > 0.5).double()
    sp = torch.tensor([[1.0, 1.0, 2.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    fn = lambda z: masked_crf_energy(z.softmax(1), image, mask, sp, radius=(1, 2, 1), dilation=1, sigma_xy_mm=2.0, sigma_intensity=1.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,))


@pytest.mark.parametrize("kind", ["dense", "scribbled", "mixed"])
def test_term_on_dense_scribbled_and_mixed_batches(kind):
    g = torch.Generator().manual_seed(2)
    label = torch.randint(0, K, (2, 1, 8, 8, 8), generator=g)  # [2, 1, 8^3]
    if kind != "dense":
        label[1, :, 2:] = IGNORE
        if kind == "scribbled":
            label[0, :, 2:] = IGNORE
    logits = torch.randn(2, K, 8, 8, 8, generator=g, requires_grad=True)
    batch = Batch(image=torch.randn(2, 1, 8, 8, 8, generator=g), label=label, expert=torch.tensor([0, 1]), spacing=torch.ones(2, 3))
    parts = LOSS_TERMS.get("masked_crf")(CONTEXT, radius=[1, 1, 1])(NetOutput(logits=logits), batch)
    parts["loss"].backward()
    if kind == "dense":
        assert parts["loss"].item() == 0.0 and not logits.grad.any()
    else:
        assert parts["loss"].item() > 0 and logits.grad.abs().sum() > 0


def test_a_window_larger_than_the_step_budget_is_refused():
    with pytest.raises(ConfigError, match="masked_crf.*1330 neighbours.*dilation"):
        LOSS_TERMS.get("masked_crf")(CONTEXT, radius=[5, 5, 5])
    assert 2 * len(window_offsets((3, 3, 2), half=True)) == 244
