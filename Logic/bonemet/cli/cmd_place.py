"""``bonemet place``: place one library lesion at a chosen point (the interactive placement, from the CLI)."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "place", help="place one library lesion at a given point of a CT (interactive placement)",
        description="Insert library lesion --lesion-id at --point (IJK voxel index i j k, or RAS/LPS mm) with the "
        "given scale, rotation, crop seed, edge smoothing and noise; writes the new CT and the lesion mask. "
        "Deterministic. A point outside the femur is an error unless --snap.")
    p.add_argument("--lesions", required=True, metavar="LIBRARY", help="lesion library folder")
    p.add_argument("--lesion-id", required=True, metavar="ID", help="library item id ('bonemet lesions list')")
    p.add_argument("--ct", required=True, metavar="CT", help="host CT volume")
    p.add_argument("--femur", required=True, metavar="FEMUR", help="femur mask / label map of the host CT")
    p.add_argument("--point", required=True, nargs=3, type=float, metavar=("P1", "P2", "P3"),
                   help="insertion point (the lesion's centre)")
    p.add_argument("--space", default="ijk", choices=["ijk", "ras", "lps"],
                   help="coordinates of --point: ijk voxel index (default), ras (Slicer) or lps (ITK) mm")
    p.add_argument("--scale", type=float, default=1.0, help="scale factor (default 1)")
    p.add_argument("--rotation", nargs=3, type=float, default=(0.0, 0.0, 0.0), metavar=("A0", "A1", "A2"),
                   help="rotation angles in degrees about the array axes (default 0 0 0)")
    p.add_argument("--crop-seed", type=int, default=0, help="seed of the random ellipsoid crop and noise (default 0)")
    p.add_argument("--no-crop", action="store_true", help="insert the whole lesion (no ellipsoid crop)")
    p.add_argument("--smoothing", type=float, default=0.6, help="edge blend weight 0..1 (mean filter 3; default 0.6)")
    p.add_argument("--noise", type=float, default=0.0, metavar="HU", help="Gaussian noise std in HU (default 0)")
    p.add_argument("--snap", action="store_true", help="snap a point outside the femur to the nearest femur voxel")
    p.add_argument("-o", "--output", required=True, metavar="OUT_CT", help="CT to write")
    p.add_argument("--mask-out", required=True, metavar="OUT_MASK", help="lesion mask to write")
    p.set_defaults(func=run)


def run(args) -> int:
    from bonemet.io import read_ct, read_mask, write_volume
    from bonemet.synthesis.library import load_library
    from bonemet.synthesis.placement import place_lesion

    item = load_library(args.lesions).get(args.lesion_id)
    ct = read_ct(args.ct)
    femur = read_mask(args.femur, reference=ct, binary=False)
    new_ct, lesion, info = place_lesion(ct.array, femur.array, ct.geometry, item, args.point, space=args.space,
                                        scale=args.scale, rotation_deg=args.rotation,
                                        crop_seed=None if args.no_crop else args.crop_seed,
                                        smoothing=args.smoothing, noise_hu=args.noise, snap=args.snap)
    write_volume(args.mask_out, lesion, ct.geometry)
    write_volume(args.output, new_ct, ct.geometry)
    print(json.dumps({k: info[k] for k in ("centre_ijk", "snapped", "voxels", "volume_mm3", "kept")}),
          file=sys.stderr)
    return 0
