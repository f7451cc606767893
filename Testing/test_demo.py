"""The main job end to end: ``bonemet demo`` at its smallest size, its report rendered in real Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _browser import chromium, render

ARTIFACTS = Path(os.environ.get("BONEMET_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
STAGES = ["cohort", "femur", "synthesis", "ddpm", "refine", "experiment", "variability", "report"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {**os.environ, "BONEMET_PROGRESS": "off"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bonemet", "demo", "--preset", "quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc, time.perf_counter() - t0


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_summary(demo_run):
    out, proc, _ = demo_run
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").exists(), stage
    report = out / "report.html"
    assert report.exists() and report.stat().st_size > 10_000
    assert str(report) in proc.stdout
    assert "BoneMet demo — summary" in proc.stdout
    femur = json.loads((out / "stages" / "femur.json").read_text())
    assert femur["min_dice"] > 0.9
    exp = json.loads((out / "stages" / "experiment.json").read_text())
    assert {r["model"] for r in exp["table_numeric"]} >= {"real", "synthetic", "synthetic_ft", "diffusion",
                                                          "diffusion_ft"}
    assert all(lk["test_lesions_in_training_sets"] == 0 for lk in exp["leakage"])
    var = json.loads((out / "stages" / "variability.json").read_text())
    assert any(r["group"].startswith("intra") for r in var["table"])


@pytest.mark.slow
def test_demo_report_renders_in_chromium(demo_run):
    out, _, _ = demo_run
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (run.sh installs the Debian package)")
        pytest.skip("chromium not installed (./run.sh test installs it when run as root)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "demo-report.png"
    result = render(out / "report.html", screenshot=shot)
    assert result["title"] == "BoneMet demo report"
    assert result["errors"] == [] and result["console"] == []
    assert result["broken"] == 0
    assert result["images"] >= 5  # cohort slices, synthesis preview, loss, refinement preview, experiment plot
    assert result["tables"] >= 6
    for heading in ("Phantom cohort", "Femur segmentation", "Ad-hoc lesion synthesis", "Diffusion refinement",
                    "Lesion segmentation: cross-validated experiment", "Operator variability"):
        assert heading in result["headings"], (heading, result["headings"])
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_demo_resumes_without_redoing_stages(demo_run):
    out, _, first = demo_run
    env = {**os.environ, "BONEMET_PROGRESS": "off"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bonemet", "demo", "--preset", "quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("already done (resumed)") == len(STAGES)
    assert time.perf_counter() - t0 < first / 3


def test_demo_refuses_a_folder_made_with_other_settings(tmp_path):
    from bonemet.cli.main import main

    out = tmp_path / "run"
    assert main(["demo", "--preset", "quick", "--out", str(out), "--stages", "cohort"]) == 0
    code = main(["demo", "--preset", "quick", "--seed", "7", "--out", str(out), "--stages", "cohort"])
    assert code == 2
