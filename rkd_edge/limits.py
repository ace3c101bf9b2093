"""Bounds on numbers a user gives, shared by the config, the link, the bench and the runtime (torch-free).

One place, so that ``evaluate --snr``, ``tx --snr-db``, ``rx --snr-db``, ``bench --snr-db`` and a frame's
header field refuse the same values with the same words.
"""

from __future__ import annotations

import math

from rkd_edge.errors import UserError

# |SNR| beyond 100 dB is a typo, not a channel: 10**10 in linear power, and float32 noise of 0 or inf.
SNR_LIMIT_DB = 100.0
# Images per model call in a measurement or estimate: beyond this a batch is a typo (and its buffers would
# not fit in a Jetson's memory, or this machine's).
MAX_BATCH = 1 << 16
# Intra-op threads: past this, a count starts threads that only contend (no board has this many cores).
MAX_THREADS = 256
# Image side in pixels (data.image_size, a genotype's and a manifest's): below 4 the stem has nothing to
# reduce, beyond 1024 an edge encoder's input is a typo (and each image a few MB).
IMAGE_SIZE_RANGE = (4, 1024)
# Parameters of any one network rkd-edge trains: 0.4 GB of float32 weights, 1.6 GB with AdamW's state and
# the gradients, far beyond an edge encoder or codec (the quickstart's whole system has about 50 k).
MAX_PARAMS = 100_000_000
# Complex symbols per image (codec.max_symbols, --symbols): 64x a quickstart's 16 features, and well inside
# the wire's 16-bit k.
MAX_SYMBOLS = 4096
# Passes over the test split in one evaluation (channels x SNRs x lengths x trials): the defaults make a few
# hundred; beyond this an evaluation runs for days on a CPU.
MAX_EVAL_PASSES = 100_000
# A duration past a day (a bench's timed seconds per variant, its warm-up) is a typo, not a measurement.
MAX_SECONDS = 86_400.0
# DESIGN.md section 5: INT8 calibration takes at least this many real samples per model unless the user
# lowers the floor (--calib-min).
MIN_CALIB_SAMPLES = 128
# prune --round-to: each layer keeps a multiple of ROUND_TO channels by default. An encoder pruned to odd
# widths (11, 5, 22 channels) ran 1.5-2.7x slower than the unpruned one in ONNX Runtime's CPU kernels, and
# about as fast as it rounded to multiples of 4 or 8 (benchmarks/results/prune_speed.md); TensorRT's FP16
# Tensor Core formats take channels in multiples of 8.
ROUND_TO = 8
MAX_ROUND_TO = 256


def is_whole(value) -> bool:
    """Whether ``value`` is an int and not a bool (JSON ``true`` reads as one, and ``True == 1``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def snr_in_range(value: float) -> bool:
    """Whether ``value`` (dB) is a finite SNR within +-:data:`SNR_LIMIT_DB`."""
    return isinstance(value, int | float) and math.isfinite(value) and abs(value) <= SNR_LIMIT_DB


def check_eval_passes(channels: int, snrs: int, lengths: int, trials: int, where: str) -> None:
    """Refuse an evaluation grid of more than :data:`MAX_EVAL_PASSES` passes over the test split."""
    passes = channels * snrs * lengths * trials
    if passes > MAX_EVAL_PASSES:
        raise UserError(
            f"{where}: {channels} channel(s) x {snrs} SNR(s) x {lengths} length(s) x {trials} trial(s) is {passes:,} "
            f"passes over the test split, more than {MAX_EVAL_PASSES:,} (days of work); narrow the grid"
        )


def check_snr_db(value: float, option: str) -> float:
    """``value`` (dB, Es/N0) if it is a finite SNR within +-:data:`SNR_LIMIT_DB`, else one line naming ``option``."""
    if not snr_in_range(value):
        raise UserError(f"{option} is a finite SNR from {-SNR_LIMIT_DB:g} to {SNR_LIMIT_DB:g} dB, got {value!r}")
    return float(value)


def check_threads(value: int, option: str = "--threads") -> int:
    """``value`` if it is 0 (the back end's choice) or a count up to :data:`MAX_THREADS`, else one line."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise UserError(f"{option} is 0 (the back end's choice) or a thread count up to {MAX_THREADS}, got {value!r}")
    return value


def check_seconds(value: float, option: str, *, positive: bool = True) -> float:
    """``value`` if it is a number of seconds above 0 (at least 0 with ``positive=False``) up to a day."""
    ok = isinstance(value, int | float) and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok or value > MAX_SECONDS:
        bound = "above 0" if positive else "from 0"
        raise UserError(f"{option} is a number of seconds {bound} up to {MAX_SECONDS:,.0f} (a day), got {value!r}")
    return float(value)


def check_batches(values: list[int] | tuple[int, ...], option: str = "--batch") -> list[int]:
    """``values`` if there is at least one and each is from 1 to :data:`MAX_BATCH`, else one line."""
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_BATCH for v in values):
        raise UserError(f"{option} takes batch sizes from 1 to {MAX_BATCH}, e.g. 1,32; got {list(values)}")
    return list(values)


def check_batch(value: int, option: str = "--batch") -> int:
    """``value`` if it is one batch size from 1 to :data:`MAX_BATCH`, else one line."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise UserError(f"{option} is one batch size from 1 to {MAX_BATCH}, e.g. 32; got {value!r}")
    return value
