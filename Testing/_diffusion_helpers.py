"""Tiny femur-like dataset folders for the diffusion tests (until/besides the phantom generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonemet.dataset import write_manifest
from bonemet.io import Geometry, write_volume


def femur_case(shape=(24, 40, 40), spacing_zyx=(2.0, 1.5, 1.5), seed=0, lesion=False):
    """(ct HU int16, femur label map, lesion mask or None): a bone tube (cortex ~1300 HU, marrow ~200 HU) in
    soft tissue inside air, with noise; optionally an osteolytic sphere (~30 HU) in the bone."""
    g = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    cy, cx = shape[1] / 2 + g.uniform(-2, 2), shape[2] / 2 + g.uniform(-2, 2)
    r = np.hypot((y - cy) * spacing_zyx[1], (x - cx) * spacing_zyx[2])
    r_body, r_bone, r_marrow = 25.0, 9.0 + g.uniform(-1, 1), 5.5
    ct = np.full(shape, -1000.0, np.float32)
    ct[r < r_body] = 40.0
    ct[r < r_bone] = 1300.0
    ct[r < r_marrow] = 200.0
    ct += g.normal(0, 20, shape).astype(np.float32)
    femur = (r < r_bone).astype(np.uint8)
    les = None
    if lesion:
        lz, ly, lx = shape[0] / 2, cy + 4.0 / spacing_zyx[1], cx
        d = np.sqrt(((z - lz) * spacing_zyx[0]) ** 2 + ((y - ly) * spacing_zyx[1]) ** 2 + ((x - lx) * spacing_zyx[2]) ** 2)
        les = ((d < 5.0) & (femur > 0)).astype(np.uint8)
        ct[les > 0] = 30.0 + g.normal(0, 20, int(les.sum()))
    return np.round(ct).astype(np.int16), femur, les


def make_dataset(root, n_healthy=2, n_lesion=0, shape=(24, 40, 40), spacing_zyx=(2.0, 1.5, 1.5), seed=0):
    root = Path(root)
    geo = Geometry.from_array(np.zeros(shape), spacing_zyx, origin=(-30.0, -30.0, 100.0))
    recs = []
    for i in range(n_healthy + n_lesion):
        les_flag = i >= n_healthy
        ct, fem, les = femur_case(shape, spacing_zyx, seed + i, lesion=les_flag)
        cid = f"c{i:03d}"
        write_volume(root / f"{cid}_ct.nii.gz", ct, geo)
        write_volume(root / f"{cid}_femur.nii.gz", fem, geo)
        rec = {"id": cid, "ct": f"{cid}_ct.nii.gz", "femur": f"{cid}_femur.nii.gz", "lesion": None}
        if les is not None:
            write_volume(root / f"{cid}_lesion.nii.gz", les, geo)
            rec["lesion"] = f"{cid}_lesion.nii.gz"
        recs.append(rec)
    write_manifest(root, recs, info={"kind": "test"})
    return root
