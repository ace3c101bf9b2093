"""Environment records stored next to every artefact: versions, CPU, device, seeds."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random

_PACKAGES = (
    "rkd-edge",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "onnx",
    "onnxruntime",
    "tensorrt",
    "torch-pruning",
    "scikit-learn",
)


def versions() -> dict[str, str]:
    """Versions of Python and of the installed packages rkd-edge uses (absent ones omitted)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Full environment record: versions, host CPU and threads, accelerator if any."""
    rec = {
        "versions": versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
    }
    try:
        import torch

        rec["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            rec["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return rec


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch from the one seed of a run."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def pick_device(requested: str = "auto") -> str:
    """Resolve the compute device at run time: ``auto`` means CUDA if present, else CPU.

    Never returns an explicit index beyond ``cuda`` (the current device), so runs stay portable.
    """
    import torch

    from rkd_edge.errors import UserError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {requested!r} requested but CUDA is not available; use --device cpu")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return requested
