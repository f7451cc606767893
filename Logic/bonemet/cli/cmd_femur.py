"""``bonemet femur``: automatic femur label map from a CT (classical pipeline, no trained model)."""

from __future__ import annotations

import logging

log = logging.getLogger("bonemet")


def register(sub) -> None:
    p = sub.add_parser(
        "femur", help="segment the femurs of a CT (label map: 1 right, 2 left)",
        description="Segment the proximal femurs of a CT (NIfTI, NRRD, MetaImage or a DICOM series folder) "
        "without a trained model. Writes a label map on the CT's grid: 0 background, 1 the patient's RIGHT "
        "femur (smaller LPS x), 2 the patient's LEFT femur. The medullary canal and lytic lesions are part of "
        "the femur; the pelvis is separated at the hip joint.")
    p.add_argument("ct", metavar="CT", help="input CT file or DICOM series folder (HU)")
    p.add_argument("-o", "--out", required=True, metavar="MASK",
                   help="output label map (.nii.gz, .nii, .nrrd, .seg.nrrd, .mha, .mhd)")
    p.add_argument("--bone-hu", type=float, default=None,
                   help="bone threshold in HU (default 300; lower it for osteoporotic bone)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from bonemet.femur import BONE_HU, segment_femur_file
    from bonemet.io import read_mask

    out = segment_femur_file(args.ct, args.out, bone_hu=args.bone_hu if args.bone_hu is not None else BONE_HU)
    lab = read_mask(out, binary=False)
    vv = lab.geometry.voxel_volume / 1000.0
    log.info("wrote %s: right femur %.1f ml, left femur %.1f ml", out, float(np.sum(lab.array == 1)) * vv,
             float(np.sum(lab.array == 2)) * vv)
    return 0
