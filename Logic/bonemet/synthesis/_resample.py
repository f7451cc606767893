"""Resampling used by the synthesis engine.

Uses :mod:`bonemet.geometry` when it is available (the engine's shared implementation); falls back to a
small SimpleITK implementation with the same semantics otherwise, so this package has no hard dependency on
work landing in parallel.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from bonemet.io import Geometry, Volume

_INTERP = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}


def _as_xyz(spacing) -> tuple[float, float, float]:
    if np.isscalar(spacing):
        return (float(spacing),) * 3
    s = tuple(float(v) for v in spacing)
    if len(s) != 3 or min(s) <= 0:
        raise ValueError(f"invalid spacing {spacing}")
    return s  # type: ignore[return-value]


def needs_resample(geometry: Geometry, spacing) -> bool:
    return not np.allclose(geometry.spacing, _as_xyz(spacing), atol=1e-4, rtol=0)


def resample(vol: Volume, spacing, interpolator: str = "linear", default_value: float = 0.0) -> Volume:
    """Resample ``vol`` to ``spacing`` (mm, scalar or x/y/z), keeping origin, direction and physical extent."""
    spacing = _as_xyz(spacing)
    if not needs_resample(vol.geometry, spacing):
        return vol
    try:  # the engine's shared implementation, when present
        from bonemet import geometry as _geo  # type: ignore[attr-defined]

        return _geo.resample(vol, spacing, interpolator=interpolator, default_value=default_value)
    except (ImportError, AttributeError, TypeError):
        pass
    g = vol.geometry
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(g.size, g.spacing, spacing)]
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing(spacing)
    f.SetSize(size)
    f.SetOutputOrigin(g.origin)
    f.SetOutputDirection(g.direction)
    f.SetInterpolator(_INTERP[interpolator])
    f.SetDefaultPixelValue(float(default_value))
    image = vol.to_image()
    if interpolator != "nearest" and image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    out = f.Execute(image)
    arr = sitk.GetArrayFromImage(out)
    if interpolator == "nearest":
        arr = arr.astype(vol.array.dtype, copy=False)
    return Volume(arr, Geometry.from_image(out), vol.path)
