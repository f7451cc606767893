"""Exceptions of the engine. The command line turns them into a one-line message and a non-zero exit."""

from __future__ import annotations

import os


class BoneMetError(Exception):
    """Any expected failure of the engine (bad input, incompatible model, nothing to do...)."""

    exit_code = 1


class InputError(BoneMetError):
    """Bad user input. ``path`` (optional) names the offending file; the message names the problem."""

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ModelError(BoneMetError):
    """A model file or package that cannot be used (incompatible, tampered, missing)."""

    exit_code = 3

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
