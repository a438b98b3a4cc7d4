"""Model and adapter files written by an earlier version still load and predict as they did.

``tests/fixtures/landed_v1`` was written by the code before the training-step contract (model
format 1, adapter format 1, the old config keys in config.yaml), with the logits that code gave
on a fixed input.
"""

from pathlib import Path

import pytest
import torch

from experts.adaptation import apply_adapter, read_adapter_meta
from experts.bundle import VERSION, load_bundle, save_bundle
from experts.errors import ModelFileError

LANDED = Path(__file__).parents[1] / "fixtures" / "landed_v1"


def test_a_format_1_model_and_adapter_predict_as_the_code_that_wrote_them():
    base = load_bundle(LANDED / "model")
    assert read_adapter_meta(LANDED / "adapter")["version"] == 1
    full = apply_adapter(base, LANDED / "adapter")
    expected = torch.load(LANDED / "expected_outputs.pt", weights_only=True)
    with torch.no_grad():
        got = full.network.eval()(expected["input"], torch.arange(5)).logits
    assert full.experts == ["small", "medium", "large", "scribbler", "newdoc"]
    assert torch.allclose(got, expected["logits"], atol=1e-6)


def test_a_format_1_adapter_loads_through_the_model_reference_beside_it():
    from pipelines.runtime.models import load_model

    assert load_model(str(LANDED / "adapter")).experts[-1] == "newdoc"  # its base is the relative ../model


def test_a_format_1_models_config_is_read_through_the_aliases(recwarn):
    from pipelines.runtime.builders import pretraining_config

    cfg = pretraining_config(load_bundle(LANDED / "model"))
    assert [t.name for t in cfg.loss.terms] == ["partial_dice_ce"] and cfg.scribbles.name == "slicewise"
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_saving_writes_the_current_format_and_an_unknown_version_is_refused(tmp_path):
    import json

    bundle = load_bundle(LANDED / "model")
    save_bundle(tmp_path / "m", bundle)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["version"] == VERSION == 2
    meta["version"] = 99
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="version 99"):
        load_bundle(tmp_path / "m")
