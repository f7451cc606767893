"""``bonemet predict``: segment femoral lesions in a CT with one model package or an ensemble."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="segment lesions in a CT with a model package (or an ensemble of packages)",
        description="Femur segmentation (or --femur) → crop per femur → resample to the model spacing → "
        "sliding-window U-Net (optional flip TTA; several --model or a folder of fold packages = ensemble, "
        "probabilities averaged) → post-processing → lesion mask on the CT's own grid.")
    p.add_argument("ct", metavar="CT", help="CT volume (NIfTI, NRRD, MetaImage or a DICOM folder)")
    p.add_argument("--model", action="append", required=True, metavar="MODEL_PKG",
                   help="model package folder/.zip, or a folder of packages; repeat for an ensemble")
    p.add_argument("-o", "--output", required=True, metavar="MASK", help="output lesion mask (binary)")
    p.add_argument("--femur", metavar="MASK", default=None,
                   help="femur label map on the CT grid (default: segment the femurs automatically)")
    p.add_argument("--prob", metavar="OUT", default=None, help="also write the lesion probability map")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x slower)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bonemet.segmentation.predict import predict_file

    predict_file(args.ct, args.model, args.output, femur_path=args.femur, device=args.device, tta=args.tta,
                 prob_out=args.prob)
    return 0
