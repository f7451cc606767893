"""Reproducible random streams.

Every random decision is drawn from a generator keyed by (seed, names...), so a case's result does not
depend on which worker made it or in what order: ``rng(seed, "synth", case_id)`` is the same everywhere.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _key(part) -> int:
    if isinstance(part, (int, np.integer)) and part >= 0:
        return int(part)
    digest = hashlib.sha256(str(part).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def seed_sequence(seed: int, *keys) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(_key(k) for k in keys))


def rng(seed: int, *keys) -> np.random.Generator:
    """A numpy Generator determined only by ``seed`` and ``keys`` (strings or non-negative ints)."""
    return np.random.default_rng(seed_sequence(seed, *keys))


def derive_seed(seed: int, *keys) -> int:
    """A 31-bit integer seed (for torch / MONAI) derived like :func:`rng`."""
    return int(seed_sequence(seed, *keys).generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)
