"""Running engine jobs in the background, Qt-free: one job at a time, progress, log, cancel, result loading.

:class:`JobRunner` is the part of every BoneMet Logic that starts ``<python> -m bonemet ...`` through an injected
process runner (``QtProcess`` in the application, ``BlockingProcess`` in tests/scripts), forwards progress and log
lines, and, when the process succeeds, calls the job's ``onSuccess`` to load results into MRML. Failures (non-zero
exit, a crash, an exception while loading) are reported with the engine's error line and the full log.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .Engine import describe, process_environment, python_executable
from .Process import BlockingProcess, ProgressParser, Signal


@dataclass
class JobResult:
    """What a finished job hands to the GUI."""

    name: str
    ok: bool
    cancelled: bool = False
    exitCode: int | None = None
    message: str = ""
    log: str = ""
    outputs: dict = field(default_factory=dict)


class JobRunner:
    """Signals (callables with ``connect``):

    * ``progress(stage: str, fraction: float | None, text: str)``
    * ``logMessage(line: str)``
    * ``jobFinished(result: JobResult)`` — always emitted once per started job (success, failure or cancel).
    """

    def __init__(self, process=None):
        self.process = process if process is not None else BlockingProcess()
        self.progress = Signal()
        self.logMessage = Signal()
        self.jobFinished = Signal()
        self.lastResult: JobResult | None = None
        self._parser: ProgressParser | None = None
        self._cancelled = False
        self._jobName = ""
        self._workDir: Path | None = None
        self.keepWorkDirs = False

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    def isRunning(self) -> bool:
        return self.process.isRunning()

    def newWorkDir(self, prefix: str = "bonemet-") -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix))

    def startJob(self, name: str, args: list[str], onSuccess: Callable[[], dict | None],
                 workDir: Path | None = None) -> None:
        """Start ``<python> <args>``; on exit code 0 call ``onSuccess()`` (returns outputs for the result)."""
        if self.isRunning():
            raise RuntimeError(f"a job is already running ({self._jobName}); cancel it first")
        self._jobName = name
        self._cancelled = False
        self._workDir = workDir
        self._parser = ProgressParser(onProgress=self._onProgress, onLog=self._log)
        program = python_executable()
        env = process_environment()
        self._log(f"$ {describe(program, args)}")
        self.progress(name, 0.0, f"{name}: starting")

        def finished(code: int) -> None:
            self._finish(code, onSuccess)

        self.process.start(program, args, env, self._parser.feed, finished)

    def runInProcess(self, name: str, function: Callable[[], dict | None]) -> JobResult:
        """Run a quick step in this process with the same reporting (no background process)."""
        self._jobName = name
        try:
            outputs = function() or {}
            result = JobResult(name, True, outputs=outputs, message=f"{name}: done")
        except Exception as exc:  # noqa: BLE001 - reported to the user
            logging.exception("%s failed", name)
            result = JobResult(name, False, message=f"{name} failed: {exc}")
        self._report(result)
        return result

    def cancel(self) -> None:
        if self.isRunning():
            self._cancelled = True
            self._log(f"{self._jobName}: cancelling")
            self.process.stop()

    # ---- internals -----------------------------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        logging.info("[BoneMet] %s", line)
        self.logMessage(line)

    def _onProgress(self, stage, done, total, fraction) -> None:
        text = f"{stage}: {done}/{total}" if total else f"{stage}: {done}"
        self.progress(stage, fraction, text)

    def _finish(self, code: int, onSuccess) -> None:
        parser = self._parser
        if parser is not None:
            parser.flush()
        log = parser.log if parser is not None else ""
        if self._cancelled:
            result = JobResult(self._jobName, False, cancelled=True, exitCode=code,
                               message=f"{self._jobName}: cancelled", log=log)
        elif code != 0:
            msg = parser.errorMessage(code) if parser is not None else f"exit code {code}"
            result = JobResult(self._jobName, False, exitCode=code, message=msg, log=log)
        else:
            try:
                outputs = onSuccess() or {}
                result = JobResult(self._jobName, True, exitCode=0, message=f"{self._jobName}: done", log=log,
                                   outputs=outputs)
            except Exception as exc:  # noqa: BLE001 - reported to the user with the log
                logging.exception("loading the results of %s failed", self._jobName)
                result = JobResult(self._jobName, False, exitCode=0,
                                   message=f"{self._jobName}: loading the results failed: {exc}", log=log)
        if self._workDir is not None:
            if result.ok and not self.keepWorkDirs:
                shutil.rmtree(self._workDir, ignore_errors=True)
            elif not result.ok:
                self._log(f"work files kept in {self._workDir}")
        self._report(result)

    def _report(self, result: JobResult) -> None:
        self.lastResult = result
        self.progress(result.name, 1.0 if result.ok else None, result.message)
        self._log(result.message)
        self.jobFinished(result)
