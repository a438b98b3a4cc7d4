"""The bench machinery end to end at a toy scale: every suite runs and BENCHMARKS-style Markdown
is written from its results (the numbers themselves mean nothing at this scale)."""

import json
from pathlib import Path

import pytest

from pipelines.bench import runner
from toybench import tiny_mode_settings

TINY = tiny_mode_settings()


@pytest.fixture
def tiny_mode(monkeypatch):
    monkeypatch.setitem(runner.MODES, "tiny", TINY)


def test_every_suite_runs_and_writes_markdown(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    runner.run_bench(out=str(tmp_path / "b"), mode="tiny", write=str(md), command="expertseg bench --tiny")
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("targets",), write=str(md), command="expertseg bench --tiny --suite targets")
    r = result["results"]
    assert set(r) == {"modelling", "efficiency", "scribbles", "speed", "targets"}  # the second call adds to the first
    t = r["targets"]
    assert t["oracle"] and len(t["runs"]["dense-3"]) == 1 and t["scratch"]["short"]["test_dice"] and t["command"].endswith("--suite targets")
    new = r["efficiency"]["held_out"]["drnew"]
    assert len(new["adapted"]["dense/3"]) == 1 and new["oracle"] and new["mean_row"] and new["scratch"]["3"] and new["finetune_all"]["3"]
    assert set(r["efficiency"]["held_out"]) == {"drnew", "ref"}
    assert set(r["modelling"]) >= {"cin", "pooled", "separate", "staple"} and set(r["modelling"]["cin"]) == set(r["modelling"]["experts"])
    assert r["scribbles"]["annotated_fraction"]["mean"] < 0.5 and r["scribbles"]["ratio"]
    assert r["speed"]["prediction_seconds"]["decoder"]["speedup"] > 0 and r["speed"]["peak_memory_mb"]["train_step"] > 0
    text = md.read_text()
    for heading in ("## Stage-2 targets", "## Label efficiency", "## Multi-expert modelling", "## Scribbles versus dense", "## Speed and memory", "expertseg bench --tiny --suite targets"):
        assert heading in text
    assert (tmp_path / "benchmarks" / "label_efficiency.png").exists() and (tmp_path / "benchmarks" / "multi_expert_modelling.png").exists()
    assert json.loads((tmp_path / "b" / "results.json").read_text())["mode"] == "tiny"
    # pretrainings are shared between suites: 'cin' ran once for modelling and efficiency
    assert sorted(p.name for p in (tmp_path / "b" / "runs").iterdir() if p.name == "cin") == ["cin"]


def test_report_only_rewrites_the_markdown_from_saved_results(tiny_mode, tmp_path, monkeypatch):
    """A config file outside the repository and a relative --write path (how users call it); then the
    report is written again from results.json without running anything."""
    from click.testing import CliRunner

    from pipelines.cli import cli

    config = tmp_path / "mine.yaml"
    config.write_text("seed: 0\n")
    monkeypatch.setitem(runner.MODES, "full", {**TINY, "config": str(config)})
    monkeypatch.chdir(tmp_path)
    earlier = "## Label efficiency\n\nCommand: `an earlier run`.\n\n| K | dense |\n|---|---|\n| 3 | 0.123 |\n"
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\n" + earlier + "\n## Speed and memory\n\nstale numbers\n")
    runner.run_bench(out="b", mode="full", suites=("speed",), write="BENCHMARKS.md", command="expertseg bench --suite speed --write BENCHMARKS.md")
    first = (tmp_path / "BENCHMARKS.md").read_text()
    assert f"config `{config}`" in first and "## Speed and memory" in first and "stale numbers" not in first
    assert earlier.strip() in first  # a section the run did not produce is kept as it was
    committed = json.loads((tmp_path / "benchmarks" / "results.json").read_text())["sections"]
    assert set(committed) == {"speed"} and committed["speed"]["results"]["loss_seconds"]["ratio"] > 0
    (tmp_path / "BENCHMARKS.md").unlink()
    runs_before = sorted(p.name for p in (tmp_path / "b" / "runs").iterdir()) if (tmp_path / "b" / "runs").exists() else []

    machine_line = next(line for line in first.splitlines() if line.startswith("Machine: "))
    monkeypatch.setattr(runner, "machine", lambda: {"cpu": "elsewhere", "threads": 99})
    result = CliRunner().invoke(cli, ["bench", "--out", "b", "--report-only", "--write", "BENCHMARKS.md"])
    assert result.exit_code == 0, result.output
    again = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Speed and memory" in again and "`expertseg bench --suite speed --write BENCHMARKS.md`" in again
    assert machine_line in again.splitlines()  # the machine the suite ran on, not the one that rewrote the report
    rewritten = json.loads((tmp_path / "benchmarks" / "results.json").read_text())["sections"]["speed"]
    assert rewritten["machine"] == committed["speed"]["machine"] != {"cpu": "elsewhere", "threads": 99}  # in the committed numbers too
    assert (sorted(p.name for p in (tmp_path / "b" / "runs").iterdir()) if (tmp_path / "b" / "runs").exists() else []) == runs_before

    empty = CliRunner().invoke(cli, ["bench", "--out", "nothing-here", "--report-only"])
    assert empty.exit_code == 2 and "run the bench first" in empty.output


def test_peak_memory_is_the_probe_s_own_even_under_a_large_parent():
    """The probe runs in a fresh process; a parent that already holds much memory (as the bench does
    after its pretrainings) must not hide the probe's growth (Linux keeps ru_maxrss across exec)."""
    import torch

    from pipelines.bench.speed import _peak

    ballast = torch.ones(400 * 2**20 // 4)  # 400 MB held by this process while the probe runs
    probe = {"threads": 1, "k": 3, "e": 2, "channels": [8, 16], "batch": 2, "patch": [32, 32, 32], "volume": [40, 40, 40], "sw": 2}
    grew = _peak("train", probe)
    assert float(ballast[0]) == 1.0
    assert 5 < grew < 400, grew  # activations, gradients and Adam's moments of a small U-Net


def test_prompt_styles_suite_matches_budgets_and_ranks_the_styles(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("prompts",), write=str(md), command="expertseg bench --tiny --suite prompts")
    pr = result["results"]["prompts"]
    from pipelines.bench.prompts import ARMS

    assert set(pr["arms"]) == set(ARMS) and sorted(pr["ranking"]) == sorted(ARMS)
    assert pr["expert"] == "drnew" and pr["calibrated_on"] != "drnew" and 0 < pr["target_fraction"] < 0.5
    for arm, a in pr["arms"].items():
        assert len(a["test_dice"]) == 1 and 0 < a["annotated_fraction"][0] < 1, arm
        assert a["value"] in ARMS[arm][3], arm
    # the target is the default slice-wise scribbles' budget, so slice-wise calibrates onto itself
    assert pr["arms"]["slicewise"]["value"] == 0.5 and pr["arms"]["slicewise"]["calibration_fraction"] == pr["target_fraction"]
    assert set(pr["pretraining"]["styles"]) == set(pr["ranking"][:2])
    text = md.read_text()
    assert "## Prompt styles" in text and "gain per 1 % annotated" in text


@pytest.mark.slow  # 57 toy adaptations and 14 toy trainings: about 4 minutes
def test_adapter_capacity_suite_runs_every_rung_for_every_held_out_expert(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("capacity",), write=str(md), command="expertseg bench --tiny --suite capacity")
    cap = result["results"]["capacity"]
    from pipelines.bench.capacity import RUNGS

    assert set(cap["experts"]) == {"drnew", "drfar", "ref"}  # both new doctors and one pretraining expert
    for h, e in cap["experts"].items():
        assert e["dedicated_pretraining"] and e["dedicated_scratch"] and e["scratch3_short"] and e["mean_row"], h
        styles = [f"auto-style-{n}-5" for n in ("line", "centreline", "slices", "contour")]
        every = ["auto-dense-all"] if e["n_dense"] > 5 else []
        for arm in [f"{r}-dense-3" for r in RUNGS] + [f"{r}-scribbles-5" for r in ("auto",) + RUNGS] + ["auto-dense-1", "auto-dense-3", "auto-dense-5"] + every + styles:
            assert len(e["runs"][arm]) == 1 and e["runs"][arm][0]["test_dice"], (h, arm)
        assert e["runs"]["auto-dense-3"][0]["cv"]["held_out"] and e["runs"]["rows-dense-3"][0]["cv"] is None
        assert e["pooled"]["mean"] > 0 and cap["styles"] == ["line", "centreline", "slices", "contour"]
    assert any(e["runs"].get("auto-dense-all") for e in cap["experts"].values())
    runs = {p.name for p in (tmp_path / "b" / "runs").iterdir()}
    assert {"capacity-pooled", "capacity-pooled-without-ref"} <= runs  # the pooled model never saw the held-out expert
    text = md.read_text()
    assert "## Adapter capacity" in text and "### `drfar`" in text and (tmp_path / "benchmarks" / "adapter_capacity.png").exists()
    assert "pooled model 0." in text and "dense, K = all (" in text and "| contour |" in text


def test_capacity_options_choose_seeds_config_and_held_out_experts(tmp_path):
    from experts.errors import ConfigError
    from pipelines.bench import capacity

    ctx = runner.BenchContext(out=tmp_path, mode="full", config="/x/configs/bench.yaml", overrides=(), options={"capacity.seeds": "1", "capacity.config": "bench", "capacity.experts": "drfar, ref"})
    s = capacity.settings(ctx)
    assert s == {"seeds": 1, "config": "bench", "experts": "drfar, ref", "styles": capacity.STYLES, "structures": "tissue"} and capacity._config(ctx, s) == "/x/configs/bench.yaml"
    ctx.data = tmp_path / "data"
    assert capacity._where(ctx, s) == (tmp_path / "data", "/x/configs/bench.yaml", "capacity")  # tissue keeps the run names of earlier results
    with pytest.raises(ConfigError, match="capacity.structures=organs: one of tissue, nuclei"):
        capacity._where(ctx, {**s, "structures": "organs"})
    assert capacity._styles("line, contour") == ["line", "contour"] and capacity._styles("") == []
    with pytest.raises(ConfigError, match="unknown scribble style.*zigzag"):
        capacity._styles("line,zigzag")
    full = runner.BenchContext(out=tmp_path, mode="full", config="/x/configs/bench.yaml", overrides=())
    assert capacity.settings(full)["config"] == "demo" and capacity._config(full, capacity.settings(full)).endswith("configs/demo.yaml")
    with pytest.raises(ConfigError, match="demo or bench"):
        capacity._config(ctx, {**s, "config": "fast"})
    with pytest.raises(ConfigError, match="capacity.steps: unknown"):
        capacity.settings(runner.BenchContext(out=tmp_path, mode="full", config=None, overrides=(), options={"capacity.steps": "3"}))


def _capacity_entry(structures: str, config: str, dice: float) -> dict:
    run = {"test_dice": {"mean": dice}, "test_dice_before": {"mean": 0.7}, "rung": "rows", "steps": 20, "seconds": 60.0, "adapter_bytes": 13_000, "cv": None}
    return {"expert": "drfar", "structures": structures, "config": config, "role": "new", "dedicated_pretraining": {"mean": 0.8}, "dedicated_scratch": {"mean": 0.9},
            "scratch3_short": {"mean": 0.7}, "scratch3_long": {"mean": 0.75}, "scratch3_cases": ["sub013"], "mean_row": {"mean": 0.6}, "pooled": {"mean": 0.65},
            "n_dense": 3, "scribbles": "own", "runs": {"rows-dense-3": [run]}}


def test_capacity_section_shows_each_kind_of_structures_under_its_own_heading_and_the_commands_of_both():
    from pipelines.bench import capacity

    result = {"seeds": 1, "config": "configs/demo.yaml", "command": "expertseg bench --suite capacity --option capacity.structures=nuclei",
              "commands": ["expertseg bench --suite capacity"], "experts": {"drfar": _capacity_entry("tissue", "configs/bench.yaml", 0.81), "drfar (nuclei)": _capacity_entry("nuclei", "configs/demo.yaml", 0.62)}}
    text = "\n".join(capacity.section(result, [], "ignored"))
    assert "Commands: `expertseg bench --suite capacity`, then `expertseg bench --suite capacity --option capacity.structures=nuclei`." in text
    assert "`configs/bench.yaml` and `configs/demo.yaml` for every pretraining" in text
    assert "### `drfar` (new expert" in text and "### `drfar` on the deep grey nuclei demo (thalamus, caudate, lentiform; `configs/demo.yaml`) (new expert" in text
    assert "| rows | - | 0.810 (90%) |" in text and "| rows | - | 0.620 (69%) |" in text  # each against its own dedicated model (0.9)


def test_a_suite_in_a_new_folder_keeps_the_committed_results_of_its_mode_and_config(tmp_path):
    root = Path(runner.__file__).resolve().parents[2]
    committed = tmp_path / "benchmarks" / "results.json"
    committed.parent.mkdir()
    tissue = {"experts": {"drfar": _capacity_entry("tissue", "configs/bench.yaml", 0.81)}, "command": "expertseg bench --suite capacity"}
    committed.write_text(json.dumps({"sections": {"capacity": {"mode": "full", "config": "configs/bench.yaml", "overrides": [], "results": tissue}}}))
    ctx = runner.BenchContext(out=tmp_path / "new", mode="full", config=str(root / "configs" / "bench.yaml"), overrides=(), committed=committed)
    assert ctx.earlier("capacity") == tissue and ctx.earlier("annotation") == {}
    other = runner.BenchContext(out=tmp_path / "new", mode="full", config=str(root / "configs" / "demo.yaml"), overrides=(), committed=committed)
    quick = runner.BenchContext(out=tmp_path / "new", mode="quick", config=str(root / "configs" / "bench.yaml"), overrides=(), committed=committed)
    assert other.earlier("capacity") == {} and quick.earlier("capacity") == {}  # numbers of another setting are not mixed in
    ctx.results["capacity"] = {"experts": {}}
    assert ctx.earlier("capacity") == {"experts": {}}  # this folder's own results come first


def test_held_out_experts_named_by_an_option_must_exist():
    from types import SimpleNamespace

    from experts.errors import ConfigError

    manifest = SimpleNamespace(experts=["ref", "drnew"])
    assert runner.known_experts("capacity.experts", ("drnew",), manifest) == ["drnew"]
    with pytest.raises(ConfigError, match=r"selection.experts: drfra not in the dataset \(ref, drnew\)"):
        runner.known_experts("selection.experts", ["drnew", "drfra"], manifest)


def test_regulariser_options_give_the_main_arms_their_own_seeds():
    from pipelines.bench import regularisers

    assert regularisers._seeds({"seeds": 3, "other_seeds": 1}) == "3 seed(s) for partial and all, 1 for the other arms"
    assert regularisers._seeds({"seeds": 2}) == "2 seed(s) per arm"
    assert regularisers._arms("all, crf") == ["partial", "crf", "all"]  # in the table's order, partial always
    with pytest.raises(Exception, match="unknown arm"):
        regularisers._arms("crf,cfr")


def test_resume_reuses_the_runs_an_interrupted_bench_finished(tmp_path, monkeypatch):
    from pipelines.runtime import stages

    for name in ("pre", "ad"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "summary.json").write_text(json.dumps({"name": name, "test_dice": {}}))
    (tmp_path / "runs" / "unfinished").mkdir()
    ran = []
    monkeypatch.setattr(stages, "stage_runner", lambda stage: lambda **kw: ran.append((stage, kw["out"])) or {"name": "new"})
    ctx = runner.BenchContext(out=tmp_path, mode="full", config=None, overrides=(), resume=True)
    assert ctx.pretrain("pre")["name"] == "pre" and ctx.runs["pre"]["name"] == "pre"
    assert ctx.adapt("ad", model="m", expert="e")["name"] == "ad" and not ran
    assert ctx.adapt("unfinished", model="m", expert="e")["name"] == "new" and ran == [("adapt", str(tmp_path / "runs" / "unfinished"))]
    fresh = runner.BenchContext(out=tmp_path, mode="full", config=None, overrides=())  # without resume every run trains again
    assert fresh.adapt("ad", model="m", expert="e")["name"] == "new"


def test_a_section_names_the_config_its_suite_trained_with():
    """A suite run with a config of its own (``--option capacity.config=demo``) is not labelled with
    the bench's config; a config recorded by another checkout is shown as the repository names it."""
    from types import SimpleNamespace

    from pipelines.bench.report import _machine_line

    ctx = SimpleNamespace(mode="full", config="configs/bench.yaml", overrides=("train.steps=10",))
    m = {"cpu": "x", "cpu_count": 2, "threads": 2}
    assert "config `configs/bench.yaml` with `train.steps=10`" in _machine_line(m, ctx)
    own = _machine_line(m, ctx, "/elsewhere/checkout/configs/demo.yaml")
    assert own.endswith("config `configs/demo.yaml`.") and "bench.yaml" not in own and "train.steps" not in own
