"""Bridge between the engine and MRML, 3D Slicer's scene. The only engine module that touches Slicer.

``slicer`` is imported lazily inside the functions, so the rest of the engine (and ``bonemet --help``) never
needs Slicer. Everything here works both inside the Slicer application and with the pip package
``slicer-core`` (real MRML, no Qt), which the tests use. Without the application there is no
``slicer.mrmlScene``: pass ``scene=`` explicitly (e.g. ``slicer.vtkMRMLScene()``).

Coordinates. The engine keeps SimpleITK's conventions (:class:`bonemet.io.Geometry`: LPS, spacing/origin
in x, y, z order, direction a row-major 3x3 whose columns are the image axes). MRML volume nodes use RAS and
an ``IJKToRAS`` 4x4 matrix. The two are related by ``IJKToRAS = diag(-1, -1, 1, 1) @ IJKToLPS`` with
``IJKToLPS = [[D @ diag(spacing), origin], [0, 0, 0, 1]]``; oblique directions are kept exactly. Voxel arrays
are (z, y, x) = (k, j, i) on both sides, so arrays are never transposed.

What works without the application (checked with slicer-core 5.13): all MRML node classes, storage nodes
(``vtkMRMLSegmentationStorageNode``, ``vtkMRMLVolumeArchetypeStorageNode``), the static methods of
``vtkSlicerSegmentationsModuleLogic`` (import/export of label maps), and the VTK-only helpers
``slicer.util.arrayFromVolume`` / ``updateVolumeFromArray`` / ``arrayFromVolumeModified`` /
``updateTableFromArray``. What needs the application: every helper that reaches for ``slicer.mrmlScene`` or
``slicer.modules`` (``addVolumeFromArray``, ``getNode``, ``arrayFromSegmentBinaryLabelmap``,
``updateSegmentBinaryLabelmapFromArray``, ``loadVolume``...), and ``itkImageFromVolume`` (needs ITK Python).
This module therefore uses only the first group, so the same code runs in Slicer and in the tests.

Segment names used by the product: ``Femur right`` (label 1), ``Femur left`` (label 2), ``Metastasis``;
operator segmentations keep the operator's name. :data:`SEGMENT_COLORS` gives their colours.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from bonemet.atomic import atomic_path
from bonemet.errors import InputError
from bonemet.io import Geometry, Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

FEMUR_RIGHT = "Femur right"
FEMUR_LEFT = "Femur left"
METASTASIS = "Metastasis"
#: label value → segment name of a femur label map (``bonemet femur``: 1 = patient's right, 2 = left).
FEMUR_LABELS = {1: FEMUR_RIGHT, 2: FEMUR_LEFT}
#: RGB colours in [0, 1] (bone-ish for the femurs, red for metastases).
SEGMENT_COLORS = {
    FEMUR_RIGHT: (0.945, 0.839, 0.569),
    FEMUR_LEFT: (0.851, 0.729, 0.447),
    METASTASIS: (0.862, 0.161, 0.161),
}
#: colours given, in turn, to other segments (operators, automatic results...).
PALETTE = [
    (0.122, 0.467, 0.706), (1.000, 0.498, 0.055), (0.173, 0.627, 0.173), (0.580, 0.404, 0.741),
    (0.549, 0.337, 0.294), (0.890, 0.467, 0.761), (0.498, 0.498, 0.498), (0.737, 0.741, 0.133),
    (0.090, 0.745, 0.812),
]


def _slicer():
    try:
        import slicer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the MRML bridge needs 3D Slicer or the 'slicer-core' package "
                           "(pip install 'bonemet[slicer]')") from exc
    return slicer


def in_slicer_app() -> bool:
    """True inside the Slicer application (``slicer.app`` exists), False with ``slicer-core`` alone."""
    slicer = _slicer()
    return getattr(slicer, "app", None) is not None


def default_scene(scene=None):
    """``scene`` itself, else the application's ``slicer.mrmlScene``."""
    if scene is not None:
        return scene
    slicer = _slicer()
    scene = getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise ValueError("no MRML scene: outside the Slicer application pass scene=slicer.vtkMRMLScene()")
    return scene


def _node_scene(node, scene=None):
    return scene if scene is not None else (node.GetScene() if node.GetScene() is not None else default_scene())


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------

def ijk_to_lps(geometry: Geometry) -> np.ndarray:
    """4x4 matrix mapping a voxel index (i, j, k) = (x, y, z) to LPS mm."""
    m = np.eye(4)
    m[:3, :3] = geometry.direction_matrix @ np.diag(np.asarray(geometry.spacing, dtype=float))
    m[:3, 3] = geometry.origin
    return m


def ijk_to_ras(geometry: Geometry) -> np.ndarray:
    """4x4 ``IJKToRAS`` matrix of a volume node with this geometry."""
    return LPS_TO_RAS @ ijk_to_lps(geometry)


def geometry_from_ijk_to_ras(matrix, size_xyz) -> Geometry:
    """Inverse of :func:`ijk_to_ras` (``matrix``: 4x4 array or ``vtkMatrix4x4``)."""
    m = _to_numpy4(matrix)
    lps = LPS_TO_RAS @ m
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"degenerate IJKToRAS matrix (zero spacing): {m.tolist()}")
    direction = axes / spacing
    return Geometry(tuple(int(s) for s in size_xyz), tuple(float(s) for s in spacing),
                    tuple(float(o) for o in lps[:3, 3]), tuple(float(d) for d in direction.ravel()))


def _to_numpy4(matrix) -> np.ndarray:
    if hasattr(matrix, "GetElement"):
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)
    m = np.asarray(matrix, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {m.shape}")
    return m


def _vtk_matrix(m: np.ndarray):
    import vtk

    vm = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vm.SetElement(r, c, float(m[r, c]))
    return vm


def geometry_from_node(node) -> Geometry:
    """Geometry of a volume node (image dimensions + ``IJKToRAS``)."""
    image = node.GetImageData()
    if image is None:
        raise ValueError(f"volume node {node.GetName()!r} has no image data")
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return geometry_from_ijk_to_ras(m, image.GetDimensions())


def set_node_geometry(node, geometry: Geometry) -> None:
    """Set spacing, origin and (oblique) directions of a volume node from an engine geometry."""
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(geometry)))


def ras_to_ijk(geometry: Geometry, ras) -> np.ndarray:
    """RAS point (mm) → continuous voxel index (i, j, k) = (x, y, z)."""
    ras = np.asarray(ras, dtype=float)
    lps = np.array([-ras[0], -ras[1], ras[2]])
    return geometry.physical_to_index(lps)


def ijk_to_ras_point(geometry: Geometry, ijk) -> np.ndarray:
    """Voxel index (i, j, k) → RAS point (mm)."""
    lps = geometry.index_to_physical(ijk)
    return np.array([-lps[0], -lps[1], lps[2]])


# ---------------------------------------------------------------------------------------------------------------
# Scalar volumes
# ---------------------------------------------------------------------------------------------------------------

def volume_to_node(volume: Volume | np.ndarray, geometry: Geometry | None = None, *, scene=None, name: str = "Volume",
                   node=None, labelmap: bool = False, display: bool = True):
    """Put an engine volume (or array + geometry) into a scalar (or label map) volume node.

    ``node``: an existing node to overwrite (its voxels and geometry); otherwise a new node is added to ``scene``.
    ``display``: create the default display nodes (inside the application only).
    Returns the node. Voxels are copied.
    """
    slicer = _slicer()
    if isinstance(volume, Volume):
        array, geometry = volume.array, volume.geometry
    else:
        array = np.asarray(volume)
        if geometry is None:
            raise ValueError("an array needs its geometry")
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array (z, y, x), got shape {array.shape}")
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.int64:
        array = array.astype(np.int32)  # VTK "long long" volumes are refused by Slicer
    if node is None:
        scene = default_scene(scene)
        cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name) if name else cls)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    set_node_geometry(node, geometry)
    if display and in_slicer_app() and node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def node_to_volume(node, dtype=None) -> Volume:
    """Copy of a scalar volume node's voxels (z, y, x) with its geometry (LPS).

    A parent transform is not applied (harden it first); a node under a transform raises ``ValueError`` so a
    result never lands in the wrong place silently.
    """
    slicer = _slicer()
    if node is None:
        raise ValueError("no volume node")
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"volume {node.GetName()!r} is under a transform: harden the transform first")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Volume(array, geometry_from_node(node), None)


def node_to_sitk(node):
    """Volume node → SimpleITK image (LPS, exact geometry)."""
    return node_to_volume(node).to_image()


def sitk_to_node(image, *, scene=None, name: str = "Volume", node=None, labelmap: bool = False):
    """SimpleITK image → volume node."""
    import SimpleITK as sitk

    vol = Volume(sitk.GetArrayFromImage(image), Geometry.from_image(image))
    return volume_to_node(vol, scene=scene, name=name, node=node, labelmap=labelmap)


def update_node_array(node, array: np.ndarray) -> None:
    """Replace a volume node's voxels (same shape), keeping its geometry and display."""
    slicer = _slicer()
    geometry = geometry_from_node(node)
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match the node's shape {geometry.shape}")
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))


# ---------------------------------------------------------------------------------------------------------------
# Segmentations
# ---------------------------------------------------------------------------------------------------------------

def segment_color(name: str, index: int = 0) -> tuple[float, float, float]:
    """Colour of a named segment (:data:`SEGMENT_COLORS`, else the palette in turn)."""
    return SEGMENT_COLORS.get(name, PALETTE[index % len(PALETTE)])


def new_segmentation(*, scene=None, name: str = "Segmentation", geometry: Geometry | None = None,
                     reference_node=None):
    """An empty segmentation node whose reference geometry is ``reference_node``'s or ``geometry``."""
    scene = default_scene(scene)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    seg.CreateDefaultDisplayNodes()
    if reference_node is not None:
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    elif geometry is not None:
        set_reference_geometry(seg, geometry)
    return seg


def set_reference_geometry(seg_node, geometry: Geometry) -> None:
    """Set a segmentation's reference image geometry (the grid Segment Editor works on) from an engine
    geometry, without allocating an image."""
    slicer = _slicer()
    img = slicer.vtkOrientedImageData()
    img.SetExtent(0, geometry.size[0] - 1, 0, geometry.size[1] - 1, 0, geometry.size[2] - 1)
    img.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras(geometry)))
    conv = slicer.vtkSegmentationConverter
    seg_node.GetSegmentation().SetConversionParameter(conv.GetReferenceImageGeometryParameterName(),
                                                      conv.SerializeImageGeometry(img))


def _temp_labelmap(scene, array: np.ndarray, geometry: Geometry, name: str = "__bonemet_temp__"):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    slicer = _slicer()
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array.astype(np.uint8, copy=False)))
    set_node_geometry(node, geometry)
    return node


def segment_names(seg_node) -> list[str]:
    """Names of the segments, in order."""
    s = seg_node.GetSegmentation()
    return [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())]


def segment_ids(seg_node) -> list[str]:
    s = seg_node.GetSegmentation()
    return [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]


def find_segment(seg_node, segment: str) -> str | None:
    """Segment ID from an ID or a name (``None`` when absent)."""
    s = seg_node.GetSegmentation()
    if s.GetSegment(segment) is not None:
        return segment
    sid = s.GetSegmentIdBySegmentName(segment)
    return sid or None


def _require_segment(seg_node, segment: str) -> str:
    sid = find_segment(seg_node, segment)
    if sid is None:
        raise KeyError(f"segmentation {seg_node.GetName()!r} has no segment {segment!r} "
                       f"(segments: {', '.join(segment_names(seg_node)) or 'none'})")
    return sid


def oriented_image(array: np.ndarray, geometry: Geometry):
    """uint8 array (z, y, x) on ``geometry`` → ``vtkOrientedImageData`` (Slicer's segment labelmap type)."""
    slicer = _slicer()
    import vtk
    from vtk.util import numpy_support

    array = np.asarray(array, dtype=np.uint8)
    img = slicer.vtkOrientedImageData()
    img.SetDimensions(*[int(v) for v in array.shape[::-1]])
    img.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(array.shape)[:] = array
    img.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras(geometry)))
    return img


def set_segment_mask(seg_node, mask: np.ndarray, geometry: Geometry, name: str,
                     color: Sequence[float] | None = None, *, scene=None) -> str:
    """Write a binary mask (z, y, x on ``geometry``) as segment ``name``: replaced when a segment of that
    name exists (same ID, so Segment Editor history and display settings stay), added otherwise.
    Returns the segment ID.

    Only the mask's bounding box is handed to Slicer (segments keep their own extent, as Segment Editor does),
    so loading a small lesion or a femur into a full-size CT's segmentation stays fast."""
    slicer = _slicer()
    from bonemet.geometry import bbox_slices, crop_geometry

    mask = np.asarray(mask)
    if tuple(mask.shape) != geometry.shape:
        raise ValueError(f"mask shape {mask.shape} does not match geometry shape {geometry.shape}")
    if _segmentation_is_empty_geometry(seg_node):
        set_reference_geometry(seg_node, geometry)
    existing = find_segment(seg_node, name)
    seg = seg_node.GetSegmentation()
    box = bbox_slices(mask > 0)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if existing is not None:
        sid = existing
        if box is None:
            _clear_segment(seg_node, sid)
        else:
            img = oriented_image(mask[box] > 0, crop_geometry(geometry, box))
            if not logic.SetBinaryLabelmapToSegment(img, seg_node, sid, logic.MODE_REPLACE):
                raise RuntimeError(f"could not update segment {name!r}")
    elif box is None:
        sid = seg.AddEmptySegment("", name)
    else:
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(),
                                  oriented_image(mask[box] > 0, crop_geometry(geometry, box)))
        if not seg.AddSegment(segment):
            raise RuntimeError(f"could not add segment {name!r}")
        sid = seg.GetSegmentIdBySegment(segment)
    segment = seg.GetSegment(sid)
    segment.SetName(name)
    if color is None:
        color = segment_color(name, len(segment_ids(seg_node)) - 1) if existing is None else segment.GetColor()
    segment.SetColor(*[float(c) for c in color])
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)
    return sid


def _segmentation_is_empty_geometry(seg_node) -> bool:
    slicer = _slicer()
    param = seg_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    return not param


def _clear_segment(seg_node, sid: str) -> None:
    _slicer().vtkSlicerSegmentationsModuleLogic.ClearSegment(seg_node, sid)


def segmentation_from_labelmap(labelmap: np.ndarray, geometry: Geometry, names: Mapping[int, str] | None = None,
                               colors: Mapping[str, Sequence[float]] | None = None, *, scene=None, node=None,
                               name: str = "Segmentation", reference_node=None, skip_empty: bool = False):
    """Label map (z, y, x) → segmentation node, one segment per label value.

    ``names``: label value → segment name (default ``Label <v>``; use :data:`FEMUR_LABELS` for femur maps);
    labels in ``names`` absent from the map still get an (empty) segment unless ``skip_empty``.
    ``node``: add/replace segments in an existing segmentation (other segments are kept).
    ``reference_node``: volume node whose grid becomes the segmentation's reference geometry.
    """
    labelmap = np.asarray(labelmap)
    names = dict(names) if names is not None else {}
    vmax = int(labelmap.max()) if labelmap.size else 0
    present: dict[int, np.ndarray] = {}
    if 0 < vmax <= 32:  # few labels (femur maps): one comparison per label, no histogram of the whole volume
        for v in range(1, vmax + 1):
            m = labelmap == v
            if m.any():
                present[v] = m
    elif vmax > 32:
        present = {int(v): labelmap == v for v in np.unique(labelmap) if v != 0}
    labels = sorted(set(present) | (set() if skip_empty else set(names)))
    masks = {names.get(v, f"Label {v}"): present[v] if v in present else np.zeros(labelmap.shape, bool)
             for v in labels}
    return segmentation_from_masks(masks, geometry, colors, scene=scene, node=node, name=name,
                                   reference_node=reference_node)


def segmentation_from_masks(masks: Mapping[str, np.ndarray], geometry: Geometry,
                            colors: Mapping[str, Sequence[float]] | None = None, *, scene=None, node=None,
                            name: str = "Segmentation", reference_node=None):
    """Binary masks by segment name (each z, y, x on ``geometry``) → segmentation node (see
    :func:`segmentation_from_labelmap`)."""
    if node is None:
        node = new_segmentation(scene=scene, name=name, geometry=None if reference_node is not None else geometry,
                                reference_node=reference_node)
    elif reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    colors = colors or {}
    for seg_name, mask in masks.items():
        set_segment_mask(node, mask, geometry, seg_name, colors.get(seg_name), scene=scene)
    return node


def segment_mask(seg_node, segment: str, geometry: Geometry | None = None, *, reference_node=None,
                 scene=None) -> np.ndarray:
    """Binary uint8 mask (z, y, x) of one segment (ID or name) on ``geometry`` (or ``reference_node``'s grid,
    or the segmentation's reference geometry)."""
    masks = segment_masks(seg_node, [segment], geometry, reference_node=reference_node, scene=scene)
    return next(iter(masks.values()))


def segment_masks(seg_node, segments: Iterable[str] | None = None, geometry: Geometry | None = None, *,
                  reference_node=None, scene=None) -> dict[str, np.ndarray]:
    """Binary masks by segment name (all segments by default) on one grid (see :func:`segment_mask`)."""
    slicer = _slicer()
    import vtk

    scene = _node_scene(seg_node, scene)
    ids = [_require_segment(seg_node, s) for s in segments] if segments is not None else segment_ids(seg_node)
    if geometry is None and reference_node is None:
        geometry = segmentation_reference_geometry(seg_node)
    temp_ref = None
    if reference_node is None:
        temp_ref = reference_node = _temp_labelmap(scene, np.zeros(geometry.shape, np.uint8), geometry,
                                                   "__bonemet_ref__")
    target = geometry_from_node(reference_node)
    shape = target.shape
    out = {}
    try:
        seg = seg_node.GetSegmentation()
        for sid in ids:
            name = seg.GetSegment(sid).GetName()
            fast = _segment_on_grid(seg_node, sid, target)
            if fast is not None:
                out[name] = fast
                continue
            lab = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__bonemet_export__")
            try:
                arr_ids = vtk.vtkStringArray()
                arr_ids.InsertNextValue(sid)
                ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    seg_node, arr_ids, lab, reference_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
                if not ok:
                    raise RuntimeError(f"could not export segment {name!r}")
                if lab.GetImageData() is None:
                    arr = np.zeros(shape, np.uint8)
                else:
                    arr = (np.asarray(slicer.util.arrayFromVolume(lab)) > 0).astype(np.uint8)
                if arr.shape != shape:
                    raise RuntimeError(f"exported segment {name!r} has shape {arr.shape}, expected {shape}")
                out[name] = arr
            finally:
                if lab.GetDisplayNode() is not None:
                    scene.RemoveNode(lab.GetDisplayNode())
                scene.RemoveNode(lab)
    finally:
        if temp_ref is not None:
            scene.RemoveNode(temp_ref)
    return out


def _segment_on_grid(seg_node, sid: str, target: Geometry) -> np.ndarray | None:
    """The segment's own binary labelmap pasted onto ``target`` when both grids are aligned (same axes and
    spacing, whole-voxel offset: the usual case); ``None`` otherwise (then Slicer resamples)."""
    slicer = _slicer()
    import vtk
    from vtk.util import numpy_support

    img = slicer.vtkOrientedImageData()
    if not seg_node.GetBinaryLabelmapRepresentation(sid, img):
        return None
    out = np.zeros(target.shape, np.uint8)
    ext = img.GetExtent()
    if ext[1] < ext[0] or ext[3] < ext[2] or ext[5] < ext[4] or img.GetPointData().GetScalars() is None:
        return out  # empty segment
    m = vtk.vtkMatrix4x4()
    img.GetImageToWorldMatrix(m)
    # segment voxel index → target voxel index
    mapping = np.linalg.inv(ijk_to_ras(target)) @ _to_numpy4(m)
    if not np.allclose(mapping[:3, :3], np.eye(3), atol=1e-4):
        return None
    offset = mapping[:3, 3] + np.array([ext[0], ext[2], ext[4]], dtype=float)
    if not np.allclose(offset, np.round(offset), atol=1e-3):
        return None
    offset = np.round(offset).astype(int)  # x, y, z of the segment's first voxel in the target grid
    size = (ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1)
    data = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(size[::-1])
    src, dst = [], []
    for ax_zyx in range(3):
        ax = 2 - ax_zyx
        lo, n, lim = int(offset[ax]), size[ax], target.size[ax]
        a, b = max(lo, 0), min(lo + n, lim)
        if b <= a:
            return out  # no overlap with the target grid
        dst.append(slice(a, b))
        src.append(slice(a - lo, b - lo))
    out[tuple(dst)] = data[tuple(src)] > 0
    return out


def segmentation_to_labelmap(seg_node, geometry: Geometry | None = None, segments: Iterable[str] | None = None, *,
                             reference_node=None, scene=None) -> tuple[np.ndarray, dict[int, str]]:
    """Segments → one label map (uint8/uint16), values 1..n in segment order; where segments overlap the later
    one wins. Returns (label map, {value: segment name})."""
    masks = segment_masks(seg_node, segments, geometry, reference_node=reference_node, scene=scene)
    shape = next(iter(masks.values())).shape if masks else (geometry or segmentation_reference_geometry(seg_node)).shape
    out = np.zeros(shape, np.uint8 if len(masks) < 256 else np.uint16)
    names = {}
    for value, (name, mask) in enumerate(masks.items(), start=1):
        out[mask > 0] = value
        names[value] = name
    return out, names


def segmentation_reference_geometry(seg_node) -> Geometry:
    """The segmentation's reference image geometry (the grid Segment Editor works on)."""
    slicer = _slicer()
    seg = seg_node.GetSegmentation()
    text = seg.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not text:
        raise ValueError(f"segmentation {seg_node.GetName()!r} has no reference geometry: pass a geometry")
    img = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, img)
    import vtk

    m = vtk.vtkMatrix4x4()
    img.GetImageToWorldMatrix(m)
    ext = img.GetExtent()
    size = (ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1)
    mm = _to_numpy4(m)
    # Shift the origin to the first voxel of the extent.
    mm[:3, 3] = mm[:3, :3] @ np.array([ext[0], ext[2], ext[4]], dtype=float) + mm[:3, 3]
    return geometry_from_ijk_to_ras(mm, size)


def save_segmentation(seg_node, path: str | os.PathLike, *, scene=None, crop: bool = False) -> Path:
    """Write a segmentation node as ``.seg.nrrd`` (Slicer's own storage node), atomically.

    The file holds segment names, colours, label values and the geometry; Slicer, ``slicerio`` and plain NRRD
    readers read it back. By default the voxels cover the whole reference grid (the CT's), so any NRRD reader
    gets a mask on the CT grid; ``crop=True`` stores only the segments' bounding box (much smaller and faster
    for big CTs; Slicer and ``slicerio`` place it correctly, plain readers see the smaller grid)."""
    slicer = _slicer()
    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise InputError("a segmentation file must end with .seg.nrrd", path)
    scene = _node_scene(seg_node, scene)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode", "__bonemet_storage__") \
        if scene is not None else slicer.vtkMRMLSegmentationStorageNode()
    # Merge segments that do not overlap into shared layers (content unchanged; smaller, simpler files).
    seg_node.GetSegmentation().CollapseBinaryLabelmaps(False)
    try:
        with atomic_path(path) as tmp:
            storage.SetFileName(str(tmp))
            storage.SetUseCompression(True)
            storage.SetCropToMinimumExtent(bool(crop))
            if not storage.WriteData(seg_node):
                raise RuntimeError(f"writing {path} failed")
    finally:
        if scene is not None:
            scene.RemoveNode(storage)
    return path


def load_segmentation(path: str | os.PathLike, *, scene=None, name: str | None = None):
    """Read a ``.seg.nrrd`` (or any label map file Slicer's segmentation storage reads) into a new node."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    scene = default_scene(scene)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                  scene.GenerateUniqueName(name or path.name.split(".")[0]))
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(seg):
        scene.RemoveNode(seg)
        scene.RemoveNode(storage)
        raise InputError("cannot read segmentation", path)
    seg.SetAndObserveStorageNodeID(storage.GetID())
    seg.CreateDefaultDisplayNodes()
    return seg


def write_seg_nrrd(path: str | os.PathLike, segments: np.ndarray | Mapping[str, np.ndarray], geometry: Geometry,
                   names: Mapping[int, str] | None = None,
                   colors: Mapping[str, Sequence[float]] | None = None, crop: bool = False) -> Path:
    """Write a label map or named binary masks as a Slicer ``.seg.nrrd`` without a scene of one's own
    (a private MRML scene is used)."""
    slicer = _slicer()
    scene = slicer.vtkMRMLScene()
    if isinstance(segments, Mapping):
        node = segmentation_from_masks(segments, geometry, colors, scene=scene)
    else:
        node = segmentation_from_labelmap(segments, geometry, names, colors, scene=scene)
    return save_segmentation(node, path, scene=scene, crop=crop)


# ---------------------------------------------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------------------------------------------

def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))


def rows_to_table(rows: Sequence[Mapping], *, scene=None, name: str = "Table", columns: Sequence[str] | None = None,
                  node=None):
    """List of dicts (e.g. metric rows) → table node. Columns whose values are all numbers (or ``None``) are
    double columns (``None`` → NaN, shown empty); others are strings. Returns the table node."""
    import vtk

    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    if node is None:
        scene = default_scene(scene)
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = node.GetTable()
    was = node.StartModify()
    try:
        while table.GetNumberOfColumns():
            table.RemoveColumn(0)
        for col in columns:
            values = [r.get(col) for r in rows]
            numeric = all(_is_number(v) for v in values) and any(v is not None for v in values)
            if numeric:
                arr = vtk.vtkDoubleArray()
                for v in values:
                    arr.InsertNextValue(float("nan") if v is None else float(v))
            else:
                arr = vtk.vtkStringArray()
                for v in values:
                    arr.InsertNextValue("" if v is None else str(v))
            arr.SetName(str(col))
            table.AddColumn(arr)
        table.Modified()
        node.Modified()
    finally:
        node.EndModify(was)
    return node


def table_to_rows(node) -> list[dict]:
    """Table node → list of dicts (NaN → ``None``; numbers as float, strings as str)."""
    table = node.GetTable()
    ncols, nrows = table.GetNumberOfColumns(), table.GetNumberOfRows()
    cols = [table.GetColumn(c) for c in range(ncols)]
    rows = []
    for r in range(nrows):
        row = {}
        for col in cols:
            if col.IsA("vtkDataArray"):
                v = float(col.GetTuple1(r))
                row[col.GetName()] = None if math.isnan(v) else v
            else:
                row[col.GetName()] = col.GetValue(r)
        rows.append(row)
    return rows


def save_table_csv(node, path: str | os.PathLike) -> Path:
    """Write a table node as CSV (header = column names; empty cell where undefined), atomically."""
    rows = table_to_rows(node)
    table = node.GetTable()
    columns = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})
    return path


def plot_table(table_node, y_columns: Sequence[str], x_column: str | None = None, *, scene=None,
               name: str = "Chart", plot_type: str = "bar", chart=None, title: str | None = None,
               y_title: str | None = None):
    """One plot series per ``y_columns`` of a table node, gathered in a chart node (new or ``chart``).

    ``x_column``: numeric column for the x axis, or a string column used as category labels (bar plots);
    ``plot_type``: ``bar``, ``scatter`` or ``line``. Returns the chart node."""
    slicer = _slicer()
    scene = _node_scene(table_node, scene)
    types = {"bar": slicer.vtkMRMLPlotSeriesNode.PlotTypeBar, "scatter": slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
             "line": slicer.vtkMRMLPlotSeriesNode.PlotTypeLine}
    if plot_type not in types:
        raise ValueError(f"plot_type must be one of {sorted(types)}")
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    else:  # refill: drop the chart's old series nodes
        old = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
        chart.RemoveAllPlotSeriesNodeIDs()
        for node in old:
            if node is not None and node.GetScene() is not None:
                scene.RemoveNode(node)
    table = table_node.GetTable()
    x_is_label = x_column is not None and not table.GetColumnByName(x_column).IsA("vtkDataArray")
    for i, col in enumerate(y_columns):
        if table.GetColumnByName(col) is None:
            raise KeyError(f"table {table_node.GetName()!r} has no column {col!r}")
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{name} {col}"))
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetYColumnName(col)
        if x_column is not None:
            if x_is_label:
                series.SetLabelColumnName(x_column)
            else:
                series.SetXColumnName(x_column)
        series.SetPlotType(types[plot_type])
        series.SetColor(*PALETTE[i % len(PALETTE)])
        if plot_type == "scatter":
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(title or name)
    if x_column is not None:
        chart.SetXAxisTitle(x_column)
    if y_title or len(y_columns) == 1:
        chart.SetYAxisTitle(y_title or y_columns[0])
    return chart


def plot_values(values: Mapping[str, Sequence[float]], labels: Sequence[str] | None = None, *, scene=None,
                name: str = "Chart", plot_type: str = "bar", title: str | None = None):
    """Plot named series of numbers (same length): builds a table node (``labels`` as the category column,
    else an ``index`` column) and a chart. Returns (chart node, table node)."""
    n = {len(v) for v in values.values()}
    if len(n) > 1:
        raise ValueError(f"series have different lengths: {sorted(n)}")
    count = n.pop() if n else 0
    x = "label" if labels is not None else "index"
    xs = list(labels) if labels is not None else list(range(count))
    rows = [{x: xs[i], **{k: (None if v[i] is None else float(v[i])) for k, v in values.items()}}
            for i in range(count)]
    table = rows_to_table(rows, scene=scene, name=f"{name} table", columns=[x, *values])
    chart = plot_table(table, list(values), x, scene=scene, name=name, plot_type=plot_type, title=title)
    return chart, table


# ---------------------------------------------------------------------------------------------------------------
# Markups
# ---------------------------------------------------------------------------------------------------------------

def markup_point_ras(markups_node, index: int = 0, world: bool = True) -> np.ndarray:
    """RAS position of control point ``index`` of a markups node (with parent transforms when ``world``)."""
    n = markups_node.GetNumberOfControlPoints()
    if index >= n:
        raise ValueError(f"markups {markups_node.GetName()!r} has {n} control point(s); point {index} requested")
    p = [0.0, 0.0, 0.0]
    if world:
        markups_node.GetNthControlPointPositionWorld(index, p)
    else:
        markups_node.GetNthControlPointPosition(index, p)
    return np.asarray(p, dtype=float)
