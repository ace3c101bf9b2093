"""Runners: one protocol (:class:`Runner`) for every back end, and the registry naming them.

Adding a back end is one new file here with a :class:`Runner` subclass and one line in :data:`BACKENDS`.
Back-end modules are imported when a back end is created, so this package stays torch-free.

========================  =====================================================================
back end                  runs
========================  =====================================================================
``onnxruntime``           the bundle's ONNX models, ONNX Runtime CPU execution provider
``onnxruntime-cuda``      the same, CUDA execution provider (refused when it is missing)
``onnxruntime-tensorrt``  the same, TensorRT execution provider (fp16 allowed on the FP32 model)
``tensorrt``              the engines ``rkd-edge export trt`` built on this device
``pytorch``               the source run's PyTorch modules (fp32 reference), on the CPU
``pytorch-cuda``          the same on a CUDA GPU (timed with CUDA events)
========================  =====================================================================
"""

from __future__ import annotations

import importlib
import inspect

from rkd_edge.runtime.bundle import BundleError
from rkd_edge.runtime.runners.base import Runner, TensorMeta

# name -> (module, class, fixed keyword arguments)
BACKENDS: dict[str, tuple[str, str, dict]] = {
    "onnxruntime": ("rkd_edge.runtime.runners.ort", "OnnxRuntimeRunner", {"provider": "cpu"}),
    "onnxruntime-cuda": ("rkd_edge.runtime.runners.ort", "OnnxRuntimeRunner", {"provider": "cuda"}),
    "onnxruntime-tensorrt": ("rkd_edge.runtime.runners.ort", "OnnxRuntimeRunner", {"provider": "tensorrt"}),
    "tensorrt": ("rkd_edge.runtime.runners.tensorrt", "TensorRTRunner", {}),
    "pytorch": ("rkd_edge.runtime.runners.torch_eager", "TorchRunner", {}),
    "pytorch-cuda": ("rkd_edge.runtime.runners.torch_eager", "TorchRunner", {"device": "cuda"}),
}


def runner_class(backend: str) -> type[Runner]:
    """The :class:`Runner` subclass registered as ``backend``."""
    if backend not in BACKENDS:
        raise BundleError(f"unknown back end {backend!r}; choose from {', '.join(BACKENDS)}")
    module, cls, _ = BACKENDS[backend]
    return getattr(importlib.import_module(module), cls)


def create_runner(backend: str, model: str = "model", **options) -> Runner:
    """A new, unloaded runner of ``backend`` for bundle model ``model``.

    Args:
        options: Back-end options (``threads``; ``run`` and ``device`` for ``pytorch``); ones a back end
            does not take are ignored, so callers can pass one set to every back end.
    """
    cls = runner_class(backend)
    fixed = BACKENDS[backend][2]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None and k not in fixed}
    return cls(model=model, **fixed, **kwargs)


def unavailable(backend: str, **options) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    return create_runner(backend, **options).available()


__all__ = ["BACKENDS", "Runner", "TensorMeta", "create_runner", "runner_class", "unavailable"]
