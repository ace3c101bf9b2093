"""The channel interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ChannelOutput:
    """What the receiver gets.

    Attributes:
        y: ``[B, K, 2] float32`` received I/Q symbols (equalised if the channel equalises; 0 where masked).
        csi: ``[B, K, 2] float32`` channel coefficient h per symbol (ones for AWGN and identity).
    """

    y: torch.Tensor
    csi: torch.Tensor


def noise_variance(snr_db: torch.Tensor | float) -> torch.Tensor:
    """Complex noise variance ``s2 = 10^(-snr_db/10)`` for unit-power symbols (Es/N0 in dB)."""
    return torch.pow(10.0, -torch.as_tensor(snr_db, dtype=torch.float32) / 10.0)


def per_sample(snr_db: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Broadcast an SNR in dB (scalar or ``[B]``) to ``[B] float32``."""
    s = torch.as_tensor(snr_db, dtype=torch.float32, device=device)
    return s.expand(batch).contiguous() if s.dim() == 0 else s.reshape(batch)


def complex_normal(
    shape: tuple[int, ...], variance: torch.Tensor, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Samples of ``CN(0, variance)`` as ``[..., 2]`` reals: each of I and Q has ``variance / 2``.

    ``generator`` must live on ``device`` (a CUDA generator for CUDA tensors): noise is drawn where it is
    used, never on the host and copied.
    """
    z = torch.randn(*shape, 2, generator=generator, device=device)
    return z * torch.sqrt(variance / 2.0)


class Channel(nn.Module):
    """A stateless channel. Subclasses implement :meth:`forward`.

    ``forward(x, snr_db, mask=None, generator=None) -> ChannelOutput`` with
    ``x: [B, K, 2] float32`` unit-power I/Q symbols, ``snr_db: [B] or scalar float32, dB (Es/N0)``,
    ``mask: [B, K]`` active symbols. The same generator state gives the same noise.
    """

    name = "channel"

    def describe(self) -> dict:
        """Parameters to record next to every result (name, mode, CSI handling)."""
        return {"channel": self.name}
