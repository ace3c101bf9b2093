"""The teacher interface."""

from __future__ import annotations

import torch
from torch import nn


class Teacher(nn.Module):
    """A large model that teaches: ``forward(x) -> (embedding [B, E], logits [B, N])``.

    Attributes:
        spec: The spec string that builds it.
        embed_dim: E, the width of the embedding the student regresses to.
        num_classes: N.
    """

    spec: str = ""
    embed_dim: int = 0
    num_classes: int = 0

    def identity(self) -> str:
        """A string that changes whenever the teacher's function may change (cache key)."""
        return self.spec

    def head(self) -> nn.Module:
        """The linear classifier from embedding to logits."""
        raise NotImplementedError

    def freeze(self) -> Teacher:
        """Frozen and in eval mode: what every teacher is while it teaches."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> Teacher:
        # A frozen teacher stays in eval mode even if a parent module is put in train mode.
        frozen = any(True for _ in self.parameters()) and not any(p.requires_grad for p in self.parameters())
        return super().train(False if frozen else mode)


def count_params(module: nn.Module) -> int:
    """Number of parameters (all, trainable or not)."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def predict(
    model: nn.Module, split, batch_size: int = 256, device: str = "cpu", limit: int | None = None
) -> torch.Tensor:
    """Argmax predictions ``[N] int64`` of a ``(emb, logits)`` model over a split (its first ``limit``)."""
    model.eval()
    preds = []
    for x, _, _ in split.batches(batch_size, limit=limit):
        preds.append(model(x.to(device))[1].argmax(-1).cpu())
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, split, batch_size: int = 256, device: str = "cpu", limit: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of a ``(emb, logits)`` model over a split (its first ``limit`` images)."""
    preds = predict(model, split, batch_size, device, limit)
    return float((preds.numpy() == split.labels[: len(preds)]).mean()) if len(preds) else 0.0
