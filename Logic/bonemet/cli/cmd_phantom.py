"""``bonemet phantom``: write a realistic CT phantom cohort (dataset folder with ground truth)."""

from __future__ import annotations

import logging

log = logging.getLogger("bonemet")


def register(sub) -> None:
    p = sub.add_parser(
        "phantom", help="generate a realistic CT phantom cohort with femur and lesion ground truth",
        description="Generate proximal-femur CT phantoms (real femur/pelvis/muscle label maps as anatomy, CT "
        "intensities and texture, random deformation, multi-centre acquisition, osteolytic lesions). Writes "
        "DIR/manifest.json (cases: id, ct, femur, lesion, patient, centre, spacing, healthy, lesions) and the "
        "volumes (NIfTI). Femur label maps: 0 background, 1 patient's right femur, 2 left femur.")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--n", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed = same cohort (default 0)")
    p.add_argument("--preset", default="small", help="small (coarse ~2 mm, fast; demo/tests) or full "
                   "(clinical-like ~0.8 mm in-plane, 1-3 mm slices), or a preset JSON file (default small)")
    p.add_argument("--healthy-fraction", type=float, default=0.4,
                   help="fraction of cases without lesions (default 0.4)")
    p.add_argument("--preview", action="store_true", help="also write preview/<id>.png montages with overlays")
    p.add_argument("--no-resume", action="store_true", help="regenerate every case even if already written")
    p.set_defaults(func=run)


def run(args) -> int:
    from bonemet.errors import InputError
    from bonemet.phantom.cohort import generate_cohort

    if args.n < 1:
        raise InputError(f"--n must be at least 1 (got {args.n})")
    if not 0.0 <= args.healthy_fraction <= 1.0:
        raise InputError(f"--healthy-fraction must be within [0, 1] (got {args.healthy_fraction})")
    recs = generate_cohort(args.out, n=args.n, seed=args.seed, preset=args.preset,
                           healthy_fraction=args.healthy_fraction, preview=args.preview,
                           resume=not args.no_resume)
    n_les = sum(len(r["lesions"]) for r in recs)
    log.info("%d cases (%d healthy, %d lesions) in %s", len(recs), sum(r["healthy"] for r in recs), n_les,
             args.out)
    return 0
