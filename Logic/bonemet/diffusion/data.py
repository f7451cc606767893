"""Training data for the DDPM and the femur region shared by training and refinement.

* :func:`femur_region` — the femur's bounding box plus a margin (mm), grown to at least one patch; training
  patches are sampled in it and refinement only changes voxels in it.
* :func:`prepare_case` — crop a case to its region, standardise intensities, pad (edge) to at least one patch.
* :func:`coordinate_channels` — z/y/x coordinates normalised to [-1, 1] over the region (seed 002 conditioning).
* :class:`PatchSampler` — seeded random patches around/inside the femur: the patch of (step, rank, item) is a
  pure function of the seed, so training resumes exactly and DDP ranks draw different, reproducible patches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from bonemet import intensity
from bonemet.errors import InputError
from bonemet.seeding import rng

log = logging.getLogger("bonemet")


def femur_region(femur: np.ndarray | None, spacing_zyx, margin_mm: float, min_size_zyx,
                 shape=None) -> tuple[slice, slice, slice]:
    """Bounding box of ``femur > 0`` grown by ``margin_mm`` and to at least ``min_size_zyx`` voxels (centred),
    clipped to the volume. Whole volume when the femur map is missing or empty."""
    shape = tuple(femur.shape) if femur is not None else tuple(shape)
    if femur is None or not np.any(femur):
        return tuple(slice(0, s) for s in shape)  # type: ignore[return-value]
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(np.any(femur > 0, axis=other))
        m = int(np.ceil(margin_mm / float(spacing_zyx[ax])))
        lo, hi = max(0, idx[0] - m), min(shape[ax], idx[-1] + 1 + m)
        need = int(min_size_zyx[ax]) - (hi - lo)
        if need > 0:
            lo = max(0, lo - need // 2 - need % 2)
            hi = min(shape[ax], lo + int(min_size_zyx[ax]))
            lo = max(0, hi - int(min_size_zyx[ax]))
        out.append(slice(int(lo), int(hi)))
    return tuple(out)  # type: ignore[return-value]


def pad_widths(shape, min_size_zyx) -> list[tuple[int, int]]:
    """Padding (before, after) per axis to reach ``min_size_zyx`` (only when the volume itself is smaller)."""
    out = []
    for s, m in zip(shape, min_size_zyx):
        need = max(0, int(m) - int(s))
        out.append((need // 2, need - need // 2))
    return out


def coordinate_channels(shape, region_shape=None, offset=(0, 0, 0)) -> np.ndarray:
    """(3, Z, Y, X) float32: voxel index along z, y, x mapped so the region spans [-1, 1].

    ``shape`` is the array's shape; ``offset`` the region start inside it (negative = padding before the
    region); ``region_shape`` the region's size (default ``shape``)."""
    region_shape = shape if region_shape is None else region_shape
    chans = []
    for ax in range(3):
        n = int(region_shape[ax])
        i = np.arange(shape[ax], dtype=np.float32) - float(offset[ax])
        c = (2.0 * i / max(n - 1, 1) - 1.0).astype(np.float32)
        view = [1, 1, 1]
        view[ax] = shape[ax]
        chans.append(np.broadcast_to(c.reshape(view), shape))
    return np.stack(chans).astype(np.float32)


@dataclass
class PreparedCase:
    """A case cropped to its femur region, standardised and padded to at least one patch."""

    id: str
    image: np.ndarray          # (Z, Y, X) float32 standardised
    femur: np.ndarray          # (Z, Y, X) uint8 (>0 femur)
    lesion: np.ndarray         # (Z, Y, X) uint8
    region: tuple              # slices into the original volume
    pad: list                  # [(before, after)] * 3 applied after cropping
    coords: np.ndarray | None = None  # (3, Z, Y, X) when conditioning
    spacing_zyx: tuple = (1.0, 1.0, 1.0)

    @property
    def region_shape(self):
        return tuple(s.stop - s.start for s in self.region)


def prepare_arrays(case_id: str, ct_hu: np.ndarray, femur: np.ndarray | None, lesion: np.ndarray | None,
                   spacing_zyx, cfg: dict, with_coords: bool = False) -> PreparedCase:
    from bonemet.diffusion.config import patch_zyx

    patch = patch_zyx(cfg)
    region = femur_region(femur, spacing_zyx, float(cfg["data"].get("region_margin_mm", 10.0)), patch,
                          shape=ct_hu.shape)
    pad = pad_widths([s.stop - s.start for s in region], patch)
    img = intensity.standardise(ct_hu[region], cfg["data"].get("intensity"))
    fem = (np.zeros(img.shape, np.uint8) if femur is None else (femur[region] > 0).astype(np.uint8))
    les = (np.zeros(img.shape, np.uint8) if lesion is None else (lesion[region] > 0).astype(np.uint8))
    if any(p != (0, 0) for p in pad):
        img = np.pad(img, pad, mode="edge")
        fem = np.pad(fem, pad)
        les = np.pad(les, pad)
    coords = None
    if with_coords:
        coords = coordinate_channels(img.shape, [s.stop - s.start for s in region], [p[0] for p in pad])
    return PreparedCase(case_id, img, fem, les, region, pad, coords, tuple(float(v) for v in spacing_zyx))


def load_training_cases(dataset_dir, cfg: dict, conditioning: str = "none", max_cases: int | None = None
                        ) -> list[PreparedCase]:
    """Cases of a dataset folder used for training: healthy ones (``lesion`` null) for the paper model, every
    case (lesion masks as conditioning) for ``conditioning="mask"``."""
    from bonemet.dataset import load_manifest, manifest_path
    from bonemet.io import read_ct, read_mask

    cases = load_manifest(dataset_dir)
    use = cases if conditioning == "mask" else [c for c in cases if c.healthy]
    if not use:
        what = "cases" if conditioning == "mask" else "healthy cases (lesion null)"
        raise InputError(f"the dataset has no {what} to train the DDPM on", manifest_path(dataset_dir))
    if max_cases:
        use = use[: int(max_cases)]
    out = []
    for c in use:
        ct = read_ct(c.ct)
        fem = read_mask(c.femur, ct, binary=False).array if c.femur is not None else None
        if fem is None:
            log.warning("case %s has no femur label map: patches are drawn from the whole volume", c.id)
        les = read_mask(c.lesion, ct).array if (c.lesion is not None and conditioning == "mask") else None
        out.append(prepare_arrays(c.id, ct.array, fem, les, ct.spacing_zyx, cfg, with_coords=conditioning == "mask"))
    return out


class PatchSampler:
    """Seeded random patches of a list of :class:`PreparedCase`.

    ``sample(step, rank, i)`` returns (image (1, Z, Y, X), cond (C, Z, Y, X) or None): the case is chosen
    uniformly, the patch centre is a femur voxel with probability ``foreground_prob`` (a lesion voxel with
    probability ``lesion_prob`` when the case has a lesion and conditioning is on), otherwise any voxel of the
    region. The draw depends only on (seed, step, rank, i)."""

    def __init__(self, cases: list[PreparedCase], cfg: dict, seed: int, conditioning: str = "none"):
        from bonemet.diffusion.config import patch_zyx

        self.cases = cases
        self.patch = patch_zyx(cfg)
        self.seed = int(seed)
        self.cond = conditioning == "mask"
        self.fg_prob = float(cfg["data"].get("foreground_prob", 0.8))
        self.lesion_prob = float(cfg["data"].get("lesion_prob", 0.5))
        self._fg = [np.argwhere(c.femur > 0) for c in cases]
        self._les = [np.argwhere(c.lesion > 0) for c in cases]

    def sample(self, step: int, rank: int = 0, item: int = 0):
        g = rng(self.seed, "ddpm-patch", int(step), int(rank), int(item))
        k = int(g.integers(len(self.cases)))
        case = self.cases[k]
        shape = case.image.shape
        u = g.random()
        if self.cond and len(self._les[k]) and u < self.lesion_prob:
            centre = self._les[k][g.integers(len(self._les[k]))]
        elif len(self._fg[k]) and g.random() < self.fg_prob:
            centre = self._fg[k][g.integers(len(self._fg[k]))]
        else:
            centre = np.array([g.integers(s) for s in shape])
        start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, self.patch, shape)]
        sl = tuple(slice(a, a + p) for a, p in zip(start, self.patch))
        img = case.image[sl][None].astype(np.float32)
        cond = None
        if self.cond:
            cond = np.concatenate([case.lesion[sl][None].astype(np.float32), case.coords[(slice(None),) + sl]])
        return img, cond

    def batch(self, step: int, rank: int, batch_size: int):
        items = [self.sample(step, rank, i) for i in range(batch_size)]
        img = np.stack([a for a, _ in items])
        cond = np.stack([c for _, c in items]) if self.cond else None
        return img, cond
