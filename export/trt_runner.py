"""A pycuda-based TensorRT engine runner used by the benchmarks (GPU timings with CUDA events).

Written against the documented TensorRT Python API; the tensor-address API (``set_tensor_address``,
``execute_async_v3``, TensorRT >= 8.5) is used where present, bindings (``execute_async_v2``) otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rkd_edge.errors import UserError


class TRTRunner:
    """Deserialize an engine and run it on numpy inputs.

    Args:
        engine: Path to a serialized engine built on this GPU and TensorRT version.
    """

    def __init__(self, engine: str | Path) -> None:
        from rkd_edge.export.tensorrt import import_tensorrt

        trt = import_tensorrt()
        try:
            import pycuda.autoinit  # noqa: F401 - creates the CUDA context
            import pycuda.driver as cuda
        except Exception as exc:  # noqa: BLE001 - no GPU or no pycuda
            raise UserError(
                f"pycuda with a CUDA GPU is needed to run engines ({str(exc).splitlines()[0][:80]})"
            ) from None
        self.trt, self.cuda = trt, cuda
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine).read_bytes())
        if self.engine is None:
            raise UserError(f"cannot deserialize {engine}: built for another GPU or TensorRT version; rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.v3 = hasattr(self.context, "execute_async_v3")
        if self.v3:
            self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        else:  # TensorRT < 8.5: bindings
            self.names = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
            self.inputs = [n for i, n in enumerate(self.names) if self.engine.binding_is_input(i)]
        self.outputs = [n for n in self.names if n not in self.inputs]

    def _dtype(self, name: str):
        get = (
            self.engine.get_tensor_dtype if self.v3 else (lambda n: self.engine.get_binding_dtype(self.names.index(n)))
        )
        return self.trt.nptype(get(name))

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self.cuda
        dev, host_out = {}, {}
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name].astype(self._dtype(name)))
            if self.v3:
                self.context.set_input_shape(name, arr.shape)
            else:
                self.context.set_binding_shape(self.names.index(name), arr.shape)
            dev[name] = cuda.mem_alloc(max(arr.nbytes, 1))
            cuda.memcpy_htod_async(dev[name], arr, self.stream)
        for name in self.outputs:
            shape = tuple(
                self.context.get_tensor_shape(name)
                if self.v3
                else self.context.get_binding_shape(self.names.index(name))
            )
            host_out[name] = cuda.pagelocked_empty(shape, self._dtype(name))
            dev[name] = cuda.mem_alloc(max(host_out[name].nbytes, 1))
        if self.v3:
            for name in self.names:
                self.context.set_tensor_address(name, int(dev[name]))
            self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.execute_async_v2([int(dev[n]) for n in self.names], self.stream.handle)
        for name in self.outputs:
            cuda.memcpy_dtoh_async(host_out[name], dev[name], self.stream)
        self.stream.synchronize()
        return {n: np.array(v) for n, v in host_out.items()}

    def time_ms(self, feeds: dict[str, np.ndarray], iterations: int = 200) -> list[float]:
        """GPU time per inference from CUDA events (includes the copies of this runner's call)."""
        start, end = self.cuda.Event(), self.cuda.Event()
        times = []
        for _ in range(iterations):
            start.record(self.stream)
            self(feeds)
            end.record(self.stream)
            end.synchronize()
            times.append(start.time_till(end))
        return times
