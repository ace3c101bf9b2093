"""Complexity costs of operations (parameters, FLOPs counted as multiply-accumulates, measured latency) and
their expectation.

The penalty of KDL-DARTS is ``E[cost] = sum over cells and edges of softmax(alpha) . cost``, divided by
the cost of the most expensive choice on every edge, so it lies in [0, 1] whatever the metric.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rkd_edge.devices.lut import check_entries, latency_key, make_table, measure_entries, read_table, write_table
from rkd_edge.errors import UserError
from rkd_edge.nas.cells import cell_plan
from rkd_edge.nas.genotypes import Skeleton
from rkd_edge.nas.operations import PRIMITIVES, build_op
from rkd_edge.nas.search_model import edge_inputs

METRICS = ("params", "flops", "latency")


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on ``[1, *input_shape]`` (convolutions and linears)."""
    total = [0]

    def conv_hook(m: nn.Conv2d, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inp, out):
        total[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in module.modules() if isinstance(m, nn.Linear)]
    was = module.training
    module.eval()
    try:
        module(torch.zeros(1, *input_shape))
    finally:
        module.train(was)
        for h in hooks:
            h.remove()
    return total[0]


def latency_keys(sk: Skeleton) -> list[tuple[str, int, int, int]]:
    """Every ``(op, C, size, stride)`` the skeleton's edges use, in a stable order."""
    keys = []
    for p in cell_plan(sk):
        for stride, size in sorted(set(edge_geometry(p, sk.steps))):
            for op in PRIMITIVES:
                k = (op, p["C"], size, stride)
                if k not in keys:
                    keys.append(k)
    return keys


def load_latency_table(path: str | Path, sk: Skeleton | None = None, precision: str | None = None) -> dict:
    """A latency lookup table (format: :mod:`rkd_edge.devices.lut`), checked before any work starts.

    Not a table, a wrong key set, missing entries (when ``sk`` is given) or another precision than
    ``precision`` (when given) are one line (UserError).
    """
    table = read_table(path)
    if precision is not None and table.get("precision") != precision:
        raise UserError(
            f"latency table {path} was measured in {table.get('precision')}, the search asks for {precision}; "
            f"measure one with rkd-edge devices lut --precision {precision}"
        )
    if sk is not None:
        check_entries(table, [latency_key(*k) for k in latency_keys(sk)], path)
    return table


def build_latency_table(
    sk: Skeleton, path: str | Path | None = None, precision: str = "fp32", threads: int = 1, progress=None
) -> dict:
    """Measure every (op, C, size, stride) the skeleton uses on this host with the one timing protocol
    (ONNX Runtime CPU, :func:`rkd_edge.devices.lut.measure_entries`); write it if ``path``."""
    keys = latency_keys(sk)
    entries = measure_entries(keys, build_op, precision, threads, progress=progress)
    skeleton = {k: getattr(sk, k) for k in ("in_channels", "image_size", "layers", "steps", "init_channels")}
    table = make_table(entries, precision, skeleton=skeleton)
    if path is not None:
        write_table(table, path)
    return table


def op_cost_table(sk: Skeleton, metric: str = "params", latency: dict | None = None) -> torch.Tensor:
    """Cost of each operation on each edge of each cell: ``[layers, edges, len(PRIMITIVES)] float64``."""
    if metric not in METRICS:
        raise UserError(f"unknown cost {metric!r}; choose one of {', '.join(METRICS)}")
    if metric == "latency" and latency is None:
        raise UserError("latency cost needs a latency table (--latency-table FILE)")
    rows = []
    for p in cell_plan(sk):
        row = []
        for stride, size in edge_geometry(p, sk.steps):
            costs = []
            for op in PRIMITIVES:
                if metric == "params":
                    costs.append(count_params(build_op(op, p["C"], stride)))
                elif metric == "flops":
                    costs.append(count_macs(build_op(op, p["C"], stride), (p["C"], size, size)))
                else:
                    key = latency_key(op, p["C"], size, stride)
                    if key not in latency["entries"]:
                        raise UserError(
                            f"latency table lacks {key}; rebuild it with rkd-edge devices lut for this config"
                        )
                    costs.append(latency["entries"][key])
            row.append(costs)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def edge_geometry(p: dict, steps: int) -> list[tuple[int, int]]:
    """``(stride, input size)`` of every edge of a cell: in a reduction cell the edges from the two cell
    inputs have stride 2 and the edges between intermediate nodes run at the halved size."""
    half = -(-p["size"] // 2)
    if not p["reduction"]:
        return [(1, p["size"]) for _ in edge_inputs(steps)]
    return [(2, p["size"]) if j < 2 else (1, half) for j in edge_inputs(steps)]


def expected_cost(
    alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor, table: torch.Tensor, reductions: list[bool]
) -> torch.Tensor:
    """Normalised expected cost in [0, 1] under the softmax of the architecture weights.

    Args:
        alphas_normal: ``[edges, ops]`` architecture weights of the normal cells.
        alphas_reduce: ``[edges, ops]`` architecture weights of the reduction cells.
        table: ``[cells, edges, ops]`` cost of each op on each edge of each cell (params, MACs or ms).
        reductions: Per cell, whether it is a reduction cell.
    """
    wn, wr = F.softmax(alphas_normal, -1), F.softmax(alphas_reduce, -1)
    t = table.to(alphas_normal.dtype)
    total = sum(((wr if red else wn) * t[i]).sum() for i, red in enumerate(reductions))
    return total / t.max(-1).values.sum().clamp_min(1e-12)


def chosen_cost(
    cells: dict[bool, list[tuple[str, int]]], table: torch.Tensor, steps: int, reductions: list[bool]
) -> float:
    """Summed cost of the operations a genotype chose (same table as the penalty)."""
    offsets, o = [], 0
    for i in range(steps):
        offsets.append(o)
        o += 2 + i
    total = 0.0
    for li, red in enumerate(reductions):
        for k, (op, inp) in enumerate(cells[red]):
            total += float(table[li, offsets[k // 2] + inp, PRIMITIVES.index(op)])
    return total
