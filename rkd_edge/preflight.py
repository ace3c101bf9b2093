"""A config checked against its data before any work: the combinations that per-key ranges cannot see.

Every key has its own range (``config.RANGES``); what is refused here is their product: a search whose
weights or architecture half of the training split is empty, a reused genotype made for other data, and
networks that fit no memory (every width inside its range, hundreds of gigabytes together). Networks are
counted on PyTorch's ``meta`` device: shapes only, no memory and no time.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rkd_edge.config import RunConfig
from rkd_edge.data import DataSplits
from rkd_edge.errors import UserError
from rkd_edge.limits import MAX_PARAMS
from rkd_edge.methods import METHOD_STAGES
from rkd_edge.nas.cells import make_stem
from rkd_edge.nas.cost import count_params, load_latency_table
from rkd_edge.nas.genotypes import Genotype, Skeleton
from rkd_edge.nas.operations import PRIMITIVES
from rkd_edge.nas.search import make_skeleton, weights_half
from rkd_edge.nas.search_model import SearchCell, cell_specs, edges_per_cell, make_head
from rkd_edge.rundir import build_codec
from rkd_edge.students import create_encoder
from rkd_edge.system_spec import system_spec


def _params(build) -> int:
    with torch.device("meta"):
        return count_params(build())


def supernet_params(sk: Skeleton, partial_channels: int = 1) -> int:
    """Parameters of ``SearchNetwork(sk, partial_channels)`` without building it: each distinct cell counted
    once on the meta device (64 cells of 16 steps are some 300,000 modules; built whole, minutes)."""
    with torch.device("meta"):
        stem, c_stem = make_stem(sk)
        cells, c_last = cell_specs(sk, c_stem, partial_channels)
        per_cell = {args: count_params(SearchCell(*args)) for args in set(cells)}
        alphas = 2 * edges_per_cell(sk.steps) * len(PRIMITIVES)
        head = sum(map(count_params, make_head(sk, c_last)))
        return count_params(stem) + sum(per_cell[a] for a in cells) + head + alphas


def _refuse_large(sizes: dict[str, int]) -> None:
    for what, n in sizes.items():
        if n > MAX_PARAMS:
            raise UserError(
                f"{what} would have {n:,} parameters, more than the {MAX_PARAMS:,} rkd-edge trains "
                "(an edge model has thousands to millions); choose smaller sizes"
            )


def check_supernet(cfg: RunConfig, splits: DataSplits) -> None:
    """Refuse a search (or its latency table) whose supernet, or student at ``derive_channels``, is too large."""
    s = cfg.search
    sk = make_skeleton(cfg, splits)
    supernet = "the search's supernet (search.init_channels, layers, steps, stem_multiplier)"
    sizes = {supernet: (sk, s.partial_channels)}
    if s.derive_channels:  # a student has one operation per edge: at most the whole supernet at its width
        sizes["the student at search.derive_channels (at most)"] = (replace(sk, init_channels=s.derive_channels), 1)
    _refuse_large({what: supernet_params(*args) for what, args in sizes.items()})


def check_genotype(path: str, splits: DataSplits) -> Genotype:
    """A reused ``genotype.json`` checked against the data and the size limit; returns it.

    Raises:
        UserError: another channel count, image size or class count than the data's, or a student above
            :data:`MAX_PARAMS`.
    """
    g = Genotype.load(path)
    g.check_input(tuple(splits.input_shape), path)
    sk = g.skeleton
    for what, mine, data in (
        ("image size", sk.image_size, splits.input_shape[1]),
        ("class count", sk.num_classes, splits.num_classes),
    ):
        if mine != data:
            raise UserError(
                f"{path} was searched for a {what} of {mine}, the data have {data}; use a genotype searched on "
                "this data"
            )
    _refuse_large({f"the student of {path}": _params(lambda: create_encoder(g))})
    return g


def check_latency_table(cfg: RunConfig, splits: DataSplits) -> None:
    """A search priced by latency needs a table holding every entry its skeleton reads (one line now, not an
    error after the teacher trained); a table given without ``--cost latency`` would price nothing."""
    s = cfg.search
    if s.latency_table and s.cost != "latency":  # it would hide a forgotten --cost
        raise UserError(
            f"--latency-table (search.latency_table) is read only with --cost latency, but search.cost is {s.cost}; "
            "add --cost latency or leave the table out"
        )
    if s.cost != "latency" or s.genotype:  # a reused genotype searches nothing
        return
    if not s.latency_table:
        raise UserError(
            "search.cost latency needs a latency table: pass --latency-table FILE (measure one with "
            "rkd-edge devices lut on the target device)"
        )
    load_latency_table(s.latency_table, make_skeleton(cfg, splits), s.latency_precision)


def check_run(cfg: RunConfig, splits: DataSplits, searched: bool = False) -> None:
    """Refuse, with one line, a run that would fail or exhaust memory after the teacher trained.

    Args:
        cfg: The method's config (after ``method_config``).
        splits: Its data splits.
        searched: The run's search is done (a resumed run): its inputs are not read again.

    Raises:
        UserError: a latency table that cannot price the search, an empty search half, a genotype for other
            data, or a network above :data:`MAX_PARAMS`.
    """
    s = cfg.search
    feature_dim = s.feature_dim
    if "search" in METHOD_STAGES[cfg.method] and not searched:
        check_latency_table(cfg, splits)
        if s.genotype is None:
            weights_half(len(splits.train), s.train_fraction)
            check_supernet(cfg, splits)
        else:
            feature_dim = check_genotype(s.genotype, splits).skeleton.feature_dim
    codec = system_spec(cfg, splits, teacher_dim=1)["codec"]
    _refuse_large({"the codec (codec.dim, depth, max_symbols)": _params(lambda: build_codec(codec, feature_dim))})
