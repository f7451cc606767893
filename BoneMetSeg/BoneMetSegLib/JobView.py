"""Binds a :class:`~BoneMetSegLib.Jobs.JobRunner` to the "Job" section of a panel (Slicer application only):
progress bar, status line, log view, Cancel button, and an error dialog with the log when a job fails."""

from __future__ import annotations

import qt
import slicer


class JobView:
    def __init__(self, logic, ui, busyWidgets=(), onFinished=None):
        self.logic = logic
        self.ui = ui
        self.busyWidgets = list(busyWidgets)
        self.onFinished = onFinished
        self.showDialogs = True
        logic.progress.connect(self.onProgress)
        logic.logMessage.connect(self.onLog)
        logic.jobFinished.connect(self.onJobFinished)
        ui.cancelButton.clicked.connect(self.onCancel)
        ui.cancelButton.enabled = False

    def run(self, start, *args, **kwargs):
        """Call ``start(*args)`` (a Logic ``start...`` method) with the panel in its busy state; input errors are
        shown in a dialog."""
        self.ui.logTextEdit.clear()
        self.setBusy(True)
        try:
            with slicer.util.tryWithErrorDisplay("BoneMet could not start the job.", waitCursor=True):
                start(*args, **kwargs)
                return True
        finally:
            if not self.logic.isRunning():
                self.setBusy(False)
        return False

    def setBusy(self, busy: bool) -> None:
        for w in self.busyWidgets:
            w.enabled = not busy
        self.ui.cancelButton.enabled = busy
        if busy:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = 0

    def onProgress(self, stage, fraction, text):
        if fraction is None:
            self.ui.progressBar.setRange(0, 0)  # busy indicator when the total is unknown
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = text

    def onLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def onCancel(self):
        self.logic.cancel()

    def onJobFinished(self, result):
        self.setBusy(False)
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 100 if result.ok else 0
        self.ui.statusLabel.text = result.message
        if not result.ok and not result.cancelled and self.showDialogs:
            slicer.util.errorDisplay(result.message, windowTitle="BoneMet", detailedText=result.log)
        if self.onFinished is not None:
            self.onFinished(result)
        qt.QApplication.processEvents()
