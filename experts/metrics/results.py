"""A metric value that may be undefined, and JSON output without NaN or inf.

Every metric in :mod:`experts.metrics` returns a :class:`MetricValue`: a finite ``float`` or
``None`` together with a ``reason`` saying why it is undefined. Serialised it reads
``{"value": 0.83, "reason": null}`` or ``{"value": null, "reason": "empty prediction"}``; NaN and
inf can never be stored, so ``json.dumps(..., allow_nan=False)`` always succeeds.

Conventions for empty cases (per class; "empty" means no voxel of the class):

* Dice / IoU: reference and prediction both empty -> ``None`` with
  :data:`ABSENT` (``"class absent in reference and prediction"``); exactly one empty -> ``0.0``.
* Partial reference (contains ``ignore_label``): Dice / IoU are computed on annotated voxels only
  (reference != ignore_label); a class absent from the annotated reference and from the prediction
  on annotated voxels -> ``None`` with :data:`ABSENT_ANNOTATED` (or :data:`NOTHING_ANNOTATED` when
  the reference has no annotated voxel at all).
* HD95 / ASSD: empty prediction -> ``None`` (:data:`EMPTY_PREDICTION`); empty reference ->
  ``None`` (:data:`EMPTY_REFERENCE`); both -> ``None`` (:data:`ABSENT`).
* NSD: both empty -> ``None`` (:data:`ABSENT`); exactly one empty -> ``0.0``.
* Surface metrics on a partial reference are an error (``ValueError``), not a ``None``.
* Set metrics (:mod:`experts.metrics.distribution`): two empty masks agree (IoU = Dice = 1,
  ``d = 1 - IoU = 0``); Dmax, Dmatch and soft Dice are ``None`` when every mask is empty; GED^2
  is then 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np

__all__ = [
    "ABSENT",
    "ABSENT_ANNOTATED",
    "NOTHING_ANNOTATED",
    "EMPTY_PREDICTION",
    "EMPTY_REFERENCE",
    "MetricValue",
    "to_jsonable",
]

ABSENT = "class absent in reference and prediction"
ABSENT_ANNOTATED = "class absent in annotated reference voxels and in the prediction on them"
NOTHING_ANNOTATED = "reference has no annotated voxel (all voxels are ignore_label)"
EMPTY_PREDICTION = "empty prediction"
EMPTY_REFERENCE = "empty reference"


@dataclass(frozen=True)
class MetricValue:
    """A finite metric value, or ``None`` with the reason it is undefined.

    Args:
        value: a finite number, or ``None`` when the metric is undefined.
        reason: why ``value`` is ``None`` (required then); ``None`` for defined values.

    Raises:
        ValueError: on NaN/inf values, on ``None`` without a reason, or on a reason for a value.
    """

    value: float | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.value is None:
            if not self.reason:
                raise ValueError("an undefined MetricValue (value=None) needs a non-empty reason")
            return
        value = float(self.value)
        if not math.isfinite(value):
            raise ValueError(f"MetricValue must be finite or None, got {self.value!r}; use MetricValue.undefined(reason)")
        if self.reason is not None:
            raise ValueError(f"a defined MetricValue ({value}) takes no reason, got {self.reason!r}")
        object.__setattr__(self, "value", value)

    @classmethod
    def undefined(cls, reason: str) -> MetricValue:
        """An undefined value: ``MetricValue(None, reason)``."""
        return cls(None, reason)

    @property
    def defined(self) -> bool:
        """``True`` when ``value`` is a number."""
        return self.value is not None

    def to_dict(self) -> dict[str, float | str | None]:
        """``{"value": float | None, "reason": str | None}``, JSON-ready."""
        return {"value": self.value, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricValue:
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("value"), data.get("reason"))


def to_jsonable(obj: Any) -> Any:
    """Turn results (dataclasses, :class:`MetricValue`, dicts with int keys, numpy scalars) into JSON types.

    :class:`MetricValue` becomes its :meth:`~MetricValue.to_dict`; dataclasses with a ``to_dict``
    method use it; dict keys become strings; numpy arrays become nested lists.

    Raises:
        ValueError: when a bare float is NaN or inf (results never hold one; this guards user data).
    """
    if isinstance(obj, MetricValue):
        return obj.to_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return to_jsonable(obj.to_dict())
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(float(obj)):
            raise ValueError(f"cannot serialise non-finite value {obj!r}; wrap it in MetricValue.undefined(reason)")
        return float(obj)
    return obj
