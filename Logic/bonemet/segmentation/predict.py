"""Inference: any CT → lesion mask on the CT's own grid.

Pipeline (:func:`predict_volume`): femur label map (given, or :func:`bonemet.femur.segment_femur`) → one crop
per femur (bounding box + margin) → resample to the model spacing → intensity standardisation from the package
config → sliding-window inference with overlap (Gaussian blending; optional flip test-time augmentation;
optional ensemble = average of the models' probabilities) → probability resampled back onto the crop of the
input grid → threshold → post-processing (:mod:`.postprocess`) → pasted into a mask of the input's shape.
Only crops are converted to float; the full volume is never copied to float64.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from bonemet.errors import InputError, ModelError
from bonemet.io import Volume, read_ct, read_mask, write_mask, write_volume
from bonemet.segmentation.config import patch_zyx
from bonemet.segmentation.data import make_crops
from bonemet.segmentation.grid import resample_onto
from bonemet.segmentation.postprocess import postprocess

log = logging.getLogger("bonemet")
ENSEMBLE_KEYS = ("spacing", "intensity", "femur_channel", "crop_margin_mm")


def sliding_window_probability(image: np.ndarray, networks, cfg: dict, device=None, tta: bool = False,
                               overlap: float | None = None) -> np.ndarray:
    """(C, z, y, x) float32 model-grid image → lesion probability (z, y, x) float32 in [0, 1].

    Averages sigmoid probabilities over ``networks`` (ensemble) and, with ``tta``, over flips of each axis.
    """
    import torch
    from monai.inferers import sliding_window_inference

    nets = networks if isinstance(networks, (list, tuple)) else [networks]
    dev = device or next(nets[0].parameters()).device
    inf = cfg.get("inference", {})
    # pad to at least one patch like training does (air for the CT channel, 0 for the femur channel)
    shape = image.shape[1:]
    patch = patch_zyx(cfg)
    pads = [(0, 0)] + [((max(p - n, 0)) // 2, max(p - n, 0) - max(p - n, 0) // 2) for n, p in zip(shape, patch)]
    if any(a or b for a, b in pads):
        padded = np.full((image.shape[0],) + tuple(n + a + b for n, (a, b) in zip(shape, pads[1:])), 0.0,
                         np.float32)
        padded[0] = -1.0
        padded[(slice(None),) + tuple(slice(a, a + n) for n, (a, _) in zip(shape, pads[1:]))] = image
        image = padded
    inner = tuple(slice(a, a + n) for n, (a, _) in zip(shape, pads[1:]))
    x = torch.from_numpy(np.ascontiguousarray(image)[None]).to(dev)
    flips = [()] + ([(2,), (3,), (4,)] if tta else [])
    acc = None
    use_amp = dev.type == "cuda" and bool(cfg.get("amp", True))
    with torch.inference_mode(), torch.autocast(dev.type, enabled=use_amp):
        for net in nets:
            for dims in flips:
                xi = torch.flip(x, dims) if dims else x
                logits = sliding_window_inference(
                    xi, roi_size=patch_zyx(cfg), sw_batch_size=int(inf.get("sw_batch_size", 2)), predictor=net,
                    overlap=float(inf.get("overlap", 0.5) if overlap is None else overlap),
                    mode=inf.get("mode", "gaussian"))
                p = torch.sigmoid(logits[:, :1].float())
                p = torch.flip(p, dims) if dims else p
                acc = p if acc is None else acc + p
    prob = (acc / (len(nets) * len(flips)))[0, 0]
    return np.ascontiguousarray(prob.cpu().numpy().astype(np.float32)[inner])


def femur_for(ct: Volume, femur: np.ndarray | None) -> np.ndarray:
    if femur is not None:
        femur = np.asarray(femur)
        if femur.shape != ct.array.shape:
            raise InputError(f"femur mask shape {femur.shape} differs from the CT shape {ct.array.shape}")
        return femur
    try:
        from bonemet.femur import segment_femur
    except ImportError as exc:
        raise InputError("no femur mask given and automatic femur segmentation is not available in this "
                         "installation: pass --femur MASK") from exc
    log.info("segmenting the femurs")
    return segment_femur(ct.array, ct.geometry)


def predict_volume(ct: Volume, network, config: dict, femur: np.ndarray | None = None, *, tta: bool = False,
                   device=None, return_prob: bool = False, timings: dict | None = None):
    """Segment lesions in ``ct`` (HU, any grid). ``network``: a model or a list (ensemble, same config).

    Returns ``(mask uint8 on ct's grid, probability float32 on ct's grid or None)``.
    ``timings`` (optional dict) receives seconds per stage.
    """
    t = timings if timings is not None else {}
    t0 = time.perf_counter()
    femur = femur_for(ct, femur)
    t["femur"] = time.perf_counter() - t0
    if not np.any(femur):
        raise InputError("the femur mask is empty: no femur to search for lesions", ct.path)
    t0 = time.perf_counter()
    crops = make_crops(ct, femur, config)
    t["preprocess"] = time.perf_counter() - t0
    mask = np.zeros(ct.array.shape, np.uint8)
    prob_full = np.zeros(ct.array.shape, np.float32) if return_prob else None
    thr = float(config.get("inference", {}).get("threshold", 0.5))
    t["network"] = t["resample_back"] = t["postprocess"] = 0.0
    for crop in crops:
        t0 = time.perf_counter()
        prob = sliding_window_probability(crop.image, network, config, device=device, tta=tta)
        t["network"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        prob_in = resample_onto(prob, crop.model_geometry, crop.input_geometry, "linear", 0.0)
        t["resample_back"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        sub = postprocess(prob_in >= thr, crop.input_geometry.spacing_zyx, femur[crop.slices] > 0,
                          config.get("postprocess"))
        np.maximum(mask[crop.slices], sub, out=mask[crop.slices])
        if prob_full is not None:
            np.maximum(prob_full[crop.slices], prob_in, out=prob_full[crop.slices])
        t["postprocess"] += time.perf_counter() - t0
    return mask, prob_full


def load_models(model_paths, device="cpu"):
    """Load one or several packages (a path, a list, or a folder of fold packages) → (networks, config)."""
    from bonemet.segmentation.package import find_packages, load_package

    if isinstance(model_paths, (str, os.PathLike)):
        model_paths = [model_paths]
    paths = [p for mp in model_paths for p in find_packages(mp)]
    nets, cfgs = [], []
    for p in paths:
        net, cfg = load_package(p, device)
        nets.append(net)
        cfgs.append(cfg)
    for p, c in zip(paths[1:], cfgs[1:]):
        diff = [k for k in ENSEMBLE_KEYS if c.get(k) != cfgs[0].get(k)]
        if diff:
            raise ModelError(f"cannot ensemble with {paths[0]}: different {', '.join(diff)}", p)
    if len(nets) > 1:
        log.info("ensemble of %d models", len(nets))
    return nets, cfgs[0]


def predict_file(ct_path, model_pkg, out_path, femur_path=None, device="auto", tta: bool = False,
                 prob_out=None, timings: dict | None = None) -> Path:
    """Read a CT (any supported format), predict, write the mask (and optionally the probability map)."""
    from bonemet.device import resolve_device

    t = timings if timings is not None else {}
    dev = resolve_device(device)
    t0 = time.perf_counter()
    nets, cfg = load_models(model_pkg, dev)
    t["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ct = read_ct(ct_path)
    femur = read_mask(femur_path, reference=ct, binary=False).array if femur_path else None
    t["read"] = time.perf_counter() - t0
    mask, prob = predict_volume(ct, nets, cfg, femur, tta=tta, device=dev, return_prob=prob_out is not None,
                                timings=t)
    t0 = time.perf_counter()
    out = write_mask(out_path, mask, ct.geometry)
    if prob_out is not None:
        write_volume(prob_out, prob, ct.geometry)
    t["write"] = time.perf_counter() - t0
    vol = float(mask.sum()) * ct.geometry.voxel_volume
    log.info("lesion volume %.1f mm3 written to %s", vol, out)
    return Path(out)
