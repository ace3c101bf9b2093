"""Candidate operations of the search space (DARTS operations plus mobile inverted residuals).

Every operation maps ``[B, C, H, W]`` to ``[B, C, ceil(H/stride), ceil(W/stride)]`` for any H, W >= 1,
so that one space serves 8x8 to 224x224 inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride, pad, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two depthwise-separable convolutions (DARTS ``sep_conv``)."""

    def __init__(self, c: int, k: int, stride: int, affine: bool = True) -> None:
        p = k // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, stride, p, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, 1, p, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class DilConv(nn.Sequential):
    """Dilated depthwise-separable convolution (dilation 2)."""

    def __init__(self, c: int, k: int, stride: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, kxk depthwise, 1x1 project; residual when shapes allow."""

    def __init__(self, c: int, k: int, stride: int, expand: int = 3, affine: bool = True) -> None:
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False),
            nn.BatchNorm2d(h, affine=affine),
            nn.ReLU6(inplace=False),
            nn.Conv2d(h, h, k, stride, k // 2, groups=h, bias=False),
            nn.BatchNorm2d(h, affine=affine),
            nn.ReLU6(inplace=False),
            nn.Conv2d(h, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )
        self.residual = stride == 1

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve resolution with two offset stride-2 1x1 convolutions; odd sizes are padded first."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], dim=1))


class Pool(nn.Module):
    def __init__(self, kind: str, c: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False) if kind == "avg" else nn.MaxPool2d(3, stride, 1)

    def forward(self, x):
        return self.pool(x)


OpBuilder = Callable[[int, int, bool], nn.Module]

# name -> builder(C, stride, affine). Order matters: it is the column order of the architecture weights.
OPS: dict[str, OpBuilder] = {
    "none": lambda c, s, a: Zero(s),
    "skip_connect": lambda c, s, a: nn.Identity() if s == 1 else FactorizedReduce(c, c, a),
    "avg_pool_3x3": lambda c, s, a: Pool("avg", c, s, a),
    "max_pool_3x3": lambda c, s, a: Pool("max", c, s, a),
    "sep_conv_3x3": lambda c, s, a: SepConv(c, 3, s, a),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, 5, s, a),
    "dil_conv_3x3": lambda c, s, a: DilConv(c, 3, s, a),
    "dil_conv_5x5": lambda c, s, a: DilConv(c, 5, s, a),
    "inv_res_3x3": lambda c, s, a: InvertedResidual(c, 3, s, 3, a),
    "inv_res_5x5": lambda c, s, a: InvertedResidual(c, 5, s, 3, a),
}
PRIMITIVES = list(OPS)


def build_op(name: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    return OPS[name](c, stride, affine)
