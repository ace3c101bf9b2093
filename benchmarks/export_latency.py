"""INT8 against FP32 per model (encoder, tx, rx) and end to end on ONNX Runtime CPU, at batch 1 and 32:
one ``rkd-edge bench`` measurement (the runners and the one timing protocol, variants interleaved).

python benchmarks/export_latency.py --bundle runs/fmnist-bundle
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
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per variant and stage")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="onnxruntime")
    args = ap.parse_args()

    from rkd_edge.bench import run_bench
    from rkd_edge.bench_schema import Settings

    s = Settings(
        backends=[args.backend],
        precisions=["fp32", "int8"],
        batches=[1, 32],
        seconds=args.seconds,
        rounds=args.rounds,
        threads=args.threads,
        memory=False,
    )
    res = run_bench(Path(args.bundle), s)
    by = {(r["precision"], r["batch"], r["stage"]): r for r in res["results"] if r["status"] == "ok"}
    results, rows = {}, []
    for stage in ("encoder", "tx", "rx", "end_to_end"):
        for batch in (1, 32):
            f, q = by.get(("fp32", batch, stage)), by.get(("int8", batch, stage))
            if not f or not q:
                continue
            ratio = q["latency_ms"]["p50"] / f["latency_ms"]["p50"]
            results[f"{stage}_b{batch}"] = {"fp32": f, "int8": q, "ratio_int8_over_fp32_p50": ratio}
            rows.append(
                [stage, batch, *(f"{r['latency_ms'][k]:.4f}" for r in (f, q) for k in ("p50", "p99")), f"{ratio:.2f}"]
            )
    acc = {p: res["accuracy"][f"{args.backend}/{p}"]["accuracy"] for p in ("fp32", "int8")}
    md = md_table(["stage", "batch", "fp32 p50 ms", "fp32 p99", "int8 p50 ms", "int8 p99", "int8/fp32 p50"], rows)
    md += f"\n\nAccuracy at {res['accuracy_point']}: fp32 {acc['fp32']:.4f}, int8 {acc['int8']:.4f}."
    cmd = f"python benchmarks/export_latency.py --bundle {args.bundle} --threads {args.threads}"
    name = f"export_latency_{Path(args.bundle).name}"
    print(record(name, {"bundle": args.bundle, "threads": args.threads, "results": results, "accuracy": acc}, md, cmd))


if __name__ == "__main__":
    main()
