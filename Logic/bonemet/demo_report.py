"""The demo's HTML report: one self-contained page with every stage's tables and figures."""

from __future__ import annotations

from pathlib import Path

from bonemet.report.html import Report

STAGE_TITLES = {
    "cohort": "Phantom cohort", "femur": "Femur segmentation", "synthesis": "Ad-hoc lesion synthesis",
    "ddpm": "DDPM training", "refine": "Diffusion refinement", "experiment": "Lesion segmentation experiment",
    "variability": "Operator variability", "report": "Report",
}


def build_report(d) -> Path:
    """Write ``OUT/report.html`` from the results of the finished stages of demo ``d``."""
    r = d.results
    rep = Report("BoneMet demo report",
                 subtitle=f"preset {d.preset}, seed {d.seed}: synthetic lesioned femurs, diffusion refinement, "
                 "3D U-Nets and operator variability on built-in phantom data")
    rep.paragraph("Every number on this page was computed by this run on phantom CT volumes generated from real "
                  "manual femur/pelvis annotations (no patient CT is shipped). Phantoms are small and networks "
                  "tiny so the whole pipeline runs on a laptop CPU; the paper's sizes are the 'paper' preset.")
    rep.table([{"stage": STAGE_TITLES.get(k, k), "seconds": v.get("seconds")} for k, v in r.items()
               if k != "report"], caption="Stages and their run time (s)", floatfmt=".1f")
    _cohort(rep, d)
    _femur(rep, r.get("femur"))
    _synthesis(rep, r.get("synthesis"))
    _diffusion(rep, d)
    _experiment(rep, r.get("experiment"))
    _variability(rep, r.get("variability"))
    return rep.save(d.out / "report.html")


def _png(path) -> bytes | None:
    p = Path(path) if path else None
    return p.read_bytes() if p and p.exists() else None


def _cohort(rep: Report, d) -> None:
    from bonemet.dataset import load_manifest
    from bonemet.io import read_ct, read_mask
    from bonemet.report.figures import slice_overlay

    if "cohort" not in d.results:
        return
    rep.heading(STAGE_TITLES["cohort"])
    cases = load_manifest(d.cohort)
    rows = []
    for c in cases:
        les = c.get("lesions") or []
        rows.append({"case": c.id, "centre": c.get("centre"), "patient": c.get("patient"),
                     "spacing (mm)": " x ".join(f"{s:.2f}" for s in (c.get("spacing") or [])),
                     "lesions": len(les),
                     "lesion volumes (mm³)": ", ".join(f"{x.get('volume_mm3', 0):.0f}" for x in les),
                     "locations": ", ".join(f"{x.get('side', '')} {x.get('location', '')}" for x in les)})
    rep.table(rows, caption="Cases (lesioned cases are the 'real' cases of the experiment; healthy cases host "
              "synthetic lesions and train the DDPM)")
    lesioned = [c for c in cases if not c.healthy][:2]
    for c in lesioned:
        ct = read_ct(c.ct)
        masks = {"femur": read_mask(c.femur, binary=False).array > 0, "lesion": read_mask(c.lesion).array}
        fig = slice_overlay(ct.array, masks, ct.spacing_zyx, title=f"{c.id}: ground truth", crop_mm=None)
        rep.figure(fig, caption=f"{c.id}: axial and coronal slices through the lesions, femur and lesion contours")


def _femur(rep: Report, res) -> None:
    if not res:
        return
    rep.heading(STAGE_TITLES["femur"])
    rep.paragraph(f"Automatic femur segmentation (no trained model) against the phantom ground truth: mean Dice "
                  f"{res['mean_dice']:.3f}, worst case {res['min_dice']:.3f}.")
    rep.table(res["rows"], columns=["case", "dice_right", "dice_left", "dice_both", "seconds"],
              caption="Femur Dice per case (label 1 = right femur, 2 = left femur)")


def _synthesis(rep: Report, res) -> None:
    if not res:
        return
    rep.heading(STAGE_TITLES["synthesis"])
    s = res.get("summary", {})
    rep.paragraph(f"{res.get('n_lesions')} lesions extracted from the lesioned cases into the library; "
                  f"{s.get('kept')} synthetic cases kept and {s.get('rejected')} rejected by the 16 mm³ size "
                  "filter. Each case records every drawn parameter (manifest), so it can be regenerated exactly.")
    png = _png(res.get("preview"))
    if png:
        rep.image_png(png, caption="Source lesions (library patches) and the synthetic cases made from them",
                      alt="synthetic preview")


def _diffusion(rep: Report, d) -> None:
    m, ref = d.results.get("ddpm"), d.results.get("refine")
    if not m:
        return
    rep.heading(STAGE_TITLES["refine"])
    rep.paragraph(f"DDPM trained on the healthy femurs only: {m.get('step')} steps, {m.get('parameters')} "
                  f"parameters, final loss {m.get('final_loss', float('nan')):.4f}.")
    for name in ("loss.png", "loss_curve.png"):
        png = _png(d.out / "ddpm" / name)
        if png:
            rep.image_png(png, caption="DDPM training loss", alt="DDPM loss curve")
            break
    if ref:
        st = ref.get("settings", {})
        rep.paragraph(f"SDEdit refinement: noise to λ = {st.get('lambda', st.get('lam'))} "
                      f"({st.get('lambda_unit')} steps), then DDIM denoising; {ref.get('written', ref.get('refined'))} "
                      "cases refined; lesion masks are carried over unchanged.")
        rows = _intensity_rows(Path(ref["folder"]))
        if rows:
            rep.table(rows, caption="What refinement does to the lesion: mean HU inside the lesion and in a shell "
                      "around it, before and after", floatfmt=".1f")
        png = _png(ref.get("preview"))
        if png:
            rep.image_png(png, caption="Synthetic vs refined (axial slice through the lesion) and their difference",
                          alt="refinement preview")


def _intensity_rows(folder: Path) -> list[dict]:
    try:
        from bonemet.dataset import load_manifest

        cases = load_manifest(folder, check_files=False)
    except Exception:  # noqa: BLE001
        return []
    rows = []
    for c in cases:
        chk = (c.get("refinement") or {}).get("intensity_check") or {}
        flat = {"case": c.id}
        for k, v in chk.items():
            if isinstance(v, (int, float)) or v is None:
                flat[k] = v
        rows.append(flat)
    return rows


def _experiment(rep: Report, res) -> None:
    if not res:
        return
    from bonemet.segmentation.experiment import section

    section(rep, res, fig=_dice_fig(res))
    rep.paragraph(f"Full experiment report: {Path(res['report']).name} in {Path(res['report']).parent}.")


def _dice_fig(res):
    import csv

    from bonemet.segmentation.experiment import dice_plot

    p = Path(res.get("per_case_csv", ""))
    if not p.exists():
        return None
    rows = []
    with open(p, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            row["dice"] = float(row["dice"]) if row.get("dice") not in (None, "") else None
            rows.append(row)
    models = list(dict.fromkeys(r["model"] for r in rows))
    return dice_plot(rows, models)


def _variability(rep: Report, res) -> None:
    if not res:
        return
    rep.heading(STAGE_TITLES["variability"])
    rep.paragraph("Simulated operators (novices with two sessions, experts) segment the lesions of the real "
                  "cases; the automatic method is the experiment's best model (cross-validated predictions). "
                  "Like the paper's Table 1: inter-operator, automatic vs operators and intra-operator Dice. "
                  "Pairs where both masks are empty are true negatives: Dice is undefined and left out.")
    rep.table(res.get("table", []), caption="Operator variability (mean ± std)")
    if res.get("not_computable"):
        rep.table([x if isinstance(x, dict) else {"group": x} for x in res["not_computable"]],
                  caption="Groups that cannot be computed, and why")
    rep.paragraph(f"Full variability report: {res.get('report')}")
