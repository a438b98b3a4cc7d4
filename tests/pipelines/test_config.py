"""Configs are plain YAML checked against the schema; mistakes are one clear line each."""

from pathlib import Path

import pytest

from experts.errors import ConfigError
from pipelines.runtime.config import Config, flatten, load_config

CONFIGS = Path(__file__).parents[2] / "configs"


def test_default_yaml_spells_out_the_embedded_defaults():
    assert load_config(CONFIGS / "default.yaml") == Config()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.stepz=5"], "unknown key 'train.stepz'"),
        (["train.lr=fast"], "'train.lr' must be a number, got 'fast'"),
        (["train.steps=1.5"], "'train.steps' must be an integer"),
        (["train.steps=true"], "'train.steps' must be an integer"),
        (["network.cin=middle"], "'network.cin' must be one of 'all', 'encoder', 'decoder'"),
        (["data.patch_size=[16,16]"], "'data.patch_size' must be 3 positive numbers"),
        (["adapt.init.name=closest"], "unknown init strategy 'closest'; known: expert, mean, nearest"),
        (["adapt.init.name=expert"], "'expert' is required"),
        (["adapt.trainable.name=everything"], "unknown trainable set 'everything'; known: all, auto, decoder, rows, rows+head, rows+lowrank"),
        (["adapt.trainable.params.rank=4"], "adapt.trainable 'auto': unknown key 'rank'"),
        (["scribbles.name=squiggles"], "'scribbles' (squiggles): unknown scribble style 'squiggles'"),
        (["scribbles.params.density=2"], "'scribbles' (slicewise): density must be in (0, 1]"),
        (["network.name=resnet"], "'network.name' is 'resnet'; known networks: cin_resunet, cin_unet"),
        (["sampling.kind_weights={scribble: 1}"], "keys are 'dense' and 'partial'"),
        (["train"], "expected section.key=value"),
        (["data.fold=7"], "'data.fold' must be in 0..4"),
        (["loss.terms=[{name: crf_magic}]"], "'loss.terms[0].name' is 'crf_magic'; known loss terms: attentive_similarity, em_class_ratio, masked_crf, partial_dice_ce, shape_prior"),
        (["loss.terms=[{name: partial_dice_ce, params: {ce_wieght: 2}}]"], "loss term 'partial_dice_ce' (loss.terms[0].params): unknown key 'ce_wieght'"),
        (["loss.terms=[{name: partial_dice_ce, params: {batch_dice: 3}}]"], "'batch_dice' must be true or false, got 3"),
        (["loss.terms=[{name: partial_dice_ce, weight: heavy}]"], "'loss.terms[0].weight' must be a number"),
        (["loss.terms=[{name: partial_dice_ce}, {name: partial_dice_ce}]"], "names a term twice"),
        (["loss.terms=[]"], "'loss.terms' is empty"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert any(message in line for line in err.value.problems), err.value.problems


def test_file_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 10\n  lr: 0.01\nnetwork:\n  channels: [8, 16]\n")
    cfg = load_config(path, ["train.lr=0.5"])
    assert (cfg.train.steps, cfg.train.lr, cfg.network.channels, cfg.train.batch_size) == (10, 0.5, [8, 16], 2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: [1, 2]\n", "train must be a mapping"),
        ("train:\n  steps: 3\n bad", "not valid YAML"),
        ("- 1\n- 2\n", "a config is a mapping of sections"),
    ],
)
def test_malformed_files_are_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(message in line for line in err.value.problems)


def test_yaml_tags_are_not_evaluated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    assert load_config(path, ["adapt.lr=5E-2"]).train.lr == 0.001
    assert load_config(None, ["adapt.lr=5E-2"]).adapt.lr == 0.05
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["train.lr=.nan"])


def test_flatten_gives_dotted_keys():
    assert flatten({"train": {"lr": 1, "x": {"y": 2}}, "seed": 0}) == {"train.lr": 1, "train.x.y": 2, "seed": 0}


def test_old_loss_keys_load_as_the_default_terms_params_with_a_warning():
    with pytest.warns(DeprecationWarning, match="loss.terms"):
        cfg = load_config(None, ["loss.dice_weight=2", "loss.batch_dice=true"])
    assert [(t.name, t.params) for t in cfg.loss.terms] == [("partial_dice_ce", {"dice_weight": 2, "batch_dice": True})]
    with pytest.raises(ConfigError, match="mixes 'terms' with the old keys"):
        load_config(None, ["loss.terms=[{name: partial_dice_ce}]", "loss.ce_weight=1"])


def test_a_saved_run_config_of_either_form_loads_without_warnings(recwarn):
    from pipelines.runtime.config import config_from_dict

    old = config_from_dict({"loss": {"name": "partial_dice_ce", "ce_weight": 1.0, "dice_weight": 0.5, "batch_dice": False}, "scribbles": {"style": "slicewise", "density": 0.3, "thickness": 1, "axis": -1}, "adapt": {"init": "expert:ref", "trainable": "rows+head"}})
    new = config_from_dict({"loss": {"terms": [{"name": "partial_dice_ce", "params": {"dice_weight": 0.5}}]}})
    assert old.loss.terms[0].params["dice_weight"] == new.loss.terms[0].params["dice_weight"] == 0.5
    assert (old.scribbles.name, old.scribbles.params["density"]) == ("slicewise", 0.3)
    assert (old.adapt.init.name, old.adapt.init.params, old.adapt.trainable.name) == ("expert", {"expert": "ref"}, "rows+head")
    assert config_from_dict({}).loss.terms[0].name == "partial_dice_ce"
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["adapt.init=mean"], ("mean", {})),
        (["adapt.init=expert:ref"], ("expert", {"expert": "ref"})),
        (["adapt.init.name=expert", "adapt.init.params.expert=ref"], ("expert", {"expert": "ref"})),
    ],
)
def test_components_are_named_with_params_and_old_plain_names_still_work(overrides, expected):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cfg = load_config(None, overrides)
    assert (cfg.adapt.init.name, cfg.adapt.init.params) == expected


def test_a_component_keeps_its_default_params_unless_another_is_named():
    cfg = load_config(None, ["scribbles.params.density=0.3"])
    assert (cfg.scribbles.name, cfg.scribbles.params) == ("slicewise", {"density": 0.3, "thickness": 1, "axis": -1})
    other = load_config(None, ["scribbles.name=clicks", "scribbles.params.n_positive=2"])
    assert (other.scribbles.name, other.scribbles.params) == ("clicks", {"n_positive": 2})


@pytest.mark.parametrize("verb", ["predict", "evaluate", "compare"])
def test_predict_evaluate_and_compare_read_and_check_the_config(verb, toy_dataset, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli

    args = {
        "predict": ["--model", str(tmp_path / "none"), "--images", str(toy_dataset / "imagesTs"), "--out", str(tmp_path / "p")],
        "evaluate": ["--pred", str(toy_dataset / "labelsTs"), "--data", str(toy_dataset)],
        "compare": ["--model", str(tmp_path / "none"), "--data", str(toy_dataset), "--out", str(tmp_path / "c")],
    }[verb]
    result = CliRunner().invoke(cli, [verb, *args, "--set", "predict.blend=sharp"])
    assert result.exit_code == 2 and "'predict.blend' must be one of 'gaussian', 'constant'" in result.output
    assert not (tmp_path / "p").exists() and not (tmp_path / "c").exists()
