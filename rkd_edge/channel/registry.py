"""The channel registry and :func:`create_channel`."""

from __future__ import annotations

from rkd_edge.channel.base import Channel
from rkd_edge.channel.fading import RayleighChannel, RicianChannel
from rkd_edge.channel.simple import AWGNChannel, IdentityChannel
from rkd_edge.channel_ids import CHANNEL_TYPES
from rkd_edge.errors import UserError

CHANNELS: dict[str, type[Channel]] = {
    "identity": IdentityChannel,
    "awgn": AWGNChannel,
    "rayleigh": RayleighChannel,
    "rician": RicianChannel,
}
# The id of each channel type in the codec's conditioning is fixed in rkd_edge.channel_ids, not derived
# from the order of this registry.
assert set(CHANNELS) == set(CHANNEL_TYPES), "every registered channel needs a stable id in rkd_edge.channel_ids"


def create_channel(name: str, **kwargs) -> Channel:
    """Build a channel by name.

    Args:
        name: One of ``identity``, ``awgn``, ``rayleigh``, ``rician``.
        **kwargs: ``mode`` (block|fast) and ``csi`` (zf|mmse|decoder) for fading channels;
            ``k_factor`` for Rician. Arguments a channel does not take are ignored.
    """
    if name not in CHANNELS:
        raise UserError(f"unknown channel {name!r}; choose one of {', '.join(CHANNELS)}")
    cls = CHANNELS[name]
    allowed = {"rayleigh": ("mode", "csi"), "rician": ("k_factor", "mode", "csi")}.get(name, ())
    return cls(**{k: v for k, v in kwargs.items() if k in allowed and v is not None})
