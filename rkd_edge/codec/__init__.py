"""Channel codecs behind one factory, :func:`create_codec`.

Every codec has ``tx(f, snr_db, k, channel) -> (x [B, K, 2], mask [B, K])`` and
``rx(y, mask, snr_db, channel, csi) -> f_hat [B, D]``, plus ``max_symbols`` K and ``symbol_set``.
"""

from __future__ import annotations

from torch import nn

from rkd_edge.codec.baselines import DirectCodec, PlainTransformerCodec
from rkd_edge.codec.cat import CATCodec
from rkd_edge.errors import UserError

CODECS: dict[str, type[nn.Module]] = {"cat": CATCodec, "plain": PlainTransformerCodec, "direct": DirectCodec}


def create_codec(name: str, feature_dim: int, **kwargs) -> nn.Module:
    """Build a codec by name (``cat``, ``plain``, ``direct``) for features of width ``feature_dim``."""
    if name not in CODECS:
        raise UserError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    if name == "cat":
        k = kwargs.get("max_symbols", 16)
        bad = [s for s in kwargs.get("symbols") or [] if not 1 <= s <= k]
        if bad:
            raise UserError(f"symbol lengths {bad} outside 1..{k} (max_symbols); fix codec.symbols")
    return CODECS[name](feature_dim, **kwargs)
