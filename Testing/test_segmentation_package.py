"""Model packages: round trip (folder and zip), refusal of tampered / incompatible packages, ensembles."""

import json
import shutil

import numpy as np
import pytest

from bonemet.errors import ModelError


@pytest.fixture()
def pkg(tmp_path):
    import torch

    from bonemet.segmentation.config import make_config
    from bonemet.segmentation.network import build_network
    from bonemet.segmentation.package import save_package

    cfg = make_config("small")
    torch.manual_seed(0)
    net = build_network(cfg)
    path = save_package(tmp_path / "pkg", net, cfg, metrics={"best_val_dice": 0.5})
    return path, net, cfg


def _outputs(net):
    import torch

    torch.manual_seed(1)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        return net.eval()(x).numpy()


def test_round_trip_folder_and_zip(pkg, tmp_path):
    from bonemet.segmentation.package import load_package, read_config, save_package

    path, net, cfg = pkg
    net2, cfg2 = load_package(path)
    assert np.allclose(_outputs(net), _outputs(net2))
    conf = read_config(path)
    for key in ("architecture", "spacing", "intensity", "patch_size", "labels", "bonemet_version", "weights",
                "validation", "format_version"):
        assert key in conf
    assert conf["labels"]["1"] == "lesion" and len(conf["weights"]["sha256"]) == 64
    z = save_package(tmp_path / "pkg.zip", net2, cfg2)
    net3, _ = load_package(z)
    assert np.allclose(_outputs(net), _outputs(net3))


def test_tampered_weights_refused(pkg):
    from bonemet.segmentation.package import load_package

    path = pkg[0]
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="tampered"):
        load_package(path)


def test_tampered_config_refused(pkg):
    from bonemet.segmentation.package import load_package

    path = pkg[0]
    conf = json.loads((path / "config.json").read_text())
    conf["spacing"] = [0.5, 0.5, 0.5]
    (path / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ModelError, match="modified"):
        load_package(path)


def _rewrite(path, **changes):
    from bonemet.segmentation.package import _config_digest

    conf = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        conf[k] = v
    conf["config_sha256"] = _config_digest(conf)
    (path / "config.json").write_text(json.dumps(conf))


@pytest.mark.parametrize("change, message", [
    ({"architecture": {"name": "monai.UNet", "channels": [8, 16, 64], "strides": [2, 2], "num_res_units": 1,
                       "norm": "instance"}}, "wrong shape"),
    ({"femur_channel": True}, "wrong shape"),
    ({"architecture": {"name": "nnunet.PlainConvUNet", "channels": [8, 16, 32], "strides": [2, 2]}},
     "unknown architecture"),
    ({"format_version": 99}, "newer"),
    ({"bonemet_version": "7.0.0"}, "incompatible"),
    ({"format": "something-else"}, "unknown package format"),
])
def test_incompatible_packages_refused(pkg, change, message):
    from bonemet.segmentation.package import load_package

    _rewrite(pkg[0], **change)
    with pytest.raises(ModelError, match=message):
        load_package(pkg[0])


def test_missing_files_and_not_a_package(tmp_path, pkg):
    from bonemet.segmentation.package import load_package

    with pytest.raises(ModelError, match="not found"):
        load_package(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_package(tmp_path / "empty")
    (pkg[0] / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_package(pkg[0])


def test_weights_are_not_pickles(pkg):
    head = (pkg[0] / "model.safetensors").read_bytes()[:16]
    assert not head.startswith(b"PK") and not head.startswith(b"\x80")  # neither zip (torch.save) nor pickle


def test_folder_of_packages_is_an_ensemble(pkg, tmp_path):
    from bonemet.segmentation.predict import load_models

    folds = tmp_path / "folds"
    folds.mkdir()
    for i in range(3):
        shutil.copytree(pkg[0], folds / f"fold{i}")
    nets, cfg = load_models(folds)
    assert len(nets) == 3
    other = tmp_path / "other"
    shutil.copytree(pkg[0], other)
    _rewrite(other, spacing=[1.0, 1.0, 1.0])
    with pytest.raises(ModelError, match="cannot ensemble"):
        load_models([folds, other])


def test_cli_refuses_tampered_package_with_exit_code(tmp_path, pkg):
    from bonemet.cli.main import main
    from bonemet.io import Geometry, write_mask, write_volume

    geo = Geometry((20, 20, 20), (2.0, 2.0, 2.0))
    write_volume(tmp_path / "ct.nii.gz", np.zeros(geo.shape, np.float32), geo)
    write_mask(tmp_path / "f.nii.gz", np.ones(geo.shape, np.uint8), geo)
    data = bytearray((pkg[0] / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (pkg[0] / "model.safetensors").write_bytes(bytes(data))
    code = main(["predict", str(tmp_path / "ct.nii.gz"), "--model", str(pkg[0]), "-o", str(tmp_path / "m.nii.gz"),
                 "--femur", str(tmp_path / "f.nii.gz")])
    assert code == 3 and not (tmp_path / "m.nii.gz").exists()
