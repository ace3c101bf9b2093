"""Distillation losses shared by the search and both training stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's logit distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, mean over the batch.

    Args:
        student_logits: ``[B, N]``.
        teacher_logits: ``[B, N]`` (no gradient flows into the teacher).
        temperature: T > 0.
    """
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits / t, -1),
            F.log_softmax(teacher_logits.detach() / t, -1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


def feature_regression(projected: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """MSE between the projected student features ``[B, E]`` and the teacher embedding ``[B, E]``.

    Both are compared after per-sample L2 normalisation times sqrt(E), so the loss scale does not depend
    on the teacher's embedding norm (CLIP's embeddings and a CNN's differ by orders of magnitude).
    """
    e = projected.shape[-1] ** 0.5
    return F.mse_loss(F.normalize(projected, dim=-1) * e, F.normalize(teacher_embedding.detach(), dim=-1) * e)


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``sum(weights[k] * terms[k])`` over the terms that have a non-zero weight."""
    total = None
    for k, w in weights.items():
        if w and k in terms:
            total = terms[k] * w if total is None else total + terms[k] * w
    if total is None:
        raise ValueError(f"no loss term among {sorted(weights)} is active")
    return total
