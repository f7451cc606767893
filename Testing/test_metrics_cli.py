"""``bonemet compare`` and ``bonemet evaluate``: files, CSV/JSON outputs, HTML report, bad input."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from _evaluation_helpers import SPACING_XYZ, ct_for, femur_map, lesion, write
from bonemet.cli.main import main
from bonemet.metrics import lesion_detection, segmentation_metrics

SP_ZYX = SPACING_XYZ[::-1]


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_json_and_table(tmp_path, capsys):
    ref, pred = lesion(), lesion(offset=(1, 1, 0))
    a, b = write(tmp_path / "a.nii.gz", pred), write(tmp_path / "b.nrrd", ref)
    femur = write(tmp_path / "femur.nii.gz", femur_map())
    code, out, _ = run_cli(["compare", str(a), str(b), "--json", "--femur", str(femur)], capsys)
    assert code == 0
    res = json.loads(out)  # exactly one JSON object
    exp = segmentation_metrics(pred, ref, SP_ZYX)
    for k in ("dice", "hd", "hd95", "assd"):
        assert res[k] == pytest.approx(exp[k])
    assert res["status"] == "ok" and res["per_side"]["right"]["status"] in ("ok", "true_negative")
    assert res["lesion_tp"] == lesion_detection(pred, ref, SP_ZYX)["tp"]
    code, out, _ = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 0 and f"{exp['dice']:.4f}" in out and "hd95" in out


def test_compare_empty_masks_give_nulls(tmp_path, capsys):
    z = np.zeros((20, 28, 36), np.uint8)
    a, b = write(tmp_path / "a.nii.gz", z), write(tmp_path / "b.nii.gz", z)
    code, out, _ = run_cli(["compare", str(a), str(b), "--json"], capsys)
    res = json.loads(out)
    assert res["dice"] is None and res["hd"] is None and res["hd95"] is None and res["assd"] is None
    assert res["status"] == "true_negative" and "true negative" in res["note"]
    code, out, _ = run_cli(["compare", str(a), str(b)], capsys)
    assert "n/a" in out and "true negative" in out


def test_compare_bad_input(tmp_path, capsys):
    ref = lesion()
    a = write(tmp_path / "a.nii.gz", ref)
    other = write(tmp_path / "small.nii.gz", np.zeros((10, 10, 10), np.uint8))
    code, _, err = run_cli(["compare", str(a), str(other)], capsys)
    assert code != 0 and "grid" in err and "a.nii.gz" in err
    nb = write(tmp_path / "nb.nii.gz", (ref * 3).astype(np.uint8))
    code, _, err = run_cli(["compare", str(nb), str(a)], capsys)
    assert code != 0 and "binary" in err
    code, _, err = run_cli(["compare", str(tmp_path / "missing.nii.gz"), str(a)], capsys)
    assert code != 0 and "not found" in err


def test_compare_json_via_subprocess_is_one_object(tmp_path):
    a = write(tmp_path / "a.nii.gz", lesion())
    r = subprocess.run([sys.executable, "-m", "bonemet", "compare", str(a), str(a), "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dice"] == 1.0


def make_eval_dirs(tmp_path):
    pred_dir, ref_dir, ct_dir, fem_dir = (tmp_path / n for n in ("pred", "ref", "ct", "femur"))
    cases = {"c1": (lesion(), lesion(offset=(0, 1, 1))), "c2": (lesion(), lesion(scale=0.8)),
             "c3": (np.zeros((20, 28, 36), np.uint8), np.zeros((20, 28, 36), np.uint8)),   # true negative
             "c4": (lesion(), np.zeros((20, 28, 36), np.uint8))}                            # missed everything
    for name, (ref, pred) in cases.items():
        write(ref_dir / f"{name}.nii.gz", ref)
        write(pred_dir / f"{name}.nrrd", pred)
        write(ct_dir / f"{name}.nii.gz", ct_for(ref))
        write(fem_dir / f"{name}.nii.gz", femur_map())
    write(ref_dir / "only_ref.nii.gz", lesion())
    write(pred_dir / "only_pred.nii.gz", lesion())
    return pred_dir, ref_dir, ct_dir, fem_dir, cases


def test_evaluate_outputs(tmp_path, capsys):
    pred_dir, ref_dir, ct_dir, fem_dir, cases = make_eval_dirs(tmp_path)
    out = tmp_path / "out"
    html = tmp_path / "report.html"
    code, stdout, _ = run_cli(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(out),
                               "--report", str(html), "--ct", str(ct_dir), "--femur", str(fem_dir)], capsys)
    assert code == 0
    rows = {r["case"]: r for r in csv.DictReader(open(out / "cases.csv"))}
    assert set(rows) == {"c1", "c2", "c3", "c4"}
    exp = segmentation_metrics(cases["c1"][1], cases["c1"][0], SP_ZYX)
    assert float(rows["c1"]["dice"]) == pytest.approx(exp["dice"], abs=1e-6)
    assert float(rows["c1"]["hd95"]) == pytest.approx(exp["hd95"], abs=1e-5)
    assert rows["c3"]["status"] == "true_negative" and rows["c3"]["dice"] == ""
    assert rows["c4"]["status"] == "pred_empty" and float(rows["c4"]["dice"]) == 0.0 and rows["c4"]["hd"] == ""
    assert "right_dice" in rows["c1"] and "left_status" in rows["c1"]
    summary = json.loads((out / "summary.json").read_text())
    d = summary["metrics"]["dice"]
    dices = [segmentation_metrics(p, r, SP_ZYX)["dice"] for r, p in [cases["c1"], cases["c2"], cases["c4"]]]
    assert d["n"] == 3 and d["n_undefined"] == 1 and d["mean"] == pytest.approx(np.mean(dices))
    assert d["std"] == pytest.approx(np.std(dices, ddof=1)) and d["median"] == pytest.approx(np.median(dices))
    assert summary["missing_prediction"] == ["only_ref"] and summary["missing_reference"] == ["only_pred"]
    srows = {r["metric"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert float(srows["dice"]["mean"]) == pytest.approx(np.mean(dices), abs=1e-6) and "iqr" in srows["dice"]
    assert (out / "lesions.csv").exists()
    text = html.read_text()
    assert "<img" in text and "data:image/png;base64" in text and "http://" not in text and "https://" not in text
    assert f"{dices[0]:.3f}" in text and "c4" in text and "true negative" in text
    assert text.index(">c4<") < text.index(">c1<")  # worst first
    assert "without prediction" in text or "only_ref" in text
    assert "only_ref" in stdout


def test_evaluate_dataset_folder_reference(tmp_path, capsys):
    """A dataset folder (manifest.json) as reference: healthy cases have an empty reference."""
    from bonemet.dataset import write_manifest

    ds = tmp_path / "ds"
    recs = []
    for name, les in (("h1", None), ("l1", lesion())):
        ct = write(ds / "ct" / f"{name}.nii.gz", ct_for(les if les is not None else np.zeros((20, 28, 36), np.uint8)))
        fem = write(ds / "femur" / f"{name}.nii.gz", femur_map())
        rec = {"id": name, "ct": f"ct/{ct.name}", "femur": f"femur/{fem.name}", "lesion": None}
        if les is not None:
            write(ds / "lesion" / f"{name}.nii.gz", les)
            rec["lesion"] = f"lesion/{name}.nii.gz"
        recs.append(rec)
    write_manifest(ds, recs)
    pred = tmp_path / "pred"
    write(pred / "h1.nii.gz", np.zeros((20, 28, 36), np.uint8))
    write(pred / "l1.nii.gz", lesion(offset=(1, 0, 0)))
    code, _, _ = run_cli(["evaluate", "--pred", str(pred), "--ref", str(ds), "-o", str(tmp_path / "o")], capsys)
    assert code == 0
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "o" / "cases.csv"))}
    assert rows["h1"]["status"] == "true_negative" and rows["l1"]["status"] == "ok"
    assert rows["l1"]["right_status"] and rows["l1"]["left_status"]


def test_evaluate_no_common_cases_is_an_error(tmp_path, capsys):
    write(tmp_path / "p" / "a.nii.gz", lesion())
    write(tmp_path / "r" / "b.nii.gz", lesion())
    code, _, err = run_cli(["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "-o",
                            str(tmp_path / "o")], capsys)
    assert code != 0 and "no case names in common" in err and not (tmp_path / "o" / "cases.csv").exists()
