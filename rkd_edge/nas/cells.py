"""The network skeleton shared by the search model and the derived student: stem and preprocessing."""

from __future__ import annotations

from torch import nn

from rkd_edge.nas.genotypes import Skeleton
from rkd_edge.nas.operations import FactorizedReduce, ReLUConvBN


def make_stem(sk: Skeleton) -> tuple[nn.Module, int]:
    """Stem: a 3x3 conv; for inputs above 64 px two stride-2 convs (ImageNet style). Returns (stem, C)."""
    c = sk.stem_multiplier * sk.init_channels
    if sk.image_size > 64:
        stem = nn.Sequential(
            nn.Conv2d(sk.in_channels, c // 2, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c),
        )
    else:
        stem = nn.Sequential(nn.Conv2d(sk.in_channels, c, 3, sk.stem_stride, 1, bias=False), nn.BatchNorm2d(c))
    return stem, c


def make_preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool):
    """Bring the two cell inputs to C channels and the same resolution."""
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


def cell_plan(sk: Skeleton) -> list[dict]:
    """Per cell: channels C, whether it reduces, whether the previous one reduced, input size."""
    plan, c = [], sk.init_channels
    size = -(-sk.image_size // sk.stem_stride) if sk.image_size <= 64 else -(-sk.image_size // 4)
    reduction_prev = False
    for i in range(sk.layers):
        red = i in sk.reduction_layers()
        if red:
            c *= 2
        plan.append({"C": c, "reduction": red, "reduction_prev": reduction_prev, "size": size})
        if red:
            size = -(-size // 2)
        reduction_prev = red
    return plan
