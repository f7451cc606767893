"""``bonemet refine``: SDEdit/DDIM refinement of (synthetic) CTs with a trained DDPM."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "refine", help="make synthetic CTs realistic with the diffusion model (SDEdit + DDIM)",
        description="Noise each CT of a dataset folder to timestep lambda and DDIM-denoise it back with a DDPM "
        "from 'bonemet ddpm train', patch by patch inside the femur region. Writes a new dataset folder "
        "(manifest.json; lesion masks and femur maps copied unchanged; per case the refinement settings, the "
        "network evaluations and mean HU inside/around the lesion before/after). Resumable; shard across "
        "processes/GPUs with torchrun --nproc_per_node N -m bonemet refine ...")
    p.add_argument("dataset", metavar="DATASET_DIR", help="dataset folder to refine (e.g. from 'bonemet synth')")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="DDPM model folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output dataset folder")
    p.add_argument("--lambda", dest="lam", type=int, default=None,
                   help="noise level (default: the model's, 10); 0 returns the input")
    p.add_argument("--lambda-unit", choices=["train", "ddim"], default=None,
                   help="train: lambda is a training timestep (of T=200), ddim: lambda counts DDIM steps "
                   "(default train)")
    p.add_argument("--ddim-steps", type=int, default=None, help="DDIM steps over the T training steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (results are deterministic per seed)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--keep-far", type=float, default=None, metavar="MM",
                   help="keep voxels farther than MM mm from the lesion unchanged")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (0-1, default 0.5)")
    p.add_argument("--blend", choices=["gaussian", "cosine", "constant"], default=None,
                   help="window blending weights (default gaussian)")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per network call")
    p.add_argument("--amp", action="store_true", help="half precision inference on GPU")
    p.add_argument("--max-cases", type=int, default=None, help="refine only the first N cases")
    p.add_argument("--overwrite", action="store_true", help="redo cases already refined in OUT_DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from bonemet.diffusion.model_io import read_config
    from bonemet.diffusion.refine import refine_dataset

    rdef = read_config(args.model)["config"].get("refine", {})
    summary = refine_dataset(
        args.dataset, args.model, args.output,
        lam=args.lam if args.lam is not None else rdef.get("lambda", 10),
        ddim_steps=args.ddim_steps if args.ddim_steps is not None else rdef.get("ddim_steps", 50),
        seed=args.seed, device=args.device,
        lambda_unit=args.lambda_unit or rdef.get("lambda_unit", "train"), max_cases=args.max_cases,
        keep_far_mm=args.keep_far, overwrite=args.overwrite, overlap=args.overlap, blend=args.blend,
        sw_batch_size=args.sw_batch_size, amp=args.amp)
    logging.getLogger("bonemet").info("summary: %s", json.dumps(summary, default=str))
    return 1 if summary.get("failed") else 0
