"""Check the roofline estimate (``rkd-edge devices estimate``) against a measurement on this host.

The ``host`` profile is measured first (ONNX Runtime CPU: MatMul FP32 and MatMulInteger rates, DRAM and
cache bandwidth, per-node overhead; :func:`rkd_edge.devices.estimate.measure_host`). Then, for each model
of the bundle (encoder, tx, rx), precision (FP32, INT8 Q/DQ) and batch, the estimate is set beside the
median latency of an ONNX Runtime CPU session measured with the one timing protocol
(:func:`rkd_edge.devices.latency.interleaved`: the FP32 and INT8 sessions of a model alternate in rounds,
so machine noise hits both alike). The ratio estimate / measured is the result; it is recorded, not tuned.

    python benchmarks/devices_estimate.py --bundle runs/qs-bundle
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record, synthetic_feeds  # noqa: E402

from rkd_edge.devices.estimate import estimate_model, host_profile, measure_host, model_for  # noqa: E402
from rkd_edge.devices.latency import interleaved  # noqa: E402
from rkd_edge.runtime.bundle import Bundle  # noqa: E402
from rkd_edge.runtime.runners.ort import cpu_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round-s", type=float, default=0.5)
    ap.add_argument("--probe-s", type=float, default=1.0, help="seconds per host-rate probe")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: its default)")
    args = ap.parse_args()

    b = Bundle.open(args.bundle)
    m = b.manifest
    precisions = [p for p in ("fp32", "int8") if p in m.get("precisions", ["fp32"])]
    batches = [int(x) for x in args.batch.split(",")]
    rates = measure_host(args.probe_s, args.threads)
    prof = host_profile(rates=rates)
    rows, md_rows = [], []
    for name in ("encoder", "tx", "rx"):
        io = m["models"][name]["fp32"]
        sessions = {p: cpu_session(b.model_path(name, p), args.threads) for p in precisions}
        for batch in batches:
            feeds = synthetic_feeds(io, m, batch)
            fns = {p: (lambda s=s, f=feeds: s.run(None, f)) for p, s in sessions.items()}
            meas = interleaved(fns, batch, rounds=args.rounds, per_round_s=args.per_round_s, warmup_s=0.5)
            for p in precisions:
                est = estimate_model(model_for(b, name, prof, p), prof, p, batch)
                got = meas[p]
                ratio = est["latency_ms"] / got["p50_ms"]
                rows.append(
                    {
                        "model": name,
                        "precision": p,
                        "batch": batch,
                        "estimate": est,
                        "measured": got,
                        "ratio_estimate_to_measured_p50": round(ratio, 3),
                    }
                )
                md_rows.append(
                    [
                        name,
                        p,
                        batch,
                        f"{est['latency_ms']:.4f}",
                        est["bound"],
                        f"{got['p50_ms']:.4f}",
                        f"{got['p90_ms']:.4f}",
                        got["iterations"],
                        f"{ratio:.2f}",
                    ]
                )
    ratios = np.array([r["ratio_estimate_to_measured_p50"] for r in rows])
    summary = {
        "median_ratio": float(np.median(ratios)),
        "min_ratio": float(ratios.min()),
        "max_ratio": float(ratios.max()),
        "within_2x": int(np.sum((ratios >= 0.5) & (ratios <= 2.0))),
        "cases": len(rows),
    }
    rate_rows = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in rates.items() if k != "method"]
    md = (
        "Roofline estimate for the measured `host` profile against ONNX Runtime CPU sessions of the bundle, "
        "timed with `rkd_edge.devices.latency.interleaved` (FP32 and INT8 of a model alternate in rounds). "
        "The estimate is an estimate: the ratio column is the check, not a tuned fit.\n\n"
        f"Host rates ({rates['method']}):\n\n"
        + md_table(["rate", "value"], rate_rows)
        + "\n\n"
        + md_table(
            ["model", "precision", "batch", "est. ms", "bound", "p50 ms", "p90 ms", "iterations", "est/p50"], md_rows
        )
        + f"\n\nestimate / measured p50: median {summary['median_ratio']:.2f}, range "
        f"{summary['min_ratio']:.2f}-{summary['max_ratio']:.2f}; {summary['within_2x']} of {summary['cases']} "
        "cases within a factor 2.\n"
    )
    cmd = "python benchmarks/devices_estimate.py " + " ".join(sys.argv[1:])
    out = record(
        "devices_estimate",
        {"bundle": str(args.bundle), "host_rates": rates, "summary": summary, "results": rows},
        md,
        cmd,
    )
    print(md)
    print(out)


if __name__ == "__main__":
    main()
