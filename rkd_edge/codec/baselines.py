"""Baseline codecs: the authors' plain transformer autoencoder, and direct (uncoded) transmission."""

from __future__ import annotations

import math

import torch
from torch import nn

from rkd_edge.channel.power import PowerNormalize
from rkd_edge.codec.blocks import Block, length_mask


class PlainTransformerCodec(nn.Module):
    """The authors' earlier codec: 2+2 plain transformer layers, D reals in and out as D/2 complex
    symbols (no compression), no SNR or channel input. Tokens are the feature's I/Q pairs."""

    name = "plain"
    uses_csi = False

    def __init__(self, feature_dim: int, dim: int = 64, depth: int = 2, heads: int = 4, **_) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.max_symbols = math.ceil(feature_dim / 2)
        self.symbol_set = [self.max_symbols]
        self.tx_in, self.rx_in = nn.Linear(2, dim), nn.Linear(2, dim)
        self.tx_pos = nn.Parameter(torch.randn(1, self.max_symbols, dim) * 0.02)
        self.rx_pos = nn.Parameter(torch.randn(1, self.max_symbols, dim) * 0.02)
        self.tx_blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.rx_blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.tx_out, self.rx_out = nn.Linear(dim, 2), nn.Linear(dim, 2)
        self.power = PowerNormalize()

    def _pairs(self, f: torch.Tensor) -> torch.Tensor:
        pad = 2 * self.max_symbols - f.shape[-1]
        return nn.functional.pad(f, (0, pad)).view(f.shape[0], self.max_symbols, 2)

    def tx(self, f, snr_db, k, channel):
        """``f: [B, D] float32`` features -> ``(x: [B, K, 2] float32 I/Q, unit power over the active symbols;
        mask: [B, K] float32)``; ``snr_db: [B] dB``, ``k: [B] int64``, ``channel: [B] int64`` as
        :meth:`~rkd_edge.codec.cat.CATCodec.tx` (unused here)."""
        mask = length_mask(k, self.max_symbols)
        t = self.tx_in(self._pairs(f)) + self.tx_pos
        for blk in self.tx_blocks:
            t = blk(t, None, mask)
        return self.power(self.tx_out(t), mask), mask

    def rx(self, y, mask, snr_db, channel, csi=None):
        """``y: [B, K, 2] float32`` received I/Q, ``mask: [B, K]`` -> ``f_hat: [B, D] float32``; the
        conditioning inputs as :meth:`~rkd_edge.codec.cat.CATCodec.rx` (unused here)."""
        t = self.rx_in(y) + self.rx_pos
        for blk in self.rx_blocks:
            t = blk(t, None, mask)
        return self.rx_out(t).reshape(y.shape[0], -1)[:, : self.feature_dim]


class DirectCodec(nn.Module):
    """Uncoded analog transmission of the features (no learned codec): D reals as D/2 symbols."""

    name = "direct"
    uses_csi = False

    def __init__(self, feature_dim: int, **_) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.max_symbols = math.ceil(feature_dim / 2)
        self.symbol_set = [self.max_symbols]
        self.power = PowerNormalize()
        # Receiver rescale: LayerNorm'd features have about unit energy per real, 2 per symbol.
        self.register_buffer("scale", torch.tensor(math.sqrt(2.0)))

    def tx(self, f, snr_db, k, channel):
        """``f: [B, D] float32`` features -> ``(x: [B, K, 2] float32 I/Q, unit power over the active symbols;
        mask: [B, K] float32)``; ``snr_db: [B] dB``, ``k: [B] int64``, ``channel: [B] int64`` as
        :meth:`~rkd_edge.codec.cat.CATCodec.tx` (unused here)."""
        mask = length_mask(k, self.max_symbols)
        pad = 2 * self.max_symbols - f.shape[-1]
        x = nn.functional.pad(f, (0, pad)).view(f.shape[0], self.max_symbols, 2)
        return self.power(x, mask), mask

    def rx(self, y, mask, snr_db, channel, csi=None):
        """``y: [B, K, 2] float32`` received I/Q, ``mask: [B, K]`` -> ``f_hat: [B, D] float32``; the
        conditioning inputs as :meth:`~rkd_edge.codec.cat.CATCodec.rx` (unused here)."""
        return (y * self.scale).reshape(y.shape[0], -1)[:, : self.feature_dim]
