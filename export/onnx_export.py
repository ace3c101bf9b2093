"""Export a trained run to ONNX, check it, simplify it, and verify parity with ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from rkd_edge.errors import UserError
from rkd_edge.io import atomic_path
from rkd_edge.runtime.bundle import DEFAULT_OPSET

# The newest opset the TorchScript exporter (dynamo=False, used here) writes.
MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter cannot write or the codec cannot be written in (one line)."""
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise UserError(
            f"--opset {opset} is not supported: the codec needs opset {DEFAULT_OPSET} or newer (LayerNormalization) "
            f"and this PyTorch exports up to {MAX_OPSET}; use --opset {DEFAULT_OPSET}..{MAX_OPSET} or leave it out"
        )


def export_onnx(
    module: torch.nn.Module,
    inputs: tuple,
    input_names: list[str],
    output_names: list[str],
    path: Path,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
) -> dict:
    """Export with a dynamic batch axis, run ``onnx.checker`` and shape inference, simplify with onnxslim.

    Returns:
        ``{"inputs": [...], "outputs": [...]}`` with names, shapes (``batch`` symbolic) and dtypes.
    """
    check_opset(opset)
    module = module.eval()
    dyn = {n: {0: "batch"} for n in input_names + output_names}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(tmp),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dyn,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
        model = onnx.load(str(tmp))
        if simplify:
            import onnxslim

            model = onnxslim.slim(model)
        onnx.checker.check_model(model, full_check=True)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.save(model, str(tmp))
    return describe_io(model)


def describe_io(model: onnx.ModelProto) -> dict:
    def rec(v):
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return {"inputs": [rec(v) for v in model.graph.input], "outputs": [rec(v) for v in model.graph.output]}


def parity(module: torch.nn.Module, session, feeds: list[tuple], input_names: list[str]) -> dict:
    """Max absolute error and minimum cosine between PyTorch and ONNX Runtime over real inputs.

    Compares every output (for ``tx``: symbols and mask) on every feed.
    """
    worst, cos_min = 0.0, 1.0
    with torch.no_grad():
        for inputs in feeds:
            ref = module(*inputs)
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = session.run(None, {n: t.numpy() for n, t in zip(input_names, inputs, strict=True)})
            for r, g in zip(ref, got, strict=True):
                r = r.numpy().astype(np.float64)
                g = g.astype(np.float64)
                worst = max(worst, float(np.abs(r - g).max()))
                num = (r * g).sum(-1) if r.ndim == 2 else (r * g).reshape(len(r), -1).sum(-1)
                den = np.linalg.norm(r.reshape(len(r), -1), axis=-1) * np.linalg.norm(g.reshape(len(g), -1), axis=-1)
                cos_min = min(cos_min, float((num / np.maximum(den, 1e-12)).min()))
    return {"max_abs_error": worst, "cosine": cos_min}
