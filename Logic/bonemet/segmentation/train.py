"""Training of the lesion U-Net (``bonemet train``).

:func:`train_unet` trains on one or several dataset folders, validates (Dice on the model grid, every
``val_every`` epochs), keeps the best weights, stops early after ``patience`` epochs without improvement, and
writes a model package (:mod:`.package`) plus ``history.csv`` / ``curves.png``. It is resumable: the full
training state (weights, optimiser, scheduler, history) is saved atomically in ``PKG/.train/state.pt`` at every
validation (loaded back with ``torch.load(weights_only=True)``). Mixed precision on CUDA; multi-GPU / multi-
process with ``torchrun`` (DDP; NCCL on GPU, gloo on CPU): every rank draws different patches, rank 0
validates and writes.

Fine-tuning (``init=PKG``): architecture and preprocessing come from the initial package, the learning rate,
decay and patience from the config's ``finetune`` block (paper: lr 0.001, no decay, patience 25).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path

import numpy as np

from bonemet.atomic import atomic_path, write_text
from bonemet.errors import InputError
from bonemet.progress import progress
from bonemet.seeding import derive_seed, rng
from bonemet.segmentation.config import make_config, validate_config
from bonemet.segmentation.data import dataset_kind, load_case_crops, load_dataset_cases

log = logging.getLogger("bonemet")
STATE_DIR = ".train"
INHERITED_FROM_INIT = ("architecture", "spacing", "intensity", "femur_channel", "aux_femur", "crop_margin_mm",
                       "patch_size")


def _dist():
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if world > 1 and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def split_validation(cases, fraction: float, seed: int):
    """Hold out about ``fraction`` of the lesioned cases, grouped by ``patient`` (never split a patient)."""
    if fraction <= 0:
        return cases, []
    groups: dict[str, list] = {}
    for c in cases:
        groups.setdefault(str(c.get("patient") or c.id), []).append(c)
    keys = sorted(groups)
    if len(keys) < 3:
        return cases, []
    order = rng(seed, "val-split").permutation(len(keys))
    n_val = max(1, int(round(fraction * len(keys))))
    val_keys = {keys[i] for i in order[:n_val]}
    train = [c for c in cases if str(c.get("patient") or c.id) not in val_keys]
    val = [c for c in cases if str(c.get("patient") or c.id) in val_keys]
    return train, val


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float | None:
    p, r = pred > 0, ref > 0
    s = int(p.sum()) + int(r.sum())
    if s == 0:
        return None
    return 2.0 * int((p & r).sum()) / s


def validate(net, crops, cfg, device) -> dict:
    """Mean model-grid Dice over validation crops that contain a lesion (+ false-positive voxels elsewhere)."""
    from bonemet.segmentation.predict import sliding_window_probability

    dices, fp = [], 0
    thr = float(cfg.get("inference", {}).get("threshold", 0.5))
    net.eval()
    for c in crops:
        pred = sliding_window_probability(c.image, net, cfg, device=device) >= thr
        if c.lesion is not None and c.lesion.any():
            dices.append(dice_score(pred, c.lesion))
        else:
            fp += int(pred.sum())
    net.train()
    return {"val_dice": float(np.mean(dices)) if dices else None, "val_fp_voxels": fp, "val_n": len(dices)}


def _loss_fn(cfg):
    from monai.losses import DiceCELoss, DiceLoss

    if cfg["loss"] == "dice_ce":
        return DiceCELoss(sigmoid=True, batch=True)
    return DiceLoss(sigmoid=True, batch=True)


def _write_curves(pkg: Path, history: list[dict]) -> None:
    if not history:
        return
    cols = ["epoch", "lr", "train_loss", "val_dice", "val_fp_voxels", "seconds"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for h in history:
        w.writerow({k: ("" if h.get(k) is None else h.get(k)) for k in cols})
    write_text(pkg / "history.csv", buf.getvalue())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ep = [h["epoch"] for h in history]
        ax.plot(ep, [h["train_loss"] for h in history], label="training loss")
        vd = [(h["epoch"], h["val_dice"]) for h in history if h.get("val_dice") is not None]
        if vd:
            ax.plot(*zip(*vd), "o-", label="validation Dice")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, max(1.0, max(h["train_loss"] for h in history)))
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(pkg / "curves.png") as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001  (curves are a convenience, never fail a training for them)
        log.warning("could not draw learning curves: %s", exc)


def _save_state(path: Path, state: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def train_unet(dataset_dirs, package_dir, preset: str = "small", epochs: int | None = None, init=None,
               seed: int = 0, device="auto", overrides: dict | None = None, val_dataset=None,
               resume: bool = False, case_ids=None, val_case_ids=None, max_iterations: int | None = None) -> dict:
    """Train a lesion U-Net and write a model package at ``package_dir``. Returns a summary dict.

    ``dataset_dirs``: dataset folder(s) (cases with a lesion mask; healthy cases train as negatives).
    ``init``: a package to fine-tune. ``val_dataset``: folder for validation (else ``val_fraction`` of the
    training cases, grouped by patient, or the training cases themselves). ``case_ids`` / ``val_case_ids``
    restrict the cases used (experiments). ``max_iterations`` caps optimizer steps per epoch.
    """
    import torch

    from bonemet.device import resolve_device
    from bonemet.segmentation.network import build_network
    from bonemet.segmentation.package import load_package, manifest_hashes, save_package
    from bonemet.segmentation.transforms import PatchDataset, crop_item, train_transform

    if isinstance(dataset_dirs, (str, os.PathLike)):
        dataset_dirs = [dataset_dirs]
    dataset_dirs = [Path(d) for d in dataset_dirs]
    pkg = Path(package_dir)
    state_path = pkg / STATE_DIR / "state.pt"
    dist, rank, world = _dist()
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        torch.cuda.set_device(dev)

    cfg = make_config(preset, overrides)
    init_net = None
    if init is not None:
        init_net, init_cfg = load_package(init, "cpu")
        for k in INHERITED_FROM_INIT:
            if k in init_cfg:
                cfg[k] = init_cfg[k]
        ft = cfg.get("finetune", {})
        cfg["optimizer"] = {**cfg["optimizer"], "lr": float(ft.get("lr", 0.001))}
        cfg["lr_decay_value"] = float(ft.get("lr_decay", 1.0))
        cfg["patience"] = int(ft.get("patience", cfg["patience"]))
        validate_config(cfg)
    kind = cfg.get("dataset_kind", "auto")
    if kind == "auto":
        kind = dataset_kind(dataset_dirs)
    decay = cfg.get("lr_decay_value")
    if decay is None:
        d = cfg.get("lr_decay", 1.0)
        decay = float(d.get(kind, 1.0)) if isinstance(d, dict) else float(d)
    n_epochs = int(epochs if epochs is not None else cfg["epochs"])

    cases = load_dataset_cases(dataset_dirs, case_ids)
    if not cases:
        raise InputError("no training cases", dataset_dirs[0])
    if val_dataset is not None:
        val_cases = load_dataset_cases(val_dataset, val_case_ids)
        train_cases = cases
    elif val_case_ids is not None:
        train_cases, val_cases = cases, load_dataset_cases(dataset_dirs, val_case_ids)
    else:
        train_cases, val_cases = split_validation(cases, float(cfg.get("val_fraction", 0.0)), seed)
    if not any(c.lesion is not None for c in train_cases):
        raise InputError("the training cases contain no lesion mask (nothing to learn)", dataset_dirs[0])

    train_crops = [cr for c in progress(train_cases, "loading training cases") for cr in load_case_crops(c, cfg)]
    val_on_train = not val_cases
    val_crops = train_crops if val_on_train else [cr for c in val_cases for cr in load_case_crops(c, cfg)]
    items = [crop_item(c, cfg) for c in train_crops]
    log.info("training on %d crops from %d cases (%s data, lr decay %.4g), validating on %s", len(items),
             len(train_cases), kind, decay, "the training cases" if val_on_train else f"{len(val_cases)} cases")

    torch.manual_seed(derive_seed(seed, "init"))
    net = build_network(cfg)
    if init_net is not None:
        net.load_state_dict(init_net.state_dict())
    net.to(dev)
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    oc = cfg["optimizer"]
    if oc["name"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=float(oc["lr"]), momentum=float(oc.get("momentum", 0.9)),
                              weight_decay=float(oc.get("weight_decay", 0.0)))
    else:
        opt = torch.optim.Adam(net.parameters(), lr=float(oc["lr"]), weight_decay=float(oc.get("weight_decay", 0.0)))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    use_amp = dev.type == "cuda" and bool(cfg.get("amp", True))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = _loss_fn(cfg)

    history: list[dict] = []
    start_epoch, best, best_epoch, bad = 1, -1.0, 0, 0
    best_state = None
    if state_path.exists():
        if not resume:
            raise InputError(f"an unfinished or finished training exists here ({state_path}); pass --resume to "
                             "continue it or choose another output", pkg)
        st = _load_state(state_path)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        best_state = st.get("best_model")
        history = list(st["history"])
        start_epoch, best, best_epoch, bad = int(st["epoch"]) + 1, float(st["best"]), int(st["best_epoch"]), int(
            st["bad"])
        if st.get("stopped_early"):
            start_epoch = n_epochs + 1  # an early-stopped training is complete; more epochs won't help
        log.info("resuming after epoch %d (best val Dice %.4f at epoch %d)", start_epoch - 1, best, best_epoch)
    elif (pkg / "config.json").exists() and not resume:
        raise InputError("a model package already exists here; choose another output folder", pkg)

    tf = train_transform(cfg)
    ds = PatchDataset(items, tf, int(cfg.get("patches_per_case", 1)))
    bs = int(cfg.get("batch_size", 2))
    val_every = max(int(cfg.get("val_every", 1)), 1)
    patience = int(cfg.get("patience", 10 ** 9))
    femur_in, aux = bool(cfg.get("femur_channel")), bool(cfg.get("aux_femur"))
    aux_w = float(cfg.get("aux_weight", 0.5))
    stopped_early = False
    t_train, n_iter_total = 0.0, 0
    epoch = start_epoch - 1
    for epoch in progress(range(start_epoch, n_epochs + 1), "training epochs", total=max(n_epochs - start_epoch
                                                                                          + 1, 0), unit="epoch"):
        t0 = time.perf_counter()
        tf.set_random_state(seed=derive_seed(seed, "aug", epoch, rank))
        order = rng(seed, "shuffle", epoch).permutation(len(ds))
        per_rank = max(len(order) // world, 1)
        mine = [int(order[(rank + world * i) % len(order)]) for i in range(per_rank)]
        n_steps = -(-len(mine) // bs)
        if max_iterations:
            n_steps = min(n_steps, int(max_iterations))
        model.train()
        losses = []
        for step in range(n_steps):
            batch = [ds[j] for j in mine[step * bs:(step + 1) * bs]]
            ct = torch.stack([b["ct"] for b in batch]).float()
            fem = torch.stack([b["femur"] for b in batch]).float()
            les = torch.stack([b["lesion"] for b in batch]).float()
            x = torch.cat([ct, fem], 1) if femur_in else ct
            x, les, fem = x.to(dev), les.to(dev), fem.to(dev)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, enabled=use_amp):
                logits = model(x)
            logits = logits.float()
            loss = loss_fn(logits[:, :1], les)
            if aux:
                loss = loss + aux_w * loss_fn(logits[:, 1:2], fem)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
        n_iter_total += n_steps
        sched.step()
        dt = time.perf_counter() - t0
        t_train += dt
        rec = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
               "val_dice": None, "val_fp_voxels": None, "seconds": round(dt, 3), "iterations": n_steps}
        stop = False
        if rank == 0 and (epoch % val_every == 0 or epoch == n_epochs):
            v = validate(net, val_crops, cfg, dev)
            rec.update(v)
            score = v["val_dice"] if v["val_dice"] is not None else -rec["train_loss"]
            if score > best:
                best, best_epoch, bad = score, epoch, 0
                best_state = {k: t.detach().cpu().clone() for k, t in net.state_dict().items()}
            else:
                bad += val_every
            log.info("epoch %d: loss %.4f, val Dice %s (best %.4f @ %d)", epoch, rec["train_loss"],
                     "n/a" if v["val_dice"] is None else f"{v['val_dice']:.4f}", best, best_epoch)
            stop = bad >= patience
        if rank == 0:
            history.append(rec)
            if rec["val_dice"] is not None or epoch == n_epochs or rec.get("val_fp_voxels") is not None:
                _save_state(state_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                         "scheduler": sched.state_dict(), "best_model": best_state,
                                         "history": history, "epoch": epoch, "best": best,
                                         "best_epoch": best_epoch, "bad": bad, "finished": False})
                _write_curves(pkg, history)
        if dist is not None:
            flag = torch.tensor([1 if stop else 0])
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            stopped_early = True
            log.info("early stopping at epoch %d (no improvement for %d epochs)", epoch, patience)
            break

    summary = {"epochs_run": len(history), "best_epoch": best_epoch, "best_val_dice": best if best >= 0 else None,
               "stopped_early": stopped_early, "dataset_kind": kind, "lr_decay": decay,
               "iterations_per_s": (n_iter_total / t_train) if t_train > 0 else None, "package": str(pkg),
               "n_train_cases": len(train_cases), "n_val_cases": len(val_cases), "world_size": world, "rank": rank}
    if rank == 0:
        final = best_state if best_state is not None else net.state_dict()
        training = {"datasets": manifest_hashes(dataset_dirs), "train_cases": [c.id for c in train_cases],
                    "val_cases": [c.id for c in val_cases], "validated_on_training_cases": val_on_train,
                    "seed": seed, "epochs": n_epochs, "init": str(init) if init else None,
                    "dataset_kind": kind, "lr_decay": decay, "world_size": world,
                    "preset": str(preset)}
        metrics = {"best_val_dice": summary["best_val_dice"], "best_epoch": best_epoch,
                   "epochs_run": len(history), "stopped_early": stopped_early}
        save_package(pkg, final, cfg, metrics=metrics, training=training)
        _write_curves(pkg, history)
        _save_state(state_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "best_model": best_state, "history": history,
                                 "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad": bad,
                                 "finished": True, "stopped_early": stopped_early})
    if dist is not None:
        dist.barrier()
    return summary
