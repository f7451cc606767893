"""File-level evaluation: compare two mask files, evaluate a folder of predictions against references.

* :func:`compare_files` — one pair of mask files (plus optional femur label map) → metrics dict;
* :func:`collect_masks` — {case name: mask path or None} from a plain folder (names = file stems) or a
  dataset folder (``manifest.json``: ``lesion`` of each case; a healthy case has an empty reference);
* :func:`evaluate_dirs` — match predictions and references by name, write ``cases.csv``, ``lesions.csv``,
  ``summary.csv``, ``summary.json`` (and an HTML report).

Conventions of :mod:`bonemet.metrics` apply (status ``true_negative``/``pred_empty``/``ref_empty``; undefined
values are empty cells in CSV and ``null`` in JSON, and are never averaged).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import numpy as np

from bonemet.atomic import write_json, write_text
from bonemet.errors import InputError
from bonemet.io import READ_EXTENSIONS, Geometry, read_image, read_mask
from bonemet.metrics import (STATUS_NOTES, lesion_detection, per_side_metrics, segmentation_metrics,
                             summarise)

log = logging.getLogger("bonemet")

SUMMARY_METRICS = ("dice", "hd", "hd95", "assd", "vol_pred_mm3", "vol_ref_mm3", "vol_diff_mm3", "sensitivity",
                   "precision", "lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_fp")
CASE_COLUMNS = ("case", "status", "dice", "hd", "hd95", "assd", "vol_pred_mm3", "vol_ref_mm3", "vol_diff_mm3",
                "vol_diff_pct", "sensitivity", "precision", "lesion_tp", "lesion_fp", "lesion_fn",
                "lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_tp_pred", "lesion_n_ref",
                "lesion_n_pred")
SIDE_KEYS = ("status", "dice", "hd", "hd95", "assd", "vol_pred_mm3", "vol_ref_mm3")
UNITS = {"dice": "", "hd": "mm", "hd95": "mm", "assd": "mm", "vol_pred_mm3": "mm³", "vol_ref_mm3": "mm³",
         "vol_diff_mm3": "mm³", "vol_diff_pct": "%", "sensitivity": "", "precision": ""}


def case_name(path: str | os.PathLike) -> str:
    """File stem without the (double) extension: ``a/case01.nii.gz`` → ``case01``."""
    name = Path(path).name
    for ext in sorted(READ_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _flatten_lesions(d: dict) -> dict:
    return {"lesion_tp": d["tp"], "lesion_fp": d["fp"], "lesion_fn": d["fn"],
            "lesion_sensitivity": d["sensitivity"], "lesion_precision": d["precision"], "lesion_f1": d["f1"],
            "lesion_n_ref": d["n_ref"], "lesion_n_pred": d["n_pred"], "lesion_tp_pred": d["tp_pred"]}


def evaluate_arrays(pred: np.ndarray, ref: np.ndarray, spacing_zyx, femur: np.ndarray | None = None,
                    min_lesion_mm3: float = 16.0) -> dict:
    """Voxel-wise metrics + lesion-wise detection (+ per femur side) of one pair of arrays; flat dict with
    ``lesions`` (the per-lesion list) and ``per_side`` ({right|left: metrics}) when ``femur`` is given."""
    m = segmentation_metrics(pred, ref, spacing_zyx)
    d = lesion_detection(pred, ref, spacing_zyx, min_volume_mm3=min_lesion_mm3)
    out = {**m, **_flatten_lesions(d), "lesion_status": d["status"], "min_lesion_mm3": min_lesion_mm3,
           "lesions": d["per_lesion"]}
    if femur is not None:
        out["per_side"] = per_side_metrics(pred, ref, femur, spacing_zyx)
    return out


def compare_files(pred_path, ref_path, femur_path=None, min_lesion_mm3: float = 16.0) -> dict:
    """Compare mask file ``pred_path`` with reference mask file ``ref_path`` (same grid required)."""
    ref = read_mask(ref_path)
    pred = read_mask(pred_path, reference=ref)
    femur = read_mask(femur_path, reference=ref, binary=False).array if femur_path else None
    if femur is not None and not set(np.unique(femur).tolist()) <= {0, 1, 2}:
        raise InputError("femur label map must hold labels 0 (background), 1 (right), 2 (left)", femur_path)
    out = evaluate_arrays(pred.array, ref.array, ref.spacing_zyx, femur, min_lesion_mm3)
    out.update(pred=str(pred_path), ref=str(ref_path), spacing_zyx=list(ref.spacing_zyx))
    if femur_path:
        out["femur"] = str(femur_path)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------
class CaseSource(dict):
    """{case name: {"mask": Path|None, "ct": Path|None, "femur": Path|None}} plus ``root`` and ``kind``."""

    root: Path
    kind: str


def collect_masks(folder: str | os.PathLike, role: str = "prediction") -> CaseSource:
    """Cases of a folder: a dataset folder (``manifest.json``; mask = the ``lesion`` entry, None for a healthy
    case, with the case's ``ct`` and ``femur``) or a plain folder of mask files (name = file stem)."""
    from bonemet.dataset import load_manifest, manifest_path

    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{role} folder not found", folder)
    out = CaseSource()
    out.root = folder
    if folder.is_file():
        raise InputError(f"{role} must be a folder of masks or a dataset folder, not a file", folder)
    if manifest_path(folder).exists():
        out.kind = "dataset"
        for c in load_manifest(folder):
            out[c.id] = {"mask": c.lesion, "ct": c.ct, "femur": c.femur}
        return out
    out.kind = "folder"
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if not any(p.name.lower().endswith(e) for e in READ_EXTENSIONS):
            continue
        name = case_name(p)
        if name in out:
            raise InputError(f"two files for case {name!r}: {out[name]['mask'].name} and {p.name}", folder)
        out[name] = {"mask": p, "ct": None, "femur": None}
    if not out:
        raise InputError(f"no mask files ({', '.join(READ_EXTENSIONS)}) and no manifest.json in {role} folder",
                         folder)
    return out


def _mask_or_empty(entry: dict, like, role: str):
    """Read the entry's mask, or an empty mask on the grid of its CT (healthy case of a dataset)."""
    if entry["mask"] is not None:
        return read_mask(entry["mask"], reference=like)
    if entry.get("ct") is None:
        raise InputError(f"{role} case has neither a mask nor a CT to define its grid")
    img = read_image(entry["ct"])
    geo = Geometry.from_image(img)
    from bonemet.io import Volume

    vol = Volume(np.zeros(geo.shape, np.uint8), geo, None)
    if like is not None:
        from bonemet.io import check_same_grid

        check_same_grid(geo, like.geometry if hasattr(like, "geometry") else like, entry["ct"])
    return vol


def evaluate_dirs(pred_dir, ref_dir, out_dir, report=None, femur_dir=None, ct_dir=None,
                  min_lesion_mm3: float = 16.0, n_worst: int = 3) -> dict:
    """Evaluate every prediction of ``pred_dir`` against the reference of the same name in ``ref_dir``.

    Writes ``out_dir``/``cases.csv`` (one row per case, worst Dice first is left to the report),
    ``lesions.csv`` (one row per reference lesion / false positive), ``summary.csv`` and ``summary.json``
    (mean ± std, median, IQR of every metric over the cases where it is defined; counts of statuses; cases
    missing on either side). Femur label maps (per-side metrics) and CTs (report figures) come from a dataset
    folder's manifest or from ``femur_dir``/``ct_dir`` (files named like the cases). Returns the summary dict.
    """
    from bonemet.progress import progress

    preds, refs = collect_masks(pred_dir, "prediction"), collect_masks(ref_dir, "reference")
    extra = {}
    for key, d in (("femur", femur_dir), ("ct", ct_dir)):
        if d is not None:
            src = collect_masks(d, key)
            extra[key] = {k: v["mask"] for k, v in src.items()}
    names = sorted(set(refs) & set(preds))
    missing_pred = sorted(set(refs) - set(preds))
    missing_ref = sorted(set(preds) - set(refs))
    for n in missing_pred:
        log.warning("case %s: no prediction in %s (left out)", n, pred_dir)
    for n in missing_ref:
        log.warning("case %s: no reference in %s (left out)", n, ref_dir)
    if not names:
        raise InputError(f"no case names in common between {pred_dir} ({len(preds)} cases) and {ref_dir} "
                         f"({len(refs)} cases); cases are matched by file stem / manifest id", pred_dir)
    rows, lesion_rows, sides_seen = [], [], False
    for name in progress(names, desc="evaluate", total=len(names)):
        r_entry, p_entry = refs[name], preds[name]
        ref = _mask_or_empty(r_entry, None, "reference")
        pred = _mask_or_empty(p_entry, ref, "prediction")
        femur_path = extra.get("femur", {}).get(name) or r_entry.get("femur") or p_entry.get("femur")
        femur = read_mask(femur_path, reference=ref, binary=False).array if femur_path else None
        res = evaluate_arrays(pred.array, ref.array, ref.spacing_zyx, femur, min_lesion_mm3)
        row = {"case": name, **{k: res.get(k) for k in CASE_COLUMNS if k != "case"}}
        if femur is not None:
            sides_seen = True
            for side, m in res["per_side"].items():
                for k in SIDE_KEYS:
                    row[f"{side}_{k}"] = m[k]
        row["note"] = res["note"]
        row["pred"] = str(p_entry["mask"]) if p_entry["mask"] else "(healthy: empty)"
        row["ref"] = str(r_entry["mask"]) if r_entry["mask"] else "(healthy: empty)"
        row["ct"] = str(extra.get("ct", {}).get(name) or r_entry.get("ct") or p_entry.get("ct") or "") or None
        rows.append(row)
        for les in res["lesions"]:
            lesion_rows.append({"case": name, "lesion": les["id"], "kind": les["kind"],
                                "volume_mm3": les["volume_mm3"], "detected": les["detected"], "dice": les["dice"],
                                "centroid_zyx": " ".join(f"{c:.1f}" for c in les["centroid_zyx"])})
    summary = summarise_rows(rows, sides=sides_seen)
    summary.update(pred_dir=str(pred_dir), ref_dir=str(ref_dir), min_lesion_mm3=min_lesion_mm3,
                   missing_prediction=missing_pred, missing_reference=missing_ref,
                   conventions=dict(STATUS_NOTES, undefined="undefined values are null/empty and left out of "
                                    "means; n counts defined values, n_undefined the others"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "cases.csv", rows)
    write_csv(out_dir / "lesions.csv", lesion_rows,
              columns=["case", "lesion", "kind", "volume_mm3", "detected", "dice", "centroid_zyx"])
    write_csv(out_dir / "summary.csv", summary_table(summary["metrics"]))
    from bonemet.dataset import provenance

    write_json(out_dir / "summary.json", {**summary, "provenance": provenance()})
    if report:
        from bonemet.report.evaluation import evaluation_report

        evaluation_report(rows, summary, report, n_worst=n_worst)
    return summary


def summarise_rows(rows: list[dict], sides: bool = False) -> dict:
    """Summary of per-case rows: {metrics: {name: summarise()}, statuses: {status: count}, n_cases,
    lesions: pooled lesion-wise counts}."""
    metrics = {k: summarise([r.get(k) for r in rows]) for k in SUMMARY_METRICS}
    if sides:
        for side in ("right", "left"):
            for k in ("dice", "hd", "hd95", "assd"):
                metrics[f"{side}_{k}"] = summarise([r.get(f"{side}_{k}") for r in rows])
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    tp = sum(int(r.get("lesion_tp") or 0) for r in rows)
    fp = sum(int(r.get("lesion_fp") or 0) for r in rows)
    fn = sum(int(r.get("lesion_fn") or 0) for r in rows)
    sens = tp / (tp + fn) if tp + fn else None
    n_pred = sum(int(r.get("lesion_n_pred") or 0) for r in rows)
    tp_pred = sum(int(r.get("lesion_tp_pred") or 0) for r in rows)
    prec = tp_pred / n_pred if n_pred else None
    f1 = None if sens is None or prec is None else (0.0 if sens + prec == 0 else 2 * sens * prec / (sens + prec))
    pooled = {"tp": tp, "fp": fp, "fn": fn, "sensitivity": sens, "precision": prec, "f1": f1,
              "fp_per_case": fp / len(rows) if rows else None}
    return {"n_cases": len(rows), "statuses": statuses, "metrics": metrics, "lesions_pooled": pooled}


def summary_table(metrics: dict) -> list[dict]:
    """{metric: summarise()} → rows (metric, mean, std, median, q1, q3, iqr, min, max, n, n_undefined)."""
    rows = []
    for k, s in metrics.items():
        iqr = None if s["q1"] is None else s["q3"] - s["q1"]
        rows.append({"metric": k, "unit": UNITS.get(k.split("_", 1)[-1] if k.startswith(("right_", "left_"))
                                                     else k, ""),
                     "mean": s["mean"], "std": s["std"], "median": s["median"], "q1": s["q1"], "q3": s["q3"],
                     "iqr": iqr, "min": s["min"], "max": s["max"], "n": s["n"], "n_undefined": s["n_undefined"]})
    return rows


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not np.isfinite(v) else format(v, ".10g")
    if isinstance(v, (np.floating,)):
        return _cell(float(v))
    return v


def write_csv(path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """CSV (atomic) with undefined values as empty cells."""
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return write_text(path, buf.getvalue())
