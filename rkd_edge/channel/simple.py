"""The identity (noiseless upper bound) and AWGN channels."""

from __future__ import annotations

import torch

from rkd_edge.channel.base import Channel, ChannelOutput, complex_normal, noise_variance, per_sample


def _apply_mask(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return y if mask is None else y * mask.to(y.dtype).unsqueeze(-1)


def unit_csi(x: torch.Tensor) -> torch.Tensor:
    """CSI of a channel without fading: ``h = 1 + 0j`` for every symbol, ``[B, K, 2]``."""
    csi = torch.zeros_like(x)
    csi[..., 0] = 1.0
    return csi


class IdentityChannel(Channel):
    """``y = x``: no noise, no fading. The upper bound for any SNR."""

    name = "identity"

    def forward(self, x, snr_db=None, mask=None, generator=None) -> ChannelOutput:
        return ChannelOutput(_apply_mask(x, mask), unit_csi(x))


class AWGNChannel(Channel):
    """``y = x + n``, ``n ~ CN(0, 10^(-snr_db/10))`` per complex symbol."""

    name = "awgn"

    def forward(self, x, snr_db, mask=None, generator=None) -> ChannelOutput:
        x = x.float()  # noise in float32, also under bf16 autocast
        s2 = noise_variance(per_sample(snr_db, x.shape[0], x.device)).view(-1, 1, 1)
        y = x + complex_normal(tuple(x.shape[:-1]), s2, generator, x.device)
        return ChannelOutput(_apply_mask(y, mask), unit_csi(x))
