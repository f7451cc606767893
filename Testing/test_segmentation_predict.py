"""Inference: the mask lands on the input grid (anisotropic, oblique, flipped); ensembles; TTA; CLI."""

import json

import numpy as np
import pytest

from _segmentation_helpers import dice, overfit_package, phantom_arrays
from bonemet.io import Geometry, read_mask, write_mask, write_volume


@pytest.fixture(scope="session")
def overfit(tmp_path_factory):
    return overfit_package(tmp_path_factory.mktemp("seg_overfit"))


def _rot_x(deg):
    a = np.radians(deg)
    return tuple(np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]).ravel())


GRIDS = {
    "anisotropic": Geometry((56, 56, 26), (1.4, 1.4, 2.8), (-30.0, 12.0, 100.0)),
    "oblique": Geometry((46, 46, 36), (1.7, 1.7, 2.1), (5.0, -3.0, 7.0), _rot_x(20.0)),
    "flipped": Geometry((40, 40, 36), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)),
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_prediction_lands_on_input_grid(tmp_path, overfit, name):
    from bonemet.cli.main import main

    pkg, ds, _ = overfit
    rec = json.loads((ds / "manifest.json").read_text())[0]
    geo = GRIDS[name]
    ct, femur, ref = phantom_arrays(geo, seed=7, **rec["phantom"])
    write_volume(tmp_path / "ct.nrrd", ct, geo)
    write_mask(tmp_path / "femur.nii.gz", femur, geo)
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", str(tmp_path / "ct.nrrd"), "--model", str(pkg), "-o", str(out), "--femur",
                 str(tmp_path / "femur.nii.gz"), "--device", "cpu", "--prob", str(tmp_path / "p.nii.gz")]) == 0
    pred = read_mask(out)
    assert pred.geometry.same_grid(geo), name
    assert read_mask(out, reference=geo).array.shape == geo.shape
    assert dice(pred.array, ref) > 0.75, name
    prob = read_mask  # noqa: F841  (probability map is a float image on the same grid)
    from bonemet.io import read_ct

    p = read_ct(tmp_path / "p.nii.gz")
    assert p.geometry.same_grid(geo) and float(p.array.max()) <= 1.0


def test_two_femurs_ensemble_and_tta(overfit):
    from bonemet.segmentation.predict import load_models, predict_volume

    pkg, ds, _ = overfit
    rec = json.loads((ds / "manifest.json").read_text())[0]
    geo = Geometry((70, 40, 36), (2.0, 2.0, 2.0))
    # femur 1 at x = -30 mm with the lesion, femur 2 at x = +30 mm without
    ph = dict(rec["phantom"])
    ph["lesion_centre_mm"] = [ph["lesion_centre_mm"][0] - 30.0] + ph["lesion_centre_mm"][1:]
    ct, femur, ref = phantom_arrays(geo, femur_x_mm=(-30.0, 30.0), seed=3, **ph)
    from bonemet.io import Volume

    nets, cfg = load_models([pkg, pkg], "cpu")
    assert len(nets) == 2
    timings = {}
    mask, _ = predict_volume(Volume(ct, geo), nets, cfg, femur, tta=True, timings=timings)
    assert dice(mask, ref) > 0.8
    assert not mask[femur == 2].any()
    assert {"network", "preprocess", "postprocess", "resample_back"} <= set(timings)


def test_predict_segments_the_femur_itself(tmp_path, overfit):
    """No --femur: bonemet.femur segments it (on a phantom CT), the mask still lands on the CT grid."""
    from bonemet.cli.main import main
    from bonemet.io import read_ct
    from bonemet.phantom import generate_cohort

    pkg = overfit[0]
    rec = generate_cohort(tmp_path / "ph", n=1, seed=5, preset="small", healthy_fraction=0.0)[0]
    ct_path = tmp_path / "ph" / rec["ct"]
    out = tmp_path / "m.nrrd"
    assert main(["predict", str(ct_path), "--model", str(pkg), "-o", str(out), "--device", "cpu"]) == 0
    assert read_mask(out).geometry.same_grid(read_ct(ct_path).geometry)


def test_empty_femur_and_bad_grid_are_input_errors(tmp_path, overfit):
    from bonemet.cli.main import main

    pkg, ds, _ = overfit
    geo = Geometry((40, 40, 36), (2.0, 2.0, 2.0))
    write_mask(tmp_path / "empty.nii.gz", np.zeros(geo.shape, np.uint8), geo)
    out = tmp_path / "m.nii.gz"
    assert main(["predict", str(ds / "c00_ct.nii.gz"), "--model", str(pkg), "-o", str(out), "--femur",
                 str(tmp_path / "empty.nii.gz")]) == 2
    other = Geometry((40, 40, 30), (2.0, 2.0, 2.0))
    write_mask(tmp_path / "small.nii.gz", np.ones(other.shape, np.uint8), other)
    assert main(["predict", str(ds / "c00_ct.nii.gz"), "--model", str(pkg), "-o", str(out), "--femur",
                 str(tmp_path / "small.nii.gz")]) == 2
    assert not out.exists()
