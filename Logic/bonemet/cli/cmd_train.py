"""``bonemet train``: train a lesion-segmentation 3D U-Net and write a model package."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a lesion-segmentation 3D U-Net (writes a model package)",
        description="Train a MONAI 3D U-Net on dataset folders (manifest.json with ct/femur/lesion) and write a "
        "model package (config.json + model.safetensors + learning curves). Resumable with --resume; "
        "multi-GPU/multi-process with 'torchrun --nproc_per_node N -m bonemet train ...'.")
    p.add_argument("datasets", nargs="+", metavar="DATASET_DIR", help="training dataset folder(s)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_PKG", help="model package folder to write")
    p.add_argument("--preset", default="small", help="unet preset: small (CPU demo) or paper, or a JSON file "
                   "(default: small)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: from the preset)")
    p.add_argument("--init", metavar="MODEL_PKG", default=None,
                   help="fine-tune from this package (lr, decay and patience from the preset's 'finetune')")
    p.add_argument("--val", metavar="DATASET_DIR", default=None,
                   help="validation dataset (default: val_fraction of the training patients, else the "
                   "training cases)")
    p.add_argument("--femur-channel", action="store_true", help="give the femur mask as a 2nd input channel")
    p.add_argument("--aux-femur", action="store_true", help="also predict the femur as an auxiliary target")
    p.add_argument("--lr", type=float, default=None, help="override the learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any config key, e.g. --set patience=50 --set 'patch_size=[64,64,64]'")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in MODEL_PKG")
    p.set_defaults(func=run)


def parse_sets(items) -> dict:
    from bonemet.errors import InputError

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        try:
            value = json.loads(val)
        except json.JSONDecodeError:
            value = val
        node = out
        parts = key.split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = value
    return out


def run(args) -> int:
    import logging

    from bonemet.segmentation.train import train_unet

    overrides = parse_sets(args.set)
    if args.femur_channel:
        overrides["femur_channel"] = True
    if args.aux_femur:
        overrides["aux_femur"] = True
    if args.lr is not None:
        overrides.setdefault("optimizer", {})["lr"] = args.lr
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    summary = train_unet(args.datasets, args.output, preset=args.preset, epochs=args.epochs, init=args.init,
                         seed=args.seed, device=args.device, overrides=overrides, val_dataset=args.val,
                         resume=args.resume)
    if summary.get("rank", 0) == 0:
        logging.getLogger("bonemet").info("model package written to %s (best validation Dice %s at epoch %s)",
                                          args.output, summary["best_val_dice"], summary["best_epoch"])
    return 0
