"""Lesion library: the real lesions that ad-hoc synthesis transplants into healthy femurs.

A library is a folder::

    LIBRARY/index.json          format, spacing, provenance, one entry per item
    LIBRARY/items/<id>.npz      patch (float32 HU, z/y/x), mask (uint8 0/1), same shape

Each item is one connected lesion (>= ``min_voxels`` voxels on the working grid, default 26 voxels at
0.85 mm = 16 mm³) cut from a (CT, lesion mask) pair after resampling to the working spacing, with a small
margin of its surroundings. Metadata: source case, voxels, volume (mm³), bounding box on the resampled grid,
centroid (LPS mm), location in the femur (side and an estimated region), spacing.

:func:`extract_items` works on arrays; :func:`extract_library` on a dataset folder; :func:`load_library`
reads and validates a library folder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from bonemet.atomic import atomic_path, write_json
from bonemet.dataset import load_manifest, provenance
from bonemet.errors import InputError
from bonemet.io import Geometry, Volume, read_ct, read_mask
from bonemet.progress import progress
from bonemet.synthesis._resample import resample

log = logging.getLogger("bonemet")

INDEX = "index.json"
FORMAT = "bonemet-lesion-library"
FORMAT_VERSION = 1
DEFAULT_SPACING = 0.85
DEFAULT_MIN_VOXELS = 26
MARGIN_VOX = 3
CROP_MARGIN_MM = 12.0
# 26-connectivity: one lesion = one 3D connected component
STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class LesionItem:
    """One library lesion. ``patch``: HU (z, y, x) float32; ``mask``: uint8 same shape; ``spacing``: x/y/z mm."""

    id: str
    source_case: str
    patch: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    meta: dict = field(default_factory=dict)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(self.spacing[::-1])  # type: ignore[return-value]

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def volume_mm3(self) -> float:
        return float(self.voxels * np.prod(self.spacing))


@dataclass
class Library:
    """A validated lesion library (items in index order)."""

    root: Path
    items: list[LesionItem]
    info: dict

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def get(self, item_id: str) -> LesionItem:
        for it in self.items:
            if it.id == item_id:
                return it
        raise InputError(f"no lesion {item_id!r} in the library (has: {', '.join(self.ids()[:20])}"
                         f"{'...' if len(self.items) > 20 else ''})", self.root)

    def sources(self) -> list[str]:
        return sorted({it.source_case for it in self.items})

    def without_sources(self, sources) -> "Library":
        """The library minus the lesions whose source case is in ``sources`` (leakage control)."""
        excl = {str(s) for s in sources}
        return Library(self.root, [it for it in self.items if it.source_case not in excl], self.info)


# --------------------------------------------------------------------------------------------- extraction
def _region(distance_from_top_mm: float) -> str:
    """Rough region of a proximal femur from the distance below its top (heuristic, for browsing only)."""
    if distance_from_top_mm < 40.0:
        return "head"
    if distance_from_top_mm < 65.0:
        return "neck"
    if distance_from_top_mm < 110.0:
        return "trochanter"
    return "shaft"


def femur_tops(femur: np.ndarray, geometry: Geometry) -> dict[int, float]:
    """Superior-most physical z (LPS, +z superior) of each femur label."""
    tops = {}
    for lab in (1, 2):
        zz = np.nonzero(np.any(femur == lab, axis=(1, 2)))[0]
        if zz.size:
            tops[lab] = float(max(geometry.index_to_physical((0, 0, int(z)))[2] for z in (zz.min(), zz.max())))
    return tops


def _location(comp_mask_full: np.ndarray, centroid_zyx, femur: np.ndarray | None, geometry: Geometry,
              tops: dict | None = None) -> dict:
    loc: dict = {"side": None, "femur_label": None, "distance_from_femur_top_mm": None, "region_estimate": None}
    if femur is None:
        return loc
    labels = femur[comp_mask_full > 0]
    labels = labels[labels > 0]
    if labels.size == 0:
        return loc
    lab = int(np.bincount(labels.astype(np.int64)).argmax())
    loc["femur_label"] = lab
    loc["side"] = {1: "right", 2: "left"}.get(lab)
    top = (tops if tops is not None else femur_tops(femur, geometry)).get(lab)
    if top is not None:
        cz = geometry.index_to_physical(np.asarray(centroid_zyx, float)[::-1])[2]
        d = float(top - cz)
        loc["distance_from_femur_top_mm"] = round(d, 2)
        loc["region_estimate"] = _region(d)
    return loc


def extract_items(ct: np.ndarray, lesion: np.ndarray, geometry: Geometry, source_case: str,
                  femur: np.ndarray | None = None, min_voxels: int = DEFAULT_MIN_VOXELS,
                  margin_vox: int = MARGIN_VOX, tops: dict | None = None) -> list[LesionItem]:
    """Cut every connected lesion of ``lesion`` with >= ``min_voxels`` voxels out of ``ct``.

    ``ct`` float HU (z, y, x), ``lesion`` binary same shape, ``geometry`` their grid (already at the working
    spacing), ``femur`` optional label map (for the location metadata; ``tops``: superior-most z of each
    femur label, when ``femur`` is a crop, see :func:`femur_tops`). Returns items named
    ``<source_case>_L<nn>`` in scan order.
    """
    if ct.shape != lesion.shape or (femur is not None and femur.shape != ct.shape):
        raise InputError(f"case {source_case}: CT {ct.shape} and mask shapes "
                         f"{lesion.shape}{'' if femur is None else ', ' + str(femur.shape)} differ")
    labels, n = ndimage.label(lesion > 0, structure=STRUCTURE)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    objects = ndimage.find_objects(labels)
    items = []
    vox_mm3 = geometry.voxel_volume
    k = 0
    for lab in range(1, n + 1):
        if sizes[lab] < min_voxels:
            continue
        sl = objects[lab - 1]
        big = tuple(slice(max(0, s.start - margin_vox), min(dim, s.stop + margin_vox))
                    for s, dim in zip(sl, ct.shape))
        comp = (labels[big] == lab)
        patch = np.ascontiguousarray(ct[big], dtype=np.float32)
        mask = comp.astype(np.uint8)
        centroid_local = np.argwhere(comp).mean(axis=0)
        centroid = centroid_local + np.array([s.start for s in big])
        full = np.zeros(ct.shape, dtype=bool) if femur is not None else None
        if full is not None:
            full[big] = comp
        k += 1
        touches = [s.start == 0 or s.stop == dim for s, dim in zip(sl, ct.shape)]
        meta = {
            "voxels": int(sizes[lab]),
            "volume_mm3": round(float(sizes[lab] * vox_mm3), 4),
            "bbox_zyx": [[int(s.start), int(s.stop)] for s in sl],
            "patch_bbox_zyx": [[int(s.start), int(s.stop)] for s in big],
            "extent_mm_zyx": [round((s.stop - s.start) * sp, 3) for s, sp in zip(sl, geometry.spacing_zyx)],
            "centroid_lps": [round(float(v), 3) for v in geometry.index_to_physical(centroid[::-1])],
            "touches_volume_border": any(touches),
            "location": _location(full, centroid, femur, geometry, tops) if femur is not None else
            _location(np.zeros(0), centroid, None, geometry),
        }
        items.append(LesionItem(f"{source_case}_L{k:02d}", str(source_case), patch, mask,
                                tuple(float(s) for s in geometry.spacing), meta))  # type: ignore[arg-type]
    return items


def _match_recorded_lesions(items: list[LesionItem], recorded, geometry: Geometry, max_mm: float = 15.0) -> None:
    """When the manifest lists the case's lesions with a ``centre_ijk`` and ``location`` (as ``bonemet phantom``
    writes), copy the nearest one's location/id into the item's metadata."""
    if not isinstance(recorded, list):
        return
    for it in items:
        best, best_d = None, max_mm
        for rec in recorded:
            if not isinstance(rec, dict) or rec.get("centre_ijk") is None:
                continue
            try:
                p = geometry.index_to_physical(rec["centre_ijk"])
            except (TypeError, ValueError):
                continue
            d = float(np.linalg.norm(np.asarray(p) - np.asarray(it.meta["centroid_lps"])))
            if d < best_d:
                best, best_d = rec, d
        if best is not None:
            loc = it.meta["location"]
            loc["region"] = best.get("location")
            loc["recorded_lesion_id"] = best.get("id")
            if best.get("side") and not loc.get("side"):
                loc["side"] = best["side"]


def _lesion_box(mask: np.ndarray, geometry: Geometry, margin_mm: float) -> tuple:
    sl = ndimage.find_objects((mask > 0).astype(np.uint8))[0]
    m = [int(np.ceil(margin_mm / sp)) + 1 for sp in geometry.spacing_zyx]
    return tuple(slice(max(0, s.start - k), min(n, s.stop + k)) for s, k, n in zip(sl, m, mask.shape))


def _crop(vol: Volume, box: tuple) -> Volume:
    g = vol.geometry
    start_xyz = [box[2].start, box[1].start, box[0].start]
    arr = np.ascontiguousarray(vol.array[box])
    geo = Geometry(tuple(int(n) for n in arr.shape[::-1]), g.spacing,
                   tuple(float(v) for v in g.index_to_physical(start_xyz)), g.direction)
    return Volume(arr, geo, vol.path)


def _save_item(path: Path, item: LesionItem) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, patch=item.patch.astype(np.float32), mask=item.mask.astype(np.uint8))


def extract_library(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, spacing: float | None = DEFAULT_SPACING,
                    min_voxels: int = DEFAULT_MIN_VOXELS, margin_vox: int = MARGIN_VOX) -> Path:
    """Build a lesion library from the lesioned cases of a dataset folder; returns ``out_dir``.

    Every case with a lesion mask is resampled to ``spacing`` mm (isotropic; ``None`` keeps each case's own
    grid), and each connected lesion of >= ``min_voxels`` voxels becomes an item. Raises
    :class:`InputError` on bad inputs (mask grid differing from its CT, non-binary mask...) or when no lesion
    qualifies.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if min_voxels < 1:
        raise InputError(f"--min-voxels must be >= 1 (got {min_voxels})")
    if spacing is not None and float(spacing) <= 0:
        raise InputError(f"--spacing must be > 0 (got {spacing})")
    cases = [c for c in load_manifest(dataset_dir) if not c.healthy]
    if not cases:
        raise InputError("dataset has no case with a lesion mask (nothing to extract)", dataset_dir / "manifest.json")
    items_dir = out_dir / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    n_small = 0
    for case in progress(cases, desc="extract lesions", unit="case"):
        ct = read_ct(case.ct)
        read_geo = ct.geometry
        les = read_mask(case.lesion, reference=ct, binary=True)
        fem = read_mask(case.femur, reference=ct, binary=False) if case.femur is not None else None
        if not les.array.any():
            log.warning("case %s: lesion mask %s is empty, skipped", case.id, case.lesion)
            continue
        items, n_low = extract_from_volumes(ct, les, case.id, fem, spacing, min_voxels, margin_vox)
        n_small += n_low
        _match_recorded_lesions(items, case.get("lesions"), read_geo)
        for it in items:
            rel = f"items/{it.id}.npz"
            _save_item(out_dir / rel, it)
            entries.append({"id": it.id, "file": rel, "source_case": it.source_case,
                            "spacing": list(it.spacing), "shape_zyx": list(it.patch.shape), **it.meta,
                            "source_ct": str(case.record["ct"]), "source_lesion": str(case.record["lesion"])})
    if not entries:
        raise InputError(f"no lesion of >= {min_voxels} voxels found in {len(cases)} lesioned case(s) "
                         "(empty library)", dataset_dir)
    info = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "spacing": None if spacing is None else [float(spacing)] * 3,
            "min_voxels": int(min_voxels), "margin_vox": int(margin_vox),
            "source_dataset": str(dataset_dir.resolve()), "n_items": len(entries),
            "n_below_min_voxels": int(n_small), "provenance": provenance(), "items": entries}
    write_json(out_dir / INDEX, info)
    log.info("lesion library %s: %d lesions from %d cases (%d components below %d voxels ignored)",
             out_dir, len(entries), len({e['source_case'] for e in entries}), n_small, min_voxels)
    return out_dir


def extract_from_volumes(ct: Volume, lesion: Volume, source_case: str, femur: Volume | None = None,
                         spacing: float | None = DEFAULT_SPACING, min_voxels: int = DEFAULT_MIN_VOXELS,
                         margin_vox: int = MARGIN_VOX) -> tuple[list[LesionItem], int]:
    """Library items from one (CT, lesion mask[, femur label map]) triple on the same grid, resampled to
    ``spacing`` mm (``None``: as is). Returns ``(items, number of lesions below min_voxels)``. This is what
    the Slicer module calls to extract lesions from the current volume and lesion segment."""
    if not lesion.geometry.same_grid(ct.geometry) or (femur is not None and not femur.geometry.same_grid(ct.geometry)):
        raise InputError(f"case {source_case}: the masks are not on the CT grid", lesion.path)
    tops = femur_tops(femur.array, femur.geometry) if femur is not None else None
    if not np.any(lesion.array):
        return [], 0
    if spacing is not None:
        # only the lesions' neighbourhood is resampled (fast on whole scans)
        box = _lesion_box(lesion.array, lesion.geometry, CROP_MARGIN_MM)
        ct, lesion = _crop(ct, box), _crop(lesion, box)
        femur = None if femur is None else _crop(femur, box)
        ct = resample(ct, spacing, "linear", default_value=-1000.0)
        lesion = resample(lesion, spacing, "nearest")   # nearest keeps the lesion volumes (linear+0.5 shrinks them)
        if femur is not None:
            femur = resample(femur, spacing, "nearest")
    n_all = int(ndimage.label(lesion.array > 0, structure=STRUCTURE)[1])
    items = extract_items(ct.array, lesion.array, ct.geometry, source_case,
                          None if femur is None else femur.array, min_voxels, margin_vox, tops)
    return items, n_all - len(items)


def save_library(items: list[LesionItem], out_dir: str | os.PathLike, append: bool = False,
                 info: dict | None = None) -> Path:
    """Write ``items`` as a library folder (``append``: add to / replace same-id items of an existing one)."""
    out_dir = Path(out_dir)
    entries: list[dict] = []
    base: dict = {}
    if append and (out_dir / INDEX).exists():
        old = load_library(out_dir)
        base = dict(old.info)
        new_ids = {it.id for it in items}
        entries = [e for e in json.loads((out_dir / INDEX).read_text(encoding="utf-8"))["items"]
                   if e["id"] not in new_ids]
    for it in items:
        rel = f"items/{it.id}.npz"
        _save_item(out_dir / rel, it)
        entries.append({"id": it.id, "file": rel, "source_case": it.source_case, "spacing": list(it.spacing),
                        "shape_zyx": list(it.patch.shape), **it.meta})
    if not entries:
        raise InputError("no lesion to save (empty library)", out_dir)
    spacings = {tuple(e["spacing"]) for e in entries}
    index = {**base, "format": FORMAT, "format_version": FORMAT_VERSION,
             "spacing": list(spacings.pop()) if len(spacings) == 1 else None, **(info or {}),
             "n_items": len(entries), "provenance": provenance(), "items": entries}
    write_json(out_dir / INDEX, index)
    return out_dir


# ------------------------------------------------------------------------------------------------ loading
def load_library(root: str | os.PathLike) -> Library:
    """Read and validate a library folder (index present and well formed, items present and consistent)."""
    root = Path(root)
    index = root / INDEX
    if not root.exists():
        raise InputError("lesion library folder not found", root)
    if not index.exists():
        raise InputError(f"not a lesion library: no {INDEX} (make one with 'bonemet lesions extract')", root)
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON: {exc}", index) from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("items"), list):
        raise InputError(f"not a lesion library index (expected format {FORMAT!r} with an 'items' list)", index)
    if not info["items"]:
        raise InputError("lesion library is empty (no items)", index)
    items, seen = [], set()
    for i, e in enumerate(info["items"]):
        if not isinstance(e, dict) or not all(k in e for k in ("id", "file", "source_case", "spacing")):
            raise InputError(f"item #{i} lacks id/file/source_case/spacing", index)
        if e["id"] in seen:
            raise InputError(f"duplicate item id {e['id']!r}", index)
        seen.add(e["id"])
        path = root / e["file"]
        if not path.exists():
            raise InputError(f"item {e['id']}: file {e['file']} is missing", index)
        try:
            with np.load(path, allow_pickle=False) as z:
                patch = np.asarray(z["patch"], dtype=np.float32)
                mask = np.asarray(z["mask"]).astype(np.uint8)
        except Exception as exc:  # noqa: BLE001 - any unreadable item is a user-facing error
            raise InputError(f"cannot read lesion item (corrupt file?): {exc}", path) from exc
        if patch.ndim != 3 or patch.shape != mask.shape:
            raise InputError(f"patch {patch.shape} and mask {mask.shape} must be 3D and of the same shape", path)
        if not mask.any():
            raise InputError("lesion mask of this item is empty", path)
        if not np.isfinite(patch).all():
            raise InputError("patch has non-finite values", path)
        spacing = tuple(float(s) for s in e["spacing"])
        if len(spacing) != 3 or min(spacing) <= 0:
            raise InputError(f"item {e['id']}: invalid spacing {e['spacing']}", index)
        meta = {k: v for k, v in e.items() if k not in ("id", "file", "source_case", "spacing")}
        items.append(LesionItem(str(e["id"]), str(e["source_case"]), patch, mask, spacing, meta))  # type: ignore
    return Library(root, items, {k: v for k, v in info.items() if k != "items"})


def library_from_items(items: list[LesionItem], root: str | os.PathLike = "<memory>") -> Library:
    """An in-memory library (tests, interactive use)."""
    if not items:
        raise InputError("lesion library is empty (no items)")
    return Library(Path(root), list(items), {"format": FORMAT})


def volume_item(ct: Volume, lesion: Volume, source_case: str = "case", index: int = 0,
                min_voxels: int = 1) -> LesionItem:
    """Convenience: the ``index``-th connected lesion of ``lesion`` as an item (no resampling)."""
    items = extract_items(ct.array, lesion.array, ct.geometry, source_case, None, min_voxels)
    if index >= len(items):
        raise InputError(f"lesion mask has {len(items)} lesion(s) of >= {min_voxels} voxels", lesion.path)
    return items[index]
