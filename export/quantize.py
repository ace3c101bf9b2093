"""INT8 by explicit quantization: Q/DQ ONNX models calibrated offline with ONNX Runtime.

Two forms come out of one calibration (export/README.md has the measurements behind them):

* the artefact of record (``<model>.int8.onnx``, what TensorRT builds from): Q/DQ, per-channel
  symmetric INT8 weights and symmetric INT8 activations;
* a CPU form for ONNX Runtime (``<model>.int8-cpu.onnx``, DESIGN.md section 5), written by
  :func:`quantize_model` with :data:`CPU_RECIPES`; the export keeps it only where it measures faster.

The encoder preset quantizes Conv/MatMul/Gemm; the transformer codec is "linear-only": MatMul/Gemm
with weights, while LayerNorm, Softmax, residual Add, GELU and the MatMuls between two activations
(attention scores, attention x values) stay in float.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rkd_edge.errors import UserError
from rkd_edge.io import atomic_path
from rkd_edge.runtime.runners.device import int8_saturates

METHODS = ("minmax", "entropy", "percentile")
OP_PRESETS = {"encoder": ["Conv", "MatMul", "Gemm"], "linear-only": ["MatMul", "Gemm"]}
# Batch size of the calibration passes; histogram methods need every pass the same size (see _rebatch).
CALIB_BATCH = 32


def check_method(method: str) -> None:
    """Refuse (one line) a calibration method this exporter does not have."""
    if method not in METHODS:
        raise UserError(f"--calibration {method!r} is not known; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Recipe:
    """How to quantize: the knobs that were measured (export/README.md).

    Attributes:
        format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs) or ``qoperator`` (QLinearConv, ...).
        activations: ``s8`` (symmetric INT8, TensorRT's form) or ``u8`` (UINT8, x86's VPDPBUSD form).
        per_channel: Per-output-channel weight scales (else one scale per tensor).
        reduce_range: 7-bit weights (for CPUs without VNNI, where U8S8 products can saturate).
        extra_ops: Op types quantized beyond the preset's linear ops (e.g. Add, Relu, Concat) so that
            tensors stay INT8 between linear layers instead of a DQ->float op->Q round trip.
        exclude: Node names left in float (mixed precision by measured per-node speed).
    """

    format: str = "qdq"
    activations: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    extra_ops: tuple[str, ...] = ()
    exclude: tuple[str, ...] = field(default=())

    def label(self) -> str:
        parts = [self.format, f"{self.activations}s8", "pc" if self.per_channel else "pt"]
        if self.reduce_range:
            parts.append("rr")
        if self.extra_ops:
            parts.append("+" + ",".join(self.extra_ops))
        if self.exclude:
            parts.append(f"-{len(self.exclude)}float")
        return " ".join(parts)


# TensorRT's artefact of record: Q/DQ S8S8, per-channel symmetric weights (DESIGN.md section 5).
RECORD_RECIPE = Recipe()
# What measured fastest for ONNX Runtime on x86 CPUs (export/README.md, "Recipe"): QOperator, UINT8
# activations (VPDPBUSD's u8 x s8), per-channel weights; the encoder also keeps Add/Concat/MaxPool in INT8
# so that no float op sits between two integer convolutions. Not Relu: ONNX Runtime's QOperator form of a
# quantized Relu on asymmetric UINT8 ranges wrecked the quickstart encoder (feature cosine to FP32 0.58,
# accuracy 0.98 -> 0.52; without it 0.9995). The codec stays linear-only.
CPU_RECIPES = {
    "encoder": Recipe(format="qoperator", activations="u8", extra_ops=("Add", "Concat", "MaxPool")),
    "linear-only": Recipe(format="qoperator", activations="u8"),
}
CPU_RECIPE = CPU_RECIPES["encoder"]


def cpu_recipe(preset: str) -> Recipe:
    """The CPU form's recipe for this machine: :data:`CPU_RECIPES`, with 7-bit weights (``reduce_range``)
    where the CPU's INT8 kernels saturate (x86 without VNNI), as ONNX Runtime's quantization guide advises."""
    recipe = CPU_RECIPES[preset]
    return replace(recipe, reduce_range=True) if int8_saturates() else recipe


class FeedReader:
    """ONNX Runtime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], input_names: list[str]) -> None:
        self._feeds = [{k: v for k, v in f.items() if k in input_names} for f in feeds]
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)


def _rebatch(feeds: list[dict[str, np.ndarray]], batch: int = CALIB_BATCH) -> list[dict[str, np.ndarray]]:
    """The same samples in passes of one size: the largest divisor of the count that is <= ``batch``.

    ONNX Runtime's histogram collector (entropy, percentile) stacks each tensor's per-pass arrays with
    ``np.asarray``, which fails ("inhomogeneous shape") when the last pass is shorter.
    """
    if not feeds:
        return feeds
    full = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    n = len(next(iter(full.values())))
    size = max(d for d in range(1, min(batch, n) + 1) if n % d == 0)
    return [{k: v[i : i + size] for k, v in full.items()} for i in range(0, n, size)]


def _float_matmuls(model) -> list[str]:
    """MatMuls whose inputs are both activations (no initializer, no Constant): kept in float."""
    consts = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not (set(n.input) & consts)]


def fold_bn_through_concat(model) -> int:
    """Fold each ``Conv, Conv, ... -> Concat(axis=1) -> BatchNormalization`` (the factorized reduce of a
    DARTS cell) into the Convs' weights and biases, in place; returns how many BNs were folded.

    ONNX Runtime folds a BN only straight after a Conv; one behind a Concat would stay a float op with a
    DQ before and a Q after it in the INT8 graph.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    folded = 0
    for bn in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        cat = producer.get(bn.input[0])
        if cat is None or cat.op_type != "Concat" or consumers.get(cat.output[0]) != 1:
            continue
        if next((a.i for a in cat.attribute if a.name == "axis"), None) != 1:
            continue
        convs = [producer.get(i) for i in cat.input]
        if not all(c is not None and c.op_type == "Conv" and c.input[1] in inits for c in convs):
            continue
        if any(consumers.get(c.output[0]) != 1 for c in convs) or not all(i in inits for i in bn.input[1:]):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        start = 0
        for c in convs:
            w = numpy_helper.to_array(inits[c.input[1]]).astype(np.float64)
            sl = slice(start, start + w.shape[0])
            start += w.shape[0]
            b = numpy_helper.to_array(inits[c.input[2]]).astype(np.float64) if len(c.input) > 2 else 0.0
            inits[c.input[1]].CopyFrom(
                numpy_helper.from_array((w * scale[sl, None, None, None]).astype(np.float32), c.input[1])
            )
            bias = numpy_helper.from_array((b * scale[sl] + shift[sl]).astype(np.float32), f"{c.output[0]}_bnbias")
            model.graph.initializer.append(bias)
            del c.input[2:]
            c.input.append(bias.name)
        # the Concat now produces the BN's output; the BN goes
        cat.output[0] = bn.output[0]
        model.graph.node.remove(bn)
        folded += 1
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return folded


def preprocess(src: Path, dst: Path) -> int:
    """ONNX Runtime's quantization pre-processing (shape inference, graph optimisation, which folds a
    BatchNormalization that follows a Conv), then :func:`fold_bn_through_concat` for those behind a
    Concat. Returns the BatchNormalization nodes left (0 for every student here; qdq_summary records it)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    model = onnx.load(str(dst))
    if fold_bn_through_concat(model):
        onnx.save(model, str(dst))
    return sum(n.op_type == "BatchNormalization" for n in model.graph.node)


def quantize_model(
    src: Path,
    dst: Path,
    feeds: list[dict[str, np.ndarray]],
    preset: str,
    method: str = "minmax",
    recipe: Recipe = RECORD_RECIPE,
) -> dict:
    """Write an INT8 copy of ``src`` to ``dst`` by ``recipe``; returns the calibration record.

    Args:
        src: FP32 ONNX model.
        dst: Where the quantized model goes (written atomically).
        feeds: Real calibration samples, a list of ``{input name: array}`` passes (any pass sizes).
        preset: ``encoder`` (Conv/MatMul/Gemm) or ``linear-only`` (MatMul/Gemm with weights).
        method: Calibration: ``minmax``, ``entropy`` or ``percentile``.
        recipe: The quantization knobs (:data:`RECORD_RECIPE` for the artefact of record).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_method(method)
    if preset not in OP_PRESETS:
        raise UserError(f"unknown quantization preset {preset!r}; choose one of {', '.join(OP_PRESETS)}")
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    act = QuantType.QInt8 if recipe.activations == "s8" else QuantType.QUInt8
    fmt = QuantFormat.QDQ if recipe.format == "qdq" else QuantFormat.QOperator
    op_types = OP_PRESETS[preset] + [o for o in recipe.extra_ops if o not in OP_PRESETS[preset]]
    with atomic_path(dst) as tmp, tempfile.TemporaryDirectory() as work:
        pre = Path(work) / "pre.onnx"
        preprocess(src, pre)
        model = onnx.load(str(pre))
        names = [i.name for i in model.graph.input]
        exclude = _float_matmuls(model)
        quantize_static(
            str(pre),
            str(tmp),
            FeedReader(_rebatch(feeds), names),
            quant_format=fmt,
            op_types_to_quantize=op_types,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            activation_type=act,
            calibrate_method=calib,
            nodes_to_exclude=exclude + list(recipe.exclude),
            extra_options={
                # TensorRT needs zero-point 0; for U8 on the CPU an asymmetric range is free and finer.
                "ActivationSymmetric": recipe.activations == "s8",
                "WeightSymmetric": True,
                "CalibMovingAverage": method == "minmax",
            },
        )
    return {
        "method": method,
        "preset": preset,
        "op_types": op_types,
        "recipe": asdict(recipe) | {"exclude": list(recipe.exclude), "extra_ops": list(recipe.extra_ops)},
        "format": "QDQ" if recipe.format == "qdq" else "QOperator",
        "float_matmuls": len(exclude),
        "float_nodes": len(recipe.exclude),
        "weights": f"int8 {'per-channel' if recipe.per_channel else 'per-tensor'} symmetric"
        + (" (7-bit range)" if recipe.reduce_range else ""),
        "activations": "int8 symmetric" if recipe.activations == "s8" else "uint8 asymmetric",
    }


def quantize_qdq(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], preset: str, method: str = "minmax") -> dict:
    """Write the explicitly quantized (QDQ) artefact of record: :func:`quantize_model` with
    :data:`RECORD_RECIPE`. Returns the calibration record."""
    return quantize_model(src, dst, feeds, preset, method, RECORD_RECIPE)


def with_exclusions(recipe: Recipe, nodes: list[str]) -> Recipe:
    """``recipe`` with ``nodes`` (names in the pre-processed graph) left in float."""
    return replace(recipe, exclude=tuple(sorted(set(recipe.exclude) | set(nodes))))


def qdq_summary(path: Path) -> dict:
    """Op counts of a model: Q/DQ pairs, QOperator ops, float ops that remain, and BatchNormalization
    left unfolded (should be 0)."""
    import onnx

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    qop = sorted({o for o in ops if o.startswith("QLinear") or o in ("ConvInteger", "MatMulInteger")})
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # A Q/DQ graph keeps its Convs as Conv nodes: float only where the weights do not come through a DQ
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return {
        "QuantizeLinear": ops.count("QuantizeLinear"),
        "DequantizeLinear": ops.count("DequantizeLinear"),
        "BatchNormalization": ops.count("BatchNormalization"),
        "qoperator_ops": qop,
        "float_convs": sum(len(n.input) < 2 or n.input[1] not in dequantized for n in convs),
        "qdq_convs": sum(len(n.input) > 1 and n.input[1] in dequantized for n in convs),
        "ops": sorted(set(ops)),
    }
