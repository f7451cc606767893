"""Dataset folders: the one exchange format between every ``bonemet`` command.

A dataset folder holds volumes and ``manifest.json``: a JSON **list of cases**, each an object with at least

* ``id``      unique case name (also the file stem of its volumes),
* ``ct``      CT path relative to the folder,
* ``femur``   femur label map path (0 background, 1 right femur, 2 left femur) or ``null``,
* ``lesion``  binary lesion mask path, or ``null`` for a healthy case,

plus any provenance fields the producing command adds (``centre``, ``spacing``, ``lesions``, ``source``,
synthesis/refinement parameters...). Dataset-level provenance (command, version, seed, creation time) lives
beside it in ``dataset.json``. :func:`load_manifest` also accepts ``{"cases": [...]}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from bonemet import __version__
from bonemet.atomic import write_json
from bonemet.errors import InputError

MANIFEST = "manifest.json"
DATASET_INFO = "dataset.json"
REQUIRED_FIELDS = ("id", "ct", "femur", "lesion")


@dataclass
class Case:
    """One case of a dataset folder, with paths resolved against the folder."""

    record: dict
    root: Path

    @property
    def id(self) -> str:
        return str(self.record["id"])

    def path(self, key: str) -> Path | None:
        rel = self.record.get(key)
        return None if rel in (None, "") else self.root / rel

    @property
    def ct(self) -> Path:
        return self.path("ct")  # type: ignore[return-value]

    @property
    def femur(self) -> Path | None:
        return self.path("femur")

    @property
    def lesion(self) -> Path | None:
        return self.path("lesion")

    @property
    def healthy(self) -> bool:
        return self.record.get("lesion") in (None, "")

    def get(self, key, default=None):
        return self.record.get(key, default)


def manifest_path(root: str | os.PathLike) -> Path:
    return Path(root) / MANIFEST


def load_manifest(root: str | os.PathLike, check_files: bool = True) -> list[Case]:
    """Load and validate ``root/manifest.json``: required fields, unique ids, files present."""
    root = Path(root)
    mpath = manifest_path(root)
    if not root.exists():
        raise InputError("dataset folder not found", root)
    if not mpath.exists():
        raise InputError(f"not a dataset folder: no {MANIFEST} (make one with 'bonemet phantom' or "
                         "'bonemet synth')", root)
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON: {exc}", mpath) from exc
    if isinstance(data, dict) and "cases" in data:
        data = data["cases"]
    if not isinstance(data, list):
        raise InputError("manifest must be a JSON list of cases", mpath)
    cases, seen = [], set()
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InputError(f"case #{i} is not an object", mpath)
        missing = [k for k in REQUIRED_FIELDS if k not in rec]
        if missing:
            raise InputError(f"case #{i} ({rec.get('id', '?')}) lacks field(s) {', '.join(missing)}", mpath)
        if rec["id"] in seen:
            raise InputError(f"duplicate case id {rec['id']!r}", mpath)
        seen.add(rec["id"])
        case = Case(rec, root)
        if check_files:
            for key in ("ct", "femur", "lesion"):
                p = case.path(key)
                if p is not None and not p.exists():
                    raise InputError(f"case {case.id}: {key} file {rec[key]} is missing", mpath)
        cases.append(case)
    return cases


def write_manifest(root: str | os.PathLike, records: list[dict], info: dict | None = None) -> Path:
    """Write ``manifest.json`` (atomically) and, with ``info``, ``dataset.json`` provenance."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for rec in records:
        missing = [k for k in REQUIRED_FIELDS if k not in rec]
        if missing:
            raise ValueError(f"case {rec.get('id')} lacks {missing}")
    if info is not None:
        write_json(root / DATASET_INFO, {**provenance(), **info})
    return write_json(root / MANIFEST, records)


def provenance(**extra) -> dict:
    """What made a file: tool version, command line, time, platform."""
    return {
        "tool": "bonemet",
        "version": __version__,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
        **extra,
    }


def relpath(path: str | os.PathLike, root: str | os.PathLike) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")
