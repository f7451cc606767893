"""Resampling, crop/paste and intensity standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from bonemet.geometry import bbox_slices, crop, paste, resample, resample_to, resampled_geometry
from bonemet.intensity import destandardise, params, standardise
from bonemet.io import Geometry, Volume, read_volume, write_volume


def _ball_volume(spacing_xyz=(0.6, 0.6, 2.0), shape_zyx=(30, 80, 80), radius=12.0, direction=None):
    geo = Geometry(tuple(shape_zyx[::-1]), spacing_xyz, (-20.0, 10.0, 100.0),
                   direction if direction is not None else (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    zz, yy, xx = np.indices(shape_zyx, dtype=float)
    sz, sy, sx = geo.spacing_zyx
    c = np.array(shape_zyx) / 2
    d = np.sqrt(((zz - c[0]) * sz) ** 2 + ((yy - c[1]) * sy) ** 2 + ((xx - c[2]) * sx) ** 2)
    ct = np.where(d < radius, 1200.0, -50.0).astype(np.float32)
    mask = (d < radius).astype(np.uint8)
    return Volume(ct, geo), Volume(mask, geo)


def test_default_isotropic_085_keeps_extent():
    ct, _ = _ball_volume()
    iso = resample(ct)
    assert iso.geometry.spacing == (0.85, 0.85, 0.85)
    assert iso.geometry.origin == ct.geometry.origin
    ext_in = np.array(ct.geometry.size) * np.array(ct.geometry.spacing)
    ext_out = np.array(iso.geometry.size) * np.array(iso.geometry.spacing)
    assert np.all(np.abs(ext_in - ext_out) <= 0.85 / 2 + 1e-9)
    assert iso.array.dtype == np.float32


@pytest.mark.parametrize("interp", ["linear", "bspline"])
def test_ct_round_trip_back_onto_original_grid(interp):
    ct, _ = _ball_volume()
    iso = resample(ct, 0.85, interp)
    back = resample_to(iso, ct.geometry, interp)
    assert back.geometry == ct.geometry and back.array.shape == ct.array.shape
    # interior and exterior survive; only the boundary is smoothed
    inner = ct.array > 0
    assert np.mean(np.abs(back.array - ct.array) < 100) > 0.9
    assert abs(back.array[inner].mean() - 1200) < 150


def test_label_nearest_keeps_values_and_volume():
    _, mask = _ball_volume()
    lab = Volume(mask.array * 2, mask.geometry)  # label value 2
    iso = resample(lab, 0.85)  # integer -> nearest by default
    assert iso.array.dtype == lab.array.dtype
    assert set(np.unique(iso.array).tolist()) <= {0, 2}
    v_in = (lab.array > 0).sum() * lab.geometry.voxel_volume
    v_iso = (iso.array > 0).sum() * iso.geometry.voxel_volume
    assert abs(v_iso / v_in - 1) < 0.05
    back = resample_to(iso, lab.geometry, "nearest")
    inter = ((back.array > 0) & (lab.array > 0)).sum()
    dice = 2 * inter / ((back.array > 0).sum() + (lab.array > 0).sum())
    assert dice > 0.95


def test_anisotropic_spacing_and_oblique_direction():
    d = (0.8660254, -0.5, 0.0, 0.5, 0.8660254, 0.0, 0.0, 0.0, 1.0)
    ct, _ = _ball_volume(direction=d)
    out = resample(ct, (1.0, 1.5, 2.5))
    assert out.geometry.spacing == (1.0, 1.5, 2.5)
    assert out.geometry.direction == d
    # the ball stays at the same physical place
    def centre(v):
        idx = np.argwhere(v.array > 500).mean(0)[::-1]
        return v.geometry.index_to_physical(idx)
    assert np.linalg.norm(centre(out) - centre(ct)) < 1.0


def test_resample_rejects_bad_arguments():
    ct, _ = _ball_volume()
    with pytest.raises(ValueError):
        resample(ct, (1.0, 1.0))
    with pytest.raises(ValueError):
        resample(ct, 1.0, "cubic")
    assert resampled_geometry(ct.geometry, 2.0).spacing == (2.0, 2.0, 2.0)


def test_bbox_crop_paste_round_trip(tmp_path):
    ct, mask = _ball_volume()
    sl = bbox_slices(mask.array, margin_vox=(1, 3, 3))
    assert sl is not None
    part = crop(ct, sl)
    assert part.array.shape == tuple(s.stop - s.start for s in sl)
    # the cropped grid maps its first voxel to the same physical point
    p0 = ct.geometry.index_to_physical([sl[2].start, sl[1].start, sl[0].start])
    np.testing.assert_allclose(part.geometry.origin, p0)
    # survives a file round trip, pastes back exactly
    f = write_volume(tmp_path / "part.nrrd", part.array, part.geometry)
    again = read_volume(f)
    np.testing.assert_allclose(again.geometry.origin, part.geometry.origin)
    full = paste(np.zeros_like(ct.array), again.array, sl)
    assert np.array_equal(full[sl], ct.array[sl])
    assert np.array_equal(full[mask.array > 0], ct.array[mask.array > 0])
    # margins are clipped to the array, empty masks give None
    big = bbox_slices(mask.array, margin_vox=1000)
    assert all(s.start == 0 and s.stop == n for s, n in zip(big, mask.array.shape))
    assert bbox_slices(np.zeros((3, 3, 3))) is None


def test_intensity_standardisation_invertible():
    hu = np.array([-3000, -1000, -500, 0, 40, 1000, 2000, 3000], np.float32)
    p = params()
    x = standardise(hu, p)
    assert x.dtype == np.float32 and x.min() == -1 and x.max() == 1
    back = destandardise(x, p)
    inside = (hu >= -1000) & (hu <= 2000)
    np.testing.assert_allclose(back[inside], hu[inside], atol=1e-3)
    assert back[0] == -1000 and back[-1] == 2000  # clipped outside the window
    p2 = params((-200, 1200))
    np.testing.assert_allclose(destandardise(standardise(hu, p2), p2)[3:6], [0, 40, 1000], atol=1e-3)
    with pytest.raises(ValueError):
        params((100, 100))
