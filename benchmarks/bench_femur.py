"""Femur segmentation and volume I/O benchmark.

    python benchmarks/bench_femur.py [--n 10] [--full 1] [--seed 0]

* femur Dice (right / left label vs the phantom ground truth) and seconds per case on a 10-case ``small``
  phantom cohort, plus ``--full`` cases of the clinical-like ``full`` preset;
* write + read round-trip time of a 512 x 512 x 400 int16 CT volume for .nii.gz / .nrrd / .mha with
  bonemet.io (SimpleITK), and nibabel for .nii.gz as the peer a user would otherwise pick (ratio).

Writes ``benchmarks/results/femur.json`` and ``benchmarks/results/femur.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def dice(a, b) -> float:
    s = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / s) if s else float("nan")


def bench_cases(n: int, preset: str, seed: int) -> list[dict]:
    from bonemet.femur import segment_femur
    from bonemet.phantom import make_case

    rows = []
    for i in range(n):
        t0 = time.perf_counter()
        c = make_case(f"ph{i:03d}", seed=seed, preset=preset)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        seg = segment_femur(c.ct, c.geometry)
        t_seg = time.perf_counter() - t0
        row = {"preset": preset, "case": c.id, "atlas": c.meta["atlas"], "size": list(c.geometry.size),
               "spacing": [round(v, 2) for v in c.geometry.spacing], "lesions": len(c.meta["lesions"]),
               "dice_right": round(dice(seg == 1, c.femur == 1), 4), "dice_left": round(dice(seg == 2, c.femur == 2), 4),
               "seconds_segment": round(t_seg, 2), "seconds_generate": round(t_gen, 2)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def bench_io() -> list[dict]:
    import nibabel as nib
    from scipy import ndimage as ndi

    from bonemet.io import Geometry, read_volume, write_volume
    from bonemet.phantom import make_case

    c = make_case("io", seed=0, preset="small")
    shape = (400, 512, 512)
    vol = ndi.zoom(c.ct.astype(np.float32), [t / s for t, s in zip(shape, c.ct.shape)], order=1)
    vol = np.rint(vol[: shape[0], : shape[1], : shape[2]]).astype(np.int16)
    geo = Geometry.from_array(vol, (0.8, 0.78, 0.78), origin=(-200.0, -180.0, -350.0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".nii.gz", ".nrrd", ".mha"):
            p = Path(tmp) / f"ct{ext}"
            t0 = time.perf_counter()
            write_volume(p, vol, geo)
            t_w = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = read_volume(p)
            t_r = time.perf_counter() - t0
            assert np.array_equal(back.array, vol)
            rows.append({"tool": "bonemet.io (SimpleITK)", "format": ext, "shape_xyz": [512, 512, 400],
                         "write_s": round(t_w, 2), "read_s": round(t_r, 2), "round_trip_s": round(t_w + t_r, 2),
                         "file_mb": round(p.stat().st_size / 1e6, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        p = Path(tmp) / "nib.nii.gz"
        aff = np.diag([0.78, 0.78, 0.8, 1.0])
        t0 = time.perf_counter()
        nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), aff), str(p))
        t_w = time.perf_counter() - t0
        t0 = time.perf_counter()
        arr = np.asanyarray(nib.load(str(p)).dataobj)
        t_r = time.perf_counter() - t0
        assert arr.shape == (512, 512, 400)
        rows.append({"tool": "nibabel (peer)", "format": ".nii.gz", "shape_xyz": [512, 512, 400],
                     "write_s": round(t_w, 2), "read_s": round(t_r, 2), "round_trip_s": round(t_w + t_r, 2),
                     "file_mb": round(p.stat().st_size / 1e6, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def to_markdown(res: dict) -> str:
    lines = ["## Femur segmentation and volume I/O (`bench_femur.py`)", "",
             f"Machine: {res['machine']}  ", f"Date: {res['date']}  ", f"Command: `{res['command']}`", "",
             "Classical femur segmentation (`bonemet femur`, no trained model) against the phantom ground truth; "
             "seconds = segmentation only (phantom generation listed separately).", "",
             "| preset | case | atlas | size (x,y,z) | spacing (mm) | lesions | Dice right | Dice left | "
             "seg (s) | generate (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        lines.append(f"| {r['preset']} | {r['case']} | {r['atlas']} | {'x'.join(map(str, r['size']))} | "
                     f"{'/'.join(f'{v:.2f}' for v in r['spacing'])} | {r['lesions']} | {r['dice_right']:.3f} | "
                     f"{r['dice_left']:.3f} | {r['seconds_segment']:.1f} | {r['seconds_generate']:.1f} |")
    for preset, s in res["summary"].items():
        lines.append("")
        lines.append(f"**{preset}** ({s['n']} cases): Dice min {s['dice_min']:.3f}, mean {s['dice_mean']:.3f}; "
                     f"cases with both femurs >= 0.95: {s['n_ge_095']}/{s['n']}; "
                     f"segmentation {s['seconds_mean']:.1f} s/case, generation {s['generate_mean']:.1f} s/case.")
    lines += ["", "Volume I/O round trip, 512 x 512 x 400 int16 (write + read, compressed where the format allows):",
              "", "| tool | format | write (s) | read (s) | round trip (s) | file (MB) |", "|---|---|---|---|---|---|"]
    for r in res["io"]:
        lines.append(f"| {r['tool']} | {r['format']} | {r['write_s']:.2f} | {r['read_s']:.2f} | "
                     f"{r['round_trip_s']:.2f} | {r['file_mb']} |")
    if res.get("io_ratio_vs_nibabel") is not None:
        lines += ["", f"bonemet.io / nibabel round-trip time for .nii.gz: {res['io_ratio_vs_nibabel']:.2f}x "
                      "(< 1 = faster than the peer)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10, help="small-preset cases")
    ap.add_argument("--full", type=int, default=1, help="full-preset cases (slow: about a minute each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("BONEMET_PROGRESS", "off")
    cases = bench_cases(args.n, "small", args.seed) + bench_cases(args.full, "full", args.seed)
    summary = {}
    for preset in ("small", "full"):
        rs = [r for r in cases if r["preset"] == preset]
        if not rs:
            continue
        ds = [d for r in rs for d in (r["dice_right"], r["dice_left"])]
        summary[preset] = {"n": len(rs), "dice_min": min(ds), "dice_mean": float(np.mean(ds)),
                           "n_ge_095": sum(min(r["dice_right"], r["dice_left"]) >= 0.95 for r in rs),
                           "seconds_mean": float(np.mean([r["seconds_segment"] for r in rs])),
                           "generate_mean": float(np.mean([r["seconds_generate"] for r in rs]))}
    io = bench_io()
    ours = next(r for r in io if r["format"] == ".nii.gz" and r["tool"].startswith("bonemet"))
    peer = next(r for r in io if r["tool"].startswith("nibabel"))
    res = {"machine": machine(), "date": dt.date.today().isoformat(),
           "command": " ".join(["python", "benchmarks/bench_femur.py", *sys.argv[1:]]), "cases": cases, "summary": summary,
           "io": io, "io_ratio_vs_nibabel": round(ours["round_trip_s"] / peer["round_trip_s"], 3)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "femur.json").write_text(json.dumps(res, indent=2) + "\n")
    md = to_markdown(res)
    (RESULTS / "femur.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
