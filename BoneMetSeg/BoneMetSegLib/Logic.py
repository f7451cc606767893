"""BoneMetSeg logic, Qt-free: femur and lesion segmentation jobs, comparison tables, variability study.

Runs with the Slicer application or with the pip package ``slicer-core`` (tests). MRML access goes through the
engine's ``bonemet.mrml`` bridge; heavy work through :class:`~BoneMetSegLib.Jobs.JobRunner` (a background
``bonemet`` process whose runner is injected).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from .Engine import ensure_engine_importable, femur_command, predict_command, variability_command
from .Jobs import JobRunner

ensure_engine_importable()

from bonemet import io as bio  # noqa: E402
from bonemet import mrml  # noqa: E402

COMPARE_COLUMNS = [
    "reference", "other", "status", "dice", "hd", "hd95", "assd", "vol_ref_mm3", "vol_other_mm3", "vol_diff_mm3",
    "sensitivity", "precision", "lesions_ref", "lesions_other", "tp", "fp", "fn", "lesion_sensitivity",
    "lesion_precision", "lesion_f1",
]


def _segment_label(seg_node, segment: str) -> str:
    sid = mrml.find_segment(seg_node, segment)
    name = seg_node.GetSegmentation().GetSegment(sid).GetName() if sid else segment
    return f"{seg_node.GetName()}/{name}"


class BoneMetSegLogic(JobRunner):
    """Femur/lesion segmentation in background jobs and in-process comparisons.

    ``process``: runner (``QtProcess`` in the GUI, ``BlockingProcess`` by default); ``scene``: MRML scene (default
    ``slicer.mrmlScene``).
    """

    def __init__(self, process=None, scene=None):
        JobRunner.__init__(self, process)
        self._scene = scene

    @property
    def scene(self):
        return mrml.default_scene(self._scene)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def writeVolume(self, node, path: Path) -> Path:
        """Volume node → file for the engine (uncompressed NRRD: fast; exact geometry)."""
        vol = mrml.node_to_volume(node)
        return bio.write_volume(path, vol.array, vol.geometry, compress=False)

    def outputSegmentation(self, ctNode, segmentationNode=None):
        if segmentationNode is None:
            segmentationNode = mrml.new_segmentation(scene=self.scene, name=f"{ctNode.GetName()} segmentation",
                                                     reference_node=ctNode)
        return segmentationNode

    def femurLabelmap(self, segmentationNode, geometry) -> "numpy.ndarray | None":  # noqa: F821
        """Femur label map (1 right, 2 left) from the segmentation's femur segments, or None if it has none."""
        import numpy as np

        names = mrml.segment_names(segmentationNode)
        if mrml.FEMUR_RIGHT not in names and mrml.FEMUR_LEFT not in names:
            return None
        lab = np.zeros(geometry.shape, np.uint8)
        for value, name in mrml.FEMUR_LABELS.items():
            if name in names:
                lab[mrml.segment_mask(segmentationNode, name, geometry, scene=self.scene) > 0] = value
        return lab

    # ---- femur -------------------------------------------------------------------------------------------------
    def startFemur(self, ctNode, segmentationNode=None):
        """``bonemet femur`` on the CT in the background; the femur segments (``Femur right``/``Femur left``) are
        written into ``segmentationNode`` (created now if None, returned) when the job succeeds."""
        if ctNode is None:
            raise ValueError("select a CT volume")
        segmentationNode = self.outputSegmentation(ctNode, segmentationNode)
        work = self.newWorkDir("bonemet-femur-")
        ct = self.writeVolume(ctNode, work / "ct.nrrd")
        out = work / "femur.nii.gz"

        def onSuccess():
            self.loadFemur(out, ctNode, segmentationNode)
            return {"segmentation": segmentationNode}

        self.startJob("Femur segmentation", femur_command(ct, out), onSuccess, work)
        return segmentationNode

    def loadFemur(self, path, ctNode, segmentationNode):
        """Femur label map file → ``Femur right`` / ``Femur left`` segments (existing ones replaced)."""
        geometry = mrml.geometry_from_node(ctNode)
        lab = bio.read_mask(path, reference=geometry, binary=False)
        return mrml.segmentation_from_labelmap(lab.array, geometry, mrml.FEMUR_LABELS, node=segmentationNode,
                                               reference_node=ctNode, scene=self.scene)

    # ---- lesions -----------------------------------------------------------------------------------------------
    def startLesions(self, ctNode, segmentationNode, modelPath, device: str = "auto", tta: bool = False):
        """``bonemet predict`` in the background → ``Metastasis`` segment in ``segmentationNode`` (created if
        None). The femur segments of that node, when present, are passed to the engine (no re-segmentation)."""
        if ctNode is None:
            raise ValueError("select a CT volume")
        if not modelPath or not Path(modelPath).exists():
            raise ValueError(f"model package not found: {modelPath or '(none selected)'}")
        segmentationNode = self.outputSegmentation(ctNode, segmentationNode)
        work = self.newWorkDir("bonemet-lesions-")
        ct = self.writeVolume(ctNode, work / "ct.nrrd")
        geometry = mrml.geometry_from_node(ctNode)
        femur = self.femurLabelmap(segmentationNode, geometry)
        femurPath = bio.write_mask(work / "femur.nii.gz", femur, geometry) if femur is not None and femur.any() \
            else None
        out = work / "lesion.nii.gz"

        def onSuccess():
            self.loadLesion(out, ctNode, segmentationNode)
            return {"segmentation": segmentationNode}

        self.startJob("Lesion segmentation", predict_command(ct, modelPath, out, femurPath, device, tta),
                      onSuccess, work)
        return segmentationNode

    def loadLesion(self, path, ctNode, segmentationNode, name: str = mrml.METASTASIS) -> str:
        """Binary lesion mask file → segment ``Metastasis`` (replaced if present). Returns the segment ID."""
        geometry = mrml.geometry_from_node(ctNode)
        mask = bio.read_mask(path, reference=geometry, binary=True)
        if mrml._segmentation_is_empty_geometry(segmentationNode):
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(ctNode)
        return mrml.set_segment_mask(segmentationNode, mask.array, geometry, name, scene=self.scene)

    # ---- model packages ----------------------------------------------------------------------------------------
    @staticmethod
    def modelInfo(path) -> dict:
        """Validated package config summary (no weights loaded); raises ``bonemet`` ModelError when unusable."""
        from bonemet.segmentation.package import find_packages, read_config

        pkgs = find_packages(path)
        cfg = read_config(pkgs[0])
        return {"path": str(path), "folds": len(pkgs), "spacing": cfg.get("spacing"),
                "patch_size": cfg.get("patch_size"), "metrics": cfg.get("metrics") or cfg.get("validation"),
                "bonemet_version": cfg.get("bonemet_version")}

    @classmethod
    def importModelPackage(cls, source, modelsDir) -> Path:
        """Validate a package (folder or .zip) and copy it into ``modelsDir``; returns the installed path."""
        source = Path(source)
        cls.modelInfo(source)
        modelsDir = Path(modelsDir)
        modelsDir.mkdir(parents=True, exist_ok=True)
        target = modelsDir / source.name
        if target.exists():
            raise FileExistsError(f"a model named {source.name!r} is already installed in {modelsDir}")
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    @staticmethod
    def listModelPackages(modelsDir) -> list[Path]:
        d = Path(modelsDir)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if (p / "config.json").exists() or p.suffix.lower() == ".zip"
                      or (p.is_dir() and any((q / "config.json").exists() for q in p.iterdir() if q.is_dir())))

    # ---- comparison --------------------------------------------------------------------------------------------
    def compare(self, reference: tuple, others: Sequence[tuple], referenceVolumeNode=None, tableNode=None,
                minLesionMm3: float = 16.0, chartNode=None):
        """Compare segment ``reference = (segmentationNode, segment)`` with each ``(segmentationNode, segment)``
        of ``others`` on the reference volume's grid (or the reference segmentation's geometry).

        Returns ``(tableNode, chartNode, rows)``: one row per pair with Dice, HD, HD95, ASSD (mm), volumes (mm³),
        sensitivity, precision, the status of the pair (``ok``/``true_negative``/``pred_empty``/``ref_empty``) and
        lesion-wise counts (TP/FP/FN lesions, lesions < ``minLesionMm3`` ignored). Undefined values are empty."""
        from bonemet.metrics import lesion_detection, segmentation_metrics

        if not others:
            raise ValueError("choose at least one segmentation to compare with the reference")
        refSeg, refSegment = reference
        geometry = mrml.geometry_from_node(referenceVolumeNode) if referenceVolumeNode is not None \
            else mrml.segmentation_reference_geometry(refSeg)
        ref = mrml.segment_mask(refSeg, refSegment, geometry, scene=self.scene)
        rows = []
        for segNode, segment in others:
            other = mrml.segment_mask(segNode, segment, geometry, scene=self.scene)
            m = segmentation_metrics(other, ref, geometry.spacing_zyx)
            d = lesion_detection(other, ref, geometry.spacing_zyx, min_volume_mm3=minLesionMm3)
            rows.append({
                "reference": _segment_label(refSeg, refSegment), "other": _segment_label(segNode, segment),
                "status": m.get("status"), "dice": m.get("dice"), "hd": m.get("hd"), "hd95": m.get("hd95"),
                "assd": m.get("assd"), "vol_ref_mm3": m.get("vol_ref_mm3"), "vol_other_mm3": m.get("vol_pred_mm3"),
                "vol_diff_mm3": m.get("vol_diff_mm3"), "sensitivity": m.get("sensitivity"),
                "precision": m.get("precision"),
                "lesions_ref": _count(d, "n_ref", ("tp", "fn")), "lesions_other": _count(d, "n_pred", ("tp", "fp")),
                "tp": d.get("tp"), "fp": d.get("fp"), "fn": d.get("fn"),
                "lesion_sensitivity": d.get("sensitivity"), "lesion_precision": d.get("precision"),
                "lesion_f1": d.get("f1"),
            })
        table = mrml.rows_to_table(rows, scene=self.scene, name="BoneMet comparison", columns=COMPARE_COLUMNS,
                                   node=tableNode)
        chart = mrml.plot_table(table, ["dice"], "other", scene=self.scene, name="BoneMet Dice", chart=chartNode,
                                title="Dice vs reference", y_title="Dice")
        return table, chart, rows

    @staticmethod
    def exportTableCsv(tableNode, path) -> Path:
        return mrml.save_table_csv(tableNode, path)

    # ---- variability -------------------------------------------------------------------------------------------
    def startVariability(self, csvPath, outDir) -> Path:
        """``bonemet variability CSV -o OUT --report OUT/report.html`` in the background; the result's
        ``outputs['report']`` is the HTML report (the widget opens it)."""
        csvPath, outDir = Path(csvPath), Path(outDir)
        if not csvPath.exists():
            raise ValueError(f"CSV file not found: {csvPath}")
        report = outDir / "report.html"

        def onSuccess():
            if not report.exists():
                raise RuntimeError(f"the study finished but wrote no report at {report}")
            return {"report": report, "outDir": outDir}

        self.startJob("Operator variability", variability_command(csvPath, outDir, report), onSuccess)
        return report


def _count(d: dict, key: str, parts: tuple) -> int | None:
    if key in d:
        return d[key]
    try:
        return int(sum(int(d[p]) for p in parts))
    except (KeyError, TypeError):
        return None
