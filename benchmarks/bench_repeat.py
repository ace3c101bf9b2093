"""``rkd-edge bench`` run twice (or more) on one bundle: is its p50 repeatable? (issue 12: within 10 %).

Each run is a fresh ``rkd-edge bench`` process with the same settings; the spread of a row (back end,
precision, batch, stage) is ``(max - min) / mean`` of its p50 over the runs. The first run's JSON is kept
whole; the others contribute their p50 per row.

Every bench run also times a fixed reference kernel beside the variants (``machine_reference``): its p50
per run shows whether the machine itself changed speed between the runs, and the spread of
``p50_per_reference`` (each p50 in units of that run's reference) is the repeatability with the machine's
speed taken out. Both spreads are reported; a run whose reference moved within the run is named.

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


def per_row(runs: list[dict], value) -> dict[tuple, list[float]]:
    """``value(row)`` of every ok row of the first run, over all runs (a row missing in one is dropped)."""
    out = {row_key(r): [] for r in runs[0]["results"] if r["status"] == "ok"}
    for res in runs:
        for r in res["results"]:
            if row_key(r) in out and r["status"] == "ok":
                out[row_key(r)].append(value(r))
    return {k: v for k, v in out.items() if len(v) == len(runs)}


def spreads(values: dict[tuple, list[float]]) -> dict[tuple, float]:
    """``(max - min) / mean`` of each row's values."""
    return {k: (max(v) - min(v)) / statistics.mean(v) for k, v in values.items()}


def summarise(spread: dict[tuple, float], prefix: str) -> dict:
    return {
        f"{prefix}median_spread": round(statistics.median(spread.values()), 4),
        f"{prefix}max_spread": round(max(spread.values()), 4),
        f"{prefix}within_10pct": sum(s <= 0.10 for s in spread.values()),
    }


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
    p50 = per_row(runs, lambda r: r["latency_ms"]["p50"])
    spread = spreads(p50)
    relative = spreads(per_row(runs, lambda r: r["p50_per_reference"]))
    reference = [res["machine_reference"] for res in runs]
    ref_p50 = [m["p50_ms"] for m in reference]
    accuracy = {row_key(r): r["accuracy"] for r in runs[0]["results"]}
    rows = [
        [*k, *(f"{x:.4f}" for x in p50[k]), f"{100 * s:.1f} %", f"{100 * relative[k]:.1f} %", accuracy[k]]
        for k, s in spread.items()
    ]
    summary = {
        "runs": args.runs,
        "rows": len(spread),
        **summarise(spread, ""),
        **summarise(relative, "relative_"),
        "reference_p50_ms": ref_p50,
        "reference_shift": round((max(ref_p50) - min(ref_p50)) / statistics.mean(ref_p50), 4),
        "reference_drift_within_run": [m["drift"] for m in reference],
        "cpu_steal": [m["cpu_steal"] for m in reference],
        "load_1min": load,
    }
    data = {
        **runs[0],
        "repeat": {
            **summary,
            "p50_ms": {"/".join(map(str, k)): v for k, v in p50.items()},
            "spread": {"/".join(map(str, k)): round(s, 4) for k, s in spread.items()},
            "relative_spread": {"/".join(map(str, k)): round(s, 4) for k, s in relative.items()},
        },
    }
    head = ["backend", "precision", "batch", "stage", *(f"p50 ms run {i + 1}" for i in range(args.runs))]
    md = md_table([*head, "spread", "spread / reference", "accuracy"], rows)
    unsteady = [i + 1 for i, m in enumerate(reference) if not m["steady"]]
    md += (
        f"\n\nSpread (max - min) / mean of p50 over {args.runs} fresh `rkd-edge bench` processes: median "
        f"{100 * summary['median_spread']:.1f} %, worst {100 * summary['max_spread']:.1f} %, "
        f"{summary['within_10pct']} of {len(spread)} rows within 10 %. In units of each run's machine "
        f"reference kernel (p50 {', '.join(f'{t:.4f}' for t in ref_p50)} ms, shift "
        f"{100 * summary['reference_shift']:.1f} %): median {100 * summary['relative_median_spread']:.1f} %, "
        f"worst {100 * summary['relative_max_spread']:.1f} %, {summary['relative_within_10pct']} rows within "
        f"10 %. Reference drift within each run: {summary['reference_drift_within_run']}"
        f"{f' (runs {unsteady} not steady)' if unsteady else ''}; CPU steal {summary['cpu_steal']}; 1-min load "
        f"average before and after each run: {load}.\n"
    )
    cmd = (
        f"python benchmarks/bench_repeat.py --bundle {args.bundle} --name {args.name} --runs {args.runs} "
        f"--precision {args.precision} --seconds {args.seconds:g} --threads {args.threads}"
    )
    print(record(f"bench_{args.name}", data, md, cmd))


if __name__ == "__main__":
    main()
