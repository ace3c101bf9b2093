"""Search cost: seconds per search epoch, with the teacher-output cache and with the teacher run online
on every batch, measured side by side in one process (ratio = online / cached).

    python benchmarks/search_cost.py --dataset digits --teacher local:runs/quickstart/teacher
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--teacher", required=True, help="teacher spec, e.g. local:runs/quickstart/teacher")
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from rkd_edge.config import load_config
    from rkd_edge.nas.search import search
    from rkd_edge.progress import set_quiet
    from rkd_edge.rundir import load_splits
    from rkd_edge.teachers import create_teacher
    from rkd_edge.teachers.cache import TeacherCache

    set_quiet(True)
    cfg = load_config(
        args.preset, overrides=[f"data.name={args.dataset}", f"search.epochs={args.epochs}", "search.warmup_epochs=0"]
    )
    splits = load_splits(cfg)
    teacher = create_teacher(args.teacher, splits.input_shape, splits.num_classes).freeze()
    times = {"cached": [], "online": []}
    fill_s = None
    for _ in range(args.repeats):  # alternate the variants so machine noise hits both alike
        for variant in ("cached", "online"):
            cache = TeacherCache(None)
            t0 = time.perf_counter()
            if variant == "cached":
                for sp in (splits.train,):
                    cache.outputs(teacher, sp)
                fill_s = time.perf_counter() - t0
            genotype, log = search(
                cfg, splits, teacher, cache, cfg.search.lambdas[0], online_teacher=variant == "online"
            )
            times[variant].append(sum(e["seconds"] for e in log) / len(log))
    cached, online = min(times["cached"]), min(times["online"])
    data = {
        "dataset": args.dataset,
        "teacher": args.teacher,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "seconds_per_epoch": {"cached": cached, "online": online},
        "all_seconds_per_epoch": times,
        "ratio_online_over_cached": online / cached,
        "cache_fill_seconds_once": fill_s,
    }
    md = md_table(
        ["variant", "s / search epoch (best of repeats)"],
        [["teacher cache", f"{cached:.2f}"], ["teacher online", f"{online:.2f}"]],
    )
    md += f"\n\nRatio online / cached: **{online / cached:.2f}x** (cache filled once in {fill_s:.2f} s)."
    cmd = f"python benchmarks/search_cost.py --dataset {args.dataset} --teacher {args.teacher}"
    print(record(f"search_cost_{args.dataset}", data, md, cmd))


if __name__ == "__main__":
    main()
