"""Progress reporting and logging.

Every long loop goes through :func:`progress`. Modes (environment variable ``BONEMET_PROGRESS``):

* ``bar`` (default): a tqdm bar on stderr;
* ``json``: one line per update on stderr, ``BONEMET_PROGRESS {"stage": ..., "done": n, "total": N}``;
  the Slicer modules parse these lines from their background process to drive a progress bar;
* ``off``: nothing.

Logs go to stderr (``logging``); results always go to files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
PREFIX = "BONEMET_PROGRESS "
log = logging.getLogger("bonemet")


def mode() -> str:
    return os.environ.get("BONEMET_PROGRESS", "bar").lower()


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    root = logging.getLogger("bonemet")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def emit(stage: str, done: float, total: float | None, **extra) -> None:
    """Emit one machine-readable progress line (only in ``json`` mode)."""
    if mode() == "json":
        rec = {"stage": stage, "done": done, "total": total, **extra}
        sys.stderr.write(PREFIX + json.dumps(rec) + "\n")
        sys.stderr.flush()


def parse_line(line: str) -> dict | None:
    """Parse a line written by :func:`emit`; ``None`` for any other line."""
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate with a progress display (see module docstring)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    m = mode()
    if m == "bar":
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5, leave=False)
        return
    if m == "json":
        emit(desc, 0, total)
        last = 0.0
        n = 0
        for item in iterable:
            yield item
            n += 1
            now = time.monotonic()
            if now - last > 0.2 or (total is not None and n == total):
                emit(desc, n, total)
                last = now
        return
    yield from iterable
