"""HTML reports of ``bonemet evaluate`` and shared pieces (summary tables, worst-case figures)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from bonemet.report.html import Report

log = logging.getLogger("bonemet")

CONVENTIONS = ("Conventions: distances in mm (voxel spacing applied). Surface = mask voxels with a face neighbour "
               "outside the mask (MONAI's definition); HD = maximum, HD95 = max over both directions of the 95th "
               "percentile of each direction; ASSD = mean of the surface distances of both directions. "
               "Both masks empty = true negative: Dice and distances undefined (n/a), never counted as 1 and left "
               "out of means. One mask empty: Dice 0, distances undefined. 'n' counts the cases where a value is "
               "defined.")

CASE_TABLE_COLUMNS = ["case", "status", "dice", "hd", "hd95", "assd", "vol_ref_mm3", "vol_pred_mm3",
                      "vol_diff_pct", "sensitivity", "precision", "lesion_tp", "lesion_fp", "lesion_fn"]


def worst_first(rows: list[dict], key: str = "dice") -> list[dict]:
    """Rows sorted worst first: lowest ``key`` first (Dice), highest HD95 among ties; undefined values
    (true negatives) last."""
    def k(r):
        v = r.get(key)
        undefined = v is None or (isinstance(v, float) and math.isnan(v))
        hd = r.get("hd95")
        return (undefined, 0.0 if undefined else float(v), -(hd if isinstance(hd, (int, float)) else 0.0))

    return sorted(rows, key=k)


def summary_rows_mean_std(metrics: dict, names=None, fmt=".3f") -> list[dict]:
    from bonemet.metrics import format_mean_std

    out = []
    for k, s in metrics.items():
        if names is not None and k not in names:
            continue
        iqr = "n/a" if s["q1"] is None else f"{format(s['q1'], fmt)} – {format(s['q3'], fmt)}"
        out.append({"metric": k, "mean ± std": format_mean_std(s, fmt), "median": s["median"], "IQR": iqr,
                    "n": s["n"], "undefined": s["n_undefined"]})
    return out


def add_worst_case_figures(rep: Report, rows: list[dict], n_worst: int, pred_key="pred", ref_key="ref",
                           ct_key="ct", labels=("reference", "prediction"), title_key="case") -> int:
    """Axial + coronal slices with both contours over the CT for the ``n_worst`` first rows that have a CT.
    Returns how many figures were added."""
    from bonemet.io import read_ct, read_mask
    from bonemet.report.figures import slice_overlay

    added = 0
    for r in rows:
        if added >= n_worst:
            break
        ct_path = r.get(ct_key)
        if not ct_path or not Path(str(ct_path)).exists():
            continue
        try:
            ct = read_ct(ct_path)
            masks = {}
            for label, key in zip(labels, (ref_key, pred_key)):
                p = r.get(key)
                masks[label] = read_mask(p, reference=ct).array if p and Path(str(p)).exists() else None
        except Exception as exc:  # a figure must never break the report
            log.warning("no figure for %s: %s", r.get(title_key), exc)
            continue
        dice = r.get("dice")
        cap = (f"{r.get(title_key)}: Dice {dice:.3f}" if isinstance(dice, float) else f"{r.get(title_key)}: "
               f"Dice n/a") + (f", HD95 {r['hd95']:.2f} mm" if isinstance(r.get("hd95"), float) else "") + \
            f" ({r.get('status')}). " + ", ".join(f"{lab} contour" for lab in masks) + " over the CT."
        fig = slice_overlay(ct.array, masks, ct.spacing_zyx, title=str(r.get(title_key)))
        rep.figure(fig, caption=cap)
        added += 1
    return added


def evaluation_report(rows: list[dict], summary: dict, path, n_worst: int = 3) -> Path:
    """Self-contained HTML report of ``bonemet evaluate``."""
    from bonemet.report.figures import box_strip

    rep = Report("BoneMet evaluation", subtitle=f"predictions {summary.get('pred_dir')} vs references "
                 f"{summary.get('ref_dir')}: {summary['n_cases']} cases")
    rep.note(CONVENTIONS)
    rep.heading("Summary")
    st = ", ".join(f"{k}: {v}" for k, v in sorted(summary["statuses"].items()))
    rep.paragraph(f"{summary['n_cases']} cases evaluated ({st}).")
    if summary.get("missing_prediction"):
        rep.note(f"{len(summary['missing_prediction'])} reference case(s) without prediction (left out): "
                 + ", ".join(summary["missing_prediction"]))
    if summary.get("missing_reference"):
        rep.note(f"{len(summary['missing_reference'])} prediction(s) without reference (left out): "
                 + ", ".join(summary["missing_reference"]))
    rep.table(summary_rows_mean_std(summary["metrics"]), caption="Voxel-wise and lesion-wise metrics over cases "
              "(mean ± sample std, median, interquartile range)")
    pooled = summary.get("lesions_pooled") or {}
    rep.table([pooled], caption=f"Lesion-wise detection pooled over cases (lesions < {summary.get('min_lesion_mm3')} "
              "mm³ ignored; matched by overlap)")
    groups_d = {"all": [r.get("dice") for r in rows]}
    groups_h = {"all": [r.get("hd95") for r in rows]}
    for side in ("right", "left"):
        if any(f"{side}_dice" in r for r in rows):
            groups_d[f"{side} femur"] = [r.get(f"{side}_dice") for r in rows]
            groups_h[f"{side} femur"] = [r.get(f"{side}_hd95") for r in rows]
    rep.figure(box_strip(groups_d, "Dice", "Dice per case", ylim=(0, 1.02)),
               caption="Dice per case (box: quartiles; points: cases; true negatives left out)")
    rep.figure(box_strip(groups_h, "HD95 (mm)", "HD95 per case"), caption="95th percentile Hausdorff distance per "
               "case (mm)")
    rep.heading("Cases, worst first")
    ordered = worst_first(rows)
    cols = list(CASE_TABLE_COLUMNS)
    for side in ("right", "left"):
        if any(f"{side}_dice" in r for r in rows):
            cols += [f"{side}_status", f"{side}_dice", f"{side}_hd95"]
    rep.table(ordered, columns=cols, caption="Per-case metrics sorted by Dice (lowest first); n/a = undefined")
    worst = [r for r in ordered if r.get("status") != "true_negative"]
    if any(r.get("ct") for r in worst):
        rep.heading("Worst cases")
        add_worst_case_figures(rep, worst, n_worst)
    else:
        rep.paragraph("No CT paths known for these cases: slice figures omitted (give a dataset folder as "
                      "reference or --ct DIR).")
    return rep.save(path)
