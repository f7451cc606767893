"""BoneMetSeg: femur and bone-metastasis segmentation of CT, comparison of segmentations, operator variability.

Thin module file: the panel is ``BoneMetSegLib.Widget``, the logic ``BoneMetSegLib.Logic`` (Qt-free), the heavy work
runs in a background ``bonemet`` process. No PyTorch/MONAI import here: they are only needed by that process.
"""

import logging
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

from BoneMetSegLib.Logic import BoneMetSegLogic as _BoneMetSegLogic


class BoneMetSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BoneMet Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["BoneMet developers"]
        self.parent.helpText = _(
            "Segment the femurs and femoral bone metastases in a CT volume, compare segmentations (manual vs "
            "automatic, operator vs operator: Dice, HD, HD95, ASSD, volumes, lesion-wise counts) and run an "
            "operator-variability study. Heavy steps run in a background process with progress and Cancel. "
            '<a href="https://github.com/bonemet/BoneMet/blob/main/docs/slicer.md">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "BoneMet reproduces the synthetic-lesion and diffusion-refinement pipeline for femoral bone metastasis "
            "segmentation; built with 3D Slicer, MONAI and PyTorch.")


class BoneMetSegWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from BoneMetSegLib.Process import QtProcess
        from BoneMetSegLib.Widget import BoneMetSegPanel

        self.logic = BoneMetSegLogic(process=QtProcess())
        self.panel = BoneMetSegPanel(self.logic, self.resourcePath)
        self.layout.addWidget(self.panel.widget)

    def cleanup(self) -> None:
        if self.panel is not None:
            self.panel.cleanup()


class BoneMetSegLogic(ScriptedLoadableModuleLogic, _BoneMetSegLogic):
    """Module logic = the Qt-free ``BoneMetSegLib.Logic`` + Slicer's parameter node handling.

    ``process``: background runner (``QtProcess`` from the panel; the default, a blocking runner, suits scripts
    and tests)."""

    def __init__(self, process=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        _BoneMetSegLogic.__init__(self, process=process)


class BoneMetSegTest(ScriptedLoadableModuleTest):
    """Builds a phantom case and runs the logic end to end (femur job in a real background process, lesion
    loading, comparison table/plot/CSV, .seg.nrrd round trip)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BoneMetSeg_endToEnd()

    def test_BoneMetSeg_endToEnd(self):
        import numpy as np

        from BoneMetSegLib.Process import BlockingProcess
        from BoneMetSegLib.Testing import dice, phantomCase
        from bonemet import io as bio
        from bonemet import mrml

        self.delayDisplay("Building a phantom case")
        work = tempfile.mkdtemp(prefix="bonemet-selftest-")
        g, ct, femur, lesion, source = phantomCase()
        ctNode = mrml.volume_to_node(ct, g, name="Phantom CT")
        logic = BoneMetSegLogic(process=BlockingProcess(timeout_s=600))
        results = []
        logic.jobFinished.connect(results.append)

        self.delayDisplay(f"Femur segmentation in a background process ({source} phantom)")
        seg = logic.startFemur(ctNode)
        self.assertTrue(results[-1].ok, results[-1].message + "\n" + results[-1].log)
        self.assertIn(mrml.FEMUR_RIGHT, mrml.segment_names(seg))
        femurAuto = logic.femurLabelmap(seg, g)
        dRight, dLeft = dice(femurAuto == 1, femur == 1), dice(femurAuto == 2, femur == 2)
        logging.info(f"BoneMetSeg self-test: femur Dice right {dRight:.3f}, left {dLeft:.3f}")
        if source == "bonemet.phantom":
            self.assertGreater(min(dRight, dLeft), 0.8)  # both femurs found, on the right side

        self.delayDisplay("Loading a lesion mask as the Metastasis segment")
        lesionPath = bio.write_mask(f"{work}/lesion.nii.gz", lesion, g)
        logic.loadLesion(lesionPath, ctNode, seg)
        np.testing.assert_array_equal(mrml.segment_mask(seg, mrml.METASTASIS, reference_node=ctNode), lesion)

        self.delayDisplay("Comparing the reference with a shifted copy")
        ops = mrml.segmentation_from_masks({"Operator": np.roll(lesion, 1, axis=2)}, g, name="Operator",
                                           reference_node=ctNode)
        try:
            table, chart, rows = logic.compare((seg, mrml.METASTASIS), [(ops, "Operator"), (seg, mrml.METASTASIS)],
                                               referenceVolumeNode=ctNode)
        except ImportError:
            logging.warning("bonemet.metrics not available: comparison not tested")
        else:
            self.assertAlmostEqual(rows[1]["dice"], 1.0, places=6)
            self.assertLess(rows[0]["dice"], 1.0)
            self.assertEqual(table.GetNumberOfRows(), 2)
            logic.exportTableCsv(table, f"{work}/compare.csv")

        self.delayDisplay("Saving and reloading the segmentation")
        path = mrml.save_segmentation(seg, f"{work}/case.seg.nrrd")
        seg2 = mrml.load_segmentation(path)
        self.assertEqual(mrml.segment_names(seg2), mrml.segment_names(seg))
        self.delayDisplay("BoneMetSeg self-test passed")
