"""INT8 diagnostics for ``int8_speed.py`` (not shipped: the export needs none of them): ONNX Runtime's
per-node profile, the slower quantized kernels, the time per convolution kind, a single-Conv width sweep,
and the transmitter chain end to end."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from rkd_edge.devices.latency import interleaved
from rkd_edge.export.int8 import int8_path, model_feeds, session, single_conv
from rkd_edge.export.quantize import CPU_RECIPE, RECORD_RECIPE, quantize_model


def profile_nodes(path: Path, feed: dict[str, np.ndarray], threads: int = 1, runs: int = 200) -> dict:
    """Per-node time of one model under ONNX Runtime's profiler, after its graph optimisations.

    Returns:
        ``{"nodes": [{"name", "op", "us"}] (mean us per run, slowest first), "by_op": {op: us},
        "total_us": float, "runs": int}``. ``op`` is the kernel that ran (e.g. ``QLinearConv`` where
        ONNX Runtime fused a DQ -> Conv -> Q group, ``Conv`` where it stayed float).
    """
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, threads, profile=os.path.join(tmp, "prof"))
        for _ in range(runs):  # the profiler is on from the first run; averaging over many dilutes warm-up
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        rec = per_node.setdefault(name, {"name": name, "op": e["args"].get("op_name", "?"), "us": 0.0, "n": 0})
        rec["us"] += e["dur"]
        rec["n"] += 1
    total_runs = runs
    nodes = sorted(
        ({"name": r["name"], "op": r["op"], "us": r["us"] / total_runs} for r in per_node.values()),
        key=lambda r: -r["us"],
    )
    by_op: dict[str, float] = defaultdict(float)
    for r in nodes:
        by_op[r["op"]] += r["us"]
    return {
        "nodes": nodes,
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "total_us": sum(by_op.values()),
        "runs": total_runs,
    }


def conv_width_sweep(
    widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256),
    kinds: tuple[str, ...] = ("pointwise", "dense3x3", "depthwise3x3"),
    recipes: dict | None = None,
    batch: int = 32,
    size: int = 14,
    threads: int = 1,
    seconds: float = 1.5,
) -> list[dict]:
    """INT8/FP32 p50 ratio of a single Conv+ReLU at each channel width (interleaved per width): does the
    student's width decide whether integer kernels pay? Returns one row per (kind, width) with
    ``fp32_ms`` and ``ratio_<recipe>`` for each quantized recipe."""
    recipes = recipes or {"qdq_s8s8": RECORD_RECIPE, "cpu": CPU_RECIPE}
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for c in widths:
                src = Path(tmp) / f"{kind}{c}.onnx"
                single_conv(src, c, 1 if kind == "pointwise" else 3, kind.startswith("depthwise"), size)
                calib = [{"x": np.maximum(rng.standard_normal((8, c, size, size)), 0).astype(np.float32)}] * 4
                paths = {"fp32": src}
                for label, recipe in recipes.items():
                    paths[label] = Path(tmp) / f"{kind}{c}.{label}.onnx"
                    quantize_model(src, paths[label], calib, "encoder", "minmax", recipe)
                x = {"x": np.maximum(rng.standard_normal((batch, c, size, size)), 0).astype(np.float32)}
                sess = {k: session(p, threads) for k, p in paths.items()}
                res = interleaved(
                    {k: (lambda s=s, x=x: s.run(None, x)) for k, s in sess.items()},
                    batch,
                    rounds=3,
                    per_round_s=seconds / 3 / len(sess),
                    warmup_s=0.1,
                )
                f = res["fp32"]["p50_ms"]
                row = {"kind": kind, "channels": c, "fp32_ms": f}
                row |= {f"ratio_{k}": res[k]["p50_ms"] / f for k in recipes}
                rows.append(row)
    return rows


def measure_end_to_end(
    work: Path, forms: dict[str, str], threads: int = 1, seconds: float = 4.0, batch: int = 32
) -> dict[str, float]:
    """Transmitter end to end (encoder then tx) in FP32 against the given INT8 forms, interleaved.

    Returns:
        ``{"ratio": int8 p50 / fp32 p50, "fp32_ms": p50, "int8_ms": p50}``.
    """
    mdir = Path(work) / "models"
    f = model_feeds(mdir, batch)
    tx_cond = {k: v for k, v in f["tx"].items() if k != "features"}
    chains = {}
    for label, pick in (("fp32", {}), ("int8", forms)):
        enc = session(int8_path(mdir, "encoder", pick.get("encoder", "fp32")), threads)
        tx = session(int8_path(mdir, "tx", pick.get("tx", "fp32")), threads)
        chains[label] = lambda enc=enc, tx=tx: tx.run(None, {"features": enc.run(None, f["encoder"])[0], **tx_cond})
    rounds = 4
    res = interleaved(chains, batch, rounds=rounds, per_round_s=seconds / rounds / 2, warmup_s=0.2)
    return {
        "ratio": res["int8"]["p50_ms"] / res["fp32"]["p50_ms"],
        "fp32_ms": res["fp32"]["p50_ms"],
        "int8_ms": res["int8"]["p50_ms"],
    }


def _base_name(node: str) -> str:
    """The exported node a profiled kernel came from: ONNX Runtime renames fused and re-laid-out nodes
    (``<name>_token_N`` for a DQ->Conv->Q group, ``<name>_output_0_nchwc`` for NCHWc, ``<name>_quant``)."""
    prev = None
    while prev != node:  # suffixes stack: "<conv>_quant_token_7"
        prev, node = node, re.sub(r"(_token_\d+|_output_0_nchwc|_quant)$", "", node)
    return node


def slower_nodes(fp32: Path, int8: Path, feed: dict[str, np.ndarray], threads: int = 1, runs: int = 100) -> list[dict]:
    """Quantized kernels that measured slower than the same node in FP32 (per-node profiles of both).

    Returns:
        ``[{"name", "op", "fp32_us", "int8_us"}]``, worst first; ``name`` is the exported node's name, the
        one ``nodes_to_exclude`` takes. Nodes ONNX Runtime fused away in FP32 (no kernel of their own)
        are left out: they have no per-node FP32 time to compare with.
    """
    a = profile_nodes(fp32, feed, threads, runs)
    q = profile_nodes(int8, feed, threads, runs)
    fp: dict[str, float] = defaultdict(float)
    for n in a["nodes"]:
        fp[_base_name(n["name"])] += n["us"]
    out = []
    for n in q["nodes"]:
        name = _base_name(n["name"])
        integer = n["op"] in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm")
        if integer and fp.get(name) and n["us"] > fp[name]:
            out.append({"name": name, "op": n["op"], "fp32_us": fp[name], "int8_us": n["us"]})
    return sorted(out, key=lambda r: r["fp32_us"] - r["int8_us"])


def conv_kinds(model_path: Path) -> dict[str, str]:
    """``{Conv node name: "depthwise k3 C=10" | "pointwise C=20" | "dense k3 C=30"}`` of an FP32 model, so
    that a profile's kernels can be summed by the kind and width of convolution they ran."""
    model = onnx.load(str(model_path), load_external_data=False)  # shapes only: no tensor data read
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in shapes:
            continue
        c_out, c_in_g, kh, _ = shapes[n.input[1]]
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if group > 1 and c_in_g == 1:
            out[n.name] = f"depthwise k{kh} C={c_out}"
        elif kh == 1:
            out[n.name] = f"pointwise C={c_out}"
        else:
            out[n.name] = f"dense k{kh} C={c_out}"
    # ONNX Runtime's NCHWc Conv+Relu fusion names the fused kernel after the Relu's output
    producer = {o: n.name for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "Relu" and producer.get(n.input[0]) in out:
            out[n.name] = out[producer[n.input[0]]]
    return out


def by_conv_kind(profile: dict, kinds: dict[str, str]) -> dict[str, float]:
    """A :func:`profile_nodes` result summed by convolution kind (:func:`conv_kinds`); every other kernel
    under its op type (``Q/DQ`` for QuantizeLinear/DequantizeLinear)."""
    out: dict[str, float] = defaultdict(float)
    for n in profile["nodes"]:
        base = _base_name(n["name"])
        if base in kinds:
            out[kinds[base]] += n["us"]
        elif n["op"] in ("QuantizeLinear", "DequantizeLinear"):
            out["Q/DQ"] += n["us"]
        else:
            out[n["op"]] += n["us"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
