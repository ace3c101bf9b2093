"""ONNX Runtime runner: CPU, CUDA and TensorRT execution providers (one class, the provider a parameter).

It reports the providers a session really got and refuses, with one line, when the one asked for is
missing (ONNX Runtime itself silently falls back to the CPU).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from rkd_edge.errors import first_sentence
from rkd_edge.runtime.bundle import Bundle, BundleError, read_verified
from rkd_edge.runtime.onnx_wire import check_model
from rkd_edge.runtime.runners.base import Runner, TensorMeta
from rkd_edge.runtime.runners.device import int8_saturates

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
# ONNX tensor type strings -> numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def session_options(model_path: str | Path, threads: int = 0, provider: str = "cpu"):
    """``onnxruntime.SessionOptions`` for one model (every session the toolkit opens starts here).

    On the CPU provider, a Q/DQ INT8 model (``*.int8.onnx``) on a CPU whose fused INT8 kernels saturate
    (:func:`~rkd_edge.runtime.runners.device.int8_saturates`) keeps its Q/DQ pairs unfused
    (``ORT_ENABLE_BASIC``): the quantized arithmetic then runs as written, exact and slower, so an
    accuracy or a speed measured there is the model's, not an overflow's.
    """
    import onnxruntime as ort

    # Fatal only, from the sessions and from ONNX Runtime's environment: its errors reach us as exceptions,
    # said in one line (runners.infer); logged too, they came as a second, coloured line before it.
    ort.set_default_logger_severity(4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    if threads:
        opts.intra_op_num_threads = threads
    if provider == "cpu" and Path(model_path).name.endswith(".int8.onnx") and int8_saturates():
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return opts


def is_ort_error(exc: BaseException) -> bool:
    """Whether ``exc`` is ONNX Runtime's own error (a failed allocation, a node it cannot run)."""
    return type(exc).__module__.startswith("onnxruntime")


def ort_reason(exc: BaseException, limit: int = 200) -> str:
    """What an ONNX Runtime error says, short: the failing node's operator and the status message, without
    the ``[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION :`` prefix and the C++ source locations."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    node = re.search(r"while running (\w+) node", text)
    text = text.split("Status Message:", 1)[-1]
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+ (?:[^()]*\([^)]*\)\s*)?", "", text).strip()
    text = f"{node[1]}: {text}" if node else text
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def cpu_session(model: str | Path | bytes, threads: int = 0, **options):
    """An ``onnxruntime.InferenceSession`` on the CPU provider, opened with :func:`session_options`.

    Args:
        model: An ONNX file, or a model's serialised bytes (an FP32 probe graph).
        threads: Intra-op threads (0 = ONNX Runtime's default, all cores).
        **options: ``SessionOptions`` attributes set on top (e.g. ``enable_profiling=True``).
    """
    import onnxruntime as ort

    opts = session_options("" if isinstance(model, bytes) else model, threads)
    for key, value in options.items():
        setattr(opts, key, value)
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=PROVIDERS["cpu"])


class OnnxRuntimeRunner(Runner):
    """One ONNX model in an ``onnxruntime.InferenceSession``.

    Args:
        model: Bundle model name (``encoder``, ``tx``, ``rx``).
        provider: ``cpu``, ``cuda`` or ``tensorrt`` (execution provider asked for).
        threads: Intra-op threads (0 = ONNX Runtime's default).

    Precisions: ``fp32`` and ``int8`` (the bundle's Q/DQ models) everywhere; ``fp16`` on the TensorRT
    provider (FP16 kernels allowed on the FP32 model).
    """

    def __init__(self, model: str = "model", provider: str = "cpu", threads: int = 0) -> None:
        super().__init__(model)
        if provider not in PROVIDERS:
            raise BundleError(f"unknown ONNX Runtime provider {provider!r}; use {', '.join(PROVIDERS)}")
        self.provider, self.threads = provider, threads
        self.backend = "onnxruntime" if provider == "cpu" else f"onnxruntime-{provider}"
        self.precisions = ("fp32", "fp16", "int8") if provider == "tensorrt" else ("fp32", "int8")
        self.session = None

    def available(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        want = PROVIDERS[self.provider][0]
        if want not in ort.get_available_providers():
            hint = "onnxruntime-gpu with CUDA" if self.provider == "cuda" else "onnxruntime-gpu built with TensorRT"
            return f"onnxruntime {ort.__version__} has no {want} here (needs {hint} and an NVIDIA GPU)"
        return None

    def locate(self, bundle: Bundle, model: str, precision: str) -> Path:
        """The ONNX file: FP32 for TensorRT FP16; for INT8 on the CPU provider the ONNX Runtime CPU form
        (``int8.onnxruntime_cpu``) where the export kept it (it measured faster there), else the Q/DQ model."""
        if precision == "fp16":
            return bundle.model_path(model, "fp32")
        path = bundle.model_path(model, precision)
        cpu_form = bundle.manifest["models"][model][precision].get("onnxruntime_cpu")
        # A full-range CPU form overflows on a CPU without VNNI; the Q/DQ model then runs unfused instead.
        fits = isinstance(cpu_form, dict) and (cpu_form.get("reduce_range") or not int8_saturates())
        if self.provider == "cpu" and fits and cpu_form.get("file"):
            return bundle.root / cpu_form["file"]
        return path

    def load(self, model_path: str | Path, precision: str, sha256: str | None = None) -> OnnxRuntimeRunner:
        import onnxruntime as ort

        self.check_precision(precision)
        if why := self.available():
            raise BundleError(f"cannot run {self.model} on {self.backend}: {why}")
        opts = session_options(model_path, self.threads, self.provider)
        providers: list = list(PROVIDERS[self.provider])
        if self.provider == "tensorrt":
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rkd-edge" / "trt-ep"
            cache.mkdir(parents=True, exist_ok=True)
            trt_opts = {
                "trt_fp16_enable": precision == "fp16",
                "trt_int8_enable": precision == "int8",  # honours the Q/DQ nodes; no calibration table
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            }
            providers[0] = ("TensorrtExecutionProvider", trt_opts)
        model = read_verified(model_path, sha256)
        check_model(model, Path(model_path).name, float_slot=precision != "int8")
        try:
            self.session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise BundleError(
                f"ONNX Runtime cannot load {Path(model_path).name} ({first_sentence(exc)}); re-export the bundle"
            ) from None
        got = self.session.get_providers()
        want = PROVIDERS[self.provider][0]
        if got[0] != want:
            raise BundleError(
                f"{self.model}: asked for {want}, ONNX Runtime gave {got} (a driver or library is missing); "
                "use the CPU back end or allow fallback"
            )
        self.path, self.precision = Path(model_path), precision
        self.inputs = [
            TensorMeta(i.name, tuple(i.shape), _DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()
        ]
        self.outputs = [
            TensorMeta(o.name, tuple(o.shape), _DTYPES.get(o.type, o.type)) for o in self.session.get_outputs()
        ]
        self._names = [o.name for o in self.outputs]
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise BundleError(f"{self.model}: load() the runner before infer()")
        self.check_feeds(feeds)
        try:
            values = self.session.run(None, feeds)
        except Exception as exc:  # ONNX Runtime's own errors: one line, not a traceback from deep in a session
            if not is_ort_error(exc):
                raise
            raise BundleError(
                f"the {self.model} model failed in ONNX Runtime ({ort_reason(exc)}); a smaller batch may fit, "
                "else re-export the bundle"
            ) from None
        return dict(zip(self._names, values, strict=True))

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers() if self.session is not None else [PROVIDERS[self.provider][0]]

    def close(self) -> None:
        self.session = None
