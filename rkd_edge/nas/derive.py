"""Derive a discrete genotype from the architecture weights, with the anti-collapse safeguards."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from rkd_edge.errors import UserError
from rkd_edge.nas.cost import chosen_cost, count_macs, count_params
from rkd_edge.nas.genotypes import Genotype, Skeleton
from rkd_edge.nas.operations import PRIMITIVES
from rkd_edge.students.network import StudentEncoder


def derive_cell(alphas: torch.Tensor, steps: int, max_skip: int | None) -> tuple[list, dict]:
    """Pick two strongest inputs per node, each with its strongest operation other than ``none``.

    Safeguards (their actions are counted in the returned info):
      * ``none`` is never chosen (DARTS); ``none_argmax`` counts edges whose raw argmax was ``none``.
      * at most ``max_skip`` ``skip_connect`` per cell (P-DARTS): the weakest extra skips are replaced
        by their edge's best parametric operation; ``skips_replaced`` counts them.
    """
    w = F.softmax(alphas.detach().float(), -1)
    none_i, skip_i = PRIMITIVES.index("none"), PRIMITIVES.index("skip_connect")
    chosen, offset, none_argmax = [], 0, 0
    for i in range(steps):
        rows = w[offset : offset + 2 + i]
        none_argmax += int((rows.argmax(-1) == none_i).sum())
        masked = rows.clone()
        masked[:, none_i] = -1
        best = masked.max(-1)
        top = sorted(best.values.argsort(descending=True)[:2].tolist())
        for j in top:
            chosen.append([PRIMITIVES[int(best.indices[j])], j, offset + j])
        offset += 2 + i
    replaced = 0
    if max_skip is not None:
        skips = [c for c in chosen if c[0] == "skip_connect"]
        skips.sort(key=lambda c: float(w[c[2], skip_i]))
        while len(skips) > max_skip:
            c = skips.pop(0)
            row = w[c[2]].clone()
            row[[none_i, skip_i]] = -1
            row[[PRIMITIVES.index(p) for p in ("avg_pool_3x3", "max_pool_3x3")]] = -1
            c[0] = PRIMITIVES[int(row.argmax())]
            replaced += 1
    return [(op, j) for op, j, _ in chosen], {"none_argmax": none_argmax, "skips_replaced": replaced}


def built_costs(g: Genotype) -> tuple[int, int]:
    """Parameters and MACs of the encoder built from ``g``, counted on the module."""
    sk = g.skeleton
    net = StudentEncoder(g)
    return count_params(net), count_macs(net, (sk.in_channels, sk.image_size, sk.image_size))


def head_params(sk: Skeleton) -> int:
    """Parameters of the classifier on the student's features (part of the student's count)."""
    return sk.feature_dim * sk.num_classes + sk.num_classes


def head_macs(sk: Skeleton) -> int:
    """Multiply-accumulates of the classifier on the student's features (part of the student's count)."""
    return sk.feature_dim * sk.num_classes


def skeleton_costs(sk: Skeleton) -> tuple[int, int]:
    """Parameters and MACs of everything but the searched operations (stem, preprocessing, head)."""
    empty = [("none", j) for i in range(sk.steps) for j in (0, 1)]
    concat = list(range(2, 2 + sk.steps))
    return built_costs(Genotype(empty, empty, sk, concat, concat))


def derive(
    model, max_skip: int | None, tables: dict[str, torch.Tensor], reductions: list[bool], search_info: dict
) -> Genotype:
    """Genotype with cost estimates: params and MACs = skeleton + the chosen operations' table costs (+ the
    classifier's, in ``params`` and ``macs``)."""
    sk = model.skeleton
    normal, info_n = derive_cell(model.alphas_normal, sk.steps, max_skip)
    reduce, info_r = derive_cell(model.alphas_reduce, sk.steps, max_skip)
    concat = list(range(2, 2 + sk.steps))
    cells = {False: normal, True: reduce}
    skel_params, skel_macs = skeleton_costs(sk)
    enc_params = skel_params + int(chosen_cost(cells, tables["params"], sk.steps, reductions))
    enc_macs = skel_macs + int(chosen_cost(cells, tables["flops"], sk.steps, reductions))
    g = Genotype(
        normal,
        reduce,
        sk,
        concat,
        list(concat),
        params=enc_params + head_params(sk),
        encoder_params=enc_params,
        encoder_macs=enc_macs,
        macs=enc_macs + head_macs(sk),
        search={**search_info, "safeguards": {"normal": info_n, "reduce": info_r}},
    )
    if "latency" in tables:
        g.latency_ms = round(chosen_cost(cells, tables["latency"], sk.steps, reductions), 5)
    return g


def widen(g: Genotype, init_channels: int) -> Genotype:
    """The same cells built at another width (DARTS searches a narrow network and trains its cells wider).

    Params and MACs are counted on the built encoder (the search's tables price the search width only);
    the search record is kept and notes the width it ran at.
    """
    sk = dataclasses.replace(g.skeleton, init_channels=init_channels)
    wide = dataclasses.replace(g, skeleton=sk, search={**g.search, "searched_channels": g.skeleton.init_channels})
    wide.encoder_params, wide.encoder_macs = built_costs(wide)
    wide.params, wide.macs = wide.encoder_params + head_params(sk), wide.encoder_macs + head_macs(sk)
    wide.latency_ms = None  # a latency table prices the searched width only
    return wide


def check_budget(sk: Skeleton, max_params: int) -> None:
    """Refuse, before a search, a budget that the network without searched operations already exceeds
    one channel wide (stem, preprocessing and classifier alone).
    """
    least = skeleton_costs(dataclasses.replace(sk, init_channels=1))[0] + head_params(sk)
    if least > max_params:
        raise UserError(
            f"search.derive_max_params {max_params:,} is below the {least:,} parameters of this student's stem, "
            f"feature layer and classifier alone; raise it or lower search.feature_dim"
        )


def widest_within(g: Genotype, max_params: int) -> Genotype:
    """The same cells at the widest width whose student (encoder + classifier) has at most ``max_params``
    parameters: a budget that holds whichever cells the search picked.

    Widths are tried doubling, then halving the last step, so no network far above the budget is built.

    Raises:
        UserError: the cells exceed the budget even one channel wide.
    """

    def fits(width: int) -> Genotype | None:
        cand = widen(g, width)  # counted on the built encoder, also at the searched width
        if cand.params > max_params:
            return None
        return g if width == g.skeleton.init_channels else cand  # the searched width keeps its estimates

    best = fits(1)
    if best is None:
        raise UserError(
            f"search.derive_max_params {max_params:,}: the searched cells have more parameters even one channel "
            f"wide ({widen(g, 1).params:,}); raise the budget or search with a larger lambda"
        )
    lo, hi = 1, 2
    while (cand := fits(hi)) is not None:  # params grow with width: double until over the budget
        best, lo, hi = cand, hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (cand := fits(mid)) is not None:
            best, lo = cand, mid
        else:
            hi = mid
    return best
