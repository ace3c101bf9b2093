"""Per-operation latency tables for ``search --cost latency``, measured with the one timing protocol.

Each candidate operation at each (channels, input size, stride) the search skeleton uses is exported to
a tiny ONNX graph (input ``[1, C, size, size]``), for INT8 quantized with ONNX Runtime ``quantize_static``
in Q/DQ format (so the search can prefer operations that quantize well), run on an ONNX Runtime session
and timed by :func:`rkd_edge.devices.latency.measure`; the table stores the median (p50) in ms.

Table format (``format: rkd-edge-latency-table``, version 2)::

    {"format": "rkd-edge-latency-table", "version": 2, "device": "host", "device_name": "...",
     "precision": "fp32" | "int8", "unit": "ms", "statistic": "p50", "batch": 1,
     "backend": "onnxruntime-cpu", "protocol": {...}, "environment": {...},
     "entries": {"op|C|size|stride": ms, ...}}

Version-1 tables (``device``, ``unit``, ``batch``, ``entries`` only) still load.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from rkd_edge import env
from rkd_edge.devices.latency import measure
from rkd_edge.errors import UserError
from rkd_edge.export.quantize import FeedReader
from rkd_edge.io import read_text, strict_json, write_json
from rkd_edge.runtime.bundle import DEFAULT_OPSET
from rkd_edge.runtime.runners.ort import cpu_session

FORMAT = "rkd-edge-latency-table"
VERSION = 2
PRECISIONS = ("fp32", "int8")
# Short windows: a table has a few hundred entries and the machines are shared (DESIGN.md section 6 allows
# the protocol's lengths to be configured).
MAX_MS = 86_400_000.0  # a day: no layer's latency comes near
PROTOCOL = {"warmup_s": 0.05, "min_seconds": 0.15, "min_iterations": 30, "max_seconds": 1.0}


def latency_key(op: str, c: int, size: int, stride: int) -> str:
    return f"{op}|{c}|{size}|{stride}"


def _rebuild_hint() -> str:
    return "build one with rkd-edge devices lut --out FILE (same preset/config as the search)"


def read_table(path: str | Path) -> dict:
    """Load and check the format of a latency table; anything else is one line (UserError)."""
    path = Path(path)
    text = read_text(path, "latency table")  # a FIFO or /dev/zero: one line, not a hang or all the memory
    try:
        table = strict_json(text)  # a key twice, NaN, 1e999 refused
    except (ValueError, RecursionError):
        raise UserError(f"{path} is not JSON, so not a latency table; {_rebuild_hint()}") from None
    if not isinstance(table, dict) or not isinstance(table.get("entries"), dict) or "device" not in table:
        raise UserError(f"{path} is not a latency table (no 'device' and 'entries'); {_rebuild_hint()}")
    if table.get("format", FORMAT) != FORMAT:
        raise UserError(f"{path} is a {table.get('format')!r} file, not a latency table; {_rebuild_hint()}")
    if table.get("unit", "ms") != "ms":
        raise UserError(f"latency table {path} has unit {table.get('unit')!r}; only ms tables are read")
    # 0 < v < a day, compared before any float(v): an int of 400 digits overflows a float; true is not a time
    bad = [
        k
        for k, v in table["entries"].items()
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < MAX_MS
    ]
    if bad:
        raise UserError(f"latency table {path}: entry {bad[0]!r} is not a positive time in ms; {_rebuild_hint()}")
    return table


def check_entries(table: dict, required: Iterable[str], path: str | Path) -> None:
    """The table must hold every key the search will read; says which are missing, in one line."""
    required = sorted(set(required))
    have = table["entries"]
    missing = [k for k in required if k not in have]
    if not missing:
        return
    if len(missing) == len(required):
        sample = next(iter(have), "none")
        raise UserError(
            f"latency table {path} was built for another search skeleton or operation set (its keys look like "
            f"{sample!r}, this search needs e.g. {required[0]!r}); {_rebuild_hint()}"
        )
    raise UserError(
        f"latency table {path} lacks {len(missing)} of the {len(required)} entries this search needs "
        f"(e.g. {missing[0]!r}); {_rebuild_hint()}"
    )


def _calibration(c: int, size: int, n: int = 8, seed: int = 0):
    """Random normal feeds: an op's INT8 latency needs a calibrated graph, not calibrated accuracy."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, c, size, size)).astype(np.float32)} for _ in range(n)]


def export_op(module, c: int, size: int, path: Path, precision: str) -> Path:
    """Export one candidate op to ``path`` (and, for INT8, a Q/DQ copy beside it); returns the model to run."""
    import torch

    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's advice (constant folding ...), once per op: not for users
        torch.onnx.export(
            module,
            (torch.zeros(1, c, size, size),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            opset_version=DEFAULT_OPSET,
            dynamo=False,
        )
    if precision == "fp32":
        return path
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    dst = path.with_suffix(".int8.onnx")
    logging.disable(logging.WARNING)  # quantize_static's "consider pre-processing" advice, once per op
    try:
        quantize_static(
            str(path),
            str(dst),
            FeedReader(_calibration(c, size), ["x"]),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    except Exception as exc:  # noqa: BLE001 - an op with nothing to quantize stays FP32, and says so
        if "no node" in str(exc).lower():
            return path
        raise
    finally:
        logging.disable(logging.NOTSET)
    return dst


def measure_entries(
    keys: list[tuple[str, int, int, int]],
    make_op: Callable[[str, int, int], object],
    precision: str = "fp32",
    threads: int = 1,
    protocol: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Median latency (ms) of every ``(op, C, size, stride)`` on ONNX Runtime CPU by the timing protocol.

    Args:
        keys: The operations and geometries to measure.
        make_op: ``make_op(op, C, stride)`` builds the candidate (``rkd_edge.nas.operations.build_op``).
        precision: ``fp32`` or ``int8`` (Q/DQ by ``quantize_static``).
        threads: ONNX Runtime intra-op threads (1: a per-operation table on a shared machine).
    """
    if precision not in PRECISIONS:
        raise UserError(f"latency tables are measured in {' or '.join(PRECISIONS)}, not {precision!r}")
    proto = {**PROTOCOL, **(protocol or {})}
    out = {}
    with tempfile.TemporaryDirectory(prefix="rkd-lut-") as tmp:
        for i, (op, c, size, stride) in enumerate(keys):
            key = latency_key(op, c, size, stride)
            path = export_op(make_op(op, c, stride), c, size, Path(tmp) / f"op{i}.onnx", precision)
            sess = cpu_session(path, threads)
            feeds = {"x": np.random.default_rng(i).standard_normal((1, c, size, size)).astype(np.float32)}
            r = measure(lambda s=sess, f=feeds: s.run(None, f), 1, **proto)
            out[key] = round(r["p50_ms"], 6)
            if progress:
                progress(i + 1, len(keys))
    return out


def make_table(
    entries: dict[str, float], precision: str, device: str = "host", device_name: str | None = None, **extra
) -> dict:
    """The table record (format version 2) around measured entries."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "device": device,
        "device_name": device_name or env.cpu_model(),
        "precision": precision,
        "unit": "ms",
        "statistic": "p50",
        "batch": 1,
        "backend": "onnxruntime-cpu",
        "protocol": {"timer": "rkd_edge.devices.latency.measure", **PROTOCOL},
        "environment": env.environment(),
        **extra,
        "entries": entries,
    }


def write_table(table: dict, path: str | Path) -> Path:
    write_json(path, table)
    return Path(path)
