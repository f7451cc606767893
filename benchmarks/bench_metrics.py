"""Benchmark: HD95 + ASSD of bonemet.metrics vs MONAI and DeepMind's surface-distance, side by side.

    python benchmarks/bench_metrics.py [--quick]

For each case (a 300x512x512 CT-sized pair with a few lesions, and a smaller 120x256x256 pair), every method
computes HD95 and ASSD of the same masks with the same spacing. Reported: median wall time of ``--repeat`` runs
(after one warm-up), the ratio to the faster peer, agreement (max absolute difference of HD95 and ASSD with
MONAI, which defines the values the paper used) and peak extra resident memory during the call (Linux
``VmHWM`` reset through ``/proc/self/clear_refs``; falls back to tracemalloc, numpy only).

Writes ``benchmarks/results/metrics.json`` and ``benchmarks/results/metrics.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _machine import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "Logic"))


# ---------------------------------------------------------------------------------------------------------------
def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(fn, repeat: int):
    """(median seconds, result, peak resident-memory growth MiB, tracemalloc peak MiB). The RSS growth misses
    memory the allocator reuses; tracemalloc sees numpy/Python allocations but not torch's."""
    fn()  # warm-up (imports, caches)
    times = []
    peak_mib = None
    for i in range(repeat):
        use_proc = _status_kb("VmHWM") is not None
        if i == 0:
            if use_proc:
                try:
                    Path("/proc/self/clear_refs").write_text("5")
                except OSError:
                    use_proc = False
            if not use_proc:
                import tracemalloc

                tracemalloc.start()
            base = _status_kb("VmRSS") if use_proc else 0
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
        if i == 0:
            if use_proc:
                peak_mib = max(0, _status_kb("VmHWM") - base) / 1024
            else:
                import tracemalloc

                peak_mib = tracemalloc.get_traced_memory()[1] / 2 ** 20
                tracemalloc.stop()
    import tracemalloc

    tracemalloc.start()
    fn()
    traced = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return statistics.median(times), res, peak_mib, traced


# ---------------------------------------------------------------------------------------------------------------
def make_pair(shape, spacing_zyx, seed=0, n_lesions=4):
    """Reference: a few ellipsoidal lesions of varied size; test mask: a simulated expert segmentation of it
    (boundary shifts, a smooth boundary perturbation, maybe a false positive)."""
    from bonemet.variability import simulate_operator

    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, np.uint8)
    sp = np.asarray(spacing_zyx)
    for k in range(n_lesions):
        radii_mm = rng.uniform(4, 14, 3)
        c = [int(rng.uniform(0.2, 0.8) * s) for s in shape]
        half = np.ceil(radii_mm / sp).astype(int) + 1
        sl = tuple(slice(max(ci - h, 0), min(ci + h + 1, s)) for ci, h, s in zip(c, half, shape))
        g = np.ogrid[sl]
        d = sum((((gi - ci) * s) / r) ** 2 for gi, ci, s, r in zip(g, c, sp, radii_mm))
        ref[sl] |= (d <= 1).astype(np.uint8)
    skill = {"shift_mean": 0.2, "shift_sd": 0.6, "field_mm": 0.8, "missed_mm3": 0.0, "p_miss": 0.0,
             "fp_rate": 1.0, "fp_radius_mm": (2.0, 3.0)}
    pred = simulate_operator(ref, spacing_zyx, np.random.default_rng(seed + 1), skill)
    return pred, ref


def ours(pred, ref, sp):
    from bonemet.metrics import segmentation_metrics

    m = segmentation_metrics(pred, ref, sp)
    return m["hd95"], m["assd"]


def monai_metrics(pred, ref, sp):
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    P = torch.from_numpy(pred)[None, None]
    R = torch.from_numpy(ref)[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(P, R, include_background=True, percentile=95, spacing=list(sp)).item()
        assd = compute_average_surface_distance(P, R, include_background=True, symmetric=True,
                                                spacing=list(sp)).item()
    return hd95, assd


def deepmind(pred, ref, sp):
    import surface_distance as sd

    s = sd.compute_surface_distances(ref.astype(bool), pred.astype(bool), tuple(float(x) for x in sp))
    hd95 = sd.compute_robust_hausdorff(s, 95)
    a, b = sd.compute_average_surface_distance(s)
    # surface-distance's ASSD is area-weighted per direction; report the mean of both directions
    return float(hd95), float((a + b) / 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method (median reported)")
    ap.add_argument("--quick", action="store_true", help="small case only")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    cases = [("120x256x256, spacing 0.8x0.8x1.5 mm", (120, 256, 256), (1.5, 0.8, 0.8))]
    if not args.quick:
        cases.append(("300x512x512, spacing 0.8x0.8x1.0 mm", (300, 512, 512), (1.0, 0.8, 0.8)))
    methods = [("bonemet", ours), ("MONAI 1.6", monai_metrics), ("surface-distance", deepmind)]
    rows = []
    for label, shape, sp in cases:
        pred, ref = make_pair(shape, sp)
        from scipy import ndimage

        n_les = int(ndimage.label(ref)[1])
        res = {}
        for name, fn in methods:
            t, val, mem, traced = measure(lambda: fn(pred, ref, sp), args.repeat)
            res[name] = {"seconds": t, "hd95": val[0], "assd": val[1], "peak_extra_mib": mem,
                         "tracemalloc_peak_mib": traced}
            print(f"  {label} {name}: {t * 1000:.1f} ms, HD95 {val[0]:.4f}, ASSD {val[1]:.4f}", file=sys.stderr)
        faster_peer = min(res["MONAI 1.6"]["seconds"], res["surface-distance"]["seconds"])
        for name, r in res.items():
            rows.append({
                "case": label, "lesions": n_les, "voxels_ref": int(ref.sum()), "method": name,
                "ms": r["seconds"] * 1000, "speedup_vs_faster_peer": faster_peer / r["seconds"],
                "hd95_mm": r["hd95"], "assd_mm": r["assd"],
                "hd95_absdiff_vs_monai": abs(r["hd95"] - res["MONAI 1.6"]["hd95"]),
                "assd_absdiff_vs_monai": abs(r["assd"] - res["MONAI 1.6"]["assd"]),
                "peak_extra_mib": r["peak_extra_mib"], "tracemalloc_peak_mib": r["tracemalloc_peak_mib"],
            })
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    lines = ["## Metrics (HD95 + ASSD of one mask pair)", "",
             f"Machine: {machine()}; {date}. Shared machine (other jobs may run at the same time). Median of "
             f"{args.repeat} runs after a warm-up, one thread (torch.set_num_threads(1)). Ratio = time of the faster "
             "of MONAI and surface-distance / time of the method. Agreement = max |difference| with MONAI "
             "(the paper's definition). surface-distance uses a different surface definition (area-weighted "
             "surfels), so its values differ by design. Memory: growth of the peak resident set during the call (misses "
             "memory the allocator reuses) and tracemalloc's peak (numpy/Python allocations; blind to torch).", "",
             "| case | method | time (ms) | ratio vs faster peer | HD95 (mm) | ASSD (mm) | |ΔHD95| vs MONAI | "
             "|ΔASSD| vs MONAI | peak RSS growth MiB | tracemalloc peak MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mem = "n/a" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.0f}"
        lines.append(f"| {r['case']}, {r['lesions']} lesions | {r['method']} | {r['ms']:.1f} | "
                     f"{r['speedup_vs_faster_peer']:.1f}x | {r['hd95_mm']:.4f} | {r['assd_mm']:.4f} | "
                     f"{r['hd95_absdiff_vs_monai']:.2e} | {r['assd_absdiff_vs_monai']:.2e} | {mem} | "
                     f"{r['tracemalloc_peak_mib']:.1f} |")
    big = [r for r in rows if r["method"] == "bonemet"][-1]
    lines += ["", f"Target: bonemet at least 10x faster than the faster peer on the largest case — measured "
              f"{big['speedup_vs_faster_peer']:.1f}x ({big['case']}); agreement with MONAI "
              f"{max(big['hd95_absdiff_vs_monai'], big['assd_absdiff_vs_monai']):.1e} mm."]
    md = "\n".join(lines) + "\n"
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps({"date": date, "machine": machine(), "repeat": args.repeat,
                                                      "rows": rows}, indent=2) + "\n")
    (RESULTS / "metrics.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
