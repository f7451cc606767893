"""Multi-process training with torchrun (DDP, gloo backend on CPU, 2 processes)."""

import json
import os
import subprocess
import sys

import pytest

from _segmentation_helpers import make_dataset


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    ds = make_dataset(tmp_path / "ds", n=2)
    pkg = tmp_path / "pkg"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BONEMET_PROGRESS": "off"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bonemet", "train", str(ds), "-o", str(pkg), "--epochs", "2", "--device", "cpu",
           "--set", "patches_per_case=2", "--set", "val_every=1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    conf = json.loads((pkg / "config.json").read_text())
    assert conf["training"]["world_size"] == 2
    assert (pkg / "history.csv").read_text().count("\n") == 3
    from bonemet.segmentation.package import load_package

    load_package(pkg)
