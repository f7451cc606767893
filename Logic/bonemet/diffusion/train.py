"""DDPM training (``bonemet ddpm train``): ε-prediction with MSE on random femur patches.

Every random draw of step ``s`` on process ``r`` (patch choice, noise ε, timesteps t) comes from generators
keyed by (seed, s, r) (:mod:`bonemet.seeding`), and the learning rate is a function of the step. A checkpoint
therefore only needs the weights, the Adam state, the EMA and the step: ``--resume`` continues exactly as if
the job had never stopped (same weights, bit for bit, on the same hardware).

Multi-GPU / multi-node: start with ``torchrun --nproc_per_node N -m bonemet ddpm train ...``; each process
trains on its own patches (batch per process = ``training.batch_size``), gradients are averaged by
DistributedDataParallel (NCCL on GPUs, gloo on CPU) and only rank 0 writes files.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from bonemet.atomic import atomic_path
from bonemet.errors import InputError
from bonemet.seeding import derive_seed

log = logging.getLogger("bonemet")
LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"


def lr_at(step: int, cfg: dict, steps_per_epoch: int = 1) -> float:
    """Learning rate for update number ``step`` (0-based): lr x decay^(step // every)."""
    tr = cfg["training"]
    every = tr.get("lr_decay_every", 1)
    every = steps_per_epoch if every == "epoch" else int(every)
    return float(tr["lr"]) * float(tr.get("lr_decay", 1.0)) ** (step // max(1, every))


def step_noise(seed: int, step: int, rank: int, shape, num_train_timesteps: int):
    """(ε, t) of a training step: CPU generator keyed by (seed, step, rank)."""
    import torch

    g = torch.Generator().manual_seed(derive_seed(seed, "ddpm-noise", int(step), int(rank)))
    noise = torch.randn(tuple(shape), generator=g)
    t = torch.randint(0, int(num_train_timesteps), (int(shape[0]),), generator=g, dtype=torch.long)
    return noise, t


def diffusion_loss(network, scheduler, x0, noise, timesteps, cond=None, amp_dtype=None):
    """MSE between the predicted and the true noise of x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε."""
    import torch
    import torch.nn.functional as F

    x_t = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=timesteps)
    inp = x_t if cond is None else torch.cat([x_t, cond], dim=1)
    if amp_dtype is not None:
        with torch.autocast(device_type=x0.device.type, dtype=amp_dtype):
            pred = network(inp, timesteps=timesteps)
    else:
        pred = network(inp, timesteps=timesteps)
    return F.mse_loss(pred.float(), noise.float())


def training_step(network, optimizer, scheduler, x0, noise, timesteps, cond=None, grad_clip: float = 0.0,
                  scaler=None, amp_dtype=None) -> float:
    """One optimisation step; returns the loss."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss = diffusion_loss(network, scheduler, x0, noise, timesteps, cond, amp_dtype)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        optimizer.step()
    return float(loss.detach().item())


def update_ema(ema, network, decay: float) -> None:
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), network.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for e, b in zip(ema.buffers(), network.buffers()):
            e.copy_(b)


def _read_losses(model_dir: Path, upto: int) -> list[dict]:
    path = model_dir / LOSS_CSV
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]


def write_loss_curve(model_dir: Path, rows: list[dict]) -> None:
    """loss.csv (step, loss, lr, seconds) and loss.png (raw + moving average)."""
    with atomic_path(model_dir / LOSS_CSV) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "seconds"])
            w.writeheader()
            w.writerows(rows)
    if not rows:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = np.array([int(r["step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(steps, loss, lw=0.6, alpha=0.5, label="loss")
        k = max(1, len(loss) // 20)
        if k > 1:
            ma = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], ma, lw=1.5, label=f"moving mean ({k})")
        ax.set_xlabel("step")
        ax.set_ylabel("MSE(ε)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("DDPM training loss")
        fig.tight_layout()
        with atomic_path(model_dir / LOSS_PNG) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - a plot must never stop training
        log.warning("could not draw the loss curve: %s", exc)


def _dataset_info(dataset_dir, cases) -> dict:
    from bonemet.diffusion.model_io import sha256_file
    from bonemet.dataset import manifest_path

    return {"dataset": os.fspath(Path(dataset_dir).resolve()),
            "manifest_sha256": sha256_file(manifest_path(dataset_dir)),
            "cases": [c.id for c in cases]}


def train_ddpm(dataset_dir, model_dir, preset: str = "small", steps: int | None = None,
               overrides: dict | None = None, seed: int = 0, device="auto", resume: bool = False,
               conditioning: str = "none", ema: bool | None = None, amp: bool | None = None,
               max_cases: int | None = None) -> dict:
    """Train (or continue training) a DDPM on the healthy femurs of ``dataset_dir``; writes ``model_dir``.

    ``steps`` is the total number of optimisation steps (resume continues up to it). Returns a summary dict
    (model_dir, step, final_loss, seconds, processes, parameters)."""
    import torch

    from bonemet.device import resolve_device
    from bonemet.diffusion import distributed as D
    from bonemet.diffusion.config import make_config, make_ddpm_scheduler, validate
    from bonemet.diffusion.data import PatchSampler, load_training_cases
    from bonemet.diffusion.model_io import CONFIG, load_checkpoint, read_config, save_checkpoint
    from bonemet.diffusion.network import build_network, count_parameters

    model_dir = Path(model_dir)
    dev = resolve_device(device)
    dist = D.init(dev.type)
    try:
        has_ckpt = (model_dir / CONFIG).exists()
        doc = None
        if has_ckpt and not resume:
            raise InputError("the folder already holds a DDPM model; pass --resume to continue training it or "
                             "choose another output folder", model_dir)
        if resume and has_ckpt:
            doc = read_config(model_dir)
            cfg = dict(doc["config"])
            if conditioning not in (None, cfg.get("conditioning", "none")) and conditioning != "none":
                raise InputError(f"cannot resume a model trained with conditioning {cfg.get('conditioning')!r} "
                                 f"as {conditioning!r}", model_dir)
            seed = int(doc["state"].get("seed", seed))
            if overrides:
                log.warning("--resume: the stored config is used; only the number of steps can change")
        else:
            if resume:
                log.info("--resume: no checkpoint in %s yet, starting from scratch", model_dir)
            cfg = make_config(preset, overrides, conditioning)
            if ema is not None:
                cfg["training"]["ema"] = bool(ema)
            if amp is not None:
                cfg["training"]["amp"] = bool(amp)
        if steps is not None:
            cfg["training"]["steps"] = int(steps)
        validate(cfg)
        cond_mode = cfg.get("conditioning", "none")
        tr = cfg["training"]
        total = int(tr["steps"])
        batch = int(tr.get("batch_size", 1))

        cases = load_training_cases(dataset_dir, cfg, cond_mode, max_cases)
        if doc is None:
            cfg["data"]["train_spacing_zyx"] = [float(v) for v in np.median([c.spacing_zyx for c in cases], axis=0)]
        sampler = PatchSampler(cases, cfg, seed, cond_mode)
        steps_per_epoch = max(1, math.ceil(len(cases) / (batch * dist.world)))

        torch.manual_seed(derive_seed(seed, "ddpm-init"))
        net = build_network(cfg).to(dev)
        ema_net = None
        if tr.get("ema"):
            ema_net = copy.deepcopy(net).requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=float(tr["lr"]))
        use_amp = bool(tr.get("amp")) and dev.type == "cuda"
        amp_dtype = torch.float16 if use_amp else None
        scaler = torch.amp.GradScaler("cuda") if use_amp else None
        start = 0
        rows: list[dict] = []
        elapsed0 = 0.0
        if doc is not None:
            load_checkpoint(model_dir, net, opt, ema_net)
            start = int(doc["state"]["step"])
            elapsed0 = float(doc["state"].get("seconds", 0.0))
            if scaler is not None and doc["state"].get("amp_scaler"):
                scaler.load_state_dict(doc["state"]["amp_scaler"])
            rows = _read_losses(model_dir, start)
            if int(doc["state"].get("processes", 1)) != dist.world:
                log.warning("resuming a run made with %s processes on %d: the continuation differs from an "
                            "uninterrupted run", doc["state"].get("processes"), dist.world)
            log.info("resuming from step %d", start)
        if start >= total:
            log.info("model already trained for %d steps (>= %d): nothing to do", start, total)
            return {"model_dir": os.fspath(model_dir), "step": start, "final_loss": None, "seconds": 0.0,
                    "processes": dist.world, "parameters": count_parameters(net)}

        model = net
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        scheduler = make_ddpm_scheduler(cfg)
        grad_clip = float(tr.get("grad_clip", 0.0) or 0.0)
        save_every = max(1, int(tr.get("save_every", 100)))
        log_every = max(1, int(tr.get("log_every", 10)))
        info = {"training_data": _dataset_info(dataset_dir, cases)}
        n_params = count_parameters(net)
        if dist.is_main:
            log.info("DDPM %s: %d parameters, %d training cases, %d process(es), device %s, steps %d -> %d",
                     cfg.get("preset"), n_params, len(cases), dist.world, dev, start, total)

        def save(step_done: int, seconds: float) -> None:
            if not dist.is_main:
                return
            state = {"step": step_done, "seed": int(seed), "processes": dist.world, "seconds": seconds,
                     "steps_per_epoch": steps_per_epoch, "lr": lr_at(step_done, cfg, steps_per_epoch),
                     "amp_scaler": scaler.state_dict() if scaler is not None else None}
            save_checkpoint(model_dir, cfg, net.state_dict(), state, opt.state_dict(),
                            ema_net.state_dict() if ema_net is not None else None, info)
            write_loss_curve(model_dir, rows)

        from bonemet.progress import progress

        t0 = time.monotonic()
        last = None
        net.train()
        for s in progress(range(start, total), desc="ddpm train", total=total - start, unit="step"):
            lr = lr_at(s, cfg, steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            img, cond = sampler.batch(s, dist.rank, batch)
            x0 = torch.from_numpy(img).to(dev)
            c = torch.from_numpy(cond).to(dev) if cond is not None else None
            noise, t = step_noise(seed, s, dist.rank, x0.shape, scheduler.num_train_timesteps)
            loss = training_step(model, opt, scheduler, x0, noise.to(dev), t.to(dev), c, grad_clip, scaler,
                                 amp_dtype)
            if not math.isfinite(loss):
                raise InputError(f"training diverged at step {s + 1} (loss {loss}); lower training.lr")
            if ema_net is not None:
                update_ema(ema_net, net, float(tr.get("ema_decay", 0.999)))
            loss = D.mean(dist, loss, dev)
            last = loss
            done = s + 1
            seconds = elapsed0 + time.monotonic() - t0
            if done % log_every == 0 or done == total:
                rows.append({"step": done, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}", "seconds": f"{seconds:.2f}"})
            if done % save_every == 0 or done == total:
                save(done, seconds)
                D.barrier(dist)
        seconds = elapsed0 + time.monotonic() - t0
        if dist.is_main:
            log.info("DDPM trained to step %d (last loss %.4g) in %.1f s; saved to %s", total, last or float("nan"),
                     seconds, model_dir)
        return {"model_dir": os.fspath(model_dir), "step": total, "final_loss": last, "seconds": seconds,
                "processes": dist.world, "rank": dist.rank, "parameters": n_params, "cases": len(cases)}
    finally:
        D.finish(dist)


__all__ = ["train_ddpm", "training_step", "diffusion_loss", "step_noise", "lr_at", "write_loss_curve"]
