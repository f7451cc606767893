"""Post-processing rules: restrict to the dilated femur, fill holes, drop components < 16 mm³."""

import numpy as np

from bonemet.segmentation.postprocess import dilate_mm, postprocess, remove_small_components


def test_small_components_removed_by_physical_volume():
    m = np.zeros((20, 20, 20), np.uint8)
    m[2:5, 2:5, 2:5] = 1        # 27 voxels
    m[10:12, 10:12, 10:12] = 1  # 8 voxels
    out = remove_small_components(m, (1.0, 1.0, 1.0), 16.0)
    assert out[3, 3, 3] and not out[10, 10, 10]
    # same voxels with 2 mm spacing: 8 voxels = 64 mm³ → kept
    out = remove_small_components(m, (2.0, 2.0, 2.0), 16.0)
    assert out[10, 10, 10]
    # anisotropic: 27 voxels * 0.5 mm³ = 13.5 mm³ → removed
    assert not remove_small_components(m, (0.5, 1.0, 1.0), 16.0).any()


def test_diagonal_voxels_form_one_component():
    m = np.zeros((10, 10, 10), np.uint8)
    for i in range(4):
        m[i + 2, i + 2, i + 2] = 1
    assert remove_small_components(m, (2.0, 2.0, 2.0), 16.0).sum() == 4  # 26-connected: 32 mm³


def test_restrict_to_dilated_femur():
    femur = np.zeros((30, 30, 30), np.uint8)
    femur[10:20, 10:20, 10:20] = 2
    pred = np.zeros_like(femur)
    pred[8:22, 15, 15] = 1      # sticks out 2 voxels each side
    pred[0:4, 0:4, 0:4] = 1     # far away
    out = postprocess(pred, (1.0, 1.0, 1.0), femur, {"femur_dilation_mm": 3.0, "min_component_mm3": 0.0})
    assert out[8:22, 15, 15].all() and not out[0:4, 0:4, 0:4].any()
    out = postprocess(pred, (1.0, 1.0, 1.0), femur, {"femur_dilation_mm": 1.0, "min_component_mm3": 0.0})
    assert out[9:21, 15, 15].all() and not out[8, 15, 15] and not out[21, 15, 15]
    # dilation is physical: 3 mm with 2 mm z-spacing reaches 1 voxel in z
    d = dilate_mm(femur, (2.0, 1.0, 1.0), 3.0)
    assert d[9, 15, 15] and not d[8, 15, 15] and d[15, 15, 7] and not d[15, 15, 6]


def test_holes_filled_and_dtype():
    pred = np.zeros((20, 20, 20), np.uint8)
    pred[5:15, 5:15, 5:15] = 1
    pred[8:12, 8:12, 8:12] = 0
    out = postprocess(pred, (1.0, 1.0, 1.0), None)
    assert out.dtype == np.uint8 and out[10, 10, 10] == 1 and out.sum() == 1000
    out = postprocess(pred, (1.0, 1.0, 1.0), None, {"fill_holes": False})
    assert out[10, 10, 10] == 0


def test_empty_prediction_stays_empty():
    assert postprocess(np.zeros((5, 5, 5)), (1, 1, 1), np.ones((5, 5, 5))).sum() == 0
