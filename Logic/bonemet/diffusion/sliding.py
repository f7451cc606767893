"""Overlapping sliding windows with smooth blending, and noise defined per global voxel position.

:func:`sliding_apply` evaluates a patch function on overlapping windows of a (C, Z, Y, X) array and blends the
outputs with a smooth weight (Gaussian or cosine) normalised by the summed weights: the blend is a partition
of unity, so a function that is consistent between windows comes back exactly, without seams. Window
positions depend only on the array shape, the patch size and the overlap.

:func:`global_noise` draws N(0, 1) noise in fixed 32³ chunks of the *global* voxel grid, each chunk from a
generator keyed by (seed, key, chunk index): the noise of a voxel never depends on the region, the patch order
or on which process refines the case.
"""

from __future__ import annotations

import numpy as np

from bonemet.seeding import rng

NOISE_CHUNK = 32
_CHUNK_OFFSET = 1 << 20  # chunk indices may be negative (padding before the volume): shift to keep keys >= 0


def window_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of size ``patch`` covering ``length`` (>= patch) with at least ``overlap``."""
    if length <= patch:
        return [0]
    stride = max(1, int(round(patch * (1.0 - float(overlap)))))
    n = int(np.ceil((length - patch) / stride)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - patch, n)})


def windows(shape, patch, overlap: float) -> list[tuple[slice, slice, slice]]:
    """All windows (slices, z-major order) of ``patch`` over ``shape`` (each dim >= patch)."""
    starts = [window_starts(int(s), int(p), overlap) for s, p in zip(shape, patch)]
    return [(slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
            for z in starts[0] for y in starts[1] for x in starts[2]]


def blend_weights(patch, mode: str = "gaussian", sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """(Z, Y, X) float32 weights, 1 at the centre, smoothly falling towards the borders (never below
    ``floor`` so every voxel is covered). ``mode``: ``gaussian`` (σ = sigma_scale x patch, as MONAI),
    ``cosine`` (sin² / Hann) or ``constant``."""
    axes = []
    for p in patch:
        i = np.arange(int(p), dtype=np.float64)
        if mode == "gaussian":
            c, s = (p - 1) / 2.0, max(sigma_scale * p, 1e-6)
            w = np.exp(-0.5 * ((i - c) / s) ** 2)
        elif mode == "cosine":
            w = np.sin(np.pi * (i + 0.5) / p) ** 2
        elif mode == "constant":
            w = np.ones(int(p))
        else:
            raise ValueError(f"unknown blend mode {mode!r} (gaussian, cosine, constant)")
        axes.append(w / w.max())
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w, floor).astype(np.float32)


def sliding_apply(fn, volume, patch, overlap: float = 0.5, mode: str = "gaussian", sw_batch_size: int = 1,
                  out_channels: int = 1):
    """Blend ``fn`` over windows of ``volume``.

    ``volume``: torch tensor (C, Z, Y, X), each spatial dim >= patch. ``fn``: (B, C, *patch) -> (B, out_channels,
    *patch), always called with B = ``sw_batch_size``. Returns (output (out_channels, Z, Y, X) tensor, number of windows evaluated)."""
    import torch

    wins = windows(tuple(volume.shape[1:]), patch, overlap)
    w = torch.from_numpy(blend_weights(patch, mode)).to(device=volume.device)
    out = torch.zeros((out_channels,) + tuple(volume.shape[1:]), dtype=torch.float32, device=volume.device)
    norm = torch.zeros(tuple(volume.shape[1:]), dtype=torch.float32, device=volume.device)
    bs = max(1, int(sw_batch_size))
    for i in range(0, len(wins), bs):
        chunk = wins[i:i + bs]
        # Always call fn with exactly ``bs`` windows (the last batch is padded by repeating its last window):
        # every window is then computed the same way whatever its position in the list, and PyTorch's CPU
        # convolution picks its fast (oneDNN) kernel for batches > 1.
        padded = chunk + [chunk[-1]] * (bs - len(chunk))
        batch = torch.stack([volume[(slice(None),) + sl] for sl in padded])
        pred = fn(batch).float()[:len(chunk)]
        for sl, p in zip(chunk, pred):
            out[(slice(None),) + sl] += p * w
            norm[sl] += w
    return out / norm, len(wins)


def global_noise(lo, hi, seed: int, key, chunk: int = NOISE_CHUNK) -> np.ndarray:
    """N(0, 1) float32 noise for global voxel indices [lo, hi) (z, y, x; may extend outside the volume)."""
    lo = [int(v) for v in lo]
    hi = [int(v) for v in hi]
    out = np.empty([b - a for a, b in zip(lo, hi)], dtype=np.float32)
    ranges = [range(a // chunk, (b - 1) // chunk + 1) for a, b in zip(lo, hi)]
    for cz in ranges[0]:
        for cy in ranges[1]:
            for cx in ranges[2]:
                block = rng(seed, "refine-noise", str(key), cz + _CHUNK_OFFSET, cy + _CHUNK_OFFSET,
                            cx + _CHUNK_OFFSET).standard_normal((chunk, chunk, chunk), dtype=np.float32)
                c0 = (cz * chunk, cy * chunk, cx * chunk)
                src, dst = [], []
                for ax in range(3):
                    a = max(lo[ax], c0[ax])
                    b = min(hi[ax], c0[ax] + chunk)
                    src.append(slice(a - c0[ax], b - c0[ax]))
                    dst.append(slice(a - lo[ax], b - lo[ax]))
                out[tuple(dst)] = block[tuple(src)]
    return out
