"""The DARTS supernet: every edge a softmax-weighted mix of all operations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rkd_edge.nas.cells import cell_plan, make_preprocess, make_stem
from rkd_edge.nas.genotypes import Skeleton
from rkd_edge.nas.operations import PRIMITIVES, build_op


def edges_per_cell(steps: int) -> int:
    return sum(2 + i for i in range(steps))


def edge_inputs(steps: int) -> list[int]:
    """Input node of each edge, in edge order."""
    return [j for i in range(steps) for j in range(2 + i)]


class MixedOp(nn.Module):
    """Weighted sum of all operations; with partial channels ``k`` only C/k channels go through them."""

    def __init__(self, c: int, stride: int, k: int = 1) -> None:
        super().__init__()
        self.k, self.stride = k, stride
        width = c // k
        self.ops = nn.ModuleList()
        for name in PRIMITIVES:
            op = build_op(name, width, stride, affine=False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(width, affine=False))
            self.ops.append(op)
        self.bypass = nn.MaxPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))
        c = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :c]) for w, op in zip(weights, self.ops, strict=True))
        out = torch.cat([mixed, self.bypass(x[:, c:])], dim=1)
        b, ch, h, w = out.shape  # channel shuffle so every channel takes part over the search
        return out.view(b, self.k, ch // self.k, h, w).transpose(1, 2).reshape(b, ch, h, w)


class SearchCell(nn.Module):
    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, k: int) -> None:
        super().__init__()
        self.steps, self.reduction = steps, reduction
        self.pre0, self.pre1 = make_preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        self.edges = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1, k) for j in edge_inputs(steps))

    def forward(self, s0, s1, weights):
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            h = sum(self.edges[offset + j](s, weights[offset + j]) for j, s in enumerate(states))
            offset += len(states)
            states.append(h)
        return torch.cat(states[2:], dim=1)


def cell_specs(sk: Skeleton, c_stem: int, partial_channels: int) -> tuple[list[tuple], int]:
    """The :class:`SearchCell` arguments of every cell, in order, and the width the last one outputs."""
    specs, c_pp, c_p = [], c_stem, c_stem
    for p in cell_plan(sk):
        specs.append((sk.steps, c_pp, c_p, p["C"], p["reduction"], p["reduction_prev"], partial_channels))
        c_pp, c_p = c_p, sk.steps * p["C"]
    return specs, c_p


def make_head(sk: Skeleton, c_last: int) -> tuple[nn.Module, nn.Module]:
    """The feature head ``[B, c_last] -> [B, D]`` and the classifier ``[B, D] -> [B, N]``."""
    head = nn.Sequential(nn.Linear(c_last, sk.feature_dim), nn.LayerNorm(sk.feature_dim))
    return head, nn.Linear(sk.feature_dim, sk.num_classes)


class SearchNetwork(nn.Module):
    """Supernet: ``x: [B, C, H, W]`` -> ``(features [B, D], logits [B, N])``.

    Architecture weights ``alphas_normal`` / ``alphas_reduce``: ``[edges, len(PRIMITIVES)]``.
    """

    def __init__(self, sk: Skeleton, partial_channels: int = 1) -> None:
        super().__init__()
        self.skeleton = sk
        self.stem, c_cur = make_stem(sk)
        self.plan = cell_plan(sk)
        cells, c_p = cell_specs(sk, c_cur, partial_channels)
        self.cells = nn.ModuleList(SearchCell(*args) for args in cells)
        self.head, self.classifier = make_head(sk, c_p)
        e, n = edges_per_cell(sk.steps), len(PRIMITIVES)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(e, n))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(e, n))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wn = F.softmax(self.alphas_normal, dim=-1)
        wr = F.softmax(self.alphas_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, wr if cell.reduction else wn)
        f = self.head(s1.mean((2, 3)))
        return f, self.classifier(f)
