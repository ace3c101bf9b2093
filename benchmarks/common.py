"""Helpers shared by the benchmark scripts: result files with their environment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rkd_edge.env import environment
from rkd_edge.io import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
# Issue 15's bar for the stage-1 student: at most this share of the teacher's parameters at this share or
# more of its clean accuracy (benchmarks/student_budget.py, benchmarks/fashion_mnist.py).
PARAM_SHARE, ACCURACY_SHARE = 0.025, 0.985


def record(name: str, data: dict, markdown: str, command: str) -> Path:
    """Write ``results/NAME.json`` (data + environment + command) and ``results/NAME.md``."""
    payload = {
        "benchmark": name,
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment(),
        **data,
    }
    write_json(RESULTS / f"{name}.json", payload)
    write_text(RESULTS / f"{name}.md", f"# {name}\n\nReproduce: `{command}`\n\n{markdown}\n")
    return RESULTS / f"{name}.json"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def evaluation_points(path: Path, channels, snrs=None) -> dict:
    """``{channel: {k: {snr_db: [accuracy, ci_low, ci_high]}}}`` from an ``evaluation.json`` (rows of
    ``rkd-edge evaluate``), for ``channels`` and, when given, only ``snrs``."""
    out: dict = {}
    for r in json.loads(Path(path).read_text())["rows"]:
        if r["channel"] in channels and (snrs is None or r["snr_db"] in snrs):
            out.setdefault(r["channel"], {}).setdefault(r["k"], {})[r["snr_db"]] = [
                r["accuracy"],
                r["ci_low"],
                r["ci_high"],
            ]
    return out


def synthetic_feeds(io: dict, manifest: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the right shapes and dtypes: floats N(0,1), ``k`` at the largest length, channel 0
    (AWGN), masks all ones. Latency does not depend on the values."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in io["inputs"]:
        shape = [batch if isinstance(d, str) or d is None else d for d in inp["shape"]]
        dtype = np.dtype(inp["dtype"])
        if inp["name"] == "k":
            feeds["k"] = np.full(shape, manifest["symbols"]["max"], dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[inp["name"]] = np.zeros(shape, dtype)
        elif inp["name"] == "mask":
            feeds["mask"] = np.ones(shape, dtype)
        elif inp["name"] == "snr_db":
            feeds["snr_db"] = np.full(shape, 10.0, dtype)
        else:
            feeds[inp["name"]] = rng.standard_normal(shape).astype(dtype)
    return feeds
