"""Anatomical bases of the phantoms: the packaged real label maps, as smooth tissue maps with landmarks.

:func:`load_atlas` reads ``bonemet/data/femur_labels/<name>.nrrd`` (0 background, 1 other bone, 2 right femur,
3 left femur, 4 muscle; 1 x 1 x 3 mm), resamples it to an isotropic working grid with a label-smoothing
interpolator, and returns :class:`Atlas`: soft tissue channels (float32 in [0, 1], arrays (z, y, x)), the
distance outside the labelled body (mm, for a variable subcutaneous fat layer), a femur region map
(1 head, 2 neck, 3 trochanter, 4 shaft) and the femoral head centres/radii. Cached per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

OTHER_BONE, FEMUR_RIGHT, FEMUR_LEFT, MUSCLE = 1, 2, 3, 4
CHANNELS = ("other_bone", "femur_right", "femur_left", "muscle")
REGIONS = {1: "head", 2: "neck", 3: "trochanter", 4: "shaft"}
REGION_IDS = {v: k for k, v in REGIONS.items()}


def data_dir() -> Path:
    return Path(str(resources.files("bonemet") / "data" / "femur_labels"))


def atlas_names() -> list[str]:
    return sorted(p.name[:-5] for p in data_dir().glob("*.nrrd"))


@dataclass
class Atlas:
    name: str
    spacing: float                      # isotropic working spacing (mm)
    origin: np.ndarray                  # (x, y, z) LPS of voxel (0, 0, 0); identity direction
    channels: np.ndarray                # (4, z, y, x) float32 soft fractions, order = CHANNELS
    outside_mm: np.ndarray              # (z, y, x) float32 distance outside the labelled body (0 inside)
    regions: np.ndarray                 # (z, y, x) uint8 femur region ids (0 elsewhere)
    head_centre: dict                   # side -> (x, y, z) mm
    head_radius: dict                   # side -> mm

    @property
    def shape(self):
        return self.channels.shape[1:]

    def physical_to_index_zyx(self, pts_xyz: np.ndarray) -> np.ndarray:
        """(..., 3) LPS points → (3, ...) continuous array indices (z, y, x)."""
        idx = (pts_xyz - self.origin) / self.spacing
        return np.moveaxis(idx[..., ::-1], -1, 0)


@functools.lru_cache(maxsize=8)
def load_atlas(name: str, spacing: float = 2.0) -> Atlas:
    path = data_dir() / f"{name}.nrrd"
    img = sitk.ReadImage(str(path))
    src = sitk.GetArrayFromImage(img)
    src_sp = np.array(img.GetSpacing())            # (x, y, z)
    size = np.array(img.GetSize())
    new_size = [int(np.ceil(n * s / spacing)) for n, s in zip(size, src_sp)]
    # voxel centres of the new grid keep the physical extent of the source
    origin = np.array(img.GetOrigin()) - src_sp / 2 + spacing / 2
    # Soft channels: smoothed one-hot labels on the source grid (removes the 3 mm staircase), then linear
    # interpolation onto the isotropic working grid.
    sig_zyx = (0.7, max(0.8, 0.45 * spacing / src_sp[1]), max(0.8, 0.45 * spacing / src_sp[0]))
    zyx_src_sp = src_sp[::-1]
    coords = [(origin[::-1][i] - (np.array(img.GetOrigin())[::-1][i])) / zyx_src_sp[i]
              + np.arange(new_size[::-1][i]) * spacing / zyx_src_sp[i] for i in range(3)]
    channels = np.empty((len(CHANNELS),) + tuple(new_size[::-1]), np.float32)
    for i, code in enumerate((OTHER_BONE, FEMUR_RIGHT, FEMUR_LEFT, MUSCLE)):
        g = ndi.gaussian_filter((src == code).astype(np.float32), sig_zyx)
        channels[i] = _interp_separable(g, coords)
    lab = np.zeros(channels.shape[1:], np.uint8)
    best = channels.argmax(0)
    inside = channels.max(0) > 0.5
    lab[inside] = best[inside].astype(np.uint8) + 1
    # Body: labelled tissue with its concavities closed slice by slice; outside distance in mm.
    body = lab > 0
    body = ndi.binary_closing(body, structure=np.ones((1, 9, 9), bool), iterations=2, border_value=0)
    body = np.stack([ndi.binary_fill_holes(s) for s in body])
    outside = ndi.distance_transform_edt(~body, sampling=spacing).astype(np.float32)
    outside = ndi.gaussian_filter(outside, 1.0)
    regions = np.zeros(lab.shape, np.uint8)
    centres, radii = {}, {}
    pelvis_near = ndi.distance_transform_edt(lab != OTHER_BONE, sampling=spacing) < 5.0
    for side, code in (("right", FEMUR_RIGHT), ("left", FEMUR_LEFT)):
        c, r = _femur_regions(lab == code, pelvis_near, spacing, origin, regions)
        centres[side], radii[side] = c, r
    return Atlas(name, float(spacing), origin, channels, outside, regions, centres, radii)


def _femur_regions(fem: np.ndarray, pelvis_near: np.ndarray, spacing: float, origin: np.ndarray,
                   regions: np.ndarray):
    """Fill ``regions`` for one femur; return its head centre (x, y, z mm) and radius (mm)."""
    bb = ndi.find_objects(fem.astype(np.uint8))[0]
    f = fem[bb]
    edt = ndi.distance_transform_edt(np.pad(f, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    contact = f & pelvis_near[bb]
    zz, yy, xx = np.indices(f.shape, dtype=np.float32)
    if contact.any():
        cc = np.array([a[contact].mean() for a in (zz, yy, xx)])
    else:  # no acetabulum in view: the topmost part of the femur
        top = np.nonzero(f)[0].max()
        cc = np.array([top, *[a[f & (zz == top)].mean() for a in (yy, xx)]])
    near = f & (((zz - cc[0]) ** 2 + (yy - cc[1]) ** 2 + (xx - cc[2]) ** 2) * spacing ** 2 < 35.0 ** 2)
    score = np.where(near, edt, 0)
    k = np.unravel_index(np.argmax(score), f.shape)
    r = float(edt[k])
    d = np.sqrt((zz - k[0]) ** 2 + (yy - k[1]) ** 2 + (xx - k[2]) ** 2) * spacing
    reg = np.zeros(f.shape, np.uint8)
    reg[f] = 3
    reg[f & (d < r + 25.0)] = 2
    reg[f & (d <= r + 1.5)] = 1
    reg[f & ((k[0] - zz) * spacing > 55.0)] = 4
    sub = regions[bb]
    sub[f] = reg[f]
    starts = np.array([s.start for s in bb], float)
    centre_zyx = (starts + np.array(k)) * spacing
    centre = origin + centre_zyx[::-1]
    return tuple(float(v) for v in centre), r


def _interp_separable(a: np.ndarray, coords) -> np.ndarray:
    """Linear interpolation of ``a`` at the outer product of per-axis coordinates (edge values beyond)."""
    for ax, c in enumerate(coords):
        c = np.clip(c, 0, a.shape[ax] - 1)
        i0 = np.floor(c).astype(int)
        i1 = np.minimum(i0 + 1, a.shape[ax] - 1)
        w = (c - i0).astype(np.float32)
        shape = [1] * a.ndim
        shape[ax] = -1
        w = w.reshape(shape)
        a = np.take(a, i0, axis=ax) * (1 - w) + np.take(a, i1, axis=ax) * w
    return a.astype(np.float32)
