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
from rkd_edge.config import LOSS_TERMS, CodecConfig, StageConfig, augmenting
from rkd_edge.data import DataSplits, Split
from rkd_edge.data.splits import hash_seed
from rkd_edge.distill import ddp
from rkd_edge.distill.graphs import graphed, use_graphs
from rkd_edge.distill.loop import autocast, fit, make_optimizer
from rkd_edge.distill.losses import feature_regression, kd_kl, weighted_sum
from rkd_edge.env import eval_batch_size
from rkd_edge.errors import UserError
from rkd_edge.system import SemanticSystem
from rkd_edge.teachers.cache import TeacherCache


class TeacherSource:
    """Teacher outputs for a batch: from the cache (deterministic transforms) or computed online.

    Cached outputs are moved to ``device`` once and indexed there with the batch positions (which a
    device view of the split yields on the device): no host copy per step.
    """

    def __init__(self, teacher, split: Split, cache: TeacherCache | None, online: bool, device: str) -> None:
        self.teacher, self.online, self.device = teacher, online or cache is None, device
        if teacher is not None and not self.online:
            self.emb, self.logits = (t.to(device) for t in cache.outputs(teacher, split, device))

    def __call__(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Args: x: ``[B, C, H, W]`` batch on the device. pos: ``int64 [B]`` positions in the split."""
        if self.teacher is None:
            return None
        if self.online:
            with torch.no_grad():
                return self.teacher(x)
        pos = pos.to(self.emb.device)
        return self.emb[pos], self.logits[pos]


def build_channels(names: list[str], cc: CodecConfig) -> list:
    return [create_channel(n, **cc.channel_kwargs()) for n in names]


def draw_conditions(
    n: int, sc: StageConfig, symbol_set: list[int] | torch.Tensor, epoch: int, g: torch.Generator, n_channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample conditions, drawn on the generator's device (where the batch is).

    Returns:
        ``snr [n] float32`` dB (uniform in the range, or the epoch's fixed value), ``idx [n] int64`` channel
        index and ``ks [n] int64`` symbols, all on ``g.device``.
    """
    dev = g.device
    if sc.snr_schedule:
        snr = torch.full((n,), float(sc.snr_schedule[epoch % len(sc.snr_schedule)]), device=dev)
    else:
        lo, hi = sc.snr_db
        snr = lo + (hi - lo) * torch.rand(n, generator=g, device=dev)
    idx = torch.randint(0, n_channels, (n,), generator=g, device=dev)
    symbols = torch.as_tensor(symbol_set, device=dev)
    ks = symbols[torch.randint(0, len(symbols), (n,), generator=g, device=dev)]
    return snr, idx, ks


def stage_losses(out: dict, y: torch.Tensor, t_out, sc: StageConfig) -> dict[str, torch.Tensor]:
    """Every loss term a stage may weight (``sc.losses`` picks and weights them).

    Args:
        out: The system's outputs: ``logits [B, C]``, ``projected [B, D]`` (student features in the teacher's
            width), and with a codec ``f [B, F]``, ``f_hat [B, F]`` (features before and after the link).
        y: ``[B]`` int64 labels.
        t_out: The teacher's ``(embedding [B, D], logits [B, C])``, or None without a teacher.
        sc: The stage's settings (the distillation temperature).

    Returns:
        ``{name: scalar}``: ``ce``, and ``kd``/``feat`` with a teacher, ``recon`` with a codec.
    """
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
    takes its share of every batch and DDP averages the gradients. ``augment`` is ``data.augment``; the
    stage's own ``sc.augment`` overrides it where set.
    """
    unknown = set(sc.losses) - set(LOSS_TERMS)
    if unknown:  # validate() checks configs; a StageConfig built in code arrives here unchecked
        raise UserError(f"stage {name}: unknown loss {sorted(unknown)[0]!r}; use {', '.join(LOSS_TERMS)}")
    robust = codec_cfg is not None
    system.to(device)
    system.set_trainable(sc.train)
    model = ddp.wrap(system, device)
    rank, world = ddp.world()
    use_graph = use_graphs(sc.cuda_graph, device, world)
    opt, sched = make_optimizer(system.parameters(), sc.lr, sc.weight_decay, sc.epochs, capturable=use_graph)
    augment = augmenting(sc.augment, augment)
    teach = TeacherSource(teacher, splits.train, cache, augment, device)
    channels = build_channels(sc.channels, codec_cfg) if robust else None
    symbol_set = torch.tensor(system.codec.symbol_set, device=device) if robust else None
    train_split = splits.train.on(device)
    trainable = [p for p in system.parameters() if p.requires_grad]

    # lengths "all": every sample through every k each step, copy-major ([k1] * B, [k2] * B, ...).
    copies = len(symbol_set) if robust and sc.lengths == "all" else 1

    def forward(x, epoch, g):
        if not robust:
            return model(x)
        snr, idx, ks = draw_conditions(len(x) * copies, sc, symbol_set, epoch, g, len(channels))
        if copies > 1:
            ks = symbol_set.repeat_interleave(len(x))
        return model(x, channels, snr, ks, idx, generator=g, copies=copies)

    def targets(x, y, pos):
        t_out = teach(x, pos)
        if copies == 1:
            return y, t_out
        return y.repeat(copies), None if t_out is None else tuple(t.repeat(copies, 1) for t in t_out)

    def run_epoch(epoch: int) -> dict:
        model.train()
        # Noise and conditions come from a generator on the device of the batch: the same seed gives the
        # same run on the same device type (CPU and CUDA streams differ).
        g = torch.Generator(device=device).manual_seed(hash_seed(seed, name, "noise", epoch, rank))
        # The loss is summed on the device in float64 (the sum a Python float made before) and read once
        # per epoch: no host synchronisation inside the step loop.
        total, n = torch.zeros((), dtype=torch.float64, device=device), 0

        def step(x: torch.Tensor, y: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            with autocast(device, sc.amp):
                out = forward(x, epoch, g)
                loss = weighted_sum(stage_losses(out, *targets(x, y, pos), sc), sc.losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 5.0)
            opt.step()
            return loss.detach()

        # One graph per epoch: the learning rate and an epoch's fixed SNR are frozen into it.
        train_step = graphed(step, use_graph, (g,))
        batches = train_split.batches(batch_size, True, seed, epoch, augment, rank, world)
        for b, (x, y, pos) in enumerate(batches):
            if sc.limit_batches and b >= sc.limit_batches:
                break
            x, y = x.to(device), y.to(device)
            total += train_step(x, y, pos).double() * len(y)
            n += len(y)
        return {
            "loss": ddp.all_mean(float(total) / max(n, 1)),
            "val_acc": validate(system, splits.val, device, seed, sc, channels),
        }

    return fit(system, opt, sc.epochs, run_epoch, checkpoint, sched, desc=name, select="val_acc")


# A robust stage is validated at this many SNRs across its training range (ends included), on the first
# VAL_SAMPLES images of the validation split (a random sample of it): about 50k codec passes per epoch.
VAL_SNR_POINTS = 3
VAL_SAMPLES = 2048


@torch.no_grad()
def validate(
    system: SemanticSystem,
    split: Split,
    device: str,
    seed: int,
    sc: StageConfig | None = None,
    channels: list | None = None,
) -> float:
    """Clean accuracy; for a robust stage (``channels`` given) the mean accuracy over the conditions it
    trains for: each of its channels, :data:`VAL_SNR_POINTS` SNRs spread over ``sc.snr_db`` (ends
    included) and every k of the codec, on :data:`VAL_SAMPLES` images. (At 0 and 10 dB AWGN, largest k,
    every epoch scored within noise of the others and the pick of the best epoch was a coin toss.)

    The encoder runs once per batch and its features go through every condition (``copies``); the noise
    generator is seeded the same way every epoch, so epochs are compared on the same draws.
    """
    system.eval()
    view, bs = split.on(device), eval_batch_size(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    if channels is None:
        for x, y, _ in view.batches(bs):
            correct += (system(x.to(device))["logits"].argmax(-1) == y.to(device)).sum()
        return int(correct) / max(1, len(split))
    # Every (SNR, channel) pair, SNR-major: the copies of one pass.
    snrs = torch.linspace(*sc.snr_db, VAL_SNR_POINTS, device=device)
    cond_snr = snrs.repeat_interleave(len(channels))
    cond_idx = torch.arange(len(channels), device=device).repeat(VAL_SNR_POINTS)
    copies = len(cond_snr)
    g = torch.Generator(device=device).manual_seed(hash_seed(seed, "val"))
    for k in system.codec.symbol_set:  # one k per pass
        for x, y, _ in view.batches(bs, limit=VAL_SAMPLES):
            n = len(y)
            out = system(
                x.to(device),
                channels,
                cond_snr.repeat_interleave(n),
                torch.full((n * copies,), k, device=device),
                cond_idx.repeat_interleave(n),
                generator=g,
                copies=copies,
            )
            correct += (out["logits"].argmax(-1) == y.to(device).repeat(copies)).sum()
    points = copies * len(system.codec.symbol_set)
    return int(correct) / max(1, min(len(split), VAL_SAMPLES) * points)
