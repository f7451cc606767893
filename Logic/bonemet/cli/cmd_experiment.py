"""``bonemet experiment``: cross-validated Real / Synthetic / Diffusion segmentation experiment + report."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "experiment", help="k-fold Real/Synthetic/Diffusion U-Net experiment (Tables 2-3, statistics, report)",
        description="k-fold cross-validation grouped by patient over the lesioned cases of REAL_DATASET_DIR. "
        "Per fold: synthetic set (test lesions excluded), diffusion-refined set, models Real, Synthetic, "
        "Synthetic+FT, Diffusion, Diffusion+FT and the training-size sweep; per-case metrics, Table 2/3 "
        "layouts, Kruskal-Wallis + pairwise tests and an HTML report in OUT_DIR. Resumable: run the same "
        "command again to continue.")
    p.add_argument("real", metavar="REAL_DATASET_DIR", help="dataset of real cases (lesioned = test cases; "
                   "healthy = synthesis hosts and DDPM training data)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="experiment folder")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--extra-test", metavar="DATASET_DIR", default=None,
                   help="extra test cases (segmented by the ensemble of the fold models)")
    p.add_argument("--preset", default="small", help="unet preset: small or paper (default small)")
    p.add_argument("--sizes", default="full", help="training-size sweep, e.g. 100,500,2000,full (default full)")
    p.add_argument("--models", default=",".join(["real", "synthetic", "synthetic_ft", "diffusion",
                                                 "diffusion_ft"]),
                   help="comma-separated subset of real,synthetic,synthetic_ft,diffusion,diffusion_ft")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default: preset's experiment "
                   "block)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="epochs for the +FT models")
    p.add_argument("--max-iterations", type=int, default=None, help="cap on optimiser steps per epoch")
    p.add_argument("--synthetic", metavar="DATASET_DIR", default=None,
                   help="precomputed synthetic set (cases must record source_case; filtered per fold)")
    p.add_argument("--diffusion", metavar="DATASET_DIR", default=None,
                   help="precomputed diffusion-refined set (filtered per fold like --synthetic)")
    p.add_argument("--healthy", metavar="DATASET_DIR", default=None,
                   help="healthy femurs for synthesis and the DDPM (default: healthy cases of REAL_DATASET_DIR)")
    p.add_argument("--ddpm-model", metavar="MODEL_DIR", default=None, help="trained DDPM (else one is trained)")
    p.add_argument("--ddpm-steps", type=int, default=None, help="DDPM training steps (default: its preset)")
    p.add_argument("--per-pair", type=int, default=None, help="synthetic cases per (lesion, healthy femur) pair")
    p.add_argument("--max-synthetic", type=int, default=None, help="at most this many synthetic cases per fold")
    p.add_argument("--refine-max", type=int, default=None, help="refine at most this many cases per fold")
    p.add_argument("--lambda", dest="lam", type=float, default=10, help="refinement noise level (default 10)")
    p.add_argument("--workers", type=int, default=1, help="synthesis worker processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from bonemet.segmentation.experiment import run_experiment

    res = run_experiment(args.real, args.output, folds=args.folds, preset=args.preset, extra_test=args.extra_test,
                         sizes=[s.strip() for s in args.sizes.split(",") if s.strip()],
                         models=[m.strip() for m in args.models.split(",") if m.strip()], seed=args.seed,
                         device=args.device, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                         max_iterations=args.max_iterations, synthetic_dir=args.synthetic,
                         diffusion_dir=args.diffusion, healthy_dir=args.healthy, per_pair=args.per_pair,
                         max_synthetic=args.max_synthetic, ddpm_model=args.ddpm_model, ddpm_steps=args.ddpm_steps,
                         refine_lambda=args.lam, refine_max_cases=args.refine_max, workers=args.workers)
    log = logging.getLogger("bonemet")
    for row in res["table"]:
        log.info("%-14s n=%-3s Dice %s  HD95 %s mm", row["model"], row["n"], row["dice"], row["hd95"])
    log.info("report: %s", res["report"])
    return 0
