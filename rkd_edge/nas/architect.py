"""The architecture step of bilevel optimisation: first order by default, DARTS second order optional."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rkd_edge.nas.search_model import SearchNetwork

LossFn = Callable[[tuple], torch.Tensor]


class Architect:
    """Updates the architecture weights on validation batches.

    Args:
        model: The supernet.
        loss_fn: ``batch -> CE + alpha * KD`` (the task and distillation part of the objective).
        penalty_fn: ``() -> E[cost]`` in [0, 1]; multiplied by ``lam``.
        lam: The complexity weight lambda.
        lr: Adam learning rate of the architecture weights.
        second_order: Use the unrolled (DARTS 2nd order) gradient, with ``xi`` the virtual step size.
    """

    def __init__(
        self,
        model: SearchNetwork,
        loss_fn: LossFn,
        penalty_fn: Callable[[], torch.Tensor],
        lam: float,
        lr: float,
        second_order: bool = False,
        xi: float = 0.01,
    ) -> None:
        self.model, self.loss_fn, self.penalty_fn = model, loss_fn, penalty_fn
        self.lam, self.second_order, self.xi = lam, second_order, xi
        self.opt = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-3)

    def step(self, train_batch: tuple, val_batch: tuple) -> torch.Tensor:
        """One update of the architecture weights; returns the validation objective as a 0-d tensor on
        the model's device (read it only when needed: reading it waits for the GPU)."""
        self.opt.zero_grad(set_to_none=True)
        if self.second_order:
            value = self._unrolled_grads(train_batch, val_batch)
        else:
            loss = self.loss_fn(val_batch)
            arch = self.model.arch_parameters()
            for a, g in zip(arch, _grads(loss, arch), strict=True):
                a.grad = g
            value = loss.detach()
        penalty = self.lam * self.penalty_fn()
        penalty.backward()
        self.opt.step()
        return value + penalty.detach()

    def _unrolled_grads(self, train_batch: tuple, val_batch: tuple) -> torch.Tensor:
        arch, weights = self.model.arch_parameters(), self.model.weight_parameters()
        backup = [w.detach().clone() for w in weights]
        g_train = torch.autograd.grad(self.loss_fn(train_batch), weights, allow_unused=True)
        with torch.no_grad():  # virtual step w' = w - xi * dL_train/dw
            for w, g in zip(weights, g_train, strict=True):
                if g is not None:
                    w.sub_(self.xi * g)
        val_loss = self.loss_fn(val_batch)
        grads = torch.autograd.grad(val_loss, arch + weights, allow_unused=True)
        d_arch = _grads_or_zeros(grads[: len(arch)], arch)
        d_w = grads[len(arch) :]
        with torch.no_grad():
            for w, b in zip(weights, backup, strict=True):
                w.copy_(b)
        vec = [d if d is not None else torch.zeros_like(w) for d, w in zip(d_w, weights, strict=True)]
        eps = 0.01 / (torch.cat([v.flatten() for v in vec]).norm() + 1e-12)
        hess = []
        for sign in (1.0, -2.0):  # w + eps v, then w - eps v: finite-difference Hessian-vector product
            with torch.no_grad():
                for w, v in zip(weights, vec, strict=True):
                    w.add_(sign * eps * v)
            hess.append(_grads(self.loss_fn(train_batch), arch))
        with torch.no_grad():
            for w, v in zip(weights, vec, strict=True):
                w.add_(eps * v)
        for a, da, gp, gn in zip(arch, d_arch, hess[0], hess[1], strict=True):
            a.grad = da - self.xi * (gp - gn) / (2 * eps)
        return val_loss.detach()


def _grads_or_zeros(grads, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zeros where a parameter took no part: a one-layer search has no reduction cell to use its alphas."""
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``d loss / d params``, zeros for the parameters the loss does not use."""
    return _grads_or_zeros(torch.autograd.grad(loss, params, allow_unused=True), params)
