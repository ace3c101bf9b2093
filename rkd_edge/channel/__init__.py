"""Channels and power normalisation, one convention everywhere (DESIGN.md section 2).

Symbols are complex numbers carried as real tensors with a trailing I/Q axis: ``x: [B, k, 2] float32``.
SNR is Es/N0 in dB per complex symbol; noise is ``CN(0, 10^(-snr_db/10))``.
"""

from rkd_edge.channel.base import Channel, ChannelOutput, noise_variance
from rkd_edge.channel.fading import RayleighChannel, RicianChannel
from rkd_edge.channel.power import PowerNormalize, active_power
from rkd_edge.channel.registry import CHANNEL_TYPES, CHANNELS, create_channel
from rkd_edge.channel.simple import AWGNChannel, IdentityChannel

__all__ = [
    "CHANNELS",
    "CHANNEL_TYPES",
    "AWGNChannel",
    "Channel",
    "ChannelOutput",
    "IdentityChannel",
    "PowerNormalize",
    "RayleighChannel",
    "RicianChannel",
    "active_power",
    "create_channel",
    "noise_variance",
]
