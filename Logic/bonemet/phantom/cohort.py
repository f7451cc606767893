"""A phantom cohort as a dataset folder (``bonemet phantom``).

Layout of ``out_dir``::

    manifest.json          list of cases (id, ct, femur, lesion, patient, centre, spacing, healthy, lesions...)
    dataset.json           provenance (command, version, seed, preset, creation time)
    ct/<id>.nii.gz         CT, int16 HU
    femur/<id>.nii.gz      femur label map: 0 background, 1 patient's right femur (smaller LPS x), 2 left femur
    lesion/<id>.nii.gz     binary lesion mask (lesioned cases only; ``lesion`` is null for healthy cases)
    preview/<id>.png       with ``preview=True``: axial/coronal/sagittal montage with overlays

Cases are independent and deterministic (``seed``, case id): an interrupted run resumes, reusing finished
cases whose files exist and whose recorded parameters match.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from bonemet.atomic import atomic_path, write_json
from bonemet.dataset import MANIFEST, write_manifest
from bonemet.io import write_volume
from bonemet.phantom.generate import PhantomCase, make_case, phantom_preset
from bonemet.progress import progress
from bonemet.seeding import rng as make_rng

log = logging.getLogger("bonemet")


def case_plan(n: int, seed: int, healthy_fraction: float) -> list[tuple[str, bool]]:
    """(case id, healthy) for each case: exactly round(n * healthy_fraction) healthy cases, shuffled by seed."""
    if not 0.0 <= healthy_fraction <= 1.0:
        raise ValueError("healthy_fraction must be in [0, 1]")
    n_healthy = int(round(n * healthy_fraction))
    flags = np.array([True] * n_healthy + [False] * (n - n_healthy))
    make_rng(seed, "phantom", "plan").shuffle(flags)
    return [(f"ph{i:03d}", bool(flags[i])) for i in range(n)]


def case_record(case: PhantomCase, seed: int, preset_name: str) -> dict:
    m = case.meta
    return {
        "id": case.id,
        "ct": f"ct/{case.id}.nii.gz",
        "femur": f"femur/{case.id}.nii.gz",
        "lesion": None if case.healthy else f"lesion/{case.id}.nii.gz",
        "patient": f"phantom-{case.id}",
        "centre": m["centre"],
        "spacing": m["spacing"],
        "healthy": case.healthy,
        "lesions": m["lesions"],
        "atlas": m["atlas"],
        "source": "phantom",
        "seed": seed,
        "preset": preset_name,
        "noise_hu": m["noise_hu"],
        "metal": m["metal"],
        "joint_gap_mm": m["joint_gap_mm"],
    }


def write_case(case: PhantomCase, root: Path, seed: int, preset_name: str, preview: bool = False) -> dict:
    rec = case_record(case, seed, preset_name)
    write_volume(root / rec["ct"], case.ct, case.geometry)
    write_volume(root / rec["femur"], case.femur, case.geometry)
    if rec["lesion"]:
        write_volume(root / rec["lesion"], case.lesion, case.geometry)
    if preview:
        rec["preview"] = f"preview/{case.id}.png"
        save_preview(case, root / rec["preview"])
    return rec


def generate_cohort(out_dir, n: int = 10, seed: int = 0, preset="small", healthy_fraction: float = 0.4,
                    preview: bool = False, overrides: dict | None = None, resume: bool = True) -> list[dict]:
    """Write a phantom cohort to ``out_dir`` (see module docstring); returns the manifest records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preset_name = preset if isinstance(preset, str) else "custom"
    params = phantom_preset(preset, overrides)
    # Resume: cases already written with the same parameters are kept.
    state_path = out / ".phantom-state.json"
    done: dict[str, dict] = {}
    key = {"seed": seed, "preset": params}
    if resume and state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state.get("key") == json.loads(json.dumps(key)):
                done = state.get("cases", {})
        except (json.JSONDecodeError, OSError):
            done = {}
    records = []
    plan = case_plan(n, seed, healthy_fraction)
    for cid, healthy in progress(plan, desc="phantom cases", unit="case"):
        rec = done.get(cid)
        if (rec is not None and rec.get("healthy") == healthy and all(
                (out / rec[k]).exists() for k in ("ct", "femur", "lesion") if rec.get(k))
                and (not preview or (out / rec.get("preview", "-")).exists())):
            records.append(rec)
            continue
        case = make_case(cid, seed=seed, preset=params, healthy=healthy)
        rec = write_case(case, out, seed, preset_name, preview)
        records.append(rec)
        done[cid] = rec
        write_json(state_path, {"key": key, "cases": done})
    write_manifest(out, records, info={"kind": "phantom", "seed": seed, "n": n, "preset": preset_name,
                                       "preset_params": params, "healthy_fraction": healthy_fraction,
                                       "femur_labels": {"0": "background", "1": "right femur (smaller LPS x)",
                                                        "2": "left femur"}})
    log.info("wrote %d phantom cases to %s", len(records), out / MANIFEST)
    return records


def save_preview(case: PhantomCase, path: Path) -> Path:
    """PNG montage: axial, coronal and sagittal slices (CT window -200..1200 HU) with femur/lesion contours."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ct, fem, les = case.ct, case.femur, case.lesion
    sz, sy, sx = case.geometry.spacing_zyx
    if case.meta.get("lesions"):  # through the largest lesion
        big = max(case.meta["lesions"], key=lambda d: d["volume_mm3"])
        xc, yc, zc = (int(round(v)) for v in big["centre_ijk"])
    else:
        zc, yc, xc = (int(v) for v in np.round(np.argwhere(fem > 0).mean(0)))
    views = [
        ("axial", ct[zc], fem[zc], les[zc], sy / sx),
        ("coronal", ct[:, yc, :], fem[:, yc, :], les[:, yc, :], sz / sx),
        ("sagittal", ct[:, :, xc], fem[:, :, xc], les[:, :, xc], sz / sy),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, (name, img, f, lz, aspect) in zip(axes, views):
        origin = "upper" if name == "axial" else "lower"
        ax.imshow(img, cmap="gray", vmin=-200, vmax=1200, aspect=aspect, origin=origin, interpolation="nearest")
        for lab, col in ((1, "#33c3ff"), (2, "#7cff4d")):
            if (f == lab).any():
                ax.contour(f == lab, levels=[0.5], colors=col, linewidths=0.8)
        if lz.any():
            ax.contour(lz > 0, levels=[0.5], colors="#ff3030", linewidths=1.0)
        ax.set_title(name)
        ax.axis("off")
    les_txt = ", ".join(f"{d['location']}/{d['side']} {d['volume_mm3']:.0f} mm³" for d in case.meta["lesions"])
    fig.suptitle(f"{case.id}  centre {case.meta['centre']}  spacing "
                 f"{'x'.join(f'{v:.2f}' for v in case.geometry.spacing)} mm  "
                 f"{'healthy' if case.healthy else 'lesions: ' + les_txt}\n"
                 "blue: right femur (label 1)  green: left femur (label 2)  red: lesion", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
