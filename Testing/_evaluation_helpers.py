"""Small synthetic masks/CTs written to disk for the evaluation tests (fast: no phantom generation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonemet.io import Geometry, write_mask, write_volume

SHAPE = (20, 28, 36)
SPACING_XYZ = (0.9, 0.8, 2.0)


def geometry(shape=SHAPE, spacing_xyz=SPACING_XYZ) -> Geometry:
    return Geometry(tuple(shape[::-1]), tuple(spacing_xyz))


def ball(shape, centre, radius_vox):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius_vox))
    return (d2 <= 1.0).astype(np.uint8)


def lesion(offset=(0, 0, 0), scale=1.0, shape=SHAPE):
    m = ball(shape, (10 + offset[0], 12 + offset[1], 12 + offset[2]), (3 * scale, 5 * scale, 5 * scale))
    m |= ball(shape, (9 + offset[0], 14 + offset[1], 26 + offset[2]), (2 * scale, 3 * scale, 3 * scale))
    return m


def ct_for(mask, seed=0):
    rng = np.random.default_rng(seed)
    ct = rng.normal(0, 30, mask.shape).astype(np.float32) + 300
    ct[mask > 0] = 900
    return ct


def femur_map(shape=SHAPE):
    f = np.zeros(shape, np.uint8)
    f[:, :, : shape[2] // 2] = 1
    f[:, :, shape[2] // 2:] = 2
    return f


def write(path: Path, arr, geo=None) -> Path:
    geo = geo or geometry(arr.shape)
    if arr.dtype == np.float32:
        return write_volume(path, arr, geo)
    return write_mask(path, arr, geo)
