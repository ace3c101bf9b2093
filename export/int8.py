"""Is INT8 worth it here? INT8/FP32 latency ratios per model, measured side by side, and per-node
ONNX Runtime profiles that say where the time goes (torch-free; export/README.md has the findings).

The export calls :func:`measure_ratios` on its work folder and keeps INT8 as a model's default only
where it won; benchmarks/int8_speed.py calls the same function with a longer budget.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from rkd_edge import progress
from rkd_edge.channel_ids import channel_id
from rkd_edge.devices.latency import interleaved
from rkd_edge.runtime.bundle import DEFAULT_OPSET
from rkd_edge.runtime.runners.ort import cpu_session
from rkd_edge.stats import wilson

MODELS = ("encoder", "tx", "rx")
BATCHES = (1, 32)
# INT8 must be at least this much faster to be the default: below ~3 % the ordering is within the
# noise of a short interleaved run on a shared machine.
WIN_MARGIN = 0.97


def session(path: Path, threads: int = 1, profile: str | None = None):
    """An ONNX Runtime CPU session as a deployment gets it (:func:`session_options`: all graph
    optimisations, except that a Q/DQ model stays unfused on a CPU whose INT8 kernels saturate).

    Args:
        path: ONNX model.
        threads: Intra-op threads (0 = ONNX Runtime's default, all cores).
        profile: Prefix for a profiling JSON file; ``None`` for no profiling.
    """
    profiling = {"enable_profiling": True, "profile_file_prefix": profile} if profile else {}
    return cpu_session(path, threads, inter_op_num_threads=1, **profiling)


def model_feeds(models: Path, batch: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """One input per model at ``batch``, chained through the FP32 models as in deployment:
    ``image`` ~ N(0, 1) (normalised pixels) -> encoder -> tx (snr 5 dB, the largest k, AWGN) -> rx.

    Args:
        models: The ``models/`` folder of a bundle (``encoder.onnx``, ``tx.onnx``, ``rx.onnx``).
    """
    rng = np.random.default_rng(seed)
    enc, tx = session(models / "encoder.onnx"), session(models / "tx.onnx")
    shape = enc.get_inputs()[0].shape
    image = rng.standard_normal((batch, *shape[1:])).astype(np.float32)
    features = enc.run(None, {"image": image})[0]
    k_max = tx.get_outputs()[0].shape[1]
    cond = {"snr_db": np.full(batch, 5.0, np.float32), "channel": np.zeros(batch, np.int64)}
    tx_in = {"features": features, "k": np.full(batch, k_max, np.int64), **cond}
    symbols, mask = tx.run(None, tx_in)
    rx_in = {"symbols": symbols, "mask": mask, **cond}
    rx_names = {i.name for i in session(models / "rx.onnx").get_inputs()}
    if "csi" in rx_names:
        rx_in["csi"] = np.stack([np.ones_like(mask), np.zeros_like(mask)], -1)
    return {"encoder": {"image": image}, "tx": tx_in, "rx": rx_in}


def measure_ratios(
    work: Path,
    candidates: tuple[str, ...] = ("int8",),
    threads: int = 1,
    seconds: float = 3.0,
    models: tuple[str, ...] = MODELS,
    batches: tuple[int, ...] = BATCHES,
) -> dict[str, dict]:
    """INT8/FP32 p50 latency ratios of each model of a bundle work folder, interleaved.

    Args:
        work: Bundle folder with ``models/<name>.onnx`` and ``models/<name>.<candidate>.onnx``.
        candidates: Quantized forms to compare with FP32 (file suffixes): ``int8`` (the Q/DQ artefact of
            record) and ``int8-cpu`` (the ONNX Runtime CPU form) where it was written.
        threads: Intra-op threads of every session (0 = all cores).
        seconds: Timing budget per model and batch, shared by the variants (a short one for the export).
        models, batches: What to measure.

    Returns:
        ``{model: {"ratio_b1", "ratio_b32", "winner", "best_int8", "candidates": {c: {"ratio_b1",
        "ratio_b32"}}, "p50_ms": {variant: {"1", "32"}}}}``; ``ratio_bN`` is the best candidate's
        (the one with the lowest geometric mean of its ratios), ``winner`` is that candidate when it is at
        least 3 % faster than FP32 at every batch, else ``fp32``.
    """
    mdir = Path(work) / "models"
    feeds = {b: model_feeds(mdir, b) for b in batches}
    out: dict[str, dict] = {}
    for name in models:
        paths = {"fp32": mdir / f"{name}.onnx"}
        paths |= {c: mdir / f"{name}.{c}.onnx" for c in candidates if (mdir / f"{name}.{c}.onnx").is_file()}
        sessions = {v: session(p, threads) for v, p in paths.items()}
        p50: dict[str, dict[str, float]] = defaultdict(dict)
        for b in batches:
            f = feeds[b][name]
            fns = {v: (lambda s=s, f=f: s.run(None, f)) for v, s in sessions.items()}
            rounds = 4
            res = interleaved(fns, b, rounds=rounds, per_round_s=seconds / rounds / len(fns), warmup_s=0.2)
            for v, r in res.items():
                p50[v][str(b)] = r["p50_ms"]
        cands = {
            c: {f"ratio_b{b}": p50[c][str(b)] / p50["fp32"][str(b)] for b in batches} for c in paths if c != "fp32"
        }
        rec: dict = {"candidates": cands, "p50_ms": dict(p50), "threads": threads}
        if cands:
            best = min(cands, key=lambda c: float(np.prod(list(cands[c].values()))))
            rec |= cands[best]
            rec["best_int8"] = best
            rec["winner"] = best if max(cands[best].values()) <= WIN_MARGIN else "fp32"
        else:
            rec["winner"] = "fp32"
        out[name] = rec
    return out


def choose_default(ratios: dict[str, dict], accuracy_drop_pts: dict[str, float], max_drop: float = 0.5) -> dict:
    """Per-model default precision: the measured speed winner, unless INT8 of that model loses more than
    ``max_drop`` accuracy points (then FP32)."""
    return {
        name: r["winner"] if r["winner"] == "fp32" or accuracy_drop_pts.get(name, 0.0) <= max_drop else "fp32"
        for name, r in ratios.items()
    }


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


def single_conv(path: Path, channels: int, kernel: int, depthwise: bool, size: int) -> None:
    """Write a one-Conv (+ReLU) ONNX model: ``x: [B, C, size, size] float32`` -> ``[B, C, size, size]``,
    ``C = channels``, stride 1, same padding; ``depthwise`` sets ``group = C``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(channels)
    cin = 1 if depthwise else channels
    w = (rng.standard_normal((channels, cin, kernel, kernel)) / np.sqrt(cin * kernel * kernel)).astype(np.float32)
    b = np.zeros(channels, np.float32)
    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["c"], pads=[kernel // 2] * 4, group=channels if depthwise else 1, name="conv"
    )
    relu = helper.make_node("Relu", ["c"], ["y"], name="relu")
    graph = helper.make_graph(
        [conv, relu],
        "single_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, size, size])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    onnx.save(model, str(path))


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
    from rkd_edge.export.quantize import CPU_RECIPE, RECORD_RECIPE, quantize_model

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


def chain_accuracy(
    models: Path,
    variant: dict[str, str],
    images: np.ndarray,
    labels: np.ndarray,
    points: list[tuple[str, float]],
    k: int,
    channel_kwargs: dict,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of the encoder -> tx -> channel -> rx chain with each model in the given precision.

    The channel is the training code's (torch, imported lazily), with the same noise for every variant
    (seeded per point), so differences between variants are the models' alone.

    Args:
        models: A bundle's ``models/`` folder.
        variant: ``{model: "fp32" | "int8" | "int8-cpu"}`` (file suffix; ``fp32`` is ``<model>.onnx``).
        images: ``[N, C, H, W] float32``, normalised as the encoder expects.
        labels: ``[N] int64`` class indices.
        points: ``(channel, snr_db)`` pairs to evaluate.
        k: Complex symbols sent.
        channel_kwargs: ``mode``, ``csi``, ``k_factor`` of the fading channels.

    Returns:
        ``{"<channel>@<snr>": accuracy in [0, 1]}``.
    """
    import torch

    from rkd_edge.channel import create_channel

    def path(name):
        v = variant.get(name, "fp32")
        return models / (f"{name}.onnx" if v == "fp32" else f"{name}.{v}.onnx")

    enc, tx, rx = (session(path(n), 0) for n in MODELS)
    rx_csi = "csi" in {i.name for i in rx.get_inputs()}
    feats = np.concatenate([enc.run(None, {"image": images[i : i + 256]})[0] for i in range(0, len(images), 256)])
    out = {}
    for p, (name, snr) in enumerate(points):
        g = torch.Generator().manual_seed(seed * 1000 + p)
        ch = create_channel(name, **channel_kwargs)
        n = len(feats)
        cond = {"snr_db": np.full(n, snr, np.float32), "channel": np.full(n, channel_id(name), np.int64)}
        sym, mask = tx.run(None, {"features": feats, "k": np.full(n, k, np.int64), **cond})
        o = ch(torch.from_numpy(sym), torch.from_numpy(cond["snr_db"]), torch.from_numpy(mask), g)
        feed = {"symbols": o.y.numpy().astype(np.float32), "mask": mask, **cond}
        if rx_csi:
            feed["csi"] = o.csi.numpy().astype(np.float32)
        pred = np.argmax(rx.run(None, feed)[0], -1)
        out[f"{name}@{snr:g}"] = float((pred == labels).mean())
    return out


def accuracy_changes(models: Path, variants: dict[str, str], **kw) -> dict[str, dict]:
    """Accuracy change of each model's quantized form, swapped in alone (the others FP32).

    Args:
        models: A bundle's ``models/`` folder.
        variants: ``{model: quantized suffix}`` to test, e.g. ``{"encoder": "int8-cpu", "tx": "int8"}``.
        **kw: Passed to :func:`chain_accuracy` (images, labels, points, k, channel_kwargs, seed).

    Returns:
        ``{model: {"drop_pts": largest FP32 - INT8 accuracy over the points, in points (positive = INT8
        worse), "fp32": {point: acc}, "int8": {point: acc}}}``.
    """
    base = chain_accuracy(models, {}, **kw)
    out = {}
    for name, v in variants.items():
        acc = chain_accuracy(models, {name: v}, **kw)
        out[name] = {"drop_pts": max(100 * (base[p] - acc[p]) for p in base), "fp32": base, "int8": acc}
    return out


def select_precisions(
    work: Path,
    images: np.ndarray,
    labels: np.ndarray,
    k: int,
    channel_kwargs: dict,
    seed: int = 0,
    seconds: float = 3.0,
    threads: int = 1,
    snrs: tuple[float, ...] = (0.0, 10.0, 20.0),
    max_drop: float = 0.5,
) -> tuple[dict[str, dict], dict[str, str]]:
    """What the export records for ``--int8``: per model, the measured INT8/FP32 latency ratio, the accuracy
    change, and the default precision (INT8 only where it measured faster and lost at most ``max_drop``
    points at every evaluated point).

    A ``<model>.int8-cpu.onnx`` (the ONNX Runtime CPU form) is kept only where it beat the Q/DQ model of
    record; otherwise it is deleted here, before the manifest hashes the folder.

    Args:
        work: Bundle work folder (``models/<name>.onnx``, ``.int8.onnx``, optional ``.int8-cpu.onnx``).
        images: ``[N, C, H, W] float32`` normalised test images; ``labels``: ``[N] int64``.
        k: Complex symbols for the accuracy points (the bundle's largest).
        channel_kwargs: ``mode``, ``csi``, ``k_factor`` of the fading channels.
        seconds: Timing budget per model (shared by both batches and all variants).

    Returns:
        ``(report, default_precision)``: ``report[model]`` has ``ratio_b1``, ``ratio_b32`` (best INT8
        form over FP32, p50, interleaved), ``winner``, ``form`` (``int8`` or ``int8-cpu``),
        ``accuracy_change_pts`` (INT8 minus FP32, the worst point), ``default``; ``default_precision`` is
        ``{model: "fp32" | "int8"}``.
    """
    mdir = Path(work) / "models"
    points = [(c, s) for c in ("awgn", "rayleigh") for s in snrs]
    kw = {"images": images, "labels": labels, "points": points, "k": k, "channel_kwargs": channel_kwargs, "seed": seed}
    # A CPU form that loses accuracy is no candidate, however fast: it is dropped before the timing.
    cpu_forms = {name: "int8-cpu" for name in MODELS if int8_path(mdir, name, "int8-cpu").is_file()}
    for name, a in (accuracy_changes(mdir, cpu_forms, **kw) if cpu_forms else {}).items():
        if a["drop_pts"] > max_drop:
            progress.log(f"int8 {name}: the ONNX Runtime CPU form loses {a['drop_pts']:.1f} points; not kept")
            int8_path(mdir, name, "int8-cpu").unlink()
    ratios = measure_ratios(work, ("int8", "int8-cpu"), threads=threads, seconds=seconds)
    best = {name: r.get("best_int8", "int8") for name, r in ratios.items()}
    acc = accuracy_changes(mdir, best, **kw)
    drops = {name: a["drop_pts"] for name, a in acc.items()}
    chosen = choose_default(ratios, drops, max_drop)
    report, default = {}, {}
    for name, r in ratios.items():
        form = best[name]
        cpu = mdir / f"{name}.int8-cpu.onnx"
        if form != "int8-cpu" and cpu.is_file():
            cpu.unlink()
        default[name] = "fp32" if chosen[name] == "fp32" else "int8"
        fp32 = acc[name]["fp32"]
        report[name] = {
            "ratio_b1": round(r["ratio_b1"], 3),
            "ratio_b32": round(r["ratio_b32"], 3),
            "form": form,
            "winner": r["winner"],
            "accuracy_change_pts": round(-drops[name], 2) + 0.0,  # + 0.0: no "-0.00 pts" for no change
            "accuracy_points": {p: [round(a, 4), round(acc[name]["int8"][p], 4)] for p, a in acc[name]["fp32"].items()},
            # what the points are of (DESIGN.md: k, trials, n and an interval next to every accuracy); the
            # same noise for both, so their difference is far tighter than either interval
            "accuracy_of": {
                "images": len(labels),
                "k": k,
                "trials": 1,
                "seed": seed,
                "channel": channel_kwargs,
                "ci95": {p: [round(v, 4) for v in wilson(a * len(labels), len(labels))] for p, a in fp32.items()},
            },
            "default": default[name],
            "candidates": {c: {b: round(v, 3) for b, v in cr.items()} for c, cr in r["candidates"].items()},
            "p50_ms": {v: {b: round(t, 4) for b, t in d.items()} for v, d in r["p50_ms"].items()},
            "threads": threads,
        }
    return report, default


def int8_path(models: Path, name: str, form: str) -> Path:
    """The file of ``name`` in ``form`` (``fp32``, ``int8`` or ``int8-cpu``) under a bundle's ``models/``."""
    return models / (f"{name}.onnx" if form == "fp32" else f"{name}.{form}.onnx")


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
    import onnx

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
