"""BoneMetSynth panel (Slicer application only). The work is done by the Logic; this file wires the ``.ui``."""

from __future__ import annotations

import qt
import slicer
import vtk
from BoneMetSegLib.Install import installDependencies, missingRequirements, unsupportedPython
from BoneMetSegLib.JobView import JobView
from BoneMetSegLib.Parameters import BoneMetSynthParameterNode, pathOrNone
from slicer.util import VTKObservationMixin

from .Logic import PlacementParameters

PREVIEW_DELAY_MS = 150


class BoneMetSynthPanel(VTKObservationMixin):
    """The panel: ``widget`` (to add to the module's layout) wired to ``logic``."""

    def __init__(self, logic, resourcePath, parent=None):
        VTKObservationMixin.__init__(self)
        self.widget = qt.QWidget(parent)
        self.logic = logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedPoint = None

        layout = qt.QVBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        uiWidget = slicer.util.loadUI(resourcePath("UI/BoneMetSynth.ui"))
        layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.job = JobView(logic, self.ui, busyWidgets=[
            self.ui.saveLibraryButton, self.ui.refineButton, self.ui.batchRunButton], onFinished=self.onJobFinished)

        # live preview: coalesce slider drags / point moves into one update
        self.previewTimer = qt.QTimer()
        self.previewTimer.setSingleShot(True)
        self.previewTimer.setInterval(PREVIEW_DELAY_MS)
        self.previewTimer.timeout.connect(self.onPreview)

        self.ui.loadLibraryButton.clicked.connect(self.onLoadLibrary)
        self.ui.extractButton.clicked.connect(self.onExtract)
        self.ui.saveLibraryButton.clicked.connect(self.onSaveLibrary)
        self.ui.placePointButton.clicked.connect(self.onPlacePoint)
        self.ui.previewButton.clicked.connect(self.onPreview)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.refineButton.clicked.connect(self.onRefine)
        self.ui.batchRunButton.clicked.connect(self.onBatch)
        self.ui.batchJobComboBox.currentIndexChanged.connect(self.updateBatchLabels)
        for w in (self.ui.scaleSlider, self.ui.rotationXSlider, self.ui.rotationYSlider, self.ui.rotationZSlider,
                  self.ui.smoothingSlider, self.ui.noiseSlider):
            w.valueChanged.connect(self.schedulePreview)
        self.ui.cropSeedSpinBox.valueChanged.connect(self.schedulePreview)
        self.ui.wholeLesionCheckBox.toggled.connect(self.schedulePreview)
        self.ui.lesionComboBox.currentIndexChanged.connect(self.schedulePreview)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.onInputsChanged)
        self.ui.femurSegmentationSelector.currentNodeChanged.connect(self.onInputsChanged)
        self.ui.pointSelector.currentNodeChanged.connect(self.observePoint)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateBatchLabels()
        self.updateLibraryView()

    # ---- parameter node ----------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        node = self.logic.getParameterNode() if hasattr(self.logic, "getParameterNode") else None
        self.setParameterNode(BoneMetSynthParameterNode(node) if node is not None else None)

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.observePoint()
        self.updateButtons()

    def onSceneStartClose(self, caller, event):
        self.logic.cancel()
        self.logic.clearPreview()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self.initializeParameterNode()

    def cleanup(self):
        self.previewTimer.stop()
        self.logic.cancel()
        self.removeObservers()

    def updateButtons(self, *_):
        p = self._parameterNode
        ready = bool(p and p.inputVolume and p.femurSegmentation and p.point and self.logic.library is not None)
        self.ui.previewButton.enabled = ready
        self.ui.applyButton.enabled = ready
        self.ui.extractButton.enabled = bool(p and p.inputVolume and p.femurSegmentation)
        self.ui.saveLibraryButton.enabled = bool(p and p.inputVolume and p.femurSegmentation) \
            and not self.logic.isRunning()
        self.ui.refineButton.enabled = bool(p and p.refineVolume and pathOrNone(p.ddpmPath)) \
            and not self.logic.isRunning()

    def onInputsChanged(self, *_):
        self.logic.invalidateCache()
        self.logic.clearPreview()
        self.updateButtons()

    # ---- library -----------------------------------------------------------------------------------------------
    def updateLibraryView(self):
        self.ui.lesionComboBox.blockSignals(True)
        self.ui.lesionComboBox.clear()
        items = self.logic.itemSummaries()
        for it in items:
            self.ui.lesionComboBox.addItem(f"{it['id']}  ({it['volume_mm3']:.0f} mm³, from {it['source']})", it["id"])
        self.ui.lesionComboBox.blockSignals(False)
        self.ui.libraryInfoLabel.text = f"{len(items)} lesion(s) in the library" if items else "No library loaded"
        self.updateButtons()

    def onLoadLibrary(self):
        folder = pathOrNone(self._parameterNode.libraryPath)
        if folder is None:
            slicer.util.errorDisplay("Choose a library folder first.")
            return
        with slicer.util.tryWithErrorDisplay("Cannot load the lesion library.", waitCursor=True):
            self.logic.loadLibrary(folder)
        self.updateLibraryView()

    def onExtract(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Cannot extract lesions.", waitCursor=True):
            items = self.logic.extractFromVolume(p.inputVolume, p.femurSegmentation, p.lesionSegment)
            self.ui.placementInfoLabel.text = f"{len(items)} lesion(s) added from {p.inputVolume.GetName()}"
        self.updateLibraryView()

    def onSaveLibrary(self):
        p = self._parameterNode
        folder = qt.QFileDialog.getExistingDirectory(self.widget, "Folder for the new lesion library")
        if not folder:
            return
        self.job.run(self.logic.startExtractLibrary, p.inputVolume, p.femurSegmentation, folder, p.lesionSegment)

    # ---- placement ---------------------------------------------------------------------------------------------
    def observePoint(self, *_):
        if self._observedPoint is not None:
            self.removeObserver(self._observedPoint, slicer.vtkMRMLMarkupsNode.PointModifiedEvent, self.schedulePreview)
            self.removeObserver(self._observedPoint, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                                self.schedulePreview)
        node = self._parameterNode.point if self._parameterNode else None
        self._observedPoint = node
        if node is not None:
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointModifiedEvent, self.schedulePreview)
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.schedulePreview)
        self.updateButtons()

    def onPlacePoint(self):
        p = self._parameterNode
        if p.point is None:
            p.point = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Lesion position")
        p.point.RemoveAllControlPoints()
        p.point.SetMaximumNumberOfControlPoints(1)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selection.SetActivePlaceNodeID(p.point.GetID())
        slicer.app.applicationLogic().GetInteractionNode().SetCurrentInteractionMode(
            slicer.vtkMRMLInteractionNode.Place)

    def placementParameters(self) -> PlacementParameters:
        p = self._parameterNode
        return PlacementParameters(scale=p.scale, rotation_deg=(p.rotationX, p.rotationY, p.rotationZ),
                                   smoothing=p.smoothing, noise_hu=p.noise,
                                   crop_seed=None if p.wholeLesion else p.cropSeed, snap=p.snap)

    def _placementInputs(self):
        p = self._parameterNode
        itemId = self.ui.lesionComboBox.currentData
        if not itemId:
            raise ValueError("choose a lesion from the library")
        from bonemet import mrml

        return p.inputVolume, p.femurSegmentation, itemId, mrml.markup_point_ras(p.point), self.placementParameters()

    def schedulePreview(self, *_):
        p = self._parameterNode
        if p and p.livePreview and p.point is not None and p.point.GetNumberOfControlPoints() \
                and self.logic.library is not None:
            self.previewTimer.start()

    def onPreview(self):
        try:
            info = self.logic.updatePreview(*self._placementInputs())
        except Exception as exc:  # noqa: BLE001 - interactive: show, do not pop up a dialog on every drag
            self.ui.placementInfoLabel.text = f"Cannot place the lesion: {exc}"
            return
        volume, seg = self.logic.previewNodes
        slicer.util.setSliceViewerLayers(background=volume, fit=False)
        self.ui.placementInfoLabel.text = self._describe(info, "Preview")

    def onApply(self):
        with slicer.util.tryWithErrorDisplay("Cannot place the lesion.", waitCursor=True):
            node, seg, info = self.logic.apply(*self._placementInputs())
            self.logic.clearPreview()
            slicer.util.setSliceViewerLayers(background=node, fit=False)
            p = self._parameterNode
            p.refineVolume, p.refineSegmentation = node, seg
            self.ui.placementInfoLabel.text = self._describe(info, f"Created {node.GetName()}")

    @staticmethod
    def _describe(info, prefix):
        snapped = f", snapped {info.get('snap_distance_mm')} mm into the femur" if info.get("snapped") else ""
        kept = "" if info.get("kept", True) else " (below the 16 mm³ size filter)"
        return f"{prefix}: {info.get('voxels', 0)} voxels, {info.get('volume_mm3', 0):.1f} mm³{kept}{snapped}"

    # ---- refinement and batch ----------------------------------------------------------------------------------
    def ensureDependencies(self) -> bool:
        if not unsupportedPython() and not missingRequirements(deep=True):
            return True
        with slicer.util.tryWithErrorDisplay("Installing the BoneMet dependencies failed.", waitCursor=True):
            return installDependencies(deep=True, askConfirmation=True, log=self.job.onLog)
        return False

    def onRefine(self):
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        self.job.run(self.logic.startRefine, p.refineVolume, p.refineSegmentation, pathOrNone(p.ddpmPath), p.lam,
                     p.ddimSteps, p.refineSeed, p.refineDevice)

    def updateBatchLabels(self, *_):
        job = self.ui.batchJobComboBox.currentText
        second = {"Synthesis": "Lesion library:", "Refinement": "DDPM model:"}.get(job)
        self.ui.batchSecondLineEdit.enabled = second is not None
        self.ui.batchWorkersSpinBox.enabled = job == "Synthesis"
        self.ui.batchSecondLabel.text = second or "(not used)"
        self.ui.batchCountLabel.text = {"Synthesis": "Per pair:", "U-Net training": "Epochs:",
                                                     "DDPM training": "Steps:"}.get(job, "(not used)")

    def onBatch(self):
        p = self._parameterNode
        inp, second, out = pathOrNone(p.batchInput), pathOrNone(p.batchSecond), pathOrNone(p.batchOutput)
        if inp is None or out is None:
            slicer.util.errorDisplay("Choose the input dataset folder and the output folder.")
            return
        if p.batchJob != "Synthesis" and not self.ensureDependencies():
            return
        if p.batchJob == "Synthesis":
            self.job.run(self.logic.startBatchSynth, second, inp, out, p.batchCount or 10, p.batchSeed,
                         p.batchWorkers, p.batchPreset)
        elif p.batchJob == "Refinement":
            self.job.run(self.logic.startBatchRefine, inp, second, out, p.lam, p.ddimSteps, p.batchSeed,
                         p.batchDevice)
        else:
            kind = "unet" if p.batchJob == "U-Net training" else "ddpm"
            self.job.run(self.logic.startBatchTrain, kind, inp, out, p.batchPreset, p.batchCount or None,
                         p.batchSeed, p.batchDevice)

    def onJobFinished(self, result):
        self.updateButtons()
        if not result.ok:
            return
        if "library" in result.outputs:
            self.updateLibraryView()
        volume = result.outputs.get("volume")
        if volume is not None:
            slicer.util.setSliceViewerLayers(background=volume, fit=False)
        for key in ("dataset", "model"):
            if key in result.outputs:
                self.ui.statusLabel.text = f"{result.message}: {result.outputs[key]}"
