"""SDEdit-style refinement (``bonemet refine``): partly noise a synthetic CT, then DDIM-denoise it back.

For a standardised volume x0 and a start timestep t_s::

    x_{t_s} = sqrt(ᾱ_{t_s}) x0 + sqrt(1 - ᾱ_{t_s}) ε                     (ε per global voxel, seeded)
    for t in (t_s, then the DDIM timesteps below t_s):                   (η = 0: deterministic)
        ε̂ = blend over sliding windows of denoiser(x_t [, lesion mask, coordinates], t)
        x̂0 = clip((x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t), -1, 1)
        x_prev = sqrt(ᾱ_prev) x̂0 + sqrt(1 - ᾱ_prev) ε̂                   (ᾱ_prev = 1 after the last step)

The DDIM timesteps are MONAI ``DDIMScheduler``'s (``ddim_steps`` values spread over the T training steps).
**What λ counts** (``lambda_unit``; the paper does not say):

* ``train`` (default): λ is a training timestep. The volume is noised exactly to t_s = λ and denoised through
  the DDIM timesteps below λ. With T = 200, 50 DDIM steps and λ = 10: t = 10, 8, 4, 0 → 4 network evaluations
  per window.
* ``ddim``: λ counts DDIM steps: t_s is the λ-th DDIM timestep from the end (λ = 10 of 50 over T = 200 →
  t_s = 37, 10 evaluations per window).

λ = 0 returns the input unchanged. Only the femur's bounding region (plus ``data.region_margin_mm``) is
refined, the network sees every voxel of it through overlapping windows whose predictions are blended
(:mod:`bonemet.diffusion.sliding`), and the change fades out over ``refine.feather_vox`` voxels at the
region's inner borders. ``keep_far_mm = D`` keeps voxels farther than D mm from the lesion exactly as they
were. Lesion masks and femur maps are never changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bonemet.errors import InputError

log = logging.getLogger("bonemet")
RECORDS = ".refine"


def ddim_schedule(cfg: dict, lam: float, ddim_steps: int = 50, lambda_unit: str = "train") -> list[int]:
    """Timesteps at which the network is evaluated, from the start timestep down to the last (0).

    Empty for λ = 0. ``train``: [λ] + DDIM timesteps < λ; ``ddim``: the last λ DDIM timesteps."""
    from bonemet.diffusion.config import LAMBDA_UNITS, make_ddim_scheduler

    if lambda_unit not in LAMBDA_UNITS:
        raise InputError(f"unknown lambda unit {lambda_unit!r} (choose {', '.join(LAMBDA_UNITS)})")
    T = int(cfg["scheduler"]["num_train_timesteps"])
    if not 1 <= int(ddim_steps) <= T:
        raise InputError(f"--ddim-steps must be between 1 and the {T} training timesteps, got {ddim_steps}")
    lam_i = int(round(float(lam)))
    if lam_i < 0 or abs(float(lam) - lam_i) > 1e-9:
        raise InputError(f"lambda must be a non-negative integer, got {lam}")
    if lam_i == 0:
        return []
    ts = [int(t) for t in make_ddim_scheduler(cfg, ddim_steps).timesteps.tolist()]  # descending
    if lambda_unit == "train":
        if lam_i > T - 1:
            raise InputError(f"lambda {lam_i} exceeds the last training timestep {T - 1}")
        return [lam_i] + [t for t in ts if t < lam_i]
    if lam_i > len(ts):
        raise InputError(f"lambda {lam_i} exceeds the {len(ts)} DDIM steps (--lambda-unit ddim)")
    return ts[-lam_i:]


def _fmt(v) -> str:
    return "x".join(f"{float(x):.2f}" for x in v)


def _region_feather(region, shape, width: int) -> np.ndarray:
    """(Z, Y, X) weights over the region: ramps 0 -> 1 over ``width`` voxels from borders inside the volume."""
    axes = []
    for sl, n in zip(region, shape):
        L = sl.stop - sl.start
        w = np.ones(L, dtype=np.float32)
        if width > 0:
            i = np.arange(L, dtype=np.float32)
            if sl.start > 0:
                w = np.minimum(w, (i + 1) / (width + 1))
            if sl.stop < n:
                w = np.minimum(w, (L - i) / (width + 1))
        axes.append(w)
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def _keep_far_weight(lesion_region: np.ndarray, spacing_zyx, keep_far_mm: float, ramp_mm: float = 2.0):
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(lesion_region == 0, sampling=spacing_zyx)
    r = min(float(keep_far_mm), ramp_mm)
    if r <= 0:
        return (dist <= keep_far_mm).astype(np.float32)
    return np.clip((float(keep_far_mm) - dist) / r, 0.0, 1.0).astype(np.float32)


def _lesion_neighbourhood(femur_mask, lesion_mask, spacing_zyx, keep_far_mm: float) -> np.ndarray:
    """Box mask: the lesion's bounding box grown by ``keep_far_mm`` (+ the 2 mm ramp), within the femur's box."""
    from bonemet.geometry import bbox_slices

    lesion = np.asarray(lesion_mask) > 0
    box = bbox_slices(lesion)
    grow = [int(np.ceil((keep_far_mm + 2.0) / float(s))) for s in spacing_zyx]
    sl = tuple(slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(box, grow, lesion.shape))
    out = np.zeros(lesion.shape, np.uint8)
    out[sl] = 1
    if femur_mask is not None and np.any(femur_mask):
        fbox = bbox_slices(np.asarray(femur_mask) > 0)
        keep = np.zeros_like(out)
        keep[fbox] = 1
        out &= keep
        if not out.any():
            out[sl] = 1
    return out


def refine_volume(ct_hu: np.ndarray, femur_mask, lesion_mask, spacing_zyx, network, config: dict, lam: float = 10,
                  ddim_steps: int = 50, seed: int = 0, lambda_unit: str = "train", device=None,
                  keep_far_mm: float | None = None, noise_key: str = "volume", overlap: float | None = None,
                  blend: str | None = None, sw_batch_size: int | None = None, amp: bool = False,
                  info: dict | None = None) -> np.ndarray:
    """Refined CT (HU, float32, same shape) of ``ct_hu`` (Z, Y, X).

    ``femur_mask`` (label map or None: whole volume), ``lesion_mask`` (binary or None; conditioning input of
    ``--conditioning mask`` models and centre of ``keep_far_mm``). ``noise_key`` names the volume in the noise
    streams (a case id): equal (seed, noise_key) give equal results. ``info`` (a dict) receives
    network_evaluations, windows, timesteps, region, seconds."""
    import torch

    from bonemet import intensity
    from bonemet.diffusion.config import make_ddim_scheduler, patch_zyx
    from bonemet.diffusion.data import prepare_arrays
    from bonemet.diffusion.sliding import global_noise, sliding_apply

    t0 = time.monotonic()
    ct_hu = np.asarray(ct_hu, dtype=np.float32)
    info = info if info is not None else {}
    schedule = ddim_schedule(config, lam, ddim_steps, lambda_unit)
    info.update({"timesteps": schedule, "network_evaluations": 0, "windows": 0})
    if not schedule:
        info["seconds"] = time.monotonic() - t0
        return ct_hu.copy()
    rcfg = config.get("refine", {})
    overlap = float(rcfg.get("overlap", 0.5) if overlap is None else overlap)
    blend = str(rcfg.get("blend", "gaussian") if blend is None else blend)
    sw = int(rcfg.get("sw_batch_size", 1) if sw_batch_size is None else sw_batch_size)
    cond_mode = config.get("conditioning", "none")
    if device is None:
        device = next(network.parameters()).device
    device = torch.device(device)
    patch = patch_zyx(config)
    trained = config["data"].get("train_spacing_zyx")
    if trained and any(abs(float(a) / float(b) - 1.0) > 0.25 for a, b in zip(spacing_zyx, trained)):
        log.warning("%s: voxel size %s mm differs from the training data's %s mm; resample first for best "
                    "results", noise_key, _fmt(spacing_zyx), _fmt(trained))

    region_mask = femur_mask
    if keep_far_mm is not None and lesion_mask is not None and np.any(lesion_mask) and cond_mode == "none":
        # Voxels farther than keep_far_mm from the lesion are kept as they are, so only the lesion's
        # neighbourhood (inside the femur region) needs the network: far fewer windows per volume.
        # (Mask-conditioned models also take patch coordinates relative to the femur region: they keep it.)
        region_mask = _lesion_neighbourhood(femur_mask, lesion_mask, spacing_zyx, float(keep_far_mm))
    prep = prepare_arrays(noise_key, ct_hu, region_mask, lesion_mask, spacing_zyx, config,
                          with_coords=cond_mode == "mask")
    lo = [s.start - p[0] for s, p in zip(prep.region, prep.pad)]
    hi = [a + n for a, n in zip(lo, prep.image.shape)]
    eps0 = global_noise(lo, hi, seed, noise_key)
    sch = make_ddim_scheduler(config, ddim_steps)
    abar = sch.alphas_cumprod.double().cpu().numpy()
    clip = bool(config["scheduler"].get("clip_sample", True))

    x0 = torch.from_numpy(prep.image).to(device)
    a = float(abar[schedule[0]])
    x = (a ** 0.5) * x0 + ((1 - a) ** 0.5) * torch.from_numpy(eps0).to(device)
    x = x[None]  # (1, Z, Y, X)
    cond = None
    if cond_mode == "mask":
        cond = torch.from_numpy(np.concatenate([prep.lesion[None].astype(np.float32), prep.coords])).to(device)
    use_amp = amp and device.type == "cuda"
    n_windows = 0
    with torch.no_grad():
        for k, t in enumerate(schedule):
            inp = x if cond is None else torch.cat([x, cond], 0)

            def fn(batch, t=t):
                ts = torch.full((batch.shape[0],), int(t), dtype=torch.long, device=device)
                if use_amp:
                    with torch.autocast(device_type="cuda", dtype=torch.float16):
                        return network(batch, timesteps=ts)
                return network(batch, timesteps=ts)

            eps, n_windows = sliding_apply(fn, inp, patch, overlap, blend, sw)
            a_t = float(abar[t])
            a_prev = float(abar[schedule[k + 1]]) if k + 1 < len(schedule) else 1.0
            x0_hat = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
            if clip:
                x0_hat = x0_hat.clamp(-1.0, 1.0)
            x = a_prev ** 0.5 * x0_hat + (1 - a_prev) ** 0.5 * eps
    refined_std = x[0].float().cpu().numpy()
    (pz0, pz1), (py0, py1), (px0, px1) = prep.pad
    refined_std = refined_std[pz0:refined_std.shape[0] - pz1, py0:refined_std.shape[1] - py1,
                              px0:refined_std.shape[2] - px1]
    refined_hu = intensity.destandardise(refined_std, config["data"].get("intensity"))
    region = prep.region
    w = _region_feather(region, ct_hu.shape, int(rcfg.get("feather_vox", 2)))
    if keep_far_mm is not None:
        if lesion_mask is None or not np.any(lesion_mask):
            log.warning("%s: --keep-far needs a lesion mask; the whole femur region is refined", noise_key)
        else:
            w = w * _keep_far_weight(np.asarray(lesion_mask)[region], spacing_zyx, float(keep_far_mm))
    out = ct_hu.copy()
    orig = ct_hu[region]
    out[region] = np.where(w > 0, orig + w * (refined_hu - orig), orig)
    info.update({"network_evaluations": n_windows * len(schedule), "windows": n_windows,
                 "region_zyx": [[s.start, s.stop] for s in region], "seconds": time.monotonic() - t0})
    return out


def intensity_check(before: np.ndarray, after: np.ndarray, lesion, femur, spacing_zyx, shell_mm: float = 3.0
                    ) -> dict:
    """Mean HU inside the lesion, in a shell of ``shell_mm`` around it and in the rest of the femur, before and
    after refinement, and the lesion-shell contrast: a shrinking contrast means λ is too high."""
    from scipy import ndimage

    out: dict = {}
    les = None if lesion is None else np.asarray(lesion) > 0
    fem = None if femur is None else np.asarray(femur) > 0
    regions = {}
    if les is not None and les.any():
        regions["lesion"] = les
        dist = ndimage.distance_transform_edt(~les, sampling=spacing_zyx)
        regions["shell"] = (dist > 0) & (dist <= shell_mm)
        regions["outside_lesion"] = (~les) & (fem if fem is not None else np.ones_like(les))
    elif fem is not None:
        regions["outside_lesion"] = fem
    for name, m in regions.items():
        if m.any():
            b, a = float(before[m].mean()), float(after[m].mean())
            out[name] = {"mean_hu_before": round(b, 2), "mean_hu_after": round(a, 2), "change_hu": round(a - b, 2),
                         "voxels": int(m.sum())}
    if "lesion" in out and "shell" in out:
        cb = out["lesion"]["mean_hu_before"] - out["shell"]["mean_hu_before"]
        ca = out["lesion"]["mean_hu_after"] - out["shell"]["mean_hu_after"]
        out["contrast_before"] = round(cb, 2)
        out["contrast_after"] = round(ca, 2)
        out["contrast_kept"] = round(ca / cb, 3) if abs(cb) > 1e-6 else None
    return out


def _settings(cfg: dict, lam, ddim_steps, seed, lambda_unit, keep_far_mm, overlap, blend) -> dict:
    rcfg = cfg.get("refine", {})
    m = cfg.get("_model", {})
    return {"lambda": lam, "lambda_unit": lambda_unit, "ddim_steps": int(ddim_steps), "seed": int(seed),
            "timesteps": ddim_schedule(cfg, lam, ddim_steps, lambda_unit),
            "keep_far_mm": keep_far_mm, "overlap": float(rcfg.get("overlap", 0.5) if overlap is None else overlap),
            "blend": rcfg.get("blend", "gaussian") if blend is None else blend,
            "conditioning": cfg.get("conditioning", "none"), "model_sha256": m.get("sha256"),
            "model_step": m.get("step"), "model_weights": m.get("weights")}


def _ext(name: str) -> str:
    for e in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(e):
            return e
    return Path(name).suffix


def _copy(src: Path, dst: Path) -> None:
    from bonemet.atomic import atomic_path

    if src.name.lower().endswith(".mhd"):
        raise InputError("MetaImage (.mhd) masks cannot be copied as one file; convert to .nii.gz", src)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _record_path(out_dir: Path, case_id: str) -> Path:
    return out_dir / RECORDS / f"{case_id}.json"


def _complete(out_dir: Path, rec: dict) -> bool:
    return all((out_dir / rec[k]).exists() for k in ("ct", "femur", "lesion") if rec.get(k))


def refine_case(case, out_dir: Path, network, cfg: dict, settings: dict, device, sw_batch_size=None, amp=False
                ) -> dict:
    """Refine one manifest case into ``out_dir``; returns its output manifest record (written last)."""
    from bonemet.atomic import write_json
    from bonemet.dataset import relpath
    from bonemet.io import read_ct, read_mask, write_volume

    ct = read_ct(case.ct)
    femur = read_mask(case.femur, ct, binary=False).array if case.femur is not None else None
    lesion = read_mask(case.lesion, ct).array if case.lesion is not None else None
    if femur is None:
        log.warning("case %s has no femur label map: the whole volume is refined", case.id)
    info: dict = {}
    refined = refine_volume(ct.array, femur, lesion, ct.spacing_zyx, network, cfg, lam=settings["lambda"],
                            ddim_steps=settings["ddim_steps"], seed=settings["seed"],
                            lambda_unit=settings["lambda_unit"], device=device, keep_far_mm=settings["keep_far_mm"],
                            noise_key=case.id, overlap=settings["overlap"], blend=settings["blend"],
                            sw_batch_size=sw_batch_size, amp=amp, info=info)
    arr = refined
    if np.array_equal(ct.array, np.round(ct.array)) and ct.array.min() >= -32768 and ct.array.max() <= 32767:
        arr = np.clip(np.round(refined), -32768, 32767).astype(np.int16)
    rec = dict(case.record)
    rec["ct"] = f"ct/{case.id}.nii.gz"
    write_volume(out_dir / rec["ct"], arr, ct.geometry)
    for key in ("femur", "lesion"):
        src = case.path(key)
        if src is not None:
            rec[key] = f"{key}/{case.id}{_ext(src.name)}"
            _copy(src, out_dir / rec[key])
    check = intensity_check(ct.array, arr.astype(np.float32), lesion, femur, ct.spacing_zyx)
    if check.get("contrast_kept") is not None and check["contrast_kept"] < 0.5:
        log.warning("case %s: refinement kept only %.0f%% of the lesion contrast: lambda may be too high",
                    case.id, 100 * check["contrast_kept"])
    rec["refinement"] = {**settings, "source_dataset": os.fspath(case.root.resolve()),
                         "source_ct": relpath(case.ct, case.root), "network_evaluations": info["network_evaluations"],
                         "windows": info["windows"], "region_zyx": info.get("region_zyx"),
                         "seconds": round(info["seconds"], 3), "intensity_check": check}
    write_json(_record_path(out_dir, case.id), rec)
    return rec


def refine_dataset(dataset_dir, model_dir, out_dir, lam: float = 10, ddim_steps: int = 50, seed: int = 0,
                   device="auto", lambda_unit: str = "train", max_cases: int | None = None,
                   keep_far_mm: float | None = None, overwrite: bool = False, overlap: float | None = None,
                   blend: str | None = None, sw_batch_size: int | None = None, amp: bool = False,
                   case_ids=None) -> dict:
    """Refine every case of a dataset folder (e.g. from ``bonemet synth``) into a new dataset folder.

    Resumable: cases whose outputs are complete (record written last, atomically) are skipped. Under
    ``torchrun`` process r refines cases r, r + N, ...; rank 0 then writes ``manifest.json`` in input order.
    Results do not depend on the number of processes. Returns a summary dict."""
    from bonemet.dataset import load_manifest, write_manifest
    from bonemet.device import resolve_device
    from bonemet.diffusion import distributed as D
    from bonemet.diffusion.model_io import load_model
    from bonemet.progress import progress

    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(dataset_dir).resolve():
        raise InputError("the output folder must differ from the input dataset folder", out_dir)
    cases = load_manifest(dataset_dir)
    if case_ids:
        wanted = set(case_ids)
        cases = [c for c in cases if c.id in wanted]
    if max_cases:
        cases = cases[: int(max_cases)]
    dev = resolve_device(device)
    dist = D.init(dev.type, backend="gloo")
    t0 = time.monotonic()
    try:
        network, cfg = load_model(model_dir, dev)
        settings = _settings(cfg, lam, ddim_steps, seed, lambda_unit, keep_far_mm, overlap, blend)
        # Check existing outputs of every case first (all processes see the same files and agree).
        complete = set()
        for case in cases:
            rp = _record_path(out_dir, case.id)
            if overwrite or not rp.exists():
                continue
            try:
                old = json.loads(rp.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if not _complete(out_dir, old):
                continue
            prev = {k: old.get("refinement", {}).get(k) for k in settings}
            if prev != settings:
                diff = [k for k in settings if prev.get(k) != settings[k]]
                raise InputError(f"holds case {case.id} refined with other settings ({', '.join(diff)}); "
                                 "use another output folder or --overwrite", out_dir)
            complete.add(case.id)
        mine = cases[dist.rank::dist.world]
        done, skipped, failed = 0, 0, []
        for case in progress(mine, desc="refine", unit="case"):
            if case.id in complete:
                skipped += 1
                continue
            try:
                refine_case(case, out_dir, network, cfg, settings, dev, sw_batch_size, amp)
                done += 1
            except InputError as exc:
                log.error("case %s failed: %s", case.id, exc)
                failed.append({"id": case.id, "error": str(exc)})
        D.barrier(dist)
        summary = {"out_dir": os.fspath(out_dir), "cases": len(cases), "refined": done, "skipped": skipped,
                   "failed": failed, "processes": dist.world, "settings": settings,
                   "seconds": time.monotonic() - t0}
        if dist.is_main:
            records, missing = [], []
            for case in cases:
                rp = _record_path(out_dir, case.id)
                if rp.exists():
                    records.append(json.loads(rp.read_text(encoding="utf-8")))
                else:
                    missing.append(case.id)
            write_manifest(out_dir, records, info={"kind": "refined", "source": os.fspath(Path(dataset_dir).resolve()),
                                                   "model": os.fspath(Path(model_dir).resolve()),
                                                   "refinement": settings, "missing": missing})
            evals = [r["refinement"]["network_evaluations"] for r in records]
            summary.update({"written": len(records), "missing": missing,
                            "network_evaluations_per_volume": float(np.mean(evals)) if evals else None})
            log.info("refined %d case(s) (%d skipped, %d failed) into %s", done, skipped, len(failed), out_dir)
        D.barrier(dist)
        return summary
    finally:
        D.finish(dist)
