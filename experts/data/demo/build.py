"""Write the demo datasets: pseudo-subjects from MNI152 labelled by several expert styles (BrainTissueDemo, DeepNucleiDemo).

:func:`make_demo_dataset` draws every random number first (subject warps and intensities, each
expert's per-case style parameters, scribble seeds, which cases each expert labels), logs them to
``<out>/demo_params.json``, and writes the dataset (layout version 1) into a temporary sibling that
is moved into place at the end. :func:`replay_label` rebuilds a label from the log;
:func:`style_dice` measures how much the experts differ.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import asdict
from itertools import combinations
from pathlib import Path

import numpy as np

from experts.data.demo.anatomy import make_subject, make_subject_params, output_grid
from experts.data.demo.styles import DEMO_EXPERTS, LABELS, NUCLEI_LABELS, Expert
from experts.data.nifti import load_volume, save_volume
from experts.data.spec import DatasetSpec, ExpertInfo, read_spec, write_spec
from experts.errors import DatasetError

__all__ = ["make_demo_dataset", "draw_params", "replay_label", "style_dice", "PARAMS_FILE", "DESCRIPTION", "NUCLEI_DESCRIPTION", "STRUCTURES"]

PARAMS_FILE = "demo_params.json"
#: Scribble stroke width and boundary-stroke erosion in mm (converted to voxels per spacing).
SCRIBBLE_THICKNESS_MM = 3.0
SCRIBBLE_EROSION_MM = (3.0, 6.0)

DESCRIPTION = (
    "Synthetic multi-expert brain tissue segmentation (GM, WM) on pseudo-subjects made from the MNI152 2009 "
    "template: each subject is the template under a random smooth deformation and a small random affine, with "
    "an enlargement of the ventricles and deep nuclei, and a random gamma, bias field and Rician noise on the T1. Seven simulated experts label the same anatomy with "
    "their own consistent style: 'ref' takes the most probable tissue; 'overseg' never labels CSF, grows GM "
    "outward and draws smooth outlines; 'wmtight' puts the GM/WM boundary inside the WM; 'nofossa' leaves out "
    "the cerebellum and brainstem and misses small islands; 'scribbler' gives only scribbles on the training "
    "cases; 'drnew', the new doctor (role new, for adaptation), puts the GM/WM boundary inside the GM and keeps "
    "a tight outer GM boundary; 'drfar', a second new doctor, follows another protocol (the deep grey nuclei, "
    "cerebellum and brainstem are white matter, grey matter is the cortex alone) and gives broken outlines traced "
    "inside each structure (the contour-tracer habit) on the training cases it does not label densely. Experts label different subsets of the training cases; every expert labels "
    "every test case densely, so each can be scored. All random parameters are in demo_params.json."
)
NUCLEI_DESCRIPTION = (
    "Synthetic multi-expert segmentation of compact structures, the deep grey nuclei (thalamus, caudate, lentiform "
    "nucleus), on the same pseudo-subjects as BrainTissueDemo, with the nuclei drawn into the T1 (darker than white "
    "matter, the pallidum brighter than the putamen). The same seven experts outline them in their own styles: "
    "boundaries inside or outside the visible edge, broad or fine brushes, and for 'drfar' another protocol (the "
    "lentiform label is the putamen alone). Made for interactive segmentation, where a box or a click says where the "
    "object is. All random parameters are in demo_params.json."
)
#: The demo's two label sets: ``tissue`` (GM, WM over the whole brain; BrainTissueDemo) and
#: ``nuclei`` (the deep grey nuclei, compact; DeepNucleiDemo), with each one's name, labels and
#: default spacing (mm).
STRUCTURES = {
    "tissue": {"name": "BrainTissueDemo", "labels": LABELS, "spacing": 3.0, "description": DESCRIPTION},
    "nuclei": {"name": "DeepNucleiDemo", "labels": NUCLEI_LABELS, "spacing": 2.0, "description": NUCLEI_DESCRIPTION},
}


def make_demo_dataset(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    n_train: int = 24,
    n_test: int = 6,
    spacing: float | None = None,
    structures: str = "tissue",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the multi-expert demo dataset (deterministic by ``seed``).

    Args:
        out: the dataset folder to create (must be absent or empty unless ``overwrite``).
        seed: seed of every random choice; the same seed gives byte-identical arrays.
        n_train: number of training cases (``imagesTr``), >= 1.
        n_test: number of test cases (``imagesTs``, labelled densely by every expert), >= 0.
        spacing: isotropic voxel size in mm; default 3 mm for ``tissue`` (volumes of about
            54 x 66 x 58), 2 mm for ``nuclei`` (about 91 x 109 x 96, a thalamus some 7 x 13 x 8 voxels).
        structures: the label set, a key of :data:`STRUCTURES`: ``tissue`` (grey and white matter)
            or ``nuclei`` (the deep grey nuclei, compact structures for interactive segmentation).
        overwrite: replace a non-empty ``out``.
        progress: show a progress bar.

    Returns:
        The dataset folder.

    Raises:
        DatasetError: ``out`` is not empty (and ``overwrite`` is False) or is a file.
        DatasetError: invalid sizes or spacing (a ValueError).
    """
    out = Path(out)
    if structures not in STRUCTURES:
        raise DatasetError(f"structures (--structures) must be one of {', '.join(STRUCTURES)}, got {structures!r}")
    if spacing is None:
        spacing = STRUCTURES[structures]["spacing"]
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise DatasetError(f"n_train (--train-cases) must be an integer >= 1, got {n_train!r}")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0:
        raise DatasetError(f"n_test (--test-cases) must be an integer >= 0, got {n_test!r}")
    if not (isinstance(spacing, (int, float)) and 0.5 <= spacing <= 12):
        raise DatasetError(f"spacing (--spacing) must be a voxel size in mm between 0.5 and 12, got {spacing!r}")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out}: folder is not empty; choose an empty or new folder, or pass overwrite=True (--overwrite) to replace it")
    spacing = float(spacing)
    params = draw_params(seed=seed, n_train=n_train, n_test=n_test, spacing=spacing, structures=structures)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write(tmp, params, progress=progress)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def stream_key(name: str) -> int:
    """A stable integer for ``name`` (CRC-32), to key a random stream by an expert's id."""
    return zlib.crc32(name.encode())


def draw_params(*, seed: int, n_train: int, n_test: int, spacing: float, structures: str = "tissue", experts: tuple[Expert, ...] = DEMO_EXPERTS) -> dict:
    """Draw every random choice of the dataset (the content of ``demo_params.json``).

    Every draw has a stream of its own: a subject's anatomy ``[seed, 2, case index]``, an expert's
    style on a case ``[seed, 1, case index, expert]`` and an expert's choice of cases
    ``[seed, 0, expert]`` (experts keyed by id). Adding or removing an expert changes no subject
    and no other expert's labels.

    Args:
        seed: the dataset seed.
        n_train, n_test: numbers of cases.
        spacing: voxel size in mm.
        structures: the label set (:data:`STRUCTURES`); it picks each expert's style.
        experts: the experts.

    Returns:
        A JSON-serialisable dict with ``experts`` (style, plan) and ``cases`` (subject parameters
        and, per labelling expert, ``kind`` ("dense" or "scribbles"), ``style`` parameters and
        ``scribbles`` settings).
    """
    train = [f"sub{i:03d}" for i in range(n_train)]
    test = [f"sub{n_train + i:03d}" for i in range(n_test)]
    plan: dict[str, dict[str, list[str]]] = {}
    for e in experts:
        plan_rng = np.random.default_rng([seed, 0, stream_key(e.id)])
        n_dense = min(n_train, max(int(round(e.dense_fraction * n_train)), e.min_dense))
        if 0 < e.dense_fraction and n_dense == 0:
            n_dense = 1
        order = [train[i] for i in plan_rng.permutation(n_train)]
        rest = order[n_dense:]
        n_scrib = min(len(rest), int(round(e.scribble_fraction * n_train)))
        if e.scribble_fraction > 0 and n_scrib == 0 and rest:
            n_scrib = 1
        plan[e.id] = {"dense": sorted(order[:n_dense]), "scribbles": sorted(rest[:n_scrib])}
    thickness = max(1, int(round(SCRIBBLE_THICKNESS_MM / spacing)))
    erosion = [max(1, int(round(mm / spacing))) for mm in SCRIBBLE_EROSION_MM]
    cases = {}
    for index, case in enumerate(train + test):
        labels = {}
        for e in experts:
            rng = np.random.default_rng([seed, 1, index, stream_key(e.id)])
            style = _style(e, structures).make_params(rng)  # drawn for every expert: a case's draws do not depend on the plan
            scribble_seed = int(rng.integers(0, 2**31 - 1))
            if case in test or case in plan[e.id]["dense"]:
                labels[e.id] = {"kind": "dense", "style": style}
            elif case in plan[e.id]["scribbles"] and e.scribble_habit:
                scribbles = {"style": "habit", "seed": scribble_seed, "habit": e.scribble_habit}
                labels[e.id] = {"kind": "scribbles", "style": style, "scribbles": scribbles}
            elif case in plan[e.id]["scribbles"]:
                scribbles = {"style": "slicewise", "seed": scribble_seed, "axis": e.scribble_axis,
                             "density": e.scribble_density, "thickness": thickness, "erosion_range": erosion}
                labels[e.id] = {"kind": "scribbles", "style": style, "scribbles": scribbles}
        subject = make_subject_params(np.random.default_rng([seed, 2, index]))
        cases[case] = {"split": "test" if case in test else "train", "subject": subject, "labels": labels}
    shape, affine = output_grid(spacing)
    return {
        "generator": "experts.data.demo.make_demo_dataset",
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "spacing": spacing,
        "structures": structures,
        "grid": {"shape": list(shape), "affine": affine.tolist()},
        "experts": {e.id: {"role": e.role, "style": asdict(e.style), "plan": plan[e.id]} for e in experts},
        "cases": cases,
    }


def _style(expert: Expert, structures: str):
    return expert.nuclei if structures == "nuclei" else expert.style


def _label(subject, entry: dict, experts: dict[str, Expert], expert: str, *, spacing: float, structures: str = "tissue") -> np.ndarray:
    label = _style(experts[expert], structures).apply(subject, entry["style"])
    if entry["kind"] == "scribbles":
        from experts.scribbles import simulate_scribbles

        s = dict(entry["scribbles"])  # the style, its seed and its own parameters, as logged
        label = simulate_scribbles(label, ignore_label=STRUCTURES[structures]["labels"]["ignore"], style=s.pop("style"), seed=s.pop("seed"), spacing=(spacing,) * 3, **s)
    return np.asarray(label, dtype=np.uint8)


def _write(root: Path, params: dict, *, progress: bool) -> None:
    from tqdm.auto import tqdm

    experts = {e.id: e for e in DEMO_EXPERTS if e.id in params["experts"]}
    structures = params.get("structures", "tissue")
    kind = STRUCTURES[structures]
    root.mkdir(parents=True)
    for eid in experts:
        (root / "labelsTr" / eid).mkdir(parents=True)
        if params["n_test"]:
            (root / "labelsTs" / eid).mkdir(parents=True)
    (root / "imagesTr").mkdir()
    (root / PARAMS_FILE).write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")
    for case, entry in tqdm(params["cases"].items(), desc="demo dataset", unit="case", disable=not progress):
        subject = make_subject(entry["subject"], spacing=params["spacing"], nuclei_contrast=structures == "nuclei")
        img_dir, lab_dir = ("imagesTr", "labelsTr") if entry["split"] == "train" else ("imagesTs", "labelsTs")
        save_volume(root / img_dir / f"{case}_0000.nii.gz", subject.image, subject.affine, dtype=np.float32)
        for eid, lab in entry["labels"].items():
            save_volume(root / lab_dir / eid / f"{case}.nii.gz", _label(subject, lab, experts, eid, spacing=params["spacing"], structures=structures), subject.affine, dtype=np.uint8)
    spec = DatasetSpec(
        name=kind["name"],
        description=kind["description"],
        channel_names={"0": "T1"},
        labels=dict(kind["labels"]),
        file_ending=".nii.gz",
        experts={e.id: ExpertInfo(description=e.nuclei_description if structures == "nuclei" else e.description, role=e.role) for e in experts.values()},
        extra={"numTraining": params["n_train"], "demo": {"seed": params["seed"], "spacing_mm": params["spacing"], "structures": structures, "params": PARAMS_FILE}},
    )
    write_spec(root, spec)


def replay_label(root: str | os.PathLike, case: str, expert: str) -> np.ndarray:
    """Rebuild one label file of a demo dataset from its ``demo_params.json``.

    Args:
        root: the demo dataset folder.
        case: case id (e.g. ``"sub000"``).
        expert: expert id.

    Returns:
        ``[X, Y, Z]`` uint8 label, equal to the stored file.

    Raises:
        DatasetError: no parameter log, or the case/expert pair is not in it.
    """
    path = Path(root) / PARAMS_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing; only datasets written by make_demo_dataset can be replayed")
    params = json.loads(path.read_text(encoding="utf-8"))
    entry = params["cases"].get(case, {}).get("labels", {}).get(expert)
    if entry is None:
        raise DatasetError(f"{path}: no label of expert {expert!r} for case {case!r}; pick a pair listed under 'cases'")
    structures = params.get("structures", "tissue")
    subject = make_subject(params["cases"][case]["subject"], spacing=params["spacing"], nuclei_contrast=structures == "nuclei")
    return _label(subject, entry, {e.id: e for e in DEMO_EXPERTS}, expert, spacing=params["spacing"], structures=structures)


def style_dice(root: str | os.PathLike, *, split: str = "test") -> dict[str, tuple[list[str], np.ndarray]]:
    """Mean pairwise Dice between the experts' dense labels, per foreground class.

    Args:
        root: a dataset folder (layout version 1).
        split: ``"test"`` (``labelsTs``) or ``"train"`` (``labelsTr``; only cases both label densely).

    Returns:
        ``{class_name: (expert_ids, matrix)}``: experts in ``dataset.json`` order, ``matrix``
        ``[E, E]`` float (1 on the diagonal, NaN for pairs without a common dense case).
    """
    root = Path(root)
    folder = root / ("labelsTs" if split == "test" else "labelsTr")
    spec = read_spec(root)  # checked: "experts" is a mapping of ids, never a string of letters
    ignore = spec.ignore_label
    classes = {k: v for k, v in spec.labels.items() if k not in ("background", "ignore")}
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    declared = spec.experts or {}
    ids = [e for e in declared if e in folders] + [e for e in folders if e not in declared]
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for eid in ids:
        for f in sorted((folder / eid).glob("*.nii*")):
            a = np.asarray(load_volume(f, kind="label").array)
            if ignore is None or not (a == ignore).any():
                arrays.setdefault(eid, {})[f.name.split(".")[0]] = a
    result = {}
    for name, value in classes.items():
        m = np.eye(len(ids))
        for (i, a), (j, b) in combinations(enumerate(ids), 2):
            scores = []
            for case in sorted(set(arrays.get(a, {})) & set(arrays.get(b, {}))):
                x, y = arrays[a][case] == value, arrays[b][case] == value
                total = int(x.sum()) + int(y.sum())
                if total:
                    scores.append(2.0 * int((x & y).sum()) / total)
            m[i, j] = m[j, i] = float(np.mean(scores)) if scores else np.nan
        result[name] = (ids, m)
    return result
