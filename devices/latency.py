"""The latency measurement protocol of DESIGN.md section 6 (torch-free): the one timing protocol of the
codebase, used by ``rkd-edge bench``, the benchmark scripts and the search's latency table.

Time-based warm-up, then at least ``min_seconds`` or ``min_iterations`` (whichever is longer), and the
summary statistics every result reports. How one call is timed is a :class:`Timer`: wall clock on the host
by default; a runner that owns a CUDA stream supplies one that reads CUDA events instead (GPU time).

Interleaving makes the ratios between variants of one run trustworthy; it cannot make two runs agree when
the machine itself changes speed (a VM whose host gets busy, a CPU that throttles). :func:`interleaved`
therefore can time a fixed :func:`reference_kernel` in every round beside the variants: its p50 is the
machine's speed during that run, its per-round spread says whether the speed moved during the run, and a
variant's p50 divided by it compares across runs on one machine.
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

REFERENCE = "machine-reference"
REFERENCE_KERNEL = "numpy: tanh, multiply and sum over 32,768 float32, 4 times, one thread"


def reference_kernel() -> Callable[[], object]:
    """A fixed CPU workload of about 0.2 ms (:data:`REFERENCE_KERNEL`): elementwise numpy, which never
    spawns threads, so its time depends on this core's speed and nothing else.

    Returns:
        One call of the kernel; its inputs are fixed (seed 0), so every run does the same work.
    """
    x = np.random.default_rng(0).standard_normal(32768).astype(np.float32)
    y = np.empty_like(x)

    def kernel() -> float:
        total = 0.0
        for _ in range(4):
            np.tanh(x, out=y)
            np.multiply(y, x, out=y)
            total += float(y.sum())
        return total

    return kernel


def drift(round_p50_ms: list[float]) -> float:
    """How much a variant's speed moved during a run: ``(p90 - p10) / median`` of its per-round p50s (a
    lasting change of speed counts, a one-round blip does not)."""
    r = np.asarray(round_p50_ms, dtype=np.float64)
    if not r.size:
        return 0.0
    p10, p50, p90 = np.percentile(r, [10, 50, 90])
    return float((p90 - p10) / p50)


def cpu_times() -> list[int] | None:
    """The aggregate ``cpu`` line of ``/proc/stat`` (user nice system idle iowait irq softirq steal, in
    clock ticks); ``None`` where there is none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:
        return None
    return [int(v) for v in first[1:9]] if first and first[0] == "cpu" and len(first) >= 9 else None


def steal_fraction(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two :func:`cpu_times` readings (the
    ``steal`` column): on a shared VM, the usual cause of a run that is slower as a whole."""
    if not before or not after:
        return None
    delta = [a - b for a, b in zip(after, before, strict=True)]
    return round(delta[7] / sum(delta), 4) if sum(delta) > 0 else 0.0


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


def _slot(
    fn: Callable[[], object],
    timer: Timer,
    seconds: float,
    min_calls: int,
    into: list[float],
    windows: list[tuple[float, float]],
) -> float:
    """Time ``fn`` for ``seconds`` (and at least ``min_calls`` calls), appending each call's time to ``into``
    and the slot's ``(start, end)`` on :func:`time.perf_counter` to ``windows``; the slot's p50."""
    start, t0 = len(into), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end or len(into) - start < min_calls:
        into.append(timer.time(fn))
    windows.append((t0, time.perf_counter()))
    return float(np.median(into[start:]))


def interleaved(
    fns: dict[Hashable, Callable[[], object]],
    batch: int | dict[Hashable, int],
    rounds: int = 10,
    per_round_s: float = 1.0,
    warmup_s: float = 1.0,
    timers: dict[Hashable, Timer] | None = None,
    min_per_round: int = 1,
    reference: bool = False,
) -> dict[Hashable, dict]:
    """Measure several variants side by side: rounds alternate between them so that machine noise hits
    all alike; returns each variant's summary (ratios between them are what to compare) with its p50 per
    round (``round_p50_ms``) and its timed slots (``windows_s``: ``(start, end)`` on
    :func:`time.perf_counter`, to line power samples up with).

    Args:
        fns: Variant name -> one inference.
        batch: Samples per call, one for all variants or per variant name.
        rounds: Rounds; each runs every variant for ``per_round_s`` seconds in turn.
        warmup_s: Untimed seconds per variant before the first round.
        timers: Per-variant :class:`Timer` (missing ones use the host clock).
        min_per_round: Timed calls per variant and round even past ``per_round_s`` (slow variants).
        reference: Also time :func:`reference_kernel` for a fifth of ``per_round_s`` right before every
            variant's turn: each variant then has ``round_reference_p50_ms`` (the machine's speed next to
            each of its rounds) and ``p50_per_reference`` (the median over rounds of its p50 over that, a
            latency in units of the machine's speed at the time), and the kernel's own summary comes back
            under :data:`REFERENCE` (``batch`` 1).
    """
    timers = timers or {}
    if reference and REFERENCE in fns:
        raise ValueError(f"a variant may not be called {REFERENCE!r}")
    kernel = reference_kernel() if reference else None
    for fn in [*fns.values(), *([kernel] if kernel else [])]:
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            fn()
    times: dict[Hashable, list[float]] = {k: [] for k in fns}
    round_p50: dict[Hashable, list[float]] = {k: [] for k in fns}
    ref_times: list[float] = []
    ref_p50: dict[Hashable, list[float]] = {k: [] for k in fns}
    windows: dict[Hashable, list[tuple[float, float]]] = {k: [] for k in [*fns, REFERENCE]}
    for _ in range(rounds):
        for name, fn in fns.items():
            if kernel:
                ref_p50[name].append(_slot(kernel, HOST, per_round_s / 5, 1, ref_times, windows[REFERENCE]))
            timer = timers.get(name, HOST)
            round_p50[name].append(_slot(fn, timer, per_round_s, min_per_round, times[name], windows[name]))
    out = {}
    for k, v in times.items():
        out[k] = {
            **summarize(v, batch[k] if isinstance(batch, dict) else batch),
            "round_p50_ms": round_p50[k],
            "windows_s": windows[k],
        }
        if kernel:
            out[k]["round_reference_p50_ms"] = ref_p50[k]
            out[k]["p50_per_reference"] = float(np.median(np.divide(round_p50[k], ref_p50[k])))
    if kernel:
        by_round = [float(np.median([ref_p50[k][r] for k in fns])) for r in range(rounds)]
        out[REFERENCE] = {**summarize(ref_times, 1), "round_p50_ms": by_round, "windows_s": windows[REFERENCE]}
    return out
