"""INT8 (Q/DQ, calibrated) against FP32 accuracy of a bundle through ONNX Runtime: clean (noiseless
channel), 0 dB and 10 dB AWGN, at the bundle's largest k; the drop in points.

    python benchmarks/int8_accuracy.py --bundle runs/fm-bundle --trials 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()

    from rkd_edge.export.evaluate import evaluate_bundle

    from rkd_edge.progress import set_quiet

    set_quiet(True)
    bundle = Path(args.bundle)
    summary = evaluate_bundle(bundle, ["awgn"], "0,10", None, args.trials, bundle / "evaluation-int8")
    k = summary["report_symbols"]
    points = {}
    for prec in ("fp32", "int8"):
        m = f"onnx-{prec}"
        points[prec] = {
            "clean": summary["noiseless"][m],
            "awgn_0db": summary["curves"][m]["awgn"]["0"],
            "awgn_10db": summary["curves"][m]["awgn"]["10"],
        }
    drop = {p: round(100 * (points["fp32"][p] - points["int8"][p]), 3) for p in points["fp32"]}
    rows = [[p, f"{points['fp32'][p]:.4f}", f"{points['int8'][p]:.4f}", f"{drop[p]:+.2f}"] for p in drop]
    md = md_table([f"point (k={k})", "FP32", "INT8", "drop (points)"], rows)
    md += f"\n\nLargest drop: **{max(drop.values()):.2f} points** (test split, {args.trials} noise draws per point)."
    cmd = f"python benchmarks/int8_accuracy.py --bundle {args.bundle} --trials {args.trials}"
    print(
        record(
            f"int8_accuracy_{bundle.name}",
            {"bundle": args.bundle, "k": k, "accuracy": points, "drop_points": drop},
            md,
            cmd,
        )
    )


if __name__ == "__main__":
    main()
