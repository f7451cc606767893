"""DDPM model folders: safetensors tensors + one JSON file. Loading never unpickles anything.

Layout of ``MODEL_DIR``::

    config.json                  format, bonemet version, the full DDPM config (network, schedule, data,
                                 training, refine defaults, conditioning), training state (step, seed,
                                 processes, AMP scaler), and for every tensor file its name, sha256 and the
                                 names/shapes it holds; plus a sha256 of the config section itself
    model-<step>.safetensors     network weights
    ema-<step>.safetensors       EMA of the weights (when training with --ema; used for refinement)
    optim-<step>.safetensors     Adam state tensors (param groups are in config.json)
    loss.csv, loss.png           loss curve

A checkpoint is committed by atomically replacing ``config.json`` after its tensor files are written (files of
older steps are deleted afterwards), so a killed job always leaves a complete, consistent checkpoint.

:func:`load_model` / :func:`load_checkpoint` refuse with :class:`~bonemet.errors.ModelError` a folder that is
not a DDPM model, of a newer format, with missing files, with files modified after saving (sha256), with an
edited config, or whose tensors do not fit the network (missing / unexpected names, wrong shapes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bonemet import __version__
from bonemet.atomic import atomic_path, write_json
from bonemet.errors import ModelError

FORMAT = "bonemet.diffusion.ddpm"
FORMAT_VERSION = 1
CONFIG = "config.json"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_digest(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _save_tensors(path: Path, tensors: dict) -> dict:
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp))
    return {"name": path.name, "sha256": sha256_file(path),
            "tensors": {k: list(v.shape) for k, v in clean.items()}}


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    import torch

    tensors, extra = {}, {}
    for idx, st in state_dict["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v
            else:
                extra[f"{idx}.{k}"] = v
    return tensors, {"param_groups": state_dict["param_groups"], "extra": extra}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, v in tensors.items():
        _, idx, k = name.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for name, v in (meta.get("extra") or {}).items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(model_dir, cfg: dict, model_state: dict, state: dict, optimizer_state: dict | None = None,
                    ema_state: dict | None = None, extra: dict | None = None) -> Path:
    """Write tensors of step ``state['step']`` then commit ``config.json``; remove older tensor files."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    step = int(state.get("step", 0))
    files = {"model": _save_tensors(model_dir / f"model-{step:07d}.safetensors", model_state)}
    optim_meta = None
    if ema_state is not None:
        files["ema"] = _save_tensors(model_dir / f"ema-{step:07d}.safetensors", ema_state)
    if optimizer_state is not None:
        tens, optim_meta = _flatten_optimizer(optimizer_state)
        files["optimizer"] = _save_tensors(model_dir / f"optim-{step:07d}.safetensors", tens)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bonemet_version": __version__,
        "config": cfg,
        "config_sha256": config_digest(cfg),
        "state": state,
        "optimizer": optim_meta,
        "inference_weights": "ema" if ema_state is not None else "model",
        "files": files,
        **(extra or {}),
    }
    write_json(model_dir / CONFIG, doc)
    keep = {f["name"] for f in files.values()}
    for p in model_dir.glob("*.safetensors"):
        if p.name not in keep and p.name.split("-")[0] in ("model", "ema", "optim"):
            try:
                p.unlink()
            except OSError:
                pass
    return model_dir / CONFIG


def read_config(model_dir) -> dict:
    """Parse and check ``config.json`` (format, version, config digest)."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not model_dir.exists():
        raise ModelError("model folder not found", model_dir)
    if not path.exists():
        raise ModelError("not a BoneMet DDPM model folder (config.json is missing)", model_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"config.json is not valid JSON ({exc})", path) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"not a BoneMet DDPM model (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {FORMAT!r})", path)
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"model format version {doc.get('format_version')} is newer than this bonemet supports "
                         f"({FORMAT_VERSION}); update bonemet", path)
    if not isinstance(doc.get("config"), dict) or doc.get("config_sha256") != config_digest(doc["config"]):
        raise ModelError("the config section of config.json was modified after saving (sha256 mismatch)", path)
    if not isinstance(doc.get("files"), dict) or "model" not in doc["files"]:
        raise ModelError("config.json lists no model weights file", path)
    return doc


def read_tensors(model_dir, entry: dict) -> dict:
    """Load one safetensors file listed in config.json after checking its sha256 and tensor names/shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    name = str(entry.get("name", ""))
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelError(f"invalid tensor file name {name!r} in config.json", Path(model_dir) / CONFIG)
    path = Path(model_dir) / name
    if not path.exists():
        raise ModelError("weights file is missing", path)
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise ModelError("file was modified after saving (sha256 differs from the one recorded in config.json); "
                         "refusing to load it", path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read safetensors file ({exc})", path) from exc
    recorded = entry.get("tensors")
    if recorded is not None:
        got = {k: list(v.shape) for k, v in tensors.items()}
        if got != recorded:
            raise ModelError("tensor names/shapes differ from those recorded in config.json", path)
    return tensors


def _load_into(network, tensors: dict, path) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: {list(tensors[k].shape)} vs {list(expected[k].shape)}" for k in expected
             if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[0]})")
        raise ModelError("weights do not fit the network described by config.json: " + "; ".join(parts), path)
    network.load_state_dict(tensors, strict=True)


def load_model(model_dir, device="cpu", weights: str | None = None):
    """(network in eval mode on ``device``, config dict) of a DDPM model folder, safely.

    ``weights``: ``"ema"`` or ``"model"`` (default: what the folder recommends — EMA when it was trained with
    EMA). The returned config holds ``_model`` = {dir, step, weights} for provenance."""
    from bonemet.diffusion.config import validate
    from bonemet.diffusion.network import build_network

    doc = read_config(model_dir)
    cfg = dict(doc["config"])
    try:
        validate(cfg)
        net = build_network(cfg)
    except Exception as exc:  # noqa: BLE001 - any failure to build is a bad model folder
        raise ModelError(f"config.json describes no valid network ({exc})", Path(model_dir) / CONFIG) from exc
    which = weights or doc.get("inference_weights", "model")
    if which not in doc["files"]:
        raise ModelError(f"the model folder has no {which!r} weights", Path(model_dir) / CONFIG)
    tensors = read_tensors(model_dir, doc["files"][which])
    _load_into(net, tensors, Path(model_dir) / doc["files"][which]["name"])
    net.to(device).eval()
    cfg["_model"] = {"dir": os.fspath(model_dir), "step": int(doc.get("state", {}).get("step", 0)),
                     "weights": which, "sha256": doc["files"][which]["sha256"]}
    return net, cfg


def load_checkpoint(model_dir, network, optimizer=None, ema=None) -> dict:
    """Restore network (and optimiser, EMA network) from a model folder for ``--resume``; returns config.json."""
    doc = read_config(model_dir)
    _load_into(network, read_tensors(model_dir, doc["files"]["model"]), Path(model_dir) / doc["files"]["model"]["name"])
    if ema is not None:
        if "ema" not in doc["files"]:
            raise ModelError("cannot resume with EMA: the checkpoint has no EMA weights", Path(model_dir) / CONFIG)
        _load_into(ema, read_tensors(model_dir, doc["files"]["ema"]), Path(model_dir) / doc["files"]["ema"]["name"])
    if optimizer is not None:
        if "optimizer" not in doc["files"] or not doc.get("optimizer"):
            raise ModelError("cannot resume: the checkpoint has no optimiser state", Path(model_dir) / CONFIG)
        tensors = read_tensors(model_dir, doc["files"]["optimizer"])
        try:
            optimizer.load_state_dict(_unflatten_optimizer(tensors, doc["optimizer"]))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"optimiser state does not fit the network ({exc})", Path(model_dir) / CONFIG) from exc
    return doc
