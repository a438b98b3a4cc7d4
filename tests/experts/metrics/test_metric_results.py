"""MetricValue records: undefined values carry a reason; JSON output never holds NaN or inf."""

import json
import math

import numpy as np
import pytest

from experts.consensus import staple
from experts.metrics import (
    MetricValue,
    generalized_energy_distance,
    overlap_metrics,
    soft_dice,
    surface_metrics,
    to_jsonable,
)


@pytest.mark.parametrize(
    "value,reason,match",
    [
        (float("nan"), None, "finite or None"),
        (float("inf"), None, "finite or None"),
        (None, None, "needs a non-empty reason"),
        (None, "", "needs a non-empty reason"),
        (0.5, "why", "takes no reason"),
    ],
)
def test_invalid_records_are_refused(value, reason, match):
    with pytest.raises(ValueError, match=match):
        MetricValue(value, reason)


@pytest.mark.parametrize("record", [MetricValue(0.25), MetricValue(np.float32(1.0)), MetricValue.undefined("empty prediction")])
def test_record_round_trips_through_json(record):
    text = json.dumps(record.to_dict(), allow_nan=False)
    assert MetricValue.from_dict(json.loads(text)) == record
    assert isinstance(record.value, (float, type(None)))


def test_undefined_serialises_as_null_with_reason():
    assert json.loads(json.dumps(MetricValue.undefined("empty reference").to_dict())) == {"value": None, "reason": "empty reference"}


def test_all_results_with_empty_classes_serialise_without_nan():
    # [6, 6, 6], K = 3: class 1 present in both, class 2 absent in both, reference partial for overlap
    ref = np.zeros((6, 6, 6), np.int64)
    ref[1:4, 1:4, 1:4] = 1
    pred = np.roll(ref, 1, axis=0)
    partial = ref.copy()
    partial[5] = 3
    empty = np.zeros((2, 6, 6, 6), bool)
    results = {
        "overlap": overlap_metrics(pred, partial, num_classes=3, ignore_label=3),
        "surface": surface_metrics(np.zeros_like(ref), ref, num_classes=3, spacing=(1.0, 1.0, 2.5)),
        "ged": generalized_energy_distance(empty, empty),
        "soft_dice": soft_dice(np.zeros((6, 6, 6)), empty),
        "staple_profile": staple([ref, ref, pred], num_classes=3).profile_to_dict(),
    }
    text = json.dumps(to_jsonable(results), allow_nan=False)
    data = json.loads(text)
    assert data["overlap"]["dice"]["2"] == {"value": None, "reason": "class absent in annotated reference voxels and in the prediction on them"}
    assert data["surface"]["hd95"]["1"] == {"value": None, "reason": "empty prediction"}
    assert data["soft_dice"]["value"] is None
    assert data["staple_profile"]["0"]["2"]["sensitivity"]["value"] is None


def test_to_jsonable_refuses_bare_nan():
    with pytest.raises(ValueError, match="non-finite"):
        to_jsonable({"x": math.nan})
