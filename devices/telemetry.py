"""Device telemetry (torch-free): tegrastats lines (JetPack 4, 5 and 6 formats) and a background sampler,
/proc/meminfo deltas, /proc/PID/status, jtop where installed, and the energy of timed windows from sampled
power (DESIGN.md section 6)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# re.ASCII: \d is 0-9 only (other scripts' digits are not tegrastats', and int() of some of them fails);
# at most 9 digits (MB, MHz, mW and % all fit): a longer number is no reading, and int() refuses 4,300 digits.
_RAM = re.compile(r"RAM (\d{1,9})/(\d{1,9})MB", re.ASCII)
_SWAP = re.compile(r"SWAP (\d{1,9})/(\d{1,9})MB", re.ASCII)
_CPU = re.compile(r"CPU \[([^\]]*)\]", re.ASCII)
_CORE = re.compile(r"(\d{1,3})%(?:@\d{1,9})?", re.ASCII)
_GR3D = re.compile(r"GR3D_FREQ (\d{1,3})%(?:@\[?(\d{1,9})[^\s]*)?", re.ASCII)
_TEMP = re.compile(r"\b([A-Za-z_0-9]+)@(-?\d{1,4}(?:\.\d{1,6})?)C\b", re.ASCII)
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d{1,9})(?:mW)?/(\d{1,9})(?:mW)?\b", re.ASCII)
# JetPack 5 and 6 prefix each line with the time: "05-15-2025 18:30:28 RAM ...".
_STAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
# Board input rail where the module has one: Orin NX / Orin Nano / Xavier NX (VDD_IN), Nano / TX2 (POM_5V_IN
# on Nano, VDD_IN on TX2). AGX Xavier and AGX Orin report no total rail: there the sum of all rails is the
# total (jetson-stats: https://github.com/rbonghi/jetson_stats/issues/51 for Xavier, and
# https://github.com/rbonghi/jetson_stats/issues/344 for AGX Orin, whose VIN_SYS_5V0 is not the total).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# A sensor that is powered off reads -256 C on Orin (see the AGX Orin sample in tests/test_devices.py).
_OFF_SENSOR_C = -200.0


@dataclass
class TegraSample:
    """One tegrastats line. Power in mW (instantaneous, and the tool's running average)."""

    timestamp: str | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    cpu_load: list[int | None] = field(default_factory=list)  # percent per core, None when off
    gpu_load: int | None = None
    gpu_freq_mhz: int | None = None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def input_power_mw(self) -> int | None:
        """Board input power: the first input rail present, or the sum of all rails (:class:`Rail`)."""
        return Rail.of(self).read(self) if self.rails_mw else None


def parse_tegrastats(line: str) -> TegraSample:
    """Parse one line of ``tegrastats`` output: JetPack 4 (Nano, TX2, Xavier; rails as ``cur/avg`` in mW
    without a unit), JetPack 5 and 6 (time stamp first, rails as ``cur mW/avg mW``, per-GPC GPU frequency
    in brackets, lower-case sensor names).

    A field that is not in the tool's format (a load above 100 %, more RAM used than there is, a core
    reading other than ``N%@MHz`` or ``off``) is left unset rather than read.
    """
    s = TegraSample()
    if m := _STAMP.match(line):
        s.timestamp = m[1]
    if (m := _RAM.search(line)) and int(m[1]) <= int(m[2]):
        s.ram_used_mb, s.ram_total_mb = int(m[1]), int(m[2])
    if m := _SWAP.search(line):
        s.swap_used_mb = int(m[1])
    if (m := _CPU.search(line)) and m[1].strip():
        for core in m[1].split(","):
            load = _CORE.fullmatch(core.strip())
            s.cpu_load.append(int(load[1]) if load and int(load[1]) <= 100 else None)  # None: off or unreadable
    if (m := _GR3D.search(line)) and int(m[1]) <= 100:
        s.gpu_load = int(m[1])
        s.gpu_freq_mhz = int(m[2]) if m[2] else None
    s.temps_c = {k: float(v) for k, v in _TEMP.findall(line) if float(v) > _OFF_SENSOR_C}
    for name, cur, avg in _RAIL.findall(line):
        if name not in ("RAM", "SWAP", "IRAM", "NC"):
            s.rails_mw[name] = (int(cur), int(avg))
    return s


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` to ``{field: kB}`` (MemAvailable, NvMapMemUsed on Jetson, ...)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isascii() and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def peak_rss_kb(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM, kB) of a process from ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("VmHWM not found in /proc status")


def window_energy_j(times_s: list[float], power_mw: list[float], windows: list[tuple[float, float]]) -> float:
    """Energy drawn during ``windows``: power interpolated linearly between samples and integrated over
    each window (trapezoid), so a window shorter than the sampling interval still counts its share.

    Args:
        times_s: ``[n]`` sample times, s (increasing, one clock with ``windows``).
        power_mw: ``[n]`` input-rail power at those times, mW.
        windows: ``(start_s, end_s)`` of each timed slot, inside the sampled span.

    Returns:
        Joules over all windows.

    Raises:
        ValueError: non-finite values, times that go back, fewer than two samples, or a window the samples
            do not cover.
    """
    t, p = np.asarray(times_s, np.float64), np.asarray(power_mw, np.float64)
    w = np.asarray(windows, np.float64).reshape(-1, 2)
    if not (np.isfinite(t).all() and np.isfinite(p).all() and np.isfinite(w).all()):
        raise ValueError("times, power and windows must be finite numbers")
    if t.shape != p.shape or t.size < 2:
        raise ValueError("need at least two power samples, one time per sample")
    if (np.diff(t) < 0).any():
        raise ValueError("power sample times must increase")
    joules = 0.0
    for a, b in w:
        if not t[0] <= a <= b <= t[-1]:
            raise ValueError("the power samples do not cover every timed window")
        xs = np.concatenate([[a], t[(t > a) & (t < b)], [b]])
        ys = np.interp(xs, t, p)
        joules += float(((ys[1:] + ys[:-1]) / 2 * np.diff(xs)).sum()) / 1e3
    return joules


def read_meminfo(path: str | Path = "/proc/meminfo") -> dict[str, int]:
    return parse_meminfo(Path(path).read_text())


def meminfo_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Unified-memory use of a run on Jetson (no NVML there): how much ``MemAvailable`` fell and
    ``NvMapMemUsed`` (GPU allocations through nvmap, Jetson kernels only) rose, in kB."""
    out = {"mem_available_drop_kb": before.get("MemAvailable", 0) - after.get("MemAvailable", 0)}
    if "NvMapMemUsed" in before and "NvMapMemUsed" in after:
        out["nvmap_used_rise_kb"] = after["NvMapMemUsed"] - before["NvMapMemUsed"]
    return out


# A tegrastats line is a few hundred bytes; longer is no reading (read in bounded pieces, then dropped).
MAX_LINE_BYTES = 8192
# Board input power no Jetson draws (AGX Orin peaks near 75 W): a reading outside 0..this is dropped.
MAX_BOARD_MW = 500_000


@dataclass(frozen=True)
class Rail:
    """Which reading of a tegrastats line is the board's power: an input rail, or the sum of a set of rails
    (modules without one). Fixed from the first line with power, so that a line missing that rail is not
    silently read as another sum."""

    name: str | None  # an input rail, else None: the sum of ``summed``
    summed: tuple[str, ...] = ()

    @classmethod
    def of(cls, sample: TegraSample) -> Rail:
        for rail in INPUT_RAILS:
            if rail in sample.rails_mw:
                return cls(rail)
        return cls(None, tuple(sorted(sample.rails_mw)))

    def read(self, sample: TegraSample) -> int | None:
        """This rail's power in ``sample`` (mW), or None where the line lacks it."""
        if self.name is not None:
            return sample.rails_mw[self.name][0] if self.name in sample.rails_mw else None
        return sum(sample.rails_mw[r][0] for r in self.summed) if set(self.summed) == set(sample.rails_mw) else None

    def __str__(self) -> str:
        return self.name or "sum of " + ", ".join(self.summed)


class TegrastatsSampler:
    """Background ``tegrastats --interval MS`` reader: every line parsed and time-stamped on
    :func:`time.perf_counter`, so the power samples line up with the timed windows for
    :func:`window_energy_j`. Lines are read in bounded pieces (a stream without newlines cannot take the
    memory) and decoded leniently; the last line that was no reading is kept to say why none came.

    Args:
        interval_ms: Sampling interval handed to tegrastats.
        command: The command to run (default ``tegrastats --interval MS``).
    """

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None) -> None:
        self.interval_ms = interval_ms
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.samples: list[tuple[float, TegraSample]] = []
        self.other: str | None = None  # the last line that was no reading (an error message?)
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def available(self) -> str | None:
        """``None`` when the sampler can run here, else the reason it cannot."""
        if shutil.which(self.command[0]) is None:
            return f"{self.command[0]} not found on PATH: not a Jetson (or L4T's tegrastats is not installed)"
        return None

    def start(self) -> TegrastatsSampler:
        """Start the command and the reader.

        Raises:
            RuntimeError: the command is not here.
            OSError: it cannot be started (not executable, a bad interpreter line).
        """
        reason = self.available()
        if reason:
            raise RuntimeError(reason)
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        partial = False  # inside a line longer than MAX_LINE_BYTES: dropped up to its newline
        while piece := self._proc.stdout.readline(MAX_LINE_BYTES):
            whole, was_partial = piece.endswith(b"\n"), partial
            partial = not whole
            if was_partial or not whole:
                continue
            line = piece.decode("utf-8", "replace")
            if "RAM" in line:  # parse_tegrastats reads what it can: one odd line does not end the sampling
                self.samples.append((time.perf_counter(), parse_tegrastats(line)))
            elif line.strip():
                self.other = line.strip()[:200]

    def stop(self) -> list[tuple[float, TegraSample]]:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.samples

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> TegrastatsSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def power_series(self) -> tuple[list[float], list[float]]:
        """``(times_s, board power mW)``: the rail of the first line with power (:class:`Rail`), on the lines
        that have it, readings outside 0..:data:`MAX_BOARD_MW` dropped."""
        samples = list(self.samples)
        if (rail := self.rail()) is None:
            return [], []
        pts = [(t, p) for t, s in samples if (p := rail.read(s)) is not None and 0 <= p <= MAX_BOARD_MW]
        return [t for t, _ in pts], [float(p) for _, p in pts]

    def rail(self) -> Rail | None:
        """The board rail, fixed by the first line that has power (None before one came)."""
        first = next((s for _, s in list(self.samples) if s.rails_mw), None)
        return Rail.of(first) if first is not None else None

    def peak_ram_mb(self) -> int | None:
        used = [s.ram_used_mb for _, s in list(self.samples) if s.ram_used_mb is not None]
        return max(used) if used else None


def jtop_available() -> str | None:
    """``None`` when jetson-stats' ``jtop`` can be used here, else why not."""
    try:
        import jtop  # noqa: F401
    except ImportError:
        return "jetson-stats (jtop) is not installed (pip install jetson-stats on the Jetson)"
    return None


class PowerMeter:
    """Board power around a timed run (DESIGN.md section 6): on a Jetson, ``tegrastats`` sampled in the
    background, an idle baseline first, then the energy of each variant's timed slots.

    Use as a context manager around the timing; then :meth:`report` with the timing's summaries (each with
    ``windows_s``, ``iterations`` and ``batch``, as :func:`rkd_edge.devices.latency.interleaved` returns
    them). Where tegrastats does not run, ``status`` says why and nothing is sampled.

    Args:
        interval_ms: tegrastats' sampling interval.
        idle_s: Seconds of idle power measured before the timing starts.
        command: The sampler's command (default ``tegrastats --interval MS``).
    """

    def __init__(self, interval_ms: int = 50, idle_s: float = 1.0, command: list[str] | None = None) -> None:
        self.sampler = TegrastatsSampler(interval_ms, command)
        self.idle_s = idle_s
        self.status = self.sampler.available()
        self.error: str | None = None  # why sampling failed where it should have run
        self._idle: tuple[float, float] | None = None

    def __enter__(self) -> PowerMeter:
        if self.status is None:
            try:
                self.sampler.start()
            except OSError as exc:  # the timing goes on without power
                self.error = f"cannot start {self.sampler.command[0]}: {exc.strerror or exc}"
                return self
            t0 = time.perf_counter()
            time.sleep(self.idle_s)  # nothing of ours runs: the board's baseline
            self._idle = (t0, time.perf_counter())
        return self

    def _no_reading(self) -> str:
        """Why no power sample came: what tegrastats said, how it ended."""
        code = self.sampler.returncode
        ended = f"it exited with code {code}" if code not in (None, -15) else "it ran"
        said = f"; its last other line: {self.sampler.other!r}" if self.sampler.other else ""
        return f"{self.sampler.command[0]} gave no board power reading during the idle baseline ({ended}{said})"

    def __exit__(self, *exc) -> None:
        self.sampler.stop()

    def _wait_past(self, t_end: float) -> None:
        """Until a power sample later than ``t_end`` arrives (the last window needs one after it)."""
        deadline = time.perf_counter() + 5 * self.sampler.interval_ms / 1e3 + 1.0
        while time.perf_counter() < deadline:
            times, _ = self.sampler.power_series()
            if times and times[-1] >= t_end:
                return
            time.sleep(self.sampler.interval_ms / 4e3)

    def report(self, timed: dict) -> tuple[dict, dict]:
        """The power section of a result and, per variant of ``timed``, its power record.

        Per variant: ``mean_w`` (board power while it ran), ``energy_mj_per_call`` and
        ``energy_mj_per_sample`` (all of that power), and ``net_energy_mj_per_call`` (above the idle
        baseline; None where noise put it below).
        """
        if self.status is not None:
            return {"status": f"unavailable here: {self.status}"}, {}
        if self.error is not None:
            return {"status": f"failed: {self.error}"}, {}
        ends = [w[1] for rec in timed.values() for w in rec["windows_s"]]
        self._wait_past(max(ends, default=0.0))
        self.sampler.stop()
        times, power = self.sampler.power_series()
        section = {"source": f"tegrastats {self.sampler.rail()}", "interval_ms": self.sampler.interval_ms}
        section |= {"samples": len(times), "peak_ram_mb": self.sampler.peak_ram_mb()}
        try:
            assert self._idle is not None
            idle = (max(self._idle[0], times[0] if times else self._idle[1]), self._idle[1])
            if not idle[1] > idle[0]:
                raise ValueError(self._no_reading())
            idle_w = window_energy_j(times, power, [idle]) / (idle[1] - idle[0])
            per_key = {}
            for key, rec in timed.items():
                seconds = sum(b - a for a, b in rec["windows_s"])
                joules, calls = window_energy_j(times, power, rec["windows_s"]), rec["iterations"]
                net = joules - idle_w * seconds
                net = max(net, 0.0) if net > -1e-9 * max(joules, 1e-12) else None  # rounding is no negative energy
                per_key[key] = {
                    "mean_w": round(joules / seconds, 4),
                    "energy_mj_per_call": round(joules / calls * 1e3, 6),
                    "energy_mj_per_sample": round(joules / calls / rec["batch"] * 1e3, 6),
                    "net_energy_mj_per_call": round(net / calls * 1e3, 6) if net is not None else None,
                }
        except ValueError as exc:
            return {**section, "status": f"failed: {exc}"}, {}
        return {**section, "status": "ok", "idle_w": round(idle_w, 4)}, per_key
