"""The standalone student encoder built from a genotype (a different class from the search model)."""

from __future__ import annotations

import torch
from torch import nn

from rkd_edge.nas.cells import cell_plan, make_preprocess, make_stem
from rkd_edge.nas.genotypes import Genotype
from rkd_edge.nas.operations import build_op


class GenotypeCell(nn.Module):
    """A cell with one fixed operation per chosen edge, two edges per intermediate node."""

    def __init__(
        self,
        edges: list[tuple[str, int]],
        concat: list[int],
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.pre0, self.pre1 = make_preprocess(c_pp, c_p, c, reduction_prev, affine=True)
        self.ops = nn.ModuleList(build_op(op, c, 2 if reduction and idx < 2 else 1) for op, idx in edges)
        self.indices = [idx for _, idx in edges]
        self.concat = list(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(len(self.ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(self.ops[a](states[self.indices[a]]) + self.ops[b](states[self.indices[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class StudentEncoder(nn.Module):
    """Image to semantic features: ``x: [B, C, H, W] float32`` -> ``f: [B, feature_dim] float32``.

    Args:
        genotype: The derived architecture (cells and skeleton).
    """

    def __init__(self, genotype: Genotype) -> None:
        super().__init__()
        sk = genotype.skeleton
        self.genotype = genotype
        self.feature_dim = sk.feature_dim
        self.stem, c_cur = make_stem(sk)
        c_pp, c_p = c_cur, c_cur
        self.cells = nn.ModuleList()
        for p in cell_plan(sk):
            edges, concat = (
                (genotype.reduce, genotype.reduce_concat)
                if p["reduction"]
                else (genotype.normal, genotype.normal_concat)
            )
            self.cells.append(GenotypeCell(edges, concat, c_pp, c_p, p["C"], p["reduction"], p["reduction_prev"]))
            c_pp, c_p = c_p, len(concat) * p["C"]
        self.head = nn.Sequential(nn.Linear(c_p, sk.feature_dim), nn.LayerNorm(sk.feature_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(s1.mean((2, 3)))
