"""A config checked against its data before any work: the combinations that per-key ranges cannot see.

Every key has its own range (``config.RANGES``); what is refused here is their product: a search whose
weights or architecture half of the training split is empty, and networks that fit no memory (every width
inside its range, hundreds of gigabytes together). Networks are counted on PyTorch's ``meta`` device:
shapes only, no memory and no time.
"""

from __future__ import annotations

import dataclasses

import torch

from rkd_edge.config import RunConfig
from rkd_edge.data import DataSplits
from rkd_edge.errors import UserError
from rkd_edge.methods import METHOD_STAGES
from rkd_edge.nas.search import make_skeleton, weights_half
from rkd_edge.nas.search_model import SearchNetwork
from rkd_edge.rundir import build_codec
from rkd_edge.system_spec import system_spec

# Parameters of any one network trained here: 0.4 GB of float32 weights, 1.6 GB with AdamW's state and the
# gradients, far beyond an edge encoder or codec (the quickstart's whole system has about 50 k).
MAX_PARAMS = 100_000_000


def _params(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def check_run(cfg: RunConfig, splits: DataSplits) -> None:
    """Refuse, with one line, a run that would fail or exhaust memory after the teacher trained.

    Args:
        cfg: The method's config (after ``method_config``).
        splits: Its data splits.

    Raises:
        UserError: an empty search half, or a network above :data:`MAX_PARAMS`.
    """
    s = cfg.search
    searching = "search" in METHOD_STAGES[cfg.method] and s.genotype is None
    sizes = {}
    if searching:
        weights_half(len(splits.train), s.train_fraction)
        sk = make_skeleton(cfg, splits)
        sizes["the search's supernet (search.init_channels, layers, steps, stem_multiplier)"] = _params(
            lambda: SearchNetwork(sk, s.partial_channels)
        )
        if s.derive_channels:  # a student has one operation per edge: at most the whole supernet's width
            wide = dataclasses.replace(sk, init_channels=s.derive_channels)
            sizes["the student at search.derive_channels (at most)"] = _params(lambda: SearchNetwork(wide))
    spec = system_spec(cfg, splits, teacher_dim=1)
    sizes["the codec (codec.dim, depth, max_symbols)"] = _params(lambda: build_codec(spec["codec"], s.feature_dim))
    for what, n in sizes.items():
        if n > MAX_PARAMS:
            raise UserError(
                f"{what} would have {n:,} parameters, more than the {MAX_PARAMS:,} rkd-edge trains "
                "(an edge model has thousands to millions); choose smaller sizes"
            )
