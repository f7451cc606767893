"""The machine description every benchmark table carries."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """'Linux x86_64, 2 cores (CPU model), Python 3.11.7' (+ the GPU when torch sees one)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}){gpu}, "
            f"Python {platform.python_version()}")
