"""Lesion library: extraction from a dataset folder, validation on load, bad inputs."""

import json
import shutil

import numpy as np
import pytest

from _synthesis_helpers import make_dataset
from bonemet.dataset import write_manifest
from bonemet.errors import InputError
from bonemet.io import Geometry, write_volume
from bonemet.synthesis.library import extract_items, extract_library, load_library


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds") / "ds", n_lesioned=2, n_healthy=1)


def test_extract_library_items_and_metadata(dataset, tmp_path):
    out = extract_library(dataset, tmp_path / "lib", spacing=1.0, min_voxels=26)
    lib = load_library(out)
    # les00 has a big lesion and a tiny one (< 26 voxels) that is ignored
    assert lib.ids() == ["les00_L01", "les01_L01"]
    assert lib.sources() == ["les00", "les01"]
    info = json.loads((out / "index.json").read_text())
    assert info["n_below_min_voxels"] == 1 and info["spacing"] == [1.0, 1.0, 1.0]
    for it in lib:
        assert it.patch.shape == it.mask.shape and it.patch.dtype == np.float32 and it.mask.dtype == np.uint8
        assert it.voxels >= 26 and it.volume_mm3 == pytest.approx(it.voxels * 1.0)
        assert it.meta["volume_mm3"] == pytest.approx(it.volume_mm3)
        assert it.spacing == (1.0, 1.0, 1.0)
        assert it.patch[it.mask > 0].mean() < 100                 # the lesion is dark
        assert it.patch[it.mask == 0].mean() > it.patch[it.mask > 0].mean()
        assert it.meta["location"]["side"] in ("right", "left")
        assert len(it.meta["bbox_zyx"]) == 3 and len(it.meta["centroid_lps"]) == 3
    assert lib.get("les01_L01").meta["location"]["side"] == "left"


def test_extract_resamples_to_working_spacing(dataset, tmp_path):
    lib1 = load_library(extract_library(dataset, tmp_path / "a", spacing=1.0))
    lib2 = load_library(extract_library(dataset, tmp_path / "b", spacing=0.85))
    it1, it2 = lib1.get("les01_L01"), lib2.get("les01_L01")
    assert it2.spacing == (0.85, 0.85, 0.85)
    assert it2.voxels > it1.voxels                                    # more, smaller voxels
    assert abs(it2.volume_mm3 - it1.volume_mm3) / it1.volume_mm3 < 0.1  # same physical volume


def test_min_voxels_is_configurable(dataset, tmp_path):
    lib = load_library(extract_library(dataset, tmp_path / "lib", spacing=1.0, min_voxels=3))
    assert len(lib) == 3


def test_load_library_validation(dataset, tmp_path):
    out = extract_library(dataset, tmp_path / "lib", spacing=1.0)
    with pytest.raises(InputError, match="not found"):
        load_library(tmp_path / "nope")
    with pytest.raises(InputError, match="no index.json"):
        load_library(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "items" / "les00_L01.npz").unlink()
    with pytest.raises(InputError, match="les00_L01.npz is missing"):
        load_library(bad)
    (bad / "items" / "les00_L01.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt"):
        load_library(bad)
    idx = json.loads((out / "index.json").read_text())
    idx["items"] = []
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.json").write_text(json.dumps(idx))
    with pytest.raises(InputError, match="empty"):
        load_library(empty)
    (empty / "index.json").write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        load_library(empty)


def _one_case(root, ct, les, geo_ct, geo_les):
    write_volume(root / "c_ct.nii.gz", ct, geo_ct)
    write_volume(root / "c_les.nii.gz", les, geo_les)
    write_manifest(root, [{"id": "c", "ct": "c_ct.nii.gz", "femur": None, "lesion": "c_les.nii.gz"}])
    return root


def test_mismatched_grids_is_a_clear_error(tmp_path):
    ct = np.zeros((20, 20, 20), np.float32)
    les = np.zeros((20, 20, 20), np.uint8)
    les[8:12, 8:12, 8:12] = 1
    geo = Geometry.from_array(ct, (1.0, 1.0, 1.0))
    shifted = Geometry.from_array(ct, (1.0, 1.0, 1.0), origin=(50.0, 0.0, 0.0))  # mask lies outside the CT
    root = _one_case(tmp_path / "ds", ct, les, geo, shifted)
    with pytest.raises(InputError, match=r"c_les\.nii\.gz.*origin"):
        extract_library(root, tmp_path / "lib")
    root2 = _one_case(tmp_path / "ds2", ct, les[:, :, :10], geo, Geometry.from_array(les[:, :, :10]))
    with pytest.raises(InputError, match=r"c_les\.nii\.gz.*size"):
        extract_library(root2, tmp_path / "lib2")
    assert not (tmp_path / "lib" / "index.json").exists()


def test_no_qualifying_lesion_is_an_error(tmp_path):
    ct = np.zeros((20, 20, 20), np.float32)
    les = np.zeros((20, 20, 20), np.uint8)
    les[5:7, 5:7, 5:7] = 1   # 8 voxels only
    geo = Geometry.from_array(ct)
    root = _one_case(tmp_path / "ds", ct, les, geo, geo)
    with pytest.raises(InputError, match="empty library"):
        extract_library(root, tmp_path / "lib", spacing=None)
    assert not (tmp_path / "lib" / "index.json").exists()
    healthy_only = make_dataset(tmp_path / "h", n_lesioned=0, n_healthy=1)
    with pytest.raises(InputError, match="no case with a lesion"):
        extract_library(healthy_only, tmp_path / "lib")


def test_extract_items_on_arrays():
    ct = np.full((20, 20, 20), 300.0, np.float32)
    les = np.zeros((20, 20, 20), np.uint8)
    les[0:4, 0:4, 0:4] = 1       # touches the border
    les[10:15, 10:15, 10:15] = 1
    items = extract_items(ct, les, Geometry.from_array(ct, (2.0, 2.0, 2.0)), "x", min_voxels=26)
    assert [it.id for it in items] == ["x_L01", "x_L02"]
    assert items[0].meta["touches_volume_border"] and not items[1].meta["touches_volume_border"]
    assert items[1].volume_mm3 == pytest.approx(125 * 8.0)
    with pytest.raises(InputError):
        extract_items(ct, les[:5], Geometry.from_array(ct), "x")


def test_extract_from_volumes_and_save_library_append(dataset, tmp_path):
    from bonemet.io import Volume, read_ct, read_mask
    from bonemet.synthesis.library import extract_from_volumes, save_library

    ct = read_ct(dataset / "les01_ct.nii.gz")
    les = read_mask(dataset / "les01_lesion.nii.gz", reference=ct)
    items, n_small = extract_from_volumes(ct, les, "slicer-case", spacing=0.85)
    assert len(items) == 1 and n_small == 0 and items[0].spacing == (0.85, 0.85, 0.85)
    base = extract_library(dataset, tmp_path / "lib", spacing=0.85)
    save_library(items, base, append=True)
    lib = load_library(base)
    assert lib.ids() == ["les00_L01", "les01_L01", "slicer-case_L01"]
    assert lib.info["spacing"] == [0.85, 0.85, 0.85]
    save_library(items, tmp_path / "new")
    assert load_library(tmp_path / "new").ids() == ["slicer-case_L01"]
    with pytest.raises(InputError, match="not on the CT grid"):
        extract_from_volumes(ct, Volume(les.array, Geometry.from_array(les.array, (2.0, 2.0, 2.0))), "x")
    with pytest.raises(InputError, match="empty"):
        save_library([], tmp_path / "none")
