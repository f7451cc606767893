"""Interactive placement API: coordinates (IJK / RAS / LPS), determinism, errors, snapping, CLI."""


import numpy as np
import pytest

from _synthesis_helpers import femur_volume, make_dataset
from bonemet.cli.main import main as cli
from bonemet.errors import InputError
from bonemet.io import Geometry, read_ct, read_mask
from bonemet.synthesis.insertion import insert_lesion
from bonemet.synthesis.library import extract_items, extract_library, load_library
from bonemet.synthesis.placement import place_lesion, point_to_index


@pytest.fixture(scope="module")
def scene():
    ct, fem, les = femur_volume((40, 36, 36), 1.0, seed=1, lesions=[((20, 18, 18), 6.0)])
    src_geo = Geometry.from_array(ct, (1.0, 1.0, 1.0))
    item = extract_items(ct, les, src_geo, "src")[0]
    host_ct, host_fem, _ = femur_volume((44, 40, 40), 0.8, seed=2, radius_mm=13.0, side=2)
    # oblique-ish grid: flipped axes, non-zero origin, anisotropic spacing order in x/y/z
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    geo = Geometry.from_array(host_ct, (0.8, 0.8, 0.8), origin=(30.0, 20.0, -100.0), direction=direction)
    return host_ct, host_fem, geo, item


def test_ijk_ras_lps_give_the_same_voxel(scene):
    ct, fem, geo, item = scene
    ijk = (20, 19, 22)   # i (x), j (y), k (z)
    lps = geo.index_to_physical(ijk)
    ras = (-lps[0], -lps[1], lps[2])
    assert np.allclose(point_to_index(ijk, geo, "ijk"), (22, 19, 20))
    assert np.allclose(point_to_index(lps, geo, "lps"), (22, 19, 20))
    assert np.allclose(point_to_index(ras, geo, "ras"), (22, 19, 20))
    a = place_lesion(ct, fem, geo, item, ijk, "ijk", crop_seed=3, noise_hu=10.0)
    b = place_lesion(ct, fem, geo, item, ras, "ras", crop_seed=3, noise_hu=10.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2]["centre_zyx"] == [22, 19, 20] and a[2]["centre_ijk"] == [20, 19, 22]


def test_place_is_deterministic_and_contained(scene):
    ct, fem, geo, item = scene
    kw = dict(scale=1.2, rotation_deg=(10, 20, 30), crop_seed=5, smoothing=(3, 0.8), noise_hu=15.0)
    new1, les1, info1 = place_lesion(ct, fem, geo, item, (20, 20, 22), **kw)
    new2, les2, info2 = place_lesion(ct, fem, geo, item, (20, 20, 22), **kw)
    assert np.array_equal(new1, new2) and np.array_equal(les1, les2) and info1 == info2
    assert new1.shape == ct.shape and new1.dtype == np.float32 and les1.dtype == np.uint8
    assert les1.any() and not np.any(les1.astype(bool) & (fem == 0)) and info1["kept"]
    assert info1["volume_mm3"] == pytest.approx(les1.sum() * 0.8 ** 3)
    assert not np.any((new1 != ct) & (fem == 0))
    # another crop seed / scale gives another lesion
    _, les3, _ = place_lesion(ct, fem, geo, item, (20, 20, 22), **{**kw, "crop_seed": 6})
    assert not np.array_equal(les1, les3)
    _, les4, _ = place_lesion(ct, fem, geo, item, (20, 20, 22), **{**kw, "scale": 0.8})
    assert les4.sum() < les1.sum()
    # the whole lesion without crop is bigger than a cropped one
    _, whole, _ = place_lesion(ct, fem, geo, item, (20, 20, 22), crop_seed=None)
    _, cropped, _ = place_lesion(ct, fem, geo, item, (20, 20, 22), crop_seed=0)
    assert whole.sum() >= cropped.sum()
    # the returned params regenerate the same result through the batch insertion code
    ins = insert_lesion(ct, fem, geo.spacing_zyx, item.patch, item.mask, item.spacing_zyx, info1["params"])
    regen, regen_les = ins.apply(ct)
    assert np.array_equal(regen, new1) and np.array_equal(regen_les, les1)


def test_point_outside_femur_error_or_snap(scene):
    ct, fem, geo, item = scene
    with pytest.raises(InputError, match="outside the femur"):
        place_lesion(ct, fem, geo, item, (1, 1, 20))
    with pytest.raises(InputError, match="outside the volume"):
        place_lesion(ct, fem, geo, item, (500, 1, 20))
    new, les, info = place_lesion(ct, fem, geo, item, (1, 1, 20), snap=True)
    assert info["snapped"] and info["snap_distance_mm"] > 0
    assert fem[tuple(info["centre_zyx"])] > 0 and les.any()
    with pytest.raises(InputError):
        place_lesion(ct, fem, geo, item, (1, 2))
    with pytest.raises(InputError, match="scale"):
        place_lesion(ct, fem, geo, item, (20, 20, 22), scale=0)
    with pytest.raises(InputError, match="differ"):
        place_lesion(ct, fem[:-1], geo, item, (20, 20, 22))


def test_cli_place(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_lesioned=1, n_healthy=1)
    lib = extract_library(ds, tmp_path / "lib", spacing=1.0)
    item_id = load_library(lib).ids()[0]
    args = ["place", "--lesions", str(lib), "--lesion-id", item_id, "--ct", str(ds / "hea00_ct.nii.gz"),
            "--femur", str(ds / "hea00_femur.nii.gz"), "-o", str(tmp_path / "p.nii.gz"),
            "--mask-out", str(tmp_path / "pm.nii.gz")]
    assert cli(args + ["--point", "18", "18", "20", "--scale", "1.1", "--rotation", "0", "30", "0",
                       "--noise", "5"]) == 0
    ct = read_ct(tmp_path / "p.nii.gz")
    les = read_mask(tmp_path / "pm.nii.gz", reference=ct)
    assert les.array.any()
    assert cli(args + ["--point", "0", "0", "0"]) == 2                    # outside the femur
    assert cli(args + ["--point", "0", "0", "20", "--snap"]) == 0
    assert cli(args[:4] + ["nope"] + args[5:] + ["--point", "18", "18", "20"]) == 2   # unknown lesion id
