"""``bonemet compare A B``: metrics of mask A (e.g. a prediction) against reference mask B."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare two binary masks: Dice, HD, HD95, ASSD (mm), volumes, lesion-wise detection",
        description="Compare binary mask A (the segmentation to evaluate) with reference mask B on the same grid. "
        "Surface distances in mm follow MONAI's definitions (HD, HD95, symmetric ASSD). Both masks empty = true "
        "negative (Dice undefined, never 1); one empty = Dice 0, distances undefined.")
    p.add_argument("a", metavar="A", help="mask to evaluate (NIfTI/NRRD/MHA, binary 0/1)")
    p.add_argument("b", metavar="B", help="reference mask on the same grid (binary 0/1)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (dice, hd, hd95, assd in mm, null where undefined, status, ...)")
    p.add_argument("--femur", metavar="LABELMAP", default=None,
                   help="femur label map (1 = right, 2 = left femur) on the same grid: metrics also per femur side")
    p.add_argument("--min-lesion-mm3", type=float, default=16.0, metavar="V",
                   help="ignore connected lesions smaller than V mm³ in the lesion-wise detection (default 16)")
    p.set_defaults(func=run)


def _fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}{(' ' + unit) if unit else ''}"
    return str(v)


def run(args) -> int:
    from bonemet.evaluation import compare_files

    res = compare_files(args.a, args.b, femur_path=args.femur, min_lesion_mm3=args.min_lesion_mm3)
    if args.json:
        from bonemet.atomic import _json_default

        print(json.dumps(res, default=_json_default, allow_nan=False))
        return 0
    rows = [("status", res["status"], ""), ("dice", res["dice"], ""), ("hd", res["hd"], "mm"),
            ("hd95", res["hd95"], "mm"), ("assd", res["assd"], "mm"), ("vol_a_mm3", res["vol_pred_mm3"], "mm³"),
            ("vol_b_mm3", res["vol_ref_mm3"], "mm³"), ("vol_diff_mm3 (A-B)", res["vol_diff_mm3"], "mm³"),
            ("vol_diff_pct", res["vol_diff_pct"], "%"), ("sensitivity", res["sensitivity"], ""),
            ("precision", res["precision"], ""),
            ("lesions B / A", f"{res['lesion_n_ref']} / {res['lesion_n_pred']}", ""),
            ("lesions TP / FP / FN", f"{res['lesion_tp']} / {res['lesion_fp']} / {res['lesion_fn']}", ""),
            ("lesion sensitivity", res["lesion_sensitivity"], ""), ("lesion precision", res["lesion_precision"], ""),
            ("lesion F1", res["lesion_f1"], "")]
    out = [f"A: {args.a}", f"B: {args.b} (reference)", ""]
    out.append(f"{'metric':<22} {'value':>16}")
    out += [f"{name:<22} {_fmt(v, u):>16}" for name, v, u in rows]
    if res.get("note"):
        out.append(f"note: {res['note']}")
    if "per_side" in res:
        out += ["", f"{'per femur':<10} {'status':<14} {'dice':>8} {'hd95 mm':>9} {'assd mm':>9} "
                f"{'vol A mm³':>10} {'vol B mm³':>10}"]
        for side, m in res["per_side"].items():
            out.append(f"{side:<10} {m['status']:<14} {_fmt(m['dice']):>8} {_fmt(m['hd95']):>9} "
                       f"{_fmt(m['assd']):>9} {m['vol_pred_mm3']:>10.1f} {m['vol_ref_mm3']:>10.1f}")
    out.append(f"(lesions < {args.min_lesion_mm3:g} mm³ ignored in lesion-wise counts; n/a = undefined)")
    print("\n".join(out))
    sys.stdout.flush()
    return 0
