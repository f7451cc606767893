"""Femur segmentation without a trained model (classical pipeline).

Output label map on the CT's grid: **0 background, 1 the patient's right femur, 2 the patient's left femur**
(right = smaller physical LPS x). The medullary canal and lytic lesions inside the bone are part of the femur.

Pipeline (:func:`segment_femur`):

1. checks: the image must look like CT in HU (air/fat below -50 HU present, some bone above 300 HU);
2. the volume is re-oriented to LPS, lightly smoothed (0.6 mm) and, when very large, processed at >= 1 mm;
3. bone = smoothed HU above a threshold (metal, > 2000 HU, counts as bone);
4. markers: femoral shafts in the lowest slab of bone (two largest round components, one per side, lateral
   to the midline) and the pelvis in the highest slab;
5. marker-based watershed on the inverted HU, restricted to bone: the femur/pelvis boundary falls on the dark
   joint space at the hip;
6. each femur: largest piece connected to its marker, holes filled slice by slice (axial, coronal, sagittal)
   and in 3D, closed (2 mm) to seal small cortical breaches, never growing into the pelvis;
   with metal present, a 2 mm opening removes streak artefacts attached to the bone;
7. if one femur is > 1.3x the other (pelvis leaking in), retry with stricter bone thresholds;
8. sanity checks (volume, thickness, height): otherwise ``InputError("no femur found ...")``.
"""

from __future__ import annotations

import logging

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from bonemet.errors import InputError
from bonemet.io import Geometry, read_ct, to_image, write_volume

log = logging.getLogger("bonemet")

BONE_HU = 300.0
METAL_HU = 2000.0
MAX_WORK_VOXELS = 40_000_000
VALLEY_CUT_HU = 150.0
MAX_ASYMMETRY = 1.3  # volume ratio of the two femurs above which the segmentation is retried
LABELS = {0: "background", 1: "right femur (smaller LPS x)", 2: "left femur"}


def segment_femur(ct_hu: np.ndarray, geometry: Geometry, bone_hu: float = BONE_HU, path=None) -> np.ndarray:
    """Femur label map (uint8, same shape as ``ct_hu`` (z, y, x)): 0 background, 1 right, 2 left femur.

    Raises :class:`InputError` when the image does not look like CT in HU or no femur is found.
    """
    ct_hu = np.asarray(ct_hu)
    if ct_hu.ndim != 3 or tuple(ct_hu.shape) != geometry.shape:
        raise ValueError(f"ct shape {ct_hu.shape} does not match geometry {geometry.shape}")
    _check_ct_like(ct_hu, geometry, path)
    image = to_image(ct_hu.astype(np.float32, copy=False), geometry)
    orient = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(geometry.direction)
    lps = sitk.DICOMOrient(image, "LPS") if orient != "LPS" else image
    work = lps
    spacing = np.array(lps.GetSpacing())
    if np.prod(lps.GetSize()) > MAX_WORK_VOXELS:
        f = (np.prod(lps.GetSize()) / MAX_WORK_VOXELS) ** (1 / 3)
        new_sp = np.maximum(spacing, spacing * f)
        new_size = [int(round(n * s / t)) for n, s, t in zip(lps.GetSize(), spacing, new_sp)]
        work = sitk.Resample(lps, new_size, sitk.Transform(), sitk.sitkLinear, lps.GetOrigin(), tuple(new_sp),
                             lps.GetDirection(), -1024.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(work)
    sp_zyx = tuple(work.GetSpacing()[::-1])
    labels = _segment_lps(arr, sp_zyx, bone_hu, path)
    if _asymmetry(labels) > MAX_ASYMMETRY:
        # one femur much larger than the other: usually pelvis leaking in through a blurred joint space (or a
        # head lost to the pelvis). Retry with stricter thresholds; keep a result only if it is symmetric.
        for t in (bone_hu + 100.0, bone_hu + 200.0):
            try:
                alt = _segment_lps(arr, sp_zyx, t, path)
            except InputError:
                continue
            if _asymmetry(alt) <= MAX_ASYMMETRY:
                log.debug("femur: bone threshold %.0f HU gave asymmetric femurs, used %.0f HU", bone_hu, t)
                labels = alt
                break
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(work)
    if work is not lps:
        out = _resample_labels(out, lps)
    if lps is not image:
        out = sitk.DICOMOrient(out, orient)
    res = sitk.GetArrayFromImage(out).astype(np.uint8)
    if res.shape != ct_hu.shape:  # pragma: no cover - orientation round trip keeps the grid
        raise RuntimeError("internal error: femur mask grid differs from the CT grid")
    return res


def segment_femur_file(ct_path, out_path, bone_hu: float = BONE_HU) -> Path:
    """Read a CT (any format :func:`bonemet.io.read_ct` accepts), write its femur label map on the same grid."""
    vol = read_ct(ct_path)
    labels = segment_femur(vol.array, vol.geometry, bone_hu=bone_hu, path=ct_path)
    return write_volume(out_path, labels, vol.geometry)


# --------------------------------------------------------------------------------------------------------------

def _check_ct_like(ct: np.ndarray, geometry: Geometry, path) -> None:
    sub = ct[:: max(1, ct.shape[0] // 64), ::2, ::2]
    lo = float(np.percentile(sub, 0.5))
    if lo > -50.0:
        raise InputError(f"no femur found: intensities do not look like CT in Hounsfield units (0.5th "
                         f"percentile {lo:.0f}, expected air or fat below -50 HU; MR or un-rescaled data?)", path)
    bone_ml = float((ct > BONE_HU).sum()) * geometry.voxel_volume / 1000.0
    if bone_ml < 15.0:
        raise InputError(f"no femur found: only {bone_ml:.1f} ml of bone (> {BONE_HU:.0f} HU) in the image", path)


def _asymmetry(labels: np.ndarray) -> float:
    v = np.bincount(labels.ravel(), minlength=3)[1:3].astype(float)
    return float(v.max() / v.min()) if v.min() > 0 else 1.0


def _resample_labels(labels: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Labels onto ``reference``'s grid via smoothed per-label indicators (smooth boundaries)."""
    arr = sitk.GetArrayFromImage(labels)
    out = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    best = np.zeros(out.shape, np.float32)
    for lab in (1, 2):
        ind = sitk.GetImageFromArray((arr == lab).astype(np.float32))
        ind.CopyInformation(labels)
        ind = sitk.SmoothingRecursiveGaussian(ind, 0.5 * float(np.mean(labels.GetSpacing())))
        up = sitk.GetArrayFromImage(sitk.Resample(ind, reference, sitk.Transform(), sitk.sitkLinear, 0.0))
        sel = (up > 0.5) & (up > best)
        out[sel] = lab
        best = np.maximum(best, up)
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(reference)
    return res


def _ball(radius_mm: float, sp_zyx) -> np.ndarray:
    r = [max(1, int(np.floor(radius_mm / s))) for s in sp_zyx]
    g = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    d = sum((gi * s / radius_mm) ** 2 for gi, s in zip(g, sp_zyx))
    return d <= 1.0 + 1e-6


def _segment_lps(ct: np.ndarray, sp_zyx, bone_hu: float, path) -> np.ndarray:
    """Segmentation on an LPS-oriented array (axis 0 inferior→superior, axis 2 right→left)."""
    sp = np.asarray(sp_zyx, float)
    s = ndi.gaussian_filter(ct.astype(np.float32), sigma=[min(1.0, 0.6 / v) for v in sp])
    metal = s > METAL_HU
    bone = s > bone_hu
    if not bone.any():
        raise InputError("no femur found: no bone in the image", path)
    lab, n = ndi.label(bone)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = sizes * np.prod(sp) >= 500.0  # >= 0.5 ml
    bone = keep[lab]
    zs = np.flatnonzero(bone.any(axis=(1, 2)))
    if zs.size < 2:
        raise InputError("no femur found: bone spans less than two slices", path)
    z_lo, z_hi = int(zs[0]), int(zs[-1])
    slab = max(1, int(round(8.0 / sp[0])))

    body = s > -500
    body_x = float(np.nonzero(body.any(axis=(0, 1)))[0].mean()) if body.any() else ct.shape[2] / 2
    # femur markers: lowest slab of bone, per side the largest roundish component lateral to the midline
    bottom = np.zeros_like(bone)
    bottom[z_lo:z_lo + slab] = bone[z_lo:z_lo + slab]
    bottom_filled = np.stack([ndi.binary_fill_holes(sl) if sl.any() else sl for sl in bottom])
    blab, bn = ndi.label(bottom_filled)
    markers = np.zeros(ct.shape, np.int32)
    sides = {}
    for k in range(1, bn + 1):
        comp = blab == k
        zz, yy, xx = np.nonzero(comp)
        area = comp.sum() * sp[1] * sp[2] / max(1, np.unique(zz).size)
        cx = xx.mean()
        lateral = abs(cx - body_x) * sp[2]
        if area < 150.0 or lateral < 35.0:
            continue
        side = 1 if cx < body_x else 2
        if side not in sides or area > sides[side][0]:
            sides[side] = (area, k)
    if not sides:
        raise InputError("no femur found: no femoral shaft cross-section in the lowest slices of bone", path)
    for side, (_, k) in sides.items():
        markers[(blab == k) & bone] = side
    # pelvis marker: highest slab of bone (if it is not the femur slab itself)
    if z_hi - z_lo > 3 * slab:
        top = np.zeros_like(bone)
        top[z_hi - slab + 1:z_hi + 1] = bone[z_hi - slab + 1:z_hi + 1]
        markers[top & (markers == 0)] = 3
    # watershed on inverted HU plus a penalty on thin dark valleys between bright bone (the joint space),
    # bone only (non-bone = high plateau, relabelled afterwards)
    valley = _valley(s, sp)
    # inside of each bone (marrow, trabecular bone, lesions) = as cheap as bone: holes of the valley-cut bone
    cut = bone & (valley < VALLEY_CUT_HU)
    inside = np.stack([ndi.binary_fill_holes(x) if x.any() else x for x in cut]) & ~bone
    s_eff = np.where(inside, 600.0, s)
    # outside bone: a high plateau (what lies there is relabelled afterwards)
    land = np.where(bone | inside, np.clip(3000.0 - np.minimum(s_eff, 800.0) + 4.0 * valley, 0, 9000), 10000.0)
    land = np.rint(land).astype(np.uint16)
    ws_img = sitk.MorphologicalWatershedFromMarkers(sitk.GetImageFromArray(land),
                                                    sitk.GetImageFromArray(markers.astype(np.uint16)),
                                                    markWatershedLine=False, fullyConnected=False)
    ws = sitk.GetArrayFromImage(ws_img)
    other_bone = bone & (ws == 3)
    out = np.zeros(ct.shape, np.uint8)
    near_other = ndi.binary_dilation(other_bone, structure=_ball(1.5, sp)) if other_bone.any() else other_bone
    for side in sides:
        fb = bone & (ws == side)
        # cut thin dark valleys (joint space bridged by blur/noise), keep what connects to the marker
        core = _connected_to(fb & (valley < VALLEY_CUT_HU), markers == side)
        grown = ndi.binary_dilation(core, structure=ndi.generate_binary_structure(3, 1)) & fb
        fb = _connected_to(grown, markers == side)
        if metal.any():
            fb = _remove_streaks(fb, metal, sp)
        filled = _fill(fb, sp)
        filled &= ~(near_other & ~fb)
        filled = _drop_thin_attachments(filled, markers == side, sp)
        filled = _refine_surface(filled, s, sp)
        filled = _largest(filled)
        out[filled & (out == 0)] = side
    _sanity(out, sp, path)
    return out


def _valley(s: np.ndarray, sp, reach_mm=(1.0, 2.0, 3.5)) -> np.ndarray:
    """How much darker each voxel is than bright structures on both sides of it (up to ``reach_mm`` away)
    along some direction (HU, >= 0): large inside thin dark gaps between bright bone (a joint space), ~0 inside
    wide dark regions (medullary canal, soft tissue)."""
    out = np.zeros(s.shape, np.float32)
    units = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (0, 1, -1), (1, 0, 1), (1, 0, -1), (1, 1, 0), (1, -1, 0))
    steps = {tuple(e[a] * max(1, int(round(r / sp[a]))) for a in range(3)) for e in units for r in reach_mm}
    pad = max(max(abs(v) for v in d) for d in steps)
    P = np.pad(s, pad, mode="edge")
    n0, n1, n2 = s.shape

    def shifted(d):
        return P[pad + d[0]:pad + d[0] + n0, pad + d[1]:pad + d[1] + n1, pad + d[2]:pad + d[2] + n2]

    for e in units:
        ds = sorted({tuple(e[a] * max(1, int(round(r / sp[a]))) for a in range(3)) for r in reach_mm})
        fa = fb = None
        for d in ds:
            a, b = shifted(d), shifted(tuple(-v for v in d))
            fa = a if fa is None else np.maximum(fa, a)
            fb = b if fb is None else np.maximum(fb, b)
        np.maximum(out, np.minimum(fa, fb) - s, out=out)
    return out


def _refine_surface(mask: np.ndarray, s: np.ndarray, sp, soft_hu: float = 40.0) -> np.ndarray:
    """Half-maximum surface: an outer-shell voxel stays only if brighter than halfway between the local bone
    peak (max within ~3 mm inside the mask) and soft tissue — removes the partial-volume rim a fixed
    threshold leaves, keeps dark lesions that reach the surface only where their neighbours keep them."""
    if not mask.any():
        return mask
    bb = ndi.find_objects(mask.astype(np.uint8))[0]
    bb = tuple(slice(max(0, b.start - 2), min(n, b.stop + 2)) for b, n in zip(bb, mask.shape))
    m = mask[bb]
    sb = s[bb]
    inner = ndi.binary_erosion(m)
    shell = m & ~inner
    size = [max(3, 2 * int(round(3.0 / v)) + 1) for v in sp]
    peak = ndi.maximum_filter(np.where(m, np.minimum(sb, 1800.0), -1000.0), size=size)
    keep = inner | (shell & (sb > 0.5 * (peak + soft_hu)))
    out = mask.copy()
    out[bb] = keep
    return out


def _remove_streaks(fb: np.ndarray, metal: np.ndarray, sp) -> np.ndarray:
    """Open the bone mask near metal (removes thin streak artefacts), keep what is far from metal."""
    near = ndi.distance_transform_edt(~metal, sampling=sp) < 60.0
    opened = ndi.binary_opening(fb, structure=_ball(2.0, sp))
    return np.where(near, opened | (metal & fb), fb)


def _fill(mask: np.ndarray, sp) -> np.ndarray:
    if not mask.any():
        return mask
    bb = ndi.find_objects(mask.astype(np.uint8))[0]
    pad = [max(2, int(np.ceil(4.0 / v))) for v in sp]
    bb = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(bb, pad, mask.shape))
    m = mask[bb]
    m = ndi.binary_closing(m, structure=_ball(2.0, sp))
    for ax in (0, 1, 2):
        m = np.moveaxis(np.stack([ndi.binary_fill_holes(x) for x in np.moveaxis(m, ax, 0)]), 0, ax)
    m = ndi.binary_fill_holes(m)
    out = np.zeros_like(mask)
    out[bb] = m
    return out | mask


def _drop_thin_attachments(mask: np.ndarray, seeds: np.ndarray, sp, radius_mm: float = 2.5) -> np.ndarray:
    """Remove pieces joined to the femur only through a thin bridge (e.g. an acetabular wall reached through
    a lesion that breaks the head cortex): erode, keep what connects to the femur marker, dilate back inside
    the mask."""
    if not mask.any():
        return mask
    bb = ndi.find_objects(mask.astype(np.uint8))[0]
    pad = [int(np.ceil(radius_mm / v)) + 1 for v in sp]
    bb = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(bb, pad, mask.shape))
    ball = _ball(radius_mm, sp)
    m = mask[bb]
    core = ndi.binary_erosion(m, structure=ball)
    core = _connected_to(core, seeds[bb] & core) if (seeds[bb] & core).any() else _largest(core)
    kept = m & ndi.binary_dilation(core, structure=ball)
    out = np.zeros_like(mask)
    out[bb] = kept
    return out


def _connected_to(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    lab, _ = ndi.label(mask)
    ids = np.unique(lab[seeds & mask])
    ids = ids[ids > 0]
    return np.isin(lab, ids)


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _sanity(labels: np.ndarray, sp, path) -> None:
    for side in (1, 2):
        m = labels == side
        if not m.any():
            continue
        vol_ml = m.sum() * np.prod(sp) / 1000.0
        zs = np.flatnonzero(m.any(axis=(1, 2)))
        height = (zs[-1] - zs[0] + 1) * sp[0]
        thick = float(ndi.distance_transform_edt(np.pad(m, 1), sampling=sp).max())
        if vol_ml < 20.0 or height < 40.0 or thick < 8.0:
            labels[m] = 0
            log.debug("discarded femur candidate %d: %.1f ml, %.0f mm high, %.1f mm thick", side, vol_ml, height,
                      thick)
    if not labels.any():
        raise InputError("no femur found: no bone of femoral size and shape (need the proximal femur in the "
                         "field of view)", path)


__all__ = ["segment_femur", "segment_femur_file", "LABELS", "BONE_HU"]
