"""DDPM configuration: presets ``ddpm-<name>.json`` merged with user overrides, validated.

A config is a plain JSON-able dict with sections

* ``network``   MONAI ``DiffusionModelUNet`` arguments (3D, ``in_channels`` derived from ``conditioning``);
* ``scheduler`` noise schedule (``num_train_timesteps`` T, ``schedule``, ``beta_start``, ``beta_end``);
* ``data``      patch size (**x, y, z** order like the paper's "96 x 96 x 48"), femur-region margin, sampling
  probabilities and the intensity standardisation (:mod:`bonemet.intensity`);
* ``training``  steps, batch size per process, Adam lr, exponential decay (``lr_decay`` applied every
  ``lr_decay_every`` steps, or every epoch = ceil(cases / (batch x processes)) steps with ``"epoch"``),
  EMA, AMP, checkpoint interval;
* ``refine``    default refinement settings (λ, its unit, DDIM steps, window overlap and blending);
* ``conditioning`` ``"none"`` (paper: the denoiser sees the noisy CT only) or ``"mask"`` (seed 002: extra
  input channels with the lesion mask and the normalised z/y/x coordinates of each voxel in the femur region).

The same dict is stored in the model folder's ``config.json``, so a model carries everything needed to use it.
"""

from __future__ import annotations

import copy

from bonemet.errors import InputError
from bonemet.presets import load_preset, merge

CONDITIONINGS = ("none", "mask")
LAMBDA_UNITS = ("train", "ddim")
# Conditioning channels after the CT channel: lesion mask + 3 coordinate channels (z, y, x).
COND_CHANNELS = {"none": 0, "mask": 4}


def make_config(preset: str = "small", overrides: dict | None = None, conditioning: str | None = None) -> dict:
    """Preset (name or JSON path) deep-merged with ``overrides``; validated."""
    cfg = merge(load_preset("ddpm", preset), overrides)
    cfg["preset"] = str(preset)
    if conditioning is not None:
        cfg["conditioning"] = conditioning
    cfg.setdefault("conditioning", "none")
    validate(cfg)
    return cfg


def validate(cfg: dict) -> dict:
    """Raise :class:`InputError` naming the bad value."""
    for sec in ("network", "scheduler", "data", "training"):
        if not isinstance(cfg.get(sec), dict):
            raise InputError(f"DDPM config lacks the {sec!r} section")
    cfg.setdefault("refine", {})
    if cfg.get("conditioning", "none") not in CONDITIONINGS:
        raise InputError(f"unknown conditioning {cfg.get('conditioning')!r} (choose {', '.join(CONDITIONINGS)})")
    net = cfg["network"]
    ch = list(net.get("channels", []))
    att = list(net.get("attention_levels", []))
    if not ch or len(ch) != len(att):
        raise InputError(f"network.channels {ch} and network.attention_levels {att} must have the same length")
    g = int(net.get("norm_num_groups", 32))
    if any(c % g for c in ch):
        raise InputError(f"network.channels {ch} must all be multiples of norm_num_groups {g}")
    patch = patch_zyx(cfg)
    factor = 2 ** (len(ch) - 1)
    if any(p % factor or p <= 0 for p in patch):
        raise InputError(f"data.patch_size_xyz {cfg['data'].get('patch_size_xyz')} must be positive multiples of "
                         f"{factor} (the network downsamples {len(ch) - 1} times)")
    sch = cfg["scheduler"]
    if int(sch.get("num_train_timesteps", 0)) < 1:
        raise InputError("scheduler.num_train_timesteps must be >= 1")
    tr = cfg["training"]
    if int(tr.get("batch_size", 1)) < 1:
        raise InputError("training.batch_size must be >= 1")
    every = tr.get("lr_decay_every", 1)
    if every != "epoch" and (not isinstance(every, int) or every < 1):
        raise InputError(f"training.lr_decay_every must be a positive integer or 'epoch', got {every!r}")
    return cfg


def patch_zyx(cfg: dict) -> tuple[int, int, int]:
    """Patch size in array order (z, y, x) from ``data.patch_size_xyz``."""
    p = cfg["data"].get("patch_size_xyz")
    if not isinstance(p, (list, tuple)) or len(p) != 3:
        raise InputError(f"data.patch_size_xyz must be three integers (x, y, z), got {p!r}")
    return tuple(int(v) for v in p[::-1])  # type: ignore[return-value]


def in_channels(cfg: dict) -> int:
    return 1 + COND_CHANNELS[cfg.get("conditioning", "none")]


def network_kwargs(cfg: dict) -> dict:
    """Keyword arguments of ``monai.networks.nets.DiffusionModelUNet``."""
    net = copy.deepcopy(cfg["network"])
    kw = {
        "spatial_dims": 3,
        "in_channels": in_channels(cfg),
        "out_channels": 1,
        "channels": tuple(int(c) for c in net.pop("channels")),
        "attention_levels": tuple(bool(a) for a in net.pop("attention_levels")),
        "num_res_blocks": net.pop("num_res_blocks", 1),
        "num_head_channels": net.pop("num_head_channels", 8),
        "norm_num_groups": int(net.pop("norm_num_groups", 32)),
    }
    if isinstance(kw["num_head_channels"], list):
        kw["num_head_channels"] = tuple(int(v) for v in kw["num_head_channels"])
    if isinstance(kw["num_res_blocks"], list):
        kw["num_res_blocks"] = tuple(int(v) for v in kw["num_res_blocks"])
    kw.update(net)
    return kw


def scheduler_kwargs(cfg: dict) -> dict:
    s = dict(cfg["scheduler"])
    out = {"num_train_timesteps": int(s.pop("num_train_timesteps")), "schedule": s.pop("schedule", "linear_beta")}
    s.pop("clip_sample", None)
    out.update(s)
    return out


def make_ddpm_scheduler(cfg: dict):
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(**scheduler_kwargs(cfg), clip_sample=bool(cfg["scheduler"].get("clip_sample", True)))


def make_ddim_scheduler(cfg: dict, ddim_steps: int):
    """MONAI DDIM scheduler over the training schedule with ``ddim_steps`` inference steps."""
    from monai.networks.schedulers import DDIMScheduler

    sch = DDIMScheduler(**scheduler_kwargs(cfg), clip_sample=bool(cfg["scheduler"].get("clip_sample", True)))
    sch.set_timesteps(int(ddim_steps))
    return sch
