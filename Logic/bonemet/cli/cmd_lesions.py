"""``bonemet lesions``: build and inspect lesion libraries for ad-hoc synthesis."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "lesions", help="build (extract) or list a lesion library for ad-hoc synthesis",
        description="Lesion libraries: every connected lesion of a dataset's (CT, lesion mask) pairs, resampled "
        "to the working spacing, stored as an intensity patch + mask + metadata.")
    s = p.add_subparsers(dest="lesions_command", metavar="ACTION")
    e = s.add_parser("extract", help="extract a lesion library from a dataset folder",
                     description="Extract every connected lesion (>= --min-voxels voxels on the resampled grid) "
                     "of the lesioned cases of DATASET_DIR into a library folder (index.json + items/*.npz).")
    e.add_argument("dataset", metavar="DATASET_DIR", help="dataset folder (manifest.json with ct/femur/lesion), "
                   "e.g. written by 'bonemet phantom'")
    e.add_argument("-o", "--output", required=True, metavar="LIBRARY", help="library folder to write")
    e.add_argument("--spacing", type=float, default=0.85, metavar="MM",
                   help="working isotropic spacing in mm (default 0.85, the paper's); 0 keeps each case's grid")
    e.add_argument("--min-voxels", type=int, default=26, metavar="N",
                   help="ignore lesions smaller than N voxels on the working grid (default 26 = 16 mm³ at 0.85 mm)")
    e.set_defaults(func=run_extract)
    ls = s.add_parser("list", help="list the items of a lesion library",
                      description="Print one line per library lesion (id, source case, volume, location), or JSON.")
    ls.add_argument("library", metavar="LIBRARY", help="lesion library folder")
    ls.add_argument("--json", action="store_true", help="print the items as JSON instead of a table")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_extract(args) -> int:
    from bonemet.synthesis.library import extract_library, load_library

    out = extract_library(args.dataset, args.output, spacing=args.spacing or None, min_voxels=args.min_voxels)
    lib = load_library(out)
    print(f"{out}: {len(lib)} lesions from {len(lib.sources())} cases", file=sys.stderr)
    return 0


def run_list(args) -> int:
    from bonemet.synthesis.library import load_library

    lib = load_library(args.library)
    if args.json:
        print(json.dumps([{"id": it.id, "source_case": it.source_case, "spacing": list(it.spacing),
                           "shape_zyx": list(it.patch.shape), **it.meta} for it in lib], indent=2))
        return 0
    print(f"{'id':<24} {'source':<12} {'voxels':>7} {'mm3':>9}  side   region")
    for it in lib:
        loc = it.meta.get("location") or {}
        print(f"{it.id:<24} {it.source_case:<12} {it.voxels:>7} {it.volume_mm3:>9.1f}  "
              f"{str(loc.get('side') or '-'):<6} {loc.get('region') or loc.get('region_estimate') or '-'}")
    return 0
