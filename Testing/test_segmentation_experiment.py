"""Experiments: patient-grouped folds, leakage exclusion (test lesions never in that fold's synthetic set),
tables/statistics/report, resume."""

import csv
import json

import pytest

from _segmentation_helpers import make_dataset
from bonemet.dataset import Case, load_manifest, write_manifest
from bonemet.errors import InputError


def _cases(n, per_patient=2):
    return [Case({"id": f"c{i}", "ct": "", "femur": None, "lesion": "x", "patient": f"p{i // per_patient}"}, None)
            for i in range(n)]


def test_folds_grouped_by_patient_and_balanced():
    from bonemet.segmentation.experiment import assign_folds

    cases = _cases(12)
    folds = assign_folds(cases, 3, seed=0)
    by_patient = {}
    for c in cases:
        by_patient.setdefault(c.get("patient"), set()).add(folds[c.id])
    assert all(len(v) == 1 for v in by_patient.values())
    assert sorted(list(folds.values()).count(f) for f in range(3)) == [4, 4, 4]
    assert folds == assign_folds(cases, 3, seed=0)
    with pytest.raises(InputError):
        assign_folds(_cases(2), 3)


def test_precomputed_set_filtered_by_source_case(tmp_path):
    from bonemet.segmentation.experiment import allowed_cases, check_leakage

    recs = [{"id": f"s{i}", "ct": "x", "femur": None, "lesion": "y", "source_case": f"c{i % 3}"} for i in range(9)]
    write_manifest(tmp_path, recs)
    ids = allowed_cases(tmp_path, ["c1"])
    assert ids == ["s0", "s2", "s3", "s5", "s6", "s8"]
    assert check_leakage(tmp_path, ["c1"], set(ids)) == 6
    with pytest.raises(RuntimeError, match="leakage"):
        check_leakage(tmp_path, ["c1"])
    write_manifest(tmp_path, recs + [{"id": "s9", "ct": "x", "femur": None, "lesion": "y"}])
    with pytest.raises(InputError, match="source_case"):
        allowed_cases(tmp_path, ["c1"])


def test_statistics_and_tables():
    from bonemet.segmentation.experiment import statistics, summary_table

    rows = []
    for i in range(6):
        rows.append({"fold": 0, "case": f"c{i}", "set": "cv", "model": "real", "dice": 0.3 + 0.01 * i,
                     "hd": 10.0, "hd95": 8.0, "assd": 2.0})
        rows.append({"fold": 0, "case": f"c{i}", "set": "cv", "model": "synthetic", "dice": 0.6 + 0.02 * i,
                     "hd": 5.0 + i, "hd95": 4.0, "assd": None})
    table, num = summary_table(rows, ["real", "synthetic"])
    assert table[0]["model"] == "Real" and table[1]["dice"].startswith("0.65 ±")
    assert table[1]["assd"] == "n/a" and num[0]["dice_n"] == 6
    st = statistics(rows, ["real", "synthetic"], "dice")
    assert st["kruskal"]["p"] < 0.05
    assert st["pairwise"][0]["test"] == "wilcoxon" and st["pairwise"][0]["p_holm"] >= st["pairwise"][0]["p"]


@pytest.mark.slow
def test_small_experiment_leakage_report_and_resume(tmp_path):
    from bonemet.segmentation.experiment import run_experiment

    real = make_dataset(tmp_path / "real", n=4, healthy=2, seed=11)
    kw = dict(folds=2, preset="small", models=["real", "synthetic", "synthetic_ft"], sizes=["2", "full"],
              epochs=1, finetune_epochs=1, max_iterations=2, per_pair=1, max_synthetic=6, device="cpu",
              overrides={"val_every": 1})
    res = run_experiment(real, tmp_path / "exp", **kw)
    folds = json.loads((tmp_path / "exp" / "folds.json").read_text())["cases"]
    for f in range(2):
        test_ids = {cid for cid, v in folds.items() if v["fold"] == f}
        syn = load_manifest(tmp_path / "exp" / f"fold{f}" / "synthetic")
        assert syn, "synthetic set is empty"
        assert not {c.get("source_case") for c in syn} & test_ids  # leakage control
        assert {c.get("source_case") for c in syn} <= set(folds) - test_ids
    assert [r["model"] for r in res["table"]] == ["Real", "Synthetic", "Synthetic+FT"]
    assert all(r["n"] == 4 for r in res["table"])
    assert [r["model"] for r in res["sizes_table"]] == ["2 synthetic cases", "full synthetic set"]
    rows = list(csv.DictReader(open(res["per_case_csv"])))
    assert len(rows) == 4 * 4
    html = (tmp_path / "exp" / "report.html").read_text()
    assert "Table 2" in html and "Kruskal" in html or "Pairwise" in html
    # resume: everything is marked finished, the second run recomputes nothing and gives the same table
    res2 = run_experiment(real, tmp_path / "exp", **kw)
    assert res2["table"] == res["table"] and "training" not in res2["timings_s"]
