"""Moving arrays between an input grid and the model grid (SimpleITK resampling, float32 at most).

All arrays are (z, y, x); :class:`bonemet.io.Geometry` describes their physical grid (any direction matrix:
oblique inputs are handled by resampling in physical space).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from bonemet.io import Geometry, to_image

_INTERP = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}


def bbox_slices(mask: np.ndarray, margin_vox=0) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``mask > 0`` grown by ``margin_vox`` (int or (z, y, x)), clipped to the array."""
    if not np.any(mask):
        return None
    margin = np.broadcast_to(np.asarray(margin_vox, dtype=int), (3,))
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        lo = max(int(idx[0]) - int(margin[axis]), 0)
        hi = min(int(idx[-1]) + 1 + int(margin[axis]), mask.shape[axis])
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def crop_geometry(geometry: Geometry, slices) -> Geometry:
    """Geometry of ``array[slices]``: same spacing and direction, origin moved to the first voxel."""
    start_xyz = [slices[2].start or 0, slices[1].start or 0, slices[0].start or 0]
    size_xyz = tuple(int(s.stop - (s.start or 0)) for s in slices[::-1])
    origin = tuple(float(v) for v in geometry.index_to_physical(start_xyz))
    return Geometry(size_xyz, geometry.spacing, origin, geometry.direction)  # type: ignore[arg-type]


def spacing_geometry(geometry: Geometry, spacing_xyz) -> Geometry:
    """Axis-aligned (identity direction, LPS) grid of voxel size ``spacing_xyz`` covering the physical box of
    ``geometry``. The network therefore always sees anatomy in patient axes, whatever the input's direction
    (flipped, permuted or oblique grids)."""
    new = np.asarray(spacing_xyz, dtype=float)
    size = np.asarray(geometry.size, dtype=float)
    corners = np.array([geometry.index_to_physical([cx, cy, cz])
                        for cx in (-0.5, size[0] - 0.5) for cy in (-0.5, size[1] - 0.5)
                        for cz in (-0.5, size[2] - 0.5)])
    lo, hi = corners.min(0), corners.max(0)
    n = np.maximum(np.round((hi - lo) / new - 1e-6).astype(int), 1)
    origin = lo + 0.5 * new
    return Geometry(tuple(int(s) for s in n), tuple(float(s) for s in new),  # type: ignore[arg-type]
                    tuple(float(o) for o in origin))


def resample_onto(array: np.ndarray, source: Geometry, target: Geometry, interpolator: str = "linear",
                  default_value: float = 0.0) -> np.ndarray:
    """Resample ``array`` (on ``source``) onto ``target``; float input stays float32, integers keep their dtype."""
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    image = to_image(array, source)
    ref = sitk.Image([int(s) for s in target.size], sitk.sitkUInt8)
    target.apply_to(ref)
    out = sitk.Resample(image, ref, sitk.Transform(), _INTERP[interpolator], float(default_value),
                        image.GetPixelID())
    return sitk.GetArrayFromImage(out)


def resample_to_spacing(array: np.ndarray, geometry: Geometry, spacing_xyz, interpolator: str = "linear",
                        default_value: float = 0.0) -> tuple[np.ndarray, Geometry]:
    target = spacing_geometry(geometry, spacing_xyz)
    if target.same_grid(geometry):
        return array, geometry
    return resample_onto(array, geometry, target, interpolator, default_value), target


def paste(full: np.ndarray, part: np.ndarray, slices) -> np.ndarray:
    """Write ``part`` into ``full[slices]`` keeping the maximum where crops overlap (in place)."""
    np.maximum(full[slices], part.astype(full.dtype, copy=False), out=full[slices])
    return full
