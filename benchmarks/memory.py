"""Peak memory (VmHWM) of a fresh process that loads a bundle and runs it end to end (encoder, tx, rx at
batch 32): the torch-free runtime (ONNX Runtime FP32 / INT8) against the PyTorch reference, through the
same runners and probe as ``rkd-edge bench`` (:func:`rkd_edge.bench.fresh_process_memory`).

    python benchmarks/memory.py --run runs/qs --bundle runs/qs-bundle
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    from rkd_edge.bench import fresh_process_memory

    variants = [("onnxruntime", "fp32"), ("pytorch", "fp32")]
    if "int8" in json.loads((Path(args.bundle) / "manifest.json").read_text())["precisions"]:
        variants.append(("onnxruntime", "int8"))
    res = {
        f"{backend}_{prec}": fresh_process_memory(Path(args.bundle), backend, prec, args.batch, 1, args.run)
        for backend, prec in variants
    }
    for name, r in res.items():
        if "error" in r:
            raise SystemExit(f"{name}: {r['error']}")
    ratio = res["onnxruntime_fp32"]["peak_rss_mb"] / res["pytorch_fp32"]["peak_rss_mb"]
    rows = [[k, f"{v['peak_rss_mb']:.1f}", v["torch_imported"]] for k, v in res.items()]
    md = md_table([f"end to end, batch {args.batch}", "peak RSS MiB (VmHWM)", "torch imported"], rows)
    md += f"\n\nRuntime FP32 / PyTorch peak memory: **{ratio:.2f}x**."
    cmd = f"python benchmarks/memory.py --run {args.run} --bundle {args.bundle}"
    print(record("memory_end_to_end", {"results": res, "ratio_runtime_over_pytorch": ratio}, md, cmd))


if __name__ == "__main__":
    main()
