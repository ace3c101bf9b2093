"""The README's main job, timed: ``rkd-edge pipeline`` with the default preset in a fresh run folder.

python benchmarks/quickstart.py
python benchmarks/quickstart.py --against REV [--rounds N]

``--against`` runs the same pipeline with the code of git revision REV (a temporary worktree) and with
this tree, interleaved (REV first in odd rounds, this tree first in even ones), and records each stage's
time ratio (this tree / REV, the median over rounds) and whether every stage's record is the same:
``results/quickstart_vs_REV``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pipeline(out: Path, code: Path) -> dict:
    """The default pipeline into ``out`` with the package at ``code``: its timings and stage records."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-c", "from rkd_edge.cli import main; main()", "-q", "pipeline", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)

    def timeless(o):  # a record without its timings (what must repeat for the same code and seed)
        if isinstance(o, dict):
            return {k: timeless(v) for k, v in o.items() if "second" not in k and k != "timings_s"}
        return [timeless(v) for v in o] if isinstance(o, list) else o

    recs = {f.stem: timeless(json.loads(f.read_text())) for f in sorted((out / "stages").glob("*.json"))}
    return {"timings_s": json.loads((out / "report.json").read_text())["timings_s"], "records": recs}


def against(rev: str, rounds: int) -> None:
    """This tree against revision ``rev``, interleaved, ``rounds`` times each."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True)
    if sha.returncode != 0:
        sys.exit(f"error: {rev!r} is not a git revision of this repository")
    sha = sha.stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(wt), sha], cwd=ROOT, check=True)
        try:
            for sub in ("devices", "export"):  # installed as rkd_edge.devices / rkd_edge.export
                (wt / "rkd_edge" / sub).symlink_to(wt / sub)
            runs = {"old": [], "new": []}
            for i in range(rounds):
                for which in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    code = wt if which == "old" else ROOT
                    runs[which].append(pipeline(Path(tmp) / "run", code))  # one path: records name it
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT, check=False)
    stages = list(runs["new"][0]["timings_s"])
    pairs = list(zip(runs["new"], runs["old"], strict=True))
    ratio = {k: round(statistics.median(n["timings_s"][k] / o["timings_s"][k] for n, o in pairs), 3) for k in stages}
    same = {k: runs["new"][0]["records"].get(k) == runs["old"][0]["records"].get(k) for k in runs["new"][0]["records"]}
    times = {w: [r["timings_s"] for r in rs] for w, rs in runs.items()}
    data = {"against": sha, "rounds": rounds, "ratio_new_over_old": ratio, "same_records": same, "runs": times}
    rows = [[k, *[t[k] for t in times["old"]], *[t[k] for t in times["new"]], ratio[k], same.get(k)] for k in stages]
    head = ["stage", *[f"{sha} s" for _ in runs["old"]], *["this tree s" for _ in runs["new"]], "ratio", "same record"]
    cmd = f"python benchmarks/quickstart.py --against {rev} --rounds {rounds}"
    print(record(f"quickstart_vs_{sha}", data, md_table(head, rows), cmd))


def main() -> None:
    ap = argparse.ArgumentParser(description="The default pipeline, timed.")
    ap.add_argument("--against", help="also time git revision REV, interleaved, and record the ratios")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if args.against:
        against(args.against, max(1, args.rounds))
        return
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
