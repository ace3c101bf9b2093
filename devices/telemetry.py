"""Device telemetry parsers (torch-free): tegrastats lines, /proc/meminfo, /proc/PID/status, and energy
per inference from sampled power (DESIGN.md section 6)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"SWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"CPU \[([^\]]*)\]")
_GR3D = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?(\d+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z_0-9]+)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
# Board input rail, by module generation: Orin (VDD_IN), Nano/TX1/TX2 (POM_5V_IN), Xavier (SYS5V / VDD_IN).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "SYS5V")


@dataclass
class TegraSample:
    """One tegrastats line. Power in mW (instantaneous, and the tool's running average)."""

    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    cpu_load: list[int | None] = field(default_factory=list)  # percent per core, None when off
    gpu_load: int | None = None
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
    """Parse one line of ``tegrastats`` output (Nano, TX2, Xavier and Orin formats)."""
    s = TegraSample()
    if m := _RAM.search(line):
        s.ram_used_mb, s.ram_total_mb = int(m[1]), int(m[2])
    if m := _SWAP.search(line):
        s.swap_used_mb = int(m[1])
    if m := _CPU.search(line):
        for core in m[1].split(","):
            core = core.strip()
            s.cpu_load.append(None if core == "off" else int(core.split("%")[0]))
    if m := _GR3D.search(line):
        s.gpu_load = int(m[1])
    s.temps_c = {k: float(v) for k, v in _TEMP.findall(line)}
    for name, cur, avg in _RAIL.findall(line):
        if name not in ("RAM", "SWAP", "IRAM"):
            s.rails_mw[name] = (int(cur), int(avg))
    return s


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` to ``{field: kB}`` (MemAvailable, NvMapMemUsed on Jetson, ...)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
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
    pts = [(t, p) for t, p in zip(times_s, power_mw, strict=True) if window[0] <= t <= window[1]]
    if len(pts) < 2 or inferences <= 0:
        raise ValueError("need at least two power samples inside the window and one inference")
    joules = sum((t1 - t0) * (p0 + p1) / 2e3 for (t0, p0), (t1, p1) in zip(pts, pts[1:], strict=False))
    joules -= idle_mw / 1e3 * (pts[-1][0] - pts[0][0])
    return joules / inferences
