"""Torch device selection for ``--device auto|cpu|cuda``."""

from __future__ import annotations

from bonemet.errors import InputError


def resolve_device(name: str = "auto"):
    """Return a ``torch.device``: ``auto`` picks CUDA when available (the local rank's GPU under torchrun)."""
    import os

    import torch

    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was requested but no CUDA GPU is available (use --device cpu)")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {name!r} (choose auto, cpu or cuda)")
