"""Segmentation configs: a preset (``unet-small`` / ``unet-paper``) merged with overrides, validated.

Sizes follow the engine's convention for physical quantities: ``spacing`` and ``patch_size`` are (x, y, z);
:func:`patch_zyx` / :func:`spacing_zyx` give array order.
"""

from __future__ import annotations

from bonemet.errors import InputError
from bonemet.presets import load_preset, merge

KNOWN_ARCHITECTURES = ("monai.UNet",)
KNOWN_LOSSES = ("dice", "dice_ce")
KNOWN_OPTIMIZERS = ("sgd", "adam")


def make_config(preset: str = "small", overrides: dict | None = None) -> dict:
    """Preset ``unet-<preset>`` (or a JSON file) deep-merged with ``overrides``, then validated."""
    cfg = merge(load_preset("unet", preset), overrides)
    cfg.setdefault("preset", str(preset))
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> dict:
    arch = cfg.get("architecture") or {}
    if arch.get("name") not in KNOWN_ARCHITECTURES:
        raise InputError(f"unknown architecture {arch.get('name')!r} (known: {', '.join(KNOWN_ARCHITECTURES)})")
    ch, st = arch.get("channels") or [], arch.get("strides") or []
    if len(ch) < 2 or len(st) != len(ch) - 1:
        raise InputError(f"architecture needs >= 2 channel levels and len(strides) == len(channels) - 1, "
                         f"got channels {ch}, strides {st}")
    if len(cfg.get("spacing", [])) != 3 or min(cfg["spacing"]) <= 0:
        raise InputError(f"spacing must be 3 positive numbers (x, y, z), got {cfg.get('spacing')}")
    if len(cfg.get("patch_size", [])) != 3:
        raise InputError(f"patch_size must be 3 integers (x, y, z), got {cfg.get('patch_size')}")
    factor = 1
    for s in st:
        factor *= int(s)
    bad = [p for p in cfg["patch_size"] if int(p) % factor]
    if bad:
        raise InputError(f"patch_size {cfg['patch_size']} must be divisible by the product of strides ({factor})")
    if cfg.get("loss") not in KNOWN_LOSSES:
        raise InputError(f"unknown loss {cfg.get('loss')!r} (known: {', '.join(KNOWN_LOSSES)})")
    if (cfg.get("optimizer") or {}).get("name") not in KNOWN_OPTIMIZERS:
        raise InputError(f"unknown optimizer {cfg.get('optimizer')!r} (known: {', '.join(KNOWN_OPTIMIZERS)})")
    return cfg


def patch_zyx(cfg: dict) -> tuple[int, int, int]:
    return tuple(int(v) for v in cfg["patch_size"][::-1])  # type: ignore[return-value]


def spacing_zyx(cfg: dict) -> tuple[float, float, float]:
    return tuple(float(v) for v in cfg["spacing"][::-1])  # type: ignore[return-value]


def in_channels(cfg: dict) -> int:
    return 2 if cfg.get("femur_channel") else 1


def out_channels(cfg: dict) -> int:
    """Sigmoid outputs: channel 0 lesion, channel 1 femur (auxiliary target) when ``aux_femur``."""
    return 2 if cfg.get("aux_femur") else 1
