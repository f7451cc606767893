"""The lesion transform of ad-hoc synthesis (paper steps 2-4), on the lesion's small patch only.

1. :func:`ellipsoid_crop` — intersect the lesion mask with an axis-aligned ellipsoid (random centre on a
   lesion voxel, random semi-axes as fractions of the lesion's half-extent), mimicking a realistic shape;
2. :func:`transform_patch` — random rotation (three angles) and scaling, resampled with
   ``scipy.ndimage.affine_transform`` straight onto the *host* voxel grid (the library and host spacings are
   folded into the same affine, so no separate resampling pass is needed);
3. :func:`edge_alpha` — mean-filter smoothing of the lesion edge, giving a blend weight map;
4. :func:`noise_field` — additive Gaussian noise from a recorded integer seed.

Every drawn value lives in a flat JSON-able ``params`` dict (:func:`draw_transform_params`), so a synthetic
case can be regenerated bit-for-bit from its manifest row. Arrays are (z, y, x); spacings given as
``spacing_zyx`` (mm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

# Keys of the per-case parameter dict that this module draws / consumes.
TRANSFORM_KEYS = ("crop_centre_vox", "crop_semi_axes_mm", "rotation_deg", "scale", "smoothing_size",
                  "smoothing_weight", "noise_std_hu", "noise_seed", "interpolation_order")


def _uniform(rng: np.random.Generator, rng_range, n: int | None = None):
    lo, hi = float(rng_range[0]), float(rng_range[1])
    if n is None:
        return float(rng.uniform(lo, hi))
    return [float(v) for v in rng.uniform(lo, hi, size=n)]


def lesion_half_extent_mm(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    """Half of the lesion's bounding-box extent along each array axis, in mm."""
    idx = np.argwhere(mask > 0)
    ext = idx.max(axis=0) - idx.min(axis=0) + 1
    return ext * np.asarray(spacing_zyx, float) / 2.0


def draw_crop(rng: np.random.Generator, mask: np.ndarray, spacing_zyx, semi_axis_fraction=(0.5, 1.3)) -> dict:
    """Random ellipsoid for :func:`ellipsoid_crop`: centre on a random lesion voxel, semi-axes (mm) a random
    fraction of the lesion's half-extent per axis (at least one voxel)."""
    idx = np.argwhere(mask > 0)
    centre = idx[int(rng.integers(len(idx)))]
    half = lesion_half_extent_mm(mask, spacing_zyx)
    frac = np.asarray(_uniform(rng, semi_axis_fraction, 3))
    semi = np.maximum(half * frac, np.asarray(spacing_zyx, float))
    return {"crop_centre_vox": [int(v) for v in centre], "crop_semi_axes_mm": [float(v) for v in semi]}


def draw_transform_params(rng: np.random.Generator, mask: np.ndarray, spacing_zyx, cfg: dict) -> dict:
    """Draw crop, rotation, scale, smoothing and noise parameters from the ranges of a synthesis preset."""
    p = draw_crop(rng, mask, spacing_zyx, cfg.get("crop", {}).get("semi_axis_fraction", (0.5, 1.3)))
    p["rotation_deg"] = _uniform(rng, cfg.get("rotation_deg", (-180.0, 180.0)), 3)
    if cfg.get("anisotropic_scale", False):
        p["scale"] = _uniform(rng, cfg.get("scale", (0.75, 1.25)), 3)
    else:
        s = _uniform(rng, cfg.get("scale", (0.75, 1.25)))
        p["scale"] = [s, s, s]
    sizes = list(cfg.get("smoothing", {}).get("sizes", [3]))
    p["smoothing_size"] = int(sizes[int(rng.integers(len(sizes)))])
    p["smoothing_weight"] = _uniform(rng, cfg.get("smoothing", {}).get("weight", (0.3, 1.0)))
    p["noise_std_hu"] = _uniform(rng, cfg.get("noise_std_hu", (0.0, 25.0)))
    p["noise_seed"] = int(rng.integers(0, 2**31 - 1))
    p["interpolation_order"] = int(cfg.get("interpolation_order", 1))
    return p


def ellipsoid_crop(mask: np.ndarray, centre_vox, semi_axes_mm, spacing_zyx) -> np.ndarray:
    """``mask`` ∩ axis-aligned ellipsoid (centre in voxels, semi-axes in mm). Returns bool, same shape."""
    c = np.asarray(centre_vox, float)
    a = np.asarray(semi_axes_mm, float) / np.asarray(spacing_zyx, float)
    zz, yy, xx = np.ogrid[:mask.shape[0], :mask.shape[1], :mask.shape[2]]
    inside = ((zz - c[0]) / a[0]) ** 2 + ((yy - c[1]) / a[1]) ** 2 + ((xx - c[2]) / a[2]) ** 2 <= 1.0
    return (mask > 0) & inside


def rotation_matrix(angles_deg) -> np.ndarray:
    """3x3 rotation acting on (z, y, x) vectors: extrinsic rotations about array axes 0, 1, 2 (degrees)."""
    return Rotation.from_euler("xyz", np.asarray(angles_deg, float), degrees=True).as_matrix()


def transform_patch(patch: np.ndarray, mask: np.ndarray, src_spacing_zyx, dst_spacing_zyx, rotation_deg, scale,
                    order: int = 1, pad: int = 2):
    """Rotate and scale a lesion (patch HU + cropped mask) onto a local grid of the destination spacing.

    The mask centroid maps to local voxel ``-lo`` (i.e. local index ``l`` is host offset ``l + lo`` from the
    insertion point). Returns ``(values float32, soft_mask float32 in [0, 1], lo int array (3,))``.
    """
    src = np.asarray(src_spacing_zyx, float)
    dst = np.asarray(dst_spacing_zyx, float)
    R = rotation_matrix(rotation_deg)
    S = np.diag(np.asarray(scale, float))
    idx = np.argwhere(mask > 0)
    c = idx.mean(axis=0)
    lo_i, hi_i = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    corners = np.array([[a, b, d] for a in (lo_i[0], hi_i[0]) for b in (lo_i[1], hi_i[1])
                        for d in (lo_i[2], hi_i[2])])
    fwd = np.diag(1.0 / dst) @ R @ S @ np.diag(src)            # source voxel offset -> destination voxel offset
    q = (corners - c) @ fwd.T
    lo = np.floor(q.min(axis=0)).astype(int) - pad
    hi = np.ceil(q.max(axis=0)).astype(int) + pad
    shape = tuple(int(v) for v in hi - lo + 1)
    inv = np.diag(1.0 / src) @ np.linalg.inv(S) @ R.T @ np.diag(dst)  # destination offset -> source offset
    offset = c + inv @ lo
    soft = ndimage.affine_transform(mask.astype(np.float32), inv, offset=offset, output_shape=shape,
                                    order=order, mode="constant", cval=0.0, prefilter=False)
    values = ndimage.affine_transform(patch.astype(np.float32), inv, offset=offset, output_shape=shape,
                                      order=order, mode="nearest", prefilter=False)
    return values, np.clip(soft, 0.0, 1.0), lo


def edge_alpha(lesion: np.ndarray, size: int, weight: float) -> np.ndarray:
    """Blend weights: ``(1 - weight) * lesion + weight * mean_filter(lesion, size)`` (float32 in [0, 1]).

    ``weight`` 0 = hard edge, 1 = fully mean-filtered edge (soft over ``size`` voxels).
    """
    m = lesion.astype(np.float32)
    if size <= 1 or weight <= 0:
        return m
    smooth = ndimage.uniform_filter(m, size=int(size), mode="constant", cval=0.0)
    return ((1.0 - weight) * m + weight * smooth).astype(np.float32)


def noise_field(shape, seed: int, std_hu: float) -> np.ndarray:
    """Gaussian noise (HU) of ``std_hu`` from an integer ``seed`` (float32)."""
    if std_hu <= 0:
        return np.zeros(shape, np.float32)
    return (np.random.default_rng(int(seed)).standard_normal(shape, dtype=np.float32) * np.float32(std_hu))


def transform_lesion(patch: np.ndarray, mask: np.ndarray, src_spacing_zyx, dst_spacing_zyx, params: dict):
    """Crop + rotate/scale a library lesion per ``params``; returns ``(values, soft_mask, lo)`` (see
    :func:`transform_patch`), or ``None`` if the crop is empty."""
    cropped = ellipsoid_crop(mask, params["crop_centre_vox"], params["crop_semi_axes_mm"], src_spacing_zyx)
    if not cropped.any():
        return None
    pad = int(params.get("smoothing_size", 3)) // 2 + 2
    return transform_patch(patch, cropped, src_spacing_zyx, dst_spacing_zyx, params["rotation_deg"],
                           params["scale"], int(params.get("interpolation_order", 1)), pad=pad)
