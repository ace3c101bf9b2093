"""Peak memory (VmHWM) of a fresh process running the transmitter: the torch-free runtime against
PyTorch, side by side, each in its own subprocess.

    python benchmarks/memory.py --run runs/qs --bundle runs/qs-bundle
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402

RUNTIME = """
import json, sys, numpy as np
from rkd_edge.runtime import Runtime
from rkd_edge.devices.telemetry import peak_rss_kb
base = peak_rss_kb()
rt = Runtime(sys.argv[1], precision=sys.argv[2], threads=1)
imgs = np.zeros((32, rt.size, rt.size, rt.channels), np.uint8)
for _ in range(20):
    s, m = rt.transmit(rt.encode(imgs), 10.0, rt.max_symbols)
print(json.dumps({"baseline_kb": base, "peak_kb": peak_rss_kb(), "torch_loaded": "torch" in sys.modules}))
"""
TORCH = """
import json, sys, torch
from rkd_edge.devices.telemetry import peak_rss_kb
base = peak_rss_kb()
from rkd_edge.pipeline import load_run
torch.set_num_threads(1)
cfg, system, spec = load_run(sys.argv[1])
x = torch.zeros(32, *spec["input_shape"])
k = torch.full((32,), system.codec.max_symbols)
with torch.no_grad():
    for _ in range(20):
        f = system.encoder(x)
        system.codec.tx(f, torch.full((32,), 10.0), k, torch.ones(32, dtype=torch.long))
print(json.dumps({"baseline_kb": base, "peak_kb": peak_rss_kb(), "torch_loaded": True}))
"""


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--bundle", required=True)
    args = ap.parse_args()
    res = {"runtime_fp32": child(RUNTIME, args.bundle, "fp32"), "pytorch": child(TORCH, args.run)}
    if "int8" in json.loads((Path(args.bundle) / "manifest.json").read_text())["precisions"]:
        res["runtime_int8"] = child(RUNTIME, args.bundle, "int8")
    ratio = res["runtime_fp32"]["peak_kb"] / res["pytorch"]["peak_kb"]
    rows = [[k, f"{v['peak_kb'] / 1024:.1f}", v["torch_loaded"]] for k, v in res.items()]
    md = md_table(["transmitter (encoder + tx, batch 32)", "peak RSS MiB (VmHWM)", "torch imported"], rows)
    md += f"\n\nRuntime FP32 / PyTorch peak memory: **{ratio:.2f}x**."
    cmd = f"python benchmarks/memory.py --run {args.run} --bundle {args.bundle}"
    print(record("memory_transmitter", {"results": res, "ratio_runtime_over_pytorch": ratio}, md, cmd))


if __name__ == "__main__":
    main()
