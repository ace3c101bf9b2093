"""Transformer pieces for the codecs. Attention runs within a sample, never across the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over ``x: [B, T, d]`` with a key mask ``[B, T]`` (1 = active).

    Masked keys get a large negative score (not -inf) so exported graphs never produce NaN.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over tokens.

        Args:
            x: ``[B, T, d]`` float32 tokens.
            key_mask: ``[B, T]`` float32, 1 where a token may be attended to (an active symbol), 0 where not.

        Returns:
            ``[B, T, d]`` float32.
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.matmul(q, k.transpose(-1, -2)) * (d // self.heads) ** -0.5
        if key_mask is not None:
            att = att + (1.0 - key_mask.to(att.dtype)).view(b, 1, 1, t) * -1e4
        out = torch.matmul(att.softmax(-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block; with ``cond_dim`` the norms are modulated by the condition (adaLN).

    Args:
        dim: Token width d.
        heads: Attention heads.
        cond_dim: Width of the conditioning vector (SNR and channel type); ``None`` for a plain block.
    """

    def __init__(self, dim: int, heads: int, cond_dim: int | None = None) -> None:
        super().__init__()
        affine = cond_dim is None
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.mod = nn.Linear(cond_dim, 4 * dim) if cond_dim else None
        if self.mod is not None:
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One block.

        Args:
            x: ``[B, T, d]`` float32 tokens.
            cond: ``[B, cond_dim]`` float32 conditioning (SNR and channel type), for a conditioned block.
            key_mask: ``[B, T]`` float32, 1 for tokens attention may read.

        Returns:
            ``[B, T, d]`` float32.
        """
        h1, h2 = self.norm1(x), None
        if self.mod is not None:
            s1, b1, s2, b2 = self.mod(cond).unsqueeze(1).chunk(4, dim=-1)
            h1 = h1 * (1 + s1) + b1
            x = x + self.attn(h1, key_mask)
            h2 = self.norm2(x) * (1 + s2) + b2
        else:
            x = x + self.attn(h1, key_mask)
            h2 = self.norm2(x)
        return x + self.mlp(h2)


class Conditioning(nn.Module):
    """SNR (dB) and channel type to a conditioning vector ``[B, dim]``."""

    def __init__(
        self,
        dim: int,
        n_types: int,
        capacity: int | None = None,
        max_symbols: int | None = None,
        measured: bool = False,
    ) -> None:
        """Args: n_types: channel types with ids today; capacity: rows embedded (>= n_types), so that types
        appended later need no new shapes. The rows beyond ``n_types`` start at zero and draw no random
        numbers: a codec's initialisation does not depend on the capacity. max_symbols: K; given, the
        length k is an input too (as k / K). measured: a measured power in dB is an input too (the
        receiver's estimate of its own SNR). The weights of both start at zero."""
        super().__init__()
        weight = nn.init.normal_(torch.empty(n_types, dim))
        rows = max(capacity or n_types, n_types)
        self.types = nn.Embedding(rows, dim, _weight=torch.cat([weight, weight.new_zeros(rows - n_types, dim)]))
        self.snr = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.max_symbols = max_symbols
        self.length = nn.Linear(1, dim) if max_symbols else None
        self.measured = nn.Linear(1, dim) if measured else None
        for layer in (self.length, self.measured):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self,
        snr_db: torch.Tensor,
        channel: torch.Tensor,
        k: torch.Tensor | None = None,
        measured_db: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args: snr_db: ``[B] float32, dB``. channel: ``[B] int64`` index into CHANNEL_TYPES. k: ``[B]`` symbols
        sent (used when built with ``max_symbols``). measured_db: ``[B] float32, dB`` (used when built with
        ``measured``)."""
        h = self.snr(snr_db.view(-1, 1) / 10.0) + self.types(channel)
        if self.length is not None:
            h = h + self.length(k.view(-1, 1).to(h.dtype) / self.max_symbols)
        if self.measured is not None:
            h = h + self.measured(measured_db.view(-1, 1).to(h.dtype) / 10.0)
        return F.silu(h)


def length_mask(k: torch.Tensor, max_symbols: int) -> torch.Tensor:
    """``k: [B] int64`` active lengths -> mask ``[B, K] float32`` (1 for the first k symbols)."""
    pos = torch.arange(max_symbols, device=k.device).view(1, -1)
    return (pos < k.view(-1, 1)).to(torch.float32)
