"""Intensity standardisation of CT: clip a HU window and map it linearly onto [-1, 1].

The parameters are a small JSON-able dict recorded with every model and dataset, so the mapping can be
inverted (:func:`destandardise`) and re-applied identically at inference.
"""

from __future__ import annotations

import numpy as np

DEFAULT_WINDOW = (-1000.0, 2000.0)


def params(window=DEFAULT_WINDOW) -> dict:
    """Standardisation parameters for a HU window ``(low, high)``."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"invalid HU window {window}: high must exceed low")
    return {"method": "window", "window": [lo, hi]}


def standardise(ct_hu: np.ndarray, p: dict | None = None) -> np.ndarray:
    """HU array (any shape) → float32 in [-1, 1]: clip to ``p['window']`` then scale linearly."""
    lo, hi = (p or params())["window"]
    out = np.clip(np.asarray(ct_hu, dtype=np.float32), lo, hi)
    out -= (hi + lo) / 2.0
    out *= 2.0 / (hi - lo)
    return out


def destandardise(x: np.ndarray, p: dict | None = None) -> np.ndarray:
    """Inverse of :func:`standardise` (exact inside the window; values outside it come back clipped)."""
    lo, hi = (p or params())["window"]
    return (np.asarray(x, dtype=np.float32) * ((hi - lo) / 2.0) + (hi + lo) / 2.0).astype(np.float32)
