"""Parameter nodes of the BoneMet modules (``slicer.parameterNodeWrapper``; Slicer application only).

Each field is bound to the widget whose ``SlicerParameterName`` dynamic property (in the ``.ui`` file) has the
same name, so the panel state is saved with the scene.
"""

from __future__ import annotations

import pathlib
from typing import Annotated

import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

DEVICE_CHOICES = ["auto", "cpu", "cuda"]
BATCH_JOBS = ["Synthesis", "Refinement", "U-Net training", "DDPM training"]


@parameterNodeWrapper
class BoneMetSegParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    modelPath: pathlib.Path
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    tta: bool = False
    referenceSegmentation: slicer.vtkMRMLSegmentationNode
    minLesionMm3: Annotated[float, WithinRange(0.0, 10000.0)] = 16.0
    variabilityCsv: pathlib.Path
    variabilityOutput: pathlib.Path
    compareTable: slicer.vtkMRMLTableNode
    compareChart: slicer.vtkMRMLPlotChartNode


@parameterNodeWrapper
class BoneMetSynthParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    femurSegmentation: slicer.vtkMRMLSegmentationNode
    libraryPath: pathlib.Path
    lesionSegment: str = "Metastasis"
    point: slicer.vtkMRMLMarkupsFiducialNode
    scale: Annotated[float, WithinRange(0.3, 3.0)] = 1.0
    rotationX: Annotated[float, WithinRange(-180.0, 180.0)] = 0.0
    rotationY: Annotated[float, WithinRange(-180.0, 180.0)] = 0.0
    rotationZ: Annotated[float, WithinRange(-180.0, 180.0)] = 0.0
    smoothing: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    noise: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    cropSeed: Annotated[int, WithinRange(0, 1000000)] = 0
    wholeLesion: bool = False
    snap: bool = True
    livePreview: bool = True
    refineVolume: slicer.vtkMRMLScalarVolumeNode
    refineSegmentation: slicer.vtkMRMLSegmentationNode
    ddpmPath: pathlib.Path
    lam: Annotated[int, WithinRange(0, 200)] = 10
    ddimSteps: Annotated[int, WithinRange(1, 1000)] = 50
    refineSeed: Annotated[int, WithinRange(0, 1000000)] = 0
    refineDevice: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    batchJob: Annotated[str, Choice(BATCH_JOBS)] = "Synthesis"
    batchInput: pathlib.Path
    batchSecond: pathlib.Path
    batchOutput: pathlib.Path
    batchPreset: Annotated[str, Choice(["small", "paper"])] = "small"
    batchCount: Annotated[int, WithinRange(0, 1000000)] = 10
    batchSeed: Annotated[int, WithinRange(0, 1000000)] = 0
    batchWorkers: Annotated[int, WithinRange(1, 64)] = 1
    batchDevice: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"


def pathOrNone(p) -> pathlib.Path | None:
    """A bound path field, or None when the line edit is empty."""
    if p is None:
        return None
    s = str(p).strip()
    return None if s in ("", ".") else pathlib.Path(s)
