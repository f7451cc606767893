"""Phantom cases for the module self-tests and the pytest suite (Qt-free).

:func:`phantomCase` uses the engine's realistic phantom generator when available (``bonemet.phantom``) and
otherwise a small parametric phantom: two bone cylinders (cortex 1200 HU, trabecular 250 HU) in fat with one
lytic lesion (40 HU) in the right femur.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .Engine import ensure_engine_importable

ensure_engine_importable()

from bonemet.io import Geometry  # noqa: E402


def parametricPhantom(shape=(40, 36, 48), spacing_zyx=(1.2, 1.0, 1.0), seed: int = 0):
    """Returns (geometry, ct int16, femur label map uint8 (1 right = smaller LPS x, 2 left), lesion uint8)."""
    z, y, x = np.indices(shape)
    g = Geometry(shape[::-1], spacing_zyx[::-1], (-24.0, -18.0, 0.0))
    ct = np.full(shape, -100, np.int16)
    femur = np.zeros(shape, np.uint8)
    cy = shape[1] // 2
    for label, cx in ((1, shape[2] // 4), (2, 3 * shape[2] // 4)):
        r2 = (y - cy) ** 2 + (x - cx) ** 2
        femur[r2 <= 49] = label
        ct[r2 <= 49] = 1200
        ct[r2 <= 25] = 250
    lesion = ((z - shape[0] // 2) ** 2 + (y - cy) ** 2 + (x - shape[2] // 4) ** 2 <= 9).astype(np.uint8)
    ct[lesion > 0] = 40
    ct = (ct + np.random.default_rng(seed).normal(0, 10, shape)).astype(np.int16)
    return g, ct, femur, lesion


def phantomCase(workDir, seed: int = 0):
    """A lesioned phantom case: (geometry, ct, femur, lesion, source) with source ``"bonemet.phantom"`` or
    ``"parametric"``. ``workDir`` receives the generated files when the engine's generator is used."""
    from bonemet import io as bio

    try:
        from bonemet.phantom import generate_cohort
    except ImportError:
        generate_cohort = None
    if generate_cohort is not None:
        root = Path(workDir) / "phantom"
        cases = generate_cohort(root, n=2, seed=seed, preset="small", healthy_fraction=0.0)
        case = next(c for c in cases if c.get("lesion"))
        ct = bio.read_ct(root / case["ct"])
        femur = bio.read_mask(root / case["femur"], reference=ct, binary=False)
        lesion = bio.read_mask(root / case["lesion"], reference=ct)
        return ct.geometry, ct.array, femur.array, lesion.array, "bonemet.phantom"
    return (*parametricPhantom(seed=seed), "parametric")


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else float("nan")
