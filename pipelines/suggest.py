"""``expertseg suggest``: which cases a new doctor should label first.

The command orchestrates; the ranking is :func:`experts.selection.suggest_cases`: the model
conditioned on each existing expert looks at the candidate images and a registered strategy ranks
them (the doctor's labels are never read). It prints the K cases with the reason for each, writes
them as JSON with ``--out``, and ends with the ``expertseg adapt --cases`` line to run once the
doctor has labelled them. Nothing is trained and nothing is tracked: a suggestion is a query.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click

from experts.errors import ConfigError

__all__ = ["suggest", "parse_params"]


def suggest(
    *,
    model: str,
    data: str,
    expert: str,
    k: int,
    strategy: str = "foreground-random",
    params: dict | None = None,
    candidates: str = "unlabelled",
    seed: int = 0,
    out: str | None = None,
    config_path: str | None = None,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
) -> dict:
    """Rank ``expert``'s candidate cases of ``data`` with ``strategy``; returns what ``--out`` holds.

    Every check that needs no prediction (strategy, K, the output file) runs before the model is
    loaded. The config's ``predict`` section (``--config`` / ``--set``) sets the sliding window.
    """
    from experts.data.manifest import scan_dataset
    from experts.selection import candidate_cases, check_k, create_strategy, suggest_cases
    from pipelines.runtime.common import select_device
    from pipelines.runtime.config import load_config
    from pipelines.runtime.models import load_model

    t0 = time.perf_counter()
    pcfg = load_config(config_path, overrides).predict
    chosen = create_strategy({"name": strategy, "params": params or {}})
    manifest = scan_dataset(data)
    cands, labelled = candidate_cases(manifest, expert, candidates)
    check_k(k, cands, expert=expert, which=candidates)
    target = _check_out_file(out)
    device = select_device()
    bundle = load_model(model, device=device)
    suggestion = suggest_cases(bundle, manifest, expert=expert, k=k, strategy=chosen, candidates=cands, labelled=labelled, seed=seed, device=device, sw_batch_size=pcfg.sw_batch_size, overlap=pcfg.overlap, blend=pcfg.blend, progress=progress)
    result = {**suggestion.to_dict(), "model": model, "data": str(manifest.root), "candidates": candidates, "n_candidates": len(cands), "seconds": round(time.perf_counter() - t0, 1)}
    result["adapt_command"] = adapt_line(model=model, data=data, expert=expert, cases=suggestion.cases)
    if target is not None:
        from experts.training.checkpoint import atomic_write_bytes

        atomic_write_bytes(target, (json.dumps(result, indent=2) + "\n").encode())
    _print(result, known=expert in manifest.experts, out=target)
    return result


def parse_params(items: tuple[str, ...]) -> dict:
    """``("weight=0.7", "start=random")`` -> ``{"weight": 0.7, "start": "random"}`` (values read as YAML)."""
    from experts.params import load_yaml

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: write KEY=VALUE, e.g. --param weight=0.7")
        params[key.strip()] = load_yaml(value, where=f"--param {key.strip()}")
    return params


def adapt_line(*, model: str, data: str, expert: str, cases: list[str]) -> str:
    """The ``expertseg adapt`` command that adapts to ``expert`` on ``cases``."""
    args = ["expertseg", "adapt", "--model", model, "--data", data, "--expert", expert, "--cases", ",".join(cases), "--out", f"runs/adapt-{expert}"]
    return " ".join(shlex.quote(a) for a in args)


def _check_out_file(out: str | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"{out}: is a folder; --out names the JSON file to write, e.g. --out suggestion.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _print(result: dict, *, known: bool, out: Path | None) -> None:
    expert, n = result["expert"], result["n_candidates"]
    if not known:
        click.echo(f"note: {expert} has no labels in {result['data']} yet: every training case is a candidate")
    where = f"{n} {'unlabelled ' if result['candidates'] == 'unlabelled' else ''}training case(s)"
    seed = f", seed {result['seed']}" if result["strategy"] in ("random", "foreground-random") or result["params"].get("start") == "random" else ""
    click.echo(f"label first, for {expert} ({result['strategy']} over {where}{seed}; experts asked: {', '.join(result['experts'])}):")
    width = max(len(c) for c in result["cases"])
    for entry in result["ranking"][: result["k"]]:
        click.echo(f"  {entry['rank']:>2}. {entry['case']:<{width}}  {entry['reason']}")
    if out is not None:
        click.echo(f"ranking of all {n} candidates: {out.resolve()}")
    click.echo("once they are labelled:")
    click.echo(f"  {result['adapt_command']}")
