"""``bonemet synth``: batch ad-hoc lesion synthesis (library lesions x healthy femurs x applications)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "synth", help="synthesise lesioned femurs from a lesion library and healthy CTs",
        description="Ad-hoc synthesis (paper): for every (library lesion, healthy femur) pair, K times: random "
        "ellipsoid crop, rotation, scaling, edge smoothing, noise, insertion inside the femur mask; results "
        "<= 16 mm³ rejected. Writes a dataset folder (manifest.json with provenance and every drawn parameter, "
        "manifest.csv, summary.json). Resumable: re-run the same command to finish an interrupted run.")
    p.add_argument("--lesions", required=True, metavar="LIBRARY", help="lesion library ('bonemet lesions extract')")
    p.add_argument("--healthy", required=True, metavar="DATASET_DIR",
                   help="dataset folder with healthy cases (lesion: null) and their femur masks")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--per-pair", type=int, default=None, metavar="K",
                   help="applications per (lesion, femur) pair (default: the preset's; paper 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="worker processes (default 1)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument("--exclude-sources", default=None, metavar="IDS",
                    help="leakage control: leave out the lesions of these source cases (comma-separated ids, or "
                    "@FILE with one id per line)")
    ex.add_argument("--exclude-fold", nargs=2, default=None, metavar=("FOLDS_JSON", "FOLD"),
                    help="leakage control: leave out the lesions of the cases of fold FOLD (0-based) of FOLDS_JSON "
                    "(a list of lists of case ids, {'folds': [...]}, or {case: fold})")
    p.add_argument("--preset", default="paper", help="synthesis preset: paper or small, or a JSON file (default paper)")
    p.add_argument("--max-cases", type=int, default=None, metavar="N", help="synthesise at most N cases")
    p.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="output isotropic spacing in mm (default: the library's working spacing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a preset value, e.g. --set 'scale=[0.5,1.5]' --set smoothing.weight=[0,1] "
                   "--set min_volume_mm3=20")
    p.add_argument("--preview", metavar="PNG", default=None,
                   help="also save a montage of a few synthetic cases next to their source lesions")
    p.set_defaults(func=run)


def parse_ids(text: str | None) -> list[str]:
    from bonemet.errors import InputError

    if not text:
        return []
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise InputError("file of case ids not found", path)
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_sets(items) -> dict:
    from bonemet.errors import InputError

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set expects KEY=JSON, got {item!r}")
        key, val = item.split("=", 1)
        try:
            value = json.loads(val)
        except json.JSONDecodeError:
            raise InputError(f"--set {key}: value {val!r} is not valid JSON") from None
        node = out
        parts = key.strip().split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = value
    return out


def run(args) -> int:
    from bonemet.errors import InputError
    from bonemet.synthesis.batch import fold_sources, synthesize

    if args.exclude_fold:
        try:
            fold = int(args.exclude_fold[1])
        except ValueError:
            raise InputError(f"--exclude-fold FOLD must be an integer, got {args.exclude_fold[1]!r}") from None
        exclude = fold_sources(args.exclude_fold[0], fold)
    else:
        exclude = parse_ids(args.exclude_sources)
    summary = synthesize(args.lesions, args.healthy, args.output, per_pair=args.per_pair, seed=args.seed,
                         workers=args.workers, exclude_sources=exclude, preset=args.preset,
                         max_cases=args.max_cases, spacing=args.spacing, overrides=parse_sets(args.set))
    if args.preview and summary["kept"]:
        from bonemet.synthesis.preview import save_preview_montage

        save_preview_montage(args.output, args.lesions, args.preview)
    print(json.dumps({k: summary[k] for k in ("planned", "kept", "rejected", "rejected_by_reason",
                                              "excluded_lesions", "cases_per_min")}), file=sys.stderr)
    return 0
