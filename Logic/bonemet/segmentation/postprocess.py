"""Morphological post-processing of a predicted lesion mask (SPEC: lesions < 16 mm³ are ignored everywhere).

Rules, in order: (1) keep only voxels inside the femur dilated by ``femur_dilation_mm``; (2) fill enclosed
holes; (3) remove connected components (26-connectivity) smaller than ``min_component_mm3``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULTS = {"femur_dilation_mm": 3.0, "min_component_mm3": 16.0, "fill_holes": True}


def dilate_mm(mask: np.ndarray, spacing_zyx, radius_mm: float) -> np.ndarray:
    """Binary dilation by a physical radius (Euclidean, anisotropic spacing respected)."""
    mask = np.asarray(mask) > 0
    if radius_mm <= 0 or not mask.any():
        return mask
    sl = bbox_pad(mask, np.ceil(radius_mm / np.asarray(spacing_zyx)).astype(int) + 1)
    sub = mask[sl]
    dist = ndimage.distance_transform_edt(~sub, sampling=spacing_zyx).astype(np.float32)
    out = np.zeros_like(mask)
    out[sl] = dist <= radius_mm
    return out


def bbox_pad(mask, margin) -> tuple:
    from bonemet.segmentation.grid import bbox_slices

    return bbox_slices(mask, margin)


def remove_small_components(mask: np.ndarray, spacing_zyx, min_volume_mm3: float) -> np.ndarray:
    mask = np.asarray(mask) > 0
    if min_volume_mm3 <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * float(np.prod(spacing_zyx))
    keep = sizes >= min_volume_mm3
    keep[0] = False
    return keep[labels]


def postprocess(mask: np.ndarray, spacing_zyx, femur: np.ndarray | None = None, params: dict | None = None
                ) -> np.ndarray:
    """Clean a binary (z, y, x) prediction; returns uint8. ``femur`` (any non-zero = bone) restricts it."""
    p = {**DEFAULTS, **(params or {})}
    out = np.asarray(mask) > 0
    if femur is not None:
        out &= dilate_mm(femur, spacing_zyx, float(p["femur_dilation_mm"]))
    if p.get("fill_holes") and out.any():
        out = ndimage.binary_fill_holes(out)
    out = remove_small_components(out, spacing_zyx, float(p["min_component_mm3"]))
    return out.astype(np.uint8)
