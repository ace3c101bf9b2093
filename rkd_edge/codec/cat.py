"""The channel-aware transformer (CAT) codec: SNR- and channel-conditioned, variable length."""

from __future__ import annotations

import torch
from torch import nn

from rkd_edge.channel.fading import cmul, conj
from rkd_edge.channel.power import PowerNormalize
from rkd_edge.channel_ids import CHANNEL_CAPACITY, CHANNEL_TYPES
from rkd_edge.codec.blocks import Block, Conditioning, length_mask


class CATCodec(nn.Module):
    """Transmitter and receiver halves of the CAT codec.

    The transmitter turns features into at most K complex symbols. Its K query tokens attend to
    ``source_tokens`` tokens made from the features, and keys beyond the requested length k are masked,
    so that with training over random k every prefix carries the message. Every block is modulated by
    the SNR and channel type (adaLN). The receiver mirrors it: symbol tokens (plus CSI if configured)
    and a read-out token, the same conditioning, and a linear map back to the feature space.

    Each half also has a linear path (``tx_lin``: D -> 2K reals, ``rx_lin``: the k active symbols -> D)
    that the transformer output is added to. A learned linear analog map is already a strong joint
    source-channel code for low-dimensional features; with the path the transformer (whose output heads
    start at zero) only has to learn the SNR- and channel-dependent corrections. Without it the codec
    lost to uncoded transmission at low SNR on fashion-mnist (AWGN -10 dB: 0.53 at k = 32 and 0.66 at
    k = 64 against 0.68 uncoded at k = 32; with it 0.69 and 0.84; benchmarks/results/fashion_mnist_*).

    Args:
        feature_dim: D, width of the student features.
        max_symbols: K, the fixed maximum number of complex symbols.
        symbols: The set of lengths k trained and supported.
        dim: Token width.
        depth: Blocks per half.
        heads: Attention heads.
        csi: Whether the receiver takes the channel coefficients as an input.
        gains: Condition both halves on k too, and scale the linear paths by gains computed from the
            condition: per feature dimension before ``tx_lin`` (a power allocation across the features that
            moves with the SNR and the rate) and after ``rx_lin``. The receiver's condition also takes the
            power it measures on the active (equalised) symbols, ``1 + 1/SNR_eff`` in expectation: on a
            fading block the SNR it was told is not the one it got, and after ZF nothing else says how
            deep the fade was. The gains start at 1, so training starts from the plain linear code.
        source_tokens: Tokens the features are split into at the transmitter.
        posterior_classes: N > 0 gives the transmitter a copy of the task head (``tx_head``: D -> N, started
            from the stage-1 classifier by :meth:`start_task_head`) and feeds its class posterior, the
            softmax, to the linear path beside the features. The posterior is a non-linear, near-digital
            summary of the message: at low SNR the gains can move the power onto it, where an analog code
            of the features spends most of it on spread within a class that the task does not need. On
            fashion-mnist the gains put 4x on it at -10 dB, +1.2 points at k = 32 over the same codec
            without it (benchmarks/results/codec_ablation_fashion-mnist-earlier-student.md).
        rx_per_length: Give the receiver's linear path one map per trained length (``rx_lin_w: [S, D, 2K]``,
            S = len(symbols)) instead of one map restricted to the active symbols. The best linear read-out of
            a prefix is not the prefix of the best read-out of all K symbols (the symbols are correlated),
            and a rate-adaptive codec shares everything else; the receiver runs off the device, so the
            transmitter is unchanged. A length between two trained ones uses the next longer one's map.
    """

    name = "cat"

    def __init__(
        self,
        feature_dim: int,
        max_symbols: int = 16,
        symbols: list[int] | None = None,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        csi: bool = False,
        gains: bool = False,
        source_tokens: int = 4,
        posterior_classes: int = 0,
        rx_per_length: bool = False,
    ) -> None:
        super().__init__()
        self.feature_dim, self.max_symbols = feature_dim, max_symbols
        self.symbol_set = sorted(symbols or [max_symbols])
        self.uses_csi, self.source_tokens = csi, source_tokens
        n_types = len(CHANNEL_TYPES)
        lengths = max_symbols if gains else None
        self.tx_cond = Conditioning(dim, n_types, CHANNEL_CAPACITY, lengths)
        self.tx_in = nn.Linear(feature_dim, source_tokens * dim)
        self.tx_queries = nn.Parameter(torch.randn(1, max_symbols, dim) * 0.02)
        self.tx_blocks = nn.ModuleList(Block(dim, heads, dim) for _ in range(depth))
        self.tx_out = nn.Linear(dim, 2)
        self.tx_head = nn.Linear(feature_dim, posterior_classes) if posterior_classes else None
        lin_in = feature_dim + posterior_classes
        self.tx_lin = nn.Linear(lin_in, 2 * max_symbols)
        self.power = PowerNormalize()
        self.rx_cond = Conditioning(dim, n_types, CHANNEL_CAPACITY, lengths, measured=gains)
        self.rx_in = nn.Linear(4 if csi else 2, dim)
        self.rx_pos = nn.Parameter(torch.randn(1, max_symbols, dim) * 0.02)
        self.rx_readout = nn.Parameter(torch.zeros(1, 1, dim))
        self.rx_blocks = nn.ModuleList(Block(dim, heads, dim) for _ in range(depth))
        self.rx_norm = nn.LayerNorm(dim)
        self.rx_out = nn.Linear(dim, feature_dim)
        self.rx_lin = None if rx_per_length else nn.Linear(2 * max_symbols, feature_dim)
        if rx_per_length:  # every length's map starts as the same default linear map
            start = nn.Linear(2 * max_symbols, feature_dim)
            self.rx_lin_w = nn.Parameter(start.weight.detach().repeat(len(self.symbol_set), 1, 1))
            self.rx_lin_b = nn.Parameter(start.bias.detach().repeat(len(self.symbol_set), 1))
            self.register_buffer("rx_lengths", torch.tensor(self.symbol_set, dtype=torch.float32), persistent=False)
        self.tx_gain = nn.Linear(dim, lin_in) if gains else None
        self.rx_gain = nn.Linear(dim, feature_dim) if gains else None
        # The transformer outputs and the gains' offsets start at zero: training starts from the linear code.
        for head in (self.tx_out, self.rx_out, self.tx_gain, self.rx_gain):
            if head is None:
                continue
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def tx(
        self, f: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor, channel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode features to unit-power symbols.

        Args:
            f: ``[B, D] float32`` student features.
            snr_db: ``[B] float32, dB`` the SNR the transmitter expects.
            k: ``[B] int64`` number of complex symbols to send (1..K).
            channel: ``[B] int64`` channel type index (``CHANNEL_TYPES``).

        Returns:
            ``x: [B, K, 2] float32`` I/Q symbols, mean power 1 over the active ones, 0 elsewhere;
            ``mask: [B, K] float32``.
        """
        b = f.shape[0]
        mask = length_mask(k, self.max_symbols)
        cond = self.tx_cond(snr_db, channel, k)
        src = self.tx_in(f).view(b, self.source_tokens, -1)
        tokens = torch.cat([src, self.tx_queries.expand(b, -1, -1)], dim=1)
        key_mask = torch.cat([torch.ones(b, self.source_tokens, device=f.device), mask], dim=1)
        for blk in self.tx_blocks:
            tokens = blk(tokens, cond, key_mask)
        if self.tx_head is not None:
            # At sqrt(D) a sure posterior has the norm of the features (about 1 per dimension): the two
            # start with comparable power, and the gains move it to the posterior at low SNR.
            f = torch.cat([f, self.tx_head(f).softmax(-1) * self.feature_dim**0.5], dim=-1)
        if self.tx_gain is not None:
            f = f * (1.0 + self.tx_gain(cond))
        x = self.tx_out(tokens[:, self.source_tokens :]) + self.tx_lin(f).view(b, self.max_symbols, 2)
        return self.power(x, mask), mask

    @torch.no_grad()
    def start_task_head(self, classifier: nn.Linear) -> None:
        """Start the transmitter's task head from the receiver's classifier (the stage-1 one: before stage
        2 the student's decision is the best posterior there is). A codec without a head is left as it is."""
        if self.tx_head is not None:  # built with the classifier's shape (posterior_classes = its classes)
            self.tx_head.weight.copy_(classifier.weight)
            self.tx_head.bias.copy_(classifier.bias)

    def rx(
        self,
        y: torch.Tensor,
        mask: torch.Tensor,
        snr_db: torch.Tensor,
        channel: torch.Tensor,
        csi: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode received symbols to features.

        Args:
            y: ``[B, K, 2] float32`` received I/Q symbols.
            mask: ``[B, K] float32`` active symbols.
            snr_db: ``[B] float32, dB``.
            channel: ``[B] int64`` channel type index.
            csi: ``[B, K, 2] float32`` channel coefficients h (I/Q), used when the codec takes CSI: ``y`` is
                then unequalised, ``h x + n``.

        Returns:
            ``f_hat: [B, D] float32``.
        """
        b = y.shape[0]
        if self.uses_csi:
            # Equalise as ZF does, y / h, and keep |h|^2, each symbol's reliability, as side information:
            # the decoder sees all ZF sees and more. A linear map of the raw (y, h) cannot undo a random
            # phase (training from them stayed at chance, 10 % on fashion-mnist), and the matched filter
            # conj(h) y alone lost 1-8 points to ZF (its linear path cannot divide by a deep fade).
            gain = csi.pow(2).sum(-1, keepdim=True)
            y = cmul(conj(csi), y) / gain.clamp_min(1e-12)
            inp = torch.cat([y, gain, gain.sqrt()], dim=-1)
        else:
            inp = y
        k = mask.sum(-1)
        linear = self._rx_linear((y * mask.unsqueeze(-1)).reshape(b, -1), k)
        tokens = (self.rx_in(inp) + self.rx_pos) * mask.unsqueeze(-1)
        tokens = torch.cat([self.rx_readout.expand(b, -1, -1), tokens], dim=1)
        key_mask = torch.cat([torch.ones(b, 1, device=y.device), mask], dim=1)
        measured = None
        if self.rx_gain is not None:  # received power per active symbol, dB
            power = (y.pow(2).sum(-1) * mask).sum(-1) / k.clamp_min(1.0)
            measured = 10.0 * torch.log10(power + 1e-6)
        cond = self.rx_cond(snr_db, channel, k, measured)
        if self.rx_gain is not None:
            linear = linear * (1.0 + self.rx_gain(cond))
        for blk in self.rx_blocks:
            tokens = blk(tokens, cond, key_mask)
        return linear + self.rx_out(self.rx_norm(tokens[:, 0]))

    def _rx_linear(self, flat: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The receiver's linear path.

        Args:
            flat: ``[B, 2K] float32`` received I/Q, zero beyond each sample's length.
            k: ``[B] float32`` active symbols per sample.

        Returns:
            ``[B, D] float32``.
        """
        if self.rx_lin is not None:
            return self.rx_lin(flat)
        # Every length's map, then each sample's: the smallest trained length >= k (the longest beyond it).
        every = torch.einsum("bi,sdi->bsd", flat, self.rx_lin_w) + self.rx_lin_b
        idx = (k.unsqueeze(-1) > self.rx_lengths).sum(-1).clamp_max(len(self.symbol_set) - 1)
        return every.gather(1, idx.view(-1, 1, 1).expand(-1, 1, every.shape[-1])).squeeze(1)
