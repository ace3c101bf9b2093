"""Is INT8 worth it here? INT8/FP32 latency ratios per model, measured side by side, and per-node
ONNX Runtime profiles that say where the time goes (torch-free; export/README.md has the findings).

The export calls :func:`measure_ratios` on its work folder and keeps INT8 as a model's default only
where it won; benchmarks/int8_speed.py calls the same function with a longer budget.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from rkd_edge import progress
from rkd_edge.channel_ids import channel_id
from rkd_edge.devices.latency import interleaved
from rkd_edge.runtime.bundle import DEFAULT_OPSET, MODELS
from rkd_edge.runtime.runners.ort import cpu_session
from rkd_edge.stats import wilson

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
        paths = {form: int8_path(mdir, name, form) for form in ("fp32", *candidates)}
        paths = {form: path for form, path in paths.items() if form == "fp32" or path.is_file()}
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

    enc, tx, rx = (session(int8_path(models, n, variant.get(n, "fp32")), 0) for n in MODELS)
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
        cpu = int8_path(mdir, name, "int8-cpu")
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
