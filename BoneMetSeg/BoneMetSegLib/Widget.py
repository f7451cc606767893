"""BoneMetSeg panel (Slicer application only). The work is done by the Logic; this file wires the ``.ui``."""

from __future__ import annotations

from pathlib import Path

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from .Install import installDependencies, missingRequirements, unsupportedPython
from .JobView import JobView
from .Parameters import BoneMetSegParameterNode, pathOrNone

MODULE_NAME = "BoneMetSeg"


def modelsDir() -> Path:
    """Where imported model packages live (per user, next to Slicer's settings)."""
    return Path(slicer.app.slicerUserSettingsFilePath).parent / "BoneMet" / "models"


class BoneMetSegPanel(VTKObservationMixin):
    """The panel: ``widget`` (to add to the module's layout) wired to ``logic``."""

    def __init__(self, logic, resourcePath, parent=None):
        VTKObservationMixin.__init__(self)
        self.widget = qt.QWidget(parent)
        self.logic = logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None

        layout = qt.QVBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        uiWidget = slicer.util.loadUI(resourcePath("UI/BoneMetSeg.ui"))
        layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.job = JobView(logic, self.ui, busyWidgets=[
            self.ui.femurButton, self.ui.lesionsButton, self.ui.variabilityButton, self.ui.installButton,
            self.ui.inputVolumeSelector, self.ui.segmentationSelector], onFinished=self.onJobFinished)

        self.ui.installButton.clicked.connect(self.onInstall)
        self.ui.femurButton.clicked.connect(self.onFemur)
        self.ui.lesionsButton.clicked.connect(self.onLesions)
        self.ui.importModelButton.clicked.connect(self.onImportModel)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChosen)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self.updateModelInfo)
        self.ui.referenceSegmentationSelector.currentNodeChanged.connect(self.updateReferenceSegments)
        self.ui.refreshOthersButton.clicked.connect(self.updateOthersList)
        self.ui.compareButton.clicked.connect(self.onCompare)
        self.ui.exportCsvButton.clicked.connect(self.onExportCsv)
        self.ui.showPlotButton.clicked.connect(self.onShowPlot)
        self.ui.variabilityButton.clicked.connect(self.onVariability)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.updateButtons)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateModelList()
        self.updateDependencies()
        self.updateOthersList()
        self.updateButtons()

    # ---- parameter node ----------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        node = self.logic.getParameterNode() if hasattr(self.logic, "getParameterNode") else None
        wrapped = BoneMetSegParameterNode(node) if node is not None else None
        if wrapped is not None and not wrapped.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                wrapped.inputVolume = first
        self.setParameterNode(wrapped)

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def onSceneStartClose(self, caller, event):
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self.initializeParameterNode()

    def cleanup(self):
        self.logic.cancel()
        self.removeObservers()

    # ---- state -------------------------------------------------------------------------------------------------
    def updateButtons(self, *_):
        p = self._parameterNode
        hasCt = bool(p and p.inputVolume)
        busy = self.logic.isRunning()
        self.ui.femurButton.enabled = hasCt and not busy
        self.ui.lesionsButton.enabled = hasCt and not busy and pathOrNone(p.modelPath if p else None) is not None
        self.ui.variabilityButton.enabled = not busy and bool(p and pathOrNone(p.variabilityCsv))
        self.ui.compareButton.enabled = bool(p and p.referenceSegmentation)

    def updateDependencies(self):
        reason = unsupportedPython()
        if reason:
            self.ui.dependenciesLabel.text = reason
            self.ui.installButton.enabled = False
            self.ui.dependenciesCollapsibleButton.collapsed = False
            return
        missing = missingRequirements(deep=True)
        self.ui.dependenciesLabel.text = ("All Python packages are installed." if not missing else
                                          "Missing (installed on first use): " + ", ".join(missing))
        self.ui.installButton.enabled = bool(missing)
        if missing:
            self.ui.dependenciesCollapsibleButton.collapsed = False

    def ensureDependencies(self, deep: bool) -> bool:
        if not unsupportedPython() and not missingRequirements(deep):
            return True
        with slicer.util.tryWithErrorDisplay("Installing the BoneMet dependencies failed.", waitCursor=True):
            ok = installDependencies(deep=deep, askConfirmation=True, log=self.job.onLog)
            self.updateDependencies()
            return ok
        return False

    def onInstall(self):
        self.ensureDependencies(deep=True)

    # ---- femur / lesions ---------------------------------------------------------------------------------------
    def onFemur(self):
        if not self.ensureDependencies(deep=False):
            return
        p = self._parameterNode
        self.job.run(self._startFemur, p.inputVolume, p.segmentation)
        self.updateButtons()

    def _startFemur(self, ct, seg):
        seg = self.logic.startFemur(ct, seg)
        self._parameterNode.segmentation = seg

    def onLesions(self):
        if not self.ensureDependencies(deep=True):
            return
        p = self._parameterNode
        self.job.run(self._startLesions, p.inputVolume, p.segmentation, pathOrNone(p.modelPath), p.device, p.tta)
        self.updateButtons()

    def _startLesions(self, ct, seg, model, device, tta):
        seg = self.logic.startLesions(ct, seg, model, device, tta)
        self._parameterNode.segmentation = seg

    def onJobFinished(self, result):
        self.updateButtons()
        if not result.ok:
            return
        seg = result.outputs.get("segmentation")
        if seg is not None:
            ct = self._parameterNode.inputVolume if self._parameterNode else None
            if ct is not None:
                slicer.util.setSliceViewerLayers(background=ct, fit=False)
            seg.CreateDefaultDisplayNodes()
            self.updateOthersList()
        report = result.outputs.get("report")
        if report is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(report)))

    # ---- model packages ----------------------------------------------------------------------------------------
    def updateModelList(self):
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.ui.modelComboBox.addItem("(choose a path below)", "")
        for pkg in self.logic.listModelPackages(modelsDir()):
            self.ui.modelComboBox.addItem(pkg.name, str(pkg))
        self.ui.modelComboBox.blockSignals(False)

    def onModelChosen(self, index):
        path = self.ui.modelComboBox.itemData(index)
        if path:
            self.ui.modelPathLineEdit.currentPath = path

    def onImportModel(self):
        source = qt.QFileDialog.getExistingDirectory(self.widget, "Model package folder")
        if not source:
            return
        with slicer.util.tryWithErrorDisplay("This is not a usable BoneMet model package.", waitCursor=True):
            target = self.logic.importModelPackage(source, modelsDir())
            self.updateModelList()
            self.ui.modelPathLineEdit.currentPath = str(target)

    def updateModelInfo(self, *_):
        path = pathOrNone(self.ui.modelPathLineEdit.currentPath)
        if path is None:
            self.ui.modelInfoLabel.text = ""
            return
        try:
            info = self.logic.modelInfo(path)
            metrics = info.get("metrics")
            self.ui.modelInfoLabel.text = (f"{info['folds']} model(s), spacing {info['spacing']} mm, patch "
                                           f"{info['patch_size']}" + (f", validation {metrics}" if metrics else ""))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.ui.modelInfoLabel.text = f"Not usable: {exc}"
        self.updateButtons()

    # ---- compare -----------------------------------------------------------------------------------------------
    def updateReferenceSegments(self, *_):
        from bonemet import mrml

        self.ui.referenceSegmentComboBox.clear()
        node = self.ui.referenceSegmentationSelector.currentNode()
        if node is not None:
            for sid, name in zip(mrml.segment_ids(node), mrml.segment_names(node)):
                self.ui.referenceSegmentComboBox.addItem(name, sid)
        self.updateButtons()

    def updateOthersList(self, *_):
        from bonemet import mrml

        checked = {self.ui.othersListWidget.item(i).data(qt.Qt.UserRole)
                   for i in range(self.ui.othersListWidget.count)
                   if self.ui.othersListWidget.item(i).checkState() == qt.Qt.Checked}
        self.ui.othersListWidget.clear()
        for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            for sid, name in zip(mrml.segment_ids(node), mrml.segment_names(node)):
                key = f"{node.GetID()}|{sid}"
                item = qt.QListWidgetItem(f"{node.GetName()} / {name}")
                item.setData(qt.Qt.UserRole, key)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked if key in checked else qt.Qt.Unchecked)
                self.ui.othersListWidget.addItem(item)

    def checkedOthers(self):
        out = []
        for i in range(self.ui.othersListWidget.count):
            item = self.ui.othersListWidget.item(i)
            if item.checkState() == qt.Qt.Checked:
                nodeId, sid = item.data(qt.Qt.UserRole).split("|", 1)
                node = slicer.mrmlScene.GetNodeByID(nodeId)
                if node is not None:
                    out.append((node, sid))
        return out

    def onCompare(self):
        p = self._parameterNode
        sid = self.ui.referenceSegmentComboBox.currentData
        with slicer.util.tryWithErrorDisplay("Comparison failed.", waitCursor=True):
            table, chart, rows = self.logic.compare((p.referenceSegmentation, sid), self.checkedOthers(),
                                                    referenceVolumeNode=p.inputVolume, tableNode=p.compareTable,
                                                    minLesionMm3=p.minLesionMm3, chartNode=p.compareChart)
            p.compareTable, p.compareChart = table, chart
            self.ui.compareTableView.setMRMLTableNode(table)
            self.ui.exportCsvButton.enabled = True
            self.ui.showPlotButton.enabled = True

    def onExportCsv(self):
        table = self._parameterNode.compareTable
        path = qt.QFileDialog.getSaveFileName(self.widget, "Export comparison", "bonemet-comparison.csv", "CSV (*.csv)")
        if path and table is not None:
            with slicer.util.tryWithErrorDisplay("Export failed."):
                self.logic.exportTableCsv(table, path)

    def onShowPlot(self):
        chart = self._parameterNode.compareChart
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    # ---- variability -------------------------------------------------------------------------------------------
    def onVariability(self):
        if not self.ensureDependencies(deep=False):
            return
        p = self._parameterNode
        out = pathOrNone(p.variabilityOutput) or pathOrNone(p.variabilityCsv).parent / "bonemet-variability"
        self.job.run(self.logic.startVariability, pathOrNone(p.variabilityCsv), out)
        self.updateButtons()
