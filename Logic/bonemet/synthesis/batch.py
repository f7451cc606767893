"""Batch ad-hoc synthesis: every (lesion, healthy femur, application k) → one synthetic case.

Output dataset folder::

    DIR/manifest.json        kept cases: id, ct, femur, lesion + provenance (lesion_id, source_case,
                             healthy_case, application, seed, spacing, lesion volume, params)
    DIR/manifest.csv         the same, flat (one column per parameter)
    DIR/rejected.csv         the cases the size filter (or the femur) rejected, with reason and parameters
    DIR/dataset.json         command, version, time, synthesis config
    DIR/summary.json         planned / kept / rejected (by reason) / excluded lesions / throughput
    DIR/synthesis.json       the run's arguments (a re-run with different ones is refused)
    DIR/ct|lesion|femur/<id>.nii.gz
    DIR/records/<id>.json    one per finished case (kept or rejected): the resume marker, written last

Each case draws its parameters from ``bonemet.seeding.rng(seed, "synth", lesion_id, healthy_id, k)``, so
results do not depend on workers or order, and :func:`regenerate_case` rebuilds any case bit-for-bit from
its manifest row. Killed and re-run with the same arguments, only the missing cases are computed.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io as _io
import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bonemet.atomic import write_json, write_text
from bonemet.dataset import Case, load_manifest, write_manifest
from bonemet.errors import InputError
from bonemet.io import Volume, read_ct, read_mask, write_volume
from bonemet.presets import load_preset, merge
from bonemet.progress import progress
from bonemet.seeding import rng
from bonemet.synthesis._resample import needs_resample, resample
from bonemet.synthesis.insertion import draw_centre, femur_candidates, insert_lesion
from bonemet.synthesis.library import Library, LesionItem, load_library
from bonemet.synthesis.transform import draw_transform_params

log = logging.getLogger("bonemet")

RECORDS = "records"
CONFIG = "synthesis.json"
SUMMARY = "summary.json"


# --------------------------------------------------------------------------------------------- helpers
def case_id(lesion_id: str, healthy_id: str, k: int) -> str:
    return f"syn-{lesion_id}-{healthy_id}-{k:02d}"


def resolve_config(preset="paper", overrides: dict | None = None) -> dict:
    """Synthesis parameters: a preset name / JSON path or a dict, with overrides merged in."""
    cfg = dict(preset) if isinstance(preset, dict) else load_preset("synthesis", preset)
    return merge(cfg, overrides)


def working_spacing(cfg: dict, library: Library, spacing=None) -> tuple[float, float, float]:
    """x/y/z output spacing: explicit ``spacing``, else the preset's, else the library's."""
    s = spacing if spacing is not None else cfg.get("spacing")
    if s is None:
        s = library.info.get("spacing") or library.items[0].spacing
    s = [float(s)] * 3 if np.isscalar(s) else [float(v) for v in s]
    if len(s) != 3 or min(s) <= 0:
        raise InputError(f"invalid spacing {s}")
    return tuple(s)  # type: ignore[return-value]


def fold_sources(folds_file: str | os.PathLike, fold: int) -> list[str]:
    """Case ids of cross-validation fold ``fold`` from a JSON file: a list of lists of ids, ``{"folds":
    [[...], ...]}``, or a mapping ``{case_id: fold_index}``."""
    path = Path(folds_file)
    if not path.exists():
        raise InputError("folds file not found", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}", path) from exc
    if isinstance(data, dict) and "folds" in data:
        data = data["folds"]
    if isinstance(data, list):
        if not 0 <= fold < len(data):
            raise InputError(f"fold {fold} does not exist (file has {len(data)} folds, 0-based)", path)
        fold_data = data[fold]
        if isinstance(fold_data, dict):  # {"test": [...]} style
            fold_data = fold_data.get("test", fold_data.get("cases", []))
        return [str(c) for c in fold_data]
    if isinstance(data, dict):
        ids = [str(c) for c, f in data.items() if int(f) == int(fold)]
        if not ids:
            raise InputError(f"no case in fold {fold}", path)
        return ids
    raise InputError("folds file must be a list of lists of case ids or a {case: fold} mapping", path)


def load_healthy(case: Case, spacing) -> tuple[Volume, np.ndarray]:
    """Healthy CT (HU) and femur label map on the working grid. Femur computed if the case has none and
    ``bonemet.femur`` is available."""
    ct = read_ct(case.ct)
    if case.femur is not None:
        femur = read_mask(case.femur, reference=ct, binary=False).array
    else:
        try:
            from bonemet.femur import segment_femur  # type: ignore[import-not-found]
        except ImportError as exc:
            raise InputError(f"case {case.id} has no femur mask (run 'bonemet femur' on the dataset first)",
                             case.ct) from exc
        femur = np.asarray(segment_femur(ct.array, ct.geometry), np.uint8)
    if spacing is not None and needs_resample(ct.geometry, spacing):
        fem_vol = resample(Volume(femur, ct.geometry), spacing, "nearest")
        ct = resample(ct, spacing, "linear", default_value=-1000.0)
        femur = fem_vol.array
    return ct, femur


def _check_healthy(case: Case, min_volume_mm3: float) -> None:
    """Fail fast on a healthy case that can never take a lesion (missing/empty/tiny femur, bad grid)."""
    if case.femur is None:
        try:
            import bonemet.femur  # noqa: F401
        except ImportError as exc:
            raise InputError(f"healthy case {case.id} has no femur mask (run 'bonemet femur' first)",
                             case.ct) from exc
        return
    import SimpleITK as sitk

    from bonemet.io import Geometry, check_same_grid

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(case.ct))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError("cannot read image header", case.ct) from exc
    ct_geo = Geometry(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                      tuple(reader.GetDirection()))
    fem = read_mask(case.femur, binary=False)
    check_same_grid(fem.geometry, ct_geo, case.femur, case.ct)
    vol = float((fem.array > 0).sum() * fem.geometry.voxel_volume)
    if vol <= min_volume_mm3:
        raise InputError(f"femur mask of healthy case {case.id} is {'empty' if vol == 0 else f'{vol:.1f} mm³'}: "
                         f"too small to hold a lesion > {min_volume_mm3} mm³", case.femur)


# ------------------------------------------------------------------------------------------- one case
def synthesize_one(host_ct: np.ndarray, femur: np.ndarray, spacing_zyx, item: LesionItem, cfg: dict, seed: int,
                   healthy_id: str, k: int, candidates: np.ndarray | None = None):
    """Draw the parameters of case (item, healthy, k) and insert the lesion. Returns (LocalInsertion, params)."""
    r = rng(int(seed), "synth", item.id, healthy_id, int(k))
    params = draw_transform_params(r, item.mask, item.spacing_zyx, cfg)
    if candidates is None:
        candidates = femur_candidates(femur, spacing_zyx, float(cfg.get("placement", {}).get("min_depth_mm", 0.0)))
    params.update(draw_centre(r, candidates, femur))
    ins = insert_lesion(host_ct, femur, spacing_zyx, item.patch, item.mask, item.spacing_zyx, params,
                        float(cfg.get("min_volume_mm3", 16.0)))
    return ins, params


def regenerate_case(row: dict, library: Library | str | os.PathLike, healthy_dir: str | os.PathLike):
    """Rebuild a synthetic case from its manifest row (or record): ``(ct float32, lesion uint8, Volume grid)``.

    Uses only the recorded parameters (nothing is re-drawn), so the result equals the written files exactly.
    """
    lib = library if isinstance(library, Library) else load_library(library)
    item = lib.get(row["lesion_id"])
    cases = {c.id: c for c in load_manifest(healthy_dir)}
    if row["healthy_case"] not in cases:
        raise InputError(f"healthy case {row['healthy_case']!r} not in the dataset", healthy_dir)
    ct, femur = load_healthy(cases[row["healthy_case"]], row["spacing"])
    ins = insert_lesion(ct.array, femur, ct.geometry.spacing_zyx, item.patch, item.mask, item.spacing_zyx,
                        row["params"], float(row.get("min_volume_mm3", 16.0)))
    new_ct, lesion = ins.apply(ct.array)
    return new_ct, lesion, ct


# ------------------------------------------------------------------------------------------ the worker
_W: dict = {}


def _init_worker(library_dir: str, threads: int | None = None) -> None:
    if threads:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    _W.clear()
    _W["library"] = load_library(library_dir)


def _run_chunk(job: dict) -> list[dict]:
    """Do one chunk (one healthy case, several (lesion, k)); returns the finished records."""
    lib: Library = _W["library"]
    cfg, out = job["cfg"], Path(job["out_dir"])
    key = (job["healthy_root"], job["healthy"]["id"], tuple(job["spacing"]))
    if _W.get("host_key") != key:
        case = Case(job["healthy"], Path(job["healthy_root"]))
        ct, femur = load_healthy(case, job["spacing"])
        _W.update(host_key=key, ct=ct, femur=femur,
                  cand=femur_candidates(femur, ct.geometry.spacing_zyx,
                                        float(cfg.get("placement", {}).get("min_depth_mm", 0.0))))
    ct: Volume = _W["ct"]
    femur: np.ndarray = _W["femur"]
    hid = job["healthy"]["id"]
    done = []
    for lesion_id, k in job["tasks"]:
        item = lib.get(lesion_id)
        cid = case_id(lesion_id, hid, k)
        c0 = time.process_time()
        t0 = time.perf_counter()
        ins, params = synthesize_one(ct.array, femur, ct.geometry.spacing_zyx, item, cfg, job["seed"], hid, k,
                                     _W["cand"])
        compute_s = time.perf_counter() - t0
        rec = {"id": cid, "ct": None, "femur": None, "lesion": None, "status": "kept" if ins.kept else "rejected",
               "reason": ins.reason, "lesion_id": item.id, "source_case": item.source_case, "healthy_case": hid,
               "application": int(k), "seed": int(job["seed"]), "spacing": list(ct.geometry.spacing),
               "lesion_voxels": ins.voxels, "lesion_volume_mm3": round(ins.volume_mm3, 4),
               "source_volume_mm3": round(item.volume_mm3, 4),
               "min_volume_mm3": float(cfg.get("min_volume_mm3", 16.0)), "params": params,
               "compute_s": round(compute_s, 5)}
        if ins.kept:
            rel = {k2: f"{k2}/{cid}.nii.gz" for k2 in ("ct", "lesion", "femur")}
            original = ct.array[ins.box].copy()
            lesion_full = np.zeros(ct.array.shape, np.uint8)
            try:
                ins.apply(ct.array, lesion_full, in_place=True)
                write_volume(out / rel["lesion"], lesion_full, ct.geometry)
                write_volume(out / rel["femur"], femur.astype(np.uint8, copy=False), ct.geometry)
                write_volume(out / rel["ct"], ct.array, ct.geometry)
            finally:
                ct.array[ins.box] = original          # restore the healthy volume for the next case
            rec.update(rel)
        rec["cpu_s"] = round(time.process_time() - c0, 5)
        write_json(out / RECORDS / f"{cid}.json", rec)  # the resume marker, last
        done.append(rec)
    return done


# ------------------------------------------------------------------------------------------- the batch
def _mp_context():
    """Worker start method: a fork server that has imported the engine once (cheap, thread-safe starts);
    'spawn' where fork servers are not available (Windows, macOS app bundles)."""
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["bonemet.synthesis.batch"])
        return ctx
    except ValueError:
        return mp.get_context("spawn")


def _remove_stale_temps(out: Path) -> None:
    """Delete hidden temporary files a killed run left behind (``.<name>.tmp<pid>...``)."""
    for sub in ("ct", "lesion", "femur", RECORDS, "."):
        d = out / sub
        if d.is_dir():
            for f in d.glob(".*.tmp*"):
                try:
                    f.unlink()
                except OSError:
                    pass


def _record_done(out: Path, cid: str) -> dict | None:
    p = out / RECORDS / f"{cid}.json"
    if not p.exists():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if rec.get("status") == "kept" and not all((out / rec[k]).exists() for k in ("ct", "lesion", "femur")):
        return None
    return rec


def _flat(rec: dict) -> dict:
    row = {k: v for k, v in rec.items() if k != "params"}
    for k, v in rec.get("params", {}).items():
        if isinstance(v, list):
            for i, x in enumerate(v):
                row[f"{k}_{i}"] = x
        else:
            row[k] = v
    row["spacing"] = " ".join(str(s) for s in rec.get("spacing", []))
    return row


def _write_csv(path: Path, records: list[dict]) -> None:
    rows = [_flat(r) for r in records]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def synthesize(library_dir, healthy_dir, out_dir, per_pair: int | None = None, seed: int = 0, workers: int = 1,
               exclude_sources=(), preset="paper", max_cases: int | None = None, spacing=None,
               overrides: dict | None = None, chunk_size: int = 8) -> dict:
    """Synthesise ``per_pair`` cases for every (library lesion, healthy femur) pair; returns the summary.

    ``library_dir``: a lesion library (:func:`bonemet.synthesis.library.extract_library`); ``healthy_dir``: a
    dataset folder (only its healthy cases are used); ``exclude_sources``: source case ids whose lesions are
    left out (leakage control); ``preset``: synthesis preset name/path/dict; ``max_cases``: do at most this
    many cases (the first of a deterministic, diverse order); ``spacing``: output grid (mm; default preset's,
    else the library's). Resumable; parallel over ``workers`` processes.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    cfg = resolve_config(preset, overrides)
    per_pair = int(cfg.get("per_pair", 10) if per_pair is None else per_pair)
    if per_pair < 1:
        raise InputError(f"--per-pair must be >= 1 (got {per_pair})")
    if workers < 1:
        raise InputError(f"--workers must be >= 1 (got {workers})")
    full_lib = load_library(library_dir)
    excl = sorted({str(s) for s in exclude_sources})
    lib = full_lib.without_sources(excl)
    excluded_items = [it.id for it in full_lib if it.source_case in set(excl)]
    if not lib.items:
        raise InputError(f"every lesion of the library comes from an excluded source case ({', '.join(excl)}): "
                         "nothing to synthesise", library_dir)
    unknown = sorted(set(excl) - set(full_lib.sources()))
    if unknown:
        log.info("excluded source case(s) not in the library: %s", ", ".join(unknown))
    healthy = [c for c in load_manifest(healthy_dir) if c.healthy]
    if not healthy:
        raise InputError("dataset has no healthy case (cases with lesion: null)", Path(healthy_dir) / "manifest.json")
    min_vol = float(cfg.get("min_volume_mm3", 16.0))
    for c in healthy:
        _check_healthy(c, min_vol)
    sp = working_spacing(cfg, lib, spacing)

    fingerprint = [[it.id, it.voxels, list(it.patch.shape), list(it.spacing)] for it in lib.items]
    config = {"library": str(Path(library_dir).resolve()), "library_items": fingerprint,
              "healthy": str(Path(healthy_dir).resolve()), "healthy_cases": [c.id for c in healthy],
              "per_pair": per_pair, "seed": int(seed), "spacing": list(sp), "excluded_sources": excl,
              "excluded_items": excluded_items, "params": cfg}
    cfg_path = out / CONFIG
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if old is not None:
            # paths may move (a copied folder resumes); what decides the results must not change
            diff = [k for k in config if k not in ("library", "healthy")
                    and old.get(k) != json.loads(json.dumps(config[k]))]
            if diff:
                raise InputError(f"output folder holds a synthesis run with different arguments "
                                 f"({', '.join(diff)} differ): use another output folder or delete it", out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, config)
    _remove_stale_temps(out)

    # deterministic, diverse order (k-major) so that --max-cases N covers many lesions and femurs
    tasks = [(it.id, h.id, k) for k in range(per_pair) for h in healthy for it in lib.items]
    if max_cases is not None:
        tasks = tasks[:max(0, int(max_cases))]
    finished: dict[str, dict] = {}
    pending = []
    for lid, hid, k in tasks:
        rec = _record_done(out, case_id(lid, hid, k))
        if rec is not None:
            finished[rec["id"]] = rec
        else:
            pending.append((lid, hid, k))
    if finished:
        log.info("resuming: %d of %d cases already done", len(finished), len(tasks))

    hcase = {c.id: c for c in healthy}
    jobs = []
    for h in healthy:
        mine = [(lid, k) for lid, hid, k in pending if hid == h.id]
        for i in range(0, len(mine), chunk_size):
            jobs.append({"healthy": h.record, "healthy_root": str(hcase[h.id].root), "tasks": mine[i:i + chunk_size],
                         "cfg": cfg, "seed": int(seed), "out_dir": str(out), "spacing": list(sp)})

    t_run = time.perf_counter()
    n_new = 0
    compute, cpu = [], []

    def _collect(records):
        nonlocal n_new
        for r in records:
            finished[r["id"]] = r
            compute.append(r.get("compute_s", 0.0))
            cpu.append(r.get("cpu_s", 0.0))
            n_new += 1
            yield r

    def _stream():
        if workers == 1 or len(jobs) <= 1:
            _W.clear()
            _W["library"] = full_lib
            try:
                for job in jobs:
                    yield from _collect(_run_chunk(job))
            finally:
                _W.clear()                                  # don't keep the last healthy volume in memory
            return
        ctx = _mp_context()
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(str(Path(library_dir)), 1)) as ex:
            futs = [ex.submit(_run_chunk, j) for j in jobs]
            try:
                for f in cf.as_completed(futs):
                    yield from _collect(f.result())
            except BaseException:
                for f in futs:
                    f.cancel()
                raise

    for _ in progress(_stream(), desc="synthesise", total=len(pending), unit="case"):
        pass
    run_s = time.perf_counter() - t_run

    ordered = [finished[case_id(l, h, k)] for l, h, k in tasks if case_id(l, h, k) in finished]
    kept = [r for r in ordered if r["status"] == "kept"]
    rejected = [r for r in ordered if r["status"] != "kept"]
    manifest = [{k: v for k, v in r.items() if k not in ("status", "reason", "compute_s", "cpu_s")} for r in kept]
    write_manifest(out, manifest, info={"kind": "synthetic", "method": "ad-hoc lesion synthesis",
                                        "synthesis": config})
    _write_csv(out / "manifest.csv", manifest)
    if rejected:
        _write_csv(out / "rejected.csv", [{k: v for k, v in r.items() if k not in ("ct", "femur", "lesion")}
                                          for r in rejected])
    summary = {
        "planned": len(tasks), "done": len(ordered), "kept": len(kept), "rejected": len(rejected),
        "keep_rate": round(len(kept) / len(ordered), 4) if ordered else None,
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
        "computed_this_run": n_new, "resumed": len(ordered) - n_new,
        "n_lesions": len(lib.items), "n_healthy": len(healthy), "per_pair": per_pair, "seed": int(seed),
        "excluded_sources": excl, "excluded_lesions": excluded_items, "spacing": list(sp), "workers": workers,
        "run_s": round(run_s, 3), "cases_per_min": round(60.0 * n_new / run_s, 2) if n_new and run_s > 0 else None,
        "compute_s_per_case_mean": round(float(np.mean(compute)), 5) if compute else None,
        "cpu_s_per_case_mean": round(float(np.mean(cpu)), 5) if cpu else None,
        "total_s": round(time.perf_counter() - t_start, 3),
    }
    write_json(out / SUMMARY, summary)
    log.info("synthesis: %d kept, %d rejected (size filter <= %.3g mm³ etc.) of %d planned -> %s",
             len(kept), len(rejected), min_vol, len(tasks), out)
    return summary
