"""INT8 (Q/DQ) against FP32 models on ONNX Runtime CPU, side by side, at batch 1 and 32.

python benchmarks/export_latency.py --bundle runs/fmnist-bundle
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from rkd_edge.devices.latency import interleaved

    from rkd_edge.runtime import Runtime

    rts = {p: Runtime(args.bundle, precision=p, threads=args.threads) for p in ("fp32", "int8")}
    rt = rts["fp32"]
    rng = np.random.default_rng(0)
    results, rows = {}, []
    for model in ("encoder", "tx", "rx"):
        for batch in (1, 32):
            imgs = rng.integers(0, 255, (batch, rt.size, rt.size, rt.channels), dtype=np.uint8)
            x = rt.preprocess(imgs)
            feats = rt.encode(x, preprocessed=True)
            sym, mask = rt.transmit(feats, 5.0, rt.max_symbols)
            feeds = {
                "encoder": {"image": x},
                "tx": {
                    "features": feats,
                    "snr_db": np.full(batch, 5.0, np.float32),
                    "k": np.full(batch, rt.max_symbols, np.int64),
                    "channel": np.ones(batch, np.int64),
                },
                "rx": {
                    "symbols": sym,
                    "mask": mask,
                    "snr_db": np.full(batch, 5.0, np.float32),
                    "channel": np.ones(batch, np.int64),
                },
            }[model]
            fns = {p: (lambda s=r.sessions[model], f=feeds: s.run(None, f)) for p, r in rts.items()}
            res = interleaved(fns, batch, rounds=args.rounds, per_round_s=args.per_round_s)
            ratio = res["int8"]["mean_ms"] / res["fp32"]["mean_ms"]
            results[f"{model}_b{batch}"] = {**res, "ratio_int8_over_fp32": ratio}
            rows.append(
                [
                    model,
                    batch,
                    f"{res['fp32']['mean_ms']:.4f}",
                    f"{res['int8']['mean_ms']:.4f}",
                    f"{res['fp32']['p99_ms']:.4f}",
                    f"{res['int8']['p99_ms']:.4f}",
                    f"{ratio:.2f}",
                ]
            )
    md = md_table(["model", "batch", "fp32 mean ms", "int8 mean ms", "fp32 p99", "int8 p99", "int8/fp32"], rows)
    cmd = f"python benchmarks/export_latency.py --bundle {args.bundle}"
    print(
        record(
            f"export_latency_{Path(args.bundle).name}",
            {"bundle": args.bundle, "threads": args.threads, "results": results},
            md,
            cmd,
        )
    )


if __name__ == "__main__":
    main()
