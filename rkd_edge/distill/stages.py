"""Training stages declared as data (:class:`~rkd_edge.config.StageConfig`) and the one loop that runs them.

Stage 1 (clean): ``ce`` task loss, ``kd`` logit distillation, ``feat`` embedding regression.
Stage 2 (robust): the same through codec and channel, SNR / channel type / length drawn per sample,
plus ``recon`` (restored features toward the clean student features).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from rkd_edge.channel import create_channel
from rkd_edge.config import CodecConfig, StageConfig
from rkd_edge.data import DataSplits, Split
from rkd_edge.data.splits import hash_seed
from rkd_edge.distill import ddp
from rkd_edge.distill.loop import fit, make_optimizer
from rkd_edge.distill.losses import feature_regression, kd_kl, weighted_sum
from rkd_edge.system import SemanticSystem
from rkd_edge.teachers.cache import TeacherCache

LOSS_TERMS = ("ce", "kd", "feat", "recon")


class TeacherSource:
    """Teacher outputs for a batch: from the cache (deterministic transforms) or computed online."""

    def __init__(self, teacher, split: Split, cache: TeacherCache | None, online: bool, device: str) -> None:
        self.teacher, self.online, self.device = teacher, online or cache is None, device
        if teacher is not None and not self.online:
            self.emb, self.logits = cache.outputs(teacher, split, device)

    def __call__(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.teacher is None:
            return None
        if self.online:
            with torch.no_grad():
                return self.teacher(x)
        return self.emb[pos].to(self.device), self.logits[pos].to(self.device)


def build_channels(names: list[str], cc: CodecConfig) -> list:
    return [create_channel(n, mode=cc.rayleigh_mode, csi=cc.csi, k_factor=cc.rician_k) for n in names]


def draw_conditions(
    n: int, sc: StageConfig, symbol_set: list[int], epoch: int, g: torch.Generator, n_channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample SNR (dB, uniform in the range or the epoch's fixed value), channel index and length k."""
    if sc.snr_schedule:
        snr = torch.full((n,), float(sc.snr_schedule[epoch % len(sc.snr_schedule)]))
    else:
        lo, hi = sc.snr_db
        snr = lo + (hi - lo) * torch.rand(n, generator=g)
    idx = torch.randint(0, n_channels, (n,), generator=g)
    ks = torch.tensor(symbol_set)[torch.randint(0, len(symbol_set), (n,), generator=g)]
    return snr, idx, ks


def stage_losses(out: dict, y: torch.Tensor, t_out, sc: StageConfig) -> dict[str, torch.Tensor]:
    terms = {"ce": F.cross_entropy(out["logits"], y)}
    if t_out is not None:
        t_emb, t_logits = t_out
        terms["kd"] = kd_kl(out["logits"], t_logits, sc.temperature)
        terms["feat"] = feature_regression(out["projected"], t_emb)
    if "symbols" in out:
        terms["recon"] = F.mse_loss(out["f_hat"], out["f"].detach())
    return terms


def run_stage(
    name: str,
    sc: StageConfig,
    system: SemanticSystem,
    splits: DataSplits,
    teacher,
    cache: TeacherCache | None,
    *,
    seed: int,
    batch_size: int,
    augment: bool,
    device: str,
    codec_cfg: CodecConfig | None = None,
    checkpoint: Path | None = None,
) -> list[dict]:
    """Train the groups ``sc.train`` of ``system`` with ``sc.losses``; everything else stays frozen.

    With a ``codec_cfg`` the stage runs through codec and channels (stage 2). Under torchrun each rank
    takes its share of every batch and DDP averages the gradients.
    """
    unknown = set(sc.losses) - set(LOSS_TERMS)
    if unknown:
        from rkd_edge.errors import UserError

        raise UserError(f"stage {name}: unknown loss {sorted(unknown)[0]!r}; use {', '.join(LOSS_TERMS)}")
    robust = codec_cfg is not None
    system.to(device)
    system.set_trainable(sc.train)
    model = ddp.wrap(system, device)
    rank, world = ddp.world()
    opt, sched = make_optimizer(system.parameters(), sc.lr, sc.weight_decay, sc.epochs)
    teach = TeacherSource(teacher, splits.train, cache, augment, device)
    channels = build_channels(sc.channels, codec_cfg) if robust else None
    symbol_set = system.codec.symbol_set if robust else []

    def forward(x, epoch, g):
        if not robust:
            out = model(x)
        else:
            snr, idx, ks = draw_conditions(len(x), sc, symbol_set, epoch, g, len(channels))
            out = model(x, channels, snr.to(device), ks.to(device), idx.to(device), generator=g)
        return out

    def run_epoch(epoch: int) -> dict:
        model.train()
        g = torch.Generator(device=device).manual_seed(hash_seed(seed, name, "noise", epoch, rank))
        total, n = 0.0, 0
        for b, (x, y, pos) in enumerate(splits.train.batches(batch_size, True, seed, epoch, augment, rank, world)):
            if sc.limit_batches and b >= sc.limit_batches:
                break
            x, y = x.to(device), y.to(device)
            out = forward(x, epoch, g)
            loss = weighted_sum(stage_losses(out, y, teach(x, pos), sc), sc.losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in system.parameters() if p.requires_grad], 5.0)
            opt.step()
            total, n = total + loss.item() * len(y), n + len(y)
        return {
            "loss": ddp.all_mean(total / max(n, 1)),
            "val_acc": validate(system, splits.val, device, robust, seed, codec_cfg),
        }

    return fit(system, opt, sc.epochs, run_epoch, checkpoint, sched, desc=name, select="val_acc")


@torch.no_grad()
def validate(
    system: SemanticSystem, split: Split, device: str, robust: bool, seed: int, codec_cfg: CodecConfig | None
) -> float:
    """Clean accuracy, or for robust stages the mean accuracy at 0 and 10 dB AWGN, largest k."""
    system.eval()
    if not robust:
        correct = sum(
            int((system(x.to(device))["logits"].argmax(-1).cpu() == y).sum()) for x, y, _ in split.batches(256)
        )
        return correct / max(1, len(split))
    awgn = create_channel("awgn")
    accs = []
    for snr in (0.0, 10.0):
        g = torch.Generator(device=device).manual_seed(hash_seed(seed, "val", snr))
        correct = 0
        for x, y, _ in split.batches(256):
            n = len(y)
            out = system(
                x.to(device),
                awgn,
                torch.full((n,), snr, device=device),
                torch.full((n,), system.codec.max_symbols, device=device),
                generator=g,
            )
            correct += int((out["logits"].argmax(-1).cpu() == y).sum())
        accs.append(correct / max(1, len(split)))
    return sum(accs) / len(accs)
