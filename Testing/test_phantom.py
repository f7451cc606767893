"""CT phantom cohort: determinism, manifest contract, anatomy, lesions, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from bonemet.cli.main import main
from bonemet.dataset import load_manifest
from bonemet.io import read_ct, read_mask
from bonemet.phantom import generate_cohort, make_case

LOCATIONS = {"head", "neck", "trochanter", "shaft"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    recs = generate_cohort(out, n=3, seed=11, preset="small", healthy_fraction=1 / 3, preview=True)
    return out, recs


@pytest.fixture(scope="module")
def case():
    return make_case("ph042", seed=5, preset="small", healthy=False, n_lesions=3)


def test_deterministic_per_seed_and_case():
    a = make_case("ph001", seed=3, atlas="Pelvic-Ref-004")
    b = make_case("ph001", seed=3, atlas="Pelvic-Ref-004")
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.femur, b.femur) and np.array_equal(a.lesion, b.lesion)
    assert a.geometry == b.geometry and a.meta == b.meta
    c = make_case("ph001", seed=4, atlas="Pelvic-Ref-004")
    assert c.ct.shape != a.ct.shape or not np.array_equal(c.ct, a.ct)


def test_small_preset_is_small(case):
    assert case.ct.dtype == np.int16
    assert case.ct.size <= 130 ** 3
    assert all(1.5 <= s <= 3.0 for s in case.geometry.spacing)


def test_manifest_contract(cohort):
    root, recs = cohort
    cases = load_manifest(root)  # validates ids, fields, files
    assert [c.id for c in cases] == ["ph000", "ph001", "ph002"]
    assert sum(r["healthy"] for r in recs) == 1
    assert json.loads((root / "dataset.json").read_text())["seed"] == 11
    for rec, c in zip(recs, cases):
        for key in ("id", "ct", "femur", "lesion", "patient", "centre", "spacing", "healthy", "lesions"):
            assert key in rec
        ct = read_ct(c.ct)
        np.testing.assert_allclose(ct.geometry.spacing, rec["spacing"], rtol=1e-5)
        fem = read_mask(c.femur, reference=ct, binary=False)
        assert set(np.unique(fem.array).tolist()) == {0, 1, 2}
        # label 1 = patient's right femur = smaller physical (LPS) x
        xs = {lab: ct.geometry.index_to_physical(np.argwhere(fem.array == lab).mean(0)[::-1])[0] for lab in (1, 2)}
        assert xs[1] < xs[2]
        if rec["healthy"]:
            assert rec["lesion"] is None and rec["lesions"] == []
            continue
        les = read_mask(c.lesion, reference=ct)
        assert les.array.any()
        assert np.all(fem.array[les.array > 0] > 0), "lesions lie inside the femurs"
        total = sum(d["volume_mm3"] for d in rec["lesions"])
        assert abs(les.array.sum() * ct.geometry.voxel_volume - total) < 1.0
        for d in rec["lesions"]:
            assert d["location"] in LOCATIONS and d["side"] in ("right", "left")
            assert d["volume_mm3"] > 16.0
        assert (root / rec["preview"]).stat().st_size > 5000


def test_anatomy_intensities(case):
    ct = case.ct.astype(np.float32)
    fem = case.femur > 0
    les = case.lesion > 0
    # cortical bone: the brightest femur voxels
    assert 1000 <= np.percentile(ct[fem], 99) <= 2000
    # trabecular / marrow interior away from the surface and lesions
    interior = ndi.binary_erosion(fem, iterations=3) & ~ndi.binary_dilation(les, iterations=2)
    med = np.median(ct[interior])
    assert -100 <= med <= 450
    # osteolytic lesions are dark (0-80 HU + noise/partial volume at the rim)
    core = ndi.binary_erosion(les)
    assert -40 <= np.median(ct[core if core.any() else les]) <= 150
    body = ct > -500
    soft = ct[body & ~ndi.binary_dilation(fem, iterations=2)]
    assert np.mean((soft > -140) & (soft < -60)) > 0.05, "fat present"
    assert np.mean((soft > 10) & (soft < 80)) > 0.15, "muscle present"
    assert ct.min() <= -950, "air outside the body"


def test_lesion_sizes_and_components(case):
    sp = case.geometry.spacing_zyx
    lab, n = ndi.label(case.lesion, structure=np.ones((3, 3, 3)))
    assert n == len(case.meta["lesions"]) >= 1
    vols = sorted(ndi.sum(case.lesion, lab, range(1, n + 1)) * np.prod(sp))
    assert vols == pytest.approx(sorted(d["volume_mm3"] for d in case.meta["lesions"]), abs=1.0)
    assert min(vols) > 16.0
    assert all(v / np.prod(sp) >= 3 for v in vols), "lesions are several voxels"


def test_lesion_volume_range_over_cases():
    vols = []
    for i in range(2):
        c = make_case(f"v{i}", seed=2, n_lesions=3, atlas="Pelvic-Ref-004", overrides={"lesion_volume_mm3": [17, 9000]})
        vols += [d["volume_mm3"] for d in c.meta["lesions"]]
    assert min(vols) > 16.0 and max(vols) < 20000


def test_healthy_case_has_no_lesion():
    c = make_case("h1", seed=1, healthy=True)
    assert not c.lesion.any() and c.healthy and c.meta["lesions"] == []


def test_resume_reuses_finished_cases(cohort):
    root, recs = cohort
    before = (root / recs[0]["ct"]).stat().st_mtime_ns
    again = generate_cohort(root, n=3, seed=11, preset="small", healthy_fraction=1 / 3, preview=True)
    assert again == recs
    assert (root / recs[0]["ct"]).stat().st_mtime_ns == before


def test_cli_in_process(tmp_path, capsys):
    assert main(["phantom", "-o", str(tmp_path / "d"), "--n", "1", "--seed", "2", "--healthy-fraction", "0"]) == 0
    cases = load_manifest(tmp_path / "d")
    assert len(cases) == 1 and cases[0].lesion is not None
    assert main(["phantom", "-o", str(tmp_path / "e"), "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
    assert main(["phantom", "-o", str(tmp_path / "e"), "--preset", "nope"]) == 2


def test_cli_subprocess(tmp_path):
    env = {**os.environ, "BONEMET_PROGRESS": "off", "OMP_NUM_THREADS": "1"}
    exe = [sys.executable, "-m", "bonemet"]
    help_ = subprocess.run([*exe, "phantom", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert help_.returncode == 0 and "--healthy-fraction" in help_.stdout and "--preview" in help_.stdout
    res = subprocess.run([*exe, "phantom", "-o", str(tmp_path / "p"), "--n", "1", "--seed", "9", "--preview"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "p" / "manifest.json").read_text())[0]
    assert (tmp_path / "p" / rec["ct"]).exists() and (tmp_path / "p" / "preview" / "ph000.png").exists()
