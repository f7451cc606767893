"""``bonemet variability CSV -o OUT``: inter-/intra-operator variability study, STAPLE consensus."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "variability", help="operator variability study (inter/intra-operator, automatic vs operators, STAPLE)",
        description="Compare the segmentations listed in CSV (columns: case, operator, role = novice|expert|"
        "automatic, session, mask, optional ct and femur; relative paths are relative to the CSV): novice/novice, "
        "novice/expert, expert/expert, automatic vs novices and experts, intra-operator (sessions). Writes "
        "OUT/pairs.csv, groups.csv (mean ± std of every metric per group), stats.csv (Kruskal-Wallis, "
        "Mann-Whitney U and Wilcoxon with Holm correction), summary.json, and STAPLE masks with --staple.")
    p.add_argument("csv", metavar="CSV", help="study CSV (case, operator, role, session, mask[, ct])")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the results")
    p.add_argument("--report", metavar="HTML", default=None, help="also write a self-contained HTML report")
    p.add_argument("--staple", nargs="+", metavar="OPERATOR", default=(),
                   help="STAPLE consensus of these operators (first session), written to OUT/staple/<case>.nii.gz "
                   "and compared with every operator")
    p.add_argument("--min-lesion-mm3", type=float, default=16.0, metavar="V",
                   help="ignore lesions smaller than V mm³ in lesion-wise detection (default 16)")
    p.add_argument("--worst", type=int, default=3, metavar="N", help="slice figures for the N worst pairs (default 3)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bonemet.metrics import format_mean_std
    from bonemet.variability import run_study

    s = run_study(args.csv, args.output, report=args.report, staple=args.staple,
                  min_lesion_mm3=args.min_lesion_mm3, n_worst=args.worst)
    print(f"{'group':<20} {'pairs':>5}  {'Dice':<26} {'HD95 (mm)':<26} {'ASSD (mm)':<26}")
    for g in s["groups"]:
        m = g["metrics"]
        print(f"{g['group']:<20} {g['n_pairs']:>5}  {format_mean_std(m['dice']):<26} "
              f"{format_mean_std(m['hd95'], '.2f'):<26} {format_mean_std(m['assd'], '.2f'):<26}")
    for nc in s["not_computable"]:
        print(f"not computable: {nc['what']}: {nc['reason']}")
    print(f"results: {args.output}" + (f"; report: {args.report}" if args.report else ""), file=sys.stderr)
    return 0
