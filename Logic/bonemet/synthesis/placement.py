"""Interactive lesion placement: the function the Slicer panel calls for a live preview.

:func:`place_lesion` puts one library lesion at a user-chosen point with user-chosen scale, rotation, crop
seed, edge smoothing and noise. Deterministic for the same arguments, and fast (only the lesion's local box
is computed; the cost is dominated by copying the CT array).
"""

from __future__ import annotations

import numpy as np

from bonemet.errors import InputError
from bonemet.io import Geometry
from bonemet.presets import load_preset
from bonemet.seeding import derive_seed, rng
from bonemet.synthesis.insertion import DEFAULT_MIN_VOLUME_MM3, insert_lesion
from bonemet.synthesis.library import LesionItem
from bonemet.synthesis.transform import draw_crop

SPACES = ("ijk", "ras", "lps", "zyx")


def point_to_index(point, geometry: Geometry, space: str = "ijk") -> np.ndarray:
    """A point → continuous (z, y, x) array index.

    ``space``: ``ijk`` = Slicer/ITK voxel index (i, j, k) = (x, y, z) order; ``ras`` = Slicer world
    coordinates (mm, RAS); ``lps`` = ITK/DICOM physical coordinates (mm); ``zyx`` = numpy array index.
    """
    p = np.asarray(point, float).reshape(-1)
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise InputError(f"point must be 3 finite numbers, got {point!r}")
    space = space.lower()
    if space == "zyx":
        return p
    if space == "ijk":
        return p[::-1]
    if space == "ras":
        p = np.array([-p[0], -p[1], p[2]])
        space = "lps"
    if space == "lps":
        return geometry.physical_to_index(p)[::-1]
    raise InputError(f"unknown point space {space!r} (use one of {', '.join(SPACES)})")


def snap_to_femur(index_zyx, femur: np.ndarray, spacing_zyx) -> tuple[np.ndarray, float]:
    """Nearest femur voxel (physical distance) to a continuous index; returns (index, distance mm)."""
    idx = np.argwhere(femur > 0)
    if len(idx) == 0:
        raise InputError("femur mask is empty: cannot place a lesion")
    d2 = (((idx - np.asarray(index_zyx, float)) * np.asarray(spacing_zyx, float)) ** 2).sum(axis=1)
    j = int(np.argmin(d2))
    return idx[j], float(np.sqrt(d2[j]))


def _smoothing(smoothing) -> tuple[int, float]:
    if smoothing is None:
        return 1, 0.0
    if np.isscalar(smoothing):
        return 3, float(smoothing)
    size, weight = smoothing
    return int(size), float(weight)


def place_lesion(ct_hu: np.ndarray, femur_mask: np.ndarray, geometry: Geometry, item: LesionItem, point,
                 space: str = "ijk", scale=1.0, rotation_deg=(0.0, 0.0, 0.0), crop_seed: int | None = 0,
                 smoothing=(3, 0.6), noise_hu: float = 0.0, snap: bool = False,
                 min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3, crop_range=None):
    """Place library lesion ``item`` in ``ct_hu`` (z, y, x HU) at ``point``.

    ``femur_mask``: femur label map or binary mask (same shape); ``geometry``: the CT grid; ``point`` in
    ``space`` (see :func:`point_to_index`); ``scale``: scalar or 3 factors (z, y, x); ``rotation_deg``: 3
    angles about the array axes; ``crop_seed``: seeds the random ellipsoid crop and the noise (``None`` = no
    crop, whole lesion); ``smoothing``: edge blend weight (mean filter 3) or ``(size, weight)``;
    ``noise_hu``: Gaussian noise std (HU); ``snap``: move a point outside the femur to the nearest femur
    voxel instead of failing; ``crop_range``: semi-axis fraction range (default: the 'paper' preset's).

    Returns ``(new_ct float32, lesion_mask uint8, info)``; ``info`` has the insertion point (zyx and ijk),
    whether it was snapped (and by how far), lesion voxels and volume (mm³), ``kept`` (size filter) and the
    full ``params`` dict (same format as the batch manifest, so the result can be regenerated).
    """
    ct_hu = np.asarray(ct_hu)
    femur_mask = np.asarray(femur_mask)
    if ct_hu.shape != femur_mask.shape:
        raise InputError(f"CT shape {ct_hu.shape} and femur mask shape {femur_mask.shape} differ")
    if tuple(ct_hu.shape) != tuple(geometry.shape):
        raise InputError(f"CT shape {ct_hu.shape} does not match its geometry {geometry.shape}")
    idx = point_to_index(point, geometry, space)
    zyx = np.round(idx).astype(int)
    info: dict = {"point": [float(v) for v in np.asarray(point, float).reshape(-1)], "space": space,
                  "snapped": False}
    inside_volume = bool(np.all(zyx >= 0) and np.all(zyx < np.asarray(ct_hu.shape)))
    if not inside_volume or femur_mask[tuple(zyx)] == 0:
        where = "outside the volume" if not inside_volume else "outside the femur"
        if not snap:
            raise InputError(f"point {info['point']} ({space}) = voxel {zyx[::-1].tolist()} (i, j, k) is {where} "
                             "(choose a point inside the femur, or use snap)")
        new, dist = snap_to_femur(idx, femur_mask, geometry.spacing_zyx)
        info.update(snapped=True, snapped_from_zyx=[int(v) for v in zyx], snap_distance_mm=round(dist, 3))
        zyx = new
    scale3 = [float(scale)] * 3 if np.isscalar(scale) else [float(s) for s in scale]
    if len(scale3) != 3 or min(scale3) <= 0:
        raise InputError(f"scale must be > 0 (one or three factors), got {scale!r}")
    size, weight = _smoothing(smoothing)
    if crop_seed is None:
        crop = {"crop_centre_vox": [int(v) for v in np.argwhere(item.mask > 0).mean(axis=0).round()],
                "crop_semi_axes_mm": [1e6, 1e6, 1e6]}
    else:
        if crop_range is None:
            crop_range = load_preset("synthesis", "paper").get("crop", {}).get("semi_axis_fraction", (0.5, 1.3))
        crop = draw_crop(rng(int(crop_seed), "crop", item.id), item.mask, item.spacing_zyx, crop_range)
    params = {**crop, "rotation_deg": [float(a) for a in rotation_deg], "scale": scale3,
              "smoothing_size": size, "smoothing_weight": weight, "noise_std_hu": float(noise_hu),
              "noise_seed": derive_seed(0 if crop_seed is None else int(crop_seed), "noise", item.id),
              "interpolation_order": 1, "centre_zyx": [int(v) for v in zyx], "femur_label": int(femur_mask[tuple(zyx)])}
    ins = insert_lesion(ct_hu.astype(np.float32, copy=False), femur_mask, geometry.spacing_zyx, item.patch,
                        item.mask, item.spacing_zyx, params, min_volume_mm3)
    new_ct, lesion = ins.apply(ct_hu.astype(np.float32, copy=True), in_place=True)
    info.update(centre_zyx=params["centre_zyx"], centre_ijk=params["centre_zyx"][::-1],
                centre_lps=[float(v) for v in geometry.index_to_physical(params["centre_zyx"][::-1])],
                voxels=ins.voxels, volume_mm3=ins.volume_mm3, kept=ins.kept, reason=ins.reason,
                box=[[s.start, s.stop] for s in ins.box], lesion_id=item.id, source_case=item.source_case,
                params=params)
    return new_ct, lesion, info
