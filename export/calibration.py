"""Real calibration data: dataset images for the encoder, real encoder outputs at a spread of SNRs and
lengths for tx, and real tx outputs through simulated channels for rx."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from rkd_edge.channel import create_channel
from rkd_edge.channel_ids import channel_id
from rkd_edge.config import CodecConfig
from rkd_edge.data import Split
from rkd_edge.data.splits import hash_seed
from rkd_edge.errors import UserError
from rkd_edge.limits import MIN_CALIB_SAMPLES

MIN_SAMPLES = MIN_CALIB_SAMPLES
DEFAULT_SAMPLES = 256  # asked for when --calib-samples is not given (the whole split where it is smaller)


def check_count(count: int | None, minimum: int = MIN_SAMPLES, available: int | None = None) -> None:
    """Refuse a calibration set smaller than ``minimum`` real samples, or larger than the split (one line,
    exit code 2).

    Args:
        count: Samples asked for (``--calib-samples``; ``None``: the default).
        minimum: The floor (``--calib-min``; 128 unless lowered explicitly).
        available: Real samples the split holds, where known.
    """
    if count is not None and count < 1:
        raise UserError(f"--calib-samples must be at least 1 real sample, got {count}")
    if minimum < 1:
        raise UserError(f"--calib-min must be at least 1, got {minimum}")
    if count is None and available is None:  # the default is settled against the split (build_feeds)
        return
    if count is not None and available is not None and count > available:  # taken quietly as `available` before
        raise UserError(
            f"--calib-samples {count} is more than the {available} images of the training split; give at most "
            f"{available}"
        )
    if available is not None and available < minimum:
        raise UserError(
            f"the training split has only {available} images, fewer than the {minimum} calibration samples "
            f"required; lower the floor explicitly with --calib-min {available}"
        )
    count = default_count(count, available)
    if count < minimum:
        raise UserError(
            f"--calib-samples {count} is below the floor of {minimum} real samples; raise it, or lower the "
            f"floor explicitly with --calib-min {count}"
        )


def default_count(count: int | None, available: int | None = None) -> int:
    """The samples a calibration takes: ``count``, or by default :data:`DEFAULT_SAMPLES` (at most the split)."""
    if count is not None:
        return count
    return DEFAULT_SAMPLES if available is None else min(DEFAULT_SAMPLES, available)


@torch.no_grad()
def build_feeds(
    system,
    split: Split,
    count: int | None,
    seed: int,
    cc: CodecConfig,
    snrs=(-10.0, -5.0, 0.0, 5.0, 10.0, 20.0),
    channels=("awgn", "rayleigh"),
    uses_csi: bool = False,
    minimum: int = MIN_SAMPLES,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """``{model: [feed dict, ...]}`` of ``count`` real samples each, in batches of up to 32.

    Raises:
        UserError: Fewer than ``minimum`` real samples asked for or available in ``split``.
    """
    check_count(count, minimum, len(split))
    count = default_count(count, len(split))
    system.eval()
    g = torch.Generator().manual_seed(hash_seed(seed, "calibration"))
    pos = np.sort(torch.randperm(len(split), generator=g)[:count].numpy())
    images = split.transform(split.images[pos])
    ks = system.codec.symbol_set
    feeds: dict[str, list] = {"encoder": [], "tx": [], "rx": []}
    for start in range(0, len(images), 32):
        x = images[start : start + 32]
        n = len(x)
        f = system.encoder(x)
        snr = torch.tensor([snrs[(start + i) % len(snrs)] for i in range(n)], dtype=torch.float32)
        k = torch.tensor([ks[(start + i) % len(ks)] for i in range(n)], dtype=torch.long)
        name = channels[(start // 32) % len(channels)]
        ctype = torch.full((n,), channel_id(name), dtype=torch.long)
        sym, mask = system.codec.tx(f, snr, k, ctype)
        out = create_channel(name, **cc.channel_kwargs())(sym, snr, mask, g)
        feeds["encoder"].append({"image": x.numpy()})
        feeds["tx"].append({"features": f.numpy(), "snr_db": snr.numpy(), "k": k.numpy(), "channel": ctype.numpy()})
        rx = {"symbols": out.y.numpy(), "mask": mask.numpy(), "snr_db": snr.numpy(), "channel": ctype.numpy()}
        if uses_csi:
            rx["csi"] = out.csi.numpy()
        feeds["rx"].append(rx)
    return feeds


def feeds_digest(feeds: list[dict[str, np.ndarray]]) -> str:
    """sha256 over every array of a calibration set, in order (recorded in the manifest)."""
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            h.update(name.encode())
            h.update(np.ascontiguousarray(feed[name]).tobytes())
    return h.hexdigest()


def feeds_count(feeds: list[dict[str, np.ndarray]]) -> int:
    """Samples in a calibration set (the first input's batch sizes summed)."""
    return sum(len(next(iter(f.values()))) for f in feeds)
