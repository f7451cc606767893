"""Preprocessing shared by training and inference: femur crops on the model grid.

One *crop* per femur (label 1 right, 2 left; any non-zero label if the map is binary): the femur's bounding
box grown by ``crop_margin_mm`` on the input grid → resampled to the model spacing → intensities standardised
(:mod:`bonemet.intensity`, parameters from the config). Memory stays bounded: only the crop is ever resampled
or converted to float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bonemet import intensity
from bonemet.dataset import Case, load_manifest
from bonemet.errors import InputError
from bonemet.io import Geometry, Volume, read_ct, read_mask
from bonemet.segmentation.config import spacing_zyx
from bonemet.segmentation.grid import bbox_slices, crop_geometry, resample_to_spacing


@dataclass
class Crop:
    """One femur crop. ``image`` (C, z, y, x) float32 on the model grid ``model_geometry``; ``slices`` index
    the input grid, whose sub-grid is ``input_geometry``."""

    label: int
    slices: tuple
    input_geometry: Geometry
    model_geometry: Geometry
    image: np.ndarray
    femur: np.ndarray            # (z, y, x) uint8 on the model grid
    lesion: np.ndarray | None = None  # (z, y, x) uint8 on the model grid
    meta: dict = field(default_factory=dict)


def femur_labels(femur: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(femur) if v != 0]


def make_crops(ct: Volume, femur: np.ndarray | None, cfg: dict, lesion: np.ndarray | None = None,
               split_femurs: bool = True) -> list[Crop]:
    """CT (HU) + femur label map (+ lesion) on the same grid → list of :class:`Crop` on the model grid.

    ``femur=None`` uses the whole volume as one crop (femur channel/restriction then cover everything).
    """
    geo = ct.geometry
    if femur is None:
        regions = [(0, tuple(slice(0, n) for n in ct.array.shape), None)]
    else:
        if femur.shape != ct.array.shape:
            raise InputError(f"femur mask shape {femur.shape} differs from CT shape {ct.array.shape}")
        labels = femur_labels(femur) if split_femurs else [1]
        margin = np.ceil(float(cfg.get("crop_margin_mm", 10.0)) / np.asarray(geo.spacing_zyx)).astype(int)
        regions = []
        for lab in labels:
            sel = (femur == lab) if split_femurs else (femur > 0)
            sl = bbox_slices(sel, margin)
            if sl is not None:
                regions.append((lab, sl, sel))
    crops = []
    for lab, sl, _ in regions:
        sub_geo = crop_geometry(geo, sl)
        ct_hu, mgeo = resample_to_spacing(np.ascontiguousarray(ct.array[sl], dtype=np.float32), sub_geo,
                                          cfg["spacing"], "linear", default_value=-1000.0)
        if femur is None:
            fem = np.ones(ct_hu.shape, np.uint8)
        else:
            fsel = (femur[sl] > 0).astype(np.float32)
            fem = (resample_to_spacing(fsel, sub_geo, cfg["spacing"], "linear")[0] >= 0.5).astype(np.uint8)
        les = None
        if lesion is not None:
            lsel = (lesion[sl] > 0).astype(np.float32)
            les = (resample_to_spacing(lsel, sub_geo, cfg["spacing"], "linear")[0] >= 0.5).astype(np.uint8)
        # the axis-aligned model grid of an oblique crop is larger than the femur box: cut it back to the
        # femur's box (+ margin) in patient axes, so the network sees the same context for any input direction
        if femur is not None:
            mmargin = np.ceil(float(cfg.get("crop_margin_mm", 10.0)) / np.asarray(spacing_zyx(cfg))).astype(int)
            msl = bbox_slices(fem, mmargin)
            if msl is not None and tuple(s.stop - s.start for s in msl) != fem.shape:
                mgeo = crop_geometry(mgeo, msl)
                ct_hu, fem = ct_hu[msl], fem[msl]
                les = les[msl] if les is not None else None
        img = intensity.standardise(ct_hu, cfg.get("intensity"))
        chans = [img]
        if cfg.get("femur_channel"):
            chans.append(fem.astype(np.float32))
        crops.append(Crop(lab, sl, sub_geo, mgeo, np.stack(chans).astype(np.float32), fem, les))
    return crops


def load_case_crops(case: Case, cfg: dict) -> list[Crop]:
    """Read one manifest case (CT, femur, lesion) and return its crops (lesion zeros for healthy cases)."""
    ct = read_ct(case.ct)
    femur = read_mask(case.femur, reference=ct, binary=False).array if case.femur is not None else None
    lesion = read_mask(case.lesion, reference=ct).array if case.lesion is not None else \
        np.zeros(ct.array.shape, np.uint8)
    crops = make_crops(ct, femur, cfg, lesion)
    for c in crops:
        c.meta = {"case": case.id, "dataset": str(case.root)}
    return crops


def load_dataset_cases(dataset_dirs, ids=None) -> list[Case]:
    """Cases of one or several dataset folders (optionally only ``ids``)."""
    if isinstance(dataset_dirs, (str, bytes)) or hasattr(dataset_dirs, "__fspath__"):
        dataset_dirs = [dataset_dirs]
    out = []
    for d in dataset_dirs:
        for c in load_manifest(d):
            if ids is None or c.id in ids:
                out.append(c)
    return out


def dataset_kind(dataset_dirs) -> str:
    """``synthetic`` when the cases carry synthesis/refinement provenance, else ``real`` (picks the lr decay)."""
    for c in load_dataset_cases(dataset_dirs):
        if any(k in c.record for k in ("lesion_id", "source_case", "healthy_case", "refined_from", "synthetic")):
            return "synthetic"
    return "real"
