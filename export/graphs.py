"""The exported graphs: ``encoder``, ``tx`` and ``rx``, and ``transmitter`` (encoder and tx in one graph,
what a transmitter device runs: one session call per batch instead of two). No channel, no complex
dtype, no data-dependent shape inside: a fixed maximum length K and a mask."""

from __future__ import annotations

import torch
from torch import nn


class EncoderGraph(nn.Module):
    """``image: [B, C, H, W] float32`` (normalised) -> ``features: [B, D] float32``."""

    def __init__(self, system) -> None:
        super().__init__()
        self.encoder = system.encoder

    def forward(self, image):
        return self.encoder(image)


class TxGraph(nn.Module):
    """``features [B, D]``, ``snr_db [B] float32 dB``, ``k [B] int64``, ``channel [B] int64`` ->
    ``symbols [B, K, 2] float32`` (unit power over the active symbols), ``mask [B, K] float32``."""

    def __init__(self, system) -> None:
        super().__init__()
        self.codec = system.codec

    def forward(self, features, snr_db, k, channel):
        return self.codec.tx(features, snr_db, k, channel)


class TransmitterGraph(nn.Module):
    """``image [B, C, H, W]`` (normalised), ``snr_db [B]``, ``k [B] int64``, ``channel [B] int64`` ->
    ``symbols [B, K, 2]``, ``mask [B, K]``: the encoder and tx in one graph."""

    def __init__(self, system) -> None:
        super().__init__()
        self.encoder, self.codec = system.encoder, system.codec

    def forward(self, image, snr_db, k, channel):
        return self.codec.tx(self.encoder(image), snr_db, k, channel)


class RxGraph(nn.Module):
    """``symbols [B, K, 2]``, ``mask [B, K]``, ``snr_db [B]``, ``channel [B]`` (``csi [B, K, 2]``) ->
    ``logits [B, N] float32``."""

    def __init__(self, system) -> None:
        super().__init__()
        self.codec, self.classifier = system.codec, system.classifier

    def forward(self, symbols, mask, snr_db, channel, csi=None):
        return self.classifier(self.codec.rx(symbols, mask, snr_db, channel, csi))


def graph_io(system, input_shape, batch: int = 2) -> dict[str, dict]:
    """Example inputs and I/O names of each graph (``batch`` is dynamic in the exported model)."""
    k = system.codec.max_symbols
    d = system.encoder.feature_dim
    feats = torch.randn(batch, d)
    snr = torch.zeros(batch)
    kk = torch.full((batch,), k, dtype=torch.long)
    ch = torch.ones(batch, dtype=torch.long)
    rx_inputs = (torch.randn(batch, k, 2), torch.ones(batch, k), snr, ch)
    rx_names = ["symbols", "mask", "snr_db", "channel"]
    if system.codec.uses_csi:
        rx_inputs += (torch.randn(batch, k, 2),)
        rx_names.append("csi")
    image = torch.randn(batch, *input_shape)
    return {
        "encoder": {
            "module": EncoderGraph(system),
            "inputs": (image,),
            "input_names": ["image"],
            "output_names": ["features"],
        },
        "tx": {
            "module": TxGraph(system),
            "inputs": (feats, snr, kk, ch),
            "input_names": ["features", "snr_db", "k", "channel"],
            "output_names": ["symbols", "mask"],
        },
        "rx": {"module": RxGraph(system), "inputs": rx_inputs, "input_names": rx_names, "output_names": ["logits"]},
        "transmitter": {
            "module": TransmitterGraph(system),
            "inputs": (image, snr, kk, ch),
            "input_names": ["image", "snr_db", "k", "channel"],
            "output_names": ["symbols", "mask"],
        },
    }
