"""Training-time patch sampling and augmentation (MONAI dictionary transforms).

Items are dicts of channel-first arrays on the model grid: ``ct`` (1, z, y, x) standardised, ``femur`` and
``lesion`` (1, z, y, x) {0, 1}, plus precomputed ``fg``/``bg`` voxel indices of the lesion for balanced
sampling (:class:`monai.transforms.RandCropByPosNegLabeld`, ``pos_fraction`` of patches centred on lesion).
Spatial augmentation (flips, rotation + scaling) moves all three; intensity augmentation (Gaussian noise,
contrast/gamma) touches the CT only.
"""

from __future__ import annotations

import math

import numpy as np

from bonemet.segmentation.config import patch_zyx


def pad_to_patch(arr: np.ndarray, patch, value: float) -> np.ndarray:
    """Pad (..., z, y, x) symmetrically to at least ``patch`` (z, y, x) with ``value``."""
    pads = [(0, 0)] * (arr.ndim - 3)
    for n, p in zip(arr.shape[-3:], patch):
        extra = max(int(p) - n, 0)
        pads.append((extra // 2, extra - extra // 2))
    if all(a == 0 and b == 0 for a, b in pads):
        return arr
    return np.pad(arr, pads, mode="constant", constant_values=value)


def crop_item(crop, cfg: dict) -> dict:
    """A :class:`~bonemet.segmentation.data.Crop` → training item (padded to the patch size, indices ready)."""
    from monai.transforms.utils import map_binary_to_indices

    patch = patch_zyx(cfg)
    ct = pad_to_patch(crop.image[:1], patch, -1.0).astype(np.float32)
    femur = pad_to_patch(crop.femur[None].astype(np.float32), patch, 0.0)
    les = crop.lesion if crop.lesion is not None else np.zeros(crop.femur.shape, np.uint8)
    lesion = pad_to_patch(les[None].astype(np.float32), patch, 0.0)
    fg, bg = map_binary_to_indices(lesion, image=None)
    if len(bg) == 0:
        bg = fg
    if len(fg) == 0:
        fg = bg
    return {"ct": ct, "femur": femur, "lesion": lesion, "fg": fg, "bg": bg}


def train_transform(cfg: dict):
    """MONAI Compose: balanced crop → flips → rotation/scaling → noise → contrast. Output tensors."""
    from monai.transforms import (Compose, EnsureTyped, RandAdjustContrastd, RandAffined,
                                  RandCropByPosNegLabeld, RandFlipd, RandGaussianNoised)

    aug = cfg.get("augment", {})
    keys = ["ct", "femur", "lesion"]
    pos = float(cfg.get("pos_fraction", 0.5))
    ts = [
        RandCropByPosNegLabeld(keys=keys, label_key="lesion", spatial_size=patch_zyx(cfg), pos=pos, neg=1.0 - pos,
                               num_samples=1, fg_indices_key="fg", bg_indices_key="bg", allow_smaller=True),
    ]
    fp = float(aug.get("flip_prob", 0.0))
    if fp > 0:
        ts += [RandFlipd(keys=keys, prob=fp, spatial_axis=a) for a in range(3)]
    rot = math.radians(float(aug.get("rotate_deg", 0.0)))
    lo, hi = aug.get("scale", [1.0, 1.0])
    p_aff = max(float(aug.get("rotate_prob", 0.0)), float(aug.get("scale_prob", 0.0)))
    if p_aff > 0 and (rot > 0 or lo != 1.0 or hi != 1.0):
        ts.append(RandAffined(keys=keys, prob=p_aff, rotate_range=(rot, rot, rot),
                              scale_range=((lo - 1.0, hi - 1.0),) * 3, mode=("bilinear", "nearest", "nearest"),
                              padding_mode="border"))
    if float(aug.get("noise_prob", 0.0)) > 0:
        ts.append(RandGaussianNoised(keys=["ct"], prob=float(aug["noise_prob"]), std=float(aug.get("noise_std",
                                                                                                    0.05))))
    if float(aug.get("contrast_prob", 0.0)) > 0:
        ts.append(RandAdjustContrastd(keys=["ct"], prob=float(aug["contrast_prob"]),
                                      gamma=tuple(aug.get("contrast_gamma", (0.7, 1.5)))))
    ts.append(EnsureTyped(keys=keys, track_meta=False, dtype=None))
    return Compose(ts)


class PatchDataset:
    """Map-style dataset: ``items`` repeated ``repeats`` times; each access draws one augmented patch."""

    def __init__(self, items: list[dict], transform, repeats: int = 1):
        self.items = items
        self.transform = transform
        self.repeats = max(int(repeats), 1)

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def __getitem__(self, i: int) -> dict:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.transform(self.items[i % len(self.items)])
        out = out[0] if isinstance(out, list) else out
        return {k: out[k] for k in ("ct", "femur", "lesion")}
