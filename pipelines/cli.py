"""The ``expertseg`` command line.

Verbs follow nnU-Net's and MONAI's: ``data check|demo|import``, ``pretrain``, ``suggest``,
``adapt``, ``predict``, ``evaluate``, ``compare``, ``tune``, ``bench``. Heavy libraries (torch, MONAI, MLflow)
are imported inside the commands that need them, so ``expertseg --help`` starts quickly. A user error
prints one line per problem and exits with code 2, without a traceback.
"""

from __future__ import annotations

import functools
import sys

import click

from experts.errors import ExpertsegError
from pipelines.bench.runner import EXTRA_SUITES as BENCH_EXTRA_SUITES
from pipelines.bench.runner import SUITES as BENCH_SUITES

__all__ = ["main", "cli"]

EXIT_USAGE = 2


def user_errors(fn):
    """Turn :class:`ExpertsegError` into one line per problem and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ExpertsegError as err:
            for line in err.problems:
                click.echo(f"error: {line}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def config_options(fn):
    """``--config FILE`` and repeated ``--set key=value``."""
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value, e.g. --set train.steps=200 (repeatable).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/); unset keys take the embedded defaults.")(fn)
    return fn


def tracking_option(fn):
    return click.option(
        "--tracking",
        type=click.Choice(["mlflow", "local"]),
        default=None,
        help="mlflow (default): log to MLflow too; local: only the run folder's JSON log.",
    )(fn)


def role_option(fn):
    return click.option(
        "--role",
        type=click.Choice(["new", "pretrain"]),
        default=None,
        help="new (default): the added expert is kept out of pretraining, for adaptation and evaluation; pretrain: an ordinary expert.",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="expertseg")
def cli():
    """Multi-expert adaptive segmentation of 3D medical images.

    \b
    Quick start:
      expertseg data demo --out demo_data
      expertseg data check demo_data
      expertseg pretrain --data demo_data --out runs/pretrain --config configs/demo.yaml
    """


@cli.group()
def data():
    """Create, import and check multi-expert datasets."""


@data.command("check")
@click.argument("dataset", type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="Check names and headers only (no voxel values, no agreement).")
@user_errors
def data_check(dataset, quick):
    """Check DATASET against the dataset contract and print a summary.

    \b
    Example:
      expertseg data check demo_data
    """
    from pipelines.data import check

    check(dataset, quick=quick)


@data.command("demo")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same data.")
@click.option("--train-cases", default=24, show_default=True)
@click.option("--test-cases", default=6, show_default=True)
@click.option("--spacing", default=None, type=float, help="Voxel size in mm  [default: 3 for tissue, 2 for nuclei]")
@click.option("--structures", type=click.Choice(["tissue", "nuclei"]), default="tissue", show_default=True,
              help="tissue: grey and white matter (BrainTissueDemo); nuclei: the deep grey nuclei, compact structures for interactive work (DeepNucleiDemo).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@user_errors
def data_demo(out, seed, train_cases, test_cases, spacing, structures, overwrite):
    """Write the demo dataset: MNI152 pseudo-subjects labelled by experts with distinct styles.

    \b
    Example:
      expertseg data demo --out demo_data --seed 0
      expertseg data demo --out nuclei_data --structures nuclei
    """
    from pipelines.data import demo

    demo(out, seed=seed, n_train=train_cases, n_test=test_cases, spacing=spacing, structures=structures, overwrite=overwrite)


@data.command("import")
@click.argument("fmt", type=click.Choice(["qubiq", "msseg2016", "nnunet", "scribbles"]))
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False), help="Source folder (never modified); scribbles: <case>.nii.gz label files.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="qubiq, msseg2016, nnunet: destination dataset folder (required).")
@click.option("--task", type=int, default=None, help="QUBIQ: which task to import (e.g. 1 for task01_seg*).")
@click.option("--expert", default=None, help="nnU-Net: id of the single expert (default 'nnunet'); scribbles: id of the new expert (required).")
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False), help="scribbles: the dataset to add the expert to, in place (required).")
@click.option("--unlabelled", default=None, metavar="zero-shifted|VALUE", help="scribbles (required): zero-shifted = 0 is unlabelled and classes are shifted by one (1 = background); an integer VALUE = that value is unlabelled, other values are classes as stored.")
@role_option
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out; scribbles: replace the expert's labels if it exists.")
@user_errors
def data_import(fmt, src, out, task, expert, data, unlabelled, role, overwrite):
    """Convert a public dataset layout into the multi-expert layout, or add real scribbles as an expert.

    \b
    Examples:
      expertseg data import qubiq --src QUBIQ/brain-growth --out brain_growth --task 1
      expertseg data import msseg2016 --src MSSEG2016/Training --out msseg
      expertseg data import nnunet --src Dataset004_Hippocampus --out hippo
      expertseg data import scribbles --src itksnap_scribbles --data demo_data --expert drscrib --unlabelled zero-shifted
    """
    from pipelines.data import import_

    import_(fmt, src=src, out=out, task=task, expert=expert, overwrite=overwrite, data=data, unlabelled=unlabelled, role=role)


@data.command("scribble")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset folder; changed in place unless --out.")
@click.option("--expert", required=True, help="Expert whose dense training labels the scribbles are drawn from.")
@click.option("--style", default=None, help="Registered scribble style: slicewise, line, centreline, contour, clicks, box, slices, habit.")
@click.option("--habit", default=None, help="Annotator habit for --style habit (implies it): sparse-centreline, contour-tracer, box-then-clicks, quick-lines.")
@click.option("--as", "new_id", default=None, metavar="NEW_ID", help="Id of the new expert (default <expert>-<style>, or <expert>-<habit>).")
@role_option
@click.option("--seed", type=int, default=None, help="Base seed; case i uses seed*1000+i (default: the config's seed, 0).")
@config_options
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Write a new dataset (--data plus the new expert) here, with hard links; --data is untouched.")
@click.option("--overwrite", is_flag=True, help="Replace the new expert's labels if it exists, and a non-empty --out.")
@user_errors
def data_scribble(data, expert, style, habit, new_id, role, seed, config_path, overrides, out, overwrite):
    """Add a simulated doctor: scribbles drawn from an expert's dense labels, as a new expert.

    The style's params come from the config's scribbles section when --style is its name, else the
    style's defaults, then --set scribbles.params.KEY=VALUE. The new expert's labelsTs/ are copies of
    the expert's dense test labels; every case's parameters go to DATA/.expertseg/scribbles-NEW_ID.json.

    \b
    Examples:
      expertseg data scribble --data demo_data --expert drnew --style line --set scribbles.params.n_strokes=2
      expertseg data scribble --data demo_data --expert drnew --habit contour-tracer --as drtrace --out demo_plus
    """
    from pipelines.data import scribble

    scribble(data, expert=expert, style=style, habit=habit, new_id=new_id, role=role, seed=seed, config_path=config_path, overrides=overrides, out=out, overwrite=overwrite)


@cli.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset folder (dataset.json, imagesTr/, labelsTr/<expert>/).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@config_options
@click.option("--experts", default=None, help="Comma-separated experts to train on (default: all not marked new).")
@click.option("--exclude-experts", default=None, help="Comma-separated experts to leave out.")
@click.option("--cases", default=None, help="Comma-separated training cases to use, all for training (no validation split).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest valid checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start over in a non-empty --out.")
@click.option("--interactive", "interactive", default=None, metavar="MODEL", help="Train a promptable model (clicks, scribbles, boxes) from this pretrained model; registered as @interactive.")
@tracking_option
@user_errors
def pretrain(data, out, config_path, overrides, experts, exclude_experts, cases, resume, overwrite, interactive, tracking):
    """Pretrain one network on every expert's labels (one CIN row per expert).

    \b
    Example:
      expertseg pretrain --data demo_data --out runs/pretrain --config configs/demo.yaml
      expertseg pretrain --data demo_data --out runs/pretrain --resume
      expertseg pretrain --data demo_data --out runs/inter --interactive runs/pretrain --config configs/demo.yaml
    """
    from pipelines.runtime.common import parse_list
    from pipelines.pretrain import pretrain as run

    run(data=data, out=out, config_path=config_path, overrides=overrides, include=parse_list(experts), exclude=parse_list(exclude_experts), cases=parse_list(cases), resume=resume, overwrite=overwrite, tracking=tracking, progress=sys.stderr.isatty(), interactive=interactive)


@cli.command()
@click.option("--model", required=True, help="Pretrained model: a run folder, its model/ folder, or models:/<name>@pretrained.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset holding the new doctor's labels.")
@click.option("--expert", required=True, help="The new doctor's expert id in the dataset.")
@click.option("--cases", default=None, help="Comma-separated cases to adapt on.")
@click.option("--shots", type=int, default=None, help="Or: this many of the doctor's cases, drawn by seed.")
@click.option("--scribbles", is_flag=True, help="Simulate scribbles from the doctor's dense labels and adapt on those.")
@click.option("--scribble-style", default=None, help="With --scribbles (implied): a registered style (slicewise, line, centreline, contour, clicks, box, slices) or habit:<name>; same as --set scribbles.name=...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (adapter/, model/).")
@config_options
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--resume", is_flag=True, help="Continue an interrupted adaptation in --out.")
@tracking_option
@user_errors
def adapt(model, data, expert, cases, shots, scribbles, scribble_style, out, config_path, overrides, overwrite, resume, tracking):
    """Adapt a pretrained model to a new doctor from a few of their cases (dense or scribbles).

    \b
    Examples:
      expertseg adapt --model runs/pretrain --data demo_data --expert drnew --shots 3 --out runs/adapt-drnew
      expertseg adapt --model models:/expertseg-BrainTissueDemo@pretrained --data demo_data \\
          --expert drnew --cases case001,case004 --set adapt.init.name=mean --out runs/adapt2
      expertseg adapt --model runs/pretrain --data demo_data --expert drnew --shots 5 --scribbles \
          --scribble-style habit:contour-tracer --out runs/adapt-contours
    """
    from pipelines.adapt import adapt as run
    from pipelines.runtime.common import parse_list

    if scribble_style:
        name, _, habit = scribble_style.partition(":")
        overrides = (f"scribbles.name={name}", *([f"scribbles.params.habit={habit}"] if habit else []), *overrides)
        scribbles = True
    run(model=model, data=data, expert=expert, out=out, cases=parse_list(cases), shots=shots, scribbles=scribbles, config_path=config_path, overrides=overrides, tracking=tracking, overwrite=overwrite, resume=resume, progress=sys.stderr.isatty())


@cli.command()
@click.option("--model", required=True, help="The model whose experts look at the cases: a run folder, its model/ folder, or models:/<name>@pretrained.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset whose training cases are candidates.")
@click.option("--expert", required=True, help="The new doctor (need not have any label yet).")
@click.option("--k", "k", required=True, type=int, help="How many cases to suggest.")
@click.option("--strategy", default="foreground-random", show_default=True, help="random, foreground-random, disagreement, diversity or disagreement+diversity.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter of the strategy, e.g. --param weight=0.7 (repeatable).")
@click.option("--candidates", default="unlabelled", show_default=True, type=click.Choice(["unlabelled", "all"]), help="unlabelled: the doctor's unlabelled training cases; all: every training case (the doctor's labels hidden, for benchmarking).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random strategies.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the suggestion and the ranking of every candidate to this JSON file.")
@config_options
@user_errors
def suggest(model, data, expert, k, strategy, params, candidates, seed, out, config_path, overrides):
    """Suggest which K cases a new doctor should label first, with the reason for each.

    \b
    Examples:
      expertseg suggest --model runs/pretrain --data demo_data --expert drnew --k 3 --candidates all
      expertseg suggest --model runs/pretrain --data demo_data --expert drnew --k 3 --candidates all \\
          --strategy disagreement+diversity --param weight=0.7 --out suggestion.json
    """
    from pipelines.suggest import parse_params, suggest as run

    run(model=model, data=data, expert=expert, k=k, strategy=strategy, params=parse_params(params), candidates=candidates, seed=seed, out=out, config_path=config_path, overrides=overrides, progress=sys.stderr.isatty())


@cli.command()
@click.option("--model", required=True, help="Run folder, model/ or adapter/ folder, or models:/<name>@<alias>.")
@click.option("--images", required=True, type=click.Path(exists=True), help="A NIfTI file or a folder of <case>_<CCCC>.nii.gz files.")
@click.option("--experts", default="all", show_default=True, help="Comma-separated experts, or all.")
@click.option("--adapter", "adapters", multiple=True, help="Extra adapter to stack onto the model (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@config_options
@user_errors
def predict(model, images, experts, adapters, out, overwrite, config_path, overrides):
    """Segment scans the way each expert would; also consensus and disagreement maps.

    \b
    Example:
      expertseg predict --model runs/adapt-drnew --images demo_data/imagesTs --experts all --out preds
    """
    from pipelines.predict import predict as run

    run(model=model, images=images, out=out, experts=experts, adapters=list(adapters), overwrite=overwrite, config_path=config_path, overrides=overrides, progress=sys.stderr.isatty())


@cli.command()
@click.option("--model", required=True, help="Interactive model: a run folder of pretrain --interactive, its model/ folder, or models:/<name>@interactive.")
@click.option("--image", "images", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False), help="The scan (a NIfTI file; repeat once per channel, in channel order).")
@click.option("--expert", required=True, help="The annotating expert: the row whose style answers.")
@click.option("--prompts", required=True, type=click.Path(dir_okay=False), help="prompts.json: clicks, scribbles and boxes in voxel or world (mm, RAS) coordinates (schema in README.md).")
@click.option("--class", "target", default=None, help="Class to segment, name or index (default: the prompts file's, else the first foreground class).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Mask to write (.nii.gz), on the input's grid; a JSON log goes beside it.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@user_errors
def refine(model, images, expert, prompts, target, out, device):
    """Refine one class's mask with clicks, scribbles and boxes, in one expert's style.

    \b
    Example:
      expertseg refine --model models:/expertseg-BrainTissueDemo@interactive --image sub011_0000.nii.gz \\
          --expert drB --prompts prompts.json --out sub011_wm.nii.gz
    """
    from pipelines.refine import refine as run

    run(model=model, images=list(images), expert=expert, prompts=prompts, out=out, target=target, device=device)


@cli.command()
@click.option("--model", required=True, help="Interactive model: a run folder of pretrain --interactive, its model/ folder, or models:/<name>@interactive.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="The dataset whose cases to annotate; the labels go to labelsTr/<expert>/.")
@click.option("--expert", required=True, help="The annotating doctor's expert id (a new id is added to dataset.json with role new).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep 127.0.0.1 unless you know why).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Save each model that 'learn my style' produces as <out>/model (default: kept in memory only).")
@click.option("--learn-steps", default=60, show_default=True, type=click.IntRange(1, 100000), help="Adaptation steps of 'learn my style'.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@user_errors
def annotate(model, data, expert, host, port, out, learn_steps, device):
    """Serve the annotation page: correct predictions, save them as your labels, learn your style.

    \b
    Example:
      expertseg annotate --model runs/inter --data demo_data --expert drme
      # open the printed http://127.0.0.1:8765/?token=... address in a browser
    """
    from pipelines.annotate import annotate as run

    run(model=model, data=data, expert=expert, host=host, port=port, out=out, learn_steps=learn_steps, device=device)


@cli.command("evaluate-interactive")
@click.option("--model", required=True, help="Interactive model: run folder, model/ folder, or models:/<name>@interactive.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset with the experts' held-out (imagesTs/labelsTs) labels.")
@click.option("--expert", "experts", default="all", show_default=True, help="Comma-separated experts, or all (one line each in the plot).")
@click.option("--classes", default=None, help="Comma-separated classes (default: every foreground class).")
@click.option("--clicks", default=5, show_default=True, help="Corrective clicks after the first prompt.")
@click.option("--max-cases", type=int, default=None, help="At most this many test cases per expert.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train"]), help="Score on the held-out cases, or on training cases named with --cases (validation cases: choose settings without touching the test cases).")
@click.option("--cases", default=None, help="Comma-separated cases to score (default: every case of --split).")
@click.option("--tolerance", default=2.0, show_default=True, help="NSD tolerance in mm (the challenge's 2 mm).")
@click.option("--other-row/--no-other-row", default=True, show_default=True, help="Also run each session on the nearest other expert's row (same prompts; its own corrections): does the row matter?")
@click.option("--out", default="evaluate_interactive", show_default=True, type=click.Path(file_okay=False), help="Where to write interactive.json, interactive.csv and dice_per_interaction.png.")
@click.option("--device", default="cpu", show_default=True)
@user_errors
def evaluate_interactive(model, data, experts, classes, clicks, max_cases, split, cases, tolerance, other_row, out, device):
    """The CVPR 2025 interactive 3D protocol: a box (or a scribble), then 5 clicks at the largest error.

    \b
    Example:
      expertseg evaluate-interactive --model runs/inter --data demo_data --expert drA,drB --out eval-inter
    """
    from pipelines.evaluate_interactive import evaluate_interactive as run
    from pipelines.runtime.common import parse_list

    run(model=model, data=data, experts=experts, classes=parse_list(classes), clicks=clicks, max_cases=max_cases, split=split, cases=parse_list(cases), tolerance=tolerance, other_row=other_row, out=out, device=device)


@cli.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset folder.")
@click.option("--stage", required=True, type=click.Choice(["pretrain", "adapt"]), help="What to tune.")
@click.option("--trials", required=True, type=int, help="Trials this worker runs (the study may hold more).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for trial runs, best_config.yaml and trials.csv.")
@click.option("--storage", default=None, help="Study storage: sqlite:///file.db (default: in --out), journal:FILE (several processes), postgresql://user@host/db (many machines).")
@click.option("--study", "study_name", default=None, help="Study name; workers with the same storage and name share it.")
@click.option("--model", default=None, help="adapt: the pretrained model.")
@click.option("--expert", default=None, help="adapt: the new doctor.")
@click.option("--shots", default=3, show_default=True, help="adapt: cases to adapt on; the doctor's other training cases validate.")
@click.option("--pruner", default="median", show_default=True, type=click.Choice(["median", "percentile", "hyperband", "none"]))
@click.option("--heartbeat", default=60, show_default=True, help="RDB storages: seconds between trial heartbeats; a dead worker's trial is retried after 2 of them.")
@config_options
@tracking_option
@user_errors
def tune(data, stage, trials, out, storage, study_name, model, expert, shots, pruner, heartbeat, config_path, overrides, tracking):
    """Search hyperparameters with Optuna; export the best as a config file.

    \b
    Examples:
      expertseg tune --data demo_data --stage adapt --model runs/pre --expert drnew --trials 20 --out tune-adapt
      expertseg tune --data demo_data --stage pretrain --trials 8 --out tune-pre --config configs/demo.yaml \\
          --storage postgresql://expertseg@db-host/optuna --study pre-v1
    """
    from pipelines.tune import tune as run

    run(data=data, stage=stage, trials=trials, out=out, storage=storage, study_name=study_name, config_path=config_path, overrides=overrides, model=model, expert=expert, shots=shots, pruner=pruner, heartbeat=heartbeat, tracking=tracking, progress=sys.stderr.isatty())


@cli.command()
@click.option("--pred", required=True, type=click.Path(exists=True, file_okay=False), help="Predictions: the --out folder of 'expertseg predict'.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset holding the experts' labels.")
@click.option("--tolerance", default=None, type=float, help="Normalised surface Dice tolerance in mm (default: evaluate.tolerance_mm of the config, 1.0).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Where to write evaluation.json/.csv (default: --pred).")
@config_options
@user_errors
def evaluate(pred, data, tolerance, out, config_path, overrides):
    """Dice, IoU, HD95, ASSD and NSD per case, expert and class (JSON + CSV).

    \b
    Example:
      expertseg evaluate --pred preds --data demo_data --tolerance 2
    """
    from pipelines.evaluate import evaluate as run

    run(pred=pred, data=data, tolerance=tolerance, out=out, config_path=config_path, overrides=overrides, progress=sys.stderr.isatty())


@cli.command()
@click.option("--model", required=True, help="Model (adapted or pretrained): run folder, adapter/ or model/ folder, or models:/<name>@<alias>.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset with the experts' held-out labels.")
@click.option("--out", default="compare", show_default=True, type=click.Path(file_okay=False), help="Output folder (report.html, compare.json, CSVs, figures/).")
@click.option("--runs", multiple=True, help="Other models to score side by side (run folder, runs:/..., models:/name@alias); repeatable.")
@click.option("--adapter", "adapters", multiple=True, help="Extra adapter to stack onto --model (repeatable).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train"]))
@click.option("--max-cases", type=int, default=None, help="Compare on at most this many cases.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@config_options
@tracking_option
@user_errors
def compare(model, data, out, runs, adapters, split, max_cases, overwrite, config_path, overrides, tracking):
    """Cross-expert matrices, consensus baselines, distribution metrics and an HTML report.

    \b
    Example:
      expertseg compare --model runs/drnew --data demo_data --out compare \\
          --runs runs/pooled --runs models:/expertseg-BrainTissueDemo@pretrained
    """
    from pipelines.compare import compare as run

    run(model=model, data=data, out=out, runs=runs, adapters=adapters, split=split, max_cases=max_cases, overwrite=overwrite, tracking=tracking, config_path=config_path, overrides=overrides, progress=sys.stderr.isatty())


@cli.command()
@click.option("--quick", is_flag=True, help="Toy scale: every suite in a few minutes (numbers exercise the machinery, not claims).")
@click.option("--out", default="bench_out", show_default=True, type=click.Path(file_okay=False), help="Working folder (runs, results.json, figures).")
@click.option("--suite", "suites", multiple=True, type=click.Choice(BENCH_SUITES + BENCH_EXTRA_SUITES), help="Run only these suites (repeatable; default: modelling, efficiency, scribbles, speed; targets, prompts and capacity run only when named, each an hour or more).")
@click.option("--write", default=None, type=click.Path(dir_okay=False), help="Write the tables and plots to this Markdown file (e.g. BENCHMARKS.md).")
@click.option("--report-only", is_flag=True, help="Run nothing: write the plots (and --write) from the results already in --out.")
@click.option("--option", "options", multiple=True, metavar="SUITE.KEY=VALUE", help="A suite's own setting, e.g. --option selection.seeds=2 (repeatable; see the suite's module).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command: reuse the runs it finished in --out.")
@user_errors
def bench(quick, out, suites, write, report_only, options, resume):
    """Benchmarks: label efficiency, multi-expert baselines, scribbles vs dense, speed.

    \b
    Examples:
      expertseg bench --quick
      expertseg bench --write BENCHMARKS.md        # full mode, about an hour on 2 CPU cores
      expertseg bench --suite targets --write BENCHMARKS.md   # adds the stage-2 targets (longer pretraining)
      expertseg bench --report-only --write BENCHMARKS.md     # rewrite the report from bench_out/results.json
      expertseg bench --suite selection --option selection.seeds=2 --option selection.experts=drnew
      expertseg bench --suite capacity --resume    # after an interruption: finished runs are kept
    """
    from pipelines.bench.runner import run_bench

    command = "expertseg bench" + (" --quick" if quick else "") + "".join(f" --suite {s}" for s in suites) + "".join(f" --option {o}" for o in options) + (f" --write {write}" if write else "")
    if report_only and suites:
        raise click.UsageError("--report-only runs no suite; drop --suite")
    parsed = dict(o.partition("=")[::2] for o in options)
    if any("=" not in o or "." not in o.partition("=")[0] for o in options):
        raise click.UsageError("--option takes SUITE.KEY=VALUE, e.g. --option selection.seeds=2")
    run_bench(out=out, mode="quick" if quick else "full", suites=() if report_only else tuple(suites) or BENCH_SUITES, write=write, command=command, options=parsed, resume=resume)


def main(argv=None):
    """Console entry point: plugins first (``EXPERTSEG_PLUGINS``), then the command."""
    from experts.plugins import load_plugins

    try:
        load_plugins()
    except ExpertsegError as err:
        for line in err.problems:
            click.echo(f"error: {line}", err=True)
        sys.exit(EXIT_USAGE)
    cli.main(args=argv, prog_name="expertseg")


if __name__ == "__main__":
    main()
