"""Train (or linear-probe) a teacher and write ``DIR/teacher.pt`` + ``DIR/teacher.json``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rkd_edge import env
from rkd_edge.checkpoints import save_checkpoint
from rkd_edge.config import RunConfig, augmenting
from rkd_edge.data import DataSplits
from rkd_edge.distill import ddp
from rkd_edge.distill.graphs import graphed, use_graphs
from rkd_edge.distill.loop import autocast, fit, make_optimizer
from rkd_edge.io import write_json
from rkd_edge.teachers.base import accuracy, count_params
from rkd_edge.teachers.registry import create_teacher


def train_teacher(cfg: RunConfig, splits: DataSplits, out: Path, device: str) -> dict:
    """Train ``cfg.teacher.arch`` on ``splits``; keep the best validation epoch. Returns the record."""
    tc = cfg.teacher
    t0 = time.time()
    env.seed_everything(cfg.seed)
    teacher = create_teacher(tc.arch, splits.input_shape, splits.num_classes).to(device)
    if tc.probe_only:
        for p in teacher.parameters():
            p.requires_grad_(False)
        for p in teacher.head().parameters():
            p.requires_grad_(True)
    augment = augmenting(tc.augment, cfg.data.augment)
    ddp.init_from_env(device)
    model = ddp.wrap(teacher, device)
    rank, world = ddp.world()
    use_graph = use_graphs(tc.cuda_graph, device, world)
    opt, sched = make_optimizer(teacher.parameters(), tc.lr, tc.weight_decay, tc.epochs, capturable=use_graph)

    # Batches are made where the model is (uint8 images held on a GPU, augmented there); the loss is
    # summed on the device and read once per epoch.
    train_split, val_split, eval_bs = splits.train.on(device), splits.val.on(device), env.eval_batch_size(device)

    def run_epoch(epoch: int) -> dict:
        teacher.train(not tc.probe_only)
        total, n = torch.zeros((), dtype=torch.float64, device=device), 0
        batches = train_split.batches(
            cfg.data.batch_size, True, cfg.seed, epoch, augment_data=augment, rank=rank, world=world
        )

        def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with autocast(device, tc.amp):
                loss = F.cross_entropy(model(x)[1], y, label_smoothing=tc.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        train_step = graphed(step, use_graph)  # one graph per epoch: its learning rate is frozen in
        for x, y, _ in batches:
            x, y = x.to(device), y.to(device)
            total += train_step(x, y).double() * len(y)
            n += len(y)
        return {
            "loss": ddp.all_mean(float(total) / max(n, 1)),
            "val_acc": accuracy(teacher, val_split, eval_bs, device=device),
        }

    out.mkdir(parents=True, exist_ok=True)
    history = fit(
        teacher, opt, tc.epochs, run_epoch, out / "checkpoint.pt", sched, desc=f"teacher {tc.arch}", select="val_acc"
    )
    record = {
        "spec": tc.arch,
        "arch": tc.arch,
        "load_spec": f"local:{Path(os.path.relpath(out)).as_posix()}",
        "params": count_params(teacher),
        "embed_dim": teacher.embed_dim,
        "num_classes": splits.num_classes,
        "input_shape": list(splits.input_shape),
        "dataset": splits.name,
        "classes": splits.classes,
        "transform": splits.transform.to_dict(),
        "accuracy": accuracy(teacher, splits.test.on(device), eval_bs, device=device),
        "val_accuracy": accuracy(teacher, val_split, eval_bs, device=device),
        "history": history,
        "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 2),
        "wall_seconds_last_call": round(time.time() - t0, 2),
        "config": cfg.to_dict(),
        "versions": env.versions(),
    }
    if not ddp.is_main():
        return record
    save_checkpoint(out / "teacher.pt", teacher.state_dict())
    write_json(out / "teacher.json", record)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return record
