"""INT8 against FP32 on ONNX Runtime CPU, per model and end to end, side by side (interleaved), at one
thread and all threads; accuracy drop of the INT8 chain at every evaluated SNR of AWGN and Rayleigh.

    python benchmarks/int8_speed.py --bundle runs/qs-bundle
    python benchmarks/int8_speed.py --width-sweep          # single Conv, FP32 vs INT8 by channel width
    python benchmarks/int8_speed.py --bundle B --profile   # per-node profile of the encoder, FP32 vs INT8
    python benchmarks/int8_speed.py --bundle B --recipes   # the quantization knobs, one at a time, on the encoder
    python benchmarks/int8_speed.py --fm-shaped runs/fm-shaped  # untrained fashion-mnist-shaped encoder (speed only)

The INT8 form of each model is the one the bundle ships for ONNX Runtime on a CPU (the ``int8-cpu`` file
where the export kept it, else the Q/DQ artefact of record); the Q/DQ record is measured too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def _load() -> dict:
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def speed(bundle: Path, threads: int, seconds: float) -> dict:
    """Ratios of one thread setting: per model at batch 1 and 32, and encoder + tx at batch 32."""
    from int8_profile import measure_end_to_end

    from rkd_edge.export.int8 import measure_ratios

    r = measure_ratios(bundle, ("int8", "int8-cpu"), threads=threads, seconds=seconds)
    forms = {m: ("int8-cpu" if "int8-cpu" in v["candidates"] else "int8") for m, v in r.items()}
    e2e = measure_end_to_end(bundle, forms, threads=threads, seconds=seconds)
    ratios = {
        m: {
            "1": round(v["candidates"][forms[m]]["ratio_b1"], 3),
            "32": round(v["candidates"][forms[m]]["ratio_b32"], 3),
        }
        for m, v in r.items()
    }
    ratios["end_to_end"] = {"32": round(e2e["ratio"], 3)}
    detail = {m: {"form": forms[m], "candidates": v["candidates"], "p50_ms": v["p50_ms"]} for m, v in r.items()} | {
        "end_to_end": e2e
    }
    return {"threads": threads, "ratios": ratios, "detail": detail}


def accuracy(bundle: Path, forms: dict[str, str], trials: int) -> dict:
    """FP32 and all-INT8 chains on the whole test split at every SNR of the bundle's evaluation grid."""
    from rkd_edge.config import parse_range, read_config
    from rkd_edge.export.int8 import chain_accuracy
    from rkd_edge.io import read_json
    from rkd_edge.methods import method_config
    from rkd_edge.rundir import load_splits

    cfg = method_config(read_config(bundle / "config.json", "bundle config"))
    split = load_splits(cfg).test
    images, labels = split.transform(split.images).numpy(), split.labels
    k = read_json(bundle / "manifest.json")["symbols"]["max"]
    points = [(c, s) for c in ("awgn", "rayleigh") for s in parse_range(cfg.evaluate.snr_db)]
    cc = cfg.codec
    kw = {"mode": cc.rayleigh_mode, "csi": cc.csi, "k_factor": cc.rician_k}
    fp, q = {}, {}
    for t in range(trials):
        a = chain_accuracy(bundle / "models", {}, images, labels, points, k, kw, seed=t)
        b = chain_accuracy(bundle / "models", forms, images, labels, points, k, kw, seed=t)
        for p in a:
            fp[p] = fp.get(p, 0.0) + a[p] / trials
            q[p] = q.get(p, 0.0) + b[p] / trials
    drops = {p: round(100 * (fp[p] - q[p]), 3) for p in fp}
    return {"k": k, "n_test": len(labels), "trials": trials, "fp32": fp, "int8": q, "drop_pts": drops}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle")
    ap.add_argument("--seconds", type=float, default=4.0, help="timing budget per model and thread setting")
    ap.add_argument("--trials", type=int, default=1, help="noise draws per accuracy point")
    ap.add_argument("--width-sweep", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--recipes", action="store_true")
    ap.add_argument("--fm-shaped", help="write an untrained fashion-mnist-shaped encoder to DIR/models (speed only)")
    args = ap.parse_args()

    from rkd_edge.progress import set_quiet

    set_quiet(True)
    if args.width_sweep:
        return width_sweep()
    if args.fm_shaped:
        return fm_shaped(Path(args.fm_shaped))
    if not args.bundle:
        ap.error("--bundle is required (or --width-sweep)")
    bundle = Path(args.bundle)
    if args.profile:
        return profile(bundle)
    if args.recipes:
        return recipes(bundle, args.seconds)
    load_before = _load()
    runs = [speed(bundle, t, args.seconds) for t in (1, 0)]
    forms = {m: v["form"] for m, v in runs[0]["detail"].items() if m != "end_to_end"}
    acc = accuracy(bundle, forms, args.trials)
    load_after = _load()
    one, every = runs
    every["threads"] = f"all ({os.cpu_count()})"
    data = {
        "bundle": args.bundle,
        "threads": 1,
        "ratios": one["ratios"],
        "max_accuracy_drop_pts": max(acc["drop_pts"].values()),
        "all_threads": {"threads": every["threads"], "ratios": every["ratios"]},
        "forms": forms,
        "targets": {"encoder": {"1": 1.0, "32": 0.8}, "end_to_end": {"32": 0.9}, "max_accuracy_drop_pts": 0.5},
        "machine_load": {"before": load_before, "after": load_after},
        "detail": {"1": one["detail"], "all": every["detail"]},
        "accuracy": acc,
    }
    rows = []
    for m in ("encoder", "tx", "rx", "end_to_end"):
        for b in ("1", "32"):
            if b in one["ratios"][m]:
                rows.append([m, forms.get(m, "chain"), b, f"{one['ratios'][m][b]:.2f}", f"{every['ratios'][m][b]:.2f}"])
    md = md_table(["model", "INT8 form", "batch", "INT8/FP32 p50, 1 thread", "all threads"], rows)
    worst = max(acc["drop_pts"], key=acc["drop_pts"].get)
    md += (
        f"\n\nAccuracy (whole test split, k={acc['k']}, {acc['trials']} noise draw(s) per point, all three models "
        f"INT8): largest drop **{acc['drop_pts'][worst]:.2f} points** at {worst} over {len(acc['drop_pts'])} "
        f"points (AWGN and Rayleigh at every evaluated SNR).\n\nMachine load (1-min load average on "
        f"{load_before['cpus']} CPUs, shared): {load_before['loadavg_1m']} before, {load_after['loadavg_1m']} after; "
        "ratios are interleaved so the load hits FP32 and INT8 alike.\n"
    )
    cmd = f"python benchmarks/int8_speed.py --bundle {args.bundle} --seconds {args.seconds:g} --trials {args.trials}"
    print(record("int8_speed", data, md, cmd))


def width_sweep() -> None:
    from int8_profile import conv_width_sweep

    load = _load()
    rows = conv_width_sweep()
    md = md_table(
        ["conv", "channels", "FP32 p50 ms (b32, 14x14)", "INT8 Q/DQ S8S8 / FP32", "INT8 CPU form / FP32"],
        [
            [r["kind"], r["channels"], f"{r['fp32_ms']:.3f}", f"{r['ratio_qdq_s8s8']:.2f}", f"{r['ratio_cpu']:.2f}"]
            for r in rows
        ],
    )
    md += f"\n\n1 thread, interleaved; machine 1-min load average {load['loadavg_1m']} on {load['cpus']} CPUs.\n"
    print(
        record(
            "int8_width_sweep",
            {"threads": 1, "batch": 32, "size": 14, "rows": rows, "load": load},
            md,
            "python benchmarks/int8_speed.py --width-sweep",
        )
    )


def profile(bundle: Path) -> None:
    """Per-node ONNX Runtime profile of the encoder, FP32 against each INT8 form, batch 32 and 1, 1 thread."""
    from int8_profile import by_conv_kind, conv_kinds, profile_nodes

    from rkd_edge.export.int8 import session

    mdir = bundle / "models"
    out, rows, kind_rows = {}, [], []
    kinds = conv_kinds(mdir / "encoder.onnx")
    shape = session(mdir / "encoder.onnx").get_inputs()[0].shape[1:]
    for b in (32, 1):
        feed = {"image": np.random.default_rng(b).standard_normal((b, *shape)).astype(np.float32)}
        per_kind = {}
        for form in ("fp32", "int8", "int8-cpu"):
            p = mdir / ("encoder.onnx" if form == "fp32" else f"encoder.{form}.onnx")
            if not p.is_file():
                continue
            prof = profile_nodes(p, feed, 1, runs=100 if b == 32 else 400)
            per_kind[form] = by_conv_kind(prof, kinds)
            out[f"{form}_b{b}"] = prof | {"by_conv_kind": per_kind[form]}
            top = ", ".join(f"{op} {us:.0f}" for op, us in list(prof["by_op"].items())[:8])
            rows.append([form, b, f"{prof['total_us']:.0f}", top])
        for key in sorted(set().union(*per_kind.values()), key=lambda k: -per_kind["fp32"].get(k, 0)):
            vals = [per_kind[f].get(key, 0.0) for f in per_kind]
            if max(vals) >= 0.01 * out[f"fp32_b{b}"]["total_us"]:
                kind_rows.append([b, key, *(f"{v:.0f}" for v in vals)])
    md = md_table(["encoder", "batch", "total us/run", "by kernel (us/run)"], rows)
    md += "\n\nBy convolution kind and width (us/run; other kernels by op type; rows under 1 % of FP32 left out):\n\n"
    md += md_table(["batch", "kernel", *per_kind], kind_rows)
    md += f"\n\nMachine 1-min load average {_load()['loadavg_1m']}.\n"
    print(
        record(
            f"int8_profile_{bundle.name}",
            {"bundle": str(bundle), "profiles": out},
            md,
            f"python benchmarks/int8_speed.py --bundle {bundle} --profile",
        )
    )


def fm_shaped(out: Path) -> None:
    """The fashion-mnist preset's student skeleton (28x28x1, stride-2 stem, 4 layers, 3 steps, 10 initial
    channels, 64 features) with a DARTS-typical genotype (separable and dilated convs, pools, skips), BN
    statistics set, random weights: for speed only (accuracy needs a trained run)."""
    import torch

    from rkd_edge.export.onnx_export import export_onnx
    from rkd_edge.nas.genotypes import Genotype, Skeleton
    from rkd_edge.students.network import StudentEncoder

    torch.manual_seed(0)
    sk = Skeleton(1, 28, 10, layers=4, steps=3, init_channels=10, feature_dim=64, stem_stride=2)
    normal = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1)]
    normal += [("dil_conv_3x3", 2), ("skip_connect", 0)]
    reduce = [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("skip_connect", 2)]
    reduce += [("dil_conv_5x5", 2), ("max_pool_3x3", 1)]
    g = Genotype(normal, reduce, sk, normal_concat=[2, 3, 4], reduce_concat=[2, 3, 4])
    enc = StudentEncoder(g).eval()
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    (out / "models").mkdir(parents=True, exist_ok=True)
    src = out / "models" / "encoder.onnx"
    export_onnx(enc, (torch.randn(2, 1, 28, 28),), ["image"], ["features"], src)
    # both INT8 forms, calibrated on N(0, 1) images (normalised pixels): enough for speed and profiles
    from rkd_edge.export.quantize import CPU_RECIPES, RECORD_RECIPE, quantize_model

    rng = np.random.default_rng(0)
    calib = [{"image": rng.standard_normal((32, 1, 28, 28)).astype(np.float32)} for _ in range(8)]
    for form, recipe in (("int8", RECORD_RECIPE), ("int8-cpu", CPU_RECIPES["encoder"])):
        quantize_model(src, out / "models" / f"encoder.{form}.onnx", calib, "encoder", "minmax", recipe)
    print(src)


def recipes(bundle: Path, seconds: float) -> None:
    """Each quantization knob on the bundle's encoder: INT8/FP32 p50 at batch 1 and 32, 1 thread, all variants
    interleaved in one run. Calibrated on 256 N(0, 1) images (speed does not depend on the ranges much;
    accuracy is int8_accuracy.py's job)."""
    import tempfile

    from int8_profile import slower_nodes

    from rkd_edge.devices.latency import interleaved
    from rkd_edge.export.int8 import session
    from rkd_edge.export.quantize import Recipe, qdq_summary, quantize_model, with_exclusions

    ops = ("Add", "Concat", "MaxPool", "Relu")
    variants = {
        "record: QDQ S8S8 per-channel": Recipe(),
        "QDQ S8S8, Add/Concat/Pool/Relu too": Recipe(extra_ops=ops),
        "QDQ U8S8 per-channel": Recipe(activations="u8"),
        "QDQ U8S8 per-tensor": Recipe(activations="u8", per_channel=False),
        "QDQ U8S8, Add/Concat/Pool/Relu too": Recipe(activations="u8", extra_ops=ops),
        "QOperator S8S8": Recipe(format="qoperator"),
        "QOperator U8S8": Recipe(format="qoperator", activations="u8"),
        "QOperator U8S8 reduce_range": Recipe(format="qoperator", activations="u8", reduce_range=True),
        "QOperator U8S8, Add/Concat/Pool/Relu too (CPU form)": Recipe(
            format="qoperator", activations="u8", extra_ops=ops
        ),
    }
    mdir = bundle / "models"
    src = mdir / "encoder.onnx"
    load = _load()
    rng = np.random.default_rng(0)
    shape = session(src).get_inputs()[0].shape[1:]
    calib = [{"image": rng.standard_normal((32, *shape)).astype(np.float32)} for _ in range(8)]
    # depthwise convolutions in float (the width sweep's losers), on top of the CPU form
    import onnx

    dw = tuple(
        n.name
        for n in onnx.load(str(src)).graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    )
    variants["CPU form, depthwise convs left in float"] = Recipe(
        format="qoperator", activations="u8", extra_ops=ops, exclude=dw
    )
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": src}
        for i, (label, r) in enumerate(variants.items()):
            paths[label] = Path(tmp) / f"v{i}.onnx"
            quantize_model(src, paths[label], calib, "encoder", "minmax", r)
        # mixed precision by measured per-node speed: the CPU form's kernels slower than FP32's left float
        cpu = "QOperator U8S8, Add/Concat/Pool/Relu too (CPU form)"
        slow = slower_nodes(src, paths[cpu], {"image": calib[0]["image"]}, 1, 60)
        label = f"CPU form, {len(slow)} convs measured slower left in float"
        paths[label] = Path(tmp) / "mixed.onnx"
        quantize_model(
            src, paths[label], calib, "encoder", "minmax", with_exclusions(variants[cpu], [n["name"] for n in slow])
        )
        for k, p in paths.items():  # convolutions left float in the file (meaningful for QOperator forms)
            res[k] = {"float_convs": qdq_summary(p)["float_convs"]}
        sess = {k: session(p, 1) for k, p in paths.items()}
        for b in (1, 32):
            x = {"image": rng.standard_normal((b, *shape)).astype(np.float32)}
            out = interleaved(
                {k: (lambda s=s, x=x: s.run(None, x)) for k, s in sess.items()},
                b,
                rounds=4,
                per_round_s=seconds / len(sess),  # 4 x seconds per batch for all variants together
                warmup_s=0.2,
            )
            f = out["fp32"]["p50_ms"]
            for k, v in out.items():
                res.setdefault(k, {})[str(b)] = v["p50_ms"] / f
    rows = [[k, f"{v['1']:.2f}", f"{v['32']:.2f}", v["float_convs"]] for k, v in res.items() if k != "fp32"]
    md = md_table(["encoder recipe", "INT8/FP32 p50, batch 1", "batch 32", "float Conv nodes in the file"], rows)
    md += (
        f"\n\n1 thread, all variants interleaved in one run; 1-min load average {load['loadavg_1m']} on "
        f"{load['cpus']} CPUs.\n"
    )
    data = {"bundle": str(bundle), "threads": 1, "ratios": res, "depthwise_nodes": len(dw), "load": load}
    print(
        record(
            f"int8_recipes_{bundle.name}",
            data,
            md,
            f"python benchmarks/int8_speed.py --bundle {bundle} --recipes --seconds {seconds:g}",
        )
    )


if __name__ == "__main__":
    main()
