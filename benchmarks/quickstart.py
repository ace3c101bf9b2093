"""The README's main job, timed: ``rkd-edge pipeline`` with the default preset in a fresh run folder.

python benchmarks/quickstart.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    out = Path("runs/bench-quickstart")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    subprocess.run(["rkd-edge", "-q", "pipeline", "--out", str(out)], check=True)
    wall = time.time() - t0
    r = json.loads((out / "report.json").read_text())
    data = {
        "wall_seconds": round(wall, 1),
        "timings_s": r["timings_s"],
        "teacher": r["teacher"],
        "student": r["student"],
        "ratios": r["ratios"],
        "codec": r["codec"],
        "curves": r["curves"],
    }
    rows = [
        ["wall time (s)", f"{wall:.0f}"],
        ["teacher params / accuracy", f"{r['teacher']['params']:,} / {r['teacher']['accuracy']:.4f}"],
        ["student params (% teacher)", f"{r['student']['params']:,} ({100 * r['ratios']['params_vs_teacher']:.2f} %)"],
        ["student clean accuracy", f"{r['student']['accuracy']:.4f}"],
        ["AWGN 0 / 10 dB", f"{r['curves']['awgn']['0']:.4f} / {r['curves']['awgn']['10']:.4f}"],
        ["Rayleigh 0 / 10 dB", f"{r['curves']['rayleigh']['0']:.4f} / {r['curves']['rayleigh']['10']:.4f}"],
    ]
    rows += [[f"stage {k} (s)", v] for k, v in r["timings_s"].items()]
    print(record("quickstart", data, md_table(["", "value"], rows), "python benchmarks/quickstart.py"))


if __name__ == "__main__":
    main()
