"""KDL-DARTS with its latency cost measured in INT8: does the search then pick operations that quantize well?

Issue 13: on this CPU the student's narrow depthwise/pointwise convolutions are slower as integer kernels
(export/README.md). This script measures per-operation latency tables in FP32 and INT8
(``rkd-edge devices lut``), runs the search three ways on the same data and teacher (cost = parameters,
FP32 latency, INT8 latency), and times each searched encoder in FP32 and in its INT8 CPU form side by side
(interleaved, ONNX Runtime, one thread; random weights with set BN statistics: the latency of a graph does
not depend on its trained values).

    python benchmarks/int8_search.py --teacher local:runs/fmnist-teacher --work runs/int8-search
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402

COSTS = ("params", "latency-fp32", "latency-int8")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rkd_edge", "-q", *args], check=True)


def searched(work: Path, preset: str, dataset: str, teacher: str, cost: str, lam: float | None) -> Path:
    """The genotype of one search (reused when its folder is complete)."""
    out = work / f"search-{cost}"
    if not (out / "genotype.json").is_file():
        extra: list[str] = ["--cost", "params"]
        if cost.startswith("latency"):
            precision = cost.split("-")[1]
            lut = work / f"lut-{precision}.json"
            if not lut.is_file():
                cli("devices", "lut", "--out", str(lut), "--precision", precision, "--preset", preset,
                    "--dataset", dataset, "--threads", "1")  # fmt: skip
            extra = ["--cost", "latency", "--latency-table", str(lut)]
        if lam is not None:
            extra += ["--lambda", str(lam)]
        cli("search", "--preset", preset, "--dataset", dataset, "--teacher", teacher, "--out", str(out), *extra)
    return out / "genotype.json"


def encoder_files(genotype: Path, out: Path) -> dict[str, Path]:
    """FP32 ONNX and the INT8 CPU form (the export's recipe) of the genotype's encoder, random weights."""
    import torch

    from rkd_edge.export.onnx_export import export_onnx
    from rkd_edge.export.quantize import CPU_RECIPES, quantize_model
    from rkd_edge.nas.genotypes import Genotype
    from rkd_edge.students.network import StudentEncoder

    torch.manual_seed(0)
    g = Genotype.load(genotype)
    enc = StudentEncoder(g).eval()
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    sk = g.skeleton
    shape = (sk.in_channels, sk.image_size, sk.image_size)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": out / "encoder.onnx", "int8": out / "encoder.int8-cpu.onnx"}
    export_onnx(enc, (torch.randn(2, *shape),), ["image"], ["features"], paths["fp32"])
    rng = np.random.default_rng(0)
    calib = [{"image": rng.standard_normal((32, *shape)).astype(np.float32)} for _ in range(8)]
    quantize_model(paths["fp32"], paths["int8"], calib, "encoder", "minmax", CPU_RECIPES["encoder"])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True, help="teacher spec, e.g. local:runs/fmnist-teacher")
    ap.add_argument("--preset", default="fashion-mnist")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--work", default="runs/int8-search", help="folder for tables, searches and encoders")
    ap.add_argument("--lambda", dest="lam", type=float, default=None, help="cost weight (default: the preset's)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing seconds per encoder, precision and batch")
    args = ap.parse_args()

    from rkd_edge.devices.latency import interleaved
    from rkd_edge.export.int8 import session

    work = Path(args.work)
    genotypes = {c: searched(work, args.preset, args.dataset, args.teacher, c, args.lam) for c in COSTS}
    files = {c: encoder_files(g, work / f"encoder-{c}") for c, g in genotypes.items()}
    load_before = round(os.getloadavg()[0], 2)
    p50: dict[str, dict[str, dict[str, float]]] = {c: {"fp32": {}, "int8": {}} for c in COSTS}
    for batch in (1, 32):
        fns = {}
        for c, paths in files.items():
            for prec, path in paths.items():
                s = session(path, threads=1)
                shape = s.get_inputs()[0].shape[1:]
                x = {"image": np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)}
                fns[(c, prec)] = lambda s=s, x=x: s.run(None, x)
        res = interleaved(fns, batch, rounds=6, per_round_s=args.seconds / 6, warmup_s=0.3)
        for (c, prec), r in res.items():
            p50[c][prec][str(batch)] = round(r["p50_ms"], 4)
    rows, data = [], {}
    for c, g in genotypes.items():
        geno = json.loads(g.read_text())
        ops = [o for o, _ in geno["normal"] + geno["reduce"]]
        data[c] = {
            "genotype": str(g),
            "encoder_params": geno.get("encoder_params"),
            "ops": {o: ops.count(o) for o in sorted(set(ops))},
            "p50_ms": p50[c],
            "int8_over_fp32": {b: round(p50[c]["int8"][b] / p50[c]["fp32"][b], 3) for b in ("1", "32")},
        }
        for b in ("1", "32"):
            rows.append([c, f"{geno.get('encoder_params', 0):,}", b, p50[c]["fp32"][b], p50[c]["int8"][b],
                         f"{data[c]['int8_over_fp32'][b]:.2f}"])  # fmt: skip
    ops_md = "\n".join(f"- {c}: " + ", ".join(f"{o} x{n}" for o, n in d["ops"].items()) for c, d in data.items())
    md = md_table(["search cost", "encoder params", "batch", "FP32 p50 ms", "INT8 p50 ms", "INT8/FP32"], rows)
    md += f"\n\nOperations chosen (normal + reduction cell):\n\n{ops_md}\n\nLoad (1-min average) {load_before}.\n"
    cmd = (
        f"python benchmarks/int8_search.py --teacher {args.teacher} --preset {args.preset} --dataset {args.dataset} "
        f"--work {args.work} --seconds {args.seconds:g}"
    )
    payload = {"preset": args.preset, "dataset": args.dataset, "threads": 1, "searches": data, "load": load_before}
    print(record(f"int8_search_{args.dataset}", payload, md, cmd))


if __name__ == "__main__":
    main()
