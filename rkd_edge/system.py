"""The semantic communication system: encoder -> codec tx -> channel -> codec rx -> classifier."""

from __future__ import annotations

import functools

import torch
from torch import nn

from rkd_edge.channel.base import ChannelOutput
from rkd_edge.channel_ids import channel_id
from rkd_edge.config import MODULE_GROUPS
from rkd_edge.errors import UserError


class SemanticSystem(nn.Module):
    """Holds the trainable module groups a stage can name: ``encoder``, ``classifier``, ``projector``,
    ``codec`` (or ``codec.tx`` / ``codec.rx``, by parameter-name prefix).

    Args:
        encoder: ``x [B, C, H, W] -> f [B, D]``.
        num_classes: N.
        teacher_dim: E, width of the teacher embedding (the projector maps D -> E for distillation only).
        codec: Optional channel codec.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, teacher_dim: int, codec: nn.Module | None = None) -> None:
        super().__init__()
        d = encoder.feature_dim
        self.encoder = encoder
        self.classifier = nn.Linear(d, num_classes)
        self.projector = nn.Linear(d, teacher_dim)
        self.codec = codec

    def group_parameters(self, group: str) -> list[tuple[str, nn.Parameter]]:
        """Named parameters of a group; ``codec.tx`` / ``codec.rx`` select the codec's halves."""
        if group in ("codec.tx", "codec.rx"):
            if self.codec is None:
                return []
            half = group.split(".")[1]
            return [
                (f"codec.{n}", p)
                for n, p in self.codec.named_parameters()
                if n.startswith(half + "_") or (half == "tx" and n.startswith("power"))
            ]
        if group not in MODULE_GROUPS:
            raise UserError(f"unknown module group {group!r}; use {', '.join(MODULE_GROUPS)}")
        module = getattr(self, group)
        return [] if module is None else [(f"{group}.{n}", p) for n, p in module.named_parameters()]

    def set_trainable(self, groups: list[str]) -> None:
        """Train exactly ``groups``; freeze the rest (frozen modules also stay in eval mode)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self._trainable = set()
        for g in groups:
            for n, p in self.group_parameters(g):
                p.requires_grad_(True)
                self._trainable.add(n.split(".")[0])

    def train(self, mode: bool = True):
        super().train(mode)
        trainable = getattr(self, "_trainable", None)
        if mode and trainable is not None:
            for name in ("encoder", "classifier", "projector", "codec"):
                m = getattr(self, name)
                if m is not None and name not in trainable:
                    m.eval()  # frozen: BatchNorm statistics must not move either
        return self

    def forward(
        self,
        x: torch.Tensor,
        channel=None,
        snr_db: torch.Tensor | None = None,
        k: torch.Tensor | None = None,
        channel_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        copies: int = 1,
    ) -> dict[str, torch.Tensor]:
        """Clean path without ``channel``; otherwise through codec and channel(s).

        Args:
            x: ``[B, C, H, W] float32`` normalised images.
            channel: A channel, or a list of channels indexed by ``channel_idx`` (mixed batches).
            snr_db: ``[B] float32, dB``.
            k: ``[B] int64`` symbols per sample.
            channel_idx: ``[B] int64`` which channel of the list each sample goes through.
            generator: Noise generator.
            copies: Each image's features go through the codec this many times (the encoder runs once);
                ``snr_db``, ``k`` and ``channel_idx`` are then ``[copies * B]``, copy-major.

        Returns:
            ``f`` features, ``f_hat`` restored features (``f`` without a channel), ``logits``, ``projected``
            (``f_hat`` mapped to the teacher embedding, for distillation); with a channel also ``symbols``
            and ``mask``. Everything is computed inside ``forward`` so that DDP sees every parameter used.
        """
        f = self.encoder(x)
        if channel is None:
            return {"f": f, "f_hat": f, "logits": self.classifier(f), "projected": self.projector(f)}
        if copies > 1:
            f = f.repeat(copies, 1)
        channels = channel if isinstance(channel, list | tuple) else [channel]
        if channel_idx is None:
            channel_idx = torch.zeros(len(f), dtype=torch.long, device=x.device)
        ctype = channel_type_ids(tuple(c.name for c in channels), x.device)[channel_idx]
        symbols, mask = self.codec.tx(f, snr_db, k, ctype)
        out = apply_channels(channels, channel_idx, symbols, snr_db, mask, generator)
        f_hat = self.codec.rx(out.y, mask, snr_db, ctype, out.csi)
        return {
            "f": f,
            "f_hat": f_hat,
            "logits": self.classifier(f_hat),
            "projected": self.projector(f_hat),
            "symbols": symbols,
            "mask": mask,
        }


@functools.lru_cache(maxsize=64)
def channel_type_ids(names: tuple[str, ...], device: torch.device) -> torch.Tensor:
    """``int64 [len(names)]`` type ids of the channels named, made once per device (a tensor built from a
    list on a GPU is a blocking copy: once per step it would stall the host)."""
    return torch.tensor([channel_id(n) for n in names], device=device)


def apply_channels(
    channels: list, idx: torch.Tensor, x: torch.Tensor, snr_db: torch.Tensor, mask: torch.Tensor, generator
) -> ChannelOutput:
    """Send each sample through its own channel type (``idx [B]``): :func:`gathered` on the CPU,
    :func:`selected` on a GPU."""
    if len(channels) == 1:
        return channels[0](x, snr_db, mask, generator)
    send = gathered if x.device.type == "cpu" else selected
    return send(channels, idx, x, snr_db, mask, generator)


def gathered(channels, idx, x, snr_db, mask, generator) -> ChannelOutput:
    """Each type's samples gathered and sent, one call per type present (no work wasted)."""
    y, csi = torch.zeros_like(x), torch.zeros_like(x)
    for i, ch in enumerate(channels):
        sel = (idx == i).nonzero().flatten()
        if len(sel):
            o = ch(x[sel], snr_db[sel], mask[sel], generator)
            y = y.index_copy(0, sel, o.y)
            csi = csi.index_copy(0, sel, o.csi)
    return ChannelOutput(y, csi)


def selected(channels, idx, x, snr_db, mask, generator) -> ChannelOutput:
    """Every type sends the whole batch and each sample keeps its own type's output. On a GPU gathering
    reads each type's sample count back to the host, a synchronisation per step; this draws more noise
    and never waits (the CPU and CUDA noise streams differ anyway)."""
    y, csi = torch.zeros_like(x), torch.zeros_like(x)
    for i, ch in enumerate(channels):
        o = ch(x, snr_db, mask, generator)
        keep = (idx == i).view(-1, *([1] * (x.dim() - 1)))
        y, csi = torch.where(keep, o.y, y), torch.where(keep, o.csi, csi)
    return ChannelOutput(y, csi)
