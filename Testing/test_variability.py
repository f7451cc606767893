"""bonemet.variability: groups, per-pair numbers, STAPLE, statistics, simulated operators, bad input."""

import csv
import json
import math

import numpy as np
import pytest

from _evaluation_helpers import SPACING_XYZ, ct_for, lesion, write
from bonemet.cli.main import main
from bonemet.errors import InputError
from bonemet.metrics import segmentation_metrics
from bonemet.variability import read_study_csv, run_study, simulate_operator, staple_consensus

SP_ZYX = SPACING_XYZ[::-1]
HEADER = "case,operator,role,session,mask,ct\n"


def make_study(tmp_path, n_cases=3):
    """2 novices (2 sessions), 2 experts, 1 automatic method on n_cases cases."""
    lines = [HEADER]
    masks = {}
    variants = {"nov1": ((1, 0, 0), 1.0), "nov2": ((0, 2, 1), 0.9), "exp1": ((0, 0, 0), 1.0),
                "exp2": ((0, 1, 0), 1.0), "auto": ((0, 0, 1), 0.85)}
    roles = {"nov1": "novice", "nov2": "novice", "exp1": "expert", "exp2": "expert", "auto": "automatic"}
    for c in range(n_cases):
        case = f"case{c}"
        ct = write(tmp_path / "ct" / f"{case}.nii.gz", ct_for(lesion()))
        for op, (off, scale) in variants.items():
            sessions = (1, 2) if op.startswith("nov") else (1,)
            for s in sessions:
                o = (off[0] + (s - 1), off[1] + c % 2, off[2])
                m = lesion(o, scale)
                p = write(tmp_path / "m" / f"{case}_{op}_{s}.nii.gz", m)
                masks[(case, op, s)] = m
                lines.append(f"{case},{op},{roles[op]},{s},m/{p.name},ct/{ct.name}\n")
    csv_path = tmp_path / "study.csv"
    csv_path.write_text("".join(lines))
    return csv_path, masks


def test_study_groups_pairs_and_numbers(tmp_path):
    csv_path, masks = make_study(tmp_path)
    out = tmp_path / "out"
    s = run_study(csv_path, out, report=tmp_path / "r.html", staple=["exp1", "exp2", "nov1"])
    groups = {g["group"]: g for g in s["groups"]}
    assert set(groups) >= {"novice/novice", "novice/expert", "expert/expert", "automatic/novice",
                           "automatic/expert", "intra novice", "novice/staple", "expert/staple", "automatic/staple"}
    assert groups["novice/expert"]["n_pairs"] == 3 * 4 and groups["intra novice"]["n_pairs"] == 3 * 2
    assert groups["automatic/expert"]["n_pairs"] == 3 * 2 and groups["expert/expert"]["n_pairs"] == 3
    rows = list(csv.DictReader(open(out / "pairs.csv")))
    r = next(r for r in rows if r["group"] == "novice/expert" and r["case"] == "case1" and r["operator"] == "nov2"
             and r["ref_operator"] == "exp1")
    exp = segmentation_metrics(masks[("case1", "nov2", 1)], masks[("case1", "exp1", 1)], SP_ZYX)
    assert float(r["dice"]) == pytest.approx(exp["dice"], abs=1e-6)
    assert float(r["hd95"]) == pytest.approx(exp["hd95"], abs=1e-5)
    # intra: session 2 vs session 1 of the same operator
    r = next(r for r in rows if r["group"] == "intra novice" and r["case"] == "case0" and r["operator"] == "nov1")
    exp = segmentation_metrics(masks[("case0", "nov1", 2)], masks[("case0", "nov1", 1)], SP_ZYX)
    assert float(r["assd"]) == pytest.approx(exp["assd"], abs=1e-5) and r["session"] == "2"
    # group means = mean of the pair rows
    ne = [float(r["dice"]) for r in rows if r["group"] == "novice/expert"]
    assert groups["novice/expert"]["metrics"]["dice"]["mean"] == pytest.approx(np.mean(ne), abs=1e-6)
    assert groups["novice/expert"]["metrics"]["dice"]["std"] == pytest.approx(np.std(ne, ddof=1), abs=1e-6)
    g = {r["group"]: r for r in csv.DictReader(open(out / "groups.csv"))}
    assert float(g["novice/expert"]["dice_mean"]) == pytest.approx(np.mean(ne), abs=1e-6)
    # statistics present with p-values, against scipy
    from scipy import stats as ss

    st = list(csv.DictReader(open(out / "stats.csv")))
    kw = next(t for t in st if t["metric"] == "dice" and t["test"] == "kruskal-wallis")
    gvals = {}
    for r in rows:
        gvals.setdefault(r["group"], []).append(float(r["dice"]))
    assert float(kw["p"]) == pytest.approx(ss.kruskal(*gvals.values()).pvalue, rel=1e-4)
    assert any(t["test"] == "mann-whitney-u" and t["p_adj"] for t in st)
    assert any(t["test"] == "wilcoxon" for t in st)
    # STAPLE masks written and usable as a reference
    assert (out / "staple" / "case0.nii.gz").exists()
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)
    html = (tmp_path / "r.html").read_text()
    assert "novice/expert" in html and "data:image/png;base64" in html and "Kruskal" in html
    assert f"{np.mean(ne):.3f}" in html


def test_not_computable_groups_and_single_case_operator(tmp_path, capsys):
    a, b = lesion(), lesion((1, 0, 0))
    pa, pb = write(tmp_path / "a.nii.gz", a), write(tmp_path / "b.nii.gz", b)
    pc = write(tmp_path / "c.nii.gz", lesion((0, 1, 0)))
    (tmp_path / "s.csv").write_text("case,operator,role,session,mask\n"
                                    f"x,n1,novice,1,{pa.name}\nx,e1,expert,1,{pb.name}\n"
                                    f"y,n1,novice,1,{pa.name}\ny,e1,expert,1,{pc.name}\n"
                                    f"z,n2,novice,1,{pb.name}\n")
    code = main(["variability", str(tmp_path / "s.csv"), "-o", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    what = {n["what"]: n["reason"] for n in s["not_computable"]}
    assert "group expert/expert" in what and "only one expert" in what["group expert/expert"]
    assert "operator n2" in what and "single case" in what["operator n2"]
    assert "not computable" in out
    groups = {g["group"]: g for g in s["groups"]}
    assert groups["novice/expert"]["n_pairs"] == 2


def test_true_negative_pairs_are_left_out_of_means(tmp_path):
    z = np.zeros((20, 28, 36), np.uint8)
    pz = write(tmp_path / "z.nii.gz", z)
    pa, pb = write(tmp_path / "a.nii.gz", lesion()), write(tmp_path / "b.nii.gz", lesion((1, 0, 0)))
    (tmp_path / "s.csv").write_text("case,operator,role,session,mask\n"
                                    f"h,n1,novice,1,{pz.name}\nh,e1,expert,1,{pz.name}\n"
                                    f"l,n1,novice,1,{pa.name}\nl,e1,expert,1,{pb.name}\n")
    s = run_study(tmp_path / "s.csv", tmp_path / "o")
    d = s["groups"][0]["metrics"]["dice"]
    assert d["n"] == 1 and d["n_undefined"] == 1 and d["mean"] < 1.0
    assert d["std"] is None and s["groups"][0]["statuses"]["true_negative"] == 1


@pytest.mark.parametrize("content,match", [
    ("case,operator,role,session,mask,colour\n", "unknown column"),
    ("case,operator,role,mask\nx,a,novice,{a}\nx,a,novice,{a}\n", "missing column"),
    ("case,operator,role,session,mask\nx,a,novice,1,{a}\nx,a,novice,1,{b}\n", "duplicate row"),
    ("case,operator,role,session,mask\nx,a,novice,1,nothere.nii.gz\n", "not found"),
    ("case,operator,role,session,mask\nx,a,student,1,{a}\n", "role"),
    ("case,operator,role,session,mask\nx,a,novice,1,{a}\ny,a,expert,1,{a}\n", "has role"),
    ("case,operator,role,session,mask\n", "no rows"),
])
def test_bad_csv(tmp_path, content, match):
    pa, pb = write(tmp_path / "a.nii.gz", lesion()), write(tmp_path / "b.nii.gz", lesion())
    (tmp_path / "s.csv").write_text(content.format(a=pa.name, b=pb.name))
    with pytest.raises(InputError, match=match):
        read_study_csv(tmp_path / "s.csv")


def test_bad_masks_are_clear_errors(tmp_path, capsys):
    pa = write(tmp_path / "a.nii.gz", lesion())
    small = write(tmp_path / "small.nii.gz", np.zeros((10, 12, 14), np.uint8))
    nb = write(tmp_path / "nb.nii.gz", (lesion() * 2).astype(np.uint8))
    for other, match in ((small, "grid"), (nb, "binary")):
        (tmp_path / "s.csv").write_text(f"case,operator,role,session,mask\nx,a,novice,1,{pa.name}\n"
                                        f"x,b,expert,1,{other.name}\n")
        code = main(["variability", str(tmp_path / "s.csv"), "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code != 0 and match in err and other.name in err
    assert not (tmp_path / "o" / "summary.json").exists()
    code = main(["variability", str(tmp_path / "s.csv"), "-o", str(tmp_path / "o"), "--staple", "a", "zz"])
    assert code != 0 and "not in the CSV" in capsys.readouterr().err


def test_staple_consensus_majority_like():
    base = lesion()
    m1, m2, m3 = base.copy(), base.copy(), base.copy()
    m3[:] = 0
    cons, info = staple_consensus([m1, m2, m3])
    assert cons.dtype == np.uint8 and set(np.unique(cons)) <= {0, 1}
    assert segmentation_metrics(cons, base, (1, 1, 1))["dice"] > 0.95
    assert len(info["sensitivity"]) == 3 and info["sensitivity"][2] < 0.5
    with pytest.raises(InputError):
        staple_consensus([m1])


def test_simulate_operator_is_plausible_and_reproducible():
    ref = lesion()
    ref[2:4, 2:4, 2:4] = 1  # a tiny lesion that novices may miss
    outs = {}
    for skill in ("novice", "expert"):
        d = [segmentation_metrics(simulate_operator(ref, SP_ZYX, np.random.default_rng(s), skill), ref, SP_ZYX)["dice"]
             for s in range(6)]
        outs[skill] = d
        assert all(0.3 < x < 1.0 for x in d)
    assert np.mean(outs["expert"]) > np.mean(outs["novice"])
    a = simulate_operator(ref, SP_ZYX, np.random.default_rng(1), "novice")
    b = simulate_operator(ref, SP_ZYX, np.random.default_rng(1), "novice")
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == ref.shape
    assert not simulate_operator(np.zeros_like(ref), SP_ZYX, np.random.default_rng(0), "expert").any()


def test_summary_has_no_nan(tmp_path):
    csv_path, _ = make_study(tmp_path, n_cases=2)
    s = run_study(csv_path, tmp_path / "o")
    for g in s["groups"]:
        for m, summ in g["metrics"].items():
            for v in summ.values():
                assert not (isinstance(v, float) and math.isnan(v)), (g["group"], m)


def test_failure_midway_leaves_no_partial_output(tmp_path, capsys):
    pa, pb = write(tmp_path / "a.nii.gz", lesion()), write(tmp_path / "b.nii.gz", lesion((1, 0, 0)))
    nb = write(tmp_path / "nb.nii.gz", (lesion() * 2).astype(np.uint8))
    (tmp_path / "s.csv").write_text("case,operator,role,session,mask\n"
                                    f"x,a,novice,1,{pa.name}\nx,b,expert,1,{pb.name}\n"
                                    f"y,a,novice,1,{pa.name}\ny,b,expert,1,{nb.name}\n")
    out = tmp_path / "o"
    code = main(["variability", str(tmp_path / "s.csv"), "-o", str(out), "--staple", "a", "b"])
    assert code != 0 and "binary" in capsys.readouterr().err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
