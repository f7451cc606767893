"""Volume I/O: round trips keep the grid, every bad input is an InputError naming the file."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest
import SimpleITK as sitk

from bonemet.errors import InputError
from bonemet.io import Geometry, read_ct, read_image, read_mask, read_volume, write_mask, write_volume

OBLIQUE = tuple(sitk.VersorTransform((0.3, 0.2, 1.0), 0.4).GetMatrix())


def _geometry(direction=None):
    return Geometry((7, 6, 5), (0.7, 0.85, 2.5), (-120.25, 33.5, -401.75),
                    direction if direction is not None else (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def _ct(geo, rng):
    return rng.integers(-1024, 2000, geo.shape).astype(np.int16)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("oblique", [False, True])
def test_round_trip_keeps_grid(tmp_path, rng, ext, oblique):
    geo = _geometry(OBLIQUE if oblique else None)
    arr = _ct(geo, rng)
    path = write_volume(tmp_path / f"ct{ext}", arr, geo)
    vol = read_volume(path)
    assert np.array_equal(vol.array, arr)
    g = vol.geometry
    assert g.size == geo.size
    # NIfTI stores the grid in float32 (qform/sform): equal to float32 precision; the others exactly.
    tol = 1e-5 if ext.startswith(".nii") else 1e-12
    np.testing.assert_allclose(g.spacing, geo.spacing, rtol=tol, atol=tol)
    np.testing.assert_allclose(g.origin, geo.origin, rtol=tol, atol=tol * 500)
    np.testing.assert_allclose(g.direction, geo.direction, atol=1e-5 if ext.startswith(".nii") else 1e-12)
    assert vol.path == str(path)


def test_mhd_writes_header_and_data(tmp_path, rng):
    geo = _geometry()
    write_volume(tmp_path / "a.mhd", _ct(geo, rng), geo)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "a.mhd" in names and any(n.startswith("a.") and n != "a.mhd" for n in names)
    assert not any(n.startswith(".") for n in names)  # no temporary leftovers


def _write_dicom_series(folder, arr, geo):
    folder.mkdir()
    img = geo.apply_to(sitk.GetImageFromArray(arr))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    now = time.strftime("%H%M%S")
    direction = img.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125." + now + ".1"
    study_uid = "1.2.826.0.1.3680043.2.1125." + now + ".2"
    tags = [("0008|0060", "CT"), ("0010|0010", "Phantom^Test"), ("0010|0020", "PH0001"), ("0020|000d", study_uid),
            ("0020|000e", series_uid), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
            ("0020|0037", "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6],
                                                          direction[1], direction[4], direction[7]))),
            ("0028|1052", "0"), ("0028|1053", "1"), ("0028|1054", "HU"), ("0018|0050", str(geo.spacing[2]))]
    for i in range(img.GetDepth()):
        sl = img[:, :, i]
        for k, v in tags:
            sl.SetMetaData(k, v)
        pos = img.TransformIndexToPhysicalPoint((0, 0, i))
        sl.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in pos))
        sl.SetMetaData("0020|0013", str(i + 1))
        sl.SetMetaData("0008|0018", f"{series_uid}.{i + 1}")
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(sl)


@pytest.mark.parametrize("oblique", [False, True])
def test_dicom_series_folder(tmp_path, rng, oblique):
    geo = _geometry(OBLIQUE if oblique else None)
    arr = _ct(geo, rng)
    _write_dicom_series(tmp_path / "series", arr, geo)
    vol = read_ct(tmp_path / "series")
    assert vol.array.dtype == np.float32
    assert np.array_equal(vol.array, arr.astype(np.float32))
    np.testing.assert_allclose(vol.geometry.spacing, geo.spacing, atol=1e-4)
    np.testing.assert_allclose(vol.geometry.origin, geo.origin, atol=1e-4)
    np.testing.assert_allclose(vol.geometry.direction, geo.direction, atol=1e-5)


def _assert_input_error(fn, path, *words):
    with pytest.raises(InputError) as ei:
        fn()
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg.lower(), msg
    return msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.nii.gz"
    _assert_input_error(lambda: read_ct(p), p, "not found")


def test_empty_and_garbage_files(tmp_path):
    p = tmp_path / "empty.nrrd"
    p.write_bytes(b"")
    _assert_input_error(lambda: read_ct(p), p, "empty")
    q = tmp_path / "garbage.nii"
    q.write_bytes(b"this is not an image at all" * 20)
    _assert_input_error(lambda: read_ct(q), q, "cannot read")
    r = tmp_path / "scan.png"
    r.write_bytes(b"\x89PNG....")
    _assert_input_error(lambda: read_ct(r), r, "unsupported")


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, rng, ext):
    geo = Geometry((40, 40, 30), (1.0, 1.0, 1.0))
    full = write_volume(tmp_path / f"full{ext}", _ct(geo, rng), geo)
    data = full.read_bytes()
    p = tmp_path / f"cut{ext}"
    p.write_bytes(data[: len(data) // 2])
    _assert_input_error(lambda: read_ct(p), p, "cannot read")


def test_empty_dicom_folder(tmp_path):
    d = tmp_path / "nodicom"
    d.mkdir()
    (d / "readme.txt").write_text("hello")
    _assert_input_error(lambda: read_ct(d), d, "dicom")


def test_2d_image(tmp_path):
    p = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30), np.int16)), str(p))
    _assert_input_error(lambda: read_ct(p), p, "3d")
    q = tmp_path / "thin.nii.gz"  # a "3D" image that is a single slice
    write_volume(q, np.zeros((1, 20, 30), np.int16), Geometry((30, 20, 1), (1.0, 1.0, 1.0)))
    _assert_input_error(lambda: read_ct(q), q, "single slice")


def test_4d_image(tmp_path):
    p = tmp_path / "dyn.nii.gz"
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.int16))  # 4D: t=3
    sitk.WriteImage(img, str(p))
    _assert_input_error(lambda: read_ct(p), p, "4d")


def test_vector_image(tmp_path):
    p = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True), str(p))
    _assert_input_error(lambda: read_ct(p), p, "components")


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])  # (ITK's NIfTI writer cannot store NaN)
def test_nan_voxels(tmp_path, ext):
    arr = np.zeros((4, 5, 6), np.float32)
    arr[1, 2, 3] = np.nan
    p = write_volume(tmp_path / f"nan{ext}", arr, Geometry((6, 5, 4), (1.0, 1.0, 1.0)))
    _assert_input_error(lambda: read_ct(p), p, "nan")


@pytest.mark.parametrize("what", ["size", "spacing", "origin", "direction"])
def test_mask_grid_differs(tmp_path, rng, what):
    geo = _geometry()
    ct = write_volume(tmp_path / "ct.nii.gz", _ct(geo, rng), geo)
    changed = {
        "size": Geometry((7, 6, 6), geo.spacing, geo.origin, geo.direction),
        "spacing": Geometry(geo.size, (0.7, 0.85, 3.0), geo.origin, geo.direction),
        "origin": Geometry(geo.size, geo.spacing, (-120.25, 34.5, -401.75), geo.direction),
        "direction": Geometry(geo.size, geo.spacing, geo.origin, OBLIQUE),
    }[what]
    m = write_mask(tmp_path / "mask.nrrd", np.zeros(changed.shape, np.uint8), changed)
    ref = read_ct(ct)
    msg = _assert_input_error(lambda: read_mask(m, reference=ref), m, what, "grid")
    assert str(ct) in msg  # names the reference too
    # the same mask on the right grid is accepted
    ok = write_mask(tmp_path / "ok.nrrd", np.zeros(geo.shape, np.uint8), geo)
    assert read_mask(ok, reference=ref).array.dtype == np.uint8


def test_non_binary_mask(tmp_path):
    geo = _geometry()
    arr = np.zeros(geo.shape, np.uint8)
    arr[1, 1, 1] = 2
    p = write_volume(tmp_path / "labels.nii.gz", arr, geo)
    _assert_input_error(lambda: read_mask(p), p, "binary")
    lab = read_mask(p, binary=False)  # fine as a label map
    assert lab.array.max() == 2
    ct = write_volume(tmp_path / "ctlike.nii.gz", np.full(geo.shape, 0.5, np.float32), geo)
    _assert_input_error(lambda: read_mask(ct), ct, "non-integer")


def test_read_image_gz_nifti_is_really_compressed(tmp_path, rng):
    geo = _geometry()
    p = write_volume(tmp_path / "c.nii.gz", _ct(geo, rng), geo)
    with gzip.open(p) as f:
        assert len(f.read(348)) == 348
    assert read_image(p).GetSize() == geo.size
