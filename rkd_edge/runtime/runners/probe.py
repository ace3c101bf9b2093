"""Peak memory of one variant in a fresh process (torch-free unless the back end is PyTorch).

``rkd-edge bench`` runs ``python -c "...memory_probe(...)"`` per back end, precision and batch, so that a
process's VmHWM belongs to that variant alone (DESIGN.md section 6).
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

from rkd_edge.devices.telemetry import meminfo_delta, peak_rss_kb, read_meminfo
from rkd_edge.runtime.session import Runtime


def _nvml_used_mb() -> float | None:
    """Device-wide GPU memory in use (NVML through ctypes), or None without an NVIDIA driver."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None

    class Mem(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    handle, mem = ctypes.c_void_p(), Mem()
    if nvml.nvmlInit_v2() or nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)):
        return None
    ok = nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == 0
    nvml.nvmlShutdown()
    return mem.used / 2**20 if ok else None


def memory_probe(bundle: str, backend: str, precision: str, batch: str, threads: str, run: str) -> dict:
    """In a fresh process: load one variant, run it end to end 20 times; its peak memory.

    Returns ``peak_rss_mb`` (VmHWM of this process), the back end's own figures (CUDA peak allocated,
    engine device memory), ``gpu_used_delta_mb`` (NVML, device-wide) and on Jetson the ``/proc/meminfo``
    MemAvailable drop and NvMapMemUsed rise (unified memory).
    """
    meminfo = read_meminfo()
    gpu0 = _nvml_used_mb()
    rt = Runtime(bundle, precision=precision, backend=backend, threads=int(threads), run=run or None)
    n = int(batch)
    imgs = np.random.default_rng(0).integers(0, 256, (n, rt.size, rt.size, rt.channels), dtype=np.uint8)
    k = rt.max_symbols
    for _ in range(20):
        sym, mask = rt.send(imgs, 10.0, k)
        rt.receive(sym, mask, 10.0, csi=np.stack([mask, np.zeros_like(mask)], -1) if rt.uses_csi else None)
    out = {"peak_rss_mb": peak_rss_kb() / 1024, "torch_imported": "torch" in sys.modules}
    for r in rt.runners.values():
        for key, value in r.memory().items():
            out[key] = out.get(key, 0.0) + value
    gpu1 = _nvml_used_mb()
    if gpu0 is not None and gpu1 is not None:
        out["gpu_used_delta_mb"] = gpu1 - gpu0
    after = read_meminfo()
    if "NvMapMemUsed" in after:  # Jetson: CPU and GPU share this memory
        out.update({k.replace("_kb", "_mb"): v / 1024 for k, v in meminfo_delta(meminfo, after).items()})
    return out
