"""Flat-fading channels: Rayleigh and Rician, block or fast, with explicit CSI handling."""

from __future__ import annotations

import math

import torch

from rkd_edge.channel.base import Channel, ChannelOutput, complex_normal, noise_variance, per_sample
from rkd_edge.channel.simple import _apply_mask
from rkd_edge.channel_ids import check_fading


def cmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex product of ``[..., 2]`` I/Q tensors."""
    return torch.stack(
        [a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1], a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]], dim=-1
    )


def conj(a: torch.Tensor) -> torch.Tensor:
    """Complex conjugate of ``a: [..., 2]`` float32 I/Q."""
    return torch.stack([a[..., 0], -a[..., 1]], dim=-1)


class RicianChannel(Channel):
    """``y = h x + n`` with ``h = sqrt(K/(K+1)) + sqrt(1/(K+1)) CN(0, 1)``, so ``E|h|^2 = 1``.

    Args:
        k_factor: Rician K (linear ratio of line-of-sight to scattered power); 0 gives Rayleigh.
        mode: ``block`` (one h per sample per transmission) or ``fast`` (one h per symbol).
        csi: ``zf`` or ``mmse`` equalise at the receiver with perfect CSI; ``decoder`` passes y
            unequalised and h to the decoder.
    """

    name = "rician"

    def __init__(self, k_factor: float = 3.0, mode: str = "block", csi: str = "zf") -> None:
        super().__init__()
        check_fading(mode, csi, k_factor)
        self.k_factor, self.mode, self.csi = float(k_factor), mode, csi

    def describe(self) -> dict:
        d = {"channel": self.name, "mode": self.mode, "csi": self.csi}
        if self.name == "rician":
            d["k_factor"] = self.k_factor
        return d

    def draw_h(self, batch: int, k: int, generator, device) -> torch.Tensor:
        """Fading coefficients ``[B, K, 2]`` I/Q, block or fast."""
        n_sym = 1 if self.mode == "block" else k
        scatter = complex_normal((batch, n_sym), torch.ones((), device=device), generator, device)
        los = math.sqrt(self.k_factor / (self.k_factor + 1.0))
        h = scatter * math.sqrt(1.0 / (self.k_factor + 1.0))
        h[..., 0] += los
        return h.expand(batch, k, 2).contiguous()

    def forward(self, x, snr_db, mask=None, generator=None) -> ChannelOutput:
        x = x.float()  # noise and equalisation in float32, also under bf16 autocast
        b, k, _ = x.shape
        s2 = noise_variance(per_sample(snr_db, b, x.device)).view(-1, 1, 1)
        h = self.draw_h(b, k, generator, x.device)
        y = cmul(h, x) + complex_normal((b, k), s2, generator, x.device)
        if self.csi != "decoder":
            denom = h.pow(2).sum(-1, keepdim=True)
            if self.csi == "mmse":
                denom = denom + s2
            y = cmul(conj(h), y) / denom.clamp_min(1e-12)
        return ChannelOutput(_apply_mask(y, mask), h)


class RayleighChannel(RicianChannel):
    """Rayleigh fading, ``h ~ CN(0, 1)``: a Rician channel with K = 0."""

    name = "rayleigh"

    def __init__(self, mode: str = "block", csi: str = "zf") -> None:
        super().__init__(k_factor=0.0, mode=mode, csi=csi)
