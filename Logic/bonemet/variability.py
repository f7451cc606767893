"""Operator variability study (inter-/intra-operator agreement, automatic vs operators) and STAPLE consensus.

Input: a CSV with columns ``case, operator, role, session, mask`` and optionally ``ct`` (and ``femur``), one row
per segmentation; ``role`` is ``novice``, ``expert`` or ``automatic``; relative paths are relative to the CSV.

Pairs compared per case (each operator's first session, sorted by session label, stands for the operator in
between-operator comparisons; the second-named side is used as the reference for the asymmetric metrics):

* ``novice/novice``, ``expert/expert``, ``automatic/automatic``: every pair of different operators of that role
  (reference = the alphabetically first operator);
* ``novice/expert``: every novice against every expert (reference = expert);
* ``automatic/novice``, ``automatic/expert``: every automatic method against every novice / expert
  (reference = the human);
* ``intra <role>``: the same operator, every pair of different sessions (reference = the earlier session);
* ``<role>/staple`` (with ``staple=[operators]``): every operator against the STAPLE consensus of the chosen
  operators — the operators in the consensus are not independent of it.

Outputs (``out_dir``): ``pairs.csv`` (one row per pair with every metric), ``groups.csv``/``summary.json``
(mean ± std, median, IQR of every metric per group, ``not computable`` with its reason where a group has no
pair or a statistic needs more values), ``stats.csv`` (Kruskal-Wallis across groups and pairwise Mann-Whitney U
with Holm correction for Dice, HD95, ASSD, HD), ``staple/<case>.nii.gz`` and an optional HTML report.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonemet.errors import InputError

log = logging.getLogger("bonemet")

ROLES = ("novice", "expert", "automatic")
REQUIRED_COLUMNS = ("case", "operator", "role", "session", "mask")
OPTIONAL_COLUMNS = ("ct", "femur")
PAIR_METRICS = ("dice", "hd", "hd95", "assd", "vol_a_mm3", "vol_ref_mm3", "vol_diff_mm3", "vol_diff_pct",
                "sensitivity", "precision", "lesion_tp", "lesion_fp", "lesion_fn", "lesion_f1")
TEST_METRICS = ("dice", "hd95", "assd", "hd")
GROUP_ORDER = ("novice/novice", "novice/expert", "expert/expert", "automatic/novice", "automatic/expert",
               "automatic/automatic", "intra novice", "intra expert", "intra automatic",
               "novice/staple", "expert/staple", "automatic/staple")


# ---------------------------------------------------------------------------------------------------------------
# Simulated operators (demo)
# ---------------------------------------------------------------------------------------------------------------
SKILLS = {
    # boundary: mean and sd of a per-lesion outward shift, amplitude of a smooth random field, in mm but at least
    # ``*_vox`` times the mean voxel size (sub-voxel shifts would change nothing on coarse grids);
    # missed: lesions below missed_mm3 are dropped with probability p_miss; fp: expected false positives.
    "novice": {"shift_mean": 0.4, "shift_sd": 0.8, "shift_sd_vox": 0.7, "field_mm": 0.9, "field_vox": 0.9,
               "missed_mm3": 400.0, "p_miss": 0.5, "fp_rate": 0.6, "fp_radius_mm": (1.8, 3.5)},
    "expert": {"shift_mean": 0.0, "shift_sd": 0.35, "shift_sd_vox": 0.35, "field_mm": 0.4, "field_vox": 0.55,
               "missed_mm3": 150.0, "p_miss": 0.2, "fp_rate": 0.15, "fp_radius_mm": (1.5, 2.5)},
    # a simulated automatic method: systematic under-segmentation, few misses, some false positives
    "automatic": {"shift_mean": -0.5, "shift_sd": 0.3, "shift_sd_vox": 0.3, "field_mm": 0.6, "field_vox": 0.6,
                  "missed_mm3": 100.0, "p_miss": 0.3, "fp_rate": 0.4, "fp_radius_mm": (2.0, 4.0)},
}


def simulate_operator(ref_mask, spacing_zyx, rng, skill: str = "novice", region=None, margin_mm: float = 25.0):
    """A plausible manual segmentation from a reference mask: per-lesion boundary shifts plus a smooth random
    boundary perturbation, small lesions missed at random, and a few false-positive blobs.

    ``ref_mask``: (z, y, x) binary; ``spacing_zyx``: mm; ``rng``: numpy Generator; ``skill``: novice | expert
    (or a dict like :data:`SKILLS`); ``region``: optional (z, y, x) mask where false positives may appear
    (e.g. the femurs; default: near the reference lesions). Returns a uint8 mask of the same shape."""
    from scipy import ndimage

    from bonemet.metrics import bounding_box

    p = SKILLS[skill] if isinstance(skill, str) else dict(skill)
    ref = np.asarray(ref_mask) > 0
    sp = np.asarray(spacing_zyx, float)
    out = np.zeros(ref.shape, np.uint8)
    box = bounding_box(ref)
    if box is not None:
        m = np.ceil(margin_mm / sp).astype(int)
        box = tuple(slice(max(b.start - k, 0), min(b.stop + k, n)) for b, k, n in zip(box, m, ref.shape))
        r = ref[box]
        labels, n = ndimage.label(r, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(labels.ravel())[1:] * float(np.prod(sp))
        # signed distance (mm): negative inside
        sdf = ndimage.distance_transform_edt(~r, sampling=sp) - ndimage.distance_transform_edt(r, sampling=sp)
        # nearest lesion label for every voxel (to apply the per-lesion shift)
        _, inds = ndimage.distance_transform_edt(labels == 0, sampling=sp, return_indices=True)
        nearest = labels[tuple(inds)]
        vox = float(np.mean(sp))
        shift_sd = max(p["shift_sd"], p.get("shift_sd_vox", 0.0) * vox)
        shifts = np.concatenate([[0.0], rng.normal(p["shift_mean"], shift_sd, n)])
        field = ndimage.gaussian_filter(rng.standard_normal(r.shape), sigma=np.maximum(4.0 / sp, 1.0))
        field *= max(p["field_mm"], p.get("field_vox", 0.0) * vox) / (field.std() + 1e-12)
        sim = sdf < shifts[nearest] + field
        keep = np.ones(n + 1, bool)
        keep[0] = False
        for i, vol in enumerate(sizes, start=1):
            if vol < p["missed_mm3"] and rng.random() < p["p_miss"]:
                keep[i] = False
        sim &= keep[nearest]
        out[box] = sim
    # false positives
    n_fp = int(rng.poisson(p["fp_rate"]))
    if n_fp:
        allowed = np.asarray(region) > 0 if region is not None else None
        if box is not None:  # near the lesions (within the margin), not on them
            near = np.zeros(ref.shape, bool)
            near[box] = True
            near[box] &= ~ndimage.binary_dilation(ref[box], iterations=3)
            allowed = near if allowed is None else (allowed & near)
        if allowed is not None and allowed.any():
            cand = np.flatnonzero(allowed.ravel())
            for _ in range(n_fp):
                c = np.unravel_index(cand[rng.integers(len(cand))], ref.shape)
                rad = rng.uniform(*p["fp_radius_mm"])
                k = np.ceil(rad / sp).astype(int)
                sl = tuple(slice(max(ci - ki, 0), min(ci + ki + 1, s)) for ci, ki, s in zip(c, k, ref.shape))
                grids = np.ogrid[sl]
                d2 = sum(((g - ci) * s) ** 2 for g, ci, s in zip(grids, c, sp))
                blob = d2 <= rad ** 2
                if region is not None:
                    blob &= allowed[sl]
                out[sl] |= blob.astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------------------------
# CSV input
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    case: str
    operator: str
    role: str
    session: str
    mask: Path
    ct: Path | None = None
    femur: Path | None = None
    line: int = 0


def read_study_csv(csv_path) -> list[Entry]:
    """Parse and validate the study CSV: known columns, roles, duplicates, files present."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise InputError("study CSV not found", csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text CSV: {exc}", csv_path) from exc
    reader = csv.DictReader(text.splitlines())
    cols = [c.strip() for c in (reader.fieldnames or [])]
    if not cols:
        raise InputError("CSV is empty (expected a header: " + ", ".join(REQUIRED_COLUMNS) + ")", csv_path)
    unknown = [c for c in cols if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(f"unknown column(s) {', '.join(repr(c) for c in unknown)}; allowed: "
                         f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}", csv_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", csv_path)
    if len(set(cols)) != len(cols):
        raise InputError("duplicate column names in the header", csv_path)
    base = csv_path.parent
    entries, seen, roles = [], {}, {}
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in raw.items()}
        if None in raw and raw[None]:
            raise InputError(f"line {i}: more values than columns", csv_path)
        if not any(row.get(c) for c in REQUIRED_COLUMNS):
            continue  # blank line
        for c in ("case", "operator", "role", "mask"):
            if not row.get(c):
                raise InputError(f"line {i}: empty {c!r}", csv_path)
        role = row["role"].lower()
        if role not in ROLES:
            raise InputError(f"line {i}: role {row['role']!r} is not one of {', '.join(ROLES)}", csv_path)
        if roles.setdefault(row["operator"], role) != role:
            raise InputError(f"line {i}: operator {row['operator']!r} has role {role!r} here but "
                             f"{roles[row['operator']]!r} on an earlier line", csv_path)
        session = row.get("session") or "1"
        key = (row["case"], row["operator"], session)
        if key in seen:
            raise InputError(f"line {i}: duplicate row for case {key[0]!r}, operator {key[1]!r}, session "
                             f"{key[2]!r} (first on line {seen[key]})", csv_path)
        seen[key] = i

        def path(c):
            v = row.get(c)
            if not v:
                return None
            p = Path(v)
            p = p if p.is_absolute() else base / p
            if not p.exists():
                raise InputError(f"line {i}: {c} file not found: {v}", csv_path)
            return p

        entries.append(Entry(row["case"], row["operator"], role, session, path("mask"), path("ct"), path("femur"),
                             i))
    if not entries:
        raise InputError("CSV has a header but no rows", csv_path)
    return entries


# ---------------------------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------------------------
def _session_key(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def plan_pairs(entries: list[Entry], staple_ops: tuple = ()) -> list[tuple[str, Entry, Entry | str]]:
    """[(group, a, reference)] for every comparison of the study (reference "staple" = consensus)."""
    by_case: dict[str, list[Entry]] = {}
    for e in entries:
        by_case.setdefault(e.case, []).append(e)
    pairs = []
    for case in sorted(by_case):
        es = by_case[case]
        first: dict[str, Entry] = {}
        for e in sorted(es, key=lambda e: _session_key(e.session)):
            first.setdefault(e.operator, e)
        ops = sorted(first)
        for o1, o2 in itertools.combinations(ops, 2):
            a, b = first[o1], first[o2]
            roles = {a.role, b.role}
            if a.role == b.role:
                ref, other = (a, b)
                pairs.append((f"{a.role}/{a.role}", other, ref))
            elif roles == {"novice", "expert"}:
                ref = a if a.role == "expert" else b
                pairs.append(("novice/expert", b if ref is a else a, ref))
            else:  # automatic vs human
                auto, human = (a, b) if a.role == "automatic" else (b, a)
                pairs.append((f"automatic/{human.role}", auto, human))
        by_op: dict[str, list[Entry]] = {}
        for e in es:
            by_op.setdefault(e.operator, []).append(e)
        for op, lst in sorted(by_op.items()):
            lst = sorted(lst, key=lambda e: _session_key(e.session))
            for s1, s2 in itertools.combinations(lst, 2):
                pairs.append((f"intra {s1.role}", s2, s1))
        if staple_ops:
            for op in ops:
                pairs.append((f"{first[op].role}/staple", first[op], "staple"))
    return pairs


def staple_consensus(masks: list[np.ndarray], threshold: float = 0.5) -> tuple[np.ndarray, dict]:
    """STAPLE (SimpleITK) of binary masks → (consensus uint8 = probability >= threshold, info with each rater's
    sensitivity and specificity)."""
    import SimpleITK as sitk

    if len(masks) < 2:
        raise InputError(f"STAPLE needs at least 2 segmentations, got {len(masks)}")
    imgs = [sitk.GetImageFromArray(np.ascontiguousarray(m, dtype=np.uint8)) for m in masks]
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    prob = sitk.GetArrayFromImage(f.Execute(imgs))
    info = {"sensitivity": [float(x) for x in f.GetSensitivity()],
            "specificity": [float(x) for x in f.GetSpecificity()], "iterations": int(f.GetElapsedIterations())}
    cons = (prob >= threshold).astype(np.uint8)
    return cons, info


def run_study(csv_path, out_dir, report=None, staple: list[str] | tuple = (), min_lesion_mm3: float = 16.0,
              n_worst: int = 3) -> dict:
    """Run the variability study of ``csv_path``; write pairs.csv, groups.csv, stats.csv, summary.json (and
    staple/ masks, an HTML report) into ``out_dir``. Returns the summary dict."""
    from bonemet.dataset import provenance
    from bonemet.evaluation import evaluate_arrays, write_csv
    from bonemet.io import read_mask, write_mask
    from bonemet.metrics import summarise
    from bonemet.progress import progress
    from bonemet import stats

    entries = read_study_csv(csv_path)
    out_dir = Path(out_dir)
    staple = tuple(staple or ())
    known_ops = {e.operator for e in entries}
    bad = [o for o in staple if o not in known_ops]
    if bad:
        raise InputError(f"--staple operator(s) not in the CSV: {', '.join(bad)} (known: "
                         f"{', '.join(sorted(known_ops))})", csv_path)
    if staple and len(staple) < 2:
        raise InputError("--staple needs at least 2 operators", csv_path)
    pairs = plan_pairs(entries, staple)

    _check_grids(entries)  # from the file headers: a grid mismatch stops the study before anything is written
    by_case: dict[str, list] = {}
    for pr in pairs:
        by_case.setdefault(pr[1].case, []).append(pr)
    cases = sorted({e.case for e in entries})
    staple_tmp = out_dir / f".staple.tmp{os.getpid()}"
    staple_masks: dict[str, Path] = {}
    staple_info: dict[str, dict] = {}
    not_computable: list[dict] = []
    rows = []
    try:
        for case in progress(cases, desc="variability cases", total=len(cases)):
            cache: dict = {}  # masks of this case only: memory bounded by one case's segmentations

            def load(e: Entry, _cache=cache, _case=case):
                if e.mask not in _cache:
                    first = next(iter(_cache.values()), None)
                    _cache[e.mask] = read_mask(e.mask, reference=first)
                return _cache[e.mask]

            consensus = None
            if staple:
                chosen = []
                for op in staple:
                    es = sorted((e for e in entries if e.case == case and e.operator == op),
                                key=lambda e: _session_key(e.session))
                    if es:
                        chosen.append(es[0])
                if len(chosen) < 2:
                    not_computable.append({"what": f"STAPLE of case {case}",
                                           "reason": f"only {len(chosen)} of the chosen operators segmented it"})
                else:
                    vols = [load(e) for e in chosen]
                    cons, info = staple_consensus([v.array for v in vols])
                    write_mask(staple_tmp / f"{case}.nii.gz", cons, vols[0].geometry)
                    consensus = cons
                    staple_masks[case] = out_dir / "staple" / f"{case}.nii.gz"
                    staple_info[case] = {"operators": [e.operator for e in chosen], **info}
            for group, a, ref in by_case.get(case, []):
                va = load(a)
                if ref == "staple":
                    if consensus is None:
                        continue
                    ref_arr, spacing = consensus, va.spacing_zyx
                    ref_desc = {"ref_operator": "STAPLE(" + "+".join(staple_info[case]["operators"]) + ")",
                                "ref_role": "staple", "ref_session": "", "ref_mask": str(staple_masks[case])}
                    ct = a.ct
                else:
                    rv = load(ref)
                    ref_arr, spacing = rv.array, rv.spacing_zyx
                    ref_desc = {"ref_operator": ref.operator, "ref_role": ref.role, "ref_session": ref.session,
                                "ref_mask": str(ref.mask)}
                    ct = a.ct or ref.ct
                res = evaluate_arrays(va.array, ref_arr, spacing, None, min_lesion_mm3)
                row = {"group": group, "case": a.case, "operator": a.operator, "role": a.role,
                       "session": a.session, **ref_desc, "status": res["status"]}
                row.update({"dice": res["dice"], "hd": res["hd"], "hd95": res["hd95"], "assd": res["assd"],
                            "vol_a_mm3": res["vol_pred_mm3"], "vol_ref_mm3": res["vol_ref_mm3"],
                            "vol_diff_mm3": res["vol_diff_mm3"], "vol_diff_pct": res["vol_diff_pct"],
                            "sensitivity": res["sensitivity"], "precision": res["precision"],
                            "lesion_tp": res["lesion_tp"], "lesion_fp": res["lesion_fp"],
                            "lesion_fn": res["lesion_fn"], "lesion_f1": res["lesion_f1"], "note": res["note"],
                            "mask": str(a.mask), "ct": str(ct) if ct else None})
                rows.append(row)
        if staple_masks:
            (out_dir / "staple").mkdir(parents=True, exist_ok=True)
            for case in staple_masks:
                os.replace(staple_tmp / f"{case}.nii.gz", staple_masks[case])
    finally:
        if staple_tmp.exists():
            import shutil

            shutil.rmtree(staple_tmp, ignore_errors=True)

    # groups
    present_roles = {e.role for e in entries}
    ops_by_role = {r: sorted({e.operator for e in entries if e.role == r}) for r in ROLES}
    groups_out = []
    group_names = [g for g in GROUP_ORDER if any(r["group"] == g for r in rows)]
    for g in GROUP_ORDER:
        if g in group_names:
            continue
        reason = _why_empty(g, ops_by_role, entries, staple)
        if reason:
            not_computable.append({"what": f"group {g}", "reason": reason})
    for g in group_names:
        grs = [r for r in rows if r["group"] == g]
        summ = {m: summarise([r[m] for r in grs]) for m in PAIR_METRICS}
        statuses: dict[str, int] = {}
        for r in grs:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        entry = {"group": g, "n_pairs": len(grs), "n_cases": len({r["case"] for r in grs}),
                 "operators": sorted({r["operator"] for r in grs} | {r["ref_operator"] for r in grs}),
                 "statuses": statuses, "metrics": summ}
        if len(grs) < 2:
            entry["note"] = "std not computable: a single pair"
        groups_out.append(entry)
    # operators with a single case
    for op in sorted(known_ops):
        cases = {e.case for e in entries if e.operator == op}
        if len(cases) == 1:
            not_computable.append({"what": f"operator {op}", "reason": "segmented a single case: its groups have "
                                   "one pair per partner, spread (std) over cases not computable for it alone"})
    for r in ROLES:
        if r in present_roles and not any(g["group"] == f"intra {r}" for g in groups_out):
            not_computable.append({"what": f"group intra {r}", "reason": f"no {r} operator has two sessions "
                                   "of the same case"})

    # statistics
    tests = []
    for metric in TEST_METRICS:
        gvals = {g["group"]: [r[metric] for r in rows if r["group"] == g["group"]] for g in groups_out}
        kw = stats.kruskal(gvals)
        tests.append({"metric": metric, "a": "all groups", "b": "", "test": kw["test"], "statistic": kw["statistic"],
                      "p": kw["p"], "p_adj": None, "correction": "", "note": kw["note"]})
        for pr in stats.pairwise(gvals, paired=False, correction="holm"):
            tests.append({"metric": metric, **{k: pr.get(k) for k in ("a", "b", "test", "statistic", "p", "p_adj",
                                                                       "correction", "note", "n_a", "n_b",
                                                                       "median_a", "median_b")}})
        # paired: per-case means of two groups sharing cases (e.g. automatic/expert vs novice/expert)
        per_case = {}
        for g in groups_out:
            d: dict[str, list] = {}
            for r in rows:
                if r["group"] == g["group"] and r[metric] is not None:
                    d.setdefault(r["case"], []).append(r[metric])
            per_case[g["group"]] = {c: float(np.mean(v)) for c, v in d.items()}
        names = [g for g in per_case if per_case[g]]
        pair_rows = []
        for g1, g2 in itertools.combinations(names, 2):
            common = sorted(set(per_case[g1]) & set(per_case[g2]))
            pr = stats.pairwise({g1: [per_case[g1][c] for c in common], g2: [per_case[g2][c] for c in common]},
                                paired=True, correction="none")[0]
            pair_rows.append(pr)
        adj = stats.holm([p["p"] for p in pair_rows])
        for pr, pa in zip(pair_rows, adj):
            tests.append({"metric": metric, **{k: pr.get(k) for k in ("a", "b", "test", "statistic", "p", "note",
                                                                       "n_a", "n_b", "median_a", "median_b")},
                          "p_adj": pa, "correction": "holm", "paired_by": "case (mean per case)"})

    summary = {
        "csv": str(csv_path), "n_rows": len(entries), "n_cases": len({e.case for e in entries}),
        "operators": {op: {"role": next(e.role for e in entries if e.operator == op),
                           "cases": len({e.case for e in entries if e.operator == op}),
                           "sessions": sorted({e.session for e in entries if e.operator == op}, key=_session_key)}
                      for op in sorted(known_ops)},
        "groups": groups_out, "not_computable": not_computable, "tests": tests, "staple": staple_info,
        "min_lesion_mm3": min_lesion_mm3,
        "conventions": "between operators each operator's first session is used; the reference of asymmetric "
                       "metrics is the expert (novice/expert), the human (automatic/*), the earlier session "
                       "(intra), the alphabetically first operator (same role). Undefined values (true negatives: "
                       "both masks empty) are left out of means and counted in n_undefined.",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "pairs.csv", rows)
    write_csv(out_dir / "groups.csv", group_table(groups_out))
    write_csv(out_dir / "stats.csv", tests, columns=["metric", "test", "a", "b", "n_a", "n_b", "median_a",
                                                     "median_b", "statistic", "p", "p_adj", "correction",
                                                     "paired_by", "note"])
    from bonemet.atomic import write_json

    write_json(out_dir / "summary.json", {**summary, "provenance": provenance()})
    if report:
        from bonemet.report.variability import variability_report

        variability_report(rows, summary, report, n_worst=n_worst)
    return summary


def _header_geometry(path: Path):
    """Grid of an image file from its header only (no voxel data read)."""
    import SimpleITK as sitk

    from bonemet.io import Geometry, read_image

    if path.is_dir():
        return Geometry.from_image(read_image(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read image header: {str(exc).strip().splitlines()[-1][:200]}", path) from exc
    size = reader.GetSize()
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
        return Geometry(tuple(size), reader.GetSpacing()[:3], reader.GetOrigin()[:3],
                        tuple(reader.GetDirection()[i * 4 + j] for i in range(3) for j in range(3)))
    if len(size) != 3:
        raise InputError(f"expected a 3D mask, got size {size}", path)
    return Geometry(tuple(size), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _check_grids(entries: list[Entry]) -> None:
    """Every mask (and CT) of a case on the grid of the case's first mask, from headers."""
    from bonemet.io import check_same_grid

    first: dict[str, tuple] = {}
    for e in entries:
        for p in (e.mask, e.ct):
            if p is None:
                continue
            geo = _header_geometry(p)
            if e.case not in first:
                first[e.case] = (p, geo)
            else:
                check_same_grid(geo, first[e.case][1], p, first[e.case][0])


def _why_empty(group: str, ops_by_role: dict, entries, staple) -> str | None:
    n = {r: len(v) for r, v in ops_by_role.items()}
    if group.startswith("intra"):
        return None  # handled separately
    if group.endswith("/staple"):
        role = group.split("/")[0]
        return None if not staple or n[role] == 0 else "no STAPLE consensus computed for these cases"
    a, b = group.split("/")
    if a == b:
        if n[a] == 1:
            return f"only one {a} operator"
        if n[a] == 0:
            return None
        return f"no case segmented by two {a} operators"
    if n[a] == 0 or n[b] == 0:
        return None
    return f"no case segmented by both a {a} and a {b} operator"


def group_table(groups_out: list[dict], metrics=PAIR_METRICS) -> list[dict]:
    """One row per group: n pairs/cases and mean, std, median, q1, q3 of every metric (flat columns)."""
    rows = []
    for g in groups_out:
        row = {"group": g["group"], "n_pairs": g["n_pairs"], "n_cases": g["n_cases"]}
        for m in metrics:
            s = g["metrics"][m]
            row.update({f"{m}_mean": s["mean"], f"{m}_std": s["std"], f"{m}_median": s["median"],
                        f"{m}_q1": s["q1"], f"{m}_q3": s["q3"], f"{m}_n": s["n"]})
        row["note"] = g.get("note", "")
        rows.append(row)
    return rows


def write_study_csv(path, rows: list[dict]) -> Path:
    """Write a study CSV (case, operator, role, session, mask[, ct]); paths made relative to the CSV folder."""
    path = Path(path)
    cols = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(r.get(c) for r in rows)]
    out = []
    for r in rows:
        rr = dict(r)
        for c in ("mask", "ct", "femur"):
            if rr.get(c):
                rr[c] = os.path.relpath(rr[c], path.parent).replace(os.sep, "/")
        out.append(rr)
    from bonemet.evaluation import write_csv

    return write_csv(path, out, columns=cols)


def simulate_study(dataset_dir, out_dir, novices: int = 3, experts: int = 2, sessions: int = 2, seed: int = 0,
                   automatic: dict | None = None, simulated_automatic: int = 1, max_cases: int | None = None) -> Path:
    """Demo: simulated operators segmenting the lesioned cases of a dataset folder. Writes masks and
    ``out_dir/study.csv``; ``automatic``: optional {method name: folder of masks named <case id>.nii.gz} (real
    predictions); ``simulated_automatic``: how many simulated automatic methods (one session each).
    Returns the CSV path."""
    from bonemet.dataset import load_manifest
    from bonemet.io import read_mask, write_mask
    from bonemet import seeding

    out_dir = Path(out_dir)
    cases = [c for c in load_manifest(dataset_dir) if not c.healthy]
    if max_cases:
        cases = cases[:max_cases]
    if not cases:
        raise InputError("dataset has no lesioned case to simulate operators on", dataset_dir)
    rows = []
    ops = [(f"novice{i + 1}", "novice", sessions) for i in range(novices)] + \
        [(f"expert{i + 1}", "expert", sessions) for i in range(experts)] + \
        [(f"auto{i + 1}", "automatic", 1) for i in range(simulated_automatic)]
    for c in cases:
        ref = read_mask(c.lesion)
        femur = read_mask(c.femur, reference=ref, binary=False).array if c.femur else None
        for op, role, n_sessions in ops:
            for s in range(1, n_sessions + 1):
                rng = seeding.rng(seed, "operator", c.id, op, s)
                m = simulate_operator(ref.array, ref.spacing_zyx, rng, role,
                                      region=(femur > 0) if femur is not None else None)
                p = out_dir / "masks" / op / f"s{s}" / f"{c.id}.nii.gz"
                write_mask(p, m, ref.geometry)
                rows.append({"case": c.id, "operator": op, "role": role, "session": str(s), "mask": p, "ct": c.ct})
        for name, folder in (automatic or {}).items():
            p = Path(folder) / f"{c.id}.nii.gz"
            if p.exists():
                rows.append({"case": c.id, "operator": name, "role": "automatic", "session": "1", "mask": p,
                             "ct": c.ct})
    return write_study_csv(out_dir / "study.csv", rows)



def demo_variability(dataset_dir, out_dir, automatic: dict | None = None, seed: int = 0, novices: int = 2,
                     experts: int = 2, sessions: int = 2, max_cases: int | None = None,
                     staple: bool = True) -> dict:
    """The demo's variability stage: simulated operators on the lesioned cases of ``dataset_dir`` (plus real
    automatic predictions in ``automatic`` = {name: folder of <case id>.nii.gz}, or one simulated automatic
    method when None), the study and its report (``out_dir/report.html``).

    Returns {csv, out_dir, report, summary_json, table: [{group, pairs, dice, hd95, assd}] (formatted mean ± std)}."""
    from bonemet.metrics import format_mean_std

    out_dir = Path(out_dir)
    csv_path = simulate_study(dataset_dir, out_dir / "operators", novices=novices, experts=experts,
                              sessions=sessions, seed=seed, automatic=automatic,
                              simulated_automatic=0 if automatic else 1, max_cases=max_cases)
    experts_ops = [f"expert{i + 1}" for i in range(experts)]
    st = experts_ops if (staple and len(experts_ops) >= 2) else ()
    report = out_dir / "report.html"
    s = run_study(csv_path, out_dir / "study", report=report, staple=st)
    table = [{"group": g["group"], "pairs": g["n_pairs"], "dice": format_mean_std(g["metrics"]["dice"]),
              "hd95": format_mean_std(g["metrics"]["hd95"], ".2f"),
              "assd": format_mean_std(g["metrics"]["assd"], ".2f")} for g in s["groups"]]
    return {"csv": str(csv_path), "out_dir": str(out_dir / "study"), "report": str(report),
            "summary_json": str(out_dir / "study" / "summary.json"), "table": table,
            "not_computable": s["not_computable"]}
