"""Model packages: one folder (or ``.zip`` of it) per trained segmentation model.

Layout::

    MODEL_PKG/
      config.json         architecture, spacing, intensity, patch size, labels, inference/post-processing,
                          training provenance (data manifest hashes), validation metrics, bonemet version,
                          weights sha256 and a sha256 of the config itself
      model.safetensors   the weights (safetensors: loading never unpickles anything)
      history.csv, curves.png   learning curves (when made by ``bonemet train``)

:func:`load_package` refuses, with :class:`~bonemet.errors.ModelError`, packages that are incomplete, of an
unknown format/architecture, from a newer bonemet, whose weights do not match the architecture (missing /
unexpected tensors, wrong shapes) or whose files were modified after saving (hash mismatch).

**Importing your own model.** Any MONAI ``UNet`` trained elsewhere can become a package::

    from bonemet.segmentation.config import make_config
    from bonemet.segmentation.package import save_package
    cfg = make_config("paper", {"spacing": [0.85, 0.85, 0.85], "intensity": {"method": "window",
                                "window": [-1000, 2000]}, "femur_channel": False})
    save_package("my_model", net.state_dict(), cfg, metrics={"note": "trained on my data"})

The config must describe the network exactly (channels, strides, num_res_units, norm, input channels:
1 = CT, 2 = CT + femur mask; output channel 0 = lesion logit, sigmoid) and the preprocessing it was trained
with (voxel spacing, HU window mapped to [-1, 1]). Then ``bonemet predict CT --model my_model -o mask.nii.gz``
or the Slicer module's "Model" selector use it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import zipfile
from pathlib import Path

from bonemet import __version__
from bonemet.atomic import atomic_path, write_json
from bonemet.errors import ModelError
from bonemet.segmentation.config import KNOWN_ARCHITECTURES, in_channels, out_channels

FORMAT = "bonemet.segmentation.unet"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LABELS = {"0": "background", "1": "lesion"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_hashes(dataset_dirs) -> list[dict]:
    """sha256 of each training dataset's ``manifest.json`` (identifies the training data in the package)."""
    from bonemet.dataset import manifest_path

    out = []
    for d in dataset_dirs or []:
        mp = manifest_path(d)
        out.append({"dataset": str(d), "manifest_sha256": sha256_file(mp) if mp.exists() else None})
    return out


def _config_digest(cfg: dict) -> str:
    body = {k: v for k, v in cfg.items() if k != "config_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _state_dict(net_or_sd):
    sd = net_or_sd.state_dict() if hasattr(net_or_sd, "state_dict") else net_or_sd
    sd = getattr(sd, "module", sd)
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        out[k] = v.detach().cpu().contiguous()
    return out


def package_config(cfg: dict, *, metrics: dict | None = None, training: dict | None = None) -> dict:
    """The ``config.json`` body for a training config ``cfg`` (hash fields are added by :func:`save_package`)."""
    body = copy.deepcopy(cfg)
    body.update({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bonemet_version": __version__,
        "labels": LABELS,
        "inputs": ["ct", "femur"] if in_channels(cfg) == 2 else ["ct"],
        "outputs": ["lesion", "femur"] if out_channels(cfg) == 2 else ["lesion"],
        "axes": "spacing and patch_size are (x, y, z); network tensors are (B, C, z, y, x)",
    })
    if metrics is not None:
        body["validation"] = metrics
    if training is not None:
        body["training"] = training
    return body


def save_package(path: str | os.PathLike, network_or_state_dict, cfg: dict, *, metrics: dict | None = None,
                 training: dict | None = None) -> Path:
    """Write a package folder (or ``.zip`` when ``path`` ends with .zip). Weights first, config.json last."""
    from safetensors.torch import save as st_save

    path = Path(path)
    weights = st_save(_state_dict(network_or_state_dict), metadata={"format": FORMAT})
    body = package_config(cfg, metrics=metrics, training=training) if cfg.get("format") != FORMAT else \
        copy.deepcopy(cfg)
    if metrics is not None:
        body["validation"] = metrics
    if training is not None:
        body["training"] = training
    body.pop("_path", None)
    body["bonemet_version"] = body.get("bonemet_version", __version__)
    body["weights"] = {"file": WEIGHTS, "sha256": sha256_bytes(weights), "bytes": len(weights)}
    body["config_sha256"] = _config_digest(body)
    text = json.dumps(body, indent=2, default=str) + "\n"
    if path.suffix.lower() == ".zip":
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(WEIGHTS, weights)
                z.writestr(CONFIG, text)
        return path
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS) as tmp:
        tmp.write_bytes(weights)
    write_json(path / CONFIG, body)
    return path


def _read_members(path: Path) -> tuple[bytes, bytes]:
    if not path.exists():
        raise ModelError("model package not found", path)
    if path.is_dir():
        cpath, wpath = path / CONFIG, path / WEIGHTS
        if not cpath.exists():
            raise ModelError(f"not a model package: no {CONFIG} (train one with 'bonemet train')", path)
        if not wpath.exists():
            raise ModelError(f"incomplete model package: {WEIGHTS} is missing", path)
        return cpath.read_bytes(), wpath.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = {Path(n).name: n for n in z.namelist() if not n.endswith("/")}
            if CONFIG not in names or WEIGHTS not in names:
                raise ModelError(f"not a model package archive: needs {CONFIG} and {WEIGHTS}", path)
            return z.read(names[CONFIG]), z.read(names[WEIGHTS])
    raise ModelError("not a model package (expected a folder or a .zip with config.json and model.safetensors)",
                     path)


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def read_config(path: str | os.PathLike) -> dict:
    """The validated ``config.json`` of a package (no weights loaded)."""
    return _check_config(json.loads(_read_members(Path(path))[0]), Path(path))


def _check_config(cfg, path: Path) -> dict:
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelError(f"unknown package format {cfg.get('format') if isinstance(cfg, dict) else None!r} "
                         f"(expected {FORMAT!r})", path)
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"package format version {cfg.get('format_version')} is newer than this bonemet "
                         f"supports ({FORMAT_VERSION}); update bonemet", path)
    if _version_tuple(cfg.get("bonemet_version", "0"))[:1] > _version_tuple(__version__)[:1]:
        raise ModelError(f"package made by bonemet {cfg.get('bonemet_version')}, incompatible with "
                         f"{__version__}; update bonemet", path)
    arch = (cfg.get("architecture") or {}).get("name")
    if arch not in KNOWN_ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r} (this bonemet knows {', '.join(KNOWN_ARCHITECTURES)})",
                         path)
    if "config_sha256" in cfg and cfg["config_sha256"] != _config_digest(cfg):
        raise ModelError("config.json was modified after the package was saved (config hash mismatch): "
                         "the package is tampered or corrupt", path)
    for key in ("spacing", "patch_size", "intensity", "weights"):
        if key not in cfg:
            raise ModelError(f"config.json lacks {key!r}", path)
    return cfg


def load_package(path: str | os.PathLike, device="cpu"):
    """Load and verify a package → ``(network in eval mode on device, config dict)``. Raises ModelError."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from bonemet.segmentation.network import build_network

    path = Path(path)
    cbytes, wbytes = _read_members(path)
    try:
        cfg = json.loads(cbytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"config.json is not valid JSON: {exc}", path) from exc
    cfg = _check_config(cfg, path)
    want = (cfg.get("weights") or {}).get("sha256")
    if not want:
        raise ModelError("config.json has no weights sha256 (save packages with save_package)", path)
    if sha256_bytes(wbytes) != want:
        raise ModelError("model.safetensors does not match the sha256 recorded in config.json: the package is "
                         "tampered or corrupt", path)
    try:
        state = st_load(wbytes)
    except (SafetensorError, Exception) as exc:  # noqa: BLE001
        raise ModelError(f"cannot read weights: {exc}", path) from exc
    try:
        net = build_network(cfg)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot build the architecture described in config.json: {exc}", path) from exc
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) with wrong shape (e.g. {wrong[0]})")
        raise ModelError("weights do not fit the architecture in config.json: " + "; ".join(parts), path)
    net.load_state_dict(state, strict=True)
    net.to(torch.device(device) if not isinstance(device, torch.device) else device).eval()
    cfg["_path"] = str(path)
    return net, cfg


def find_packages(path: str | os.PathLike) -> list[Path]:
    """A package, or a folder of packages (fold models → ensemble): the package paths, sorted."""
    path = Path(path)
    if (path / CONFIG).exists() or path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir()
                       if (p.is_dir() and (p / CONFIG).exists()) or (p.suffix.lower() == ".zip"))
        if found:
            return found
        raise ModelError("folder is neither a model package nor a folder of model packages", path)
    raise ModelError("model package not found", path)
