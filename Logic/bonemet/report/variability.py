"""HTML report of the operator variability study (``bonemet variability --report``)."""

from __future__ import annotations

from pathlib import Path

from bonemet.report.evaluation import CONVENTIONS, add_worst_case_figures, worst_first
from bonemet.report.html import Report

MAX_PAIR_ROWS = 300


def variability_report(rows: list[dict], summary: dict, path, n_worst: int = 3) -> Path:
    from bonemet.metrics import format_mean_std
    from bonemet.report.figures import box_strip

    ops = summary["operators"]
    rep = Report("BoneMet operator variability",
                 subtitle=f"{summary['csv']}: {summary['n_cases']} cases, {len(ops)} operators, "
                 f"{len(rows)} compared pairs")
    rep.note(CONVENTIONS + " " + summary["conventions"])
    rep.heading("Operators")
    rep.table([{"operator": k, "role": v["role"], "cases": v["cases"], "sessions": ", ".join(v["sessions"])}
               for k, v in ops.items()], caption="Operators in the study")
    rep.heading("Agreement per group")
    table = []
    for g in summary["groups"]:
        m = g["metrics"]
        table.append({"group": g["group"], "pairs": g["n_pairs"], "cases": g["n_cases"],
                      "Dice": format_mean_std(m["dice"]), "HD (mm)": format_mean_std(m["hd"], ".2f"),
                      "HD95 (mm)": format_mean_std(m["hd95"], ".2f"), "ASSD (mm)": format_mean_std(m["assd"], ".2f"),
                      "vol. diff (mm³)": format_mean_std(m["vol_diff_mm3"], ".0f"),
                      "sensitivity": format_mean_std(m["sensitivity"]), "precision": format_mean_std(m["precision"]),
                      "lesion F1": format_mean_std(m["lesion_f1"]),
                      "undefined (TN)": g["statuses"].get("true_negative", 0), "note": g.get("note", "")})
    rep.table(table, caption="Mean ± sample std (n = pairs where the value is defined) of every metric per group")
    if summary["not_computable"]:
        rep.table(summary["not_computable"], caption="Not computable")
    names = [g["group"] for g in summary["groups"]]
    rep.figure(box_strip({n: [r["dice"] for r in rows if r["group"] == n] for n in names}, "Dice",
                         "Dice per group", ylim=(0, 1.02)),
               caption="Dice per group (box: quartiles; points: pairs)")
    rep.figure(box_strip({n: [r["hd95"] for r in rows if r["group"] == n] for n in names}, "HD95 (mm)",
                         "HD95 per group"), caption="HD95 per group (mm)")
    rep.heading("Statistics")
    tests = summary["tests"]
    rep.table([t for t in tests if t["test"] == "kruskal-wallis"], columns=["metric", "statistic", "p", "note"],
              caption="Kruskal-Wallis test across groups", floatfmt=".4g")
    rep.table([t for t in tests if t["test"] == "mann-whitney-u"],
              columns=["metric", "a", "b", "n_a", "n_b", "median_a", "median_b", "statistic", "p", "p_adj", "note"],
              caption="Pairwise Mann-Whitney U tests between groups (independent), Holm-adjusted p (p_adj) per "
              "metric", floatfmt=".4g")
    paired = [t for t in tests if t["test"] == "wilcoxon"]
    if paired:
        rep.table(paired, columns=["metric", "a", "b", "n_a", "median_a", "median_b", "statistic", "p", "p_adj",
                                   "note"],
                  caption="Paired Wilcoxon signed-rank tests on per-case means of groups sharing cases, "
                  "Holm-adjusted", floatfmt=".4g")
    if summary.get("staple"):
        rep.table([{"case": c, "operators": ", ".join(v["operators"]),
                    "sensitivities": ", ".join(f"{x:.3f}" for x in v["sensitivity"]),
                    "specificities": ", ".join(f"{x:.4f}" for x in v["specificity"])}
                   for c, v in summary["staple"].items()], caption="STAPLE consensus per case (rater performance)")
    rep.heading("Pairs, worst first")
    ordered = worst_first(rows)
    cols = ["group", "case", "operator", "session", "ref_operator", "ref_session", "status", "dice", "hd", "hd95",
            "assd", "vol_a_mm3", "vol_ref_mm3", "lesion_tp", "lesion_fp", "lesion_fn"]
    cap = "Per-pair metrics sorted by Dice (lowest first)"
    if len(ordered) > MAX_PAIR_ROWS:
        cap += f"; first {MAX_PAIR_ROWS} of {len(ordered)} pairs (all in pairs.csv)"
    rep.table(ordered[:MAX_PAIR_ROWS], columns=cols, caption=cap)
    worst = [r for r in ordered if r["status"] != "true_negative"]
    if any(r.get("ct") for r in worst):
        rep.heading("Worst pairs")
        add_worst_case_figures(rep, [{**r, "title": f"{r['case']}: {r['operator']} vs {r['ref_operator']}"}
                                     for r in worst], n_worst, pred_key="mask", ref_key="ref_mask",
                               labels=("reference", "operator"), title_key="title")
    else:
        rep.paragraph("No CT paths in the CSV: slice figures omitted (add a 'ct' column).")
    return rep.save(path)
