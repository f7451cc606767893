"""Classical femur segmentation on phantoms: Dice, lesions, metal, orientation, errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from bonemet.cli.main import main
from bonemet.errors import InputError
from bonemet.femur import segment_femur, segment_femur_file
from bonemet.geometry import resample
from bonemet.io import Geometry, Volume, read_ct, read_mask, write_volume
from bonemet.phantom import make_case


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def cases():
    return [make_case(f"ph{i:03d}", seed=0) for i in (0, 4, 9)]


def test_dice_on_small_phantoms(cases):
    for c in cases:
        seg = segment_femur(c.ct, c.geometry)
        assert seg.dtype == np.uint8 and seg.shape == c.ct.shape
        for lab in (1, 2):
            d = dice(seg == lab, c.femur == lab)
            assert d >= 0.95, f"{c.id} label {lab}: Dice {d:.3f}"


def test_lesions_do_not_punch_holes(cases):
    c = cases[0]
    assert c.lesion.any()
    seg = segment_femur(c.ct, c.geometry)
    assert (seg[c.lesion > 0] > 0).mean() >= 0.9


def test_file_api_and_cli(tmp_path, cases):
    c = cases[1]
    ct_path = write_volume(tmp_path / "ct.nii.gz", c.ct, c.geometry)
    out = segment_femur_file(ct_path, tmp_path / "femur.nrrd")
    ct = read_ct(ct_path)
    lab = read_mask(out, reference=ct, binary=False)  # same grid as the CT
    assert set(np.unique(lab.array).tolist()) == {0, 1, 2}
    assert main(["femur", str(ct_path), "-o", str(tmp_path / "f2.mha")]) == 0
    assert np.array_equal(read_mask(tmp_path / "f2.mha", binary=False).array, lab.array)


def test_cli_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.nii.gz"
    assert main(["femur", str(missing), "-o", str(tmp_path / "m.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert not (tmp_path / "m.nii.gz").exists()


def test_orientation_right_is_smaller_physical_x(cases):
    """Same anatomy stored with the x axis flipped (direction -1): labels follow physical x, not the index."""
    c = cases[2]
    g = c.geometry
    flipped = np.ascontiguousarray(c.ct[:, :, ::-1])
    origin = g.index_to_physical([g.size[0] - 1, 0, 0])
    direction = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    g2 = Geometry(g.size, g.spacing, tuple(origin), direction)
    seg2 = segment_femur(flipped, g2)
    gt2 = c.femur[:, :, ::-1]
    for lab in (1, 2):
        assert dice(seg2 == lab, gt2 == lab) >= 0.95


def test_metal_implant_tolerated():
    c = make_case("metal1", seed=3, metal=True, healthy=True)
    assert c.meta["metal"] and c.ct.max() >= 2500
    seg = segment_femur(c.ct, c.geometry)
    ratio = (seg > 0).sum() / (c.femur > 0).sum()
    assert 0.85 <= ratio <= 1.15, ratio
    assert dice(seg > 0, c.femur > 0) >= 0.9


@pytest.mark.parametrize("spacing", [3.0])
def test_coarse_spacing(spacing):
    c = make_case("coarse", seed=2, overrides={"spacing_xy": [spacing, spacing], "spacing_z": [spacing, spacing]})
    seg = segment_femur(c.ct, c.geometry)
    for lab in (1, 2):
        assert dice(seg == lab, c.femur == lab) >= 0.9  # 3 mm voxels: boundary partial volume costs Dice


def _body(shape=(40, 60, 80), sp=(2.5, 2.0, 2.0)):
    zz, yy, xx = np.indices(shape)
    body = ((yy - shape[1] / 2) / (shape[1] * 0.4)) ** 2 + ((xx - shape[2] / 2) / (shape[2] * 0.45)) ** 2 < 1
    return np.where(body, 40.0, -1000.0).astype(np.float32), Geometry.from_array(np.zeros(shape), sp)


def test_no_bone_is_an_error():
    ct, g = _body()
    with pytest.raises(InputError, match="no femur"):
        segment_femur(ct, g, path="water.nii.gz")


def test_mr_like_intensities_are_an_error():
    rng = np.random.default_rng(0)
    mr = rng.uniform(0, 1800, (30, 40, 50)).astype(np.float32)
    with pytest.raises(InputError, match="Hounsfield"):
        segment_femur(mr, Geometry.from_array(mr, (3.0, 1.0, 1.0)))


def test_head_like_skull_is_an_error():
    ct, g = _body(shape=(50, 80, 80), sp=(2.0, 2.0, 2.0))
    zz, yy, xx = np.indices(ct.shape)
    r = np.sqrt(((zz - 25) * 2.0) ** 2 + ((yy - 40) * 2.0) ** 2 + ((xx - 40) * 2.0) ** 2)
    ct = np.where(r < 70, 40.0, -1000.0).astype(np.float32)
    ct[(r >= 62) & (r < 68)] = 1200.0  # skull shell
    with pytest.raises(InputError, match="no femur"):
        segment_femur(ct, g)


@pytest.mark.slow
def test_large_volume_path_works_on_a_coarser_grid(monkeypatch):
    """Very large scans are segmented on a coarser working grid and the labels brought back to the CT grid."""
    import bonemet.femur as femur_mod

    c = make_case("fine", seed=1, overrides={"spacing_xy": [1.3, 1.3], "spacing_z": [1.3, 1.3],
                                             "fov_mm": [330, 190, 170]})
    monkeypatch.setattr(femur_mod, "MAX_WORK_VOXELS", c.ct.size // 2)
    seg = femur_mod.segment_femur(c.ct, c.geometry)
    assert seg.shape == c.ct.shape
    for lab in (1, 2):
        assert dice(seg == lab, c.femur == lab) >= 0.93
