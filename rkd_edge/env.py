"""Environment records stored next to every artefact: versions, CPU, device, seeds."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random

from rkd_edge.errors import UserError

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
        # what this process may run on (taskset, a container's cpuset): thread counts are judged against it
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
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


def host(device: str) -> dict:
    """Where a stage ran, as far as it decides the numbers: the same seed reproduces a stage exactly only
    on the same kind of device with the same number of torch threads (another count sums in another
    order, and a search may then pick another genotype).

    Args:
        device: what the stage ran on, as :func:`pick_device` names it (``"cpu"``, ``"cuda"``).
    """
    import torch

    device = torch.device(device)
    rec = {"device": device.type, "torch_threads": torch.get_num_threads(), "cpu": cpu_model()}
    if device.type == "cuda":
        rec["cuda_device"] = torch.cuda.get_device_name(device)
    return rec


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch from the one seed of a run."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)  # every CUDA device too
        # The same seed on the same GPU gives the same run: cuDNN picks deterministic kernels only (no
        # effect on CPU).
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    except ImportError:
        pass


_DEVICES = ("auto", "cpu", "cuda")
_override: str | None = None


def set_device_override(requested: str | None) -> None:
    """Make :func:`pick_device` resolve ``requested`` whatever a config asks (``None`` clears it).

    For commands that work on an existing run (``evaluate``, ``prune``): the device recorded in the run's
    config is where it was trained, not where it must run now; their ``--device`` (default ``auto``)
    decides, so a run trained on a GPU evaluates and prunes on a machine without one.
    """
    global _override
    if requested is not None:
        _check_device(requested)
    _override = requested


def _check_device(requested: str) -> None:
    if requested not in _DEVICES:
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")


def pick_device(requested: str = "auto") -> str:
    """Resolve the compute device at run time: ``auto`` means CUDA if present, else CPU.

    Never returns an explicit index beyond ``cuda`` (the current device), so runs stay portable. An
    override set by :func:`set_device_override` wins over ``requested``.
    """
    import torch

    requested = _override or requested
    _check_device(requested)
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but CUDA is not available here; use --device cpu (or auto)")
    return requested


def eval_batch_size(device: str, cpu: int = 256) -> int:
    """Batch size for inference-only passes (validation, teacher outputs).

    CPU keeps ``cpu`` (its results stay bit-identical to earlier runs); a GPU takes 8x as many, since small
    batches leave it idle between kernel launches.
    """
    return cpu if device == "cpu" else 8 * cpu
