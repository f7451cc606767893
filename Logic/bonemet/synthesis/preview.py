"""Preview montage: a few synthetic cases next to the library lesions they came from (PNG, for the demo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bonemet.atomic import atomic_path
from bonemet.errors import InputError
from bonemet.io import read_ct, read_mask
from bonemet.synthesis.library import Library, load_library

WINDOW = (-200.0, 1600.0)


def _centre_slice(mask: np.ndarray) -> int:
    idx = np.argwhere(mask > 0)
    if len(idx) == 0:
        return mask.shape[0] // 2
    zs, counts = np.unique(idx[:, 0], return_counts=True)
    return int(zs[np.argmax(counts)])


def _crop2d(img, mask, centre, half):
    y0, x0 = max(0, centre[0] - half), max(0, centre[1] - half)
    return img[y0:y0 + 2 * half, x0:x0 + 2 * half], mask[y0:y0 + 2 * half, x0:x0 + 2 * half]


def _source_slice(lib: Library, item, half_mm: float):
    """Axial slice of the source CT through the lesion centroid, with its lesion mask (None if unavailable)."""
    root = lib.info.get("source_dataset")
    ct_rel, les_rel = item.meta.get("source_ct"), item.meta.get("source_lesion")
    if not (root and ct_rel and les_rel and item.meta.get("centroid_lps")):
        return None
    try:
        ct = read_ct(Path(root) / ct_rel)
        les = read_mask(Path(root) / les_rel, reference=ct).array
    except Exception:  # noqa: BLE001 - the preview falls back to the patch
        return None
    ijk = np.round(ct.geometry.physical_to_index(item.meta["centroid_lps"])).astype(int)
    z = int(np.clip(ijk[2], 0, ct.array.shape[0] - 1))
    half = max(8, int(round(half_mm / ct.geometry.spacing[1])))
    return _crop2d(ct.array[z], les[z], (int(ijk[1]), int(ijk[0])), half)


def _show(ax, img, mask, title):
    ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="nearest")
    if mask.any() and mask.min() != mask.max():
        ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def save_preview_montage(synth_dir: str | os.PathLike, library: Library | str | os.PathLike, out_png: str | os.PathLike,
                         n: int = 4, half_mm: float = 20.0) -> Path:
    """Save a PNG with one row per synthetic case: the source lesion (axial slice of its library patch) and
    the synthetic case (axial slice through the inserted lesion, cropped around it), lesion contours in red.

    ``synth_dir``: a folder written by :func:`bonemet.synthesis.batch.synthesize`; ``n``: rows (first kept
    cases, at most one per lesion when possible).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    synth_dir = Path(synth_dir)
    lib = library if isinstance(library, Library) else load_library(library)
    mpath = synth_dir / "manifest.json"
    if not mpath.exists():
        raise InputError("no manifest.json (not a synthesis output folder)", synth_dir)
    rows = json.loads(mpath.read_text(encoding="utf-8"))
    if not rows:
        raise InputError("synthesis output has no kept case to preview", mpath)
    chosen, seen = [], set()
    for r in rows:  # prefer distinct lesions
        if r["lesion_id"] not in seen:
            chosen.append(r)
            seen.add(r["lesion_id"])
        if len(chosen) == n:
            break
    for r in rows:
        if len(chosen) >= n:
            break
        if r not in chosen:
            chosen.append(r)
    fig, axes = plt.subplots(len(chosen), 2, figsize=(5.0, 2.5 * len(chosen)), squeeze=False)
    for ax_row, r in zip(axes, chosen):
        item = lib.get(r["lesion_id"])
        src = _source_slice(lib, item, half_mm)
        if src is None:   # source volume not reachable: the library patch itself
            z = _centre_slice(item.mask)
            src = (item.patch[z], item.mask[z])
        _show(ax_row[0], src[0], src[1], f"source {item.id}\n{item.volume_mm3:.0f} mm³")
        ct = read_ct(synth_dir / r["ct"]).array
        les = read_mask(synth_dir / r["lesion"]).array
        zs = _centre_slice(les)
        idx = np.argwhere(les[zs] > 0)
        centre = idx.mean(axis=0).astype(int) if len(idx) else np.array(les.shape[1:]) // 2
        spacing_y = float(r.get("spacing", [1.0, 1.0, 1.0])[1])
        half = max(8, int(round(half_mm / spacing_y)))
        img, m = _crop2d(ct[zs], les[zs], centre, half)
        _show(ax_row[1], img, m, f"{r['id']}\n{r['lesion_volume_mm3']:.0f} mm³ in {r['healthy_case']}")
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png
