"""A tiny procedural multi-expert dataset for tests (spheres; experts differ by radius)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experts.data.nifti import save_volume

EXPERTS = {"small": -1.5, "medium": 0.0, "large": 1.5, "scribbler": 0.0, "newdoc": 2.5}


def make_toy_dataset(root, *, n_train: int = 6, n_test: int = 2, shape=(20, 20, 20), seed: int = 0, spacing=(2.0, 2.0, 2.0)) -> Path:
    """Write a dataset: 2 classes (core, rim) in a noisy sphere; experts shift the radii.

    ``scribbler`` gives partial labels on training cases; ``newdoc`` has role "new".
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    cases = [(f"case{i:02d}", "train") for i in range(n_train)] + [(f"test{i:02d}", "test") for i in range(n_test)]
    for case, split in cases:
        centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        r = np.linalg.norm(grid - centre, axis=-1)
        r_out = rng.uniform(6, 7.5)
        image = np.clip(1.5 - r / r_out, 0, None) + 0.5 * (r < r_out * 0.5) + rng.normal(0, 0.05, shape)
        img_dir = "imagesTr" if split == "train" else "imagesTs"
        save_volume(root / img_dir / f"{case}_0000.nii.gz", image.astype(np.float32), affine)
        for expert, shift in EXPERTS.items():
            label = np.zeros(shape, np.uint8)
            label[r < r_out + shift * 0.5] = 2
            label[r < r_out * 0.5 + shift * 0.5] = 1
            if expert == "scribbler" and split == "train":
                partial = np.full(shape, 3, np.uint8)
                z = shape[2] // 2
                partial[:, :, z] = label[:, :, z]
                label = partial
            lab_dir = "labelsTr" if split == "train" else "labelsTs"
            save_volume(root / lab_dir / expert / f"{case}.nii.gz", label, affine)
    spec = {
        "name": "ToySpheres",
        "description": "procedural spheres for tests",
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "core": 1, "rim": 2, "ignore": 3},
        "file_ending": ".nii.gz",
        "experts": {e: ({"role": "new", "description": "new doctor"} if e == "newdoc" else {"description": f"radius shift {s}"}) for e, s in EXPERTS.items()},
    }
    (root / "dataset.json").write_text(json.dumps(spec, indent=2))
    return root
