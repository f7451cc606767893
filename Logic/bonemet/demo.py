"""``bonemet demo``: the whole method end to end on built-in phantom data.

Stages (each resumable: a finished stage leaves ``OUT/stages/<name>.json`` and is skipped on a re-run;
the long stages are resumable inside, too):

1. ``cohort``      phantom CT cohort with ground truth (lesioned "real" cases and healthy femurs);
2. ``femur``       automatic femur segmentation of every case, Dice against the ground truth;
3. ``synthesis``   lesion library from the lesioned cases, ad-hoc synthetic set on the healthy femurs;
4. ``ddpm``        a small DDPM trained briefly on the healthy femurs;
5. ``refine``      DDIM refinement (SDEdit) of part of the synthetic set, before/after preview;
6. ``experiment``  cross-validated U-Nets Real / Synthetic / Synthetic+FT / Diffusion / Diffusion+FT,
                   predictions and evaluation with statistics;
7. ``variability`` simulated operators (novices, expert, two sessions) and the automatic segmentation:
                   inter-/intra-operator variability study;
8. ``report``      one self-contained HTML report and a terminal summary.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bonemet.atomic import write_json
from bonemet.presets import load_preset, merge

log = logging.getLogger("bonemet")


class Demo:
    """State of one demo run: output folder, configuration, results of finished stages."""

    def __init__(self, out_dir, preset: str = "small", seed: int = 0, device: str = "auto",
                 overrides: dict | None = None):
        self.out = Path(out_dir)
        self.preset = preset
        self.cfg = merge(load_preset("demo", preset), overrides)
        self.seed = int(seed)
        self.device = device
        self.results: dict[str, dict] = {}

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def cohort(self) -> Path:
        return self.out / "cohort"

    def stage_file(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.json"

    # -- running -----------------------------------------------------------------------------------------
    def run(self, only: list[str] | None = None) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        settings = {"preset": self.preset, "seed": self.seed, "config": self.cfg}
        sfile = self.out / "stages" / "settings.json"
        if sfile.exists():
            previous = json.loads(sfile.read_text(encoding="utf-8"))
            if previous != json.loads(json.dumps(settings)):
                from bonemet.errors import InputError

                raise InputError("this folder holds a demo run with other settings (preset/seed); "
                                 "use another --out or delete it", self.out)
        else:
            write_json(sfile, settings)
        t_all = time.perf_counter()
        for name, fn in STAGES:
            if only and name not in only:
                continue
            sf = self.stage_file(name)
            if sf.exists():
                self.results[name] = json.loads(sf.read_text(encoding="utf-8"))
                log.info("demo: stage %s already done (resumed)", name)
                continue
            log.info("demo: stage %s ...", name)
            t0 = time.perf_counter()
            res = fn(self)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            self.results[name] = res
            write_json(sf, res)
            log.info("demo: stage %s done in %.1f s", name, res["seconds"])
        total = sum(r.get("seconds", 0.0) for r in self.results.values())
        return {"out": str(self.out), "results": self.results, "stage_seconds": round(total, 1),
                "wall_seconds": round(time.perf_counter() - t_all, 1)}


# ---------------------------------------------------------------------------------------------------------
def stage_cohort(d: Demo) -> dict:
    from bonemet.phantom import generate_cohort

    c = d.cfg["phantom"]
    recs = generate_cohort(d.cohort, n=c["n"], seed=d.seed, preset=c["preset"],
                           healthy_fraction=c["healthy_fraction"], preview=False)
    lesioned = [r for r in recs if r.get("lesion")]
    return {"dataset": str(d.cohort), "n_cases": len(recs), "n_lesioned": len(lesioned),
            "n_healthy": len(recs) - len(lesioned),
            "n_lesions": int(sum(len(r.get("lesions", [])) for r in lesioned))}


def stage_femur(d: Demo) -> dict:
    from bonemet.dataset import load_manifest
    from bonemet.femur import segment_femur_file
    from bonemet.io import read_mask
    from bonemet.progress import progress

    out = d.out / "femur"
    rows = []
    for case in progress(load_manifest(d.cohort), desc="femur segmentation", unit="case"):
        dst = out / f"{case.id}_femur.nii.gz"
        t0 = time.perf_counter()
        if not dst.exists():
            segment_femur_file(case.ct, dst)
        secs = time.perf_counter() - t0
        pred = read_mask(dst, binary=False).array
        ref = read_mask(case.femur, binary=False).array
        row = {"case": case.id, "seconds": round(secs, 2)}
        for label, side in ((1, "right"), (2, "left")):
            row[f"dice_{side}"] = _dice(pred == label, ref == label)
        row["dice_both"] = _dice(pred > 0, ref > 0)
        rows.append(row)
    write_json(out / "femur_dice.json", rows)
    both = [r["dice_both"] for r in rows if r["dice_both"] is not None]
    return {"folder": str(out), "rows": rows, "mean_dice": float(np.mean(both)) if both else None,
            "min_dice": float(np.min(both)) if both else None}


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    s = int(a.sum()) + int(b.sum())
    return None if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def stage_synthesis(d: Demo) -> dict:
    from bonemet.synthesis.demo import run_synthesis_demo

    s = d.cfg["synthesis"]
    res = run_synthesis_demo(d.cohort, d.out / "synthesis", spacing=d.cfg["working_spacing"],
                             per_pair=s["per_pair"], seed=d.seed, workers=s["workers"], max_cases=s["max_cases"])
    return json.loads(json.dumps(res, default=str))


def stage_ddpm(d: Demo) -> dict:
    from bonemet.diffusion.train import train_ddpm

    c = d.cfg["ddpm"]
    res = train_ddpm(d.cohort, d.out / "ddpm", preset=c["preset"], steps=c["steps"], seed=d.seed,
                     device=d.device, resume=True)
    return json.loads(json.dumps(res, default=str))


def stage_refine(d: Demo) -> dict:
    from bonemet.diffusion.refine import refine_dataset

    c = d.cfg["refine"]
    synth = Path(d.results["synthesis"]["synthetic"])
    ids = _spread_over_sources(synth, c["max_cases"])
    res = refine_dataset(synth, d.out / "ddpm", d.out / "refined", lam=c["lambda"], ddim_steps=c["ddim_steps"],
                         seed=d.seed, device=d.device, lambda_unit=c["lambda_unit"], case_ids=ids,
                         overlap=c.get("overlap"), sw_batch_size=c.get("sw_batch_size"),
                         keep_far_mm=c.get("keep_far_mm"))
    res = json.loads(json.dumps(res, default=str))
    res["preview"] = str(_refine_preview(synth, d.out / "refined", d.out / "refined-preview.png"))
    res["folder"] = str(d.out / "refined")
    return res


def _spread_over_sources(dataset: Path, n: int | None) -> list[str] | None:
    """Up to ``n`` case ids taken round-robin over the lesion source cases, so that every cross-validation
    fold keeps some refined cases after its test lesions are excluded (``None``: all cases)."""
    from bonemet.dataset import load_manifest

    if not n:
        return None
    by_source: dict[str, list[str]] = {}
    for case in load_manifest(dataset, check_files=False):
        by_source.setdefault(str(case.get("source_case")), []).append(case.id)
    queues = [list(v) for _, v in sorted(by_source.items())]
    ids: list[str] = []
    while len(ids) < n and any(queues):
        for q in queues:
            if q and len(ids) < n:
                ids.append(q.pop(0))
    return ids


def _refine_preview(before_dir: Path, after_dir: Path, png: Path, n: int = 3) -> Path:
    """Before/after refinement: one row per case, axial slice through the lesion, contour in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bonemet.dataset import load_manifest
    from bonemet.io import read_ct, read_mask

    after = {c.id: c for c in load_manifest(after_dir)}
    before = [c for c in load_manifest(before_dir) if c.id in after][:n]
    fig, axes = plt.subplots(len(before), 3, figsize=(9, 3 * max(1, len(before))), squeeze=False)
    for row, case in zip(axes, before):
        ct0 = read_ct(case.ct).array
        ct1 = read_ct(after[case.id].ct).array
        les = read_mask(case.lesion).array
        z = int(np.argmax(les.sum(axis=(1, 2))))
        for ax, img, title in ((row[0], ct0[z], "synthetic"), (row[1], ct1[z], "refined"),
                               (row[2], ct1[z] - ct0[z], "refined - synthetic")):
            if title.startswith("refined -"):
                ax.imshow(img, cmap="coolwarm", vmin=-150, vmax=150)
            else:
                ax.imshow(img, cmap="gray", vmin=-400, vmax=1400)
                ax.contour(les[z], levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(f"{case.id}: {title}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    from bonemet.atomic import atomic_path

    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return png


def stage_experiment(d: Demo) -> dict:
    from bonemet.segmentation.experiment import run_experiment

    c = d.cfg["experiment"]
    res = run_experiment(d.cohort, d.out / "experiment", folds=c["folds"], preset=c["preset"],
                         sizes=tuple(c["sizes"]), seed=d.seed, device=d.device, epochs=c.get("epochs"),
                         finetune_epochs=c.get("finetune_epochs"), max_iterations=c.get("max_iterations"),
                         overrides=c.get("overrides"),
                         synthetic_dir=d.results["synthesis"]["synthetic"], diffusion_dir=d.results["refine"]["folder"],
                         ddpm_model=d.out / "ddpm")
    return json.loads(json.dumps(res, default=str))


def _gather_predictions(exp_dir: Path, model: str, dst: Path) -> Path | None:
    """Collect one model's cross-validation predictions (one per test case, over all folds) in one folder."""
    import shutil

    files = sorted(exp_dir.glob(f"fold*/pred/{model}/*.nii.gz"))
    if not files:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (dst / f.name).exists():
            shutil.copyfile(f, dst / f.name)
    return dst


def stage_variability(d: Demo) -> dict:
    from bonemet.variability import demo_variability

    c = d.cfg["variability"]
    automatic = None
    exp = d.results.get("experiment")
    if exp:
        best = max(exp["table_numeric"], key=lambda r: (r.get("dice_mean") or -1.0), default=None) \
            if exp.get("table_numeric") else None
        model = (best or {}).get("model") or (exp.get("models") or [None])[-1]
        folder = _gather_predictions(d.out / "experiment", model, d.out / "variability" / "automatic") if model else None
        automatic = {"automatic": str(folder)} if folder else None
    res = demo_variability(d.cohort, d.out / "variability", automatic=automatic, seed=d.seed,
                           novices=c["novices"], experts=c["experts"], sessions=c["sessions"])
    return json.loads(json.dumps(res, default=str))


def stage_report(d: Demo) -> dict:
    from bonemet.demo_report import build_report

    path = build_report(d)
    return {"path": str(path)}


STAGES: list[tuple[str, Callable[[Demo], dict]]] = [
    ("cohort", stage_cohort),
    ("femur", stage_femur),
    ("synthesis", stage_synthesis),
    ("ddpm", stage_ddpm),
    ("refine", stage_refine),
    ("experiment", stage_experiment),
    ("variability", stage_variability),
    ("report", stage_report),
]


def summary_text(result: dict) -> str:
    """The terminal summary: one line per stage and the report's path."""
    r = result["results"]
    lines = ["", "BoneMet demo — summary", "=" * 22]
    if "cohort" in r:
        c = r["cohort"]
        lines.append(f"cohort      {c['n_cases']} phantom CTs ({c['n_lesioned']} with {c['n_lesions']} lesions, "
                     f"{c['n_healthy']} healthy)")
    if "femur" in r:
        f = r["femur"]
        lines.append(f"femur       Dice vs ground truth: mean {_f(f['mean_dice'])}, worst {_f(f['min_dice'])} "
                     f"({len(f['rows'])} cases)")
    if "synthesis" in r:
        s = r["synthesis"]
        lines.append(f"synthesis   {s['n_lesions']} library lesions -> {s['summary'].get('kept')} synthetic cases kept, "
                     f"{s['summary'].get('rejected')} rejected by the size filter")
    if "ddpm" in r:
        m = r["ddpm"]
        lines.append(f"ddpm        {m.get('step')} training steps, final loss {_f(m.get('final_loss'))}")
    if "refine" in r:
        m = r["refine"]
        lines.append(f"refine      {m.get('refined', m.get('n_cases', '?'))} cases refined")
    if "experiment" in r:
        for row in r["experiment"].get("table", []):
            lines.append(f"experiment  {row['model']:<14} Dice {row['dice']}  HD95 {row['hd95']} mm")
    if "variability" in r:
        for row in r["variability"].get("table", []):
            lines.append(f"variability {row['group']:<24} Dice {row['dice']}")
    for name, res in r.items():
        lines.append(f"  stage {name:<12} {res.get('seconds', 0):7.1f} s")
    if "report" in r:
        lines.append(f"report      {r['report']['path']}")
    lines.append(f"output      {result['out']}")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
