"""TensorRT engine runner: the serialized engines ``rkd-edge export trt`` builds on the target device.

pycuda holds the device buffers and the stream; the tensor-address API (``set_tensor_address``,
``execute_async_v3``, TensorRT >= 8.5) is used where present, bindings (``execute_async_v2``) otherwise.
It times calls with CUDA events on its own stream (GPU time, copies included).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from rkd_edge.errors import first_sentence
from rkd_edge.runtime.bundle import Bundle, BundleError, read_verified, verified_engine
from rkd_edge.runtime.runners.base import Runner, TensorMeta


class CudaEventTimer:
    """Milliseconds between CUDA events recorded on a stream before and after one call."""

    name = "cuda-events"

    def __init__(self, cuda, stream) -> None:
        self.start, self.end, self.stream = cuda.Event(), cuda.Event(), stream

    def time(self, fn: Callable[[], object]) -> float:
        self.start.record(self.stream)
        fn()
        self.end.record(self.stream)
        self.end.synchronize()
        return float(self.start.time_till(self.end))


class TensorRTRunner(Runner):
    """Deserialize an engine and run it on numpy inputs.

    Args:
        model: Bundle model name (``encoder``, ``tx``, ``rx``).

    Precisions: whatever engines the bundle's manifest lists under ``tensorrt.engines``.
    """

    backend = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, model: str = "model") -> None:
        super().__init__(model)
        self.engine = self.context = self.stream = None
        self._buffers: dict[str, tuple[int, object]] = {}

    def available(self) -> str | None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "TensorRT is not installed (pip install 'rkd-edge[trt]' or JetPack's python3-libnvinfer)"
        try:
            import pycuda.driver as cuda
        except ImportError:
            return "pycuda is not installed (pip install pycuda)"
        try:
            cuda.init()
            if cuda.Device.count() == 0:
                return "no CUDA GPU is visible"
        except Exception as exc:  # noqa: BLE001 - any CUDA failure means: no usable GPU here
            return f"no usable CUDA GPU ({first_sentence(exc)})"
        return None

    def locate(self, bundle: Bundle, model: str, precision: str) -> Path:
        rec = (bundle.manifest.get("tensorrt") or {}).get("engines", {}).get(model, {}).get(precision)
        if rec is None:
            raise BundleError(
                f"bundle has no TensorRT {precision} engine for {model}; build it on this device with "
                f"rkd-edge export trt {bundle.root}" + (" --int8" if precision == "int8" else "")
            )
        return verified_engine(bundle.root, rec)

    def load(self, model_path: str | Path, precision: str, sha256: str | None = None) -> TensorRTRunner:
        self.check_precision(precision)
        if why := self.available():
            raise BundleError(f"cannot run {self.model} on tensorrt: {why}")
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context
        import pycuda.driver as cuda
        import tensorrt as trt

        self.trt, self.cuda = trt, cuda
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(read_verified(model_path, sha256))
        if self.engine is None:
            raise BundleError(
                f"cannot deserialize {Path(model_path).name}: built for another GPU or TensorRT version; "
                "rebuild it here with rkd-edge export trt"
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.v3 = hasattr(self.context, "execute_async_v3")
        if self.v3:
            self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            ins = {n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        else:  # TensorRT < 8.5: bindings
            self.names = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
            ins = {n for i, n in enumerate(self.names) if self.engine.binding_is_input(i)}

        def meta(n):
            shape = self.engine.get_tensor_shape(n) if self.v3 else self.engine.get_binding_shape(self.names.index(n))
            return TensorMeta(n, tuple(d if d >= 0 else None for d in shape), np.dtype(self._dtype(n)).name)

        self.inputs = [meta(n) for n in self.names if n in ins]
        self.outputs = [meta(n) for n in self.names if n not in ins]
        self.path, self.precision = Path(model_path), precision
        return self

    def _dtype(self, name: str):
        if self.v3:
            return self.trt.nptype(self.engine.get_tensor_dtype(name))
        return self.trt.nptype(self.engine.get_binding_dtype(self.names.index(name)))

    def _device(self, name: str, nbytes: int):
        """A device buffer of at least ``nbytes`` for ``name``, reused across calls."""
        size, buf = self._buffers.get(name, (0, None))
        if size < nbytes:
            buf = self.cuda.mem_alloc(max(nbytes, 1))
            self._buffers[name] = (nbytes, buf)
        return buf

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.context is None:
            raise BundleError(f"{self.model}: load() the runner before infer()")
        self.check_feeds(feeds)
        cuda = self.cuda
        dev, host_out = {}, {}
        for m in self.inputs:
            arr = np.ascontiguousarray(feeds[m.name].astype(self._dtype(m.name), copy=False))
            if self.v3:
                self.context.set_input_shape(m.name, arr.shape)
            else:
                self.context.set_binding_shape(self.names.index(m.name), arr.shape)
            dev[m.name] = self._device(m.name, arr.nbytes)
            cuda.memcpy_htod_async(dev[m.name], arr, self.stream)
        for m in self.outputs:
            n = m.name
            shape = self.context.get_tensor_shape(n) if self.v3 else self.context.get_binding_shape(self.names.index(n))
            host_out[n] = cuda.pagelocked_empty(tuple(shape), self._dtype(n))
            dev[n] = self._device(n, host_out[n].nbytes)
        if self.v3:
            for n in self.names:
                self.context.set_tensor_address(n, int(dev[n]))
            self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.execute_async_v2([int(dev[n]) for n in self.names], self.stream.handle)
        for n, host in host_out.items():
            cuda.memcpy_dtoh_async(host, dev[n], self.stream)
        self.stream.synchronize()
        return {n: np.array(v) for n, v in host_out.items()}

    def timer(self):
        return CudaEventTimer(self.cuda, self.stream) if self.stream is not None else super().timer()

    @property
    def providers(self) -> list[str]:
        version = getattr(getattr(self, "trt", None), "__version__", "")
        return [f"TensorRT {version}".strip()]

    def memory(self) -> dict:
        if self.engine is None:
            return {}
        size = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        io = sum(s for s, _ in self._buffers.values())
        return {"engine_device_memory_mb": size / 2**20, "io_buffers_mb": io / 2**20}

    def close(self) -> None:
        for _, buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        self.context = self.engine = None
