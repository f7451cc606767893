"""The denoiser: MONAI's generative ``DiffusionModelUNet`` (3D, predicts the noise ε)."""

from __future__ import annotations

from bonemet.diffusion.config import network_kwargs


def build_network(cfg: dict):
    """``DiffusionModelUNet`` described by ``cfg`` (see :func:`bonemet.diffusion.config.network_kwargs`).

    Input (B, C, Z, Y, X) with C = 1 (noisy standardised CT) or 5 with mask conditioning (+ lesion mask and
    z/y/x coordinates), timesteps (B,) long; output (B, 1, Z, Y, X) the predicted noise.
    """
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(**network_kwargs(cfg))


def count_parameters(network) -> int:
    return int(sum(p.numel() for p in network.parameters()))
