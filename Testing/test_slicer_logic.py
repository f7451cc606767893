"""Slicer module logic below the widget, on real MRML scenes from slicer-core (no Qt, no fakes).

Exercises BoneMetSegLib / BoneMetSynthLib: engine command lines against the real CLI parser, background jobs
through the real ``bonemet`` process (progress lines, errors, cancel), results loaded as MRML nodes, comparison
tables, lesion placement with preview/apply, one-case dataset export for refinement.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test extras")

ROOT = Path(__file__).resolve().parents[1]
for _d in (ROOT / "BoneMetSeg", ROOT / "BoneMetSynth"):
    if str(_d) not in sys.path:
        sys.path.insert(0, str(_d))

from BoneMetSegLib import Engine  # noqa: E402
from BoneMetSegLib.Jobs import JobRunner  # noqa: E402
from BoneMetSegLib.Logic import BoneMetSegLogic  # noqa: E402
from BoneMetSegLib.Process import BlockingProcess, ProgressParser  # noqa: E402
from BoneMetSynthLib.Logic import BoneMetSynthLogic, PlacementParameters  # noqa: E402

from bonemet import io as bio  # noqa: E402
from bonemet import mrml  # noqa: E402
from bonemet.cli.main import build_parser  # noqa: E402
from bonemet.io import Geometry  # noqa: E402


# ---- a tiny phantom: two "femurs" (cylinders of bone) and one lytic lesion -----------------------------------------

def phantom(shape=(40, 36, 48), spacing=(1.2, 1.0, 1.0)):
    """CT (HU, int16), femur label map (1 = right at smaller LPS x, 2 = left), lesion mask; oblique-free grid."""
    z, y, x = np.indices(shape)
    g = Geometry(shape[::-1], spacing[::-1], (-24.0, -18.0, 0.0))
    ct = np.full(shape, -100, np.int16)  # fat
    femur = np.zeros(shape, np.uint8)
    for label, cx in ((1, 12), (2, 36)):
        r2 = (y - 18) ** 2 + (x - cx) ** 2
        femur[r2 <= 49] = label
        ct[r2 <= 49] = 1200  # cortex
        ct[r2 <= 25] = 250  # trabecular bone
    lesion = ((z - 20) ** 2 + (y - 18) ** 2 + (x - 12) ** 2 <= 9).astype(np.uint8)
    ct[lesion > 0] = 40
    rng = np.random.default_rng(0)
    ct = (ct + rng.normal(0, 10, shape)).astype(np.int16)
    return g, ct, femur, lesion


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def case(scene):
    g, ct, femur, lesion = phantom()
    ctNode = mrml.volume_to_node(ct, g, scene=scene, name="CT")
    return g, ct, femur, lesion, ctNode


# ---- command lines are accepted by the engine's own parser ---------------------------------------------------------

def _registered() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


COMMANDS = {
    "predict": lambda: Engine.predict_command("ct.nrrd", "pkg", "out.nii.gz", "femur.nii.gz", "GPU", tta=True),
    "train": lambda: Engine.train_command(["a", "b"], "pkg", "small", 3, "init", 1, "cpu", resume=True),
    "synth": lambda: Engine.synth_command("lib", "healthy", "out", 2, 3, 2, "small"),
    "lesions": lambda: Engine.lesions_extract_command("ds", "lib"),
    "femur": lambda: Engine.femur_command("ct.nrrd", "femur.nii.gz"),
    "refine": lambda: Engine.refine_command("ds", "model", "out", 10, 20, 3, "cpu"),
    "ddpm": lambda: Engine.ddpm_train_command("ds", "model", "small", 5, 0, "cpu"),
    "variability": lambda: Engine.variability_command("ops.csv", "out"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_lines_parse_with_engine_cli(command):
    args = COMMANDS[command]()
    assert args[:3] == ["-m", "bonemet", command]
    if command not in _registered():
        pytest.skip(f"'bonemet {command}' is not registered in this checkout yet")
    ns = build_parser().parse_args(args[2:])
    assert callable(getattr(ns, "func", None))
    if command == "predict":
        assert ns.device == "cuda" and ns.tta and ns.femur == "femur.nii.gz"


def test_engine_location_and_environment():
    d = Engine.engine_dir()
    assert (d / "bonemet" / "__init__.py").exists()
    env = Engine.process_environment({"PATH": "/bin", "PYTHONPATH": "/x"})
    assert env["BONEMET_PROGRESS"] == "json" and env["PYTHONPATH"].split(":")[0] == str(d)
    assert Engine.python_executable() == sys.executable  # slicer-core: no Slicer application
    with pytest.raises(ValueError, match="device"):
        Engine.predict_command("a", "b", "c", device="tpu")


# ---- progress parsing and the process runner -------------------------------------------------------------------------

def test_progress_parser_splits_chunks():
    events, logs = [], []
    p = ProgressParser(lambda *a: events.append(a), logs.append)
    p.feed('hello\nBONEMET_PROGRESS {"stage": "x", "do')
    assert events == [] and logs == ["hello"]
    p.feed('ne": 1, "total": 4}\r\nbonemet predict: error: ct.nrrd: bad file\nlast')
    assert events == [("x", 1, 4, 0.25)]
    p.flush()
    assert logs[-1] == "last"
    assert p.errorMessage(2) == "bonemet predict: error: ct.nrrd: bad file"


def _script_job(code: str):
    runner = JobRunner(BlockingProcess(timeout_s=120))
    progress, results = [], []
    runner.progress.connect(lambda *a: progress.append(a))
    runner.jobFinished.connect(results.append)
    return runner, progress, results


def test_job_progress_lines_from_engine_process():
    runner, progress, results = _script_job("")
    code = "from bonemet.progress import progress\nfor _ in progress(range(4), 'demo stage'): pass\n"
    runner.startJob("Demo", ["-c", code], lambda: {"done": True})
    assert results[0].ok and results[0].outputs == {"done": True}
    fractions = [f for stage, f, _ in progress if stage == "demo stage"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0


def test_job_failure_reports_engine_error_and_log(tmp_path):
    runner, _, results = _script_job("")
    runner.startJob("Bad", Engine.bonemet_args("lesions", "extract", str(tmp_path / "missing"), "-o",
                                                str(tmp_path / "lib")), lambda: None)
    r = results[0]
    assert not r.ok and r.exitCode != 0
    assert "error" in r.message and "missing" in r.message
    assert "missing" in r.log


def test_job_cancel_kills_the_process():
    runner, _, results = _script_job("")
    timer = threading.Timer(1.0, runner.cancel)
    timer.start()
    runner.startJob("Sleep", ["-c", "import time; print('sleeping', flush=True); time.sleep(60)"], lambda: None)
    timer.join()
    assert results[0].cancelled and not results[0].ok


def test_loading_results_failure_is_reported():
    runner, _, results = _script_job("")

    def broken():
        raise RuntimeError("no output file")

    runner.startJob("Load", ["-c", "pass"], broken)
    assert not results[0].ok and "no output file" in results[0].message


# ---- BoneMetSeg logic ---------------------------------------------------------------------------------------------

def test_load_femur_and_lesion_results_into_one_segmentation(scene, case, tmp_path):
    g, ct, femur, lesion, ctNode = case
    logic = BoneMetSegLogic(scene=scene)
    fpath = bio.write_mask(tmp_path / "femur.nii.gz", femur, g)
    lpath = bio.write_mask(tmp_path / "lesion.nii.gz", lesion, g)
    seg = logic.outputSegmentation(ctNode)
    logic.loadFemur(fpath, ctNode, seg)
    logic.loadLesion(lpath, ctNode, seg)
    assert mrml.segment_names(seg) == ["Femur right", "Femur left", "Metastasis"]
    np.testing.assert_array_equal(logic.femurLabelmap(seg, g), femur)
    np.testing.assert_array_equal(mrml.segment_mask(seg, "Metastasis", reference_node=ctNode), lesion)
    # the CT written for the engine keeps its grid exactly
    out = logic.writeVolume(ctNode, tmp_path / "ct.nrrd")
    back = bio.read_volume(out)
    assert back.geometry.same_grid(g) and np.array_equal(back.array, ct)


@pytest.fixture(scope="module")
def engine_phantom():
    from BoneMetSegLib.Testing import phantomCase

    g, ct, femur, lesion, source = phantomCase(seed=0)
    assert source == "bonemet.phantom"
    return g, ct, femur, lesion


@pytest.mark.slow
def test_femur_job_end_to_end(scene, engine_phantom):
    """The real 'bonemet femur' in a background process on the engine's phantom; both femur segments land in
    a new segmentation on the CT grid, with the right side where the ground truth has it."""
    from BoneMetSegLib.Testing import dice

    g, ct, femur, lesion = engine_phantom
    ctNode = mrml.volume_to_node(ct, g, scene=scene, name="Phantom CT")
    logic = BoneMetSegLogic(BlockingProcess(timeout_s=600), scene=scene)
    results, progress = [], []
    logic.jobFinished.connect(results.append)
    logic.progress.connect(lambda *a: progress.append(a))
    seg = logic.startFemur(ctNode)
    assert results and results[0].ok, results[0].message + "\n" + results[0].log
    assert mrml.segment_names(seg) == ["Femur right", "Femur left"]
    auto = logic.femurLabelmap(seg, g)
    # exactly what the engine computes in-process: nothing lost or shifted on the way through files and MRML
    from bonemet.femur import segment_femur

    np.testing.assert_array_equal(auto, segment_femur(ct.astype(np.float32), g))
    # and the sides are right (the accuracy itself is the femur engine's business, see its tests)
    assert dice(auto == 1, femur == 1) > 0.8 and dice(auto == 2, femur == 2) > 0.8
    assert progress[-1][1] == 1.0


def test_lesion_job_with_invalid_model_fails_cleanly(scene, case, tmp_path):
    g, ct, femur, lesion, ctNode = case
    logic = BoneMetSegLogic(BlockingProcess(timeout_s=300), scene=scene)
    results = []
    logic.jobFinished.connect(results.append)
    bad = tmp_path / "not_a_model"
    bad.mkdir()
    seg = logic.startLesions(ctNode, None, bad, device="cpu")
    r = results[0]
    assert not r.ok and "not_a_model" in r.message, r.log
    assert mrml.find_segment(seg, "Metastasis") is None  # nothing half-loaded
    with pytest.raises(ValueError, match="not found"):
        logic.startLesions(ctNode, seg, tmp_path / "missing")


def test_compare_table_plot_and_csv(scene, case, tmp_path):
    pytest.importorskip("bonemet.metrics", reason="evaluation engine (issue 3) not in this checkout yet")
    g, ct, femur, lesion, ctNode = case
    logic = BoneMetSegLogic(scene=scene)
    shifted = np.roll(lesion, 1, axis=2)
    ref = mrml.segmentation_from_masks({"Metastasis": lesion}, g, scene=scene, name="Expert",
                                       reference_node=ctNode)
    ops = mrml.segmentation_from_masks({"Alice": lesion, "Bob": shifted, "Empty": np.zeros_like(lesion)}, g,
                                       scene=scene, name="Operators", reference_node=ctNode)
    table, chart, rows = logic.compare((ref, "Metastasis"), [(ops, "Alice"), (ops, "Bob"), (ops, "Empty")],
                                       referenceVolumeNode=ctNode)
    assert [r["other"] for r in rows] == ["Operators/Alice", "Operators/Bob", "Operators/Empty"]
    assert rows[0]["dice"] == pytest.approx(1.0) and rows[0]["hd"] == pytest.approx(0.0)
    assert 0.3 < rows[1]["dice"] < 1.0 and rows[1]["hd95"] > 0
    assert rows[2]["dice"] == 0 and rows[2]["hd"] is None and rows[2]["status"] == "pred_empty"
    assert rows[0]["tp"] == 1 and rows[2]["fn"] == 1
    back = mrml.table_to_rows(table)
    assert back[1]["dice"] == pytest.approx(rows[1]["dice"]) and back[2]["hd"] is None
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    csv_text = logic.exportTableCsv(table, tmp_path / "cmp.csv").read_text()
    assert csv_text.splitlines()[0].startswith("reference,other,status,dice")


def test_model_package_listing_and_import_refuses_non_packages(tmp_path):
    from bonemet.errors import BoneMetError

    (tmp_path / "junk").mkdir()
    with pytest.raises(BoneMetError):
        BoneMetSegLogic.importModelPackage(tmp_path / "junk", tmp_path / "models")
    assert BoneMetSegLogic.listModelPackages(tmp_path / "models") == []


# ---- BoneMetSynth logic --------------------------------------------------------------------------------------------

@pytest.fixture
def synth(scene, case):
    g, ct, femur, lesion, ctNode = case
    seg = mrml.segmentation_from_labelmap(femur, g, mrml.FEMUR_LABELS, scene=scene, reference_node=ctNode)
    mrml.set_segment_mask(seg, lesion, g, mrml.METASTASIS)
    logic = BoneMetSynthLogic(scene=scene)
    return logic, ctNode, seg, g, ct, femur


def test_extract_library_from_current_volume(synth):
    logic, ctNode, seg, g, *_ = synth
    items = logic.extractFromVolume(ctNode, seg)
    assert len(items) == 1 and items[0].source_case == "CT"
    assert logic.itemSummaries()[0]["volume_mm3"] == pytest.approx(items[0].volume_mm3, abs=0.1)
    with pytest.raises(ValueError, match="no lesion"):
        logic.extractFromVolume(ctNode, seg, "Femur left", minVolumeMm3=1e9)


def test_preview_and_apply_never_modify_the_original(synth):
    logic, ctNode, seg, g, ct, femur = synth
    item = logic.extractFromVolume(ctNode, seg)[0]
    point = mrml.ijk_to_ras_point(g, (36, 18, 20))  # centre of the LEFT femur (no lesion there yet)
    params = PlacementParameters(scale=1.0, rotation_deg=(0, 30, 0), smoothing=0.5, noise_hu=5, crop_seed=None)
    info = logic.updatePreview(ctNode, seg, item.id, point, params)
    vnode, pseg = logic.previewNodes
    assert info["voxels"] > 0 and info["centre_ijk"] == [36, 18, 20]
    prev = slicer.util.arrayFromVolume(vnode)
    assert (prev != ct).any() and mrml.segment_mask(pseg, "Metastasis", g).sum() == info["voxels"]
    # move the point: the old box is restored in the preview
    point2 = mrml.ijk_to_ras_point(g, (36, 18, 8))
    info2 = logic.updatePreview(ctNode, seg, item.id, point2, params)
    prev = slicer.util.arrayFromVolume(vnode)
    z0 = slice(*info["box_zyx"][0])
    changed = np.argwhere(prev != ct)
    assert changed[:, 0].max() < 20 and info2["centre_ijk"][2] == 8
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), ct)
    assert z0.start >= 0
    # apply: a new volume + segmentation with femurs and the lesion
    node, newSeg, infoA = logic.apply(ctNode, seg, item.id, point, params)
    assert node is not ctNode and node.GetAttribute("BoneMet.placement")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), ct)
    assert mrml.segment_names(newSeg) == ["Femur right", "Femur left", "Metastasis"]
    les = mrml.segment_mask(newSeg, "Metastasis", g)
    assert les.sum() == infoA["voxels"] and (femur[les > 0] == 2).all()
    # deterministic: same arguments, same volume
    node2, _, _ = logic.apply(ctNode, seg, item.id, point, params)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node2), slicer.util.arrayFromVolume(node))
    logic.clearPreview()
    assert logic.previewNodes == (None, None) and vnode.GetScene() is None


def test_point_outside_femur(synth):
    from bonemet.errors import InputError

    logic, ctNode, seg, g, *_ = synth
    item = logic.extractFromVolume(ctNode, seg)[0]
    outside = mrml.ijk_to_ras_point(g, (24, 2, 20))
    with pytest.raises(InputError, match="outside the femur"):
        logic.place(ctNode, seg, item.id, outside, PlacementParameters(snap=False))
    box, newCt, lesion, info = logic.place(ctNode, seg, item.id, outside, PlacementParameters(snap=True))
    assert info["snapped"] and lesion.any()


def test_refine_inputs_written_as_dataset(synth, tmp_path):
    from bonemet.dataset import load_manifest

    logic, ctNode, seg, g, ct, femur = synth
    rec = logic.writeCase(tmp_path, ctNode, seg)
    cases = load_manifest(tmp_path)
    assert cases[0].id == "case" and rec["lesion"]
    assert np.array_equal(bio.read_mask(cases[0].femur, binary=False).array, femur)
    node = logic.loadDatasetCase(tmp_path, "reloaded")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), ct.astype(np.float32))
    with pytest.raises(ValueError, match="not found"):
        logic.startRefine(ctNode, seg, tmp_path / "no-model")


def test_library_job_end_to_end(synth, tmp_path):
    logic, ctNode, seg, g, *_ = synth
    logic.process = BlockingProcess(timeout_s=300)
    results, progress = [], []
    logic.jobFinished.connect(results.append)
    logic.progress.connect(lambda *a: progress.append(a))
    logic.startExtractLibrary(ctNode, seg, tmp_path / "lib")
    assert results[0].ok, results[0].message + "\n" + results[0].log
    assert len(logic.library) == 1 and logic.library.items[0].source_case == "CT"
    assert any(stage == "extract lesions" for stage, *_ in progress)


def test_variability_job_writes_and_returns_report(scene, tmp_path):
    """'Operator variability' panel action: the real 'bonemet variability' in a background process."""
    from BoneMetSegLib.Testing import parametricPhantom

    g, ct, femur, lesion = parametricPhantom()
    rows = ["case,operator,role,session,mask"]
    for case, shift in (("c1", 0), ("c2", 1)):
        for op, role, dz, session in (("Expert", "expert", 0, "1"), ("Expert", "expert", 1, "2"),
                                      ("Nov1", "novice", 1, "1"), ("Nov2", "novice", -1, "1"),
                                      ("Auto", "automatic", 2, "1")):
            m = np.roll(lesion, dz + shift, axis=0)
            name = f"{case}_{op}_{session}.nii.gz"
            bio.write_mask(tmp_path / name, m, g)
            rows.append(f"{case},{op},{role},{session},{name}")
    (tmp_path / "ops.csv").write_text("\n".join(rows) + "\n")
    logic = BoneMetSegLogic(BlockingProcess(timeout_s=300), scene=scene)
    results = []
    logic.jobFinished.connect(results.append)
    report = logic.startVariability(tmp_path / "ops.csv", tmp_path / "study")
    r = results[0]
    assert r.ok, r.message + "\n" + r.log
    assert r.outputs["report"] == report and report.exists()
    assert "<html" in report.read_text(encoding="utf-8").lower()
    with pytest.raises(ValueError, match="not found"):
        logic.startVariability(tmp_path / "missing.csv", tmp_path / "x")


@pytest.fixture(scope="module")
def untrained_package(tmp_path_factory):
    """A valid model package (small preset, untrained weights): enough to drive the whole predict pipeline."""
    import torch

    from bonemet.segmentation.config import make_config
    from bonemet.segmentation.network import build_network
    from bonemet.segmentation.package import save_package

    torch.manual_seed(0)
    cfg = make_config("small")
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_package(path, build_network(cfg), cfg, metrics={"note": "untrained, for tests"})
    return path


@pytest.mark.slow
def test_lesion_job_end_to_end_and_model_import(scene, case, untrained_package, tmp_path):
    """'Segment lesions': the real 'bonemet predict' in a background process, the femur segments of the
    segmentation passed to it, and its output mask becoming the Metastasis segment voxel for voxel."""
    g, ct, femur, lesion, ctNode = case
    logic = BoneMetSegLogic(BlockingProcess(timeout_s=600), scene=scene)
    logic.keepWorkDirs = True
    seg = logic.outputSegmentation(ctNode)
    mrml.segmentation_from_labelmap(femur, g, mrml.FEMUR_LABELS, node=seg, reference_node=ctNode, scene=scene)
    results, logs = [], []
    logic.jobFinished.connect(results.append)
    logic.logMessage.connect(logs.append)
    installed = BoneMetSegLogic.importModelPackage(untrained_package, tmp_path / "models")
    assert BoneMetSegLogic.listModelPackages(tmp_path / "models") == [installed]
    assert BoneMetSegLogic.modelInfo(installed)["folds"] == 1
    with pytest.raises(FileExistsError):
        BoneMetSegLogic.importModelPackage(untrained_package, tmp_path / "models")
    logic.startLesions(ctNode, seg, installed, device="cpu")
    r = results[0]
    assert r.ok, r.message + "\n" + r.log
    command = next(line for line in logs if line.startswith("$ "))
    assert " predict " in command and "--femur" in command and "--device cpu" in command
    work = Path(command.split(" -o ")[1].split()[0]).parent
    expected = bio.read_mask(work / "lesion.nii.gz").array
    assert mrml.segment_names(seg) == ["Femur right", "Femur left", "Metastasis"]
    np.testing.assert_array_equal(mrml.segment_mask(seg, "Metastasis", reference_node=ctNode), expected)


@pytest.mark.slow
def test_ddpm_batch_training_then_refinement_of_current_volume(synth, tmp_path):
    """Batch 'DDPM training' (real 'bonemet ddpm train', 2 steps) then 'Refine' on the current volume (real
    'bonemet refine'): a new volume on the same grid, the input untouched."""
    logic, ctNode, seg, g, ct, femur = synth
    logic.process = BlockingProcess(timeout_s=600)
    results = []
    logic.jobFinished.connect(results.append)
    rec = logic.writeCase(tmp_path / "ds", ctNode, seg, lesionSegment="(none)")  # a healthy training case
    assert rec["lesion"] is None and rec["femur"]
    logic.startBatchTrain("ddpm", tmp_path / "ds", tmp_path / "ddpm", preset="small", length=2, seed=0,
                          device="cpu")
    assert results[-1].ok, results[-1].message + "\n" + results[-1].log
    assert results[-1].outputs["model"] == tmp_path / "ddpm"
    logic.startRefine(ctNode, seg, tmp_path / "ddpm", lam=2, ddimSteps=4, seed=0, device="cpu")
    r = results[-1]
    assert r.ok, r.message + "\n" + r.log
    refined = r.outputs["volume"]
    assert refined.GetName() == "CT refined" and refined is not ctNode
    out = mrml.node_to_volume(refined)
    assert out.geometry.same_grid(g) and out.array.shape == ct.shape
    assert not np.array_equal(out.array, ct.astype(out.array.dtype))  # the femur region was refined
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), ct)


def test_batch_synthesis_job(synth, tmp_path):
    """Batch 'Synthesis' (real 'bonemet synth'): library from the current volume, a healthy dataset folder,
    the output is a dataset folder whose cases carry a lesion."""
    from bonemet.dataset import load_manifest

    logic, ctNode, seg, g, ct, femur = synth
    logic.process = BlockingProcess(timeout_s=600)
    results = []
    logic.jobFinished.connect(results.append)
    logic.startExtractLibrary(ctNode, seg, tmp_path / "lib")
    assert results[-1].ok, results[-1].log
    logic.writeCase(tmp_path / "healthy", ctNode, seg, lesionSegment="(none)", caseId="h1")
    logic.startBatchSynth(tmp_path / "lib", tmp_path / "healthy", tmp_path / "syn", perPair=2, seed=3, workers=1,
                          preset="small")
    r = results[-1]
    assert r.ok, r.message + "\n" + r.log
    cases = load_manifest(r.outputs["dataset"])
    assert cases and all(c.lesion is not None for c in cases)
