"""Batch transforms: resize, channel conversion, normalisation and optional augmentation."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageTransform:
    """Deterministic preprocessing from ``uint8 [B, H, W, C]`` to normalised ``float32 [B, C', S, S]``.

    Attributes:
        size: Output side length S in pixels.
        channels: Output channel count C' (1 grey or 3 RGB; grey is replicated to RGB, RGB averaged).
        mean: Per-output-channel mean of the training split after scaling to [0, 1].
        std: Per-output-channel standard deviation, same convention.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Args: images: ``uint8 [B, H, W, C]`` (numpy, or a tensor on any device). Returns: ``float32
        [B, C', S, S]``, normalised, on the device of ``images``."""
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        x = convert_channels(x, self.channels)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > self.size
            )
        return (x - per_channel(self.mean, x.device)) / per_channel(self.std, x.device)


@functools.lru_cache(maxsize=64)
def per_channel(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``[1, C, 1, 1] float32`` of ``values`` on ``device``, made once: a tensor built from a list on a GPU
    is a blocking host-to-device copy, which in the step loop would stall the host on every batch."""
    return torch.tensor(values, device=device).view(1, -1, 1, 1)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x: [B, C, H, W]`` -> ``[B, channels, H, W]`` (grey replicated, or colour averaged)."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    return x.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1).contiguous()


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random shift by up to 1/8 of the side (reflect pad + crop) and, if ``flip``, horizontal flips.

    Args:
        x: ``float32 [B, C, H, W]`` images, on the device of ``generator``.
        generator: Draws the shifts and flips (on ``x``'s device: no host round trip per batch).
        flip: Whether horizontal flips preserve the label.

    Every crop is one gather and every flip a select, so a batch costs a few kernels on any device and no
    host synchronisation (the values equal a per-sample slice loop's).
    """
    b, c, h, w = x.shape
    pad = max(1, h // 8)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dev = generator.device
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # [B, 1, 1, W]
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    out = xp[bi, ci, rows, cols]
    if flip:
        mask = torch.rand(b, generator=generator, device=dev) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out


def channel_stats(images: np.ndarray, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of ``uint8 [N, H, W, C]`` images in [0, 1], after channel conversion."""
    x = images.astype(np.float64) / 255.0
    if x.shape[-1] != channels:
        x = x.mean(axis=-1, keepdims=True) if x.shape[-1] != 1 else x
        x = np.repeat(x, channels, axis=-1) if channels != 1 else x
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2)) + 1e-8
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)
