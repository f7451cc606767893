"""Background engine processes: progress parsing, a tiny signal class and two process runners.

* :class:`ProgressParser` (Qt-free) splits the process output into lines, turns ``BONEMET_PROGRESS {json}``
  lines into progress events (parsed by ``bonemet.progress.parse_line``) and keeps the rest as the log.
* :class:`BlockingProcess` (Qt-free) runs the command with ``subprocess`` and returns when it ends: for tests,
  scripts and headless use.
* :class:`QtProcess` runs it with ``qt.QProcess`` so the GUI never freezes (Slicer application only; ``qt`` is
  imported when it is created).

Both runners implement the same small protocol, so a Logic takes either (dependency injection)::

    start(program, args, env, onOutput(text), onFinished(exitCode))
    stop()              # cancel: terminate, then kill
    isRunning() -> bool
    waitForFinished(timeout_s=None) -> bool
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable, Protocol

from .Engine import ensure_engine_importable


class Signal:
    """Minimal callback list (Qt-free stand-in for a Qt signal)."""

    def __init__(self):
        self._slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable | None = None) -> None:
        self._slots = [] if slot is None else [s for s in self._slots if s != slot]

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)

    __call__ = emit


class ProcessProtocol(Protocol):
    def start(self, program: str, args: list[str], env: dict, onOutput: Callable[[str], None],
              onFinished: Callable[[int], None]) -> None: ...

    def stop(self) -> None: ...

    def isRunning(self) -> bool: ...

    def waitForFinished(self, timeout_s: float | None = None) -> bool: ...


class ProgressParser:
    """Feed raw output chunks; get progress events and log lines back through callbacks.

    ``onProgress(stage, done, total, fraction)`` (``fraction`` in [0, 1] or ``None`` when the total is unknown),
    ``onLog(line)`` for every other line. :attr:`lines` keeps the whole log (for the error dialog).
    """

    def __init__(self, onProgress: Callable | None = None, onLog: Callable | None = None):
        ensure_engine_importable()
        from bonemet.progress import parse_line

        self._parse = parse_line
        self._buffer = ""
        self.onProgress = onProgress
        self.onLog = onLog
        self.lines: list[str] = []
        self.last: dict | None = None

    def feed(self, text: str) -> None:
        self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
        *complete, self._buffer = self._buffer.split("\n")
        for line in complete:
            self._line(line)

    def flush(self) -> None:
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._line(line)

    def _line(self, line: str) -> None:
        rec = self._parse(line)
        if rec is not None:
            self.last = rec
            done, total = rec.get("done"), rec.get("total")
            fraction = None
            if total:
                try:
                    fraction = max(0.0, min(1.0, float(done) / float(total)))
                except (TypeError, ValueError):
                    fraction = None
            if self.onProgress:
                self.onProgress(str(rec.get("stage", "")), done, total, fraction)
            return
        if not line.strip():
            return
        self.lines.append(line)
        if self.onLog:
            self.onLog(line)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def errorMessage(self, exitCode: int) -> str:
        """The engine's one-line error (``bonemet CMD: error: ...``) or the last log lines."""
        for line in reversed(self.lines):
            if ": error:" in line:
                return line.strip()
        for line in reversed(self.lines):
            head = line.split(":", 1)[0].strip()
            if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
                return line.strip()
        tail = self.lines[-3:]
        return f"the engine stopped with exit code {exitCode}" + (": " + " / ".join(tail) if tail else "")


class BlockingProcess:
    """Runs the command to completion inside :meth:`start` (Qt-free; output streamed line by line)."""

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self.exitCode: int | None = None

    def start(self, program, args, env, onOutput, onFinished) -> None:
        self._proc = subprocess.Popen([program, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, bufsize=1)
        t0 = time.monotonic()
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            onOutput(line)
            if self.timeout_s is not None and time.monotonic() - t0 > self.timeout_s:
                self.stop()
                break
        self.exitCode = self._proc.wait()
        self._proc = None
        onFinished(self.exitCode)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def isRunning(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def waitForFinished(self, timeout_s=None) -> bool:
        return not self.isRunning()


class QtProcess:
    """``qt.QProcess`` runner: asynchronous, output and exit delivered through the Qt event loop."""

    def __init__(self):
        import qt

        self._qt = qt
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._onReadyRead)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)
        self._onOutput = None
        self._onFinishedCb = None
        self._finishedReported = False

    def start(self, program, args, env, onOutput, onFinished) -> None:
        qt = self._qt
        if self.isRunning():
            raise RuntimeError("a job is already running")
        self._onOutput, self._onFinishedCb = onOutput, onFinished
        self._finishedReported = False
        penv = qt.QProcessEnvironment()
        for k, v in env.items():
            penv.insert(k, v)
        self.process.setProcessEnvironment(penv)
        self.process.start(program, list(args))

    def _onReadyRead(self) -> None:
        data = self.process.readAllStandardOutput()
        text = bytes(data.data()).decode("utf-8", errors="replace")
        if text and self._onOutput:
            self._onOutput(text)

    def _onFinished(self, exitCode, exitStatus=None) -> None:
        self._onReadyRead()
        if self._finishedReported:
            return
        self._finishedReported = True
        crashed = exitStatus is not None and int(exitStatus) == int(self._qt.QProcess.CrashExit)
        if self._onFinishedCb:
            self._onFinishedCb(int(exitCode) if not crashed else -1)

    def _onError(self, error) -> None:
        if int(error) == int(self._qt.QProcess.FailedToStart) and not self._finishedReported:
            self._finishedReported = True
            if self._onOutput:
                self._onOutput(f"cannot start the engine process: {self.process.errorString()}\n")
            if self._onFinishedCb:
                self._onFinishedCb(-2)

    def stop(self) -> None:
        if self.isRunning():
            self.process.terminate()
            if not self.process.waitForFinished(3000):
                self.process.kill()
                self.process.waitForFinished(3000)

    def isRunning(self) -> bool:
        return self.process.state() != self._qt.QProcess.NotRunning

    def waitForFinished(self, timeout_s=None) -> bool:
        return bool(self.process.waitForFinished(-1 if timeout_s is None else int(timeout_s * 1000)))
