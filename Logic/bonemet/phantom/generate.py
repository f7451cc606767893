"""One synthetic proximal-femur CT with ground truth, in memory: :func:`make_case`.

Pipeline (all random draws from ``bonemet.seeding.rng(seed, "phantom", case_id)``):

1. acquisition grid: voxel size and slice spacing drawn from the preset and the case's centre;
2. anatomy: a packaged real label map (:mod:`bonemet.phantom.atlas`) warped by a random similarity transform
   plus a smooth random displacement field, sampled as soft tissue fractions (partial volume);
3. tissues: femur and pelvis with a cortical shell from the depth below the bone surface (thin at the head,
   thick along the shaft), textured trabecular bone, fatty medullary canal in the shaft, a cartilage-filled
   hip joint space, muscle, intermuscular fat/soft tissue, subcutaneous fat, skin, air;
4. lesions: irregular osteolytic blobs (0-80 HU), head/neck/trochanter/shaft, some breaching the cortex;
5. acquisition: point-spread blur, correlated noise, per-centre HU offset/scale, optional metal + streaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from bonemet.io import Geometry
from bonemet.phantom.atlas import REGION_IDS, REGIONS, atlas_names, load_atlas
from bonemet.presets import load_preset, merge
from bonemet.seeding import rng as make_rng

# Per-centre acquisition traits (multi-centre cohort): HU offset/scale, blur, noise factor.
CENTRES = {
    "A": {"offset": 0.0, "scale": 1.0, "blur": 0.45, "noise": 1.0},
    "B": {"offset": 18.0, "scale": 1.02, "blur": 0.55, "noise": 0.8},
    "C": {"offset": -15.0, "scale": 0.98, "blur": 0.40, "noise": 1.25},
    "D": {"offset": 8.0, "scale": 1.01, "blur": 0.60, "noise": 0.9},
}
AIR_HU = -1000.0
SIDES = {"right": 1, "left": 2}


@dataclass
class PhantomCase:
    """A phantom CT (int16 HU) with its femur label map (1 right, 2 left), lesion mask and grid."""

    id: str
    ct: np.ndarray
    femur: np.ndarray
    lesion: np.ndarray
    geometry: Geometry
    meta: dict = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not bool(self.meta.get("lesions"))


def phantom_preset(preset="small", overrides: dict | None = None) -> dict:
    base = preset if isinstance(preset, dict) else load_preset("phantom", preset)
    return merge(base, overrides)


def make_case(case_id: str = "ph000", seed: int = 0, preset="small", healthy: bool = False,
              centre: str | None = None, atlas: str | None = None, n_lesions: int | None = None,
              metal: bool | None = None, overrides: dict | None = None) -> PhantomCase:
    """Generate one phantom case in memory (deterministic for ``(seed, case_id)`` and the arguments)."""
    p = phantom_preset(preset, overrides)
    r = make_rng(seed, "phantom", case_id)
    names = atlas_names()
    atlas_name = atlas or names[int(r.integers(len(names)))]
    centre = centre or "ABCD"[int(r.integers(4))]
    ctr = CENTRES[centre]
    A = load_atlas(atlas_name, float(p["atlas_spacing"]))

    # 1. grid
    sxy = float(r.uniform(*p["spacing_xy"]))
    sz = float(r.uniform(*p["spacing_z"]))
    spacing = np.array([sxy, sxy, sz])
    fov = np.array(p["fov_mm"], float) * r.uniform(0.95, 1.05, 3)
    size = np.maximum(8, np.round(fov / spacing)).astype(int)
    hc = {k: np.array(v) for k, v in A.head_centre.items()}
    centre_xyz = (hc["right"] + hc["left"]) / 2
    top_z = centre_xyz[2] + float(r.uniform(*p["above_head_mm"]))
    fov_centre = np.array([centre_xyz[0], centre_xyz[1] + 10.0, top_z - size[2] * sz / 2])
    origin = np.round(-(size - 1) * spacing / 2 + r.uniform(-20, 20, 3), 3)
    geometry = Geometry(tuple(int(v) for v in size), tuple(float(v) for v in spacing),
                        tuple(float(v) for v in origin))
    shape = geometry.shape

    # 2. anatomy: output physical point -> atlas point (similarity + smooth displacement)
    ang = np.deg2rad(r.uniform([-2.5, -2.5, -5.0], [2.5, 2.5, 5.0]))
    rot = _rotation(ang)
    scale = float(r.uniform(0.92, 1.08)) * r.uniform(0.97, 1.03, 3)
    amp = float(r.uniform(*p["deform_mm"]))
    coarse = r.normal(0, amp, (3, 5, 5, 5)).astype(np.float32)
    zz, yy, xx = [np.arange(n, dtype=np.float32) for n in shape]
    grid_x = xx * spacing[0] + origin[0]
    grid_y = yy * spacing[1] + origin[1]
    grid_z = zz * spacing[2] + origin[2]
    rel = [grid_x - (origin[0] + (size[0] - 1) * spacing[0] / 2),
           grid_y - (origin[1] + (size[1] - 1) * spacing[1] / 2),
           grid_z - (origin[2] + (size[2] - 1) * spacing[2] / 2)]
    M = rot @ np.diag(1.0 / scale)
    disp = [_upsample(coarse[i], shape) for i in range(3)]
    idx = np.empty((3,) + shape, np.float32)  # atlas (z, y, x) indices
    for out_ax, atlas_ax in ((0, 2), (1, 1), (2, 0)):  # fill z, y, x index rows
        m = M[atlas_ax]
        q = (m[0] * rel[0][None, None, :] + m[1] * rel[1][None, :, None] + m[2] * rel[2][:, None, None]
             + fov_centre[atlas_ax] + disp[atlas_ax])
        idx[out_ax] = (q - A.origin[atlas_ax]) / A.spacing
    chans = np.stack([ndi.map_coordinates(A.channels[i], idx, order=1, mode="nearest", prefilter=False)
                      for i in range(A.channels.shape[0])])
    outside = ndi.map_coordinates(A.outside_mm, idx, order=1, mode="nearest", prefilter=False)
    regions = ndi.map_coordinates(A.regions, idx, order=0, mode="nearest", prefilter=False)
    del idx, disp
    vox_in = float(np.clip(sxy, 0.5, 2.5))
    # partial-volume fractions: sharpen the smooth atlas channels to a ~1 mm transition (no long tails that
    # would fill the joint space)
    chans = np.clip(0.5 + (chans - 0.5) * (2.5 * 2.0 / vox_in), 0.0, 1.0)
    tot = chans.sum(0)
    over = tot > 1
    chans[:, over] /= tot[over]
    w_other, w_r, w_l, w_mus = chans
    femur = np.zeros(shape, np.uint8)
    femur[w_r > 0.5] = 1
    femur[w_l > 0.5] = 2
    fem_any = femur > 0
    vox = float(np.mean(spacing))
    sp_zyx = tuple(spacing[::-1])

    # 3. tissues
    depth = _depth(fem_any, sp_zyx)                       # mm below the femur surface
    reg = np.where(fem_any, regions, 0)
    # shaft cortex thickens distally
    zmm = (np.arange(shape[0]) * sz)[:, None, None]
    head_z_idx = (np.nonzero((reg == REGION_IDS["head"]).any(axis=(1, 2)))[0])
    hz = float(head_z_idx.mean() * sz) if head_z_idx.size else float(shape[0] * sz * 0.75)
    below = np.clip(hz - zmm - 55.0, 0, None)
    thick_shaft = np.clip(2.5 + below * r.uniform(0.03, 0.05), 2.5, r.uniform(4.5, 6.5))
    t_cort = np.select([reg == 1, reg == 2, reg == 3, reg == 4],
                       [r.uniform(1.8, 2.6), r.uniform(1.8, 2.6), r.uniform(1.2, 1.8),
                        np.broadcast_to(thick_shaft, shape)], 1.5).astype(np.float32)
    hu_cort = float(r.uniform(1250, 1700))
    tex = _bandpass(r, shape, sp_zyx, 0.8, 2.5)
    tex2 = _bandpass(r, shape, sp_zyx, 2.0, 6.0)
    trab_base = np.select([reg == 1, reg == 2, reg == 3], [r.uniform(280, 380), r.uniform(220, 320),
                                                            r.uniform(170, 260)], r.uniform(170, 240))
    hu_trab = trab_base + 70.0 * tex + 30.0 * tex2
    # medullary canal (shaft): fatty marrow, a trabecular transition just inside the cortex
    canal = float(r.uniform(-60, 10))
    inner = depth - t_cort
    shaft_interior = np.clip((inner - 1.5) / 3.0, 0, 1) * (reg == 4) * np.clip(below / 15.0, 0, 1)
    hu_trab = hu_trab * (1 - shaft_interior) + (canal + 25.0 * tex2) * shaft_interior
    cort_w = 1.0 / (1.0 + np.exp(np.clip((depth - t_cort) / 0.4, -30, 30)))
    hu_bone = cort_w * (hu_cort + 60.0 * tex) + (1 - cort_w) * hu_trab

    # lesions (inside the femur)
    lesions_mask = np.zeros(shape, np.uint8)
    lesion_meta = []
    if not healthy:
        n_les = n_lesions if n_lesions is not None else int(r.integers(p["lesions_per_case"][0],
                                                                          p["lesions_per_case"][1] + 1))
        for k in range(n_les):
            info = _place_lesion(r, femur, reg, depth, t_cort, lesions_mask, sp_zyx, p, k + 1)
            if info is not None:
                lesion_meta.append(info)
        if lesion_meta:
            les_w = ndi.gaussian_filter(lesions_mask.astype(np.float32), 0.6)
            les_w = np.maximum(les_w, lesions_mask * 0.85)
            hu_les = r.uniform(0, 80) + 12.0 * tex + 8.0 * tex2
            hu_bone = hu_bone * (1 - les_w) + hu_les * les_w
    # pelvis: thin cortex, trabecular interior; joint space kept free of pelvic bone
    gap = max(float(r.uniform(3.0, 5.0)), 1.7 * sxy, 1.5 * sz)
    d_fem = ndi.distance_transform_edt(~fem_any, sampling=sp_zyx).astype(np.float32)
    w_other = w_other * np.clip((d_fem - gap) / vox + 0.5, 0, 1)
    other_any = w_other > 0.5
    depth_o = _depth(other_any, sp_zyx)
    cort_o = 1.0 / (1.0 + np.exp(np.clip((depth_o - r.uniform(1.0, 1.8)) / 0.4, -30, 30)))
    hu_other = cort_o * r.uniform(1000, 1400) + (1 - cort_o) * (r.uniform(180, 300) + 60.0 * tex)
    # soft tissues
    fat = float(r.uniform(-115, -85))
    soft_field = ndi.gaussian_filter(r.standard_normal(shape).astype(np.float32), 12.0 / vox)
    soft_field /= soft_field.std() + 1e-6
    hu_soft = np.where(soft_field > 0.8, 25.0, fat) + 12.0 * tex2
    joint = (d_fem < gap + 1.5) & (ndi.distance_transform_edt(~other_any, sampling=sp_zyx) < gap + 1.5)
    hu_soft = np.where(joint, 90.0, hu_soft)
    hu_mus = float(r.uniform(35, 55)) + 8.0 * tex2
    w_fem = w_r + w_l
    w_soft = np.clip(1.0 - w_other - w_fem - w_mus, 0, 1)
    hu_body = w_other * hu_other + w_fem * hu_bone + w_mus * hu_mus + w_soft * hu_soft
    fat_mm = float(r.uniform(8, 35))
    body_w = np.clip((fat_mm - outside) / vox + 0.5, 0, 1)
    skin = np.clip(1 - np.abs(outside - (fat_mm - 1.0)) / 1.5, 0, 1)
    hu_body = hu_body * (1 - skin) + 30.0 * skin
    ct = body_w * hu_body + (1 - body_w) * AIR_HU
    del chans, hu_bone, hu_trab, hu_soft, hu_other

    # 5. acquisition
    metal_used = bool(r.random() < p.get("metal_probability", 0.0)) if metal is None else bool(metal)
    if metal_used:
        ct = _add_metal(r, ct, femur, depth, reg, sp_zyx)
    psf = (ctr["blur"] * max(sz, 1.0) / sz, ctr["blur"] * 0.9, ctr["blur"] * 0.9)
    ct = ndi.gaussian_filter(ct, psf)
    noise_hu = float(r.uniform(*p["noise_hu"])) * ctr["noise"]
    noise_hu = float(np.clip(noise_hu, 10, 40))
    noise = ndi.gaussian_filter(r.standard_normal(shape).astype(np.float32), (0.5, 0.8, 0.8))
    ct += noise * (noise_hu / (noise.std() + 1e-6))
    ct = ct * ctr["scale"] + ctr["offset"]
    ct = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)

    meta = {
        "atlas": atlas_name, "centre": centre, "spacing": [float(v) for v in spacing],
        "size": [int(v) for v in size], "noise_hu": round(noise_hu, 1), "metal": metal_used,
        "joint_gap_mm": round(gap, 2), "healthy": not lesion_meta, "lesions": lesion_meta,
        "deform_mm": round(amp, 2),
    }
    return PhantomCase(case_id, ct, femur, lesions_mask, geometry, meta)


def _rotation(ang) -> np.ndarray:
    ax, ay, az = ang
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _upsample(c: np.ndarray, shape) -> np.ndarray:
    coords = [np.linspace(0, c.shape[i] - 1, shape[i], dtype=np.float32) for i in range(3)]
    from bonemet.phantom.atlas import _interp_separable

    return _interp_separable(c, coords)


def _depth(mask: np.ndarray, sp_zyx) -> np.ndarray:
    """Distance (mm) from each voxel inside ``mask`` to the surface (half a voxel at the boundary); 0 outside."""
    out = np.zeros(mask.shape, np.float32)
    sl = ndi.find_objects(mask.astype(np.uint8))
    if not sl or sl[0] is None:
        return out
    bb = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl[0])
    d = ndi.distance_transform_edt(mask[bb], sampling=sp_zyx).astype(np.float32)
    out[bb] = np.where(mask[bb], d - 0.5 * float(np.mean(sp_zyx)), 0)
    return np.clip(out, 0, None)


def _bandpass(r, shape, sp_zyx, lo_mm, hi_mm) -> np.ndarray:
    w = r.standard_normal(shape).astype(np.float32)
    a = ndi.gaussian_filter(w, [lo_mm / s for s in sp_zyx])
    b = ndi.gaussian_filter(w, [hi_mm / s for s in sp_zyx])
    t = a - b
    return t / (t.std() + 1e-6)


def _place_lesion(r, femur, reg, depth, t_cort, existing, sp_zyx, p, label_id):
    vox_vol = float(np.prod(sp_zyx))
    vmin, vmax = (float(v) for v in p["lesion_volume_mm3"])
    vmin = max(vmin, float(p.get("min_lesion_mm3", 16.0)) * 1.05, 3.5 * vox_vol)
    side = ("right", "left")[int(r.integers(2))]
    loc = ("head", "neck", "trochanter", "shaft")[int(r.choice(4, p=[0.2, 0.2, 0.3, 0.3]))]
    breach = bool(r.random() < p.get("breach_probability", 0.3))
    target = float(np.exp(r.uniform(np.log(vmin), np.log(max(vmin * 1.01, vmax)))))
    blocked = ndi.binary_dilation(existing > 0, iterations=2) if existing.any() else np.zeros(femur.shape, bool)
    away_from_edge = np.zeros(femur.shape, bool)
    margin = max(2, int(round(8.0 / sp_zyx[0])))
    away_from_edge[margin:-margin] = True  # lesions not cut by the field of view
    for attempt in range(12):
        region = (femur == SIDES[side]) & (reg == REGION_IDS[loc]) & ~blocked & away_from_edge
        req = np.cbrt(3 * target / (4 * np.pi))
        cand = region & (depth > (0.2 * req if breach else t_cort + 0.5 * req))
        if not cand.any():
            cand = region & (depth > t_cort)
        if not cand.any():
            loc = ("head", "neck", "trochanter", "shaft")[int(r.integers(4))]
            side = ("right", "left")[int(r.integers(2))]
            continue
        pts = np.argwhere(cand)
        c = pts[int(r.integers(len(pts)))]
        axes = req * np.exp(r.normal(0, 0.2, 3))
        axes *= req / np.cbrt(np.prod(axes))
        rot = _rotation(r.uniform(-np.pi, np.pi, 3))
        half = [int(np.ceil(1.6 * axes.max() / s)) + 1 for s in sp_zyx]
        bb = tuple(slice(max(0, ci - h), min(n, ci + h + 1)) for ci, h, n in zip(c, half, femur.shape))
        loc_shape = tuple(s.stop - s.start for s in bb)
        g = np.meshgrid(*[(np.arange(s.start, s.stop) - ci) * sp for s, ci, sp in zip(bb, c, sp_zyx)],
                        indexing="ij")
        pts_local = np.stack([g[2], g[1], g[0]], -1) @ rot  # x, y, z in lesion frame
        rho = np.sqrt(((pts_local / axes) ** 2).sum(-1))
        noise = ndi.gaussian_filter(r.standard_normal(loc_shape).astype(np.float32),
                                    [max(0.6, 0.35 * req / s) for s in sp_zyx])
        noise /= noise.std() + 1e-6
        blob = rho + 0.22 * noise < 1.0
        allowed = femur[bb] == SIDES[side]
        if not breach:
            allowed &= depth[bb] > t_cort[bb] * 0.8
        les = blob & allowed & ~blocked[bb]
        lab, n = ndi.label(les)
        if n == 0:
            target *= 1.3
            continue
        sizes = ndi.sum(les, lab, range(1, n + 1))
        les = lab == (int(np.argmax(sizes)) + 1)
        vol = float(les.sum() * vox_vol)
        if vol < vmin:
            target *= 1.3
            continue
        existing[bb][les] = 1
        touches = bool((les & (depth[bb] <= t_cort[bb])).any())
        zc, yc, xc = np.argwhere(les).mean(0) + [s.start for s in bb]
        return {"id": label_id, "volume_mm3": round(vol, 1), "location": loc, "side": side,
                "breaches_cortex": touches and breach, "centre_ijk": [round(float(xc), 1), round(float(yc), 1),
                                                                       round(float(zc), 1)]}
    return None


def _add_metal(r, ct, femur, depth, reg, sp_zyx):
    """An intramedullary nail (~3000 HU) down one femoral shaft, with streak artefacts in its slices."""
    side = int(r.integers(1, 3))
    canal = (femur == side) & (reg == 4) & (depth > 4.0)
    if not canal.any():
        canal = (femur == side) & (depth > 4.0)
    zs = np.nonzero(canal.any(axis=(1, 2)))[0]
    ct = ct.copy()
    yy, xx = np.indices(ct.shape[1:], dtype=np.float32)
    angles = r.uniform(0, np.pi, 4)
    for z in zs:
        pts = np.argwhere(canal[z])
        cy, cx = pts.mean(0)
        dmm = np.hypot((yy - cy) * sp_zyx[1], (xx - cx) * sp_zyx[2])
        nail = dmm < 5.0
        ct[z][nail] = 3000.0
        streak = np.zeros_like(dmm)
        for k, a in enumerate(angles):
            dl = np.abs((xx - cx) * sp_zyx[2] * np.sin(a) - (yy - cy) * sp_zyx[1] * np.cos(a))
            streak += (1 if k % 2 else -1) * 400.0 * np.exp(-dl ** 2 / 4.0) * np.exp(-dmm / 80.0)
        ct[z] += np.where(nail, 0, streak)
    return ct


__all__ = ["PhantomCase", "make_case", "phantom_preset", "CENTRES", "REGIONS"]
