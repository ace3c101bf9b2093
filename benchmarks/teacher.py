"""Teacher training: accuracy, parameters and wall time on digits and fashion-mnist.

python benchmarks/teacher.py --dataset digits
python benchmarks/teacher.py --dataset fashion-mnist --out runs/fmnist-teacher
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--out", default=None, help="teacher folder (reused if it already holds teacher.json)")
    args = ap.parse_args()
    preset = "fashion-mnist" if args.dataset == "fashion-mnist" else "quickstart"
    out = Path(args.out or f"runs/bench-teacher-{args.dataset}")
    t0 = time.time()
    if not (out / "teacher.json").is_file():
        subprocess.run(
            ["rkd-edge", "-q", "teacher", "train", "--preset", preset, "--dataset", args.dataset, "--out", str(out)],
            check=True,
        )
    rec = json.loads((out / "teacher.json").read_text())
    data = {
        "dataset": args.dataset,
        "arch": rec["arch"],
        "params": rec["params"],
        "accuracy": rec["accuracy"],
        "val_accuracy": rec["val_accuracy"],
        "train_seconds": rec["train_seconds"],
        "epochs": len(rec["history"]),
        "wall_seconds_this_call": round(time.time() - t0, 1),
    }
    cmd = f"python benchmarks/teacher.py --dataset {args.dataset}"
    md = md_table(
        ["dataset", "teacher", "params", "test accuracy", "train time (s)"],
        [[args.dataset, rec["arch"], f"{rec['params']:,}", f"{rec['accuracy']:.4f}", rec["train_seconds"]]],
    )
    print(record(f"teacher_{args.dataset}", data, md, cmd))


if __name__ == "__main__":
    main()
