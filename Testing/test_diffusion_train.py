"""DDPM training: learning, exact resume, safe model files, DDP on gloo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _diffusion_helpers import make_dataset  # noqa: E402
from bonemet.diffusion.config import make_config, make_ddpm_scheduler  # noqa: E402
from bonemet.diffusion.data import PatchSampler, femur_region, load_training_cases  # noqa: E402
from bonemet.diffusion.model_io import load_model, read_config  # noqa: E402
from bonemet.diffusion.network import build_network  # noqa: E402
from bonemet.diffusion.train import diffusion_loss, step_noise, train_ddpm, training_step  # noqa: E402
from bonemet.errors import InputError, ModelError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ddpm") / "data", n_healthy=2, n_lesion=1)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "model"
    train_ddpm(dataset, out, preset="small", steps=4, seed=1, device="cpu")
    return out


def test_presets_paper_and_small():
    paper = make_config("paper")
    assert paper["network"]["channels"] == [128, 256, 512]
    assert paper["network"]["attention_levels"] == [False, False, True]
    assert paper["data"]["patch_size_xyz"] == [96, 96, 48]
    assert paper["scheduler"] == {"num_train_timesteps": 200, "schedule": "linear_beta", "beta_start": 1e-4,
                                  "beta_end": 2e-3, "clip_sample": True}
    assert paper["training"]["lr"] == 1e-4 and paper["training"]["lr_decay"] == 0.999
    assert paper["training"]["batch_size"] == 1
    sch = make_ddpm_scheduler(paper)
    assert abs(float(sch.betas[0]) - 1e-4) < 1e-9 and abs(float(sch.betas[-1]) - 2e-3) < 1e-9
    small = make_config("small", {"data": {"patch_size_xyz": [16, 16, 8]}})
    assert small["data"]["patch_size_xyz"] == [16, 16, 8]
    with pytest.raises(InputError, match="multiples"):
        make_config("small", {"data": {"patch_size_xyz": [30, 32, 16]}})


def test_region_and_patches_inside_femur(dataset):
    cfg = make_config("small")
    cases = load_training_cases(dataset, cfg)
    assert [c.id for c in cases] == ["c000", "c001"]  # healthy cases only
    s = PatchSampler(cases, cfg, seed=3)
    a, _ = s.batch(5, 0, 2)
    b, _ = s.batch(5, 0, 2)
    c, _ = s.batch(5, 1, 2)
    assert a.shape == (2, 1, 16, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # seeded per (step, rank)
    assert a.min() >= -1 and a.max() <= 1
    fem = np.zeros((30, 50, 50), np.uint8)
    fem[10:12, 20:25, 20:25] = 1
    reg = femur_region(fem, (1.0, 1.0, 1.0), 2.0, (16, 8, 8))
    assert [(r.stop - r.start) for r in reg] == [16, 9, 9]
    assert reg[1].start == 18 and reg[1].stop == 27


def test_loss_decreases_on_fixed_batch(dataset):
    cfg = make_config("small")
    cases = load_training_cases(dataset, cfg)
    x0 = torch.from_numpy(PatchSampler(cases, cfg, 0).batch(0, 0, 2)[0])
    torch.manual_seed(0)
    net = build_network(cfg)
    sch = make_ddpm_scheduler(cfg)
    noise, t = step_noise(0, 0, 0, x0.shape, 200)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    with torch.no_grad():
        before = float(diffusion_loss(net, sch, x0, noise, t))
    losses = [training_step(net, opt, sch, x0, noise, t) for _ in range(25)]
    with torch.no_grad():
        after = float(diffusion_loss(net, sch, x0, noise, t))
    assert after < 0.5 * before, (before, after, losses)


def test_model_folder_contents(trained):
    doc = read_config(trained)
    assert doc["state"]["step"] == 4
    names = sorted(p.name for p in trained.iterdir())
    assert names == ["config.json", "loss.csv", "loss.png", "model-0000004.safetensors",
                     "optim-0000004.safetensors"]
    lines = (trained / "loss.csv").read_text().strip().splitlines()
    assert lines[0] == "step,loss,lr,seconds" and len(lines) == 5
    net, cfg = load_model(trained, "cpu")
    assert not net.training and cfg["_model"]["step"] == 4
    with pytest.raises(InputError, match="--resume"):
        train_ddpm(dataset_dir=doc["training_data"]["dataset"], model_dir=trained, steps=5, device="cpu")


def _weights(model_dir):
    from safetensors.torch import load_file

    doc = read_config(model_dir)
    return {k: load_file(str(Path(model_dir) / f["name"])) for k, f in doc["files"].items()}


def test_resume_equals_uninterrupted(dataset, tmp_path):
    over = {"training": {"save_every": 100, "lr_decay_every": 2, "lr_decay": 0.9}}
    a = train_ddpm(dataset, tmp_path / "a", steps=6, seed=2, device="cpu", overrides=over, ema=True)
    train_ddpm(dataset, tmp_path / "b", steps=3, seed=2, device="cpu", overrides=over, ema=True)
    b = train_ddpm(dataset, tmp_path / "b", steps=6, seed=2, device="cpu", resume=True)
    assert a["step"] == b["step"] == 6
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert set(wa) == set(wb) == {"model", "ema", "optimizer"}
    for group in wa:
        assert set(wa[group]) == set(wb[group])
        for k in wa[group]:
            assert torch.equal(wa[group][k], wb[group][k]), (group, k)
    la = [r.split(",")[:3] for r in (tmp_path / "a" / "loss.csv").read_text().splitlines()]
    lb = [r.split(",")[:3] for r in (tmp_path / "b" / "loss.csv").read_text().splitlines()]
    assert la == lb
    # EMA weights are what refinement uses
    assert load_model(tmp_path / "a", "cpu")[1]["_model"]["weights"] == "ema"


def _copy_model(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_files_refused(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    from bonemet.diffusion.model_io import sha256_file

    # 1. edited bytes of the weights
    m = _copy_model(trained, tmp_path / "m1")
    w = next(m.glob("model-*.safetensors"))
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="modified after saving"):
        load_model(m, "cpu")
    # 2. wrong shapes, hash and shapes in config.json updated consistently: refused by the network check
    m = _copy_model(trained, tmp_path / "m2")
    w = next(m.glob("model-*.safetensors"))
    t = load_file(str(w))
    k = sorted(t)[0]
    t[k] = torch.zeros(tuple(s + 1 for s in t[k].shape))
    save_file(t, str(w))
    doc = json.loads((m / "config.json").read_text())
    doc["files"]["model"]["sha256"] = sha256_file(w)
    doc["files"]["model"]["tensors"][k] = list(t[k].shape)
    (m / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="wrong shape"):
        load_model(m, "cpu")
    # 3. edited config section
    m = _copy_model(trained, tmp_path / "m3")
    doc = json.loads((m / "config.json").read_text())
    doc["config"]["scheduler"]["beta_end"] = 0.02
    (m / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="config section"):
        load_model(m, "cpu")
    # 4. a pickle where the weights should be
    m = _copy_model(trained, tmp_path / "m4")
    w = next(m.glob("model-*.safetensors"))
    torch.save({"x": torch.zeros(2)}, w)
    with pytest.raises(ModelError):
        load_model(m, "cpu")
    # 5. not a model folder / missing file
    with pytest.raises(ModelError, match="config.json is missing"):
        load_model(tmp_path, "cpu")
    m = _copy_model(trained, tmp_path / "m5")
    next(m.glob("model-*.safetensors")).unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(m, "cpu")


def test_cli_train_and_errors(dataset, tmp_path, capsys):
    from bonemet.cli.main import main

    out = tmp_path / "cli"
    assert main(["ddpm", "train", str(dataset), "-o", str(out), "--steps", "2", "--device", "cpu",
                 "--set", "training.batch_size=1"]) == 0
    assert read_config(out)["config"]["training"]["batch_size"] == 1
    assert main(["ddpm", "train", str(dataset), "-o", str(out), "--steps", "2", "--device", "cpu"]) == 2
    assert "--resume" in capsys.readouterr().err
    empty = make_dataset(tmp_path / "lesioned", n_healthy=0, n_lesion=1)
    assert main(["ddpm", "train", str(empty), "-o", str(tmp_path / "x"), "--steps", "1", "--device", "cpu"]) == 2
    assert "no healthy cases" in capsys.readouterr().err
    assert not (tmp_path / "x" / "config.json").exists()


def test_conditioning_mask_training(dataset, tmp_path):
    s = train_ddpm(dataset, tmp_path / "cond", steps=2, seed=0, device="cpu", conditioning="mask")
    assert s["cases"] == 3  # lesioned cases are used too
    net, cfg = load_model(tmp_path / "cond", "cpu")
    assert cfg["conditioning"] == "mask"
    assert net.conv_in.conv.in_channels == 5


def _torchrun(args, tmp_path, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BONEMET_PROGRESS": "off", "PYTHONPATH": str(ROOT / "Logic")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
           "bonemet", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)


@pytest.mark.slow
def test_ddp_gloo_two_processes(dataset, tmp_path):
    out = tmp_path / "ddp"
    r = _torchrun(["ddpm", "train", str(dataset), "-o", str(out), "--steps", "4", "--device", "cpu",
                   "--save-every", "2"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = read_config(out)
    assert doc["state"]["step"] == 4 and doc["state"]["processes"] == 2
    assert "joined the gloo process group" in r.stderr
    net, _ = load_model(out, "cpu")
    assert all(torch.isfinite(p).all() for p in net.parameters())
    # continues under DDP too
    r = _torchrun(["ddpm", "train", str(dataset), "-o", str(out), "--steps", "6", "--device", "cpu", "--resume"],
                  tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_config(out)["state"]["step"] == 6
