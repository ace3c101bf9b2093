"""Evaluation over channels, SNRs and symbol lengths; every row carries channel, mode, CSI handling, Rician
K, SNR, k and the bandwidth ratio ``k / (C*H*W)``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rkd_edge import progress
from rkd_edge.channel import create_channel
from rkd_edge.channel_ids import channel_id
from rkd_edge.config import CodecConfig, RunConfig
from rkd_edge.data import Split
from rkd_edge.data.splits import hash_seed
from rkd_edge.io import atomic_path, write_json
from rkd_edge.limits import check_eval_passes
from rkd_edge.stats import interval

FIELDS = [
    "method",
    "channel",
    "mode",
    "csi",
    "k_factor",  # Rician K (linear), "-" on other channels
    "snr_db",
    "k",
    "bandwidth_ratio",
    "source_dim",
    "accuracy",
    "ci_low",
    "ci_high",
    "n",
    "trials",
    # The channel type the codec was told: the channel's own, except on the noiseless row (identity channel,
    # the codec told a type it was trained on, and snr_db the SNR it was told, not a channel's).
    "told_channel",
]


def describe(name: str, cc: CodecConfig) -> dict:
    """What a row records of channel ``name`` as ``cc`` sets it up: mode, CSI handling, Rician K ("-" where
    the channel has none)."""
    d = create_channel(name, **cc.channel_kwargs()).describe()
    return {"channel": name, **{key: d.get(key, "-") for key in ("mode", "csi", "k_factor")}}


def make_row(method, name, cc, snr, k, source_dim, per_image: np.ndarray, trials, told: str | None = None) -> dict:
    """One result row; ``per_image: [N] float64`` is each image's accuracy over the ``trials``; ``told`` the
    channel type the codec was conditioned on (default ``name``)."""
    lo, hi = interval(per_image, trials)
    n = len(per_image)
    correct = float(per_image.sum())
    return {
        "method": method,
        **describe(name, cc),
        "snr_db": snr,
        "k": k,
        "bandwidth_ratio": round(k / source_dim, 6),
        "source_dim": source_dim,
        "accuracy": round(correct / max(n, 1), 6),
        "ci_low": round(lo, 6),
        "ci_high": round(hi, 6),
        "n": n,  # images (the independent samples); each seen `trials` times
        "trials": trials,
        "told_channel": told or name,
    }


@dataclass
class Grid:
    """The points of an evaluation: channels, SNRs (dB), lengths k, noise draws per point, seed.

    ``told`` names the channel type the codec is conditioned on when it differs from the channel the
    symbols go through (the noiseless row).
    """

    channels: list[str]
    snrs: list[float]
    ks: list[int]
    trials: int
    seed: int
    told: str | None = None

    def __post_init__(self) -> None:  # every evaluation's grid, however its options came
        check_eval_passes(len(self.channels), len(self.snrs), len(self.ks), self.trials, "the evaluation grid")


def noiseless_grid(cfg: RunConfig, ks: list[int]) -> Grid:
    """The codec's noiseless upper bound: identity channel, the codec told the top of its training SNR
    range on a channel type it was trained on (the identity type's conditioning is never trained)."""
    top = float(max(cfg.stage2.snr_schedule or cfg.stage2.snr_db))
    return Grid(["identity"], [top], [max(ks)], 1, cfg.seed, told=cfg.stage2.channels[0])


def sweep(feats: list, link, grid: Grid, cc: CodecConfig, source_dim: int, method: str) -> list[dict]:
    """The evaluation loop shared by the PyTorch and ONNX Runtime back ends.

    Args:
        feats: ``[(f, y)]`` encoder features of each test batch and their labels (the back end's arrays).
        link: ``link(f, snr, k, name, channel, generator) -> predicted labels [B]``: transmit ``f`` with
            the codec told channel type ``name`` and ``snr`` (dB), send it through ``channel``, decide.

    Noise for (channel, SNR, k, trial) comes from one seeded generator, so both back ends see the same
    noise and their rows compare sample for sample.
    """
    rows = []
    with progress.task(f"evaluate {method}", len(grid.channels) * len(grid.snrs) * len(grid.ks)) as bar:
        for name in grid.channels:
            ch = create_channel(name, **cc.channel_kwargs())
            for snr in grid.snrs:
                for k in grid.ks:
                    hits = 0.0
                    for t in range(grid.trials):
                        g = torch.Generator().manual_seed(hash_seed(grid.seed, "eval", name, snr, k, t))
                        trial = [np.asarray(link(f, float(snr), k, grid.told or name, ch, g) == y) for f, y in feats]
                        hits = hits + np.concatenate(trial).astype(np.float64)
                    per_image = hits / grid.trials
                    rows.append(make_row(method, name, cc, snr, k, source_dim, per_image, grid.trials, grid.told))
                    bar.advance()
    return rows


# Images per noise draw: batches of this size fix which samples share a draw, the same on every back end.
NOISE_BATCH = 512


@torch.no_grad()
def evaluate_torch(
    system,
    split: Split,
    grid: Grid,
    cc: CodecConfig,
    source_dim: int,
    device: str = "cpu",
    method: str = "rkd-sc",
    group: int | None = None,
) -> list[dict]:
    """Accuracy of a trained PyTorch system at every point of ``grid`` (see :func:`sweep`).

    ``group`` batches of :data:`NOISE_BATCH` images go through the codec in one pass (default 1 on the CPU,
    8 on a GPU, where 20 small passes per point cost 20 times the kernel launches); the channel still
    draws its noise batch by batch, in order, so the rows do not depend on it beyond float rounding.
    """
    system.eval()
    # The channel runs on the host with the host generator, so a run evaluates to the same rows on a GPU,
    # on a CPU and through ONNX Runtime.
    feats = [(system.encoder(x.to(device)), y.cpu()) for x, y, _ in split.on(device).batches(NOISE_BATCH)]
    group = group or (1 if device == "cpu" else 8)
    if group > 1:
        feats = [
            (torch.cat([f for f, _ in feats[i : i + group]]), torch.cat([y for _, y in feats[i : i + group]]))
            for i in range(0, len(feats), group)
        ]

    def link(f, snr, k, name, ch, g):
        b = len(f)
        s = torch.full((b,), snr, device=device)
        c = torch.full((b,), channel_id(name), device=device)
        sym, mask = system.codec.tx(f, s, torch.full((b,), k, device=device), c)
        sym_h, s_h, mask_h = sym.cpu(), s.cpu(), mask.cpu()
        outs = [ch(sym_h[i : i + NOISE_BATCH], s_h[i : i + NOISE_BATCH], mask_h[i : i + NOISE_BATCH], g)
                for i in range(0, b, NOISE_BATCH)]  # fmt: skip
        y, csi = (torch.cat([getattr(o, a) for o in outs]).to(device) for a in ("y", "csi"))
        logits = system.classifier(system.codec.rx(y, mask, s, c, csi))
        return logits.argmax(-1).cpu()

    return sweep(feats, link, grid, cc, source_dim, method)


def write_rows(rows: list[dict], out: Path, stem: str = "evaluation") -> None:
    """Write rows as ``stem.csv`` and ``stem.json`` atomically."""
    with atomic_path(out / f"{stem}.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    write_json(out / f"{stem}.json", {"fields": FIELDS, "rows": rows})


def curves(rows: list[dict], k: int) -> dict[str, dict[str, float]]:
    """``{channel: {snr_db: accuracy}}`` at length ``k``."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["k"] == k and r["channel"] != "identity":
            out.setdefault(r["channel"], {})[f"{float(r['snr_db']):g}"] = r["accuracy"]
    return out
