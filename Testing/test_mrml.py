"""MRML bridge (bonemet.mrml) on real MRML scenes from the pip package slicer-core (no fakes)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test extras")
slicerio = pytest.importorskip("slicerio")

from bonemet import io, mrml  # noqa: E402
from bonemet.io import Geometry, Volume  # noqa: E402


def oblique_geometry(size=(7, 6, 5), spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0)) -> Geometry:
    rot = sitk.VersorRigid3DTransform((0.3, 0.2, 0.1), 0.4).GetMatrix()
    return Geometry(size, spacing, origin, tuple(rot))


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def femur_case():
    g = oblique_geometry()
    lab = np.zeros(g.shape, np.uint8)
    lab[1:4, 1:4, 1:3] = 1
    lab[1:4, 2:5, 4:7] = 2
    les = np.zeros(g.shape, np.uint8)
    les[2, 2, 1:3] = 1
    return g, lab, les


# ---- geometry and volumes -------------------------------------------------------------------------------------

def test_ijk_to_ras_matches_simpleitk_with_lps_flip():
    g = oblique_geometry()
    image = io.to_image(np.zeros(g.shape, np.float32), g)
    m = mrml.ijk_to_ras(g)
    for ijk in [(0, 0, 0), (3, 2, 1), (6, 5, 4)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = (m @ np.array([*ijk, 1.0]))[:3]
        np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)
        np.testing.assert_allclose(mrml.ras_to_ijk(g, ras), ijk, atol=1e-9)
        np.testing.assert_allclose(mrml.ijk_to_ras_point(g, ijk), ras, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_volume_round_trip_exact(scene, dtype):
    g = oblique_geometry()
    arr = (np.random.default_rng(0).normal(size=g.shape) * 100).astype(dtype)
    node = mrml.volume_to_node(Volume(arr, g), scene=scene, name="CT")
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetScene() is scene
    back = mrml.node_to_volume(node)
    assert back.array.dtype == arr.dtype
    np.testing.assert_array_equal(back.array, arr)
    assert back.geometry.size == g.size
    np.testing.assert_allclose(back.geometry.spacing, g.spacing, atol=1e-12)
    np.testing.assert_allclose(back.geometry.origin, g.origin, atol=1e-12)
    np.testing.assert_allclose(back.geometry.direction, g.direction, atol=1e-12)
    # the copy is independent of the node
    back.array[0, 0, 0] += 1
    assert slicer.util.arrayFromVolume(node)[0, 0, 0] == arr[0, 0, 0]


def test_node_geometry_agrees_with_slicer_file_reader(scene, tmp_path):
    """A file written by the engine and read by Slicer's own volume storage node has exactly the IJKToRAS that
    volume_to_node sets: the RAS/LPS handling matches Slicer's."""
    g = oblique_geometry()
    arr = np.arange(np.prod(g.shape), dtype=np.int16).reshape(g.shape)
    path = io.write_volume(tmp_path / "ct.nrrd", arr, g)
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(loaded)
    ours = mrml.volume_to_node(arr, g, scene=scene, name="ours")
    import vtk

    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    loaded.GetIJKToRASMatrix(a)
    ours.GetIJKToRASMatrix(b)
    np.testing.assert_allclose(mrml._to_numpy4(a), mrml._to_numpy4(b), atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded), arr)
    # and back: node → engine geometry equals what SimpleITK reads from the file
    assert mrml.geometry_from_node(loaded).same_grid(io.read_volume(path).geometry)


def test_sitk_round_trip_and_overwrite(scene):
    g = oblique_geometry()
    image = io.to_image(np.ones(g.shape, np.float32) * 3, g)
    node = mrml.sitk_to_node(image, scene=scene, name="img")
    out = mrml.node_to_sitk(node)
    assert Geometry.from_image(out).same_grid(g, tol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), 3)
    # overwrite the same node with a different grid
    g2 = Geometry((4, 4, 4), (1.0, 1.0, 1.0))
    same = mrml.volume_to_node(np.zeros(g2.shape, np.int16), g2, node=node)
    assert same is node and mrml.geometry_from_node(node).same_grid(g2)
    mrml.update_node_array(node, np.full(g2.shape, 7, np.int16))
    assert int(slicer.util.arrayFromVolume(node).max()) == 7


def test_volume_errors(scene):
    g = oblique_geometry()
    with pytest.raises(ValueError, match="does not match"):
        mrml.volume_to_node(np.zeros((2, 2, 2)), g, scene=scene)
    with pytest.raises(ValueError, match="needs its geometry"):
        mrml.volume_to_node(np.zeros((2, 2, 2)), scene=scene)
    node = mrml.volume_to_node(np.zeros(g.shape), g, scene=scene)
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(t.GetID())
    with pytest.raises(ValueError, match="transform"):
        mrml.node_to_volume(node)


def test_default_scene_needs_app_or_scene():
    if getattr(slicer, "mrmlScene", None) is None:
        with pytest.raises(ValueError, match="scene"):
            mrml.default_scene()
        assert not mrml.in_slicer_app()


# ---- segmentations ----------------------------------------------------------------------------------------------

def test_femur_labelmap_to_segments_and_back(scene, femur_case):
    g, lab, _ = femur_case
    seg = mrml.segmentation_from_labelmap(lab, g, mrml.FEMUR_LABELS, scene=scene, name="Femur")
    assert mrml.segment_names(seg) == ["Femur right", "Femur left"]
    s = seg.GetSegmentation()
    color = s.GetSegment(mrml.find_segment(seg, "Femur right")).GetColor()
    np.testing.assert_allclose(color, mrml.SEGMENT_COLORS["Femur right"], atol=1e-6)
    masks = mrml.segment_masks(seg, geometry=g)
    np.testing.assert_array_equal(masks["Femur right"], lab == 1)
    np.testing.assert_array_equal(masks["Femur left"], lab == 2)
    labelmap, names = mrml.segmentation_to_labelmap(seg, g)
    assert names == {1: "Femur right", 2: "Femur left"}
    np.testing.assert_array_equal(labelmap, lab)
    assert mrml.segmentation_reference_geometry(seg).same_grid(g, tol=1e-9)


def test_metastasis_segment_added_replaced_cleared(scene, femur_case):
    g, lab, les = femur_case
    ct = mrml.volume_to_node(np.zeros(g.shape, np.int16), g, scene=scene, name="CT")
    seg = mrml.segmentation_from_labelmap(lab, g, mrml.FEMUR_LABELS, scene=scene, reference_node=ct)
    sid = mrml.set_segment_mask(seg, les, g, mrml.METASTASIS)
    assert mrml.segment_names(seg) == ["Femur right", "Femur left", "Metastasis"]
    np.testing.assert_array_equal(mrml.segment_mask(seg, "Metastasis", reference_node=ct), les)
    # replace: same segment ID, new content
    les2 = np.zeros_like(les)
    les2[3, 3, 5] = 1
    assert mrml.set_segment_mask(seg, les2, g, mrml.METASTASIS) == sid
    np.testing.assert_array_equal(mrml.segment_mask(seg, sid, g), les2)
    # an empty result clears the segment (it does not keep the old lesion)
    assert mrml.set_segment_mask(seg, np.zeros_like(les), g, mrml.METASTASIS) == sid
    assert mrml.segment_mask(seg, "Metastasis", g).sum() == 0
    # femur segments untouched
    np.testing.assert_array_equal(mrml.segment_mask(seg, "Femur left", g), lab == 2)
    with pytest.raises(KeyError, match="no segment"):
        mrml.segment_mask(seg, "Nope", g)


def test_operator_masks_overlapping(scene, femur_case):
    g, lab, les = femur_case
    masks = {"Alice": lab == 1, "Bob": (lab >= 1), "Automatic": les}
    seg = mrml.segmentation_from_masks(masks, g, scene=scene, name="Operators")
    assert mrml.segment_names(seg) == ["Alice", "Bob", "Automatic"]
    out = mrml.segment_masks(seg, geometry=g)
    for k, m in masks.items():
        np.testing.assert_array_equal(out[k], m.astype(np.uint8))
    colors = [tuple(seg.GetSegmentation().GetSegment(i).GetColor()) for i in mrml.segment_ids(seg)]
    assert len(set(colors)) == 3


def test_segment_on_other_grid_is_resampled(scene):
    """A mask on a 1 mm grid read back on a 2 mm grid covering the same space (nearest-neighbour)."""
    g1 = Geometry((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    m = np.zeros(g1.shape, np.uint8)
    m[2:6, 2:6, 2:6] = 1
    seg = mrml.segmentation_from_masks({"Metastasis": m}, g1, scene=scene)
    g2 = Geometry((4, 4, 4), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    out = mrml.segment_mask(seg, "Metastasis", g2)
    assert out.shape == (4, 4, 4)
    assert out[1:3, 1:3, 1:3].all() and out.sum() == 8


# ---- .seg.nrrd --------------------------------------------------------------------------------------------------

def test_seg_nrrd_read_by_slicer_storage_and_slicerio(scene, femur_case, tmp_path):
    g, lab, les = femur_case
    seg = mrml.segmentation_from_labelmap(lab, g, mrml.FEMUR_LABELS, scene=scene)
    mrml.set_segment_mask(seg, les, g, mrml.METASTASIS)
    path = mrml.save_segmentation(seg, tmp_path / "case.seg.nrrd")
    assert path.exists() and not list(tmp_path.glob(".*tmp*"))

    # Slicer's own storage node, in a fresh scene
    scene2 = slicer.vtkMRMLScene()
    seg2 = mrml.load_segmentation(path, scene=scene2)
    assert mrml.segment_names(seg2) == ["Femur right", "Femur left", "Metastasis"]
    masks = mrml.segment_masks(seg2, geometry=g)
    np.testing.assert_array_equal(masks["Femur right"], lab == 1)
    np.testing.assert_array_equal(masks["Femur left"], lab == 2)
    np.testing.assert_array_equal(masks["Metastasis"], les)
    color = seg2.GetSegmentation().GetSegment(mrml.find_segment(seg2, "Metastasis")).GetColor()
    np.testing.assert_allclose(color, mrml.SEGMENT_COLORS["Metastasis"], atol=1e-5)

    # slicerio (pynrrd underneath): names, label values, geometry (ijkToLPS), voxels in (x, y, z) order
    s = slicerio.read_segmentation(str(path))
    by_name = {x["name"]: x for x in s["segments"]}
    assert list(by_name) == ["Femur right", "Femur left", "Metastasis"]
    np.testing.assert_allclose(s["ijkToLPS"], mrml.ijk_to_lps(g), atol=1e-5)
    # the lesion lies inside the femur: overlapping segments are stored in separate layers
    assert by_name["Metastasis"]["layer"] != by_name["Femur right"]["layer"]
    assert by_name["Femur right"]["layer"] == by_name["Femur left"]["layer"]
    for name, ref in [("Femur right", lab == 1), ("Femur left", lab == 2), ("Metastasis", les > 0)]:
        one = slicerio.extract_segments(s, [(name, 1)])
        zyx = np.transpose(np.asarray(one["voxels"]), (2, 1, 0))
        np.testing.assert_array_equal(zyx == 1, ref)
    np.testing.assert_allclose(by_name["Metastasis"]["color"], mrml.SEGMENT_COLORS["Metastasis"], atol=1e-5)


def test_write_seg_nrrd_without_scene_and_overlaps_in_layers(femur_case, tmp_path):
    g, lab, les = femur_case
    path = mrml.write_seg_nrrd(tmp_path / "ops.seg.nrrd", {"Femur": lab > 0, "Metastasis": les}, g)
    s = slicerio.read_segmentation(str(path))
    assert [x["name"] for x in s["segments"]] == ["Femur", "Metastasis"]
    # overlapping segments → extract each with slicerio and compare
    for name, ref in [("Femur", lab > 0), ("Metastasis", les > 0)]:
        one = slicerio.extract_segments(s, [(name, 1)])
        vox = np.asarray(one["voxels"])
        np.testing.assert_array_equal(np.transpose(vox, (2, 1, 0)) == 1, ref)
    # label map + names
    p2 = mrml.write_seg_nrrd(tmp_path / "femur.seg.nrrd", lab, g, mrml.FEMUR_LABELS)
    assert [x["name"] for x in slicerio.read_segmentation(str(p2))["segments"]] == ["Femur right", "Femur left"]
    with pytest.raises(Exception, match="seg.nrrd"):
        mrml.write_seg_nrrd(tmp_path / "x.nrrd", lab, g)


def test_load_segmentation_missing_file(scene, tmp_path):
    from bonemet.errors import InputError

    with pytest.raises(InputError, match="not found"):
        mrml.load_segmentation(tmp_path / "missing.seg.nrrd", scene=scene)


# ---- tables, plots, markups -------------------------------------------------------------------------------------

def test_metrics_table_round_trip_csv_and_plot(scene, tmp_path):
    rows = [
        {"reference": "Expert", "other": "Auto", "dice": 0.81, "hd95": 2.5, "status": "ok", "tp": 3},
        {"reference": "Expert", "other": "Novice", "dice": None, "hd95": None, "status": "true_negative", "tp": 0},
    ]
    table = mrml.rows_to_table(rows, scene=scene, name="Compare")
    assert table.GetNumberOfRows() == 2 and table.GetNumberOfColumns() == 6
    assert table.GetTable().GetColumnByName("dice").IsA("vtkDoubleArray")
    assert table.GetTable().GetColumnByName("status").IsA("vtkStringArray")
    back = mrml.table_to_rows(table)
    assert back[0]["dice"] == pytest.approx(0.81) and back[1]["dice"] is None
    assert back[1]["status"] == "true_negative" and back[0]["tp"] == 3
    path = mrml.save_table_csv(table, tmp_path / "compare.csv")
    with open(path, newline="") as f:
        got = list(csv.DictReader(f))
    assert got[0]["dice"] == "0.81" and got[1]["dice"] == "" and got[1]["other"] == "Novice"

    chart = mrml.plot_table(table, ["dice", "hd95"], "other", scene=scene, name="Dice")
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is table and series.GetYColumnName() == "dice"
    assert series.GetLabelColumnName() == "other"
    assert series.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeBar
    # refreshing the same chart replaces its series (no orphan series nodes left in the scene)
    same_chart = mrml.plot_table(table, ["dice"], "other", scene=scene, chart=chart)
    assert same_chart is chart and chart.GetNumberOfPlotSeriesNodes() == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 1
    # refilling the same table node keeps it
    same = mrml.rows_to_table(rows[:1], node=table)
    assert same is table and table.GetNumberOfRows() == 1
    with pytest.raises(KeyError):
        mrml.plot_table(table, ["nope"], scene=scene)


def test_plot_values(scene):
    chart, table = mrml.plot_values({"Dice": [0.5, 0.7, None]}, ["a", "b", "c"], scene=scene, name="Dice",
                                    plot_type="scatter")
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    assert mrml.table_to_rows(table)[2] == {"label": "c", "Dice": None}
    with pytest.raises(ValueError, match="lengths"):
        mrml.plot_values({"a": [1], "b": [1, 2]}, scene=scene)


def test_markup_point_to_voxel(scene):
    g = oblique_geometry()
    ras = mrml.ijk_to_ras_point(g, (3, 2, 1))
    m = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    m.AddControlPoint(*ras)
    np.testing.assert_allclose(mrml.markup_point_ras(m), ras)
    np.testing.assert_allclose(mrml.ras_to_ijk(g, mrml.markup_point_ras(m)), (3, 2, 1), atol=1e-9)
    with pytest.raises(ValueError, match="control point"):
        mrml.markup_point_ras(m, 3)


def test_segments_are_stored_cropped_and_read_back_on_the_grid(scene, femur_case, tmp_path):
    """Segments keep only their bounding box (fast for big CTs); reading them back on the CT grid pastes them
    directly when the grids are aligned — checked against Slicer's own resampling export."""
    g, lab, les = femur_case
    seg = mrml.segmentation_from_labelmap(lab, g, mrml.FEMUR_LABELS, scene=scene)
    sid = mrml.find_segment(seg, "Femur right")
    img = slicer.vtkOrientedImageData()
    seg.GetBinaryLabelmapRepresentation(sid, img)
    ext = img.GetExtent()
    assert (ext[1] - ext[0] + 1) * (ext[3] - ext[2] + 1) * (ext[5] - ext[4] + 1) == (lab == 1).sum()
    fast = mrml._segment_on_grid(seg, sid, g)
    assert fast is not None
    np.testing.assert_array_equal(fast, lab == 1)
    # the same after a save/load (segments then share a layer with different label values)
    seg2 = mrml.load_segmentation(mrml.save_segmentation(seg, tmp_path / "f.seg.nrrd"), scene=scene)
    for name, value in (("Femur right", 1), ("Femur left", 2)):
        np.testing.assert_array_equal(mrml._segment_on_grid(seg2, mrml.find_segment(seg2, name), g), lab == value)
    # a grid that is not aligned (half-voxel shift) goes through Slicer's resampling instead
    shifted = Geometry(g.size, g.spacing, tuple(np.asarray(g.origin) + 0.35), g.direction)
    assert mrml._segment_on_grid(seg, sid, shifted) is None
    assert mrml.segment_mask(seg, sid, shifted).shape == g.shape


def test_cropped_seg_nrrd_is_placed_right_by_slicer_and_slicerio(scene, femur_case, tmp_path):
    g, lab, les = femur_case
    path = mrml.write_seg_nrrd(tmp_path / "c.seg.nrrd", {"Metastasis": les}, g, crop=True)
    s = slicerio.read_segmentation(str(path))
    vox = np.asarray(s["voxels"])
    assert vox.size == les.sum() < les.size  # only the lesion's bounding box is stored
    # slicerio's ijkToLPS places the cropped block: its first voxel is the lesion's first voxel
    first = np.argwhere(les)[0][::-1]  # (i, j, k)
    np.testing.assert_allclose(np.asarray(s["ijkToLPS"])[:3, 3], g.index_to_physical(first), atol=1e-4)
    seg = mrml.load_segmentation(path, scene=scene)
    np.testing.assert_array_equal(mrml.segment_mask(seg, "Metastasis", g), les)
