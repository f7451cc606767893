"""``bonemet ddpm train``: train the 3D DDPM (denoiser for diffusion refinement) on healthy femurs."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ddpm", help="train the 3D diffusion model (DDPM) used by 'bonemet refine'",
        description="3D DDPM (MONAI DiffusionModelUNet) trained on healthy femur CTs.")
    sub = p.add_subparsers(dest="ddpm_command", metavar="ACTION")
    t = sub.add_parser(
        "train", help="train or resume a DDPM model folder",
        description="Train a DDPM on random patches around the femurs of the healthy cases (lesion null) of a "
        "dataset folder (with --conditioning mask: all cases, lesion mask and patch coordinates as extra "
        "inputs). Checkpoints (safetensors + config.json), loss.csv and loss.png go to MODEL_DIR. "
        "Multi-GPU: torchrun --nproc_per_node N -m bonemet ddpm train ...")
    t.add_argument("dataset", metavar="DATASET_DIR", help="dataset folder (manifest.json) with healthy femurs")
    t.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model folder to write")
    t.add_argument("--preset", default="small",
                   help="ddpm preset: small (CPU demo/tests) or paper (the paper's network), or a JSON file")
    t.add_argument("--steps", type=int, default=None, help="total optimisation steps (default: the preset's)")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in MODEL_DIR exactly")
    t.add_argument("--seed", type=int, default=0, help="random seed (patches, noise, initial weights)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--conditioning", choices=["none", "mask"], default="none",
                   help="none (paper) or mask (seed 002: lesion mask + patch coordinates as input channels)")
    t.add_argument("--ema", action="store_true", default=None, help="keep an EMA of the weights (used to refine)")
    t.add_argument("--amp", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="mixed precision on GPU (default: the preset's, on)")
    t.add_argument("--batch-size", type=int, default=None, help="patches per step and process")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    t.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    t.add_argument("--max-cases", type=int, default=None, help="use at most N training cases")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                   help="override any config value, e.g. --set network.channels=[16,32,32] (repeatable)")
    t.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def parse_sets(items) -> dict:
    from bonemet.errors import InputError

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        try:
            value = json.loads(val)
        except json.JSONDecodeError:
            value = val
        d = out
        parts = key.split(".")
        for k in parts[:-1]:
            d = d.setdefault(k, {})
        d[parts[-1]] = value
    return out


def run(args) -> int:
    from bonemet.diffusion.train import train_ddpm
    from bonemet.presets import merge

    overrides = parse_sets(args.set)
    overrides = merge(overrides, {"training": {"batch_size": args.batch_size, "lr": args.lr,
                                               "save_every": args.save_every}})
    summary = train_ddpm(args.dataset, args.output, preset=args.preset, steps=args.steps, overrides=overrides,
                         seed=args.seed, device=args.device, resume=args.resume, conditioning=args.conditioning,
                         ema=args.ema, amp=args.amp, max_cases=args.max_cases)
    import logging

    if summary.get("rank", 0) == 0:
        logging.getLogger("bonemet").info("summary: %s", json.dumps(summary))
    return 0
