"""Shared pytest setup: deterministic, single-threaded-friendly, headless."""

import os

os.environ.setdefault("BONEMET_PROGRESS", "off")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

# Subprocesses started by tests read and write UTF-8 text whatever the locale.
os.environ.setdefault("PYTHONUTF8", "1")
