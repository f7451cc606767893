"""Small synthetic dataset folders for the synthesis tests: cylinder "femurs" with dark lesion blobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonemet.dataset import write_manifest
from bonemet.io import Geometry, write_volume


def femur_volume(shape=(40, 36, 36), spacing=1.0, radius_mm=10.0, seed=0, lesions=(), side=1):
    """CT (HU float32), femur label map (uint8) and lesion mask (uint8) of a vertical bone cylinder.

    ``lesions``: list of (centre zyx in voxels, radius mm) dark blobs inside the cylinder.
    """
    r = np.random.default_rng(seed)
    z, y, x = np.indices(shape).astype(float)
    cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
    dist = np.hypot((y - cy) * spacing, (x - cx) * spacing)
    femur = (dist <= radius_mm)
    femur[:2] = False
    femur[-2:] = False
    ct = np.where(femur, 300.0, 40.0) + r.normal(0, 15, shape)
    ct[femur & (dist > radius_mm - 2.0)] += 900.0               # cortex
    lesion = np.zeros(shape, bool)
    for (c, rad) in lesions:
        d = np.sqrt(((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)) * spacing
        lesion |= (d <= rad) & femur
    ct[lesion] = -20.0 + r.normal(0, 20, int(lesion.sum()))
    return ct.astype(np.float32), (femur * side).astype(np.uint8), lesion.astype(np.uint8)


def make_dataset(root, n_lesioned=2, n_healthy=2, shape=(40, 36, 36), spacing=1.0, seed=0):
    """Write a dataset folder; lesioned cases 'les00'.., healthy cases 'hea00'.. Returns the root Path."""
    root = Path(root)
    geo = Geometry.from_array(np.zeros(shape), (spacing,) * 3, origin=(-10.0, 5.0, 100.0))
    recs = []
    for i in range(n_lesioned):
        cz = shape[0] // 2 + (i % 2) * 4 - 2
        lesions = [((cz, shape[1] // 2, shape[2] // 2), 5.0 + i)]
        if i == 0:  # a second, tiny lesion (below 26 voxels) that the library must ignore
            lesions.append(((6, shape[1] // 2, shape[2] // 2 + 4), 1.0))
        ct, fem, les = femur_volume(shape, spacing, seed=seed + i, lesions=lesions, side=1 + i % 2)
        cid = f"les{i:02d}"
        write_volume(root / f"{cid}_ct.nii.gz", ct, geo)
        write_volume(root / f"{cid}_femur.nii.gz", fem, geo)
        write_volume(root / f"{cid}_lesion.nii.gz", les, geo)
        recs.append({"id": cid, "ct": f"{cid}_ct.nii.gz", "femur": f"{cid}_femur.nii.gz",
                     "lesion": f"{cid}_lesion.nii.gz"})
    for i in range(n_healthy):
        ct, fem, _ = femur_volume(shape, spacing, seed=seed + 100 + i, radius_mm=11.0 + i, side=1 + i % 2)
        cid = f"hea{i:02d}"
        write_volume(root / f"{cid}_ct.nii.gz", ct, geo)
        write_volume(root / f"{cid}_femur.nii.gz", fem, geo)
        recs.append({"id": cid, "ct": f"{cid}_ct.nii.gz", "femur": f"{cid}_femur.nii.gz", "lesion": None})
    write_manifest(root, recs)
    return root
