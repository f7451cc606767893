"""End to end on the phantom cohort: bonemet phantom -> lesions extract -> synth (2 workers) -> preview."""

import json

import numpy as np
import pytest

from bonemet.cli.main import main as cli
from bonemet.dataset import load_manifest
from bonemet.io import read_ct, read_mask


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_phantom_to_synthetic_set(tmp_path):
    from bonemet.phantom import generate_cohort

    recs = generate_cohort(tmp_path / "ph", n=4, seed=3, preset="small", healthy_fraction=0.5)
    assert any(r["lesion"] for r in recs) and any(not r["lesion"] for r in recs)
    assert cli(["lesions", "extract", str(tmp_path / "ph"), "-o", str(tmp_path / "lib"), "--spacing", "2.0"]) == 0
    assert cli(["synth", "--lesions", str(tmp_path / "lib"), "--healthy", str(tmp_path / "ph"), "-o",
                str(tmp_path / "syn"), "--per-pair", "2", "--preset", "small", "--workers", "2", "--seed", "1",
                "--preview", str(tmp_path / "preview.png")]) == 0
    summary = json.loads((tmp_path / "syn" / "summary.json").read_text())
    lesioned = {r["id"] for r in recs if r["lesion"]}
    cases = load_manifest(tmp_path / "syn")
    assert summary["kept"] == len(cases) > 0 and summary["planned"] == summary["kept"] + summary["rejected"]
    for c in cases[:6]:
        assert c.record["source_case"] in lesioned and c.record["healthy_case"] not in lesioned
        ct = read_ct(c.ct)
        les = read_mask(c.lesion, reference=ct).array
        fem = read_mask(c.femur, reference=ct, binary=False).array
        assert ct.geometry.spacing == pytest.approx((2.0, 2.0, 2.0))
        assert les.any() and not np.any(les.astype(bool) & (fem == 0))
        assert les.sum() * 8.0 > 16.0
    assert (tmp_path / "preview.png").stat().st_size > 5000

    # healthy cases without a femur mask: the femur is segmented on the fly (bonemet.femur)
    m = json.loads((tmp_path / "ph" / "manifest.json").read_text())
    for r in m:
        if not r["lesion"]:
            r["femur"] = None
    (tmp_path / "ph" / "manifest.json").write_text(json.dumps(m))
    assert cli(["synth", "--lesions", str(tmp_path / "lib"), "--healthy", str(tmp_path / "ph"), "-o",
                str(tmp_path / "syn2"), "--per-pair", "1", "--preset", "small", "--max-cases", "2"]) == 0
    for c in load_manifest(tmp_path / "syn2"):
        les = read_mask(c.lesion).array
        fem = read_mask(c.femur, binary=False).array
        assert fem.any() and les.any() and not np.any(les.astype(bool) & (fem == 0))
