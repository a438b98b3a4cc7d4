"""Tiny hostile inputs fail fast: one line, the right error, no gigabytes.

Each case builds a few bytes to a few kB in ``tmp_path`` that, before the limits, expanded into
gigabytes (YAML aliases, a NIfTI header declaring 4 GB, a target spacing of 0.01 mm), recursed until
a traceback (100k-deep JSON), or passed ``data check`` and crashed or stalled pretraining later
(zero/NaN spacing, a NaN sform, a 10000 x 1 x 1 "volume", a label table without a foreground class).
Cases marked ``bomb`` run in a child process under ``RLIMIT_AS`` (1 GiB), so a regression fails the
test with a ``MemoryError`` instead of taking the machine down.
"""

import gzip
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from experts.data.manifest import scan_dataset
from experts.data.nifti import GZIP_MAX_RATIO, MAX_VOXELS, VOXEL_BUDGET_ENV, read_header, save_volume
from experts.data.plan import make_plan
from experts.data.spec import MAX_JSON_BYTES, read_spec
from experts.errors import ConfigError, DatasetError, ExpertsegError
from pipelines.runtime.config import MAX_CONFIG_BYTES, load_config

REPO = Path(__file__).parents[3]
AFF = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (8, 8, 6)
HDR = nib.Nifti1Header.template_dtype  # field offsets of the NIfTI-1 header
MAX_MESSAGE = 500
MAX_SECONDS = 2.0
CHILD_MEMORY = 1 << 30  # RLIMIT_AS of a bomb case's process: the bombs asked for 3 to 390 GB


# --- inputs -----------------------------------------------------------------------------------------


def dataset(root: Path, shape=SHAPE) -> Path:
    """2 training cases of ``shape`` (2 mm voxels), expert ``a``, labels background/x/ignore."""
    rng = np.random.default_rng(0)
    for case in ("c1", "c2"):
        save_volume(root / "imagesTr" / f"{case}_0000.nii.gz", rng.normal(size=shape).astype(np.float32), AFF)
        label = np.zeros(shape, np.uint8)
        label[tuple(slice(0, max(1, s // 2)) for s in shape)] = 1
        save_volume(root / "labelsTr" / "a" / f"{case}.nii.gz", label, AFF)
    write_json(root, {"name": "T", "channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1, "ignore": 2}, "file_ending": ".nii.gz", "experts": {"a": {}}})
    return root


def write_json(root: Path, spec) -> None:
    (root / "dataset.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))


def spec_with(**changes) -> dict:
    spec = {"name": "T", "channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1, "ignore": 2}, "file_ending": ".nii.gz", "experts": {"a": {}}}
    spec.update(changes)
    return spec


def nifti_bytes(shape=SHAPE, affine=AFF, **fields) -> bytearray:
    """A valid single-file NIfTI-1 (header + float32 zeros) with raw header fields overwritten
    (nibabel refuses to write a singular affine, so broken geometry is poked in as raw fields)."""
    img = nib.Nifti1Image(np.zeros(shape, np.float32), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    raw = bytearray(img.to_bytes())
    for name, values in fields.items():
        dtype, offset = HDR.fields[name][:2]
        values = np.asarray(values, dtype=dtype.base.newbyteorder("<")).ravel()
        raw[offset : offset + values.nbytes] = values.tobytes()
    return raw


def bad_image(root: Path, raw: bytes, *, gz: bool = True, truncate: int | None = None) -> Path:
    """Replace case c1's image by ``raw`` (optionally cut to ``truncate`` bytes)."""
    data = bytes(raw[:truncate] if truncate else raw)
    if gz:
        img = root / "imagesTr" / "c1_0000.nii.gz"
        img.write_bytes(gzip.compress(data))
    else:  # a .nii dataset
        spec = json.loads((root / "dataset.json").read_text())
        write_json(root, {**spec, "file_ending": ".nii"})
        for p in list(root.rglob("*.nii.gz")):
            nib.save(nib.load(str(p)), str(p.with_name(p.name[:-3])))
            p.unlink()
        (root / "imagesTr" / "c1_0000.nii").write_bytes(data)
    return root


def billion_laughs(levels: int = 9) -> str:
    """About 450 bytes of YAML that expand into 9**levels strings (387 million)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndata:\n  spacing: *l{levels - 1}\n"


# --- what a user runs: the loaders the cases call (by name, so a child process can call them too) ---


def load_config_file(path):
    return load_config(path)


def load_overrides(*overrides):
    return load_config(None, list(overrides))


def check_dataset(root):
    return scan_dataset(root)


def check_dataset_quick(root):
    return scan_dataset(root, read_voxels=False)


def plan_dataset(root, spacing=None, patch_size=None):
    return make_plan(scan_dataset(root), divisor=8, spacing=spacing, patch_size=patch_size)


def load_spec(root):
    return read_spec(root)


def demo_style_dice(root):
    from experts.data.demo import style_dice  # imports nilearn: only for this case

    return style_dice(root, split="train")


def header_of(path):
    return read_header(path)


# --- the cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    build: object  #: tmp_path -> (loader name, args)
    error: type
    message: str  #: a fragment of the one line
    bomb: bool = False  #: run in a child under RLIMIT_AS
    env: dict | None = None


def cfg(text):
    def build(tmp):
        (tmp / "c.yaml").write_text(text) if isinstance(text, str) else (tmp / "c.yaml").write_bytes(text)
        return "load_config_file", [str(tmp / "c.yaml")]

    return build


def ds(mutate=None, loader="check_dataset", shape=SHAPE, extra=()):
    def build(tmp):
        root = dataset(tmp / "ds", shape=shape)
        if mutate:
            mutate(root)
        return loader, [str(root), *extra]

    return build


def header_bomb(tmp):
    """~70 bytes of .nii.gz declaring 16384 x 16384 x 4 float32 (4 GiB) behind the header."""
    raw = nifti_bytes(dim=[3, 16384, 16384, 4, 1, 1, 1, 1])[:352]
    (tmp / "bomb.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    return "header_of", [str(tmp / "bomb.nii.gz")]


def ratio_bomb(tmp):
    """Within the voxel budget (256**3 float32 = 64 MB), but the file is 70 bytes."""
    raw = nifti_bytes(dim=[3, 256, 256, 256, 1, 1, 1, 1])[:352]
    root = dataset(tmp / "ds")
    (root / "imagesTr" / "c1_0000.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    return "check_dataset", [str(root)]


CASES = {
    # --- YAML configs and --set values (problem 1) --------------------------------------------------
    "yaml_billion_laughs": Case(cfg(billion_laughs()), ConfigError, "YAML alias *l0 is not accepted", bomb=True),
    "yaml_merge_key_alias": Case(cfg("base: &b {steps: 5}\ntrain:\n  <<: *b\n"), ConfigError, "line 3: YAML alias *b"),
    "yaml_deep_nesting": Case(cfg("data: " + "[" * 100_000 + "]" * 100_000), ConfigError, "nested deeper than 32 levels"),
    "yaml_huge_file": Case(cfg("# " + "x" * (MAX_CONFIG_BYTES + 10) + "\n"), ConfigError, "larger than 1024 kB"),
    "yaml_huge_integer": Case(cfg("train:\n  steps: " + "9" * 20_000 + "\n"), ConfigError, "c.yaml: a value cannot be read (Exceeds the limit (4300 digits)"),
    "yaml_long_value_echo": Case(cfg("network:\n  name: " + "x" * 50_000 + "\n"), ConfigError, "'network.name' is 'xxx"),
    "set_value_alias": Case(lambda t: ("load_overrides", ["data.spacing=[&a [1, 1], *a, *a]"]), ConfigError, "--set data.spacing: line 1: YAML alias *a"),
    "set_deep_value": Case(lambda t: ("load_overrides", ["data.spacing=" + "[" * 50_000]), ConfigError, "--set data.spacing: line 1: nested deeper"),
    "set_spacing_nan": Case(lambda t: ("load_overrides", ["data.spacing=[.nan, 1, 1]"]), ConfigError, "'data.spacing' must be a list of a number or null, got [nan, 1, 1]"),
    "set_spacing_zero": Case(lambda t: ("load_overrides", ["data.spacing=[0, 1, 1]"]), ConfigError, "'data.spacing' must be 3 positive numbers"),
    "set_huge_network": Case(lambda t: ("load_overrides", ["network.channels=[100000, 100000]"]), ConfigError, "'network.channels' needs 2 to 8 widths between 1 and 1024"),
    # --- resampling targets (problem 3) -------------------------------------------------------------
    "spacing_390_gb": Case(ds(loader="plan_dataset", extra=([0.01, 0.01, 0.01],)), ConfigError, "'data.spacing' (0.01, 0.01, 0.01) mm resamples case c1 (shape (8, 8, 6)) to (1600, 1600, 1200)", bomb=True),
    "spacing_negative_in_plan": Case(ds(loader="plan_dataset", extra=([-1, 2, 2],)), ConfigError, "'data.spacing' must be 3 positive finite numbers"),
    "patch_over_budget": Case(ds(loader="plan_dataset", extra=(None, [1024, 1024, 1024])), ConfigError, "'data.patch_size' gives a patch of (1024, 1024, 1024)"),
    "budget_env_not_a_number": Case(ds(), ConfigError, f"{VOXEL_BUDGET_ENV}='lots': must be a positive whole number", env={VOXEL_BUDGET_ENV: "lots"}),
    "budget_env_small": Case(ds(), DatasetError, "(384 voxels), above the voxel budget of 100 per volume", env={VOXEL_BUDGET_ENV: "100"}),
    # --- NIfTI headers (problem 2 and 4) ------------------------------------------------------------
    "nifti_header_bomb": Case(header_bomb, DatasetError, "header declares dimensions (16384, 16384, 4) (1,073,741,824 voxels), above the voxel budget of 134,217,728", bomb=True),
    "nifti_header_bomb_with_big_budget": Case(header_bomb, DatasetError, f"bytes gzip file can hold (at most {GZIP_MAX_RATIO}:1); the file is truncated", bomb=True, env={VOXEL_BUDGET_ENV: str(2**31)}),
    "nifti_gzip_ratio": Case(ratio_bomb, DatasetError, "header declares dimensions (256, 256, 256) of float32 (64.0 MB), more than a", bomb=True),
    "nii_truncated": Case(ds(lambda r: bad_image(r, nifti_bytes(), gz=False, truncate=400)), DatasetError, "but the file holds 400 bytes"),
    "nii_vox_offset_far": Case(ds(lambda r: bad_image(r, nifti_bytes(vox_offset=2e9), gz=False)), DatasetError, "(1.9 GB with the header), but the file holds"),
    "dim0_is_9": Case(ds(lambda r: bad_image(r, nifti_bytes(dim=[9, 8, 8, 6, 1, 1, 1, 1]))), DatasetError, "header dim[0] (the number of dimensions) is 9, must be 1 to 7"),
    "dim0_is_0": Case(ds(lambda r: bad_image(r, nifti_bytes(dim=[0, 8, 8, 6, 1, 1, 1, 1]))), DatasetError, "header dim[0] (the number of dimensions) is 0"),
    "dim_negative": Case(ds(lambda r: bad_image(r, nifti_bytes(dim=[3, 8, -8, 6, 1, 1, 1, 1]))), DatasetError, "header declares dimensions (8, -8, 6)"),
    "five_dimensions": Case(ds(lambda r: bad_image(r, nifti_bytes(dim=[5, 8, 8, 6, 1, 2, 1, 1]))), DatasetError, "5D volume of shape (8, 8, 6, 1, 2), expected 3D"),
    "unknown_datatype": Case(ds(lambda r: bad_image(r, nifti_bytes(datatype=4096))), DatasetError, "inconsistent NIfTI header (data code 4096 not recognized)"),
    # --- geometry that check must refuse because pretraining cannot use it (problem 4) -----------------
    "zero_spacing": Case(ds(lambda r: bad_image(r, nifti_bytes(srow_x=[0, 0, 0, 0], qform_code=0))), DatasetError, "voxel spacing (0, 2, 2) mm: every axis needs a spacing of at least 1e-06 mm"),
    "zero_spacing_quick_check": Case(ds(lambda r: bad_image(r, nifti_bytes(srow_y=[0, 0, 0, 0], qform_code=0)), loader="check_dataset_quick"), DatasetError, "voxel spacing (2, 0, 2) mm"),
    "nan_pixdim_no_transform": Case(ds(lambda r: bad_image(r, nifti_bytes(pixdim=[1, np.nan, 2, 2, 1, 1, 1, 1], qform_code=0, sform_code=0))), DatasetError, "the voxel-to-world affine holds NaN or infinite values"),
    "nan_sform": Case(ds(lambda r: bad_image(r, nifti_bytes(srow_x=[2, 0, 0, np.nan]))), DatasetError, "header sform holds NaN or infinite values"),
    "inf_sform": Case(ds(lambda r: bad_image(r, nifti_bytes(srow_z=[0, 0, np.inf, 0]))), DatasetError, "header sform holds NaN or infinite values"),
    "nan_qform_beside_good_sform": Case(ds(lambda r: bad_image(r, nifti_bytes(qoffset_x=np.nan))), DatasetError, "header qform (quaternion, offset or pixdim) holds NaN"),
    "degenerate_axes": Case(ds(lambda r: bad_image(r, nifti_bytes(srow_x=[2, 2, 0, 0], srow_y=[0, 0.001, 0, 0], qform_code=0))), DatasetError, "the affine's axes are not independent"),
    "line_not_volume": Case(ds(shape=(10000, 1, 1)), DatasetError, "shape (10000, 1, 1) is thinner than 2 voxels along 2 axes"),
    "point_not_volume_quick_check": Case(ds(shape=(1, 1, 1), loader="check_dataset_quick"), DatasetError, "shape (1, 1, 1) is thinner than 2 voxels along 3 axes"),
    # --- dataset.json (problem 4) ---------------------------------------------------------------------
    "json_100k_deep": Case(ds(lambda r: write_json(r, "[" * 100_000 + "]" * 100_000)), DatasetError, "dataset.json: nested deeper than 32 levels"),
    "json_40_deep": Case(ds(lambda r: write_json(r, spec_with(extra=json.loads("[" * 40 + "]" * 40)))), DatasetError, "dataset.json: nested deeper than 32 levels"),
    "json_too_large": Case(ds(lambda r: write_json(r, spec_with(notes="x" * MAX_JSON_BYTES))), DatasetError, "dataset.json: larger than 10 MB"),
    "json_huge_integer": Case(ds(lambda r: write_json(r, '{"name": ' + "9" * 20_000 + "}")), DatasetError, "dataset.json: a value cannot be read"),
    "experts_is_a_string": Case(ds(lambda r: write_json(r, spec_with(experts="ab")), loader="load_spec"), DatasetError, '"experts" must be an object mapping expert ids to objects, e.g. {"rater1": {}}, found str \'ab\''),
    "experts_is_a_string_demo_tool": Case(ds(lambda r: write_json(r, spec_with(experts="ab")), loader="demo_style_dice"), DatasetError, '"experts" must be an object mapping expert ids'),
    "experts_is_a_list": Case(ds(lambda r: write_json(r, spec_with(experts=["a", "b"]))), DatasetError, "found list ['a', 'b']"),
    "expert_entry_not_object": Case(ds(lambda r: write_json(r, spec_with(experts={"a": "rater one"}))), DatasetError, 'expert "a" must be an object such as {"description": "..."}, found str'),
    "labels_without_foreground": Case(ds(lambda r: write_json(r, spec_with(labels={"background": 0, "ignore": 1}))), DatasetError, '"labels" declares no foreground class (only background and ignore)'),
    "labels_background_only": Case(ds(lambda r: write_json(r, spec_with(labels={"background": 0}))), DatasetError, '"labels" declares no foreground class (only background)'),
    "label_name_echo": Case(ds(lambda r: write_json(r, spec_with(labels={"background": 0, "x" * 100_000: [1, 2] * 10_000, "ignore": 1}))), DatasetError, 'has value [1, 2, 1, 2, 1, 2, 1, 2, ...]'),
}


@pytest.fixture(scope="module")
def warm_imports():
    """Time the checks, not the first import of torch (the config check builds components)."""
    load_config(None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_fails_fast_with_one_line(name, tmp_path, monkeypatch, warm_imports):
    case = CASES[name]
    loader, args = case.build(tmp_path)
    if case.bomb:
        result = run_in_child(loader, args, env=case.env)
        assert result["error"] == case.error.__name__, result
        problems, seconds = result["problems"], result["seconds"]
        assert result["peak_growth_mb"] < 100, result  # the bombs asked for 3 to 390 GB
    else:
        for key, value in (case.env or {}).items():
            monkeypatch.setenv(key, value)
        start = time.perf_counter()
        with pytest.raises(ExpertsegError) as err:
            globals()[loader](*args)
        seconds = time.perf_counter() - start
        assert type(err.value) is case.error, err.value.problems
        problems = err.value.problems
    assert len(problems) >= 1 and all("\n" not in p and len(p) < MAX_MESSAGE for p in problems), problems
    assert any(case.message in p for p in problems), problems
    assert seconds < MAX_SECONDS, f"{name} took {seconds:.2f} s"


_CHILD = r"""
import importlib.util, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
spec = importlib.util.spec_from_file_location("hostile_inputs", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from experts.errors import ExpertsegError
call = json.loads(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    getattr(module, call["loader"])(*call["args"])
    out = {"error": None}
except ExpertsegError as err:
    out = {"error": type(err).__name__, "problems": err.problems}
out["seconds"] = time.perf_counter() - start
out["peak_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def run_in_child(loader: str, args: list, *, env: dict | None) -> dict:
    """Call ``loader(*args)`` of this module in a fresh process whose address space is capped."""
    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child_env.pop(VOXEL_BUDGET_ENV, None)
    child_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, __file__, json.dumps({"loader": loader, "args": args}), str(CHILD_MEMORY)],
        capture_output=True, text=True, env=child_env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_there_is_a_case_for_every_problem_found():
    assert len(CASES) >= 20
    assert sum(c.bomb for c in CASES.values()) >= 4


def test_limits_leave_real_inputs_alone(tmp_path):
    """The valid dataset, a 2D X x Y x 1 dataset and a budget-sized header all still pass."""
    plan = make_plan(scan_dataset(dataset(tmp_path / "ds")), divisor=8)
    assert plan.spacing == [2.0, 2.0, 2.0]
    scan_dataset(dataset(tmp_path / "flat", shape=(16, 12, 1)))
    raw = nifti_bytes(dim=[3, 512, 512, 512, 1, 1, 1, 1], datatype=2, bitpix=8)[:352]  # uint8, exactly 512**3
    path = tmp_path / "big.nii"
    with open(path, "wb") as fh:
        fh.write(bytes(raw))
        fh.truncate(352 + MAX_VOXELS)  # sparse: no disk used
    assert read_header(path).shape == (512, 512, 512)


def test_gzip_bound_is_what_deflate_can_reach():
    """A run of zeros compresses at about 1030:1; the limit must not refuse real (sparse) labels."""
    zeros = bytes(64 * 1024 * 1024)
    ratio = len(zeros) / len(gzip.compress(zeros, compresslevel=9))
    assert 900 < ratio <= GZIP_MAX_RATIO


# --- the command line: exit 2, "error:" lines, no traceback ----------------------------------------


def cli(*args, env=None) -> subprocess.CompletedProcess:
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OPENBLAS_NUM_THREADS": "1"}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args], capture_output=True, text=True, env=child_env, timeout=120, cwd=str(REPO),
    )


_CLI = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # torch reserves address space; the bombs want far more
sys.argv = ["expertseg", *sys.argv[1:]]
from pipelines.cli import main
main(sys.argv[1:])
"""


def assert_user_error(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert lines and any(fragment in l for l in lines), proc.stderr[-2000:]
    assert all(len(l) < MAX_MESSAGE for l in lines)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda r: (r / "imagesTr" / "c1_0000.nii.gz").write_bytes(gzip.compress(bytes(nifti_bytes(dim=[3, 16384, 16384, 4, 1, 1, 1, 1])[:352]))), "above the voxel budget"),
        (lambda r: write_json(r, "[" * 100_000 + "]" * 100_000), "nested deeper than 32 levels"),
        (lambda r: bad_image(r, nifti_bytes(srow_x=[2, 0, 0, np.nan])), "header sform holds NaN"),
    ],
    ids=["header_bomb", "deep_json", "nan_sform"],
)
def test_data_check_command_refuses_in_one_line(tmp_path, mutate, fragment):
    root = dataset(tmp_path / "ds")
    mutate(root)
    assert_user_error(cli("data", "check", str(root)), fragment)


def test_pretrain_command_refuses_a_spacing_that_blows_the_budget(tmp_path):
    root = dataset(tmp_path / "ds")
    proc = cli("pretrain", "--data", str(root), "--out", str(tmp_path / "run"), "--tracking", "local", "--set", "data.spacing=[0.01,0.01,0.01]")
    assert_user_error(proc, "'data.spacing' (0.01, 0.01, 0.01) mm resamples case c1 (shape (8, 8, 6)) to (1600, 1600, 1200)")
