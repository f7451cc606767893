"""Training: a tiny U-Net overfits one case; resume; fine-tuning; femur channel / auxiliary target."""

import csv
import json

import numpy as np
import pytest

from _segmentation_helpers import dice, make_dataset, overfit_package, train_small
from bonemet.errors import InputError
from bonemet.io import read_ct, read_mask


@pytest.fixture(scope="session")
def overfit(tmp_path_factory):
    return overfit_package(tmp_path_factory.mktemp("seg_overfit"))


def test_tiny_unet_overfits_one_case(overfit):
    from bonemet.segmentation.package import load_package
    from bonemet.segmentation.predict import predict_volume

    pkg, ds, summary = overfit
    assert summary["best_val_dice"] > 0.9
    net, cfg = load_package(pkg)
    ct = read_ct(ds / "c00_ct.nii.gz")
    femur = read_mask(ds / "c00_femur.nii.gz", binary=False).array
    ref = read_mask(ds / "c00_lesion.nii.gz").array
    mask, prob = predict_volume(ct, net, cfg, femur, return_prob=True)
    assert mask.shape == ct.array.shape and mask.dtype == np.uint8
    assert dice(mask, ref) > 0.9
    assert prob.dtype == np.float32 and 0.0 <= prob.min() and prob.max() <= 1.0
    # learning curves and provenance
    rows = list(csv.DictReader(open(pkg / "history.csv")))
    assert len(rows) == 50 and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert (pkg / "curves.png").read_bytes()[:4] == b"\x89PNG"
    conf = json.loads((pkg / "config.json").read_text())
    assert len(conf["training"]["datasets"][0]["manifest_sha256"]) == 64
    assert conf["validation"]["best_val_dice"] > 0.9


def test_resume_continues_and_refuses_overwrite(tmp_path):
    ds = make_dataset(tmp_path / "ds", n=1)
    pkg = tmp_path / "pkg"
    train_small(pkg, ds, epochs=2, overrides={"val_every": 1, "patches_per_case": 2})
    with pytest.raises(InputError, match="--resume"):
        train_small(pkg, ds, epochs=4, overrides={"val_every": 1, "patches_per_case": 2})
    s = train_small(pkg, ds, epochs=4, resume=True, overrides={"val_every": 1, "patches_per_case": 2})
    rows = list(csv.DictReader(open(pkg / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert s["epochs_run"] == 4


def test_finetune_inherits_architecture_and_uses_finetune_lr(tmp_path, overfit):
    ds = make_dataset(tmp_path / "ds", n=1, seed=3)
    pkg = tmp_path / "ft"
    train_small(pkg, ds, epochs=1, init=overfit[0],
                overrides={"architecture": {"channels": [4, 8, 16]}, "patches_per_case": 2})
    conf = json.loads((pkg / "config.json").read_text())
    assert conf["architecture"]["channels"] == [8, 16, 32]  # from the initial package
    assert conf["optimizer"]["lr"] == pytest.approx(0.001)
    assert conf["training"]["init"] == str(overfit[0])
    assert conf["training"]["lr_decay"] == 1.0


def test_femur_channel_and_aux_target(tmp_path):
    from bonemet.segmentation.package import load_package
    from bonemet.segmentation.predict import predict_volume

    ds = make_dataset(tmp_path / "ds", n=1, healthy=1)
    pkg = tmp_path / "pkg"
    train_small(pkg, ds, epochs=2, overrides={"femur_channel": True, "aux_femur": True, "patches_per_case": 2})
    net, cfg = load_package(pkg)
    assert cfg["inputs"] == ["ct", "femur"] and cfg["outputs"] == ["lesion", "femur"]
    ct = read_ct(ds / "c01_ct.nii.gz")
    femur = read_mask(ds / "c01_femur.nii.gz", binary=False).array
    mask, _ = predict_volume(ct, net, cfg, femur)
    assert mask.shape == ct.array.shape


def test_validation_split_groups_patients():
    from bonemet.dataset import Case
    from bonemet.segmentation.train import split_validation

    cases = [Case({"id": f"c{i}", "ct": "", "femur": None, "lesion": "x", "patient": f"p{i // 2}"}, None)
             for i in range(10)]
    train, val = split_validation(cases, 0.2, seed=1)
    assert val and len(train) + len(val) == 10
    assert not {c.get("patient") for c in train} & {c.get("patient") for c in val}


def test_train_cli_errors(tmp_path):
    from bonemet.cli.main import main

    assert main(["train", str(tmp_path / "missing"), "-o", str(tmp_path / "pkg")]) == 2
    ds = make_dataset(tmp_path / "healthy", n=0, healthy=1)
    assert main(["train", str(ds), "-o", str(tmp_path / "pkg"), "--device", "cpu"]) == 2
    assert not (tmp_path / "pkg" / "config.json").exists()
