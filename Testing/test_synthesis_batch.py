"""Batch synthesis: manifest and provenance, bit-for-bit regeneration, leakage control, workers, resume after a
real kill, bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _synthesis_helpers import make_dataset
from bonemet.cli.main import main as cli
from bonemet.dataset import load_manifest, write_manifest
from bonemet.errors import InputError
from bonemet.io import Geometry, read_ct, read_mask, write_volume
from bonemet.synthesis.batch import fold_sources, regenerate_case, synthesize
from bonemet.synthesis.library import extract_library, load_library

SMALL = "small"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ds = make_dataset(root / "ds", n_lesioned=3, n_healthy=2)
    lib = extract_library(ds, root / "lib", spacing=1.0)
    return root, ds, lib


def _arrays(out, rec):
    return (read_ct(out / rec["ct"]).array, read_mask(out / rec["lesion"]).array,
            read_mask(out / rec["femur"], binary=False).array)


def test_synthesize_writes_dataset_with_provenance(data, tmp_path):
    root, ds, lib = data
    out = tmp_path / "out"
    s = synthesize(lib, ds, out, per_pair=2, seed=5, preset=SMALL)
    assert s["planned"] == 3 * 2 * 2 and s["kept"] + s["rejected"] == s["planned"] and s["kept"] > 0
    cases = load_manifest(out)                        # valid dataset folder, files present
    assert len(cases) == s["kept"]
    rec = cases[0].record
    for key in ("lesion_id", "source_case", "healthy_case", "application", "params", "seed", "spacing",
                "lesion_volume_mm3"):
        assert key in rec
    for key in ("crop_centre_vox", "crop_semi_axes_mm", "rotation_deg", "scale", "smoothing_size",
                "smoothing_weight", "noise_std_hu", "noise_seed", "centre_zyx", "femur_label"):
        assert key in rec["params"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == s["kept"]
    assert (out / "manifest.csv").read_text().count("\n") == s["kept"] + 1
    assert json.loads((out / "dataset.json").read_text())["kind"] == "synthetic"
    healthy_ids = {"hea00", "hea01"}
    for c in cases:
        ct, les, fem = _arrays(out, c.record)
        assert les.any() and not np.any(les.astype(bool) & (fem == 0))       # lesion ⊂ femur
        assert les.sum() * 1.0 > 16.0                                         # size filter (1 mm voxels)
        assert c.record["healthy_case"] in healthy_ids
        assert c.id == f"syn-{c.record['lesion_id']}-{c.record['healthy_case']}-{c.record['application']:02d}"
        # only the lesion neighbourhood differs from the healthy CT
        host = read_ct(ds / f"{c.record['healthy_case']}_ct.nii.gz").array
        diff = ct != host
        assert diff.any() and not np.any(diff & (fem == 0))


def test_regenerate_from_manifest_row_is_bit_for_bit(data, tmp_path):
    root, ds, lib = data
    out = tmp_path / "out"
    synthesize(lib, ds, out, per_pair=2, seed=11, preset="paper", spacing=0.9)   # resampled hosts too
    rows = json.loads((out / "manifest.json").read_text())
    assert rows
    library = load_library(lib)
    for row in rows[:4]:
        ct, les, grid = regenerate_case(row, library, ds)
        ct_f, les_f, _ = _arrays(out, row)
        assert np.array_equal(ct, ct_f) and np.array_equal(les, les_f)
        assert grid.geometry.spacing == pytest.approx((0.9, 0.9, 0.9))
    # a changed parameter changes the result (the row really drives it)
    row = dict(rows[0], params=dict(rows[0]["params"], rotation_deg=[0.0, 0.0, 1.0]))
    ct2, _, _ = regenerate_case(row, library, ds)
    assert not np.array_equal(ct2, _arrays(out, rows[0])[0])


def test_same_seed_same_result_any_workers(data, tmp_path):
    root, ds, lib = data
    a = synthesize(lib, ds, tmp_path / "a", per_pair=1, seed=3, preset=SMALL, workers=1)
    b = synthesize(lib, ds, tmp_path / "b", per_pair=1, seed=3, preset=SMALL, workers=2, chunk_size=1)
    c = synthesize(lib, ds, tmp_path / "c", per_pair=1, seed=4, preset=SMALL, workers=1)
    ra = json.loads((tmp_path / "a" / "manifest.json").read_text())
    rb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    rc = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert a["kept"] == b["kept"] and ra == rb
    assert [r["params"] for r in ra] != [r["params"] for r in rc]
    for r in ra:
        for x, y in zip(_arrays(tmp_path / "a", r), _arrays(tmp_path / "b", r)):
            assert np.array_equal(x, y)


def test_leakage_exclusion(data, tmp_path):
    root, ds, lib = data
    s = synthesize(lib, ds, tmp_path / "x", per_pair=1, seed=0, preset=SMALL, exclude_sources=["les00", "les02"])
    rows = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert s["excluded_lesions"] == ["les00_L01", "les02_L01"] and s["planned"] == 2
    assert rows and {r["source_case"] for r in rows} == {"les01"}
    with pytest.raises(InputError, match="excluded"):
        synthesize(lib, ds, tmp_path / "y", per_pair=1, exclude_sources=["les00", "les01", "les02"], preset=SMALL)
    # folds file: fold 1 = les01 -> only les00 and les02 lesions are used
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps([["les00"], ["les01"], ["les02"]]))
    assert fold_sources(folds, 1) == ["les01"]
    code = cli(["synth", "--lesions", str(lib), "--healthy", str(ds), "-o", str(tmp_path / "z"), "--per-pair", "1",
                "--preset", SMALL, "--exclude-fold", str(folds), "1"])
    assert code == 0
    rows = json.loads((tmp_path / "z" / "manifest.json").read_text())
    assert rows and "les01" not in {r["source_case"] for r in rows}
    folds.write_text(json.dumps({"les00": 0, "les01": 1, "les02": 0}))
    assert fold_sources(folds, 0) == ["les00", "les02"]
    with pytest.raises(InputError, match="fold 5"):
        fold_sources(_list_folds(tmp_path), 5)


def _list_folds(tmp_path):
    p = tmp_path / "f2.json"
    p.write_text(json.dumps({"folds": [["a"], ["b"]]}))
    return p


def test_rerun_with_other_arguments_is_refused(data, tmp_path):
    root, ds, lib = data
    synthesize(lib, ds, tmp_path / "o", per_pair=1, seed=0, preset=SMALL, max_cases=2)
    again = synthesize(lib, ds, tmp_path / "o", per_pair=1, seed=0, preset=SMALL, max_cases=4)
    assert again["resumed"] == 2 and again["computed_this_run"] == 2
    with pytest.raises(InputError, match="seed"):
        synthesize(lib, ds, tmp_path / "o", per_pair=1, seed=1, preset=SMALL)


def test_bad_healthy_inputs(data, tmp_path):
    root, ds, lib = data
    # femur too small for any lesion
    h = tmp_path / "h"
    ct = np.full((20, 20, 20), 40.0, np.float32)
    fem = np.zeros((20, 20, 20), np.uint8)
    fem[9:11, 9:11, 9:11] = 1     # 8 mm3
    geo = Geometry.from_array(ct)
    write_volume(h / "a_ct.nii.gz", ct, geo)
    write_volume(h / "a_femur.nii.gz", fem, geo)
    write_manifest(h, [{"id": "a", "ct": "a_ct.nii.gz", "femur": "a_femur.nii.gz", "lesion": None}])
    with pytest.raises(InputError, match=r"a_femur\.nii\.gz.*too small"):
        synthesize(lib, h, tmp_path / "o1", per_pair=1, preset=SMALL)
    # femur mask on another grid
    write_volume(h / "a_femur.nii.gz", fem, Geometry.from_array(ct, (2.0, 2.0, 2.0)))
    with pytest.raises(InputError, match="spacing"):
        synthesize(lib, h, tmp_path / "o2", per_pair=1, preset=SMALL)
    # no healthy case at all
    les_only = make_dataset(tmp_path / "l", n_lesioned=1, n_healthy=0)
    with pytest.raises(InputError, match="no healthy case"):
        synthesize(lib, les_only, tmp_path / "o3", per_pair=1, preset=SMALL)
    # empty library folder
    (tmp_path / "emptylib").mkdir()
    with pytest.raises(InputError, match="not a lesion library"):
        synthesize(tmp_path / "emptylib", ds, tmp_path / "o4", per_pair=1, preset=SMALL)
    assert cli(["synth", "--lesions", str(tmp_path / "emptylib"), "--healthy", str(ds), "-o",
                str(tmp_path / "o5")]) == 2
    assert not (tmp_path / "o1" / "manifest.json").exists()


def test_cli_lesions_extract_and_list(data, tmp_path, capsys):
    root, ds, lib = data
    assert cli(["lesions", "extract", str(ds), "-o", str(tmp_path / "lib"), "--spacing", "1.0",
                "--min-voxels", "26"]) == 0
    assert cli(["lesions", "list", str(tmp_path / "lib"), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in items] == ["les00_L01", "les01_L01", "les02_L01"]
    assert cli(["lesions", "extract", str(tmp_path / "missing"), "-o", str(tmp_path / "l2")]) == 2


def _synth_cmd(lib, ds, out):
    return [sys.executable, "-m", "bonemet", "synth", "--lesions", str(lib), "--healthy", str(ds), "-o", str(out),
            "--per-pair", "12", "--seed", "9", "--preset", "small"]


@pytest.mark.timeout(240)
def test_resume_after_real_kill(tmp_path):
    ds = make_dataset(tmp_path / "ds", n_lesioned=2, n_healthy=2, shape=(64, 56, 56))
    lib = extract_library(ds, tmp_path / "lib", spacing=1.0)
    env = {**os.environ, "BONEMET_PROGRESS": "off", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(_synth_cmd(lib, ds, out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / "records"
    deadline = time.time() + 120
    n_at_kill = 0
    while time.time() < deadline and proc.poll() is None:
        n_at_kill = len(list(records.glob("syn-*.json"))) if records.exists() else 0
        if n_at_kill >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    planned = 2 * 2 * 12
    done = len(list(records.glob("syn-*.json")))
    assert 5 <= done < planned
    assert not (out / "summary.json").exists()
    # every visible output file is complete (temp files are hidden and ignored)
    visible = [f for d in ("ct", "lesion", "femur") if (out / d).exists() for f in (out / d).iterdir()
               if not f.name.startswith(".")]
    assert visible
    for f in visible:
        read_ct(f)
    # re-run: only the missing cases are computed
    r = subprocess.run(_synth_cmd(lib, ds, out), env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["done"] == planned and s["resumed"] >= done and s["computed_this_run"] == planned - s["resumed"]
    assert not list(out.rglob(".*.tmp*"))
    # identical to an uninterrupted run
    ref = tmp_path / "ref"
    synthesize(lib, ds, ref, per_pair=12, seed=9, preset="small")
    m1 = json.loads((out / "manifest.json").read_text())
    m2 = json.loads((ref / "manifest.json").read_text())
    assert m1 == m2
    for rec in m1[::5]:
        for x, y in zip(_arrays(out, rec), _arrays(ref, rec)):
            assert np.array_equal(x, y)


def test_preview_montage_and_demo_helper(tmp_path):
    from bonemet.synthesis.demo import run_synthesis_demo

    ds = make_dataset(tmp_path / "ds", n_lesioned=2, n_healthy=1)
    res = run_synthesis_demo(ds, tmp_path / "demo", spacing=1.0, per_pair=1, preview_n=2)
    assert res["n_lesions"] == 2 and res["summary"]["kept"] >= 1
    png = Path(res["preview"])
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert len(load_manifest(res["synthetic"])) == res["summary"]["kept"]


def test_cli_set_overrides_reach_the_parameters(data, tmp_path):
    root, ds, lib = data
    out = tmp_path / "s"
    assert cli(["synth", "--lesions", str(lib), "--healthy", str(ds), "-o", str(out), "--per-pair", "1",
                "--preset", SMALL, "--set", "scale=[1.0,1.0]", "--set", "smoothing.weight=[0.0,0.0]",
                "--set", "noise_std_hu=[3.0,3.0]"]) == 0
    for r in json.loads((out / "manifest.json").read_text()):
        assert r["params"]["scale"] == [1.0, 1.0, 1.0] and r["params"]["smoothing_weight"] == 0.0
        assert r["params"]["noise_std_hu"] == 3.0
    assert cli(["synth", "--lesions", str(lib), "--healthy", str(ds), "-o", str(tmp_path / "t"),
                "--set", "scale=[1.0"]) == 2
