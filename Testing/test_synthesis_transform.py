"""Each step of the ad-hoc synthesis transform and of the insertion, on small real arrays."""

import numpy as np
import pytest

from bonemet.errors import InputError
from bonemet.presets import load_preset
from bonemet.seeding import rng
from bonemet.synthesis.insertion import draw_centre, femur_candidates, insert_lesion
from bonemet.synthesis.transform import (draw_transform_params, edge_alpha, ellipsoid_crop, noise_field,
                                         rotation_matrix, transform_lesion, transform_patch)


def ball(shape, centre, radius_vox):
    z, y, x = np.indices(shape)
    return (((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius_vox ** 2)


def lesion_item(radius=6, shape=(17, 17, 17)):
    mask = ball(shape, [s // 2 for s in shape], radius).astype(np.uint8)
    patch = np.where(mask, -50.0, 400.0).astype(np.float32)
    return patch, mask


def host(shape=(48, 48, 48), radius=15, spacing=1.0):
    z, y, x = np.indices(shape)
    cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
    femur = (np.hypot(y - cy, x - cx) * spacing <= radius).astype(np.uint8)
    ct = np.where(femur, 300.0, 40.0).astype(np.float32)
    return ct, femur


def test_ellipsoid_crop_is_subset_and_contains_centre():
    _, mask = lesion_item()
    crop = ellipsoid_crop(mask, (8, 8, 5), (3.0, 4.0, 2.0), (1.0, 1.0, 1.0))
    assert crop.shape == mask.shape and crop.dtype == bool
    assert crop[8, 8, 5] and not np.any(crop & ~mask.astype(bool))
    assert 0 < crop.sum() < mask.sum()
    # ellipsoid semi-axes are in mm: a coarser spacing means fewer voxels along that axis
    crop2 = ellipsoid_crop(mask, (8, 8, 5), (3.0, 4.0, 2.0), (2.0, 1.0, 1.0))
    assert crop2.sum() < crop.sum()


def test_rotation_matrix_is_a_rotation():
    R = rotation_matrix([30.0, -70.0, 110.0])
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.25])
def test_transform_patch_preserves_volume_times_scale_cubed(scale):
    patch, mask = lesion_item()
    vals, soft, lo = transform_patch(patch, mask, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), [20.0, 45.0, -30.0],
                                     [scale] * 3)
    assert vals.shape == soft.shape and vals.dtype == np.float32 and soft.dtype == np.float32
    assert soft.min() >= 0 and soft.max() <= 1
    expected = mask.sum() * scale ** 3
    assert abs((soft >= 0.5).sum() - expected) / expected < 0.08
    # centroid lands at local index -lo
    c = np.argwhere(soft >= 0.5).mean(axis=0)
    assert np.all(np.abs(c + lo) < 1.0)
    # the lesion interior keeps the lesion's intensity
    assert np.all(np.abs(vals[soft > 0.99] - (-50.0)) < 5.0)


def test_transform_patch_folds_in_the_spacing_change():
    patch, mask = lesion_item()
    # source at 0.85 mm, destination at 1.7 mm: the lesion covers ~1/8 the voxels
    _, soft, _ = transform_patch(patch, mask, (0.85,) * 3, (1.7,) * 3, [0, 0, 0], [1, 1, 1])
    assert abs((soft >= 0.5).sum() - mask.sum() / 8) / (mask.sum() / 8) < 0.15


def test_edge_alpha_blends_at_the_edge_only():
    les = ball((21, 21, 21), (10, 10, 10), 6)
    a = edge_alpha(les, 3, 1.0)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert a[10, 10, 10] == pytest.approx(1.0)
    assert a[0, 0, 0] == 0.0
    edge = (a > 0) & (a < 1)
    assert edge.any() and not edge[10, 10, 10]
    assert np.array_equal(edge_alpha(les, 3, 0.0), les.astype(np.float32))      # weight 0 = hard edge
    half = edge_alpha(les, 3, 0.5)
    assert np.allclose(half, 0.5 * les + 0.5 * a, atol=1e-6)


def test_noise_is_seeded():
    a, b = noise_field((5, 6, 7), 42, 10.0), noise_field((5, 6, 7), 42, 10.0)
    assert np.array_equal(a, b) and not np.array_equal(a, noise_field((5, 6, 7), 43, 10.0))
    assert 5 < a.std() < 15
    assert not noise_field((3, 3, 3), 1, 0.0).any()


def test_draw_params_deterministic_and_within_ranges():
    cfg = load_preset("synthesis", "paper")
    _, mask = lesion_item()
    p1 = draw_transform_params(rng(3, "synth", "a", "b", 0), mask, (1.0,) * 3, cfg)
    p2 = draw_transform_params(rng(3, "synth", "a", "b", 0), mask, (1.0,) * 3, cfg)
    p3 = draw_transform_params(rng(3, "synth", "a", "b", 1), mask, (1.0,) * 3, cfg)
    assert p1 == p2 and p1 != p3
    assert mask[tuple(p1["crop_centre_vox"])]
    assert all(cfg["rotation_deg"][0] <= a <= cfg["rotation_deg"][1] for a in p1["rotation_deg"])
    assert cfg["scale"][0] <= p1["scale"][0] <= cfg["scale"][1] and len(set(p1["scale"])) == 1
    assert p1["smoothing_size"] in cfg["smoothing"]["sizes"]
    assert cfg["noise_std_hu"][0] <= p1["noise_std_hu"] <= cfg["noise_std_hu"][1]


def _params(centre, **kw):
    p = {"crop_centre_vox": [8, 8, 8], "crop_semi_axes_mm": [100.0] * 3, "rotation_deg": [0.0, 0.0, 0.0],
         "scale": [1.0] * 3, "smoothing_size": 3, "smoothing_weight": 0.7, "noise_std_hu": 5.0,
         "noise_seed": 7, "interpolation_order": 1, "centre_zyx": list(centre), "femur_label": 1}
    p.update(kw)
    return p


def test_insertion_lesion_inside_femur_and_only_box_changes():
    patch, mask = lesion_item()
    ct, femur = host()
    # near the femur boundary: part of the lesion falls outside and must be cut
    params = _params((24, 24, 24 + 12))
    ins = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, params)
    new, les = ins.apply(ct)
    assert new.shape == ct.shape and les.shape == ct.shape and les.dtype == np.uint8
    assert ins.kept and les.any()
    assert not np.any(les.astype(bool) & (femur == 0))                  # lesion ⊂ femur
    assert les.sum() < mask.sum()                                      # part was cut at the femur border
    changed = new != ct
    assert not np.any(changed & (femur == 0))                          # nothing leaks outside the femur
    outside_box = np.ones(ct.shape, bool)
    outside_box[ins.box] = False
    assert not np.any(changed & outside_box)
    assert np.array_equal(ct, host()[0])                               # input untouched
    # lesion is dark, the blended rim is between lesion and bone values (no hard seam)
    assert new[les.astype(bool)].mean() < 100
    rim = changed & ~les.astype(bool)
    assert rim.any() and np.all((new[rim] > -120) & (new[rim] < 430))  # between lesion, source and host values


def test_insertion_deterministic():
    patch, mask = lesion_item()
    ct, femur = host()
    p = _params((24, 24, 24), rotation_deg=[10.0, 20.0, 30.0], scale=[0.9] * 3)
    a = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, p)
    b = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, dict(p))
    assert np.array_equal(a.values, b.values) and np.array_equal(a.lesion, b.lesion) and a.box == b.box


def test_size_filter_in_mm3():
    patch, mask = lesion_item(radius=2, shape=(9, 9, 9))  # 33 voxels
    ct, femur = host()
    p = _params((24, 24, 24), crop_centre_vox=[4, 4, 4])
    at_1mm = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, p)
    assert at_1mm.kept and at_1mm.volume_mm3 > 16
    # same physical lesion, rule expressed in mm3: with a 20 mm3 threshold it is rejected
    rej = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, p, min_volume_mm3=40.0)
    assert not rej.kept and rej.reason == "too_small"
    # a tiny scale makes it <= 16 mm3
    small = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, _params((24, 24, 24), scale=[0.6] * 3,
                                                                                      crop_centre_vox=[4, 4, 4]))
    assert small.volume_mm3 <= 16.0 and not small.kept and small.reason == "too_small"


def test_femur_too_small_for_the_lesion_is_rejected():
    patch, mask = lesion_item()
    ct = np.full((30, 30, 30), 40.0, np.float32)
    femur = np.zeros((30, 30, 30), np.uint8)
    femur[14:17, 14:17, 14:16] = 1     # 18 voxels = 18 mm3... lesion cut to the femur
    ins = insert_lesion(ct, femur, (0.85,) * 3, patch, mask, (0.85,) * 3, _params((15, 15, 15)))
    assert not ins.kept and ins.reason == "too_small" and ins.voxels <= 18


def test_insertion_outside_femur_is_an_error():
    patch, mask = lesion_item()
    ct, femur = host()
    with pytest.raises(InputError, match="outside the femur"):
        insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, _params((24, 0, 0), femur_label=0))
    with pytest.raises(InputError, match="outside the volume"):
        insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3, _params((24, 99, 0)))


def test_femur_candidates_respect_depth():
    _, femur = host()
    allv = femur_candidates(femur, (1.0,) * 3, 0.0)
    deep = femur_candidates(femur, (1.0,) * 3, 5.0)
    assert len(allv) == femur.sum() and 0 < len(deep) < len(allv)
    assert np.all(femur[tuple(deep.T)] == 1)
    c = draw_centre(rng(0, "x"), deep, femur)
    assert c["femur_label"] == 1 and femur[tuple(c["centre_zyx"])] == 1
    with pytest.raises(InputError, match="empty"):
        draw_centre(rng(0, "x"), femur_candidates(np.zeros((4, 4, 4), np.uint8), (1.0,) * 3), femur)


def test_transform_lesion_empty_crop_returns_none():
    patch, mask = lesion_item()
    assert transform_lesion(patch, mask, (1.0,) * 3, (1.0,) * 3, _params((0, 0, 0), crop_centre_vox=[0, 0, 0],
                                                                           crop_semi_axes_mm=[1.0] * 3)) is None


def test_edge_smoothing_removes_the_seam():
    """The intensity jump across the lesion border is smaller with mean-filter smoothing than without."""
    patch, mask = lesion_item()
    ct, femur = host()

    def border_jump(weight, size=3):
        ins = insert_lesion(ct, femur, (1.0,) * 3, patch, mask, (1.0,) * 3,
                            _params((24, 24, 24), smoothing_weight=weight, smoothing_size=size, noise_std_hu=0.0))
        new, les = ins.apply(ct)
        les = les.astype(bool)
        jumps = []
        for ax in range(3):
            a, b = np.swapaxes(new, 0, ax), np.swapaxes(les, 0, ax)
            edge = b[1:] != b[:-1]
            jumps.append(np.abs(a[1:] - a[:-1])[edge])
        return float(np.concatenate(jumps).mean())

    hard, soft3, soft5 = border_jump(0.0), border_jump(1.0, 3), border_jump(1.0, 5)
    assert hard > 300 and soft3 < 0.75 * hard and soft5 < soft3
