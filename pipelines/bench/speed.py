"""Speed and memory, as ratios measured within one run (absolute times drift on shared machines).

- a CIN U-Net training step against a MONAI UNet of the same widths with plain instance norm;
- the partial Dice+CE loss against MONAI's DiceCELoss;
- all experts predicted in one batched pass against one pass per expert;
- peak memory (growth of the peak resident set, /proc's VmHWM) of a training step and of a prediction, in fresh processes;
- achieved GFLOP/s of a training step against this machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

__all__ = ["run", "timeit", "matmul_peak_gflops"]


def timeit(fn, *, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_gflops(n: int = 2048) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timeit(lambda: a @ b, repeats=7) / 1e9


_MEMORY_PROBE = """
import json, resource, sys, torch
def rss_mb(field):  # this process's own pages: ru_maxrss would include the parent's peak before exec
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from experts.networks import create_network
from experts.inference import predict_experts
from experts.losses import PartialDiceCELoss
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
net = create_network("cin_unet", in_channels=1, num_classes=cfg["k"], num_experts=cfg["e"], channels=cfg["channels"])
opt = torch.optim.AdamW(net.parameters())
x = torch.randn(cfg["batch"], 1, *cfg["patch"]); y = torch.randint(0, cfg["k"], (cfg["batch"], 1, *cfg["patch"]))
vol = torch.randn(1, *cfg["volume"])
try:
    open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
except OSError:
    pass
before = rss_mb("VmRSS")
if cfg["what"] == "train":
    for _ in range(2):
        opt.zero_grad(); PartialDiceCELoss(ignore_label=cfg["k"])(net(x, torch.zeros(cfg["batch"], dtype=torch.long)).logits, y)["loss"].backward(); opt.step()
else:
    with torch.no_grad():
        predict_experts(net, vol, list(range(cfg["e"])), patch_size=cfg["patch"], sw_batch_size=cfg["sw"])
print(json.dumps({"peak_growth_mb": rss_mb("VmHWM") - before}))
"""


def _peak(what: str, probe: dict) -> float:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, json.dumps({**probe, "what": what})], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mb"]


def run(ctx) -> dict:
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from torch.utils.flop_counter import FlopCounterMode

    from experts.inference import predict_experts
    from experts.losses import PartialDiceCELoss
    from experts.networks import create_network
    from pipelines.runtime.config import load_config

    cfg = load_config(ctx.config, ctx.overrides)
    channels = list(cfg.network.channels)
    patch = list(cfg.data.patch_size or [32, 32, 32])
    batch, k, e = cfg.train.batch_size, 3, 5
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, k, (batch, 1, *patch))
    experts = torch.arange(batch) % e

    cin = create_network("cin_unet", in_channels=1, num_classes=k, num_experts=e, channels=channels)
    monai = UNet(spatial_dims=3, in_channels=1, out_channels=k, channels=channels, strides=[2] * (len(channels) - 1), norm="instance")
    loss = PartialDiceCELoss(ignore_label=k)

    def step(net, call):
        opt = torch.optim.AdamW(net.parameters())

        def go():
            opt.zero_grad()
            loss(call(net), y)["loss"].backward()
            opt.step()

        return go

    cin_step = step(cin, lambda n: n(x, experts).logits)
    monai_step = step(monai, lambda n: n(x))
    t_cin, t_monai = timeit(cin_step), timeit(monai_step)

    def flops(call, net):
        with FlopCounterMode(display=False) as fc:
            loss(call(net), y)["loss"].backward()
        net.zero_grad()
        return fc.get_total_flops()

    f_cin, f_monai = flops(lambda n: n(x, experts).logits, cin), flops(lambda n: n(x), monai)
    peak = matmul_peak_gflops()

    logits = torch.randn(batch, k, *patch, requires_grad=True)
    yt = y.clone()
    yt[:, :, ::2] = k  # half the voxels unannotated
    monai_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    t_partial = timeit(lambda: loss(logits, yt)["loss"].backward(), repeats=9)
    t_monai_loss = timeit(lambda: monai_loss(logits, y).backward(), repeats=9)

    volume = [1] + [int(s * 1.75) for s in patch]
    vol = torch.randn(*volume)
    cin.eval()
    sw = cfg.predict.sw_batch_size
    t_batched = timeit(lambda: predict_experts(cin, vol, list(range(e)), patch_size=patch, sw_batch_size=sw), repeats=3, warmup=1)
    t_each = timeit(lambda: [predict_experts(cin, vol, [r], patch_size=patch, sw_batch_size=sw) for r in range(e)], repeats=3, warmup=1)

    probe = {"threads": threads, "k": k, "e": e, "channels": channels, "batch": batch, "patch": patch, "volume": volume[1:], "sw": sw}
    return {
        "settings": {"channels": channels, "patch": patch, "batch": batch, "experts": e, "classes": k, "threads": threads, "volume": volume[1:]},
        "train_step_seconds": {"cin_unet": t_cin, "monai_unet": t_monai, "ratio": t_cin / t_monai},
        "train_step_gflop": {"cin_unet": f_cin / 1e9, "monai_unet": f_monai / 1e9},
        "achieved_gflops": {"cin_unet": f_cin / t_cin / 1e9, "monai_unet": f_monai / t_monai / 1e9, "matmul_peak": peak, "cin_fraction_of_peak": f_cin / t_cin / 1e9 / peak},
        "loss_seconds": {"partial_dice_ce": t_partial, "monai_dice_ce": t_monai_loss, "ratio": t_partial / t_monai_loss},
        "prediction_seconds": {"all_experts_batched": t_batched, "one_pass_per_expert": t_each, "speedup": t_each / t_batched},
        "peak_memory_mb": {"train_step": _peak("train", probe), "prediction_all_experts": _peak("predict", probe)},
    }
