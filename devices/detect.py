"""What machine is this: a Jetson (device tree, L4T release, nvpmodel power mode) or a host CPU.

Every reader is a pure parser of the file's or command's text plus a thin function that reads it, so the
parsers are tested on real-format strings on any machine.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rkd_edge.devices.profiles import match_profile

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
# Where a kernel without /proc/device-tree exposes the same file.
DEVICE_TREE_MODEL_SYSFS = Path("/sys/firmware/devicetree/base/model")
NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")

# L4T major.minor -> JetPack, for the releases the profiles name (jetson-stats keeps the full table:
# https://github.com/rbonghi/jetson_stats/blob/master/jtop/core/jetson_variables.py).
L4T_TO_JETPACK = {
    "32.6": "4.6",
    "32.7": "4.6.x",
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6": "5.1.4",
    "36.3": "6.0",
    "36.4": "6.1 / 6.2",
    "38.2": "7.0",
}

_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", re.IGNORECASE)
_BOARD = re.compile(r"BOARD:\s*([\w-]+)")
_NVP_MODE = re.compile(r"NV Power Mode:\s*(\S+)")


@dataclass
class Detection:
    """The result of :func:`detect`. ``jetson`` is False on any other machine, with ``reason`` saying why."""

    jetson: bool
    reason: str = ""
    model: str | None = None
    profile: str | None = None
    l4t: str | None = None
    jetpack: str | None = None
    board: str | None = None
    power_mode: str | None = None
    power_mode_id: int | None = None
    cpu: str = ""
    cpu_count: int = 0
    machine: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def jetson_model(root: Path = Path("/")) -> str | None:
    """The device tree's model string (e.g. ``NVIDIA Jetson AGX Orin Developer Kit``), or None without one."""
    for path in (DEVICE_TREE_MODEL, DEVICE_TREE_MODEL_SYSFS):
        try:
            return parse_device_tree_model((root / path.relative_to("/")).read_bytes())
        except OSError:
            continue
    return None


def parse_device_tree_model(raw: bytes | str) -> str:
    """``/proc/device-tree/model`` is NUL-terminated; return the clean model string (printable characters
    only: it is printed to a terminal, where an escape sequence would act)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return "".join(c for c in text if c.isprintable()).strip()


def parse_nv_tegra_release(text: str) -> dict:
    """``/etc/nv_tegra_release`` first line, e.g.
    ``# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: ...``
    -> ``{"l4t": "35.4.1", "jetpack": "5.1.2", "board": "t186ref"}``; ``{}`` when it is not that format.
    """
    m = _RELEASE.search(text)
    if not m:
        return {}
    l4t = f"{m[1]}.{m[2]}"
    major_minor = ".".join(l4t.split(".")[:2])
    out = {"l4t": l4t, "jetpack": L4T_TO_JETPACK.get(major_minor)}
    if b := _BOARD.search(text):
        out["board"] = b[1]
    return out


def parse_nvpmodel_query(text: str) -> dict:
    """``nvpmodel -q`` prints ``NV Power Mode: MAXN`` and the mode id on the next line."""
    out: dict = {}
    if m := _NVP_MODE.search(text):
        out["power_mode"] = m[1]
        rest = text[m.end() :].split()
        if rest and re.fullmatch(r"[0-9]{1,6}", rest[0]):  # ASCII digits: str.isdigit() takes '²' too
            out["power_mode_id"] = int(rest[0])
    return out


def host_cpu() -> str:
    """CPU model name from /proc/cpuinfo (x86 ``model name``; Arm has ``CPU part`` only), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith(("model name", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def detect(root: Path = Path("/"), run_nvpmodel: bool = True) -> Detection:
    """Read the device tree, the L4T release and the power mode where present.

    Args:
        root: Filesystem root to read from (tests point it at a folder of sample files).
        run_nvpmodel: Query ``nvpmodel -q`` when it is on PATH.
    """
    d = Detection(jetson=False, cpu=host_cpu(), cpu_count=os.cpu_count() or 0, machine=platform.machine())
    release_path = root / NV_TEGRA_RELEASE.relative_to("/")
    if (model := jetson_model(root)) is not None:
        d.model = model
        prof = match_profile(d.model)
        d.profile = prof.key if prof else None
        if prof is None:
            d.notes.append(f"device tree model {d.model!r} matches no Jetson profile")
    if release_path.is_file():
        rel = parse_nv_tegra_release(release_path.read_text(errors="replace"))
        d.l4t, d.jetpack, d.board = rel.get("l4t"), rel.get("jetpack"), rel.get("board")
    d.jetson = bool(d.profile or d.l4t)
    if not d.jetson:
        d.reason = f"not a Jetson: no Jetson model in {DEVICE_TREE_MODEL} and no {NV_TEGRA_RELEASE}; host CPU {d.cpu}"
        return d
    if run_nvpmodel and shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
            d.__dict__.update(parse_nvpmodel_query(out.stdout + out.stderr))
        except (OSError, subprocess.TimeoutExpired) as exc:
            d.notes.append(f"nvpmodel -q failed: {exc}")
    elif run_nvpmodel:
        d.notes.append("nvpmodel not on PATH: power mode unknown")
    return d
