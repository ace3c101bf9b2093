"""Stable channel-type ids: the number a codec is conditioned on for each channel type, and the fading
channels' settings (torch-free).

The table is append-only and never derived from a registry's order: the tx and rx graphs of every
trained codec embed these ids, so renumbering would silently give each channel another's conditioning.
It keeps the ids that every codec trained so far was conditioned on (identity 0, awgn 1, rayleigh 2,
rician 3), which is why it differs from the order sketched in DESIGN.md section 7; new channel types are
appended. Codecs embed :data:`CHANNEL_CAPACITY` rows, so appending a type changes no parameter shape,
and checkpoints store the table they were trained with (``channel_ids``) next to their weights.
"""

from __future__ import annotations

import math

from rkd_edge.errors import UserError

CHANNEL_IDS: dict[str, int] = {"identity": 0, "awgn": 1, "rayleigh": 2, "rician": 3}
# Rows of a codec's channel-type embedding: room for types appended later without new shapes.
CHANNEL_CAPACITY = 8
# Names in id order (index = id): the manifest's ``channel_types``.
CHANNEL_TYPES: list[str] = sorted(CHANNEL_IDS, key=CHANNEL_IDS.__getitem__)

# The fading channels' settings, read by the torch channels, the numpy ones, the config and the manifest
# check: one coefficient per transmission or per symbol, and what the receiver does with the CSI.
FADING_MODES = ("block", "fast")
CSI_MODES = ("zf", "mmse", "decoder")
# The config keys (``codec.*``) that set the fading channels, under which bundles record them too
# (``manifest["channel"]``).
FADING_KEYS = ("rayleigh_mode", "csi", "rician_k")

assert sorted(CHANNEL_IDS.values()) == list(range(len(CHANNEL_IDS))) and len(CHANNEL_IDS) <= CHANNEL_CAPACITY


def check_fading(mode: str, csi: str, k_factor: float) -> None:
    """Refuse (one line) fading settings no channel has: the torch and the numpy channels check alike."""
    if mode not in FADING_MODES:
        raise UserError(f"unknown fading mode {mode!r}; use one of {', '.join(FADING_MODES)}")
    if csi not in CSI_MODES:
        raise UserError(f"unknown CSI handling {csi!r}; use one of {', '.join(CSI_MODES)}")
    if not (k_factor >= 0 and math.isfinite(k_factor)):
        raise UserError(f"Rician K factor must be a finite number >= 0, got {k_factor}")


def same_ids(table: dict[str, int]) -> bool:
    """Whether another table (a checkpoint's or a manifest's) gives every shared name the same id."""
    return all(CHANNEL_IDS.get(name, i) == i for name, i in table.items())


def fading_kwargs(rayleigh_mode: str = "block", csi: str = "zf", rician_k: float = 3.0) -> dict:
    """The channel constructors' arguments (``mode``, ``csi``, ``k_factor``) for the settings named by
    :data:`FADING_KEYS`: the one place that maps the config's and manifest's names to the channels'."""
    return {"mode": rayleigh_mode, "csi": csi, "k_factor": rician_k}


def channel_id(name: str) -> int:
    """The stable id a codec is conditioned on for channel type ``name``.

    Raises:
        UserError: ``name`` is not a channel type.
    """
    if name not in CHANNEL_IDS:
        raise UserError(f"unknown channel {name!r}; choose one of {', '.join(CHANNEL_TYPES)}")
    return CHANNEL_IDS[name]
