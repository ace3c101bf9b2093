"""``rkd-edge prune RUN --ratio R --out RUN2``: structured channel pruning of the student encoder with
torch-pruning, then a short distillation fine-tune of encoder and codec, and a fresh evaluation.

The pruned run is an ordinary run directory: ``system.json`` marks the encoder as pruned, and
:func:`shrink_to_state` rebuilds the narrower layers from the checkpoint's tensor shapes, so export,
evaluation and the runtime work on it unchanged.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch import nn

from rkd_edge import progress
from rkd_edge.errors import UserError
from rkd_edge.io import read_json, write_json


def shrink_to_state(module: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> nn.Module:
    """Replace Conv2d / BatchNorm2d / Linear / LayerNorm layers by ones shaped like ``state``'s tensors."""
    for name, child in list(module.named_children()):
        key = f"{prefix}{name}"
        w = state.get(f"{key}.weight")
        new = None
        if isinstance(child, nn.Conv2d) and w is not None:
            groups = 1 if child.groups == 1 else w.shape[0]  # depthwise stays depthwise
            new = nn.Conv2d(
                w.shape[1] * groups,
                w.shape[0],
                child.kernel_size,
                child.stride,
                child.padding,
                child.dilation,
                groups,
                bias=child.bias is not None,
            )
        elif isinstance(child, nn.BatchNorm2d) and f"{key}.running_mean" in state:
            new = nn.BatchNorm2d(state[f"{key}.running_mean"].shape[0], affine=child.affine)
        elif isinstance(child, nn.Linear) and w is not None:
            new = nn.Linear(w.shape[1], w.shape[0], bias=child.bias is not None)
        elif isinstance(child, nn.LayerNorm) and w is not None:
            new = nn.LayerNorm(w.shape[0], elementwise_affine=True)
        if new is not None:
            setattr(module, name, new)
        else:
            shrink_to_state(child, state, f"{key}.")
    return module


def prune_run(run: Path, out: Path, ratio: float, epochs: int = 3) -> dict:
    """Prune ``ratio`` of the encoder's channels (L2 group magnitude), fine-tune, evaluate. Returns a record."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise UserError("pruning needs torch-pruning: pip install 'rkd-edge[prune]'") from None
    from rkd_edge.distill.loop import save_checkpoint
    from rkd_edge.distill.stages import run_stage, validate
    from rkd_edge.evaluate.run import evaluate_run
    from rkd_edge.nas.cost import count_macs, count_params
    from rkd_edge.pipeline import Pipeline, load_run

    if not 0.0 < ratio < 1.0:
        raise UserError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}")
    if out.exists():
        raise UserError(f"{out} already exists; choose another --out")
    cfg, system, spec = load_run(run)
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("cache", "train", "report.*", "evaluation*", "*.png"))
    pipe = Pipeline(cfg, out)
    pipe.stage_teacher()
    shape = tuple(spec["input_shape"])
    before = {
        "params": count_params(system.encoder),
        "macs": count_macs(system.encoder, shape),
        "clean_accuracy": validate(system, pipe.splits.test, "cpu", False, cfg.seed, None),
    }
    system.to(pipe.device)
    example = torch.zeros(2, *shape, device=pipe.device)
    pruner = tp.pruner.BasePruner(
        system.encoder,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[system.encoder.head],
    )
    pruner.step()
    progress.log(f"pruned encoder: {before['params']:,} -> {count_params(system.encoder):,} parameters")
    for name, sc in (("stage1", pipe.cfg.stage1), ("stage2", pipe.cfg.stage2)):
        sc = copy.deepcopy(sc)
        sc.epochs = epochs
        run_stage(
            f"prune-{name}",
            sc,
            system,
            pipe.splits,
            pipe.teacher,
            pipe.cache,
            seed=cfg.seed,
            batch_size=cfg.data.batch_size,
            augment=cfg.data.augment,
            device=pipe.device,
            codec_cfg=pipe.cfg.codec if name == "stage2" else None,
        )
    system.cpu()
    save_checkpoint(out / "checkpoints" / "stage2.pt", {"model": system.state_dict(), "config": cfg.to_dict()})
    spec = read_json(out / "system.json")
    spec["encoder"]["pruned"] = {"ratio": ratio, "from": str(run)}
    write_json(out / "system.json", spec)
    after = {
        "params": count_params(system.encoder),
        "macs": count_macs(system.encoder, shape),
        "clean_accuracy": validate(system, pipe.splits.test, "cpu", False, cfg.seed, None),
    }
    summary = evaluate_run(out)
    record = {"ratio": ratio, "finetune_epochs": epochs, "before": before, "after": after, "curves": summary["curves"]}
    write_json(out / "prune.json", record)
    return record
