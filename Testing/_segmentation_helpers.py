"""Small phantom-like CT cases for the segmentation tests (until/besides bonemet.phantom).

A femur = a cylinder along z (cortex ~1200 HU, marrow ~250 HU) in soft tissue (40 HU) surrounded by air,
a lytic lesion = a sphere of ~20 HU inside the bone. Everything in physical mm, so grids of any spacing /
direction describe the same anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonemet.dataset import write_manifest
from bonemet.io import Geometry, write_mask, write_volume


def phantom_arrays(geometry: Geometry, lesion_centre_mm=(0.0, 4.0, 0.0), lesion_radius_mm=7.0, seed=0,
                   femur_x_mm=(0.0,), noise_hu=15.0, femur_half_length_mm=26.0):
    """CT (float32 HU), femur labels (uint8), lesion (uint8) on ``geometry``; physical coords centred on the
    grid centre. ``femur_x_mm``: x positions of femurs (label 1 for the first, 2 for the second)."""
    shape = geometry.shape
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    idx = np.stack([xx.ravel(), yy.ravel(), zz.ravel()])
    centre_idx = (np.asarray(geometry.size, float) - 1) / 2
    D = geometry.direction_matrix
    pts = (D @ ((idx - centre_idx[:, None]) * np.asarray(geometry.spacing)[:, None])).astype(np.float32)
    px, py, pz = (p.reshape(shape) for p in pts)
    r_body = np.sqrt((px / 1.6) ** 2 + py ** 2)
    ct = np.where(r_body < 28, 40.0, -1000.0).astype(np.float32)
    femur = np.zeros(shape, np.uint8)
    lesion = np.zeros(shape, np.uint8)
    for i, fx in enumerate(femur_x_mm):
        r = np.sqrt((px - fx) ** 2 + py ** 2)
        inside = np.abs(pz) < femur_half_length_mm
        bone = (r < 11.0) & inside
        ct[bone] = 1200.0
        ct[(r < 8.0) & (np.abs(pz) < femur_half_length_mm - 3.0)] = 250.0
        femur[bone] = i + 1
    c = np.asarray(lesion_centre_mm, np.float32)
    les = ((px - c[0]) ** 2 + (py - c[1]) ** 2 + (pz - c[2]) ** 2) < lesion_radius_mm ** 2
    les &= femur > 0
    ct[les] = 20.0
    lesion[les] = 1
    ct += np.random.default_rng(seed).normal(0, noise_hu, shape).astype(np.float32)
    return ct, femur, lesion


def write_case(root: Path, cid: str, geometry: Geometry, **kw) -> dict:
    ct, femur, lesion = phantom_arrays(geometry, **kw)
    root = Path(root)
    write_volume(root / f"{cid}_ct.nii.gz", ct, geometry)
    write_mask(root / f"{cid}_femur.nii.gz", femur, geometry)
    healthy = not lesion.any()
    if not healthy:
        write_mask(root / f"{cid}_lesion.nii.gz", lesion, geometry)
    return {"id": cid, "ct": f"{cid}_ct.nii.gz", "femur": f"{cid}_femur.nii.gz",
            "lesion": None if healthy else f"{cid}_lesion.nii.gz", "patient": cid.split("_")[0]}


def make_dataset(root: Path, n=2, size=(40, 40, 36), spacing=(2.0, 2.0, 2.0), seed=0, healthy=0,
                 extra=None) -> Path:
    """Dataset folder of ``n`` lesioned cases (+ ``healthy``) with lesions at varying places."""
    root = Path(root)
    recs = []
    g = np.random.default_rng(seed)
    for i in range(n + healthy):
        geo = Geometry(tuple(size), tuple(spacing))
        if i < n:
            ang = g.uniform(0, 2 * np.pi)
            centre = (6.0 * np.cos(ang), 6.0 * np.sin(ang), g.uniform(-6, 6))
            rad = g.uniform(5.5, 8.0)
        else:
            centre, rad = (0.0, 0.0, 1000.0), 1.0
        rec = write_case(root, f"c{i:02d}", geo, lesion_centre_mm=centre, lesion_radius_mm=rad, seed=seed + i)
        rec["phantom"] = {"lesion_centre_mm": [float(v) for v in centre], "lesion_radius_mm": float(rad)}
        rec.update((extra or {}).get(rec["id"], {}))
        recs.append(rec)
    write_manifest(root, recs, {"kind": "test"})
    return root


def train_small(out: Path, dataset: Path, epochs: int = 50, **kw) -> dict:
    from bonemet.segmentation.train import train_unet

    return train_unet([dataset], out, preset="small", epochs=epochs, seed=0, device="cpu",
                      overrides={"patience": 1000, **kw.pop("overrides", {})}, **kw)


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


_CACHE: dict = {}


def overfit_package(tmp_root: Path) -> tuple[Path, Path, dict]:
    """Session-wide: a tiny U-Net trained to overfit one phantom-like case → (package, dataset, summary)."""
    if "pkg" not in _CACHE:
        ds = make_dataset(Path(tmp_root) / "one_case", n=1, seed=0)
        pkg = Path(tmp_root) / "overfit_pkg"
        summary = train_small(pkg, ds, epochs=50)
        _CACHE["pkg"] = (pkg, ds, summary)
    return _CACHE["pkg"]
