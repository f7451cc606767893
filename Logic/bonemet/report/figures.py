"""Figures for reports (matplotlib, Agg backend: headless, no display needed).

* :func:`slice_overlay`: axial + coronal CT slices through the centre of the masks, each mask as a contour;
* :func:`box_strip`: box plot with the individual values over it (one box per group);
* :func:`bar_summary`: mean ± std bars per group.

Every function returns a :class:`matplotlib.figure.Figure`; pass it to :meth:`bonemet.report.html.Report.figure`.
"""

from __future__ import annotations

import math

import numpy as np

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def _figure(figsize):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def mask_centre(masks, shape) -> tuple[int, int, int]:
    """Voxel (z, y, x) at the centre of mass of the union of ``masks`` (volume centre if all are empty)."""
    union = None
    for m in masks:
        if m is None:
            continue
        b = np.asarray(m) > 0
        union = b if union is None else (union | b)
    if union is None or not union.any():
        return tuple(int(s // 2) for s in shape)  # type: ignore[return-value]
    idx = np.nonzero(union)
    # Pick the slice of the centre of mass, then snap to the nearest slice that contains mask voxels.
    out = []
    for axis, coords in enumerate(idx):
        c = int(round(float(coords.mean())))
        present = np.unique(coords)
        out.append(int(present[np.argmin(np.abs(present - c))]))
    return tuple(out)  # type: ignore[return-value]


def slice_overlay(ct, masks: dict, spacing_zyx, centre=None, window=(-400.0, 1400.0), title: str | None = None,
                  views=("axial", "coronal"), crop_mm: float | None = 120.0, linewidth: float = 1.4):
    """CT slices through ``centre`` (default: centre of the masks) with each mask drawn as a contour.

    ``ct``: (z, y, x) HU array or None (grey background); ``masks``: {label: (z, y, x) binary array};
    ``spacing_zyx``: mm; ``window``: HU display range; ``crop_mm``: field of view around the centre
    (None = whole slice). Axial slices are shown in radiological convention for LPS data (patient's right on the
    left of the image, anterior up); coronal slices with superior up. Returns a matplotlib Figure.
    """
    masks = {str(k): (None if v is None else np.asarray(v)) for k, v in masks.items()}
    shape = tuple(np.asarray(ct).shape) if ct is not None else next(m.shape for m in masks.values() if m is not None)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    cz, cy, cx = centre if centre is not None else mask_centre(masks.values(), shape)
    fig = _figure((5.2 * len(views), 5.0))
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    for ax, view in zip(axes, views):
        if view == "axial":
            sl = (int(cz), slice(None), slice(None))
            extent = (-0.5 * sx, (shape[2] - 0.5) * sx, (shape[1] - 0.5) * sy, -0.5 * sy)
            centre_mm = (cx * sx, cy * sy)
            origin = "upper"
            label = f"axial z={int(cz)}"
        elif view == "coronal":
            sl = (slice(None), int(cy), slice(None))
            extent = (-0.5 * sx, (shape[2] - 0.5) * sx, -0.5 * sz, (shape[0] - 0.5) * sz)
            centre_mm = (cx * sx, cz * sz)
            origin = "lower"
            label = f"coronal y={int(cy)}"
        elif view == "sagittal":
            sl = (slice(None), slice(None), int(cx))
            extent = (-0.5 * sy, (shape[1] - 0.5) * sy, -0.5 * sz, (shape[0] - 0.5) * sz)
            centre_mm = (cy * sy, cz * sz)
            origin = "lower"
            label = f"sagittal x={int(cx)}"
        else:
            raise ValueError(f"unknown view {view!r}")
        if ct is not None:
            img = np.asarray(ct[sl], dtype=np.float32)
        else:
            img = np.zeros(tuple(s for s, k in zip(shape, sl) if isinstance(k, slice)), np.float32) + window[0]
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, origin=origin,
                  interpolation="nearest")
        handles = []
        for i, (name, m) in enumerate(masks.items()):
            colour = COLOURS[i % len(COLOURS)]
            from matplotlib.lines import Line2D

            handles.append(Line2D([0], [0], color=colour, lw=2, label=name))
            if m is None:
                continue
            ms = np.asarray(m[sl] > 0, dtype=np.float32)
            if ms.any() and ms.min() < 1:
                ax.contour(ms, levels=[0.5], colors=[colour], linewidths=linewidth, extent=extent, origin=origin)
        if crop_mm:
            h = crop_mm / 2
            x0, x1 = sorted(extent[:2])
            y0, y1 = sorted(extent[2:])
            ax.set_xlim(max(x0, centre_mm[0] - h), min(x1, centre_mm[0] + h))
            lo, hi = max(y0, centre_mm[1] - h), min(y1, centre_mm[1] + h)
            ax.set_ylim((hi, lo) if origin == "upper" else (lo, hi))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("mm")
        ax.set_aspect("equal")
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.7)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _clean(values) -> np.ndarray:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return np.asarray(vals, dtype=float)


def box_strip(groups: dict, ylabel: str = "", title: str | None = None, seed: int = 0, ylim=None,
              rotate_labels: bool | None = None):
    """Box plot per group with every value drawn as a jittered point over it.

    ``groups``: {name: list of numbers (None/NaN are left out and counted in the label as 'n/a')}.
    """
    names = list(groups)
    data = [_clean(groups[n]) for n in names]
    n_na = [len(list(groups[n])) - len(d) for n, d in zip(names, data)]
    fig = _figure((max(4.0, 1.3 * len(names) + 1.5), 4.2))
    ax = fig.subplots()
    positions = np.arange(1, len(names) + 1)
    non_empty = [i for i, d in enumerate(data) if len(d)]
    if non_empty:
        ax.boxplot([data[i] for i in non_empty], positions=positions[non_empty], widths=0.55, showfliers=False,
                   medianprops={"color": "#1d2330"}, boxprops={"color": "#2b5797"},
                   whiskerprops={"color": "#2b5797"}, capprops={"color": "#2b5797"})
    rng = np.random.default_rng(seed)
    for i, d in enumerate(data):
        if len(d):
            x = positions[i] + rng.uniform(-0.17, 0.17, size=len(d))
            ax.scatter(x, d, s=14, alpha=0.65, color=COLOURS[i % len(COLOURS)], edgecolors="none", zorder=3)
    labels = [f"{n}\n(n={len(d)}" + (f", {k} n/a)" if k else ")") for n, d, k in zip(names, data, n_na)]
    ax.set_xticks(positions)
    rot = rotate_labels if rotate_labels is not None else len(names) > 4
    ax.set_xticklabels(labels, fontsize=8, rotation=30 if rot else 0, ha="right" if rot else "center")
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def bar_summary(groups: dict, ylabel: str = "", title: str | None = None):
    """Mean ± std bars per group (None/NaN left out)."""
    names = list(groups)
    data = [_clean(groups[n]) for n in names]
    means = [d.mean() if len(d) else 0.0 for d in data]
    stds = [d.std(ddof=1) if len(d) > 1 else 0.0 for d in data]
    fig = _figure((max(4.0, 1.2 * len(names) + 1.5), 3.8))
    ax = fig.subplots()
    ax.bar(range(len(names)), means, yerr=stds, color=[COLOURS[i % len(COLOURS)] for i in range(len(names))],
           alpha=0.8, capsize=4)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8, rotation=30 if len(names) > 4 else 0)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=11)
    return fig
