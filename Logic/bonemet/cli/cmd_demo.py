"""``bonemet demo``: the whole pipeline on built-in phantom data, ending in one HTML report."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole method end to end on built-in phantom data (the main job)",
        description="Phantom cohort -> femur segmentation -> lesion library -> synthetic set -> small DDPM -> "
        "refined set -> cross-validated U-Nets (Real/Synthetic/Diffusion, + fine-tuning) -> evaluation -> "
        "simulated operators' variability study -> one HTML report. Every stage is resumable: re-run the same "
        "command to continue after an interruption.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", "-o", default="bonemet-demo", help="output folder")
    p.add_argument("--preset", default="small",
                   help="demo size: quick (smallest, a few minutes), small (about 10 min on 2 CPU cores), "
                   "paper (the paper's sizes; a GPU server), or a JSON file")
    p.add_argument("--seed", type=int, default=0, help="random seed (the whole run is reproducible)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    p.add_argument("--stages", nargs="+", default=None, metavar="STAGE",
                   help="run only these stages (cohort femur synthesis ddpm refine experiment variability report)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bonemet.demo import Demo, summary_text

    demo = Demo(args.out, preset=args.preset, seed=args.seed, device=args.device)
    result = demo.run(only=args.stages)
    sys.stdout.write(summary_text(result))
    return 0
