"""Atomic file output: write to a temporary name in the same folder, then rename.

A job killed at any point leaves either the complete old file, the complete new file, or a
hidden ``.tmp`` file that the next run ignores and overwrites — never a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator


def temp_path_for(path: str | os.PathLike) -> Path:
    """A hidden temporary sibling of ``path`` that keeps its extension(s) (writers infer format from it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{_ext(path)}")


def _ext(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd"):
        if name.endswith(ext):
            return ext
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
