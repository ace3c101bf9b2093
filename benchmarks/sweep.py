"""KDL-DARTS lambda sweep: cost of the derived student against its validation accuracy.

python benchmarks/sweep.py --teacher local:runs/bench-quickstart/teacher --lambdas 0,1,5,20
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--lambdas", default="0,1,5,20")
    ap.add_argument("--cost", default="params")
    args = ap.parse_args()
    out = Path(f"runs/bench-sweep-{args.dataset}-{args.cost}")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [
            "rkd-edge",
            "-q",
            "search",
            "--dataset",
            args.dataset,
            "--teacher",
            args.teacher,
            "--out",
            str(out),
            "--lambda",
            args.lambdas,
            "--cost",
            args.cost,
        ],
        check=True,
    )
    with open(out / "pareto.csv") as fh:
        rows = list(csv.DictReader(fh))
    cols = ["lambda", "params", "macs", "latency_ms", "expected_cost", "val_acc"]
    cmd = f"python benchmarks/sweep.py --teacher {args.teacher} --lambdas {args.lambdas} --cost {args.cost}"
    print(
        record(
            f"sweep_{args.dataset}_{args.cost}",
            {"rows": rows, "lambdas": args.lambdas},
            md_table(cols, [[r[c] for c in cols] for r in rows]),
            cmd,
        )
    )


if __name__ == "__main__":
    main()
