"""MSSEG-2016 importer: MS lesions, 3D, seven raters and their consensus.

Two source layouts, detected automatically:

* original: ``Center_0X/Patient_0Y/{Preprocessed_Data,Raw_Data,Masks}/...`` with images
  ``{FLAIR,T1,T2,DP,GADO}_preprocessed.nii.gz`` (``Raw_Data``: without ``_preprocessed``) and masks
  ``Masks/{Consensus,ManualSegmentation_1..7}.nii.gz``;
* flat re-release: ``<id>/{3DFLAIR,3DT1,3DT1GADO,DP,T2,Consensus,ManualSegmentation_1..7}.nii[.gz]``.

Layout decisions:

* ``src`` is either one split (a folder holding ``Center_*`` folders or flat patient folders: imported
  as training data) or a folder holding split folders: ``Training`` (or any name starting with
  ``train``) -> ``imagesTr``/``labelsTr``, ``Testing`` (``test*``) -> ``imagesTs``/``labelsTs``.
* Case ids: ``C01_P01`` for ``Center_01/Patient_01``; flat patient folders keep their name made a
  valid id. A held-out case whose id a training case already uses gets the prefix ``test_``.
* Channels are named ``FLAIR``, ``T1``, ``T2``, ``DP``, ``GADO`` in both layouts (flat ``3DFLAIR`` ->
  ``FLAIR``, ``3DT1`` -> ``T1``, ``3DT1GADO`` -> ``GADO``), FLAIR first. By default every channel found
  is imported and a case lacking one is refused; ``channels=["FLAIR", "T1"]`` imports only those.
* ``variant="preprocessed"`` (default) or ``"raw"`` picks the original layout's image folder (raw
  images are in their acquisition space: channels off the mask grid fail the geometry check, import
  ``channels=["FLAIR"]`` then). The flat layout has one version of each image.
* Experts ``rater1``..``rater7`` (``ManualSegmentation_<i>``) and ``consensus``; masks become 0/1
  ``uint8``; brain masks are not imported. Labels ``{"background": 0, "lesion": 1}``.
"""

from __future__ import annotations

import re
from pathlib import Path

from experts.data.converters import DatasetWriter, binary_mask, read_nifti, safe_id, track, unique_test_ids
from experts.data.converters.qubiq import split_of_folder
from experts.data.spec import ExpertInfo
from experts.errors import DatasetError

__all__ = ["CHANNELS", "convert", "find_cases"]

#: canonical channel order; FLAIR first
CHANNELS = ("FLAIR", "T1", "T2", "DP", "GADO")
_FLAT_CHANNELS = {"3DFLAIR": "FLAIR", "3DT1": "T1", "3DT1GADO": "GADO", "DP": "DP", "T2": "T2"}
_RATER = re.compile(r"ManualSegmentation_(\d+)")
_CENTER = re.compile(r"Center_?(\d+)", re.IGNORECASE)
_PATIENT = re.compile(r"Patient_?(\d+)", re.IGNORECASE)
VARIANTS = {"preprocessed": ("Preprocessed_Data", "_preprocessed"), "raw": ("Raw_Data", "")}


def _nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists."""
    return next((folder / f"{stem}{e}" for e in (".nii.gz", ".nii") if (folder / f"{stem}{e}").is_file()), None)


def _stems(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        for e in (".nii.gz", ".nii"):
            if p.is_file() and p.name.endswith(e):
                out.setdefault(p.name[: -len(e)], p)
                break
    return out


def _dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _is_flat_patient(folder: Path) -> bool:
    stems = _stems(folder)
    return "Consensus" in stems or any(_RATER.fullmatch(s) for s in stems) or any(s in stems for s in _FLAT_CHANNELS)


def _patients(root: Path, variant: str) -> list[tuple[str, dict[str, Path], dict[str, Path]]] | None:
    """``(id, channel -> file, expert -> mask file)`` of one split folder, or ``None`` if it is not one."""
    centers = [d for d in _dirs(root) if _CENTER.fullmatch(d.name)]
    if centers:
        folder, suffix = VARIANTS[variant]
        out = []
        for center in centers:
            for patient in (d for d in _dirs(center) if _PATIENT.fullmatch(d.name)):
                stems = _stems(patient / folder)
                chans = {c: stems[f"{c}{suffix}"] for c in CHANNELS if f"{c}{suffix}" in stems}
                if not chans:
                    raise DatasetError(f"{patient / folder}: no image ({', '.join(c + suffix for c in CHANNELS)}.nii.gz) found; check the folder or choose variant='preprocessed'/'raw'")
                case = f"C{int(_CENTER.fullmatch(center.name)[1]):02d}_P{int(_PATIENT.fullmatch(patient.name)[1]):02d}"
                out.append((case, chans, _experts(_stems(patient / "Masks"))))
        return out
    flat = [d for d in _dirs(root) if _is_flat_patient(d)]
    if not flat:
        return None
    if variant != "preprocessed":
        raise DatasetError(f"{root}: variant={variant!r} applies to the original Center_*/Patient_* layout only; the flat layout has one version of each image, drop the option")
    out = []
    for patient in flat:
        stems = _stems(patient)
        chans = {_FLAT_CHANNELS[s]: p for s, p in stems.items() if s in _FLAT_CHANNELS}
        out.append((safe_id(patient.name), {c: chans[c] for c in CHANNELS if c in chans}, _experts(stems)))
    return out


def _experts(stems: dict[str, Path]) -> dict[str, Path]:
    out = {f"rater{int(m[1])}": p for s, p in stems.items() if (m := _RATER.fullmatch(s))}
    if "Consensus" in stems:
        out["consensus"] = stems["Consensus"]
    return out


def find_cases(src: Path, *, variant: str = "preprocessed") -> list[tuple[str, str, dict[str, Path], dict[str, Path]]]:
    """``(split, case id, channel -> file, expert -> mask file)`` of every patient under ``src``.

    Raises:
        DatasetError: no MSSEG-2016 patient found, or split folders without a training split.
    """
    single = _patients(src, variant)
    if single is not None:
        return [("train", *p) for p in single]
    found = []
    for sub in _dirs(src):
        split = split_of_folder(sub.name)
        patients = _patients(sub, variant) if split else None
        found += [(split, *p) for p in patients or []]
    if not found:
        raise DatasetError(
            f"{src}: no MSSEG-2016 patient found; expected Training/Center_0X/Patient_0Y/{{Preprocessed_Data,Masks}}/ "
            "or flat patient folders holding 3DFLAIR.nii.gz and ManualSegmentation_1..7.nii.gz"
        )
    if not any(s == "train" for s, *_ in found):
        raise DatasetError(f"{src}: only a Testing split found; a dataset needs training cases: pass the Testing folder as src to import it as training data")
    return found


def _channel_list(cases, channels, src: Path) -> list[str]:
    present = [c for c in CHANNELS if any(c in chans for _, _, chans, _ in cases)]
    if channels is None:
        chosen = present
    else:
        chosen = [channels] if isinstance(channels, str) else list(channels)
        bad = [c for c in chosen if c not in CHANNELS]
        if bad or not chosen or len(set(chosen)) != len(chosen):
            raise DatasetError(f"channels {chosen!r}: choose distinct names among {', '.join(CHANNELS)}")
        chosen = sorted(chosen, key=CHANNELS.index)
    complete = [c for c in present if all(c in chans for _, _, chans, _ in cases)]
    for _, case, chans, _ in cases:
        missing = [c for c in chosen if c not in chans]
        if missing:
            raise DatasetError(
                f"{src}: case {case} has no {', '.join(missing)} image while other cases do; "
                f"import only the channels every case has with channels={complete!r}"
            )
    return chosen


def convert(*, src: Path, writer: DatasetWriter, progress: bool = False, variant: str = "preprocessed", channels: list[str] | str | None = None) -> None:
    """Import an MSSEG-2016 folder ``src`` (either layout) through ``writer``.

    Args:
        src: ``Training`` folder, the folder holding ``Training``/``Testing``, or a folder of flat
            patient folders.
        writer: destination.
        progress: show a progress bar.
        variant: ``"preprocessed"`` (default) or ``"raw"`` images of the original layout.
        channels: channel names to import (default: all found); FLAIR is always put first.

    Raises:
        DatasetError: layout problems, a case missing a channel, non-binary masks.
    """
    if variant not in VARIANTS:
        raise DatasetError(f"variant {variant!r} is not known; choose 'preprocessed' or 'raw'")
    cases = find_cases(src, variant=variant)
    chosen = _channel_list(cases, channels, src)
    test_ids = unique_test_ids([c for s, c, *_ in cases if s == "train"], [c for s, c, *_ in cases if s == "test"])
    for split, case, chans, masks in track(cases, desc="MSSEG-2016", enabled=progress):
        case = case if split == "train" else test_ids[case]
        for index, name in enumerate(chosen):
            array, affine = read_nifti(chans[name])
            if array.ndim != 3:
                raise DatasetError(f"{chans[name]}: {array.ndim}D image of shape {array.shape}, expected a 3D volume")
            writer.image(split=split, case=case, channel=index, array=array, affine=affine, source=chans[name])
        for expert, path in masks.items():
            array, affine = read_nifti(path)
            if array.ndim != 3:
                raise DatasetError(f"{path}: {array.ndim}D mask of shape {array.shape}, expected a 3D volume")
            writer.label(split=split, expert=expert, case=case, array=binary_mask(array, path), affine=affine, source=path)

    experts = {f"rater{i}": ExpertInfo(description=f"MSSEG-2016 rater {i} (ManualSegmentation_{i})") for i in range(1, 8)}
    experts.update({e: ExpertInfo(description=f"MSSEG-2016 rater {e[5:]}") for e in sorted(writer.experts) if e.startswith("rater") and e not in experts})
    experts["consensus"] = ExpertInfo(description="consensus of the 7 raters")
    writer.finish(
        name="MSSEG-2016",
        description=(
            f"MS lesions from {src.name} ({variant} images where the layout has both), imported from MSSEG-2016: "
            "Training -> imagesTr/labelsTr, Testing -> imagesTs/labelsTs; 7 raters and their consensus."
        ),
        channel_names=chosen,
        labels={"background": 0, "lesion": 1},
        experts=experts,
    )
