"""em_class_ratio: the EM mixture estimate, its spatial prior and complementary loss, its state."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from experts.losses import LOSS_TERMS, TermContext, TermError
from experts.losses.class_ratio import complementary_loss, em_prior_update, not_class_mask
from experts.records import Batch, NetOutput

K, IGNORE = 3, 3
CONTEXT = TermContext(ignore_label=IGNORE, num_classes=K)


def mixture_posteriors(true, labelled, n=100_000, seed=0):
    """Posteriors of a Bayes classifier calibrated to ``labelled`` priors, on voxels drawn from the
    mixture ``true``: 1D features with unit Gaussians at -2, 0, 2. Returns ``[1, K, n]``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
    c = torch.multinomial(true, n, replacement=True, generator=g)
    x = means[c] + torch.randn(n, generator=g, dtype=torch.float64)
    post = labelled[:, None] * torch.exp(-(x[None] - means[:, None]) ** 2 / 2)
    return (post / post.sum(0)).unsqueeze(0)


@pytest.mark.parametrize("true", [[0.6, 0.3, 0.1], [0.15, 0.15, 0.7]])
def test_em_recovers_the_ratio_of_a_synthetic_mixture(true):
    true = torch.tensor(true, dtype=torch.float64)
    labelled = torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    p = mixture_posteriors(true, labelled)
    pi, voxels, iterations = em_prior_update(p, torch.tensor([0]), torch.ones(1, p.shape[-1], dtype=torch.float64), labelled[None].clone(), labelled[None].clone(), tolerance=1e-7, max_iter=2000)
    assert torch.allclose(pi[0], true, atol=1e-2) and voxels.item() == p.shape[-1] and iterations > 1


def volume_batch(p_true=(0.6, 0.3, 0.1), scribbled=0.02, seed=0, experts=(0, 1)):
    """Two [1, 4, 16, 16] samples whose logits are the log-posteriors of a mixture; a few voxels scribbled."""
    b, shape = len(experts), (4, 16, 16)
    n = 4 * 16 * 16
    labelled = torch.tensor([1 / 3] * 3, dtype=torch.float64)
    p = torch.cat([mixture_posteriors(torch.tensor(p_true, dtype=torch.float64), labelled, n=n, seed=seed + i) for i in range(b)])
    g = torch.Generator().manual_seed(seed)
    label = torch.full((b, 1, *shape), IGNORE)
    scrib = torch.rand(b, 1, *shape, generator=g) < scribbled
    label[scrib] = torch.randint(0, K, (int(scrib.sum()),), generator=g)
    logits = p.log().float().reshape(b, K, *shape).requires_grad_()
    return NetOutput(logits=logits), Batch(image=torch.zeros(b, 1, *shape), label=label, expert=torch.tensor(experts), spacing=torch.ones(b, 3))


def test_the_term_estimates_the_unannotated_mixture_per_expert_and_runs_across_steps():
    term = LOSS_TERMS.get("em_class_ratio")(CONTEXT, tolerance=1e-6, momentum=0.5)
    out, batch = volume_batch()
    parts = term(out, batch)
    assert term.updates.tolist()[:3] == [1, 1, 0]
    assert torch.allclose(term.prior[0].float(), torch.tensor([0.6, 0.3, 0.1]), atol=0.05)
    assert torch.equal(term.prior[2], torch.full((K,), 1 / K, dtype=torch.float64))  # an expert never seen keeps its start
    parts["loss"].backward()
    assert parts["loss"].item() > 0 and out.logits.grad.abs().sum() > 0
    assert parts["pi_0"].item() == pytest.approx(term.prior[:2, 0].mean().item(), abs=1e-6)
    before = term.prior.clone()
    term(*volume_batch(seed=5))
    assert term.updates[0] == 2 and not torch.equal(before, term.prior)


def test_not_c_marks_voxels_below_the_one_minus_pi_quantile():
    score = torch.tensor([[[0.1, 0.2, 0.3, 0.4, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]]], dtype=torch.float64)  # [1, 2, 5]
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)  # the last voxel is annotated
    pi = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    marked = not_class_mask(score, weight, pi)
    assert marked[0, 0].tolist() == [True, True, True, False, False]  # top quarter may be class 0
    assert marked[0, 1].tolist() == [False, False, False, True, False]  # top three quarters may be class 1


def test_complementary_loss_is_minus_log_of_the_allowed_mass_and_differentiable():
    logits = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)  # [B=1, K=3, N=4]
    not_c = torch.tensor([[[True, False, False, True], [False, False, True, True], [False, False, True, True]]])
    weight = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    p = logits.softmax(1).detach()
    want = (-(p[0, 1, 0] + p[0, 2, 0]).log() - p[0, 0, 2].log()) / 3  # voxel 1 allows all: 0; voxel 3 is annotated
    assert complementary_loss(logits, not_c, weight).item() == pytest.approx(want.item())
    assert torch.autograd.gradcheck(lambda z: complementary_loss(z, not_c, weight), (logits,))


@pytest.mark.parametrize("kind", ["dense", "scribbled", "mixed"])
def test_term_on_dense_scribbled_and_mixed_batches(kind):
    out, batch = volume_batch()
    if kind == "dense":
        batch.label[:] = 0
    elif kind == "mixed":
        batch.label[0] = 1
    term = LOSS_TERMS.get("em_class_ratio")(CONTEXT)
    parts = term(out, batch)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
    assert term.updates[:2].tolist() == {"dense": [0, 0], "scribbled": [1, 1], "mixed": [0, 1]}[kind]
    assert (parts["loss"].item() == 0.0) == (kind == "dense")


def test_invalid_state_stops_with_a_message_naming_the_term():
    term = LOSS_TERMS.get("em_class_ratio")(CONTEXT)
    state = term.state_dict()
    state["prior"][0, 0] = float("nan")
    with pytest.raises(TermError, match="em_class_ratio.*invalid"):
        term.load_state_dict(state)
    with pytest.raises(TermError, match="exceeds its state tables.*max_experts"):
        LOSS_TERMS.get("em_class_ratio")(CONTEXT, max_experts=1)(*volume_batch())


def _rank(rank, world, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out, batch = volume_batch(seed=0)
    share = slice(rank, rank + 1)  # each rank holds one sample of the global batch
    term = LOSS_TERMS.get("em_class_ratio")(CONTEXT, tolerance=1e-6)
    for _ in range(2):
        term(NetOutput(logits=out.logits[share]), Batch(image=batch.image[share], label=batch.label[share], expert=torch.tensor([0]), spacing=batch.spacing[share]))
    torch.save(term.state_dict(), os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_under_ddp_every_rank_holds_the_estimate_of_the_whole_batch(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    out, batch = volume_batch(seed=0, experts=(0, 0))  # one process, the global batch
    single = LOSS_TERMS.get("em_class_ratio")(CONTEXT, tolerance=1e-6)
    for _ in range(2):
        single(out, batch)
    for key in ("prior", "labelled_counts", "updates"):
        assert torch.equal(a[key], b[key]), key
        assert torch.allclose(a[key].double(), single.state_dict()[key].double(), atol=1e-9), key
