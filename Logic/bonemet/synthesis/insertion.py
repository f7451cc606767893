"""Insertion of a transformed lesion into a healthy femur (paper steps 5-6).

Only the lesion's local box of the host volume is touched (fast on large volumes). The inserted lesion is
``(transformed mask >= 0.5) ∩ femur`` (the femur label at the insertion point), intensities are blended with
the smoothed-edge weights, restricted to the femur (no seams, nothing leaks into soft tissue), and Gaussian
noise is added inside the lesion. Results whose lesion volume is ``<= min_volume_mm3`` are flagged rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bonemet.errors import InputError
from bonemet.synthesis.transform import edge_alpha, noise_field, transform_lesion

DEFAULT_MIN_VOLUME_MM3 = 16.0


@dataclass
class LocalInsertion:
    """Result of inserting one lesion: the host box it changed and the new values there.

    ``box``: host slices (z, y, x); ``values``: new CT values in the box (float32); ``lesion``: lesion mask in
    the box (bool); ``voxels``/``volume_mm3``: inserted lesion size; ``kept``: size filter passed;
    ``reason``: why rejected (or None).
    """

    box: tuple
    values: np.ndarray | None
    lesion: np.ndarray | None
    voxels: int
    volume_mm3: float
    kept: bool
    reason: str | None = None

    def apply(self, ct: np.ndarray, lesion_out: np.ndarray | None = None, in_place: bool = False):
        """Full-size CT (copy unless ``in_place``) and lesion mask (uint8) with this insertion applied."""
        out = ct if in_place else ct.copy()
        if lesion_out is None:
            lesion_out = np.zeros(ct.shape, np.uint8)
        if self.values is not None:
            out[self.box] = self.values
            lesion_out[self.box] = self.lesion.astype(np.uint8)
        return out, lesion_out


def femur_candidates(femur: np.ndarray, spacing_zyx, min_depth_mm: float = 0.0) -> np.ndarray:
    """Indices (N, 3) of femur voxels at least ``min_depth_mm`` inside the femur (all femur voxels if none
    qualifies). The distance transform runs on the femur's bounding box only."""
    fem = femur > 0
    if not fem.any():
        return np.zeros((0, 3), np.int64)
    if min_depth_mm <= 0:
        return np.argwhere(fem)
    sl = ndimage.find_objects(fem.astype(np.uint8))[0]
    sl = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(sl, fem.shape))
    dist = ndimage.distance_transform_edt(fem[sl], sampling=spacing_zyx)
    idx = np.argwhere(dist >= min_depth_mm)
    if len(idx) == 0:
        return np.argwhere(fem)
    return idx + np.array([s.start for s in sl])


def draw_centre(rng: np.random.Generator, candidates: np.ndarray, femur: np.ndarray) -> dict:
    """Random insertion point among ``candidates`` (from :func:`femur_candidates`), with its femur label."""
    if len(candidates) == 0:
        raise InputError("femur mask is empty: nowhere to insert a lesion")
    c = candidates[int(rng.integers(len(candidates)))]
    return {"centre_zyx": [int(v) for v in c], "femur_label": int(femur[tuple(c)])}


def insert_lesion(host_ct: np.ndarray, femur: np.ndarray, host_spacing_zyx, patch: np.ndarray, mask: np.ndarray,
                  src_spacing_zyx, params: dict, min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3) -> LocalInsertion:
    """Transform a library lesion per ``params`` and blend it into ``host_ct`` at ``params['centre_zyx']``.

    ``host_ct`` HU (z, y, x); ``femur`` label map (same shape); ``patch``/``mask`` the library item;
    ``params`` as drawn by :func:`draw_transform_params` + :func:`draw_centre`. Pure function of its inputs
    (bit-for-bit reproducible). Nothing outside the returned box changes.
    """
    if host_ct.shape != femur.shape:
        raise InputError(f"CT shape {host_ct.shape} and femur mask shape {femur.shape} differ")
    centre = np.asarray(params["centre_zyx"], int)
    if np.any(centre < 0) or np.any(centre >= np.asarray(host_ct.shape)):
        raise InputError(f"insertion point {centre.tolist()} (z, y, x) is outside the volume {host_ct.shape}")
    label = int(params.get("femur_label") or femur[tuple(centre)])
    empty_box = (slice(0, 0),) * 3
    if label <= 0:
        raise InputError(f"insertion point {centre.tolist()} (z, y, x) is outside the femur")
    res = transform_lesion(patch, mask, src_spacing_zyx, host_spacing_zyx, params)
    if res is None:
        return LocalInsertion(empty_box, None, None, 0, 0.0, False, "crop_empty")
    values, soft, lo = res
    shape = np.asarray(values.shape)
    start = centre + lo                       # host index of local voxel 0
    stop = start + shape
    h0 = np.maximum(start, 0)
    h1 = np.minimum(stop, host_ct.shape)
    if np.any(h1 <= h0):
        return LocalInsertion(empty_box, None, None, 0, 0.0, False, "outside_volume")
    box = tuple(slice(int(a), int(b)) for a, b in zip(h0, h1))
    lbox = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(h0, h1, start))
    fem_local = np.zeros(values.shape, bool)
    fem_local[lbox] = femur[box] == label
    lesion = (soft >= 0.5) & fem_local
    voxels = int(lesion.sum())
    vol = float(voxels * np.prod(np.asarray(host_spacing_zyx, float)))
    if voxels == 0:
        return LocalInsertion(box, None, None, 0, 0.0, False, "outside_femur")
    alpha = edge_alpha(lesion, int(params.get("smoothing_size", 3)), float(params.get("smoothing_weight", 0.0)))
    alpha *= fem_local
    lesion_values = values + noise_field(values.shape, int(params.get("noise_seed", 0)),
                                         float(params.get("noise_std_hu", 0.0)))
    host_local = np.zeros(values.shape, np.float32)
    host_local[lbox] = host_ct[box]
    blended = host_local * (1.0 - alpha) + lesion_values * alpha
    kept = vol > float(min_volume_mm3)
    return LocalInsertion(box, blended[lbox].astype(np.float32), lesion[lbox], voxels, vol, kept,
                          None if kept else "too_small")
