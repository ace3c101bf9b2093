"""Per-sample power normalisation over the active (unmasked) symbols."""

from __future__ import annotations

import torch
from torch import nn


def active_power(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean symbol energy per sample over active symbols.

    Args:
        x: ``[B, K, 2] float32`` I/Q symbols.
        mask: ``[B, K]`` 1 for active symbols, 0 for inactive; ``None`` means all active.

    Returns:
        ``[B] float32`` mean of ``|x|^2`` over the active symbols.
    """
    energy = x.pow(2).sum(-1)
    if mask is None:
        return energy.mean(-1)
    m = mask.to(x.dtype)
    return (energy * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class PowerNormalize(nn.Module):
    """Scale each sample so that ``mean |x|^2 = 1`` over its active symbols; inactive symbols become 0.

    Exportable (no data-dependent shapes): the mask is multiplied in, never used to index.
    """

    def __init__(self, eps: float = 1e-9) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x: ``[B, K, 2]`` I/Q. mask: ``[B, K]`` or None. Returns: ``[B, K, 2]`` unit power."""
        p = active_power(x, mask)
        y = x * torch.rsqrt(p + self.eps).view(-1, 1, 1)
        if mask is not None:
            y = y * mask.to(x.dtype).unsqueeze(-1)
        return y
