"""INT8 by explicit quantization: Q/DQ ONNX models calibrated offline with ONNX Runtime.

Per-channel symmetric INT8 weights and symmetric INT8 activations (what TensorRT's strongly typed
Q/DQ path expects). The encoder quantizes Conv/MatMul/Gemm; the transformer codec is "linear-only":
MatMul/Gemm, with LayerNorm, Softmax, residual Add and GELU left in float.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rkd_edge.errors import UserError
from rkd_edge.io import atomic_path

METHODS = ("minmax", "entropy", "percentile")
OP_PRESETS = {"encoder": ["Conv", "MatMul", "Gemm"], "linear-only": ["MatMul", "Gemm"]}


class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], input_names: list[str]) -> None:
        self._it = iter([{k: v for k, v in f.items() if k in input_names} for f in feeds])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by quantize_static
        pass


def quantize_qdq(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], preset: str, method: str = "minmax") -> dict:
    """Write an explicitly quantized (QDQ) copy of ``src`` to ``dst``. Returns the calibration record."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    with atomic_path(dst) as tmp, tempfile.TemporaryDirectory() as work:
        # ONNX Runtime's recommended pre-processing: shape inference and graph optimisation (BN folding).
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        model = onnx.load(str(pre))
        names = [i.name for i in model.graph.input]
        # Linear layers only: MatMuls between two activations (attention scores, attention x values)
        # stay in float, which also keeps Softmax's output unquantized.
        consts = {i.name for i in model.graph.initializer} | {
            o for n in model.graph.node if n.op_type == "Constant" for o in n.output
        }
        exclude = [n.name for n in model.graph.node if n.op_type == "MatMul" and not (set(n.input) & consts)]
        quantize_static(
            str(pre),
            str(tmp),
            _Reader(feeds, names),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=OP_PRESETS[preset],
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8,
            calibrate_method=calib,
            nodes_to_exclude=exclude,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "CalibMovingAverage": method == "minmax",
            },
        )
    return {
        "method": method,
        "preset": preset,
        "op_types": OP_PRESETS[preset],
        "format": "QDQ",
        "float_matmuls": len(exclude),
        "weights": "int8 per-channel symmetric",
        "activations": "int8 symmetric",
    }


def qdq_summary(path: Path) -> dict:
    """Op counts of a model: Q/DQ pairs, QOperator ops, and which float ops stay unquantized."""
    import onnx

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    qop = sorted({o for o in ops if o.startswith("QLinear") or o in ("ConvInteger", "MatMulInteger")})
    return {
        "QuantizeLinear": ops.count("QuantizeLinear"),
        "DequantizeLinear": ops.count("DequantizeLinear"),
        "qoperator_ops": qop,
        "ops": sorted(set(ops)),
    }
