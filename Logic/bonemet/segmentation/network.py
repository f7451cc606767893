"""The lesion-segmentation network: a MONAI 3D UNet built from a config's ``architecture``."""

from __future__ import annotations

from bonemet.segmentation.config import in_channels, out_channels


def build_network(cfg: dict):
    """MONAI ``UNet`` (3D) for ``cfg``: inputs (B, C_in, z, y, x) → logits (B, C_out, z, y, x)."""
    from monai.networks.nets import UNet

    arch = cfg["architecture"]
    return UNet(
        spatial_dims=3,
        in_channels=in_channels(cfg),
        out_channels=out_channels(cfg),
        channels=tuple(int(c) for c in arch["channels"]),
        strides=tuple(int(s) for s in arch["strides"]),
        num_res_units=int(arch.get("num_res_units", 2)),
        norm=arch.get("norm", "instance"),
        dropout=float(arch.get("dropout", 0.0)),
    )
