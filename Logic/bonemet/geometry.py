"""Grid operations on :class:`bonemet.io.Volume`: resampling, bounding boxes, crop and paste.

* :func:`resample` — onto a new spacing (default isotropic 0.85 mm, the paper's median voxel size) covering
  the same physical extent, same origin and direction;
* :func:`resample_to` — onto any given :class:`~bonemet.io.Geometry` (e.g. back onto the original grid);
* :func:`bbox_slices` / :func:`crop` / :func:`paste` — crop around a mask with a margin and paste a result back.

Interpolators: ``"linear"`` or ``"bspline"`` for CT, ``"nearest"`` for masks and label maps (default chosen
from the dtype: integer/bool arrays use nearest). Arrays are (z, y, x); spacings given as tuples are (x, y, z)
like SimpleITK (a single float means isotropic).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from bonemet.io import Geometry, Volume, to_image

DEFAULT_SPACING = 0.85

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
    "label": sitk.sitkLabelGaussian,
}


def _interp(name: str | None, array: np.ndarray) -> int:
    if name is None:
        name = "nearest" if array.dtype.kind in "biu" else "linear"
    try:
        return _INTERPOLATORS[name]
    except KeyError:
        raise ValueError(f"unknown interpolator {name!r} (use {', '.join(_INTERPOLATORS)})") from None


def _xyz(spacing) -> tuple[float, float, float]:
    if np.isscalar(spacing):
        s = float(spacing)
        return (s, s, s)
    s = tuple(float(v) for v in spacing)
    if len(s) != 3 or min(s) <= 0:
        raise ValueError(f"spacing must be a positive float or an (x, y, z) triple, got {spacing}")
    return s  # type: ignore[return-value]


def resampled_geometry(geometry: Geometry, spacing=DEFAULT_SPACING) -> Geometry:
    """The grid with ``spacing`` (x, y, z) covering the same physical extent (same origin and direction)."""
    new_sp = _xyz(spacing)
    size = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(geometry.size, geometry.spacing, new_sp))
    return Geometry(size, new_sp, geometry.origin, geometry.direction)


def resample_to(vol: Volume, geometry: Geometry, interpolator: str | None = None, default_value=None) -> Volume:
    """Resample ``vol`` onto ``geometry``. ``default_value`` fills points outside the input (default: the
    array's minimum for images, 0 for masks). The output keeps the input dtype (rounded for integers)."""
    arr = np.asarray(vol.array)
    interp = _interp(interpolator, arr)
    src_dtype = arr.dtype
    work = arr.astype(np.uint8) if src_dtype == bool else arr
    if interp != sitk.sitkNearestNeighbor and work.dtype.kind in "iu":
        work = work.astype(np.float32)
    if default_value is None:
        default_value = 0.0 if (interp == sitk.sitkNearestNeighbor or arr.size == 0) else float(arr.min())
    image = to_image(work, vol.geometry)
    ref = geometry.apply_to(sitk.Image([int(s) for s in geometry.size], image.GetPixelID()))
    out = sitk.Resample(image, ref, sitk.Transform(), interp, float(default_value), image.GetPixelID())
    res = sitk.GetArrayFromImage(out)
    if src_dtype == bool:
        res = res > 0
    elif src_dtype.kind in "iu" and res.dtype != src_dtype:
        info = np.iinfo(src_dtype)
        res = np.clip(np.rint(res), info.min, info.max).astype(src_dtype)
    elif res.dtype != src_dtype:
        res = res.astype(src_dtype)
    return Volume(res, geometry, None)


def resample(vol: Volume, spacing=DEFAULT_SPACING, interpolator: str | None = None, default_value=None) -> Volume:
    """Resample ``vol`` to ``spacing`` (float = isotropic mm, or (x, y, z)); same origin, direction, extent."""
    return resample_to(vol, resampled_geometry(vol.geometry, spacing), interpolator, default_value)


def bbox_slices(mask: np.ndarray, margin_vox=0, shape=None) -> tuple[slice, slice, slice] | None:
    """Bounding box of the non-zero voxels of ``mask`` (z, y, x) grown by ``margin_vox`` (int or zyx triple)
    and clipped to the array; ``None`` if the mask is empty."""
    mask = np.asarray(mask)
    shape = mask.shape if shape is None else shape
    margin = (margin_vox,) * 3 if np.isscalar(margin_vox) else tuple(margin_vox)
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(np.any(mask, axis=other))
        if nz.size == 0:
            return None
        lo = max(0, int(nz[0]) - int(margin[ax]))
        hi = min(int(shape[ax]), int(nz[-1]) + 1 + int(margin[ax]))
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def crop_geometry(geometry: Geometry, slices) -> Geometry:
    """Geometry of the sub-grid ``slices`` (z, y, x) of ``geometry`` (origin moved to the first voxel)."""
    starts = [s.start or 0 for s in slices]
    stops = [geometry.shape[i] if s.stop is None else s.stop for i, s in enumerate(slices)]
    size_zyx = [b - a for a, b in zip(starts, stops)]
    origin = geometry.index_to_physical(starts[::-1])
    return Geometry(tuple(int(v) for v in size_zyx[::-1]), geometry.spacing, tuple(float(v) for v in origin),
                    geometry.direction)


def crop(vol: Volume, slices) -> Volume:
    """Sub-volume ``vol.array[slices]`` with its geometry (origin updated; spacing/direction kept)."""
    slices = tuple(slices)
    return Volume(np.ascontiguousarray(vol.array[slices]), crop_geometry(vol.geometry, slices), vol.path)


def paste(full: np.ndarray, part: np.ndarray, slices) -> np.ndarray:
    """Copy of ``full`` with ``part`` written at ``slices`` (the inverse of :func:`crop`)."""
    out = np.array(full, copy=True)
    out[tuple(slices)] = np.asarray(part).astype(out.dtype, copy=False)
    return out
