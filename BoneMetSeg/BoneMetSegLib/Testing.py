"""Phantom cases for the module self-tests and the pytest suite (Qt-free).

:func:`phantomCase` uses the engine's realistic phantom generator (``bonemet.phantom.make_case``, in memory) when
available and otherwise a small parametric phantom: two bone cylinders (cortex 1200 HU, trabecular 250 HU) in fat with one
lytic lesion (40 HU) in the right femur.
"""

from __future__ import annotations

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


def phantomCase(seed: int = 0):
    """A lesioned phantom case: (geometry, ct int16, femur label map, lesion, source) with source
    ``"bonemet.phantom"`` (the engine's realistic phantom, small preset) or ``"parametric"`` (fallback)."""
    try:
        from bonemet.phantom import make_case
    except ImportError:
        make_case = None
    if make_case is not None:
        c = make_case("selftest", seed=seed, preset="small", healthy=False)
        return c.geometry, c.ct, c.femur, c.lesion, "bonemet.phantom"
    return (*parametricPhantom(seed=seed), "parametric")


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else float("nan")
