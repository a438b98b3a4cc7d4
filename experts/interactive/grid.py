"""A scan onto the model's grid and a probability map back onto the scan's own grid.

The same steps as ``predict`` (:mod:`experts.predictor`): RAS orientation, the plan's spacing
(bilinear), the plan's normalisation; back by bilinear resampling onto the input's exact shape and
affine. When the two grids coincide nothing is resampled, so a mask comes back voxel for voxel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experts.data.nifti import load_volume
from experts.data.plan import Plan, check_resampled_size
from experts.errors import ConfigError

__all__ = ["to_model_grid", "to_input_grid", "label_to_model_grid"]


def _channels(image, affine, plan: Plan) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(image, (str, Path)) or (isinstance(image, (list, tuple)) and image and isinstance(image[0], (str, Path))):
        paths = [image] if isinstance(image, (str, Path)) else list(image)
        volumes = [load_volume(p) for p in paths]
        if any(v.array.shape != volumes[0].array.shape for v in volumes):
            raise ConfigError(f"the channel files {', '.join(map(str, paths))} differ in shape; give files on one grid")
        return np.stack([v.array for v in volumes]), volumes[0].affine, str(paths[0])
    array = np.asarray(image, dtype=np.float32)
    array = array[None] if array.ndim == 3 else array
    if array.ndim != 4:
        raise ConfigError(f"an image array must be [X, Y, Z] or [C, X, Y, Z], got shape {array.shape}")
    return array, np.eye(4) if affine is None else np.asarray(affine, float), "image array"


def to_model_grid(plan: Plan, image, *, affine=None) -> tuple[tuple[int, ...], np.ndarray, torch.Tensor, np.ndarray]:
    """``(input shape [3], input affine [4, 4], image [C, D, H, W] on the model grid, its affine)``."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    from experts.data.transforms import NormalizeChannelsd

    array, in_affine, where = _channels(image, affine, plan)
    if array.shape[0] != plan.num_channels:
        raise ConfigError(f"the model expects {plan.num_channels} channel(s) ({', '.join(plan.channel_names)}), got {array.shape[0]}")
    check_resampled_size(array.shape[1:], in_affine, plan.spacing, where=where, patch_size=plan.patch_size)
    x = MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=torch.as_tensor(in_affine))
    x = Orientation(axcodes=plan.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))(x)
    x = Spacing(pixdim=plan.spacing, mode="bilinear", padding_mode="border")(x)
    model_affine = np.asarray(x.affine, dtype=np.float64)
    x = NormalizeChannelsd(keys="image", plan=plan)({"image": x})["image"]
    return tuple(int(s) for s in array.shape[1:]), in_affine, torch.as_tensor(x).float().contiguous(), model_affine


def to_input_grid(prob: np.ndarray, *, model_affine: np.ndarray, input_affine: np.ndarray, input_shape) -> np.ndarray:
    """``prob [D, H, W]`` on the model grid -> ``[X, Y, Z]`` on the input grid (float32)."""
    if tuple(prob.shape) == tuple(input_shape) and np.allclose(model_affine, input_affine, atol=1e-6):
        return prob.copy()
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    meta = MetaTensor(torch.from_numpy(prob[None]), affine=torch.as_tensor(model_affine))
    back = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float64)(meta, dst_affine=torch.as_tensor(input_affine), spatial_size=tuple(input_shape))
    return torch.as_tensor(back)[0].float().numpy()


def label_to_model_grid(plan: Plan, path, *, input_affine: np.ndarray) -> np.ndarray:
    """A label file on the model grid (RAS, the plan's spacing, nearest neighbour), int ``[D, H, W]``."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    vol = load_volume(path, kind="label")
    if not np.allclose(vol.affine, input_affine, atol=1e-4):
        raise ConfigError(f"{path}: the label's affine differs from its image's; export both on one grid")
    x = MetaTensor(torch.from_numpy(np.asarray(vol.array, dtype=np.float32)[None]), affine=torch.as_tensor(vol.affine))
    x = Orientation(axcodes=plan.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))(x)
    x = Spacing(pixdim=plan.spacing, mode="nearest", padding_mode="border")(x)
    return torch.as_tensor(x)[0].round().long().numpy()
