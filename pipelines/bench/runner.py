"""The bench's shared state: data, shared pretrainings, timings, results."""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

__all__ = ["BenchContext", "run_bench", "suite_options", "SUITES", "MODES"]

#: mode -> demo data size, config, how many adaptation seeds (and the speed suite's sizes, speed.SIZES)
MODES = {
    "quick": {"n_train": 10, "n_test": 3, "spacing": 5.0, "config": None, "seeds": 1, "ks": [1, 3], "overrides": (
        "network.channels=[8,16,32]", "data.patch_size=[16,16,16]", "data.n_folds=5", "train.steps=120", "train.val_every=1000",
        "train.checkpoint_every=1000", "adapt.steps=40", "adapt.eval_every=10", "predict.sw_batch_size=2",
    ), "scratch_steps": 60},
    "full": {"n_train": 24, "n_test": 6, "spacing": 3.0, "config": "bench.yaml", "seeds": 3, "ks": [1, 3, 5, "all"], "overrides": (), "scratch_steps": None,
             "speed": {"experts": 6, "loss_shape": [2, 3, 64, 64, 64], "volume": [160, 192, 160], "loader_steps": 60}},
}
SUITES = ("modelling", "efficiency", "scribbles", "speed")
#: suites run only when named (--suite): they take longer than the full mode's hour
EXTRA_SUITES = ("targets", "prompts", "capacity", "selection", "regularisers", "annotation", "interactive")


@dataclass
class BenchContext:
    """Where the bench runs and what it has computed so far."""

    out: Path
    mode: str
    config: str | None
    overrides: tuple[str, ...]
    data: Path | None = None
    results: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    #: suite options, ``{"<suite>.<key>": "value"}`` (``--option``), e.g. fewer seeds
    options: dict = field(default_factory=dict)
    #: reuse the runs an interrupted bench finished in ``out`` (a run folder with its summary)
    resume: bool = False
    #: the results committed beside the report (``benchmarks/results.json``), read by :meth:`earlier`
    committed: Path | None = None

    @property
    def settings(self) -> dict:
        return MODES[self.mode]

    def pretrain(self, name: str, *, data: Path | None = None, config: str | None = None, **kwargs) -> dict:
        """A pretraining shared by name between suites (run once, reused)."""
        from pipelines.runtime.stages import stage_runner

        pretrain = stage_runner("pretrain")

        if name in self.runs:
            return self.runs[name]
        out = self.out / "runs" / name
        if self._finished(out):
            self.runs[name] = json.loads((out / "summary.json").read_text())
            return self.runs[name]
        t0 = time.perf_counter()
        extra = tuple(kwargs.pop("overrides", ()))
        base = self.overrides if config is None else ()
        summary = pretrain(data=str(data or self.data), out=str(out), config_path=config or self.config, overrides=base + extra, tracking="local", overwrite=True, progress=False, **kwargs)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        self.runs[name] = summary
        self.save()
        return summary

    def adapt(self, name: str, *, config: str | None = None, **kwargs) -> dict:
        from pipelines.runtime.stages import stage_runner

        adapt = stage_runner("adapt")

        out = self.out / "runs" / name
        if self._finished(out):
            return json.loads((out / "summary.json").read_text())
        extra = tuple(kwargs.pop("overrides", ()))
        base = self.overrides if config is None else ()
        summary = adapt(data=str(kwargs.pop("data", self.data)), out=str(out), config_path=config or self.config, overrides=base + extra, tracking="local", overwrite=True, progress=False, **kwargs)
        shutil.rmtree(out / "model", ignore_errors=True)  # the adapter is what matters; keep the bench folder small
        return summary

    def _finished(self, out: Path) -> bool:
        """With ``resume``: a run of this name finished earlier (it trusts the name: resume only the
        command that was interrupted)."""
        return self.resume and (out / "summary.json").is_file()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps({"mode": self.mode, "config": self.config, "overrides": list(self.overrides), "machine": machine(), "results": self.results, "runs": self.runs, "seconds": self.seconds, "commands": self.commands}, indent=1, default=str))

    def earlier(self, suite: str) -> dict:
        """The results an earlier run of ``suite`` left: in ``out``, else the committed ones (when they
        ran in this mode, config and overrides). A suite that keeps earlier entries (capacity and
        annotation keep the experts measured on the other kind of structures) so keeps them when it
        runs into a new folder, and the report it writes drops nothing."""
        from pipelines.bench.report import setting

        if self.results.get(suite):
            return self.results[suite]
        if self.committed is None or not self.committed.is_file():
            return {}
        section = json.loads(self.committed.read_text()).get("sections", {}).get(suite, {})
        same = all(section.get(k, [] if k == "overrides" else None) == v for k, v in setting(self).items())
        return section.get("results", {}) if same else {}

    def load_earlier(self) -> None:
        """Keep the results of earlier suites run into the same folder and mode (one results.json
        grows suite by suite; each suite records the command that produced it)."""
        path = self.out / "results.json"
        if not path.is_file():
            return
        old = json.loads(path.read_text())
        if old.get("mode") != self.mode:
            return
        self.results.update(old.get("results", {}))
        self.runs.update(old.get("runs", {}))
        self.seconds.update(old.get("seconds", {}))
        self.commands.extend(old.get("commands", []))


def suite_options(ctx, suite: str, defaults: dict) -> dict:
    """``defaults`` with the ``--option <suite>.<key>=<value>`` of ``ctx.options`` applied, each
    value read as its default's type (a whole number or a number)."""
    from experts.errors import ConfigError

    out = dict(defaults)
    for key, value in (getattr(ctx, "options", None) or {}).items():
        name_suite, _, name = key.partition(".")
        if name_suite != suite:
            continue
        if name not in defaults:
            raise ConfigError(f"--option {key}: unknown; known: {', '.join(f'{suite}.{k}' for k in defaults)}")
        kind = type(defaults[name])
        try:
            out[name] = kind(value)
        except ValueError:
            raise ConfigError(f"--option {key}={value}: must be a {'whole ' if kind is int else ''}number") from None
    return out


def known_experts(option: str, names, manifest) -> list[str]:
    """``names`` (from ``--option <option>``) checked against the dataset's experts."""
    from experts.errors import ConfigError

    unknown = [e for e in names if e not in manifest.experts]
    if unknown:
        raise ConfigError(f"--option {option}: {', '.join(unknown)} not in the dataset ({', '.join(manifest.experts)})")
    return list(names)


def machine() -> dict:
    import os

    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        info["cpu"] = model
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        pass
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def run_bench(*, out: str, mode: str = "full", suites: tuple[str, ...] = SUITES, data: str | None = None, write: str | None = None, command: str = "", options: dict | None = None,
              resume: bool = False) -> dict:
    """Run the chosen suites and write ``results.json``, plots and (optionally) ``BENCHMARKS.md``.
    With no suites, nothing runs: the plots and the Markdown are written from ``results.json``.
    ``options`` (``{"<suite>.<key>": value}``) are read by the suite they name; ``resume`` reuses
    the pretrainings and adaptations an interrupted run of the same command finished."""
    from pipelines.bench import report

    if mode not in MODES:
        raise click.UsageError(f"mode must be one of {', '.join(MODES)}")
    settings = MODES[mode]
    root = Path(__file__).resolve().parents[2]
    config = str(root / "configs" / settings["config"]) if settings["config"] else None
    committed = (Path(write).parent if write else root) / "benchmarks" / report.RESULTS_FILE
    ctx = BenchContext(out=Path(out), mode=mode, config=config, overrides=settings["overrides"], options=dict(options or {}), resume=resume, committed=committed)
    stray = sorted({k.partition(".")[0] for k in ctx.options} - set(suites))
    if stray:
        raise click.UsageError(f"--option for suite(s) {', '.join(stray)} that do not run; add --suite {stray[0]}")
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.load_earlier()
    if suites:
        _run_suites(ctx, suites, data=data, command=command)
    elif not ctx.results:
        raise click.UsageError(f"{ctx.out / 'results.json'}: no {mode}-mode results to report; run the bench first")
    figures = report.plots(ctx)
    if write:
        report.markdown(ctx, Path(write), figures=figures, command=command, suites=tuple(suites) or None)
    click.echo(f"bench ({mode}): results in {ctx.out / 'results.json'}" + (f", report in {write}" if write else ""))
    return json.loads((ctx.out / "results.json").read_text())


def _run_suites(ctx: BenchContext, suites: tuple[str, ...], *, data: str | None, command: str) -> None:
    from pipelines.bench import annotation, capacity, efficiency, interactive, modelling, prompts, regularisers, scribbles, selection, speed, targets

    settings = ctx.settings
    t_all = time.perf_counter()
    if data is None and (ctx.out / "data" / "dataset.json").is_file() and ctx.runs:
        data = str(ctx.out / "data")  # the same generated data as the earlier suites
    if data is None:
        from experts.data.demo import make_demo_dataset

        t0 = time.perf_counter()
        data = str(make_demo_dataset(ctx.out / "data", seed=0, n_train=settings["n_train"], n_test=settings["n_test"], spacing=settings["spacing"], overwrite=True, progress=False))
        ctx.seconds["data"] = round(time.perf_counter() - t0, 1)
    ctx.data = Path(data)
    table = {"modelling": modelling.run, "efficiency": efficiency.run, "scribbles": scribbles.run, "speed": speed.run, "targets": targets.run, "prompts": prompts.run, "capacity": capacity.run, "selection": selection.run, "regularisers": regularisers.run, "annotation": annotation.run, "interactive": interactive.run}
    for name in suites:
        t0 = time.perf_counter()
        click.echo(f"bench: {name} ...", err=True)
        ctx.results[name] = table[name](ctx)
        ctx.results[name]["command"] = command
        ctx.results[name]["machine"] = machine()  # the report names the machine the suite ran on, not the one that rewrites it
        ctx.seconds[name] = round(time.perf_counter() - t0, 1)
        ctx.save()
    ctx.seconds[f"total ({'+'.join(suites)})"] = round(time.perf_counter() - t_all, 1)
    ctx.commands.append(command)
    ctx.save()
    click.echo(f"bench ({ctx.mode}) suites finished in {time.perf_counter() - t_all:.0f} s", err=True)
