"""An epoch loop with atomic checkpoints and exact resume, shared by every training command.

Batch order, augmentation and channel noise are pure functions of ``(seed, epoch)``, and the torch RNG
state is checkpointed too, so a run interrupted after any epoch and resumed reproduces the
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rkd_edge import env, progress
from rkd_edge.checkpoints import load_checkpoint, save_checkpoint
from rkd_edge.distill import ddp
from rkd_edge.errors import UserError, first_sentence

# An epoch's mean training loss beyond this has blown up: every loss here (CE, KD, feature regression over
# normalised embeddings) is O(1-10) while it learns; a finite 4e8 went on to NaN in the next stage, which
# was then blamed.
MAX_LOSS = 1e6


def check_finite(metrics: dict, desc: str, epoch: int) -> None:
    """Stop a training that diverged, with one line: a non-finite loss goes on to NaN weights, a model at
    chance level and a run that looks finished; a loss past :data:`MAX_LOSS` gets there an epoch later.

    Raises:
        UserError: a metric of ``metrics`` is NaN or infinite, or its loss is past :data:`MAX_LOSS`.
    """
    for key, value in metrics.items():
        if isinstance(value, float) and (not math.isfinite(value) or (key == "loss" and value > MAX_LOSS)):
            raise UserError(
                f"{desc} diverged in epoch {epoch + 1}: its {key} is {value:.4g}; lower the learning rate or the "
                "loss weights, and start a new run (--out)"
            )


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    run_epoch: Callable[[int], dict],
    checkpoint: Path | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    desc: str = "train",
    select: str | None = None,
) -> list[dict]:
    """Run ``run_epoch(epoch) -> metrics`` for each epoch, checkpointing atomically after each.

    Args:
        model: The module whose ``state_dict`` is checkpointed.
        optimizer: Its optimiser (state checkpointed).
        epochs: Total epochs.
        run_epoch: Trains one epoch and returns metrics (floats); must be deterministic in the epoch.
        checkpoint: Where to save; an existing file resumes the run.
        scheduler: Stepped once per epoch.
        desc: Progress label.
        select: A metric to maximise: the best epoch's weights are restored at the end.

    Returns:
        The per-epoch metrics history.
    """
    history: list[dict] = []
    start = 0
    best = (-math.inf, None)
    here = _where(model)
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        history, start, best = _resume(state, checkpoint, model, optimizer, scheduler, epochs)
        progress.log(f"{desc}: resuming after epoch {start} of {epochs}")
        if isinstance(then := state.get("where"), dict) and then != here:  # a run repeats only where it ran
            progress.log(
                f"{desc}: warning: epochs 1..{start} ran on {_describe(then)}, this process runs on {_describe(here)}; "
                "the stage will not repeat bit for bit (another thread count sums in another order)"
            )
    with progress.task(desc, epochs) as bar:
        bar.advance(start)
        for epoch in range(start, epochs):
            t0 = time.time()
            metrics = run_epoch(epoch)
            metrics["seconds"] = time.time() - t0
            if scheduler is not None:
                scheduler.step()
            metrics = {"epoch": epoch, **{k: round(float(v), 6) for k, v in metrics.items()}}
            check_finite(metrics, desc, epoch)  # before the checkpoint: a resume starts from the last sane epoch
            history.append(metrics)
            if select is not None and metrics[select] > best[0]:
                best = (metrics[select], {k: v.detach().clone() for k, v in model.state_dict().items()})
            if checkpoint is not None and ddp.is_main():
                save_checkpoint(
                    checkpoint,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "rng": torch.get_rng_state(),
                        # The global CUDA stream (dropout and the like in GPU models) resumes too.
                        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                        "history": history,
                        "epoch": epoch,
                        "best_score": best[0],
                        "best_model": best[1],
                        "where": here,
                    },
                )
            bar.advance(1, info=" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
    if select is not None and best[1] is not None:
        model.load_state_dict(best[1])
    return history


def _where(model: nn.Module) -> dict:
    """What decides whether a stage repeats bit for bit: of :func:`rkd_edge.env.host`, the device type and
    torch's thread count."""
    host = env.host(next((p.device.type for p in model.parameters()), "cpu"))
    return {k: host[k] for k in ("device", "torch_threads")}


def _describe(where: dict) -> str:
    return f"{where.get('device')} with {where.get('torch_threads')} torch thread(s)"


# What a damaged or foreign checkpoint makes torch raise while it is restored.
_UNRESTORABLE = (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError)


def _resume(state: dict, path: Path, model: nn.Module, optimizer, scheduler, epochs: int) -> tuple[list, int, tuple]:
    """Restore model, optimiser, scheduler and RNG from a :func:`fit` checkpoint.

    Returns:
        The history so far, the epoch to start at, and ``(best score, best weights or None)``.

    Raises:
        UserError: One line when the file is not a checkpoint this loop wrote for this model.
    """
    try:
        epoch, history, best_model = state["epoch"], state["history"], state["best_model"]
        if type(epoch) is not int or not 0 <= epoch < epochs:
            raise ValueError(f"epoch {epoch!r} is not one of this stage's {epochs}")
        if not isinstance(history, list) or len(history) != epoch + 1 or not all(isinstance(h, dict) for h in history):
            raise ValueError("its history does not match its epoch")
        own = model.state_dict()
        for weights in (state["model"], best_model):
            if weights is None:
                continue
            if not isinstance(weights, dict) or weights.keys() != own.keys():
                raise ValueError("its weights are not this model's")
            if any(not torch.is_tensor(w) or w.shape != own[k].shape for k, w in weights.items()):
                raise ValueError("its weights have other shapes than this model's")
        model.load_state_dict(state["model"])
        restore_optimizer(optimizer, state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        cuda_rng = state.get("cuda_rng")
        if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        best = (float(state["best_score"]), best_model)
    except _UNRESTORABLE as exc:
        why = f"it has no {exc.args[0]!r}" if isinstance(exc, KeyError) else first_sentence(exc) or type(exc).__name__
        raise UserError(
            f"checkpoint {path} is not one this stage wrote ({why}); delete it to restart this stage"
        ) from None
    return history, epoch + 1, best


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpointed optimiser state, keeping how this run steps it.

    ``load_state_dict`` takes each group's ``capturable`` and ``fused`` flags from the file: a checkpoint
    made without CUDA graphs, resumed with them, would come back not capturable and its first capture would
    fail. The flags are set back to this optimiser's, with the step counts where a capturable step wants
    them (on the parameter's device, float32).
    """
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for key in ("capturable", "fused"):
            if key in optimizer.defaults:
                group[key] = optimizer.defaults[key]
        if group.get("capturable"):
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if torch.is_tensor(st.get("step")):
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


def make_optimizer(
    params, lr: float, weight_decay: float, epochs: int, steps_per_epoch: int = 1, capturable: bool = False
):
    """AdamW with a cosine schedule stepped per epoch: the default for every stage.

    Parameters on a GPU get the fused AdamW kernel (one launch per step instead of several per tensor),
    ``capturable`` (its step count on the GPU) when its steps are replayed from a CUDA graph; on CPU the
    optimiser is the one it always was.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise UserError("this stage trains no parameters; check its 'train' list in the config")
    fused = all(p.is_cuda for p in params) or None
    capturable = bool(capturable and fused)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, capturable=capturable)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=lr * 0.02)
    return opt, sched


AMP_MODES = ("off", "bf16")


def autocast(device: str, amp: str = "off") -> contextlib.AbstractContextManager:
    """The forward-pass precision of a training step: ``off`` (float32) or ``bf16`` autocast.

    bf16 keeps float32's range, so no loss scaling is needed; losses, softmax and normalisation run in
    float32 under autocast, and the channels add their noise in float32. Off by default: its accuracy
    effect is measured per setting (``benchmarks/gpu.py``) before it is recommended.
    """
    if amp == "off":
        return contextlib.nullcontext()
    if amp != "bf16":
        raise UserError(f"unknown amp mode {amp!r}; use one of {', '.join(AMP_MODES)}")
    # No cast cache: a step captured in a CUDA graph must not keep casts made during capture (PyTorch's
    # CUDA-graph notes), and a training step casts each weight once anyway.
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
