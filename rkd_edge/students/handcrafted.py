"""Hand-designed student encoders (baselines): a small ResNet-like CNN as in the authors' earlier code."""

from __future__ import annotations

import torch
from torch import nn

from rkd_edge.teachers.families import BasicBlock


class ResNetLikeEncoder(nn.Module):
    """A compact ResNet-like CNN: stem, three stages (w, 2w, 4w), pool, linear to ``feature_dim``.

    ``x: [B, C, H, W] float32`` -> ``f: [B, feature_dim] float32``.
    """

    def __init__(self, in_channels: int, image_size: int, feature_dim: int, width: int = 16) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        stride = 4 if image_size > 64 else 1
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            BasicBlock(width, width, 1),
            BasicBlock(width, 2 * width, 2),
            BasicBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Linear(4 * width, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))
