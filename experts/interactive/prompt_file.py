"""The prompts file of ``expertseg refine``: a list of interactions, applied in order.

Schema (every key but ``prompts`` optional; unknown keys are refused)::

    {
      "coordinates": "voxel",              # or "world": mm, RAS+ (what 3D Slicer shows); default voxel
      "class": "wm",                       # class name or index; default the first foreground class
      "prompts": [
        {"type": "click", "point": [30, 41, 22], "positive": true},
        {"type": "scribble", "points": [[10, 12, 20], [14, 18, 20], [15, 25, 21]], "positive": false},
        {"type": "box", "lower": [8, 10, 15], "upper": [40, 52, 30]},
        {"type": "undo"}
      ]
    }

Voxel coordinates are indices ``[x, y, z]`` of the input file (0-based, the order nibabel and
ITK-SNAP use); ``positive`` defaults to true; a prompt may carry its own ``coordinates``. A box
may be flat along one axis (a 2D box on a slice), not along two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from experts.errors import ConfigError, shorten

__all__ = ["PromptFile", "read_prompt_file", "parse_prompts", "apply_prompt", "MAX_PROMPT_FILE_BYTES"]

#: a prompts file is small; a larger one is refused before it is parsed
MAX_PROMPT_FILE_BYTES = 8 << 20
_TOP = {"coordinates", "class", "prompts"}
_KEYS = {"click": {"point"}, "scribble": {"points"}, "box": {"lower", "upper"}, "undo": set()}
_COMMON = {"type", "positive", "coordinates"}


@dataclass
class PromptFile:
    coordinates: str
    target: str | int | None
    prompts: list[dict]


def read_prompt_file(path: str | Path) -> PromptFile:
    """Read and check ``path`` (:class:`~experts.errors.ConfigError` naming what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such prompts file")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a prompts file (at most {MAX_PROMPT_FILE_BYTES})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({shorten(str(err), quote=False)}); see the prompts.json schema in README.md") from None
    return parse_prompts(data, where=str(path))


def parse_prompts(data, *, where: str = "prompts") -> PromptFile:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object with 'prompts' (and optional 'coordinates', 'class')")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(shorten, unknown))}; allowed: {', '.join(sorted(_TOP))}")
    coordinates = data.get("coordinates", "voxel")
    if coordinates not in ("voxel", "world"):
        raise ConfigError(f"{where}: 'coordinates' must be 'voxel' or 'world', got {shorten(coordinates)}")
    target = data.get("class")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise ConfigError(f"{where}: 'class' must be a class name or index, got {shorten(target)}")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError(f"{where}: 'prompts' must be a non-empty list of prompts")
    return PromptFile(coordinates, target, [_check_prompt(p, i, where) for i, p in enumerate(prompts)])


def _check_prompt(p, i: int, where: str) -> dict:
    at = f"{where}: prompts[{i}]"
    if not isinstance(p, dict) or p.get("type") not in _KEYS:
        raise ConfigError(f"{at}: must be an object with 'type' one of {', '.join(_KEYS)}")
    need = _KEYS[p["type"]]
    unknown = sorted(set(p) - need - _COMMON)
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(map(shorten, unknown))} for a {p['type']}; allowed: {', '.join(sorted(need | _COMMON))}")
    missing = sorted(need - set(p))
    if missing:
        raise ConfigError(f"{at}: a {p['type']} needs {', '.join(missing)}")
    if not isinstance(p.get("positive", True), bool):
        raise ConfigError(f"{at}: 'positive' must be true or false")
    return p


def apply_prompt(session, prompt: dict, *, coordinates: str) -> dict:
    """One checked prompt on an :class:`~experts.interactive.session.InteractiveSession`."""
    kind, coords, positive = prompt["type"], prompt.get("coordinates", coordinates), prompt.get("positive", True)
    if kind == "click":
        return session.click(prompt["point"], positive=positive, coordinates=coords)
    if kind == "scribble":
        return session.scribble(prompt["points"], positive=positive, coordinates=coords)
    if kind == "box":
        return session.box(prompt["lower"], prompt["upper"], positive=positive, coordinates=coords)
    return session.undo()
