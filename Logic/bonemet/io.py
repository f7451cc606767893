"""Volume I/O with validation.

Reads CT volumes and masks from NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.seg.nrrd``), MetaImage
(``.mha``, ``.mhd``) and DICOM series folders; writes NIfTI, NRRD and MetaImage (atomically: a killed job
never leaves a half-written file).

Conventions used by the whole engine:

* arrays are numpy arrays in **(z, y, x)** order (``SimpleITK.GetArrayFromImage``);
* :class:`Geometry` keeps SimpleITK's physical description: ``spacing`` and ``origin`` in (x, y, z) order,
  LPS coordinates, ``direction`` a row-major 3x3 matrix as a 9-tuple;
* functions that need no file system take an array and ``spacing_zyx`` (mm, array-axis order);
  :attr:`Geometry.spacing_zyx` gives it.

Every error names the file and the problem (:class:`bonemet.errors.InputError`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bonemet.atomic import atomic_path
from bonemet.errors import InputError

READ_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")
# Physical coordinates are compared with this tolerance (mm, or unit-less for directions).
GRID_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Physical grid of a 3D image (SimpleITK conventions, x/y/z order, LPS)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @classmethod
    def from_array(cls, array: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                   direction=None) -> "Geometry":
        return cls(tuple(int(s) for s in array.shape[::-1]), tuple(float(s) for s in spacing_zyx[::-1]),
                   tuple(float(o) for o in origin),
                   tuple(float(d) for d in (direction if direction is not None else np.eye(3).ravel())))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        return tuple(self.size[::-1])  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(self.spacing[::-1])  # type: ignore[return-value]

    @property
    def voxel_volume(self) -> float:
        """mm³ per voxel."""
        return float(np.prod(self.spacing))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self, ijk) -> np.ndarray:
        """Continuous index (x, y, z order, like SimpleITK) → LPS point in mm."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin) + self.direction_matrix @ (ijk * np.asarray(self.spacing))

    def physical_to_index(self, point) -> np.ndarray:
        """LPS point in mm → continuous index (x, y, z order)."""
        rel = np.asarray(point, dtype=float) - np.asarray(self.origin)
        return np.linalg.solve(self.direction_matrix, rel) / np.asarray(self.spacing)

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def same_grid(self, other: "Geometry", tol: float = GRID_TOLERANCE) -> bool:
        return not grid_differences(self, other, tol)

    def to_json(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_json(cls, d: dict) -> "Geometry":
        return cls(tuple(d["size"]), tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))


def grid_differences(a: Geometry, b: Geometry, tol: float = GRID_TOLERANCE) -> list[str]:
    """Human-readable list of what differs between two grids (empty when they match)."""
    out = []
    if tuple(a.size) != tuple(b.size):
        out.append(f"size {a.size} vs {b.size}")
    if not np.allclose(a.spacing, b.spacing, atol=tol, rtol=0):
        out.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)}")
    if not np.allclose(a.origin, b.origin, atol=max(tol, 1e-3), rtol=0):
        out.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)}")
    if not np.allclose(a.direction, b.direction, atol=tol, rtol=0):
        out.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return out


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


@dataclass
class Volume:
    """A 3D array (z, y, x) with its physical grid and (optionally) the file it came from."""

    array: np.ndarray
    geometry: Geometry
    path: str | None = None

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx

    def to_image(self) -> sitk.Image:
        return to_image(self.array, self.geometry)


def to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """numpy (z, y, x) + geometry → SimpleITK image."""
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))


def _has_ext(path: Path, exts) -> bool:
    name = path.name.lower()
    return any(name.endswith(e) for e in exts)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D image (file or DICOM series folder) as SimpleITK, validated (exists, readable, 3D, no NaN)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        image = _read_dicom_dir(path)
    else:
        if not _has_ext(path, READ_EXTENSIONS) and not _looks_like_dicom(path):
            raise InputError(f"unsupported file type (expected one of {', '.join(READ_EXTENSIONS)} "
                             "or a DICOM series folder)", path)
        if path.stat().st_size == 0:
            raise InputError("file is empty", path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(f"cannot read image (corrupt or truncated file?): {_first_line(exc)}", path) from exc
        if path.name.lower().endswith((".nii.gz", ".nii")):
            _check_nifti_complete(path, image)
    return _validate_image(image, path)


def _check_nifti_complete(path: Path, image: sitk.Image) -> None:
    """ITK reads a truncated .nii / .nii.gz without complaint (missing voxels become 0): compare the file size
    (for .gz: the gzip trailer's uncompressed size) with the size the header announces."""
    import gzip
    import struct

    try:
        compressed = path.name.lower().endswith(".gz")
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            head = f.read(352)
        sizeof_hdr = struct.unpack("<i", head[:4])[0]
        endian = "<" if sizeof_hdr in (348, 540) else ">"
        if struct.unpack(endian + "i", head[:4])[0] == 540:  # NIfTI-2
            vox_offset = struct.unpack(endian + "q", head[168:176])[0]
        else:
            vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
        if compressed:
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                isize = struct.unpack("<I", f.read(4))[0]
        else:
            isize = path.stat().st_size
    except (OSError, EOFError, struct.error) as exc:
        raise InputError(f"cannot read image (corrupt or truncated file?): {exc}", path) from exc
    nbytes = int(np.prod(image.GetSize())) * image.GetNumberOfComponentsPerPixel() * \
        np.dtype(sitk.GetArrayViewFromImage(image).dtype).itemsize
    if (compressed and (vox_offset + nbytes) % (1 << 32) != isize) or (not compressed and
                                                                      isize < vox_offset + nbytes):
        raise InputError("cannot read image: truncated or corrupt file (compressed data ends before the "
                         "volume does)", path)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "itk::ERROR" in ln or "Description" in ln] or lines
    return useful[-1][:300] if useful else type(exc).__name__


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return head[128:132] == b"DICM"
    except OSError:
        return False


def _read_dicom_dir(path: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(path))
    except RuntimeError:
        series = ()
    if not series:
        raise InputError("folder contains no DICOM series", path)
    # Several series: take the one with the most slices (the CT volume, not a scout).
    files = max((reader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len)
    if len(files) < 2:
        raise InputError("DICOM series has a single slice: a 3D CT is required", path)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series: {_first_line(exc)}", path) from exc


def _validate_image(image: sitk.Image, path: Path) -> sitk.Image:
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise InputError(f"expected a 3D image, got a {dim}D image of size {image.GetSize()}", path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per "
                         "voxel", path)
    if min(image.GetSize()) < 2:
        raise InputError(f"expected a 3D volume, got size {image.GetSize()} (a single slice)", path)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        arr = sitk.GetArrayViewFromImage(image)
        if np.isnan(arr).any():
            raise InputError(f"image contains {int(np.isnan(arr).sum())} NaN voxels", path)
    return image


def read_volume(path: str | os.PathLike, dtype=None) -> Volume:
    """Read a 3D image as a :class:`Volume` (array in z, y, x)."""
    image = read_image(path)
    arr = sitk.GetArrayFromImage(image)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return Volume(arr, Geometry.from_image(image), str(path))


def read_ct(path: str | os.PathLike) -> Volume:
    """Read a CT volume as float32 HU."""
    return read_volume(path, dtype=np.float32)


def check_same_grid(geometry: Geometry, reference: Geometry, path=None, reference_path=None) -> None:
    diffs = grid_differences(geometry, reference)
    if diffs:
        ref = f" of {reference_path}" if reference_path else " of the reference image"
        raise InputError(f"mask grid differs from the grid{ref}: " + "; ".join(diffs), path)


def read_mask(path: str | os.PathLike, reference: Volume | Geometry | None = None, binary: bool = True) -> Volume:
    """Read a mask (uint8 for binary masks, int16 label map otherwise).

    ``reference``: the image it must share its grid with (size, spacing, origin, direction).
    ``binary``: require values in {0, 1}.
    """
    vol = read_volume(path)
    arr = vol.array
    if arr.dtype.kind == "f":
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError("mask has non-integer values (is this a CT, not a mask?)", path)
    if reference is not None:
        ref_geo = reference.geometry if isinstance(reference, Volume) else reference
        ref_path = reference.path if isinstance(reference, Volume) else None
        check_same_grid(vol.geometry, ref_geo, path, ref_path)
    if binary:
        values = np.unique(arr) if arr.size < 50_000_000 else np.unique(arr[::4, ::4, ::4])
        bad = [v for v in values.tolist() if v not in (0, 1)]
        if bad:
            raise InputError(f"mask must be binary (0/1), found values {sorted(values.tolist())[:10]}", path)
        vol.array = arr.astype(np.uint8, copy=False)
    else:
        if arr.min() < 0:
            raise InputError(f"label map has negative values (min {arr.min()})", path)
        vol.array = arr.astype(np.int16 if arr.max() > 255 else np.uint8, copy=False)
    return vol


def write_volume(path: str | os.PathLike, array: np.ndarray, geometry: Geometry, compress: bool = True) -> Path:
    """Write an array on ``geometry`` to NIfTI / NRRD / MetaImage (by extension), atomically."""
    path = Path(path)
    if not _has_ext(path, WRITE_EXTENSIONS):
        raise InputError(f"cannot write this file type (use one of {', '.join(WRITE_EXTENSIONS)})", path)
    image = to_image(array, geometry)
    if path.name.lower().endswith(".mhd"):
        _write_mhd(path, image, compress)
        return path
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def _write_mhd(path: Path, image: sitk.Image, compress: bool) -> None:
    """MetaImage header + data file: written with their final names in a hidden folder, then moved
    (data first, header last: a header on disk always points at complete data)."""
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(image, str(tmpdir / path.name), compress)
        for f in sorted(tmpdir.iterdir(), key=lambda p: p.suffix == ".mhd"):
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_mask(path: str | os.PathLike, mask: np.ndarray, geometry: Geometry) -> Path:
    return write_volume(path, np.asarray(mask).astype(np.uint8, copy=False), geometry)


def write_like(path: str | os.PathLike, array: np.ndarray, like: Volume) -> Path:
    """Write ``array`` on the grid of ``like``."""
    return write_volume(path, array, like.geometry)
