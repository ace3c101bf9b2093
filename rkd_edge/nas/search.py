"""KDL-DARTS: search with ``CE + alpha * KD + lambda * E[cost]`` and derive the student genotype."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rkd_edge import env, progress
from rkd_edge.config import RunConfig
from rkd_edge.data import DataSplits
from rkd_edge.data.splits import subset
from rkd_edge.distill.loop import autocast, check_finite
from rkd_edge.distill.losses import kd_kl
from rkd_edge.errors import UserError
from rkd_edge.nas.architect import Architect
from rkd_edge.nas.cost import build_latency_table, expected_cost, load_latency_table, op_cost_table
from rkd_edge.nas.derive import check_budget, derive, widen, widest_within
from rkd_edge.nas.genotypes import Genotype, Skeleton
from rkd_edge.nas.operations import PRIMITIVES
from rkd_edge.nas.search_model import SearchNetwork
from rkd_edge.teachers.base import accuracy
from rkd_edge.teachers.cache import TeacherCache


def make_skeleton(cfg: RunConfig, splits: DataSplits) -> Skeleton:
    s = cfg.search
    c, h, _ = splits.input_shape
    return Skeleton(
        in_channels=c,
        image_size=h,
        num_classes=splits.num_classes,
        layers=s.layers,
        steps=s.steps,
        init_channels=s.init_channels,
        stem_multiplier=s.stem_multiplier,
        feature_dim=s.feature_dim,
        stem_stride=s.stem_stride,
    )


def weights_half(n: int, fraction: float) -> int:
    """How many of the ``n`` training images train the supernet's weights (the rest its architecture).

    Raises:
        UserError: ``search.train_fraction`` leaves one half empty.
    """
    cut = int(n * fraction)
    if not 0 < cut < n:
        half, fix = ("weights", f"at least {1 / n:.2g}") if cut == 0 else ("architecture", f"below {1 - 1 / n:.6g}")
        raise UserError(
            f"search.train_fraction {fraction:g} leaves none of the {n:,} training images for the {half} half of "
            f"the search; give {fix}"
        )
    return cut


def cost_tables(sk: Skeleton, cfg: RunConfig, out: Path | None) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Params and MACs ("flops") tables always (for estimates); latency when it is the chosen cost.

    Returns:
        The tables by metric, and where the latency table comes from (precision, device, back end) or None.
    """
    tables = {"params": op_cost_table(sk, "params"), "flops": op_cost_table(sk, "flops")}
    source = None
    if cfg.search.cost == "latency":
        s = cfg.search
        if s.latency_table:
            lut = load_latency_table(s.latency_table, precision=s.latency_precision)
        else:  # the API without a table: this host, measured now
            lut = build_latency_table(sk, out / "latency_table.json" if out else None, s.latency_precision or "fp32")
        tables["latency"] = op_cost_table(sk, "latency", lut)
        source = {k: lut.get(k) for k in ("precision", "device", "device_name", "backend")}
    return tables, source


# The supernet's validation accuracy (a log, not a choice: the sweep scores derived students) is taken on
# the first VAL_SAMPLES images of the validation split. A supernet pass over 6,000 fashion-mnist images
# took about 48 s on two CPU cores, every epoch.
VAL_SAMPLES = 2048


def search(
    cfg: RunConfig,
    splits: DataSplits,
    teacher,
    cache: TeacherCache | None,
    lam: float,
    device: str = "cpu",
    out: Path | None = None,
    online_teacher: bool | None = None,
) -> tuple[Genotype, list[dict]]:
    """Run one KDL-DARTS search at complexity weight ``lam``. Returns the genotype and the epoch log.

    Teacher logits come from ``cache`` (computed once per split), or with ``online_teacher`` from a
    teacher forward pass on every batch (what the cache saves; see ``benchmarks/search_cost.py``).
    ``None`` chooses: online for a proxy search that reads fewer images than the split holds.
    """
    s = cfg.search
    sk = make_skeleton(cfg, splits)
    if s.derive_max_params is not None:
        check_budget(sk, s.derive_max_params)  # before seeding: it builds a network, which draws weights
    env.seed_everything(cfg.seed)
    model = SearchNetwork(sk, s.partial_channels).to(device)
    tables, latency_source = cost_tables(sk, cfg, out)
    table = tables[s.cost].to(device)
    reductions = [p["reduction"] for p in model.plan]
    n = len(splits.train)
    order = np.random.default_rng(cfg.seed).permutation(n)
    cut = weights_half(n, s.train_fraction)
    w_split, a_split = (
        subset(splits.train, np.sort(order[:cut]), "search-w"),
        subset(splits.train, np.sort(order[cut:]), "search-a"),
    )
    t_out = {}
    use_kd = teacher is not None and bool(s.alpha_kd)
    # A proxy search that reads fewer images than the split holds is cheaper with the teacher online than
    # with a cache that computes every image first (measured in benchmarks/results/search_cost_*).
    if online_teacher is None:
        online_teacher = bool(s.limit_batches) and s.limit_batches * s.batch_size * s.epochs < len(w_split)
    if use_kd and not online_teacher:
        store = cache or TeacherCache(None)
        # Held on the device and indexed there with the (device) batch positions.
        t_out = {nm: store.outputs(teacher, sp, device)[1].to(device) for nm, sp in (("w", w_split), ("a", a_split))}
    # Batches are made on the device (uint8 images uploaded once per split).
    w_split, a_split, val_split = w_split.on(device), a_split.on(device), splits.val.on(device)

    def loss_fn(batch):
        x, y, pos, which = batch
        with autocast(device, s.amp):
            _, logits = model(x)
            loss = F.cross_entropy(logits, y)
            if use_kd:
                if online_teacher:
                    with torch.no_grad():
                        t_logits = teacher(x)[1]
                else:
                    t_logits = t_out[which][pos.to(device)]
                loss = loss + s.alpha_kd * kd_kl(logits, t_logits, s.temperature)
        return loss

    def penalty():
        return expected_cost(model.alphas_normal, model.alphas_reduce, table, reductions)

    architect = Architect(model, loss_fn, penalty, lam, s.arch_lr, s.second_order, xi=s.w_lr)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=s.w_lr, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, s.epochs, eta_min=s.w_lr * 0.05)
    log = []
    steps_per_epoch = min(len(w_split), len(a_split)) // s.batch_size + 1
    if s.limit_batches:
        steps_per_epoch = min(steps_per_epoch, s.limit_batches)
    with progress.task(f"search lambda={lam}", s.epochs) as bar:
        for epoch in range(s.epochs):
            t0 = time.time()
            model.train()
            w_batches = w_split.batches(s.batch_size, True, cfg.seed, epoch)
            a_batches = a_split.batches(s.batch_size, True, cfg.seed + 1, epoch)
            tot = torch.zeros((), dtype=torch.float64, device=device)  # read once per epoch: no sync per step
            for step, ((xw, yw, pw), (xa, ya, pa)) in enumerate(zip(w_batches, a_batches, strict=False)):
                if step >= steps_per_epoch:
                    break
                trn = (xw.to(device), yw.to(device), pw, "w")
                if epoch >= s.warmup_epochs:
                    architect.step(trn, (xa.to(device), ya.to(device), pa, "a"))
                w_opt.zero_grad(set_to_none=True)
                loss = loss_fn(trn)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
                w_opt.step()
                tot += loss.detach().double()
            sched.step()
            entry = {
                "epoch": epoch,
                "loss": round(float(tot) / max(1, step + 1), 5),
                "expected_cost": round(penalty().item(), 6),
                "val_acc": round(accuracy(model, val_split, env.eval_batch_size(device), device, VAL_SAMPLES), 5),
                "seconds": round(time.time() - t0, 3),
                "weights_normal": _mean_weights(model.alphas_normal),
                "weights_reduce": _mean_weights(model.alphas_reduce),
            }
            check_finite(entry, f"search lambda={lam}", epoch)
            log.append(entry)
            bar.advance(info=f"cost={entry['expected_cost']:.3f} val_acc={entry['val_acc']:.3f}")
    info = {
        "lambda": lam,
        "cost": s.cost,
        "latency_table": latency_source,
        "alpha_kd": s.alpha_kd,
        "epochs": s.epochs,
        "seed": cfg.seed,
        "expected_cost": log[-1]["expected_cost"] if log else None,
        "max_skip": s.max_skip,
        "second_order": s.second_order,
        "partial_channels": s.partial_channels,
        "teacher": teacher.identity() if teacher is not None else None,
        "alphas_normal": model.alphas_normal.detach().cpu().tolist(),
        "alphas_reduce": model.alphas_reduce.detach().cpu().tolist(),
    }
    genotype = derive(model, s.max_skip, {k: v.cpu() for k, v in tables.items()}, reductions, info)
    if s.derive_max_params is not None:
        genotype = widest_within(genotype, s.derive_max_params)
    elif s.derive_channels is not None and s.derive_channels != s.init_channels:
        genotype = widen(genotype, s.derive_channels)
    return genotype, log


def _mean_weights(alphas: torch.Tensor) -> dict[str, float]:
    w = F.softmax(alphas.detach().float(), -1).mean(0)
    return {op: round(float(v), 5) for op, v in zip(PRIMITIVES, w, strict=True)}


def plot_weights(log: list[dict], path: Path) -> None:
    """How the mean architecture weight of each operation evolved (normal and reduction cells)."""
    from rkd_edge.evaluate.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    epochs = [e["epoch"] for e in log]
    for ax, key in zip(axes, ("weights_normal", "weights_reduce"), strict=True):
        for op in PRIMITIVES:
            ax.plot(epochs, [e[key][op] for e in log], label=op, marker="." if "conv" in op or "inv" in op else None)
        ax.set_title(key.replace("weights_", "") + " cell")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean softmax(alpha) over edges")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    save_figure(plt, fig, path)
