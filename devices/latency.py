"""The latency measurement protocol of DESIGN.md section 6 (torch-free).

Time-based warm-up, then at least ``min_seconds`` or ``min_iterations`` (whichever is longer), and the
summary statistics every result reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


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
) -> dict:
    """Time ``fn`` (one inference of ``batch`` samples) by the protocol; returns :func:`summarize`.

    Args:
        warmup_s: Seconds of untimed calls first.
        min_seconds: Keep timing at least this long ...
        min_iterations: ... and at least this many calls.
        max_seconds: Hard cap (benchmarks on shared 2-core machines); ``None`` for none.
    """
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        fn()
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        elapsed = time.perf_counter() - start
        if (elapsed >= min_seconds and len(times) >= min_iterations) or (max_seconds and elapsed >= max_seconds):
            break
    return summarize(times, batch)


def interleaved(
    fns: dict[str, Callable[[], object]], batch: int, rounds: int = 10, per_round_s: float = 1.0, warmup_s: float = 1.0
) -> dict[str, dict]:
    """Measure several variants side by side: rounds alternate between them so that machine noise hits
    all alike; returns each variant's summary (ratios between them are what to compare)."""
    for fn in fns.values():
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            end = time.perf_counter() + per_round_s
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: summarize(v, batch) for k, v in times.items()}
