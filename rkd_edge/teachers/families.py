"""Teachers the toolkit trains itself: ResNet-style CNNs and ViTs, "large" next to the students."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rkd_edge.teachers.base import Teacher


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class CNNTeacher(Teacher):
    """ResNet-style CNN: stem, four stages (widths w, 2w, 4w, 8w), global pool, linear head.

    Args:
        in_channels: Image channels.
        image_size: Side in pixels; above 64 the stem downsamples by 4 like ResNet.
        num_classes: Output classes.
        width: w.
        blocks: Basic blocks per stage.
    """

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, width: int = 32, blocks: int = 1, spec: str = "cnn"
    ) -> None:
        super().__init__()
        self.spec, self.num_classes, self.embed_dim = spec, num_classes, 8 * width
        stem_stride = 2 if image_size > 64 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2) if image_size > 64 else nn.Identity(),
        )
        layers, c = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c, width * mult, stride))
                c = width * mult
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def head(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        emb = self.stages(self.stem(x)).mean((2, 3))
        return emb, self.fc(emb)


class ViTTeacher(Teacher):
    """A plain ViT: patch embedding (about 8x8 patches per side), class token, pre-norm blocks."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        spec: str = "vit",
    ) -> None:
        super().__init__()
        self.spec, self.num_classes, self.embed_dim = spec, num_classes, dim
        patch = max(1, image_size // 8)
        tokens = (image_size // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def head(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos
        emb = self.norm(self.blocks(t))[:, 0]
        return emb, self.fc(emb)


# name -> (class, keyword arguments)
FAMILIES = {
    "cnn-large": (CNNTeacher, {"width": 48, "blocks": 1}),
    "cnn-base": (CNNTeacher, {"width": 32, "blocks": 1}),
    "vit-small": (ViTTeacher, {"dim": 192, "depth": 6, "heads": 3}),
    "vit-tiny": (ViTTeacher, {"dim": 96, "depth": 4, "heads": 3}),
}


def build_family(name: str, in_channels: int, image_size: int, num_classes: int) -> Teacher:
    cls, kwargs = FAMILIES[name]
    return cls(in_channels, image_size, num_classes, spec=name, **kwargs)
