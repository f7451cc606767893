"""``bonemet evaluate --pred DIR --ref DIR -o OUT``: evaluate a folder of predictions against references."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a folder of predicted masks against reference masks (per-case CSV + summary)",
        description="Match predictions and references by case name (file stem without extension, or the case id "
        "of a dataset folder with manifest.json, where a healthy case has an empty reference) and write "
        "OUT/cases.csv, OUT/lesions.csv, OUT/summary.csv and OUT/summary.json (mean ± std, median, IQR). "
        "Cases present on one side only are reported and left out.")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted masks, or a dataset folder")
    p.add_argument("--ref", required=True, metavar="DIR", help="folder of reference masks, or a dataset folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the CSV/JSON results")
    p.add_argument("--report", metavar="HTML", default=None,
                   help="also write a self-contained HTML report (summary, plots, cases worst first, slices)")
    p.add_argument("--femur", metavar="DIR", default=None,
                   help="folder of femur label maps named like the cases (default: from a dataset manifest)")
    p.add_argument("--ct", metavar="DIR", default=None,
                   help="folder of CTs named like the cases, for report figures (default: from a dataset manifest)")
    p.add_argument("--min-lesion-mm3", type=float, default=16.0, metavar="V",
                   help="ignore lesions smaller than V mm³ in lesion-wise detection (default 16)")
    p.add_argument("--worst", type=int, default=3, metavar="N", help="slice figures for the N worst cases (default 3)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bonemet.evaluation import evaluate_dirs
    from bonemet.metrics import format_mean_std

    s = evaluate_dirs(args.pred, args.ref, args.output, report=args.report, femur_dir=args.femur, ct_dir=args.ct,
                      min_lesion_mm3=args.min_lesion_mm3, n_worst=args.worst)
    print(f"{s['n_cases']} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items())))
    for k in ("dice", "hd", "hd95", "assd", "lesion_f1"):
        print(f"  {k:<10} {format_mean_std(s['metrics'][k])}")
    for key, label in (("missing_prediction", "without prediction"), ("missing_reference", "without reference")):
        if s[key]:
            print(f"  {len(s[key])} case(s) {label}, left out: {', '.join(s[key][:10])}"
                  + (" ..." if len(s[key]) > 10 else ""))
    print(f"results: {args.output}/cases.csv, summary.csv, summary.json"
          + (f"; report: {args.report}" if args.report else ""), file=sys.stderr)
    return 0
