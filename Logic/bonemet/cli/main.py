"""``bonemet`` entry point.

Each subcommand lives in ``bonemet.cli.cmd_<name>`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returns an exit code or None). Heavy imports
(torch, MONAI) happen inside ``func`` so ``bonemet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bonemet import __version__
from bonemet.errors import BoneMetError

# Order = order in ``bonemet --help``.
COMMANDS = [
    "phantom", "femur",
    "compare", "evaluate", "variability",
    "lesions", "synth", "place",
    "ddpm", "refine",
    "train", "predict", "experiment",
    "demo",
]

log = logging.getLogger("bonemet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonemet",
        description="BoneMet: synthetic lesioned femurs, diffusion refinement and 3D U-Net segmentation "
        "of femoral bone metastases in CT.",
    )
    parser.add_argument("--version", action="version", version=f"bonemet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bonemet.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bonemet.cli.cmd_{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bonemet.progress import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code = args.func(args)
    except BoneMetError as exc:
        print(f"bonemet {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"bonemet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
