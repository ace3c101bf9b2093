"""The latency measurement protocol of DESIGN.md section 6 (torch-free): the one timing protocol of the
codebase, used by ``rkd-edge bench``, the benchmark scripts and the search's latency table.

Time-based warm-up, then at least ``min_seconds`` or ``min_iterations`` (whichever is longer), and the
summary statistics every result reports. How one call is timed is a :class:`Timer`: wall clock on the host
by default; a runner that owns a CUDA stream supplies one that reads CUDA events instead (GPU time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Protocol

import numpy as np


class Timer(Protocol):
    """Times one call. ``name`` goes into results (``host``, ``cuda-events``)."""

    name: str

    def time(self, fn: Callable[[], object]) -> float:
        """Run ``fn`` once; return its duration in milliseconds."""
        ...


class HostTimer:
    """Wall-clock duration of one synchronous call (``time.perf_counter``)."""

    name = "host"

    def time(self, fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


HOST = HostTimer()


def summarize(times_ms: list[float], batch: int) -> dict:
    """mean, p50, p90, p95, p99, max (ms per call) and throughput (samples/s)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings to summarize")
    pct = np.percentile(t, [50, 90, 95, 99])
    return {
        "iterations": int(t.size),
        "batch": batch,
        "mean_ms": float(t.mean()),
        "p50_ms": float(pct[0]),
        "p90_ms": float(pct[1]),
        "p95_ms": float(pct[2]),
        "p99_ms": float(pct[3]),
        "max_ms": float(t.max()),
        "throughput_per_s": float(batch * 1000.0 / t.mean()),
    }


def measure(
    fn: Callable[[], object],
    batch: int,
    warmup_s: float = 1.0,
    min_seconds: float = 10.0,
    min_iterations: int = 1000,
    max_seconds: float | None = None,
    timer: Timer | None = None,
) -> dict:
    """Time ``fn`` (one inference of ``batch`` samples) by the protocol; returns :func:`summarize`.

    Args:
        warmup_s: Seconds of untimed calls first.
        min_seconds: Keep timing at least this long ...
        min_iterations: ... and at least this many calls.
        max_seconds: Hard cap (benchmarks on shared 2-core machines); ``None`` for none.
        timer: How one call is timed (default: host wall clock).
    """
    timer = timer or HOST
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        fn()
    times = []
    start = time.perf_counter()
    while True:
        times.append(timer.time(fn))
        elapsed = time.perf_counter() - start
        if (elapsed >= min_seconds and len(times) >= min_iterations) or (max_seconds and elapsed >= max_seconds):
            break
    return summarize(times, batch)


def interleaved(
    fns: dict[Hashable, Callable[[], object]],
    batch: int | dict[Hashable, int],
    rounds: int = 10,
    per_round_s: float = 1.0,
    warmup_s: float = 1.0,
    timers: dict[Hashable, Timer] | None = None,
    min_per_round: int = 1,
) -> dict[Hashable, dict]:
    """Measure several variants side by side: rounds alternate between them so that machine noise hits
    all alike; returns each variant's summary (ratios between them are what to compare).

    Args:
        fns: Variant name -> one inference.
        batch: Samples per call, one for all variants or per variant name.
        rounds: Rounds; each runs every variant for ``per_round_s`` seconds in turn.
        warmup_s: Untimed seconds per variant before the first round.
        timers: Per-variant :class:`Timer` (missing ones use the host clock).
        min_per_round: Timed calls per variant and round even past ``per_round_s`` (slow variants).
    """
    timers = timers or {}
    for fn in fns.values():
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            fn()
    times: dict[Hashable, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            timer = timers.get(name, HOST)
            end = time.perf_counter() + per_round_s
            n = 0
            while time.perf_counter() < end or n < min_per_round:
                times[name].append(timer.time(fn))
                n += 1
    return {k: summarize(v, batch[k] if isinstance(batch, dict) else batch) for k, v in times.items()}
