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

    from pipelines.runtime.config import load_config

    cfg = load_config(ctx.config, ctx.overrides)
    channels = list(cfg.network.channels)
    patch = list(cfg.data.patch_size or [32, 32, 32])
    batch, k, e = cfg.train.batch_size, 3, 5
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, k, (batch, 1, *patch))
    cin, steps = _train_steps(x, y, channels=channels, k=k, e=e)
    volume = [int(s * 1.75) for s in patch]
    probe = {"threads": threads, "k": k, "e": e, "channels": channels, "batch": batch, "patch": patch, "volume": volume, "sw": cfg.predict.sw_batch_size}
    return {
        "settings": {"channels": channels, "patch": patch, "batch": batch, "experts": e, "classes": k, "threads": threads, "volume": volume},
        **steps,
        "loss_seconds": _loss_times(y, k=k),
        "prediction_seconds": _prediction_times(cin, volume, patch=patch, e=e, sw=cfg.predict.sw_batch_size),
        "peak_memory_mb": {"train_step": _peak("train", probe), "prediction_all_experts": _peak("predict", probe)},
    }


def _train_steps(x, y, *, channels, k: int, e: int):
    """Train-step time, FLOPs and achieved GFLOP/s of the CIN U-Net and MONAI's UNet."""
    import torch
    from monai.networks.nets import DynUNet, UNet
    from torch.utils.flop_counter import FlopCounterMode

    from experts.losses import PartialDiceCELoss
    from experts.networks import create_network

    experts = torch.arange(x.shape[0]) % e
    levels = len(channels)
    cin = create_network("cin_unet", in_channels=1, num_classes=k, num_experts=e, channels=channels)
    # the same widths, kernels, strides, up-sampling and activation, with one shared instance norm:
    # the CIN overhead alone
    monai = UNet(spatial_dims=3, in_channels=1, out_channels=k, channels=channels, strides=[2] * (levels - 1), norm="instance")
    loss = PartialDiceCELoss(ignore_label=k)
    calls = {"cin_unet": (cin, lambda n: n(x, experts).logits), "monai_unet": (monai, lambda n: n(x))}
    if levels >= 3:  # MONAI's DynUNet needs at least 3 levels
        dyn = DynUNet(spatial_dims=3, in_channels=1, out_channels=k, kernel_size=[3] * levels, strides=[1] + [2] * (levels - 1), upsample_kernel_size=[2] * (levels - 1), filters=channels, norm_name=("instance", {"affine": True}), trans_bias=True)
        calls["dynunet"] = (dyn, lambda n: n(x))

    def step(net, call):
        opt = torch.optim.AdamW(net.parameters())

        def go():
            opt.zero_grad()
            loss(call(net), y)["loss"].backward()
            opt.step()

        return go

    def flops(net, call):
        with FlopCounterMode(display=False) as fc:
            loss(call(net), y)["loss"].backward()
        net.zero_grad()
        return fc.get_total_flops()

    t = {name: timeit(step(*nc)) for name, nc in calls.items()}
    f = {name: flops(*nc) for name, nc in calls.items()}
    peak = matmul_peak_gflops()
    g = {name: f[name] / t[name] / 1e9 for name in calls}
    return cin, {
        "train_step_seconds": {**t, "ratio": t["cin_unet"] / t["monai_unet"], **({"ratio_dynunet": t["cin_unet"] / t["dynunet"]} if "dynunet" in t else {})},
        "train_step_gflop": {name: v / 1e9 for name, v in f.items()},
        "achieved_gflops": {**g, "matmul_peak": peak, "cin_fraction_of_peak": g["cin_unet"] / peak},
    }


def _loss_times(y, *, k: int) -> dict:
    """Partial Dice+CE against MONAI's DiceCELoss, forward + backward, half the voxels unannotated."""
    import torch
    from monai.losses import DiceCELoss

    from experts.losses import PartialDiceCELoss

    logits = torch.randn(y.shape[0], k, *y.shape[2:], requires_grad=True)
    yt = y.clone()
    yt[:, :, ::2] = k
    loss, monai_loss = PartialDiceCELoss(ignore_label=k), DiceCELoss(to_onehot_y=True, softmax=True)
    t_partial = timeit(lambda: loss(logits, yt)["loss"].backward(), repeats=9)
    t_monai = timeit(lambda: monai_loss(logits, y).backward(), repeats=9)
    return {"partial_dice_ce": t_partial, "monai_dice_ce": t_monai, "ratio": t_partial / t_monai}


def _prediction_times(cin, volume, *, patch, e: int, sw: int) -> dict:
    """All experts in one batched sliding-window pass against one pass per expert."""
    import torch

    from experts.inference import predict_experts

    vol = torch.randn(1, *volume)
    cin.eval()
    t_batched = timeit(lambda: predict_experts(cin, vol, list(range(e)), patch_size=patch, sw_batch_size=sw), repeats=3, warmup=1)
    t_each = timeit(lambda: [predict_experts(cin, vol, [r], patch_size=patch, sw_batch_size=sw) for r in range(e)], repeats=3, warmup=1)
    return {"all_experts_batched": t_batched, "one_pass_per_expert": t_each, "speedup": t_each / t_batched}
