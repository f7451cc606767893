"""Cross-validated segmentation experiments (``bonemet experiment``): the paper's Tables 2 and 3.

For a dataset folder of *real* cases (here: phantoms) :func:`run_experiment`

1. splits the lesioned cases into ``folds`` folds **grouped by patient** (case field ``patient``, else id);
2. for each fold builds the training sets with the fold's test lesions excluded (leakage control):

   * *Synthetic*: lesion library of the real cases → :func:`bonemet.synthesis.batch.synthesize` with
     ``exclude_sources`` = the fold's test case ids (or a precomputed synthetic folder, filtered by each case's
     ``source_case``); the fold's set is checked: no test case may be a source of any synthetic case;
   * *Diffusion*: the fold's synthetic set refined by :func:`bonemet.diffusion.refine.refine_dataset` with a
     DDPM trained on the healthy cases only (or a precomputed folder, filtered the same way);

3. trains the models Real, Synthetic, Synthetic+FT, Diffusion, Diffusion+FT (FT = fine-tuned on the fold's real
   training cases) and the training-size sweep (Synthetic on the first N synthetic cases);
4. predicts every test case (and the optional extra test cases, with the ensemble of the fold models), computes
   per-case metrics (:func:`bonemet.metrics.segmentation_metrics`), the Table 2 / Table 3 layouts (mean ± std of
   Dice, HD, HD95, ASSD), Kruskal-Wallis + pairwise tests with Holm correction, a plot, and an HTML report.

Everything is resumable: each synthetic/diffusion set, model and prediction leaves a finished marker, and a
killed run continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from bonemet.atomic import write_json, write_text
from bonemet.dataset import load_manifest
from bonemet.errors import InputError
from bonemet.seeding import derive_seed, rng

log = logging.getLogger("bonemet")

MODELS = ("real", "synthetic", "synthetic_ft", "diffusion", "diffusion_ft")
DISPLAY = {"real": "Real", "synthetic": "Synthetic", "synthetic_ft": "Synthetic+FT", "diffusion": "Diffusion",
           "diffusion_ft": "Diffusion+FT"}
METRICS = ("dice", "hd", "hd95", "assd")
METRIC_NAMES = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}


# ----------------------------------------------------------------------------------------------- folds
def patient_of(case) -> str:
    return str(case.get("patient") or case.id)


def assign_folds(cases, k: int, seed: int = 0) -> dict[str, int]:
    """case id → fold (0..k-1); all cases of a patient share a fold; folds balanced by patient count."""
    patients = sorted({patient_of(c) for c in cases})
    if k < 2:
        raise InputError(f"--folds must be >= 2 (got {k})")
    if len(patients) < k:
        raise InputError(f"{len(patients)} patients cannot be split into {k} folds (use --folds "
                         f"{max(len(patients), 2)} or fewer)")
    order = rng(seed, "folds").permutation(len(patients))
    fold_of_patient = {patients[j]: i % k for i, j in enumerate(order)}
    return {c.id: fold_of_patient[patient_of(c)] for c in cases}


def allowed_cases(dataset_dir, exclude_sources) -> list[str]:
    """Ids of the cases of a synthetic/diffusion folder whose lesion does not come from ``exclude_sources``.

    Raises InputError when a lesioned case records no ``source_case`` (leakage could not be controlled)."""
    excl = {str(s) for s in exclude_sources}
    out = []
    for c in load_manifest(dataset_dir, check_files=False):
        src = c.get("source_case")
        if src is None and not c.healthy:
            raise InputError(f"case {c.id} records no 'source_case': cannot exclude the test fold's lesions "
                             "(leakage control)", Path(dataset_dir) / "manifest.json")
        if src is None or str(src) not in excl:
            out.append(c.id)
    return out


def check_leakage(dataset_dir, test_ids, case_ids=None) -> int:
    """Assert that no (selected) case of ``dataset_dir`` uses a lesion of a test case; returns cases checked."""
    test = {str(t) for t in test_ids}
    n = 0
    for c in load_manifest(dataset_dir, check_files=False):
        if case_ids is not None and c.id not in case_ids:
            continue
        n += 1
        if str(c.get("source_case")) in test:
            raise RuntimeError(f"leakage: training case {c.id} of {dataset_dir} carries a lesion of test case "
                               f"{c.get('source_case')}")
    return n


# ------------------------------------------------------------------------------------------- statistics
def _holm(pvals: list[float]) -> list[float]:
    m = len(pvals)
    order = np.argsort(pvals)
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvals[i]))
        adj[i] = running
    return adj


def statistics(per_case: list[dict], models: list[str], metric: str = "dice") -> dict:
    """Kruskal-Wallis across ``models`` and pairwise tests (Wilcoxon signed-rank when the same cases are
    available for both, else Mann-Whitney U), Holm-corrected. Undefined values (None) are left out."""
    from scipy import stats as st

    groups = {m: {(r["fold"], r["case"], r["set"]): r[metric] for r in per_case
                  if r["model"] == m and r.get(metric) is not None} for m in models}
    groups = {m: g for m, g in groups.items() if len(g) >= 2}
    out: dict = {"metric": metric, "kruskal": None, "pairwise": []}
    if len(groups) < 2:
        return out
    vals = [list(g.values()) for g in groups.values()]
    try:
        h, p = st.kruskal(*vals)
        out["kruskal"] = {"H": float(h), "p": float(p), "groups": list(groups)}
    except ValueError as exc:  # all values identical
        out["kruskal"] = {"H": None, "p": None, "groups": list(groups), "note": str(exc)}
    names = list(groups)
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = groups[names[i]], groups[names[j]]
            common = sorted(set(a) & set(b))
            try:
                if len(common) >= 2 and len(common) == len(a) == len(b):
                    x, y = [a[c] for c in common], [b[c] for c in common]
                    test = "wilcoxon"
                    p = float(st.wilcoxon(x, y).pvalue) if any(u != v for u, v in zip(x, y)) else 1.0
                else:
                    test = "mann-whitney"
                    p = float(st.mannwhitneyu(list(a.values()), list(b.values())).pvalue)
            except ValueError:
                test, p = "n/a", 1.0
            rows.append({"a": names[i], "b": names[j], "test": test, "p": p, "n": len(common) or None})
    for r, adj in zip(rows, _holm([r["p"] for r in rows])):
        r["p_holm"] = adj
    out["pairwise"] = rows
    return out


def summary_table(per_case: list[dict], models: list[str], label: dict | None = None) -> tuple[list, list]:
    """(formatted rows 'mean ± std', numeric rows) per model over all its test cases."""
    fmt_rows, num_rows = [], []
    for m in models:
        rows = [r for r in per_case if r["model"] == m]
        if not rows:
            continue
        f = {"model": (label or {}).get(m, DISPLAY.get(m, m)), "n": len(rows)}
        n = {"model": m, "n": len(rows)}
        for k in METRICS:
            v = np.array([r[k] for r in rows if r.get(k) is not None], dtype=float)
            mean = float(v.mean()) if v.size else None
            std = float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else None)
            n[k + "_mean"], n[k + "_std"], n[k + "_n"] = mean, std, int(v.size)
            if mean is None:
                f[k] = "n/a"
            else:
                d = 2 if k == "dice" else 1
                f[k] = f"{mean:.{d}f} ± {std:.{d}f}"
        fmt_rows.append(f)
        num_rows.append(n)
    return fmt_rows, num_rows


# ------------------------------------------------------------------------------------------ the runner
class _Runner:
    def __init__(self, real_dir, out_dir, *, folds, preset, extra_test, sizes, models, seed, device, epochs,
                 finetune_epochs, max_iterations, overrides, synthetic_dir, diffusion_dir, healthy_dir,
                 synthesis_preset, per_pair, max_synthetic, ddpm_model, ddpm_preset, ddpm_steps, refine_lambda,
                 ddim_steps, refine_max_cases, workers, library_spacing):
        from bonemet.segmentation.config import make_config

        self.real = Path(real_dir)
        self.out = Path(out_dir)
        self.k = int(folds)
        self.preset = preset
        self.cfg = make_config(preset, overrides)
        exp = self.cfg.get("experiment", {})
        self.epochs = epochs if epochs is not None else exp.get("epochs")
        self.ft_epochs = finetune_epochs if finetune_epochs is not None else exp.get("finetune_epochs",
                                                                                      self.epochs)
        self.max_iter = max_iterations if max_iterations is not None else exp.get("max_iterations_per_epoch")
        self.overrides = overrides
        self.extra = Path(extra_test) if extra_test else None
        self.sizes = [str(s) for s in (sizes or ["full"])]
        self.models = [m for m in (models or MODELS)]
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise InputError(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(MODELS)})")
        self.seed, self.device = seed, device
        self.synthetic_dir = Path(synthetic_dir) if synthetic_dir else None
        self.diffusion_dir = Path(diffusion_dir) if diffusion_dir else None
        self.healthy_dir = Path(healthy_dir) if healthy_dir else self.real
        self.synthesis_preset, self.per_pair, self.max_synthetic = synthesis_preset, per_pair, max_synthetic
        self.ddpm_model = Path(ddpm_model) if ddpm_model else None
        self.ddpm_preset, self.ddpm_steps = ddpm_preset, ddpm_steps
        self.lam, self.ddim_steps, self.refine_max = refine_lambda, ddim_steps, refine_max_cases
        self.workers = workers
        self.library_spacing = library_spacing
        self.cases = [c for c in load_manifest(self.real) if not c.healthy]
        if not self.cases:
            raise InputError("the real dataset has no lesioned case to test on", self.real)
        self.timings: dict[str, float] = {}

    # -- helpers
    def _done(self, marker: Path):
        return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None

    def _timed(self, name, fn):
        t0 = time.perf_counter()
        out = fn()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        return out

    def needs_synthetic(self) -> bool:
        return any(m != "real" for m in self.models)

    def needs_diffusion(self) -> bool:
        return any(m.startswith("diffusion") for m in self.models)

    # -- data sets
    def library(self) -> Path:
        from bonemet.synthesis.library import extract_library

        lib = self.out / "library"
        marker = self.out / "markers" / "library.done.json"
        if not self._done(marker):
            sp = self.library_spacing or float(min(self.cfg["spacing"]))
            self._timed("library", lambda: extract_library(self.real, lib, spacing=sp))
            write_json(marker, {"library": str(lib)})
        return lib

    def synthetic(self, fold: int, test_ids: list[str]) -> tuple[Path, list[str]] | None:
        if self.synthetic_dir is not None:
            ids = allowed_cases(self.synthetic_dir, test_ids)
            check_leakage(self.synthetic_dir, test_ids, set(ids))
            return self.synthetic_dir, ids
        if not any(c.healthy for c in load_manifest(self.healthy_dir)):
            log.warning("no healthy case to host synthetic lesions: synthetic/diffusion models skipped")
            return None
        out = self.out / f"fold{fold}" / "synthetic"
        marker = self.out / "markers" / f"fold{fold}.synthetic.done.json"
        if not self._done(marker):
            from bonemet.synthesis.batch import synthesize

            lib = self.library()
            summary = self._timed("synthesis", lambda: synthesize(
                lib, self.healthy_dir, out, per_pair=self.per_pair, seed=derive_seed(self.seed, "synth", fold),
                workers=self.workers, exclude_sources=test_ids, preset=self.synthesis_preset,
                max_cases=self.max_synthetic))
            n = check_leakage(out, test_ids)
            write_json(marker, {"summary": _jsonable(summary), "checked_cases": n, "excluded_sources": test_ids})
        ids = [c.id for c in load_manifest(out)]
        check_leakage(out, test_ids, set(ids))
        return out, ids

    def ddpm(self) -> Path:
        if self.ddpm_model is not None:
            return self.ddpm_model
        from bonemet.diffusion.train import train_ddpm

        out = self.out / "ddpm"
        marker = self.out / "markers" / "ddpm.done.json"
        if not self._done(marker):
            s = self._timed("ddpm", lambda: train_ddpm(self.healthy_dir, out, preset=self.ddpm_preset,
                                                       steps=self.ddpm_steps, seed=self.seed, device=self.device,
                                                       resume=True))
            write_json(marker, _jsonable(s))
        return out

    def diffusion(self, fold: int, test_ids: list[str], synthetic: tuple[Path, list[str]] | None):
        if self.diffusion_dir is not None:
            ids = allowed_cases(self.diffusion_dir, test_ids)
            check_leakage(self.diffusion_dir, test_ids, set(ids))
            return self.diffusion_dir, ids
        if synthetic is None:
            return None
        from bonemet.diffusion.refine import refine_dataset

        syn_dir, syn_ids = synthetic
        out = self.out / f"fold{fold}" / "diffusion"
        marker = self.out / "markers" / f"fold{fold}.diffusion.done.json"
        if not self._done(marker):
            model = self.ddpm()
            s = self._timed("refine", lambda: refine_dataset(
                syn_dir, model, out, lam=self.lam, ddim_steps=self.ddim_steps,
                seed=derive_seed(self.seed, "refine", fold), device=self.device, max_cases=self.refine_max,
                case_ids=syn_ids if self.synthetic_dir is not None else None))
            write_json(marker, _jsonable(s))
        ids = [c.id for c in load_manifest(out)]
        check_leakage(out, test_ids, set(ids))
        return out, ids

    # -- models
    def train(self, fold: int, key: str, datasets, case_ids, train_ids, init=None) -> Path:
        from bonemet.segmentation.train import train_unet

        pkg = self.out / f"fold{fold}" / "models" / key
        marker = self.out / "markers" / f"fold{fold}.model.{key}.done.json"
        if self._done(marker):
            return pkg
        epochs = self.ft_epochs if init is not None else self.epochs
        s = self._timed("training", lambda: train_unet(
            datasets, pkg, preset=self.preset, epochs=epochs, init=init, seed=derive_seed(self.seed, key, fold),
            device=self.device, overrides=self.overrides, val_dataset=self.real, val_case_ids=set(train_ids),
            resume=True, case_ids=set(case_ids), max_iterations=self.max_iter))
        write_json(marker, _jsonable(s))
        return pkg

    # -- evaluation
    def evaluate(self, key: str, packages: list[Path], cases, where: Path, fold, set_name: str) -> list[dict]:
        from bonemet.io import read_ct, read_mask, write_mask
        from bonemet.metrics import segmentation_metrics
        from bonemet.segmentation.predict import load_models, predict_volume

        rows, nets = [], None
        for case in cases:
            marker = where / "metrics" / key / f"{case.id}.json"
            row = self._done(marker)
            if row is None:
                if nets is None:
                    from bonemet.device import resolve_device

                    nets, cfg = load_models(packages, resolve_device(self.device))
                ct = read_ct(case.ct)
                femur = read_mask(case.femur, reference=ct, binary=False).array if case.femur else None
                mask, _ = self._timed("prediction", lambda: predict_volume(ct, nets, cfg, femur))
                write_mask(where / "pred" / key / f"{case.id}.nii.gz", mask, ct.geometry)
                ref = read_mask(case.lesion, reference=ct).array if case.lesion else np.zeros_like(mask)
                m = segmentation_metrics(mask, ref, ct.spacing_zyx)
                row = {"fold": fold, "case": case.id, "patient": patient_of(case), "set": set_name, "model": key,
                       **{k: m.get(k) for k in ("dice", "hd", "hd95", "assd", "vol_pred_mm3", "vol_ref_mm3",
                                                "sensitivity", "precision", "status")}}
                write_json(marker, row)
            rows.append(row)
        return rows

    # -- everything
    def run(self) -> dict:
        t_start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        folds = assign_folds(self.cases, self.k, self.seed)
        write_json(self.out / "folds.json", {"folds": self.k, "seed": self.seed,
                                             "cases": {c.id: {"fold": folds[c.id], "patient": patient_of(c)}
                                                       for c in self.cases}})
        extra_cases = [c for c in load_manifest(self.extra)] if self.extra else []
        per_case: list[dict] = []
        packages: dict[str, list[Path]] = {}
        leakage: list[dict] = []
        size_keys: list[str] = []
        for f in range(self.k):
            test = [c for c in self.cases if folds[c.id] == f]
            train_ids = [c.id for c in self.cases if folds[c.id] != f]
            test_ids = [c.id for c in test]
            log.info("fold %d/%d: %d training cases, %d test cases", f + 1, self.k, len(train_ids), len(test))
            syn = self.synthetic(f, test_ids) if self.needs_synthetic() else None
            dif = self.diffusion(f, test_ids, syn) if self.needs_diffusion() else None
            leakage.append({"fold": f, "test_cases": test_ids,
                            "synthetic_cases": len(syn[1]) if syn else 0, "diffusion_cases": len(dif[1]) if dif
                            else 0, "test_lesions_in_training_sets": 0})
            trained: dict[str, Path] = {}
            for key in self.models:
                if key == "real":
                    trained[key] = self.train(f, key, [self.real], train_ids, train_ids)
                elif key in ("synthetic", "diffusion"):
                    src = syn if key == "synthetic" else dif
                    if src is None:
                        continue
                    trained[key] = self.train(f, key, [src[0]], src[1], train_ids)
                else:
                    base = key[:-3]
                    src = syn if base == "synthetic" else dif
                    if src is None:
                        continue
                    if base not in trained:
                        trained[base] = self.train(f, base, [src[0]], src[1], train_ids)
                    trained[key] = self.train(f, key, [self.real], train_ids, train_ids, init=trained[base])
            if syn is not None:
                order = [syn[1][i] for i in rng(self.seed, "sizes", f).permutation(len(syn[1]))]
                for s in self.sizes:
                    if s == "full":
                        continue
                    n = min(int(s), len(order))
                    key = f"synthetic_n{s}"
                    if key not in size_keys:
                        size_keys.append(key)
                    trained[key] = self.train(f, key, [syn[0]], order[:n], train_ids)
            for key, pkg in trained.items():
                packages.setdefault(key, []).append(pkg)
                per_case += self.evaluate(key, [pkg], test, self.out / f"fold{f}", f, "cv")
        if extra_cases:
            for key, pkgs in packages.items():
                per_case += self.evaluate(key, pkgs, extra_cases, self.out / "extra", "ensemble", "extra")
        return self.finish(per_case, size_keys, leakage, t_start)

    def finish(self, per_case, size_keys, leakage, t_start) -> dict:
        models = [m for m in MODELS if any(r["model"] == m for r in per_case)]
        table, numeric = summary_table(per_case, models)
        size_label = {k: f"{k.split('_n')[1]} synthetic cases" for k in size_keys}
        size_label["synthetic"] = "full synthetic set"
        sweep_models = size_keys + (["synthetic"] if "synthetic" in models else [])
        sizes_table, sizes_numeric = summary_table(per_case, sweep_models, size_label) if size_keys else ([], [])
        stats = {m: statistics(per_case, models, m) for m in METRICS}
        cols = ["fold", "set", "case", "patient", "model", "dice", "hd", "hd95", "assd", "vol_pred_mm3",
                "vol_ref_mm3", "sensitivity", "precision", "status"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in per_case:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        write_text(self.out / "per_case.csv", buf.getvalue())
        result = {"out": str(self.out), "folds": self.k, "n_cases": len(self.cases), "models": models,
                  "table": table, "table_numeric": numeric, "sizes_table": sizes_table,
                  "sizes_numeric": sizes_numeric, "stats": stats, "leakage": leakage,
                  "per_case_csv": str(self.out / "per_case.csv"),
                  "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
                  "seconds": round(time.perf_counter() - t_start, 2)}
        fig = dice_plot(per_case, models + size_keys)
        result["report"] = str(write_report(self.out / "report.html", result, fig))
        write_json(self.out / "results.json", result)
        return result


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def dice_plot(per_case, models):
    """Box + strip plot of per-case Dice per model (matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {DISPLAY.get(m, m.replace("synthetic_n", "Synth n=")): [r["dice"] for r in per_case
                                                                     if r["model"] == m and r["dice"] is not None]
              for m in models}
    groups = {k: v for k, v in groups.items() if v}
    try:
        from bonemet.report.figures import box_strip

        return box_strip(groups, ylabel="Dice", title="Per-case Dice on the test cases", ylim=(0, 1))
    except Exception:  # noqa: BLE001  (fallback if the report helpers change)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        if groups:
            ax.boxplot(list(groups.values()))
            ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=20)
        ax.set_ylabel("Dice")
        ax.set_ylim(0, 1)
        fig.tight_layout()
        return fig


def section(report, result: dict, fig=None, level: int = 2):
    """Append the experiment's tables, statistics and plot to a :class:`bonemet.report.html.Report`."""
    report.heading("Lesion segmentation: cross-validated experiment", level)
    report.paragraph(f"{result['folds']}-fold cross-validation grouped by patient over {result['n_cases']} "
                     "lesioned real cases; synthetic and diffusion training sets of each fold exclude the "
                     "fold's test lesions (checked). Extra test cases, if any, are segmented by the ensemble "
                     "of the fold models. Values: mean ± std over test cases; undefined values (empty masks) "
                     "are left out.")
    cols = ["model", "n", "dice", "hd", "hd95", "assd"]
    rename = [{**r, **{}} for r in result["table"]]
    report.table(rename, columns=cols, caption="Table 2 layout: Dice, Hausdorff distance (HD), HD95 and average "
                 "symmetric surface distance (ASSD, mm) per training set")
    if result.get("sizes_table"):
        report.table(result["sizes_table"], columns=cols, caption="Table 3 layout: training-set size sweep "
                     "(Synthetic model)")
    for metric in ("dice", "hd95"):
        st = result["stats"].get(metric) or {}
        kw = st.get("kruskal")
        if kw and kw.get("p") is not None:
            report.paragraph(f"Kruskal-Wallis on {METRIC_NAMES[metric]} across {len(kw['groups'])} models: "
                             f"H = {kw['H']:.3f}, p = {kw['p']:.4g}.")
        if st.get("pairwise"):
            report.table([{"A": DISPLAY.get(r["a"], r["a"]), "B": DISPLAY.get(r["b"], r["b"]), "test": r["test"],
                           "p": r["p"], "p (Holm)": r["p_holm"]} for r in st["pairwise"]],
                         caption=f"Pairwise tests on {METRIC_NAMES[metric]} (Holm-corrected)", floatfmt=".4g")
    if fig is not None:
        report.figure(fig, caption="Per-case Dice per training set")
    report.table([{"fold": lk["fold"], "test cases": ", ".join(lk["test_cases"]),
                   "synthetic cases": lk["synthetic_cases"], "diffusion cases": lk["diffusion_cases"],
                   "test lesions used for training": lk["test_lesions_in_training_sets"]}
                  for lk in result["leakage"]], caption="Leakage control per fold")
    return report


def write_report(path: Path, result: dict, fig=None) -> Path:
    from bonemet.report.html import Report

    rep = Report("BoneMet segmentation experiment")
    section(rep, result, fig)
    return rep.save(path)


def run_experiment(real_dir, out_dir, folds: int = 5, preset: str = "small", *, extra_test=None,
                   sizes=("full",), models=MODELS, seed: int = 0, device="auto", epochs: int | None = None,
                   finetune_epochs: int | None = None, max_iterations: int | None = None,
                   overrides: dict | None = None, synthetic_dir=None, diffusion_dir=None, healthy_dir=None,
                   synthesis_preset="small", per_pair: int | None = None, max_synthetic: int | None = None,
                   ddpm_model=None, ddpm_preset: str = "small", ddpm_steps: int | None = None,
                   refine_lambda: float = 10, ddim_steps: int = 50, refine_max_cases: int | None = None,
                   workers: int = 1, library_spacing: float | None = None) -> dict:
    """Run (or resume) the k-fold Real / Synthetic / Diffusion experiment; returns the result dict.

    ``real_dir``: dataset folder of real cases (lesioned cases are tested; healthy ones host synthetic lesions
    and train the DDPM unless ``healthy_dir`` is given). ``synthetic_dir`` / ``diffusion_dir``: precomputed
    sets (each case must record ``source_case``; cases from a fold's test cases are excluded per fold).
    ``ddpm_model``: a trained DDPM folder (else one is trained on the healthy cases). ``sizes``: training-set
    sizes for the sweep (``"full"`` = the Synthetic model). Result keys: ``table`` (Table 2 rows of
    'mean ± std' strings: model, n, dice, hd, hd95, assd), ``table_numeric``, ``sizes_table``, ``stats``,
    ``leakage``, ``per_case_csv``, ``report`` (HTML path), ``seconds``.
    """
    runner = _Runner(real_dir, out_dir, folds=folds, preset=preset, extra_test=extra_test, sizes=sizes,
                     models=models, seed=seed, device=device, epochs=epochs, finetune_epochs=finetune_epochs,
                     max_iterations=max_iterations, overrides=overrides, synthetic_dir=synthetic_dir,
                     diffusion_dir=diffusion_dir, healthy_dir=healthy_dir, synthesis_preset=synthesis_preset,
                     per_pair=per_pair, max_synthetic=max_synthetic, ddpm_model=ddpm_model,
                     ddpm_preset=ddpm_preset, ddpm_steps=ddpm_steps, refine_lambda=refine_lambda,
                     ddim_steps=ddim_steps, refine_max_cases=refine_max_cases, workers=workers,
                     library_spacing=library_spacing)
    return runner.run()
