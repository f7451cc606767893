"""SDEdit/DDIM refinement: λ = 0 identity, geometry, seams, determinism, resumable and sharded batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _diffusion_helpers import femur_case, make_dataset  # noqa: E402
from bonemet.dataset import load_manifest  # noqa: E402
from bonemet.diffusion.config import make_config, patch_zyx  # noqa: E402
from bonemet.diffusion.model_io import load_model  # noqa: E402
from bonemet.diffusion.refine import ddim_schedule, refine_dataset, refine_volume  # noqa: E402
from bonemet.diffusion.sliding import blend_weights, global_noise, sliding_apply, window_starts  # noqa: E402
from bonemet.diffusion.train import train_ddpm  # noqa: E402
from bonemet.errors import InputError  # noqa: E402
from bonemet.io import read_ct, read_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACING = (2.0, 1.5, 1.5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    healthy = make_dataset(root / "healthy", n_healthy=2, n_lesion=0)
    synth = make_dataset(root / "synth", n_healthy=1, n_lesion=2, seed=10)
    model = root / "model"
    train_ddpm(healthy, model, steps=8, seed=0, device="cpu")
    return {"healthy": healthy, "synth": synth, "model": model}


@pytest.fixture(scope="module")
def model(data):
    return load_model(data["model"], "cpu")


def test_ddim_schedule_units():
    cfg = make_config("small")
    assert ddim_schedule(cfg, 0) == []
    assert ddim_schedule(cfg, 10, 50, "train") == [10, 8, 4, 0]
    assert ddim_schedule(cfg, 8, 50, "train") == [8, 4, 0]
    d = ddim_schedule(cfg, 10, 50, "ddim")
    assert len(d) == 10 and d[-1] == 0 and d == sorted(d, reverse=True) and d[0] == 37
    assert ddim_schedule(cfg, 5, 200, "train") == [5, 4, 3, 2, 1, 0]
    with pytest.raises(InputError):
        ddim_schedule(cfg, 60, 50, "ddim")
    with pytest.raises(InputError):
        ddim_schedule(cfg, 10, 50, "steps")


def test_lambda_zero_returns_input(model):
    net, cfg = model
    ct, fem, les = femur_case(seed=3, lesion=True)
    info = {}
    out = refine_volume(ct, fem, les, SPACING, net, cfg, lam=0, info=info)
    assert out.dtype == np.float32 and np.array_equal(out, ct.astype(np.float32))
    assert info["network_evaluations"] == 0


def test_refine_volume_region_determinism_keep_far(model):
    net, cfg = model
    ct, fem, les = femur_case(shape=(24, 48, 56), seed=4, lesion=True)
    ct = ct.astype(np.float32)
    info = {}
    a = refine_volume(ct, fem, les, SPACING, net, cfg, lam=10, seed=1, noise_key="x", info=info)
    b = refine_volume(ct, fem, les, SPACING, net, cfg, lam=10, seed=1, noise_key="x")
    c = refine_volume(ct, fem, les, SPACING, net, cfg, lam=10, seed=2, noise_key="x")
    assert a.shape == ct.shape and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert info["network_evaluations"] == info["windows"] * 4
    # outside the femur region: unchanged
    (z0, z1), (y0, y1), (x0, x1) = info["region_zyx"]
    inside = np.zeros(ct.shape, bool)
    inside[z0:z1, y0:y1, x0:x1] = True
    assert np.array_equal(a[~inside], ct[~inside])
    assert not np.array_equal(a[inside], ct[inside])
    assert x1 - x0 < ct.shape[2]  # the region is smaller than the volume here
    # keep far: voxels farther than 3 mm from the lesion are untouched
    from scipy import ndimage

    k = refine_volume(ct, fem, les, SPACING, net, cfg, lam=10, seed=1, noise_key="x", keep_far_mm=3.0)
    dist = ndimage.distance_transform_edt(les == 0, sampling=SPACING)
    assert np.array_equal(k[dist > 3.0], ct[dist > 3.0])
    assert not np.array_equal(k[les > 0], ct[les > 0])


def test_global_noise_independent_of_region():
    full = global_noise((-5, 0, 0), (40, 70, 33), seed=3, key="case")
    part = global_noise((7, 31, 2), (30, 64, 20), seed=3, key="case")
    assert np.array_equal(part, full[12:35, 31:64, 2:20])
    assert abs(full.mean()) < 0.02 and abs(full.std() - 1) < 0.02
    assert not np.array_equal(global_noise((0, 0, 0), (4, 4, 4), 3, "other"), full[5:9, :4, :4])


def test_blending_is_a_partition_of_unity():
    # A patch function consistent between windows (crops of one smooth global field) comes back exactly.
    shape, patch = (21, 45, 38), (8, 16, 16)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    field = torch.from_numpy(np.sin(zz / 3.0) + np.cos(yy / 5.0) * xx / 10.0).float()[None]
    vol = torch.zeros((1,) + shape)
    starts = [window_starts(s, p, 0.5) for s, p in zip(shape, patch)]
    calls = []

    def fn(batch):
        calls.append(batch.shape[0])
        # windows are taken in z-major order: look them up
        out = []
        for _ in range(batch.shape[0]):
            nz, ny, nx = (len(s) for s in starts)
            i = min(len(out) + sum(calls[:-1]), nz * ny * nx - 1)  # the last batch is padded with repeats
            z, y, x = starts[0][i // (ny * nx)], starts[1][(i // nx) % ny], starts[2][i % nx]
            out.append(field[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]])
        return torch.stack(out)

    for mode in ("gaussian", "cosine"):
        calls.clear()
        out, n = sliding_apply(fn, vol, patch, 0.5, mode, sw_batch_size=3)
        assert n == np.prod([len(s) for s in starts])
        assert set(calls) == {3} and sum(calls) == 3 * int(np.ceil(n / 3))
        assert torch.allclose(out, field, atol=1e-5)
    w = blend_weights(patch, "gaussian")
    assert w.min() > 0 and w.max() == 1.0


def _plane_jumps(out, shape, patch, margin=6):
    """Per axis: max |jump| across interior planes at window borders, and elsewhere."""
    inner = tuple(slice(margin, s - margin) for s in shape)
    res = []
    for ax in range(3):
        d = np.abs(np.diff(out, axis=ax))
        sl = list(inner)
        sl[ax] = slice(None)
        d = d[tuple(sl)].max(axis=tuple(a for a in range(3) if a != ax))
        borders = set()
        for s in window_starts(shape[ax], patch[ax], 0.5):
            if s > 0:
                borders.add(s - 1)
            if s + patch[ax] < shape[ax]:
                borders.add(s + patch[ax] - 1)
        idx = range(margin, shape[ax] - margin - 1)
        res.append((max(d[i] for i in idx if i in borders), max(d[i] for i in idx if i not in borders)))
    return res


def test_no_seams_on_constant_input(model):
    net, cfg = model
    patch = patch_zyx(cfg)
    shape = (32, 56, 56)
    x = torch.full((1,) + shape, 0.1)

    def fn(b):
        return net(b, timesteps=torch.full((b.shape[0],), 8, dtype=torch.long))

    with torch.no_grad():
        smooth = _plane_jumps(sliding_apply(fn, x, patch, 0.5, "gaussian", 2)[0][0].numpy(), shape, patch)
        seamed = _plane_jumps(sliding_apply(fn, x, patch, 0.5, "constant", 2)[0][0].numpy(), shape, patch)
    for (b, nb), (cb, _) in zip(smooth, seamed):
        assert b <= 2.0 * nb + 1e-4, smooth          # no jump at window borders beyond the usual variation
        assert b < 0.5 * cb or cb < 1e-3, (smooth, seamed)  # unlike plain averaging, which shows seams


def _arrays(out_dir):
    res = {}
    for c in load_manifest(out_dir):
        res[c.id] = (read_ct(c.ct).array, c.record)
    return res


def test_refine_dataset_geometry_masks_resume(data, tmp_path):
    out = tmp_path / "out"
    s = refine_dataset(data["synth"], data["model"], out, lam=10, seed=0, device="cpu")
    assert s["refined"] == 3 and s["failed"] == [] and s["network_evaluations_per_volume"] > 0
    src = {c.id: c for c in load_manifest(data["synth"])}
    res = load_manifest(out)
    assert [c.id for c in res] == list(src)
    for c in res:
        a, b = read_volume(c.ct), read_volume(src[c.id].ct)
        assert a.geometry.same_grid(b.geometry) and a.array.dtype == b.array.dtype
        assert c.femur.read_bytes() == src[c.id].femur.read_bytes()
        if src[c.id].lesion is not None:
            assert c.lesion.read_bytes() == src[c.id].lesion.read_bytes()
            chk = c.record["refinement"]["intensity_check"]
            assert {"lesion", "shell", "outside_lesion", "contrast_before", "contrast_after"} <= set(chk)
            assert chk["lesion"]["mean_hu_before"] < 200 < chk["outside_lesion"]["mean_hu_before"]
        else:
            assert c.lesion is None
        r = c.record["refinement"]
        assert r["lambda"] == 10 and r["timesteps"] == [10, 8, 4, 0] and r["network_evaluations"] > 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["refinement"]["lambda"] == 10
    before = _arrays(out)
    # resume: a finished folder is skipped; a lost case is redone identically
    (out / ".refine" / "c001.json").unlink()
    (out / "ct" / "c001.nii.gz").unlink()
    s2 = refine_dataset(data["synth"], data["model"], out, lam=10, seed=0, device="cpu")
    assert (s2["refined"], s2["skipped"]) == (1, 2)
    after = _arrays(out)
    for k in before:
        assert np.array_equal(before[k][0], after[k][0])
    with pytest.raises(InputError, match="other settings"):
        refine_dataset(data["synth"], data["model"], out, lam=20, seed=0, device="cpu")


def test_shards_equal_single_run(data, tmp_path):
    single = tmp_path / "single"
    refine_dataset(data["synth"], data["model"], single, lam=12, seed=5, device="cpu")
    sharded = tmp_path / "sharded"
    # two 'processes' doing disjoint shards in another order, then the merge
    refine_dataset(data["synth"], data["model"], sharded, lam=12, seed=5, device="cpu", case_ids=["c002"])
    refine_dataset(data["synth"], data["model"], sharded, lam=12, seed=5, device="cpu", case_ids=["c000"])
    refine_dataset(data["synth"], data["model"], sharded, lam=12, seed=5, device="cpu")
    a, b = _arrays(single), _arrays(sharded)
    assert list(a) == list(b)
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]), k


def test_conditioning_mask_refine(data, tmp_path):
    model = tmp_path / "cond"
    train_ddpm(data["synth"], model, steps=2, seed=0, device="cpu", conditioning="mask")
    out = tmp_path / "out"
    s = refine_dataset(data["synth"], model, out, lam=10, seed=0, device="cpu")
    assert s["refined"] == 3 and s["settings"]["conditioning"] == "mask"
    net, cfg = load_model(model, "cpu")
    ct, fem, les = femur_case(seed=3, lesion=True)
    a = refine_volume(ct, fem, les, SPACING, net, cfg, lam=10, noise_key="k")
    b = refine_volume(ct, fem, np.zeros_like(les), SPACING, net, cfg, lam=10, noise_key="k")
    assert not np.array_equal(a, b)  # the mask is an input of the denoiser


def test_cli_refine(data, tmp_path, capsys):
    from bonemet.cli.main import main

    out = tmp_path / "cli"
    assert main(["refine", str(data["synth"]), "--model", str(data["model"]), "-o", str(out), "--lambda", "0",
                 "--device", "cpu"]) == 0
    for c in load_manifest(out):
        src = load_manifest(data["synth"])
        orig = next(s for s in src if s.id == c.id)
        assert np.array_equal(read_ct(c.ct).array, read_ct(orig.ct).array)
    assert main(["refine", str(data["synth"]), "--model", str(tmp_path), "-o", str(tmp_path / "x")]) == 3
    assert "config.json is missing" in capsys.readouterr().err
    assert main(["refine", str(data["synth"]), "--model", str(data["model"]), "-o", str(tmp_path / "y"),
                 "--lambda", "80", "--lambda-unit", "ddim", "--device", "cpu"]) == 2


@pytest.mark.slow
def test_torchrun_sharded_equals_single(data, tmp_path):
    import torch

    single = tmp_path / "single"
    # Same intra-op thread count as the torchrun workers below: CPU convolutions may sum in another order
    # with another thread count (last-bit differences); sharding itself must change nothing.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        refine_dataset(data["synth"], data["model"], single, lam=10, seed=7, device="cpu")
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BONEMET_PROGRESS": "off", "PYTHONPATH": str(ROOT / "Logic")}
    sharded = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bonemet",
           "refine", str(data["synth"]), "--model",
           str(data["model"]), "-o", str(sharded), "--lambda", "10", "--seed", "7", "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _arrays(single), _arrays(sharded)
    assert list(a) == list(b)
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]), k
        ra, rb = dict(a[k][1]["refinement"]), dict(b[k][1]["refinement"])
        ra.pop("seconds"), rb.pop("seconds")
        assert ra == rb


def test_keep_far_refines_only_the_lesion_neighbourhood(tmp_path):
    """With --keep-far the network runs on the lesion's neighbourhood only (far fewer windows), and voxels
    farther than the distance from the lesion are untouched."""
    import numpy as np
    from scipy import ndimage

    from bonemet.diffusion.model_io import load_model
    from bonemet.diffusion.refine import refine_volume
    from bonemet.diffusion.train import train_ddpm
    from bonemet.phantom import make_case

    case = make_case("kf", seed=3, preset="small", healthy=False, n_lesions=1)
    healthy = make_case("h", seed=4, preset="small", healthy=True)
    from bonemet.dataset import write_manifest
    from bonemet.io import write_volume

    root = tmp_path / "data"
    write_volume(root / "h_ct.nii.gz", healthy.ct, healthy.geometry)
    write_volume(root / "h_femur.nii.gz", healthy.femur, healthy.geometry)
    write_manifest(root, [{"id": "h", "ct": "h_ct.nii.gz", "femur": "h_femur.nii.gz", "lesion": None}])
    train_ddpm(root, tmp_path / "model", preset="small", steps=2, device="cpu")
    net, cfg = load_model(tmp_path / "model", "cpu")
    sp = case.geometry.spacing_zyx
    from bonemet.diffusion.config import patch_zyx
    from bonemet.diffusion.data import femur_region
    from bonemet.diffusion.sliding import windows

    near = {}
    out = refine_volume(case.ct, case.femur, case.lesion, sp, net, cfg, lam=10, ddim_steps=20, keep_far_mm=6.0,
                        info=near)
    whole = femur_region(case.femur, sp, float(cfg["data"].get("region_margin_mm", 10.0)), patch_zyx(cfg))
    overlap = float(cfg["refine"].get("overlap", 0.5))
    n_whole = len(windows([s.stop - s.start for s in whole], patch_zyx(cfg), overlap))
    assert 0 < near["windows"] < n_whole / 3
    dist = ndimage.distance_transform_edt(case.lesion == 0, sampling=sp)
    far = dist > 6.0 + 1e-6
    assert np.array_equal(out[far], case.ct.astype(np.float32)[far])
    assert not np.array_equal(out[case.lesion > 0], case.ct.astype(np.float32)[case.lesion > 0])
