"""``expertseg refine``: apply a prompts file to a scan with an interactive model, in one expert's style.

The library does the work (:class:`experts.interactive.session.InteractiveSession`); this command
reads the prompts file, runs each prompt as one interaction and writes the mask with the input's
exact affine and shape, and a JSON log of the interactions beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["refine"]


def refine(*, model: str, images: list[str], expert: str, prompts: str, out: str, target: str | None = None, device: str = "cpu") -> dict:
    """Refine ``expert``'s automatic mask of one class on ``images`` with the prompts in ``prompts``."""
    from experts.errors import ConfigError
    from experts.interactive.prompt_file import apply_prompt, read_prompt_file
    from experts.interactive.session import InteractiveSession
    from pipelines.runtime.models import load_model

    spec = read_prompt_file(prompts)  # before any model is loaded
    if not (out.endswith(".nii.gz") or out.endswith(".nii")):
        raise ConfigError(f"--out {out}: the mask is a NIfTI file; end the name with .nii.gz or .nii")
    bundle = load_model(model, device=device)
    wanted = target if target is not None else spec.target
    session = InteractiveSession(bundle, images if len(images) > 1 else images[0], expert, target=_as_class(wanted), device=device)
    steps = [apply_prompt(session, p, coordinates=spec.coordinates) for p in spec.prompts]
    path = session.save(out)
    log = {"model": model, "images": images, "expert": expert, "class": session.state()["class"], "prompts": str(prompts), "out": path, "steps": steps}
    Path(path + ".json").write_text(json.dumps(log, indent=2))
    seconds = [s["seconds"] for s in steps if "seconds" in s]
    click.echo(f"{len(steps)} interaction(s), {sum(seconds):.2f} s in the network; mask of {log['class']} for {expert}: {path}")
    return log


def _as_class(value):
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value
