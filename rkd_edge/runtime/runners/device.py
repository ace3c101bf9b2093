"""Device fingerprints (torch-free): which machine and back end a measured precision selection is for.

``rkd-edge bench --select`` writes its choice under ``manifest["selection"][fingerprint]`` and the runtime
applies it only where the fingerprint matches, so a precision is never the default on a device (or back
end, or back-end library version) where it was not measured to win.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import os
import platform
from pathlib import Path

from rkd_edge.io import json_digest

# back end -> the distribution whose version changes what it computes and how fast
_LIBRARY = {"tensorrt": "tensorrt", "pytorch": "torch"}


@functools.cache
def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpuinfo(key: str) -> str | None:
    """The first ``key: value`` of ``/proc/cpuinfo`` (``None`` where it is absent or unreadable)."""
    for line in _cpuinfo_text().splitlines():
        if line.split(":", 1)[0].strip() == key:
            return line.split(":", 1)[1].strip()
    return None


def _cpu_model() -> str:
    for key in ("model name", "Model", "Hardware", "CPU part"):  # x86, then the ARM spellings
        if value := _cpuinfo(key):
            return value
    return platform.processor() or platform.machine()


# x86 instructions that add 8-bit products in 32 bits; without them ONNX Runtime's INT8 kernels use AVX2's
# VPMADDUBSW, whose int16 pair sums overflow for full-range INT8 weights (its docs: reduce_range or U8U8).
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@functools.cache
def int8_saturates() -> bool:
    """Whether this CPU's fused INT8 kernels can saturate: an x86 CPU whose ``/proc/cpuinfo`` lists no VNNI.

    Measured on such a CPU (AMD EPYC, AVX2 only): ONNX Runtime's fused Q/DQ convolution returned answers
    0.92 off where the same Q/DQ graph run op by op was 0.07 off (output range 3.7). Other
    architectures, and a CPU whose flags cannot be read, count as not saturating.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    flags = _cpuinfo("flags")
    return flags is not None and not (_VNNI_FLAGS & set(flags.split()))


def _read(path: str) -> str | None:
    try:
        return Path(path).read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    except OSError:
        return None


def gpu_names() -> list[str]:
    """NVIDIA GPU models from the driver's ``/proc`` files (no CUDA call), empty when none."""
    names = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        for line in (_read(info) or "").splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def _library_version(backend: str) -> str | None:
    family = backend.split("-")[0]
    dist = _LIBRARY.get(family, "onnxruntime-gpu" if backend.startswith("onnxruntime-") else "onnxruntime")
    for name in (dist, "onnxruntime"):
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def device_facts(backend: str) -> dict:
    """What the fingerprint hashes: machine, CPU model and count, Jetson module, GPUs, back end, library."""
    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "jetson": _read("/proc/device-tree/model"),
        "gpus": gpu_names(),
        "backend": backend,
        "library": _library_version(backend),
    }


def fingerprint(backend: str) -> str:
    """16 hex digits naming this device and back end (sha256 of :func:`device_facts`)."""
    return json_digest(device_facts(backend), compact=True)[:16]
