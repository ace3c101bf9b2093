"""Calibration methods compared for accuracy: MinMax, Entropy and Percentile, each for the Q/DQ artefact
of record and the ONNX Runtime CPU form, all three models INT8, against FP32 on the whole test split at
AWGN and Rayleigh over the run's evaluated SNRs (the same noise for every variant).

    python benchmarks/int8_accuracy.py --run runs/quickstart --bundle runs/qs-bundle --samples 256
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="the trained run (calibration feeds come from its train split)")
    ap.add_argument("--bundle", required=True, help="a bundle exported from it (its FP32 models are quantized)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    args = ap.parse_args()

    from rkd_edge.config import parse_range
    from rkd_edge.export.calibration import build_feeds
    from rkd_edge.export.int8 import chain_accuracy
    from rkd_edge.export.quantize import CPU_RECIPES, RECORD_RECIPE, quantize_model
    from rkd_edge.methods import method_config
    from rkd_edge.progress import set_quiet
    from rkd_edge.rundir import RunDir, load_splits

    set_quiet(True)
    cfg, system, _ = RunDir(Path(args.run)).load()
    mcfg = method_config(cfg)
    splits = load_splits(mcfg)
    cc = mcfg.codec
    feeds = build_feeds(system, splits.train, args.samples, cfg.seed, cc, uses_csi=system.codec.uses_csi)
    test = splits.test
    images, labels = test.transform(test.images).numpy(), test.labels
    points = [(c, s) for c in ("awgn", "rayleigh") for s in parse_range(mcfg.evaluate.snr_db)]
    kw = {"mode": cc.rayleigh_mode, "csi": cc.csi, "k_factor": cc.rician_k}
    k = system.codec.max_symbols
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        for name in ("encoder", "tx", "rx"):
            shutil.copy(Path(args.bundle) / "models" / f"{name}.onnx", models / f"{name}.onnx")
        base = chain_accuracy(models, {}, images, labels, points, k, kw, seed=cfg.seed)
        for method in args.methods.split(","):
            for form in ("int8", "int8-cpu"):
                for name in ("encoder", "tx", "rx"):
                    preset = "encoder" if name == "encoder" else "linear-only"
                    recipe = RECORD_RECIPE if form == "int8" else CPU_RECIPES[preset]
                    quantize_model(
                        models / f"{name}.onnx", models / f"{name}.{form}.onnx", feeds[name], preset, method, recipe
                    )
                acc = chain_accuracy(
                    models, dict.fromkeys(("encoder", "tx", "rx"), form), images, labels, points, k, kw, seed=cfg.seed
                )
                drop = {p: round(100 * (base[p] - acc[p]), 3) for p in base}
                worst = max(drop, key=drop.get)
                results[f"{method}/{form}"] = {"accuracy": acc, "drop_pts": drop, "max_drop_pts": drop[worst]}
                mean = sum(drop.values()) / len(drop)
                rows.append([method, form, f"{drop[worst]:+.2f} ({worst})", f"{mean:+.2f}"])
    md = md_table(["calibration", "INT8 form", "largest drop, points (where)", "mean drop over points"], rows)
    md += (
        f"\n\nAll three models INT8 against FP32, whole test split ({len(labels)} images), k={k}, "
        f"{len(points)} points (AWGN and Rayleigh at {mcfg.evaluate.snr_db} dB), {args.samples} calibration "
        "samples from the train split; positive = INT8 worse.\n"
    )
    cmd = f"python benchmarks/int8_accuracy.py --run {args.run} --bundle {args.bundle} --samples {args.samples}"
    print(
        record(
            f"int8_accuracy_{Path(args.bundle).name}",
            {"bundle": args.bundle, "run": args.run, "k": k, "fp32": base, "methods": results},
            md,
            cmd,
        )
    )


if __name__ == "__main__":
    main()
