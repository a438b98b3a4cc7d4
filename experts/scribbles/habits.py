"""Annotator habits: named mixtures of prompt styles, and the ``"habit"`` style that draws them.

A habit is a list of components ``(style name, style configuration, weight)``. For each case every
component is used with probability ``weight`` (1: always; if none is drawn, the first of the largest
weight is used), and the used components' partial labels are combined by union. Where two components
annotate the same voxel with different classes, the higher ``label_priority`` wins (a box's
background-by-exclusion has priority 0, strokes, clicks and slices 1), so a stroke's class wins over
box background; between equal priorities the later component in the list wins. Without deformation
every component is truthful, so only deformed strokes can disagree.

A habit is used where a style name is through the registered style ``"habit"``:
``create_scribble_style("habit", habit="box-then-clicks")`` or
``simulate_scribbles(label, ignore_label=3, style="habit", habit="box-then-clicks")``; its params hold
every component's params, so it replays like any style. :func:`simulate_habit` is the shortcut.

Example:
    >>> partial = simulate_habit(label, habit="contour-tracer", ignore_label=3, seed=0, spacing=(1, 1, 3))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from experts.registry import Registry
from experts.scribbles.base import (
    DEFAULT_SPACING,
    ScribbleStyle,
    check_label,
    check_params_fit,
    check_rng,
    check_spacing,
    output_dtype,
)
from experts.scribbles.registry import SCRIBBLE_STYLES, create_scribble_style, register_scribble_style

__all__ = ["Habit", "HabitComponent", "HabitStyle", "HABITS", "register_habit", "get_habit", "list_habits",
           "simulate_habit"]


@dataclass(frozen=True)
class HabitComponent:
    """One style of a habit.

    Attributes:
        style: a registered style name (not ``"habit"``).
        params: the style's keyword configuration (JSON-serialisable).
        weight: probability in (0, 1] that a case gets this component.
    """

    style: str
    params: dict = field(default_factory=dict)
    weight: float = 1.0


@dataclass(frozen=True)
class Habit:
    """A named mixture of styles (see the module docstring)."""

    name: str
    components: tuple[HabitComponent, ...]
    description: str = ""


HABITS: Registry[Habit] = Registry("annotator habit")


def register_habit(name: str, components: Sequence[HabitComponent | tuple], *, description: str = "") -> Habit:
    """Register a habit under ``name``; components may be ``HabitComponent`` or ``(style, params, weight)``.

    Raises:
        ValueError: ``name`` already registered, no components, an unknown or nested style, a
            configuration the style rejects, a weight outside (0, 1], or params that are not JSON.
    """
    parts = tuple(c if isinstance(c, HabitComponent) else HabitComponent(*c) for c in components)
    if not parts:
        raise ValueError(f"habit {name!r} has no components; give at least one (style, params, weight)")
    for part in parts:
        if part.style == "habit":
            raise ValueError(f"habit {name!r}: a component may not be a habit; list its styles instead")
        if part.style not in SCRIBBLE_STYLES:
            raise ValueError(f"habit {name!r}: unknown scribble style {part.style!r}; "
                             f"known: {', '.join(SCRIBBLE_STYLES.names())}")
        if isinstance(part.weight, bool) or not isinstance(part.weight, (int, float)) or not 0 < part.weight <= 1:
            raise ValueError(f"habit {name!r}: weight of {part.style!r} must be in (0, 1], got {part.weight!r}")
        try:
            json.dumps(part.params)
        except TypeError as error:
            raise ValueError(f"habit {name!r}: params of {part.style!r} must be JSON-serialisable ({error})") from None
        try:
            create_scribble_style(part.style, **part.params)
        except (TypeError, ValueError) as error:
            raise ValueError(f"habit {name!r}, style {part.style!r}: {error}") from None
    habit = Habit(name, parts, description)
    HABITS.register(name)(lambda: habit)
    return habit


def get_habit(name: str) -> Habit:
    """The habit registered as ``name``; ValueError listing the known ones if unknown."""
    return HABITS.create(name)


def list_habits() -> list[str]:
    """Names of the registered habits, sorted."""
    return HABITS.names()


@register_scribble_style("habit")
class HabitStyle(ScribbleStyle):
    """Draws a registered annotator habit as one style.

    Args:
        habit: a registered habit name (:func:`list_habits`). Default ``"sparse-centreline"``.
    """

    def __init__(self, *, habit: str = "sparse-centreline"):
        get_habit(habit)
        self.habit = habit

    def get_params(self) -> dict:
        return {"habit": self.habit}

    def make_params(self, label, *, ignore_label: int, rng: np.random.Generator, spacing=DEFAULT_SPACING) -> dict:
        """Draw which components this case gets, then each used component's params (same ``rng``).

        Returns:
            JSON-serialisable dict: ``style``, ``habit``, ``shape``, ``spacing`` and ``components``, a
            list of ``{"style", "config", "weight", "params"}`` (``params`` None for an unused one).
        """
        lab = check_label(label, ignore_label)
        check_rng(rng)
        spacing = check_spacing(spacing)
        parts = get_habit(self.habit).components
        used = [bool(rng.random() < part.weight) for part in parts]
        if not any(used):
            used[int(np.argmax([part.weight for part in parts]))] = True
        components = []
        for part, use in zip(parts, used):
            style = create_scribble_style(part.style, **part.params)
            params = style.make_params(lab, ignore_label=ignore_label, rng=rng, spacing=spacing) if use else None
            components.append({"style": part.style, "config": json.loads(json.dumps(part.params)),
                               "weight": float(part.weight), "params": params})
        return {"style": self.name, "habit": self.habit, "shape": list(lab.shape), "spacing": list(spacing),
                "components": components}

    def apply(self, label, params: dict, *, ignore_label: int, spacing=DEFAULT_SPACING, return_strokes: bool = False):
        """Union of the used components' partial labels, by priority then list order (module docstring).

        Returns:
            partial label [X, Y, Z]; with ``return_strokes``, ``(partial, records)``: every
            component's records, in painting order.
        """
        lab = check_label(label, ignore_label)
        spacing = check_spacing(spacing)
        check_params_fit(params, self.name, lab.shape, spacing)
        out = np.full(lab.shape, ignore_label, dtype=output_dtype(lab, ignore_label))
        records = []
        for style, part in self._used(params):
            drawn = style.apply(lab, part, ignore_label=ignore_label, spacing=spacing, return_strokes=return_strokes)
            partial, part_records = drawn if return_strokes else (drawn, [])
            annotated = partial != ignore_label
            out[annotated] = partial[annotated]
            records += part_records
        return (out, records) if return_strokes else out

    def max_stray_mm(self, params: dict) -> float:
        return max((style.max_stray_mm(part) for style, part in self._used(params)), default=0.0)

    @staticmethod
    def _used(params: dict) -> list[tuple[ScribbleStyle, dict]]:
        """(style, params) of the used components, in painting order: priority, then list order."""
        used = [(create_scribble_style(c["style"], **c["config"]), c["params"])
                for c in params["components"] if c["params"] is not None]
        return sorted(used, key=lambda pair: pair[0].label_priority)


def simulate_habit(label, *, habit: str, ignore_label: int, seed: int = 0, spacing=DEFAULT_SPACING) -> np.ndarray:
    """Simulate an annotator habit on a dense label [X, Y, Z]: ``make_params`` with ``default_rng(seed)``, ``apply``."""
    style = HabitStyle(habit=habit)
    params = style.make_params(label, ignore_label=ignore_label, rng=np.random.default_rng(seed), spacing=spacing)
    return style.apply(label, params, ignore_label=ignore_label, spacing=spacing)


register_habit("sparse-centreline", [
    ("centreline", {"density": 0.15, "keep_range": [0.3, 0.6], "thickness_mm": 2.0}, 1.0),
], description="A few slices, each structure's skeleton in short broken pieces.")
register_habit("contour-tracer", [
    ("contour", {"density": 0.3, "keep_range": [0.5, 0.9], "deform_mm": 1.0}, 1.0),
    ("line", {"density": 0.1, "n_points": 2}, 0.5),
], description="Traces outlines just inside each structure with a slightly unsteady hand; "
               "on half of the cases adds a straight line inside.")
register_habit("box-then-clicks", [
    ("box", {"jitter_mm": 3.0}, 1.0),
    ("clicks", {"mode": "centre", "n_positive": 2, "n_negative": 1, "background": False}, 1.0),
], description="A 3D box around each structure, then clicks at the structures' centres: "
               "background outside the boxes, small balls of each class inside.")
register_habit("quick-lines", [
    ("line", {"mode": "3d", "n_strokes": 2, "n_points": 2, "deform_mm": 1.5}, 1.0),
], description="Two quick straight 3D strokes per structure, a little wobbly.")
