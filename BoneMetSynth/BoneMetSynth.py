"""BoneMetSynth: synthetic lesioned femurs in 3D Slicer — lesion library, interactive placement with live preview,
DDIM refinement, and batch synthesis/refinement/training jobs.

Thin module file: the panel is ``BoneMetSynthLib.Widget``, the logic ``BoneMetSynthLib.Logic`` (Qt-free); heavy
work runs in a background ``bonemet`` process. No PyTorch/MONAI import here.
"""

import tempfile

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from BoneMetSynthLib.Logic import BoneMetSynthLogic as _BoneMetSynthLogic


class BoneMetSynth(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BoneMet Synthesis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["BoneMetSeg"]
        self.parent.contributors = ["BoneMet developers"]
        self.parent.helpText = _(
            "Create synthetic lesioned femurs: load or extract a lesion library, place a lesion at a markups point "
            "inside the femur with scale/rotation/smoothing/noise/crop controls and a live preview, apply it to a "
            "new volume (the original is never modified), refine it with a diffusion model (DDIM), and run batch "
            "synthesis, refinement and training jobs. "
            '<a href="https://github.com/bonemet/BoneMet/blob/main/docs/slicer.md">Documentation</a>.')
        self.parent.acknowledgementText = _("Built with 3D Slicer, MONAI and PyTorch.")


class BoneMetSynthWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from BoneMetSegLib.Process import QtProcess
        from BoneMetSynthLib.Widget import BoneMetSynthPanel

        self.logic = BoneMetSynthLogic(process=QtProcess())
        self.panel = BoneMetSynthPanel(self.logic, self.resourcePath)
        self.layout.addWidget(self.panel.widget)

    def cleanup(self) -> None:
        if self.panel is not None:
            self.panel.cleanup()


class BoneMetSynthLogic(ScriptedLoadableModuleLogic, _BoneMetSynthLogic):
    """Module logic = the Qt-free ``BoneMetSynthLib.Logic`` + Slicer's parameter node handling."""

    def __init__(self, process=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        _BoneMetSynthLogic.__init__(self, process=process)


class BoneMetSynthTest(ScriptedLoadableModuleTest):
    """Builds a phantom case and runs the logic end to end: library from the current volume (in memory and through
    a background 'bonemet lesions extract'), live preview, apply (original untouched), refinement inputs."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BoneMetSynth_endToEnd()

    def test_BoneMetSynth_endToEnd(self):
        import numpy as np

        from BoneMetSegLib.Process import BlockingProcess
        from BoneMetSegLib.Testing import phantomCase
        from BoneMetSynthLib.Logic import PlacementParameters
        from bonemet import mrml

        self.delayDisplay("Building a phantom case")
        work = tempfile.mkdtemp(prefix="bonemet-selftest-")
        g, ct, femur, lesion, source = phantomCase()
        ctNode = mrml.volume_to_node(ct, g, name="Phantom CT")
        seg = mrml.segmentation_from_labelmap(femur, g, mrml.FEMUR_LABELS, reference_node=ctNode, name="Phantom")
        mrml.set_segment_mask(seg, lesion, g, mrml.METASTASIS)
        logic = BoneMetSynthLogic(process=BlockingProcess(timeout_s=600))
        results = []
        logic.jobFinished.connect(results.append)

        self.delayDisplay("Lesion library from the current volume")
        items = logic.extractFromVolume(ctNode, seg)
        self.assertGreaterEqual(len(items), 1)
        logic.startExtractLibrary(ctNode, seg, f"{work}/library")
        self.assertTrue(results[-1].ok, results[-1].message + "\n" + results[-1].log)
        self.assertGreaterEqual(len(logic.library), 1)

        self.delayDisplay("Placing a lesion in the other femur with a live preview")
        other = 2 if (femur[lesion > 0] == 1).any() else 1
        idx = np.argwhere(femur == other)
        centre = idx[len(idx) // 2]
        point = mrml.ijk_to_ras_point(g, centre[::-1])
        params = PlacementParameters(scale=1.0, rotation_deg=(0, 20, 0), smoothing=0.5, noise_hu=5.0, crop_seed=1)
        itemId = logic.library.ids()[0]
        info = logic.updatePreview(ctNode, seg, itemId, point, params)
        self.assertGreater(info["voxels"], 0)
        node, newSeg, info = logic.apply(ctNode, seg, itemId, point, params)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), ct)
        self.assertIn(mrml.METASTASIS, mrml.segment_names(newSeg))
        logic.clearPreview()

        self.delayDisplay("Refinement inputs as a one-case dataset")
        rec = logic.writeCase(f"{work}/refine-in", node, newSeg)
        self.assertIsNotNone(rec["lesion"])
        self.delayDisplay("BoneMetSynth self-test passed")
