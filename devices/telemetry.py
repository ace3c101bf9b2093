"""Device telemetry (torch-free): tegrastats lines (JetPack 4, 5 and 6 formats) and a background sampler,
/proc/meminfo deltas, /proc/PID/status, jtop where installed, and energy per inference from sampled
power (DESIGN.md section 6)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
        """Board input power: the first input rail present, or the sum of all rails."""
        for rail in INPUT_RAILS:
            if rail in self.rails_mw:
                return self.rails_mw[rail][0]
        return sum(v[0] for v in self.rails_mw.values()) if self.rails_mw else None


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


def energy_per_inference_j(
    times_s: list[float], power_mw: list[float], window: tuple[float, float], idle_mw: float, inferences: int
) -> float:
    """Integrate power over the timed window (trapezoid), subtract the idle baseline, divide by count.

    Args:
        times_s: Sample timestamps in seconds (increasing).
        power_mw: Input-rail power at those times, mW.
        window: ``(start, end)`` of the timed inference loop, seconds, same clock.
        idle_mw: Idle baseline power, mW, measured before the run.
        inferences: Inferences completed inside the window.
    """
    if not all(math.isfinite(x) for x in (*times_s, *power_mw, *window, idle_mw)):
        raise ValueError("times, power, window and idle power must be finite numbers")
    if any(t1 < t0 for t0, t1 in zip(times_s, times_s[1:], strict=False)):
        raise ValueError("power sample times must increase")
    pts = [(t, p) for t, p in zip(times_s, power_mw, strict=True) if window[0] <= t <= window[1]]
    if len(pts) < 2 or inferences <= 0:
        raise ValueError("need at least two power samples inside the window and one inference")
    joules = sum((t1 - t0) * (p0 + p1) / 2e3 for (t0, p0), (t1, p1) in zip(pts, pts[1:], strict=False))
    joules -= idle_mw / 1e3 * (pts[-1][0] - pts[0][0])
    if joules < 0:
        raise ValueError("the idle baseline is above the power measured while inferring; measure idle again")
    return joules / inferences


def read_meminfo(path: str | Path = "/proc/meminfo") -> dict[str, int]:
    return parse_meminfo(Path(path).read_text())


def meminfo_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Unified-memory use of a run on Jetson (no NVML there): how much ``MemAvailable`` fell and
    ``NvMapMemUsed`` (GPU allocations through nvmap, Jetson kernels only) rose, in kB."""
    out = {"mem_available_drop_kb": before.get("MemAvailable", 0) - after.get("MemAvailable", 0)}
    if "NvMapMemUsed" in before and "NvMapMemUsed" in after:
        out["nvmap_used_rise_kb"] = after["NvMapMemUsed"] - before["NvMapMemUsed"]
    return out


class TegrastatsSampler:
    """Background ``tegrastats --interval MS`` reader: every line parsed and time-stamped on
    :func:`time.perf_counter`, so the power samples line up with a timed window for
    :func:`energy_per_inference_j`.

    Args:
        interval_ms: Sampling interval handed to tegrastats.
        command: The command to run (default ``tegrastats --interval MS``).
    """

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None) -> None:
        self.interval_ms = interval_ms
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.samples: list[tuple[float, TegraSample]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def available(self) -> str | None:
        """``None`` when the sampler can run here, else the reason it cannot."""
        if shutil.which(self.command[0]) is None:
            return f"{self.command[0]} not found on PATH: not a Jetson (or L4T's tegrastats is not installed)"
        return None

    def start(self) -> TegrastatsSampler:
        reason = self.available()
        if reason:
            raise RuntimeError(reason)
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if "RAM" in line:  # parse_tegrastats reads what it can: one odd line does not end the sampling
                self.samples.append((time.perf_counter(), parse_tegrastats(line)))

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

    def __enter__(self) -> TegrastatsSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def power_series(self) -> tuple[list[float], list[float]]:
        """``(times_s, input_power_mw)`` of the samples that carry power."""
        pts = [(t, s.input_power_mw) for t, s in self.samples if s.input_power_mw is not None]
        return [t for t, _ in pts], [float(p) for _, p in pts]

    def peak_ram_mb(self) -> int | None:
        used = [s.ram_used_mb for _, s in self.samples if s.ram_used_mb is not None]
        return max(used) if used else None


def jtop_available() -> str | None:
    """``None`` when jetson-stats' ``jtop`` can be used here, else why not."""
    try:
        import jtop  # noqa: F401
    except ImportError:
        return "jetson-stats (jtop) is not installed (pip install jetson-stats on the Jetson)"
    return None
