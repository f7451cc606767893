"""BoneMetSynth logic, Qt-free: lesion library, interactive placement with live preview, DDIM refinement and
batch jobs (synthesis, refinement, training) over the engine.

Runs with the Slicer application or the pip package ``slicer-core`` (tests). Shares the job machinery of the
BoneMetSeg module (``BoneMetSegLib``: engine location, background process runners, progress parsing).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from BoneMetSegLib.Engine import (ddpm_train_command, ensure_engine_importable, lesions_extract_command,
                                  refine_command, synth_command, train_command)
from BoneMetSegLib.Jobs import JobRunner

ensure_engine_importable()

from bonemet import io as bio  # noqa: E402
from bonemet import mrml  # noqa: E402
from bonemet.geometry import crop_geometry  # noqa: E402

PLACEMENT_ATTRIBUTE = "BoneMet.placement"
PREVIEW_MARGIN_MM = 6.0


@dataclass
class PlacementParameters:
    """What the sliders set (see ``bonemet.synthesis.placement.place_lesion``)."""

    scale: float = 1.0
    rotation_deg: tuple = (0.0, 0.0, 0.0)
    smoothing: float = 0.6
    noise_hu: float = 0.0
    crop_seed: int | None = 0
    snap: bool = True

    def asDict(self) -> dict:
        d = asdict(self)
        d["rotation_deg"] = [float(a) for a in self.rotation_deg]
        return d


@dataclass
class _Preview:
    ctNodeID: str
    volumeNode: object
    segmentationNode: object
    box: tuple | None = None
    info: dict = field(default_factory=dict)


class BoneMetSynthLogic(JobRunner):
    """``process``: background runner (``QtProcess`` in the GUI, ``BlockingProcess`` by default);
    ``scene``: MRML scene (default ``slicer.mrmlScene``)."""

    def __init__(self, process=None, scene=None):
        JobRunner.__init__(self, process)
        self._scene = scene
        self.library = None
        self._cache: dict = {}
        self._preview: _Preview | None = None

    @property
    def scene(self):
        return mrml.default_scene(self._scene)

    # ---- lesion library ----------------------------------------------------------------------------------------
    def loadLibrary(self, folder):
        """Load (and validate) a library folder written by ``bonemet lesions extract``."""
        from bonemet.synthesis.library import load_library

        self.library = load_library(folder)
        return self.library

    def extractFromVolume(self, ctNode, segmentationNode, segment: str = mrml.METASTASIS,
                          sourceName: str | None = None, minVolumeMm3: float = 16.0):
        """Lesions of ``segment`` in the current volume → in-memory library items (added to the current library).
        Each connected lesion of at least ``minVolumeMm3`` becomes one item (native spacing)."""
        from bonemet.synthesis.library import Library, extract_items

        vol = mrml.node_to_volume(ctNode, dtype=np.float32)
        mask = mrml.segment_mask(segmentationNode, segment, vol.geometry, scene=self.scene)
        minVoxels = max(1, int(np.ceil(minVolumeMm3 / vol.geometry.voxel_volume)))
        femur = self.femurLabelmap(segmentationNode, vol.geometry)
        items = extract_items(vol.array, mask, vol.geometry, sourceName or ctNode.GetName(), femur, minVoxels)
        if not items:
            raise ValueError(f"segment {segment!r} has no lesion of at least {minVolumeMm3:g} mm³")
        if self.library is None:
            self.library = Library(Path("<scene>"), [], {"format": "bonemet.lesion_library"})
        known = set(self.library.ids())
        self.library.items.extend(it for it in items if it.id not in known)
        return items

    def startExtractLibrary(self, ctNode, segmentationNode, outDir, segment: str = mrml.METASTASIS):
        """Save the lesions of the current volume as a library folder with ``bonemet lesions extract``
        (resampled to the working spacing), then load it."""
        work = self.newWorkDir("bonemet-extract-")
        case = self.writeCase(work, ctNode, segmentationNode, lesionSegment=segment, caseId=_safe(ctNode.GetName()))

        def onSuccess():
            return {"library": self.loadLibrary(outDir), "case": case}

        self.startJob("Lesion library", lesions_extract_command(work, outDir), onSuccess, work)

    def itemSummaries(self) -> list[dict]:
        if self.library is None:
            return []
        return [{"id": it.id, "source": it.source_case, "volume_mm3": round(it.volume_mm3, 1)}
                for it in self.library.items]

    # ---- inputs from the scene ---------------------------------------------------------------------------------
    def femurLabelmap(self, segmentationNode, geometry):
        """Femur label map (1 right, 2 left) from ``Femur right``/``Femur left`` segments, else from any segment
        whose name contains 'femur' (label 1); ``None`` without femur segments."""
        if segmentationNode is None:
            return None
        names = mrml.segment_names(segmentationNode)
        key = (segmentationNode.GetID(), segmentationNode.GetMTime(),
               segmentationNode.GetSegmentation().GetMTime(), tuple(names), geometry)
        if self._cache.get("femurKey") == key:
            return self._cache["femur"]
        lab = None
        wanted = [(v, n) for v, n in mrml.FEMUR_LABELS.items() if n in names]
        if not wanted:
            wanted = [(1, n) for n in names if "femur" in n.lower()]
        if wanted:
            lab = np.zeros(geometry.shape, np.uint8)
            for value, name in wanted:
                lab[mrml.segment_mask(segmentationNode, name, geometry, scene=self.scene) > 0] = value
        self._cache.update(femurKey=key, femur=lab)
        return lab

    def invalidateCache(self) -> None:
        """Forget cached CT/femur arrays (call when the user edits the inputs)."""
        self._cache.clear()

    def ctArray(self, ctNode):
        key = (ctNode.GetID(), ctNode.GetMTime(), ctNode.GetImageData().GetMTime())
        if self._cache.get("ctKey") != key:
            self._cache.update(ctKey=key, ct=mrml.node_to_volume(ctNode, dtype=np.float32))
        return self._cache["ct"]

    # ---- placement ---------------------------------------------------------------------------------------------
    def place(self, ctNode, femurSegmentationNode, itemId: str, pointRas, params: PlacementParameters):
        """Compute a placement on a crop around the point (fast): returns (box slices, new CT crop, lesion crop,
        info). Raises ``bonemet`` InputError for a point outside the femur (unless ``params.snap``)."""
        from bonemet.synthesis.placement import place_lesion

        if self.library is None:
            raise ValueError("load or extract a lesion library first")
        item = self.library.get(itemId)
        vol = self.ctArray(ctNode)
        femur = self.femurLabelmap(femurSegmentationNode, vol.geometry)
        if femur is None:
            raise ValueError("the femur segmentation has no femur segment (run 'Femur' in BoneMetSeg first)")
        box = self._box(vol.geometry, item, pointRas, params.scale)
        geo = crop_geometry(vol.geometry, box)
        newCt, lesion, info = place_lesion(
            vol.array[box], femur[box], geo, item, pointRas, space="ras", scale=params.scale,
            rotation_deg=tuple(params.rotation_deg), crop_seed=params.crop_seed,
            smoothing=(3, float(params.smoothing)), noise_hu=float(params.noise_hu), snap=params.snap)
        # the engine worked on the crop: report indices in the whole volume
        offset = np.array([s.start for s in box])
        for key in ("centre_zyx", "snapped_from_zyx"):
            if key in info:
                info[key] = [int(v) for v in np.asarray(info[key]) + offset]
        info["centre_ijk"] = info["centre_zyx"][::-1]
        info["params"] = dict(info.get("params", {}), centre_zyx=info["centre_zyx"])
        info["lesion_box_zyx"] = [[int(a) + int(o), int(b) + int(o)] for (a, b), o in zip(info.get("box", []), offset)]
        info.pop("box", None)
        info["parameters"] = params.asDict()
        info["box_zyx"] = [[s.start, s.stop] for s in box]
        return box, newCt, lesion, info

    def _box(self, geometry, item, pointRas, scale):
        centre = np.round(mrml.ras_to_ijk(geometry, pointRas)[::-1]).astype(int)
        extent_mm = np.asarray(item.mask.shape) * np.asarray(item.spacing_zyx)
        radius_mm = 0.5 * float(np.linalg.norm(extent_mm)) * float(np.max(np.atleast_1d(scale))) + PREVIEW_MARGIN_MM
        radius = np.ceil(radius_mm / np.asarray(geometry.spacing_zyx)).astype(int)
        shape = np.asarray(geometry.shape)
        lo = np.clip(centre - radius, 0, shape - 1)
        hi = np.clip(centre + radius + 1, 1, shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def updatePreview(self, ctNode, femurSegmentationNode, itemId: str, pointRas, params: PlacementParameters):
        """Live preview: a ``<CT> preview`` volume (a copy; the original is never modified) and a preview
        segmentation with the lesion. Repeated calls only rewrite the changed box. Returns the info dict."""
        import slicer

        box, newCt, lesion, info = self.place(ctNode, femurSegmentationNode, itemId, pointRas, params)
        vol = self.ctArray(ctNode)
        p = self._preview
        if p is None or p.ctNodeID != ctNode.GetID() or p.volumeNode.GetScene() is None:
            node = mrml.volume_to_node(vol.array.astype(np.float32), vol.geometry, scene=self.scene,
                                       name=f"{ctNode.GetName()} preview")
            seg = mrml.new_segmentation(scene=self.scene, name=f"{ctNode.GetName()} preview lesion",
                                        reference_node=node)
            p = self._preview = _Preview(ctNode.GetID(), node, seg)
        arr = slicer.util.arrayFromVolume(p.volumeNode)
        if p.box is not None:
            arr[p.box] = vol.array[p.box]
        arr[box] = newCt
        slicer.util.arrayFromVolumeModified(p.volumeNode)
        # the lesion segment is written on the box's grid (same physical place, no whole-volume mask)
        mrml.set_segment_mask(p.segmentationNode, lesion, crop_geometry(vol.geometry, box), mrml.METASTASIS,
                              scene=self.scene)
        p.box, p.info = box, info
        return info

    def clearPreview(self) -> None:
        p, self._preview = self._preview, None
        if p is not None:
            for n in (p.segmentationNode, p.volumeNode):
                if n is not None and n.GetScene() is not None:
                    n.GetScene().RemoveNode(n)

    @property
    def previewNodes(self):
        return (self._preview.volumeNode, self._preview.segmentationNode) if self._preview else (None, None)

    def apply(self, ctNode, femurSegmentationNode, itemId: str, pointRas, params: PlacementParameters,
              name: str | None = None):
        """Create a new volume with the lesion and a segmentation (femur segments + ``Metastasis``).
        The input volume is not modified. Returns (volumeNode, segmentationNode, info)."""
        box, newCt, lesion, info = self.place(ctNode, femurSegmentationNode, itemId, pointRas, params)
        vol = self.ctArray(ctNode)
        out = vol.array.copy()
        out[box] = newCt
        src = mrml.node_to_volume(ctNode)
        if src.array.dtype.kind in "iu":
            info_range = np.iinfo(src.array.dtype)
            out = np.clip(np.round(out), info_range.min, info_range.max).astype(src.array.dtype)
        name = name or self.scene.GenerateUniqueName(f"{ctNode.GetName()} synthetic")
        node = mrml.volume_to_node(out, vol.geometry, scene=self.scene, name=name)
        node.SetAttribute(PLACEMENT_ATTRIBUTE, json.dumps(info, default=_json))
        femur = self.femurLabelmap(femurSegmentationNode, vol.geometry)
        seg = mrml.segmentation_from_labelmap(femur, vol.geometry, mrml.FEMUR_LABELS, scene=self.scene,
                                              name=f"{name} segmentation", reference_node=node, skip_empty=True)
        mrml.set_segment_mask(seg, lesion, crop_geometry(vol.geometry, box), mrml.METASTASIS, scene=self.scene)
        return node, seg, info

    # ---- refinement --------------------------------------------------------------------------------------------
    def writeCase(self, folder: Path, ctNode, segmentationNode, lesionSegment: str = mrml.METASTASIS,
                  caseId: str = "case") -> dict:
        """A one-case dataset folder (manifest.json + CT, femur, lesion) from scene nodes."""
        from bonemet.dataset import write_manifest

        folder = Path(folder)
        vol = mrml.node_to_volume(ctNode)
        bio.write_volume(folder / f"{caseId}_ct.nii.gz", vol.array, vol.geometry)
        rec = {"id": caseId, "ct": f"{caseId}_ct.nii.gz", "femur": None, "lesion": None}
        femur = self.femurLabelmap(segmentationNode, vol.geometry)
        if femur is not None:
            bio.write_mask(folder / f"{caseId}_femur.nii.gz", femur, vol.geometry)
            rec["femur"] = f"{caseId}_femur.nii.gz"
        if segmentationNode is not None and mrml.find_segment(segmentationNode, lesionSegment):
            les = mrml.segment_mask(segmentationNode, lesionSegment, vol.geometry, scene=self.scene)
            if les.any():
                bio.write_mask(folder / f"{caseId}_lesion.nii.gz", les, vol.geometry)
                rec["lesion"] = f"{caseId}_lesion.nii.gz"
        write_manifest(folder, [rec], {"source": "BoneMetSynth (3D Slicer)"})
        return rec

    def startRefine(self, volumeNode, segmentationNode, modelDir, lam: float = 10, ddimSteps: int = 50,
                    seed: int = 0, device: str = "auto"):
        """DDIM refinement of the current (synthetic) volume in the background → a new ``<name> refined`` volume
        (the input is not modified). The lesion mask is carried over unchanged by the engine."""
        if volumeNode is None:
            raise ValueError("select the volume to refine")
        if not modelDir or not Path(modelDir).exists():
            raise ValueError(f"DDPM model folder not found: {modelDir or '(none selected)'}")
        work = self.newWorkDir("bonemet-refine-")
        self.writeCase(work / "in", volumeNode, segmentationNode)
        out = work / "out"
        name = f"{volumeNode.GetName()} refined"

        def onSuccess():
            return {"volume": self.loadDatasetCase(out, name)}

        self.startJob("DDIM refinement", refine_command(work / "in", modelDir, out, lam, ddimSteps, seed, device),
                      onSuccess, work)

    def loadDatasetCase(self, datasetDir, name: str, index: int = 0):
        """Load case ``index`` of a dataset folder's manifest as a new volume node."""
        from bonemet.dataset import load_manifest

        cases = load_manifest(datasetDir)
        if not cases:
            raise RuntimeError(f"{datasetDir}: the job wrote no case")
        vol = bio.read_ct(cases[index].ct)
        return mrml.volume_to_node(vol, scene=self.scene, name=name)

    # ---- batch jobs --------------------------------------------------------------------------------------------
    def startBatchSynth(self, library, healthy, outDir, perPair: int = 10, seed: int = 0, workers: int = 1,
                        preset: str | None = None):
        def onSuccess():
            return {"dataset": Path(outDir)}

        self.startJob("Batch synthesis", synth_command(library, healthy, outDir, perPair, seed, workers, preset),
                      onSuccess)

    def startBatchRefine(self, datasetDir, modelDir, outDir, lam: float = 10, ddimSteps: int = 50, seed: int = 0,
                         device: str = "auto"):
        def onSuccess():
            return {"dataset": Path(outDir)}

        self.startJob("Batch refinement", refine_command(datasetDir, modelDir, outDir, lam, ddimSteps, seed, device),
                      onSuccess)

    def startBatchTrain(self, kind: str, datasetDir, outDir, preset: str = "small", length: int | None = None,
                        seed: int = 0, device: str = "auto"):
        """``kind``: ``unet`` (``bonemet train``, ``length`` = epochs) or ``ddpm`` (``bonemet ddpm train``,
        ``length`` = steps)."""
        if kind == "unet":
            args = train_command([datasetDir], outDir, preset, length, None, seed, device)
        elif kind == "ddpm":
            args = ddpm_train_command(datasetDir, outDir, preset, length, seed, device)
        else:
            raise ValueError("kind must be 'unet' or 'ddpm'")

        def onSuccess():
            return {"model": Path(outDir)}

        self.startJob("Training" if kind == "unet" else "DDPM training", args, onSuccess)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "case"


def _json(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
