"""Named parameter presets (JSON files in ``bonemet/presets/``, also reachable as ``Resources/presets``).

File names are ``<kind>-<name>.json`` (e.g. ``ddpm-paper.json``, ``unet-small.json``). ``paper`` presets hold
the source paper's sizes; ``small`` presets are CPU sizes for demos and tests. Any value can be overridden.
"""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from pathlib import Path

from bonemet.errors import InputError

PRESET_DIR = Path(str(resources.files("bonemet") / "presets"))


def available(kind: str) -> list[str]:
    return sorted(p.name[len(kind) + 1:-5] for p in PRESET_DIR.glob(f"{kind}-*.json"))


def load_preset(kind: str, name_or_path: str | os.PathLike) -> dict:
    """Load preset ``name`` of ``kind`` (``small``, ``paper``...) or a JSON file path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        path = p
    else:
        path = PRESET_DIR / f"{kind}-{name_or_path}.json"
        if not path.exists():
            raise InputError(f"unknown {kind} preset {str(name_or_path)!r} (available: "
                             f"{', '.join(available(kind)) or 'none'}; or give a JSON file)")
    if not path.exists():
        raise InputError("preset file not found", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid preset JSON: {exc}", path) from exc
    data.pop("_comment", None)
    return data


def merge(base: dict, overrides: dict | None) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base``; ``None`` values in overrides are ignored."""
    out = copy.deepcopy(base)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
