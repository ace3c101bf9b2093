"""``rkd-edge bench`` run twice (or more) on one bundle: is its p50 repeatable? (issue 12: within 10 %).

Each run is a fresh ``rkd-edge bench`` process with the same settings; the spread of a row (back end,
precision, batch, stage) is ``(max - min) / mean`` of its p50 over the runs. The first run's JSON is kept
whole; the others contribute their p50 per row.

    python benchmarks/bench_repeat.py --bundle runs/qs-bundle --name quickstart
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def one_run(bundle: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "rkd_edge", "-q", "bench", bundle, "--json", str(out), *extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def row_key(r: dict) -> tuple:
    return r["backend"], r["precision"], r["batch"], r["stage"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--name", default="quickstart", help="results/bench_NAME.json")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--precision", default="fp32,int8")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    extra = ["--precision", args.precision, "--seconds", f"{args.seconds:g}", "--threads", str(args.threads)]
    load = [round(os.getloadavg()[0], 2)]
    runs = []
    for _ in range(args.runs):
        runs.append(one_run(args.bundle, extra))
        load.append(round(os.getloadavg()[0], 2))
    p50 = {row_key(r): [] for r in runs[0]["results"] if r["status"] == "ok"}
    for res in runs:
        for r in res["results"]:
            if row_key(r) in p50 and r["status"] == "ok":
                p50[row_key(r)].append(r["latency_ms"]["p50"])
    spread = {k: (max(v) - min(v)) / statistics.mean(v) for k, v in p50.items() if len(v) == args.runs}
    accuracy = {row_key(r): r["accuracy"] for r in runs[0]["results"]}
    rows = [[*k, *(f"{x:.4f}" for x in p50[k]), f"{100 * s:.1f} %", accuracy[k]] for k, s in spread.items()]
    worst = max(spread.values())
    summary = {
        "runs": args.runs,
        "rows": len(spread),
        "median_spread": round(statistics.median(spread.values()), 4),
        "max_spread": round(worst, 4),
        "within_10pct": sum(s <= 0.10 for s in spread.values()),
        "load_1min": load,
    }
    data = {
        **runs[0],
        "repeat": {
            **summary,
            "p50_ms": {"/".join(map(str, k)): v for k, v in p50.items()},
            "spread": {"/".join(map(str, k)): round(s, 4) for k, s in spread.items()},
        },
    }
    head = ["backend", "precision", "batch", "stage", *(f"p50 ms run {i + 1}" for i in range(args.runs))]
    md = md_table([*head, "spread", "accuracy"], rows)
    md += (
        f"\n\nSpread (max - min) / mean of p50 over {args.runs} fresh `rkd-edge bench` processes: median "
        f"{100 * summary['median_spread']:.1f} %, worst {100 * worst:.1f} %, {summary['within_10pct']} of "
        f"{len(spread)} rows within 10 %. 1-min load average before and after each run: {load}.\n"
    )
    cmd = (
        f"python benchmarks/bench_repeat.py --bundle {args.bundle} --name {args.name} --runs {args.runs} "
        f"--precision {args.precision} --seconds {args.seconds:g} --threads {args.threads}"
    )
    print(record(f"bench_{args.name}", data, md, cmd))


if __name__ == "__main__":
    main()
