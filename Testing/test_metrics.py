"""bonemet.metrics: equality with MONAI's surface distances, overlap metrics, empty-mask conventions,
per-femur metrics, lesion-wise detection, summaries."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from bonemet import metrics as M
from bonemet.errors import InputError


def monai_distances(pred, ref, spacing):
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    P = torch.from_numpy(np.asarray(pred, np.float32)[None, None])
    R = torch.from_numpy(np.asarray(ref, np.float32)[None, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(P, R, include_background=True, spacing=list(spacing)).item()
        hd95 = compute_hausdorff_distance(P, R, include_background=True, percentile=95, spacing=list(spacing)).item()
        asd = compute_average_surface_distance(P, R, include_background=True, symmetric=True,
                                               spacing=list(spacing)).item()
    return hd, hd95, asd


def blobs(rng, shape, density=0.01, grow=2):
    seeds = rng.random(shape) < density
    return ndimage.binary_dilation(seeds, iterations=grow).astype(np.uint8)


def ball(shape, centre, radius_mm, spacing):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return (d2 <= radius_mm ** 2).astype(np.uint8)


def assert_matches_monai(pred, ref, spacing):
    m = M.segmentation_metrics(pred, ref, spacing)
    hd, hd95, asd = monai_distances(pred, ref, spacing)
    assert m["status"] == "ok"
    np.testing.assert_allclose([m["hd"], m["hd95"], m["assd"]], [hd, hd95, asd], rtol=2e-6, atol=1e-6)
    return m


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_match_monai_anisotropic(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(10, 36, 3))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, 3))
    pred, ref = blobs(rng, shape), blobs(rng, shape)
    assert pred.any() and ref.any()
    assert_matches_monai(pred, ref, spacing)


def test_several_components_far_apart_match_monai():
    # lesions far apart: several foreground boxes, one of them present in one mask only
    spacing = (2.5, 0.7, 0.7)
    shape = (60, 80, 90)
    ref = ball(shape, (10, 15, 20), 5, spacing) | ball(shape, (45, 60, 70), 4, spacing)
    pred = ball(shape, (11, 16, 20), 5.5, spacing) | ball(shape, (45, 61, 69), 3.5, spacing) \
        | ball(shape, (30, 70, 10), 2.0, spacing)
    m = assert_matches_monai(pred, ref, spacing)
    assert len(M.foreground_boxes(pred, ref)) >= 3
    assert m["hd"] > 10  # the false positive far away dominates HD


def test_masks_touching_the_array_border_match_monai():
    spacing = (1.2, 0.8, 0.5)
    shape = (20, 24, 28)
    ref = np.zeros(shape, np.uint8)
    ref[0:8, 0:10, 20:28] = 1        # touches three faces
    ref[15:20, 18:24, 0:5] = 1       # opposite corner
    pred = np.zeros(shape, np.uint8)
    pred[0:7, 1:10, 19:28] = 1
    pred[14:20, 18:24, 0:6] = 1
    assert_matches_monai(pred, ref, spacing)
    full = np.ones(shape, np.uint8)   # whole array: every border voxel is surface
    assert_matches_monai(full, ref, spacing)


def test_single_voxels_and_thin_structures_match_monai():
    shape = (15, 15, 15)
    spacing = (3.0, 1.0, 0.5)
    a = np.zeros(shape, np.uint8)
    a[7, 7, 7] = 1
    b = np.zeros(shape, np.uint8)
    b[2:13, 7, 3] = 1  # a line
    assert_matches_monai(a, b, spacing)
    c = np.zeros(shape, np.uint8)
    c[5, :, :] = 1  # a plane
    assert_matches_monai(c, b, spacing)


def test_identical_masks():
    rng = np.random.default_rng(3)
    m = blobs(rng, (20, 20, 20))
    r = M.segmentation_metrics(m, m, (1, 1, 1))
    assert r["dice"] == 1.0 and r["hd"] == 0.0 and r["hd95"] == 0.0 and r["assd"] == 0.0
    assert r["sensitivity"] == 1.0 and r["precision"] == 1.0 and r["vol_diff_mm3"] == 0.0


def test_overlap_and_volumes_by_hand():
    spacing = (2.0, 0.5, 0.5)  # 0.5 mm³ per voxel
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = 1     # 64 voxels
    pred[2:6, 2:6, 4:8] = 1    # 64 voxels, 32 shared
    r = M.segmentation_metrics(pred, ref, spacing)
    assert r["dice"] == pytest.approx(0.5)
    assert r["sensitivity"] == pytest.approx(0.5) and r["precision"] == pytest.approx(0.5)
    assert r["vol_ref_mm3"] == pytest.approx(32.0) and r["vol_pred_mm3"] == pytest.approx(32.0)
    assert r["vol_diff_mm3"] == 0.0
    # shift along x by 2 voxels = 1 mm: HD is 1 mm
    assert r["hd"] == pytest.approx(1.0)


def test_bool_and_int_dtypes_give_same_result():
    rng = np.random.default_rng(5)
    p, r = blobs(rng, (16, 18, 20)), blobs(rng, (16, 18, 20))
    a = M.segmentation_metrics(p, r, (1, 2, 3))
    b = M.segmentation_metrics(p.astype(bool), r.astype(np.int16), (1, 2, 3))
    c = M.segmentation_metrics(p.astype(np.float32), r.astype(np.float64), (1, 2, 3))
    for k in ("dice", "hd", "hd95", "assd"):
        assert a[k] == b[k] == c[k]


def test_both_empty_is_true_negative_never_one():
    z = np.zeros((8, 8, 8), np.uint8)
    r = M.segmentation_metrics(z, z, (1, 1, 1))
    assert r["status"] == "true_negative"
    assert r["dice"] is None and r["hd"] is None and r["hd95"] is None and r["assd"] is None
    assert r["sensitivity"] is None and r["precision"] is None
    assert r["vol_pred_mm3"] == 0 and r["vol_ref_mm3"] == 0
    assert "true negative" in r["note"]


def test_one_empty_gives_dice_zero_and_undefined_distances():
    z = np.zeros((8, 8, 8), np.uint8)
    m = z.copy()
    m[2:5, 2:5, 2:5] = 1
    r = M.segmentation_metrics(z, m, (1, 1, 1))
    assert r["status"] == "pred_empty" and r["dice"] == 0.0 and r["sensitivity"] == 0.0
    assert r["hd"] is None and r["hd95"] is None and r["assd"] is None and r["precision"] is None
    r = M.segmentation_metrics(m, z, (1, 1, 1))
    assert r["status"] == "ref_empty" and r["dice"] == 0.0 and r["precision"] == 0.0
    assert r["hd"] is None and r["sensitivity"] is None


def test_bad_inputs():
    a = np.zeros((5, 5, 5), np.uint8)
    with pytest.raises(InputError, match="different shapes"):
        M.segmentation_metrics(a, np.zeros((5, 5, 6), np.uint8), (1, 1, 1))
    b = a.copy()
    b[1, 1, 1] = 2
    with pytest.raises(InputError, match="binary"):
        M.segmentation_metrics(b, a, (1, 1, 1))
    with pytest.raises(InputError, match="binary"):
        M.segmentation_metrics(a, np.full((5, 5, 5), 0.5, np.float32), (1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        M.segmentation_metrics(a, a, (1, 0, 1))


def test_foreground_boxes_cover_all_voxels_and_are_padded_by_zeros():
    rng = np.random.default_rng(11)
    shape = (40, 48, 56)
    p = blobs(rng, shape, density=0.0005, grow=1)
    r = blobs(rng, shape, density=0.0005, grow=1)
    boxes = M.foreground_boxes(p, r)
    covered = np.zeros(shape, bool)
    for b in boxes:
        assert not covered[b].any()  # disjoint
        covered[b] = True
    assert not ((p | r).astype(bool) & ~covered).any()
    # a face neighbour of a box outside it is background in both masks
    grown = ndimage.binary_dilation(covered) & ~covered
    assert not (p.astype(bool) | r.astype(bool))[grown].any()


def test_per_side_metrics():
    spacing = (1.0, 1.0, 1.0)
    shape = (20, 20, 40)
    femur = np.zeros(shape, np.uint8)
    femur[:, :, :20] = 1  # right femur at small x (LPS)
    femur[:, :, 20:] = 2
    ref = np.zeros(shape, np.uint8)
    ref[5:10, 5:10, 5:10] = 1  # lesion in the right femur only
    pred = ref.copy()
    pred[5:10, 5:10, 9:22] = 1
    sides = M.per_side_metrics(pred, ref, femur, spacing)
    right_expected = M.segmentation_metrics(pred * (femur == 1), ref * (femur == 1), spacing)
    for k in ("dice", "hd", "hd95", "assd", "vol_pred_mm3"):
        assert sides["right"][k] == pytest.approx(right_expected[k])
    assert sides["right"]["status"] == "ok"
    # left femur: prediction spills 1 voxel column in, reference has nothing there
    assert sides["left"]["status"] == "ref_empty" and sides["left"]["dice"] == 0.0
    both_clean = M.per_side_metrics(ref, ref, femur, spacing)
    assert both_clean["left"]["status"] == "true_negative" and both_clean["left"]["dice"] is None


def test_lesion_detection_tp_fp_fn_and_small_lesions_ignored():
    spacing = (1.0, 1.0, 1.0)
    shape = (40, 40, 40)
    ref = ball(shape, (10, 10, 10), 4, spacing) | ball(shape, (30, 30, 30), 4, spacing)  # 2 lesions
    ref[2, 35, 35] = 1                     # 1 voxel: below 16 mm³, ignored
    pred = ball(shape, (10, 11, 10), 4, spacing)  # detects lesion 1, misses lesion 2
    pred |= ball(shape, (30, 8, 30), 3, spacing)  # false positive
    pred[38, 2, 2] = 1                            # tiny FP, ignored
    d = M.lesion_detection(pred, ref, spacing, min_volume_mm3=16)
    assert (d["tp"], d["fn"], d["fp"]) == (1, 1, 1)
    assert d["n_ref"] == 2 and d["n_pred"] == 2 and d["ignored_ref"] == 1 and d["ignored_pred"] == 1
    assert d["sensitivity"] == pytest.approx(0.5) and d["precision"] == pytest.approx(0.5)
    assert d["f1"] == pytest.approx(0.5) and d["fp_per_case"] == 1
    ref_lesions = [e for e in d["per_lesion"] if e["kind"] == "reference"]
    assert [e["detected"] for e in ref_lesions] == [True, False]
    l1 = ball(shape, (10, 10, 10), 4, spacing)
    p1 = ball(shape, (10, 11, 10), 4, spacing)
    assert ref_lesions[0]["dice"] == pytest.approx(M.segmentation_metrics(p1, l1, spacing)["dice"])
    assert ref_lesions[1]["dice"] == 0.0
    # raising the size limit drops lesions
    d2 = M.lesion_detection(pred, ref, spacing, min_volume_mm3=10_000)
    assert d2["n_ref"] == 0 and d2["status"] == "true_negative" and d2["sensitivity"] is None


def test_lesion_detection_empty_cases():
    z = np.zeros((10, 10, 10), np.uint8)
    d = M.lesion_detection(z, z, (1, 1, 1))
    assert d["status"] == "true_negative" and d["tp"] == d["fp"] == d["fn"] == 0 and d["f1"] is None
    m = z.copy()
    m[2:6, 2:6, 2:6] = 1
    d = M.lesion_detection(m, z, (1, 1, 1))
    assert d["fp"] == 1 and d["precision"] == 0.0 and d["sensitivity"] is None and d["f1"] == 0.0


def test_summarise_leaves_out_undefined():
    s = M.summarise([0.5, None, 0.7, float("nan"), 0.9])
    assert s["n"] == 3 and s["n_undefined"] == 2
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert s["median"] == pytest.approx(0.7) and s["q1"] == pytest.approx(0.6) and s["q3"] == pytest.approx(0.8)
    e = M.summarise([None, None])
    assert e["mean"] is None and e["n"] == 0 and e["n_undefined"] == 2
    assert M.summarise([1.0])["std"] is None
    assert M.format_mean_std(M.summarise([1.0, 3.0]), ".1f") == "2.0 ± 1.4 (n=2)"


@pytest.mark.parametrize("density", [0.0005, 0.005, 0.3])
def test_speckle_noise_many_boxes_and_non_contiguous_inputs_match_monai(density):
    rng = np.random.default_rng(int(density * 1e4))
    shape = (30, 40, 24)
    pred = rng.random(shape) < density
    ref = rng.random(shape) < density
    pred[3, 4, 5] = ref[20, 30, 10] = True
    spacing = (2.0, 0.6, 1.1)
    assert_matches_monai(np.asfortranarray(pred), ref.astype(np.int16), spacing)
    # a transposed view: strides not C-ordered
    pt, rt = pred.transpose(2, 1, 0), ref.transpose(2, 1, 0).astype(np.uint8)
    assert_matches_monai(pt, rt, spacing[::-1])
