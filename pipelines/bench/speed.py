"""Speed and memory, as ratios measured within one run (absolute times drift on shared machines).

- a CIN U-Net training step against MONAI's DynUNet of the same widths, kernels and strides with a
  shared instance norm (the CIN overhead) and MONAI's lighter UNet, with FLOPs and achieved GFLOP/s
  against this machine's measured fp32 matmul peak; the step in channels-last layout and under
  bfloat16 autocast (``train.cpu_bf16``) beside the fp32 one;
- the share of a real pretraining step spent waiting for the data loader;
- the partial Dice+CE loss against MONAI's DiceCELoss, at ``[2, 3, 64, 64, 64]`` and at the patch;
- every expert predicted in one batched pass against one pass per expert, for ``cin: all`` and for
  ``cin: decoder`` (whose encoder runs once for all experts);
- peak memory (growth of the peak resident set, /proc's VmHWM) of a training step and of predicting
  every expert on a 1 mm brain-sized volume, each in a fresh process.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["run", "timeit", "interleaved", "matmul_peak_gflops", "section", "SIZES"]

#: the sizes of a mode without its own ``speed`` entry (``runner.MODES``): experts predicted, the
#: loss's tensor (None: the batch of patches), the prediction-memory volume (None: 1.75 patches),
#: steps of the loader measurement
SIZES = {"experts": 3, "loss_shape": None, "volume": None, "loader_steps": 6}


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


def interleaved(fns: dict, *, repeats: int = 5, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each of ``fns`` (name -> callable), timed in rounds that call each once:
    a ratio of two medians taken this way is not skewed by the machine getting busier or quieter
    between one measurement and the next."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


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
net = create_network("cin_unet", in_channels=1, num_classes=cfg["k"], num_experts=cfg["e"], channels=cfg["channels"], cin=cfg.get("cin", "all"))
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
    sizes = {**SIZES, **ctx.settings.get("speed", {})}
    channels = list(cfg.network.channels)
    patch = list(cfg.data.patch_size or [32, 32, 32])
    batch, k, e = cfg.train.batch_size, 3, sizes["experts"]
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, k, (batch, 1, *patch))
    steps = _train_steps(x, y, channels=channels, k=k, e=e)
    window = [int(s * 1.75) for s in patch]
    volume = sizes["volume"] or window
    loss_shape = sizes["loss_shape"] or [batch, k, *patch]
    probe = {"threads": threads, "k": k, "e": e, "channels": channels, "batch": batch, "patch": patch, "volume": volume, "sw": cfg.predict.sw_batch_size}
    return {
        "settings": {"channels": channels, "patch": patch, "batch": batch, "experts": e, "classes": k, "threads": threads, "volume": volume, "prediction_volume": window, "loss_shape": loss_shape, "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        **steps,
        "loss_seconds": _loss_times(loss_shape),
        "loss_seconds_patch": _loss_times([batch, k, *patch]),
        "prediction_seconds": {cin: _prediction_times(channels, window, patch=patch, k=k, e=e, sw=cfg.predict.sw_batch_size, cin=cin) for cin in ("all", "decoder")},
        "data_wait_fraction": _data_wait(ctx, sizes["loader_steps"]),  # after the timings: a pretraining leaves its process busier
        "peak_memory_mb": {"train_step": _peak("train", probe), "prediction_all_experts": _peak("predict", probe), "prediction_all_experts_cin_decoder": _peak("predict", {**probe, "cin": "decoder"})},
    }


def _train_steps(x, y, *, channels, k: int, e: int) -> dict:
    """Train-step time, FLOPs and achieved GFLOP/s of the CIN U-Net (fp32, channels-last, bf16
    autocast) and of MONAI's DynUNet and UNet."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from experts.losses import PartialDiceCELoss

    loss = PartialDiceCELoss(ignore_label=k)
    calls = _networks(x, channels=channels, k=k, e=e)

    def step(net, call, autocast=None):
        opt = torch.optim.AdamW(net.parameters())

        def go():
            opt.zero_grad()
            with autocast or torch.autocast("cpu", enabled=False):
                out = call(net)
            loss(out.float(), y)["loss"].backward()
            opt.step()

        return go

    def flops(net, call):
        with FlopCounterMode(display=False) as fc:
            loss(call(net), y)["loss"].backward()
        net.zero_grad()
        return fc.get_total_flops()

    f = {name: flops(*nc) for name, nc in calls.items()}
    steps = {name: step(*nc) for name, nc in calls.items()}
    cin, call = calls["cin_unet"]
    steps["cin_unet_bf16"] = step(copy.deepcopy(cin), call, torch.autocast("cpu", dtype=torch.bfloat16))
    last = x.contiguous(memory_format=torch.channels_last_3d)
    steps["cin_unet_channels_last"] = step(copy.deepcopy(cin).to(memory_format=torch.channels_last_3d), lambda n: n(last, torch.arange(x.shape[0]) % e).logits)
    t = interleaved(steps, repeats=7)
    peak = matmul_peak_gflops()
    g = {name: f[name] / t[name] / 1e9 for name in calls}
    return {
        "train_step_seconds": {**t, "ratio": t["cin_unet"] / t["monai_unet"], **({"ratio_dynunet": t["cin_unet"] / t["dynunet"]} if "dynunet" in t else {}), "channels_last_speedup": t["cin_unet"] / t["cin_unet_channels_last"], "bf16_speedup": t["cin_unet"] / t["cin_unet_bf16"]},
        "train_step_gflop": {name: v / 1e9 for name, v in f.items()},
        "achieved_gflops": {**g, "matmul_peak": peak, "cin_fraction_of_peak": g["cin_unet"] / peak},
    }


def _networks(x, *, channels, k: int, e: int) -> dict:
    """``name -> (network, call)``: the CIN U-Net and MONAI's UNet, and DynUNet at 3+ levels."""
    import torch
    from monai.networks.nets import DynUNet, UNet

    from experts.networks import create_network

    experts = torch.arange(x.shape[0]) % e
    levels = len(channels)
    cin = create_network("cin_unet", in_channels=1, num_classes=k, num_experts=e, channels=channels)
    monai = UNet(spatial_dims=3, in_channels=1, out_channels=k, channels=channels, strides=[2] * (levels - 1), norm="instance")
    calls = {"cin_unet": (cin, lambda n: n(x, experts).logits), "monai_unet": (monai, lambda n: n(x))}
    if levels >= 3:  # MONAI's DynUNet needs at least 3 levels
        # the same widths, kernels, strides, up-sampling and activation, with one shared instance norm
        dyn = DynUNet(spatial_dims=3, in_channels=1, out_channels=k, kernel_size=[3] * levels, strides=[1] + [2] * (levels - 1), upsample_kernel_size=[2] * (levels - 1), filters=channels, norm_name=("instance", {"affine": True}), trans_bias=True)
        calls["dynunet"] = (dyn, lambda n: n(x))
    return calls


def _data_wait(ctx, steps: int) -> float | None:
    """The share of a real pretraining's step time spent waiting for the loader (augmentation
    included), from its logged ``train/data_wait_fraction``; None without demo data."""
    if ctx.data is None or steps <= 0:
        return None
    run = ctx.pretrain("speed-loader", overrides=(f"train.steps={steps}", f"train.log_every={steps}", f"train.val_every={steps}", f"train.checkpoint_every={steps}"))
    values = []
    with open(Path(run["out"]) / "tracking.jsonl", encoding="utf-8") as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("event") == "metrics" and "train/data_wait_fraction" in event.get("metrics", {}):
                values.append(event["metrics"]["train/data_wait_fraction"])
    return values[-1] if values else None


def _loss_times(shape) -> dict:
    """Partial Dice+CE against MONAI's DiceCELoss, forward + backward, half the voxels unannotated."""
    import torch
    from monai.losses import DiceCELoss

    from experts.losses import PartialDiceCELoss

    b, k, *spatial = shape
    y = torch.randint(0, k, (b, 1, *spatial))
    logits = torch.randn(b, k, *spatial, requires_grad=True)
    yt = y.clone()
    yt[:, :, ::2] = k
    loss, monai_loss = PartialDiceCELoss(ignore_label=k), DiceCELoss(to_onehot_y=True, softmax=True)
    t = interleaved({"partial_dice_ce": lambda: loss(logits, yt)["loss"].backward(), "dense_dice_ce": lambda: loss(logits, y)["loss"].backward(), "monai_dice_ce": lambda: monai_loss(logits, y).backward()}, repeats=21, warmup=3)
    return {"shape": list(shape), **t, "ratio": t["partial_dice_ce"] / t["monai_dice_ce"], "ratio_dense": t["dense_dice_ce"] / t["monai_dice_ce"]}


def _prediction_times(channels, volume, *, patch, k: int, e: int, sw: int, cin: str) -> dict:
    """Every expert in one batched sliding-window pass against one pass per expert."""
    import torch

    from experts.inference import predict_experts
    from experts.networks import create_network

    net = create_network("cin_unet", in_channels=1, num_classes=k, num_experts=e, channels=channels, cin=cin).eval()
    vol = torch.randn(1, *volume)
    t = interleaved({"all_experts_batched": lambda: predict_experts(net, vol, list(range(e)), patch_size=patch, sw_batch_size=sw), "one_pass_per_expert": lambda: [predict_experts(net, vol, [r], patch_size=patch, sw_batch_size=sw) for r in range(e)]}, repeats=5, warmup=1)
    out = {**t, "speedup": t["one_pass_per_expert"] / t["all_experts_batched"]}
    if cin == "decoder":  # what computing the encoder once can save at most: the FLOPs of E passes over those of the batched one
        from torch.utils.flop_counter import FlopCounterMode

        window = torch.randn(1, 1, *patch)
        counts = []
        for rows in ([0], list(range(e))):
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                net.expert_logits(window, torch.tensor(rows))
            counts.append(fc.get_total_flops())
        out["flop_bound_speedup"] = e * counts[0] / counts[1]
    return out


def section(sp: dict, rel: list[str], command: str) -> list[str]:
    """The BENCHMARKS.md section."""
    st, ts, ag, fl = sp["settings"], sp["train_step_seconds"], sp["achieved_gflops"], sp["train_step_gflop"]
    ls, lp, pr, mem = sp["loss_seconds"], sp.get("loss_seconds_patch") or sp["loss_seconds"], sp["prediction_seconds"], sp["peak_memory_mb"]
    wait = sp.get("data_wait_fraction")
    rows = [
        *([f"| CIN U-Net train step / MONAI DynUNet train step (same widths, kernels, strides; shared instance norm: the CIN overhead) | {ts['ratio_dynunet']:.2f} ({ts['cin_unet']:.3f} s vs {ts['dynunet']:.3f} s) |"] if "dynunet" in ts else []),
        f"| CIN U-Net train step / MONAI UNet train step (same widths, instance norm; a lighter network) | {ts['ratio']:.2f} ({ts['cin_unet']:.3f} s vs {ts['monai_unet']:.3f} s) |",
        f"| GFLOP per train step: CIN U-Net / MONAI UNet | {fl['cin_unet']:.1f} / {fl['monai_unet']:.1f} |",
        f"| achieved GFLOP/s of a CIN train step (fp32) / measured fp32 matmul peak | {ag['cin_unet']:.1f} / {ag['matmul_peak']:.1f} ({ag['cin_fraction_of_peak']:.0%}) |",
        *([f"| achieved GFLOP/s of a MONAI DynUNet step | {ag['dynunet']:.1f} |"] if "dynunet" in ag else []),
        f"| achieved GFLOP/s of a MONAI UNet train step (fewer, smaller convolutions) | {ag['monai_unet']:.1f} |",
        *([f"| CIN train step, fp32 / channels-last layout | {ts['channels_last_speedup']:.2f}x |", f"| CIN train step, fp32 / bfloat16 autocast (`train.cpu_bf16: true`; CPU {st.get('cpu_capability', '?')}) | {ts['bf16_speedup']:.2f}x |"] if "bf16_speedup" in ts else []),
        *([f"| share of a pretraining step waiting for the data loader (augmentation included) | {wait:.1%} |"] if wait is not None else []),
        f"| partial Dice+CE / MONAI DiceCELoss, forward + backward, at {ls.get('shape', '?')} (half the voxels unannotated; dense labels) | {ls['ratio']:.2f} ({ls.get('ratio_dense', float('nan')):.2f}) |",
        *([f"| the same at {lp['shape']} (the patch) | {lp['ratio']:.2f} ({lp['ratio_dense']:.2f}) |"] if "loss_seconds_patch" in sp else []),
    ]
    if "all" in pr:
        rows += [f"| one pass per expert / all {st['experts']} experts batched, `cin: {c}` (prediction of {st.get('prediction_volume', st['volume'])} voxels; above 1: batching wins) | {pr[c]['speedup']:.2f}x"
                 + (f" (by FLOPs alone: {pr[c]['flop_bound_speedup']:.2f}x; the decoder, run per expert, holds most of them)" if "flop_bound_speedup" in pr[c] else "") + " |" for c in pr]
    else:
        rows.append(f"| one pass per expert / all experts batched (prediction; above 1: batching wins) | {pr['speedup']:.2f}x |")
    rows.append(f"| peak memory growth: train step / prediction of {st['experts']} experts on {st['volume']} voxels | {mem['train_step']:.0f} MB / {mem['prediction_all_experts']:.0f} MB" + (f" (`cin: decoder`: {mem['prediction_all_experts_cin_decoder']:.0f} MB)" if "prediction_all_experts_cin_decoder" in mem else "") + " |")
    return ["## Speed and memory", "", f"Command: `{sp.get('command', command)}`. Measured in one process as ratios, medians of repeats: patch {st['patch']}, batch {st['batch']}, widths {st['channels']}, {st['experts']} experts, {st['threads']} threads.", "",
            "| measurement | value |", "|---|---|", *rows, ""]
