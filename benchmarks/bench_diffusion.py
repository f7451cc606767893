"""Benchmark: DDPM training speed, seconds per refined volume and network evaluations per volume.

    python benchmarks/bench_diffusion.py [--steps 30] [--cases 3] [--skip-paper]

* small preset on CPU: training seconds per step; refinement of phantom volumes (bonemet.phantom, preset
  small) with λ = 10 counted in training steps (paper default) and in DDIM steps;
* peer: MONAI ``sliding_window_inference`` (Gaussian blending, same overlap) computing one ε field of the femur
  region with the same network, vs BoneMet's ``sliding_apply`` (ratio and agreement);
* paper preset network (128/256/512, attention at 512): parameters and ONE denoiser forward pass of a
  96x96x48 patch on CPU, and the evaluations a paper-size femur region needs (for GPU figures later).

Writes ``benchmarks/results/diffusion.json`` and ``.md``.
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

os.environ.setdefault("BONEMET_PROGRESS", "off")

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="small-preset training steps")
    ap.add_argument("--cases", type=int, default=3, help="phantom cases (2/3 healthy)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine more threads oversubscribe)")
    ap.add_argument("--skip-paper", action="store_true", help="skip the paper-network forward pass")
    args = ap.parse_args(argv)

    import torch

    from bonemet.dataset import load_manifest
    from bonemet.diffusion.config import make_config, patch_zyx
    from bonemet.diffusion.data import prepare_arrays
    from bonemet.diffusion.model_io import load_model
    from bonemet.diffusion.network import build_network, count_parameters
    from bonemet.diffusion.refine import refine_volume
    from bonemet.diffusion.sliding import sliding_apply, windows
    from bonemet.diffusion.train import train_ddpm
    from bonemet.io import read_ct, read_mask
    from bonemet.phantom import generate_cohort

    torch.set_num_threads(max(1, args.threads))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows, res = [], {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "load_average_1min_before": load0, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(tmp / "ph", n=args.cases, seed=0, preset="small", healthy_fraction=0.67)
        t0 = time.perf_counter()
        s = train_ddpm(tmp / "ph", tmp / "model", preset="small", steps=args.steps, seed=0, device="cpu")
        t_train = time.perf_counter() - t0
        res["small_train"] = {"steps": args.steps, "seconds": t_train, "seconds_per_step": s["seconds"] / args.steps,
                              "parameters": s["parameters"], "cases": s["cases"]}
        rows.append(("small DDPM training (CPU), batch 2 of 32x32x16", f"{1000 * s['seconds'] / args.steps:.0f} ms/step",
                     f"{s['parameters']} parameters, {s['cases']} healthy phantoms"))
        net, cfg = load_model(tmp / "model", "cpu")
        cases = load_manifest(tmp / "ph")
        vols = []
        for c in cases:
            ct = read_ct(c.ct)
            fem = read_mask(c.femur, ct, binary=False).array
            les = read_mask(c.lesion, ct).array if c.lesion is not None else None
            vols.append((c.id, ct, fem, les))
        res["refine"] = {}
        for unit in ("train", "ddim"):
            per = []
            for cid, ct, fem, les in (vols if unit == "train" else vols[-1:]):
                info: dict = {}
                t0 = time.perf_counter()
                refine_volume(ct.array, fem, les, ct.spacing_zyx, net, cfg, lam=10, ddim_steps=50, seed=0,
                              lambda_unit=unit, noise_key=cid, info=info)
                per.append({"case": cid, "shape": list(ct.array.shape), "seconds": time.perf_counter() - t0,
                            "network_evaluations": info["network_evaluations"], "windows": info["windows"],
                            "timesteps": info["timesteps"]})
            sec = float(np.mean([p["seconds"] for p in per]))
            ev = float(np.mean([p["network_evaluations"] for p in per]))
            res["refine"][unit] = {"per_case": per, "mean_seconds": sec, "mean_network_evaluations": ev}
            shapes = "/".join("x".join(map(str, p["shape"])) for p in per)
            rows.append((f"refine one phantom volume, small preset, λ=10 ({unit} steps), 50 DDIM steps (CPU)",
                         f"{sec:.2f} s/volume",
                         f"{ev:.0f} network evaluations/volume ({per[0]['windows']} windows x "
                         f"{len(per[0]['timesteps'])} timesteps); volumes {shapes}"))
        # peer: MONAI sliding_window_inference for one ε field over the femur region
        from monai.inferers import sliding_window_inference

        cid, ct, fem, les = vols[0]
        prep = prepare_arrays(cid, ct.array, fem, les, ct.spacing_zyx, cfg)
        x = torch.from_numpy(prep.image)[None]
        patch = patch_zyx(cfg)
        ov = float(cfg["refine"]["overlap"])

        def fn(b):
            return net(b, timesteps=torch.full((b.shape[0],), 10, dtype=torch.long))

        with torch.no_grad():
            fn(x[None, :, :patch[0], :patch[1], :patch[2]])  # warm-up
            t0 = time.perf_counter()
            ours, n = sliding_apply(fn, x, patch, ov, "gaussian", 2)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            peer = sliding_window_inference(x[None], patch, 2, fn, overlap=ov, mode="gaussian")
            t_peer = time.perf_counter() - t0
        diff = float((ours - peer[0]).abs().max())
        res["peer_sliding_window"] = {"region_shape": list(prep.image.shape), "bonemet_seconds": t_ours,
                                      "bonemet_windows": n, "monai_seconds": t_peer, "ratio_monai_over_bonemet":
                                      t_peer / t_ours, "max_abs_difference": diff}
        rows.append(("one ε field over a femur region " + "x".join(map(str, prep.image.shape)) + ": BoneMet sliding_apply",
                     f"{t_ours:.2f} s", f"{n} windows, overlap {ov}, 2 windows per call"))
        rows.append((f"peer: MONAI sliding_window_inference (gaussian, overlap {ov}, 2 windows per call)", f"{t_peer:.2f} s",
                     f"MONAI/BoneMet time {t_peer / t_ours:.2f}x; max |difference| {diff:.3g} (window placement "
                     "differs slightly)"))
    if not args.skip_paper:
        cfg = make_config("paper")
        torch.manual_seed(0)
        net = build_network(cfg).eval()
        n_par = count_parameters(net)
        p = patch_zyx(cfg)
        x = torch.randn(1, 1, *p)
        with torch.no_grad():
            t0 = time.perf_counter()
            net(x, timesteps=torch.tensor([10]))
            t_fwd = time.perf_counter() - t0
        # a paper-size femur region at 0.85 mm: ~ 170 x 170 x 470 mm (proximal femur + margin) -> voxels (z, y, x)
        region = (int(470 / 0.85), int(170 / 0.85), int(170 / 0.85))
        n_win = len(windows(region, p, 0.5))
        evals = n_win * 4
        res["paper_network"] = {"parameters": n_par, "patch_zyx": list(p), "cpu_forward_seconds": t_fwd,
                                "example_region_zyx": list(region), "windows": n_win,
                                "network_evaluations_lambda10_train": evals,
                                "estimated_cpu_seconds_per_volume": evals * t_fwd,
                                "paper_gpu_seconds_per_volume": "< 60 (RTX A5000, paper)"}
        rows.append(("paper DDPM (128/256/512, attention at 512): one forward pass of a 96x96x48 patch (CPU)",
                     f"{t_fwd:.1f} s", f"{n_par / 1e6:.1f} M parameters"))
        rows.append((f"paper preset, femur region {region[2]}x{region[1]}x{region[0]} (x,y,z) @0.85 mm, λ=10 (train)",
                     f"~{evals * t_fwd / 60:.0f} min/volume on this CPU (estimate)",
                     f"{n_win} windows x 4 timesteps = {evals} network evaluations; paper: < 1 min on an RTX A5000; "
                     "GPU figures to be added"))
    head = "| what | time | note |\n|---|---|---|\n"
    table = head + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    load_txt = f"; 1-minute load average {load0:.1f} before the run (shared machine)" if load0 is not None else ""
    md = (f"## Diffusion refinement (DDPM + DDIM)\n\nMachine: {res['machine']}; torch threads "
          f"{res['torch_threads']}; {res['date']}{load_txt}. No GPU here.\n\n{table}\n\n"
          "Network evaluations per volume = sliding windows over the femur region x DDIM timesteps from λ down "
          "to 0 (λ = 10 training steps with 50 DDIM steps over T = 200: t = 10, 8, 4, 0).\n")
    print(md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "diffusion.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "diffusion.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
