"""Stage-1 students against the issue-15 budget: parameters as a share of the teacher's, clean accuracy as a
share of the teacher's, on the same teacher and test split.

Runs are made with ``rkd-edge pipeline --preset fashion-mnist --teacher local:T --out RUN [--set ...]`` (stage 2
need not run). The clean accuracy is the run's stage-1 record; where a run has no record (stopped after the
stage-1 checkpoint was written) it is measured here from that checkpoint with the function the pipeline uses.

    python benchmarks/student_budget.py --runs "w10-e10:runs/fm/rkd-sc,w8-e40:runs/fm3/d8e40"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACCURACY_SHARE, PARAM_SHARE, md_table, record  # noqa: E402

from rkd_edge.config import augmenting  # noqa: E402
from rkd_edge.distill.stages import validate  # noqa: E402
from rkd_edge.nas.genotypes import Genotype  # noqa: E402
from rkd_edge.rundir import RunDir, load_splits, student_costs  # noqa: E402


def student(run: Path) -> dict:
    """Params, clean accuracy and stage-1 settings of ``run``'s stage-1 student, against its teacher."""
    rd = RunDir(run)
    teacher = rd.done("teacher")
    stage1 = rd.done("stage1")
    cfg, system, spec = rd.load()
    params = student_costs(system, spec["input_shape"])["params"]
    if stage1 is not None:
        acc, source = stage1["clean_test_accuracy"], "stage-1 record"
    else:
        acc, source = validate(system, load_splits(cfg).test, "cpu", cfg.seed), "measured from the checkpoint"
    s1, genotype = cfg.stage1, Genotype.load(rd.genotype)
    width = genotype.skeleton.init_channels
    return {
        "params": params,
        "param_share": round(params / teacher["params"], 5),
        "clean_accuracy": acc,
        "accuracy_share": round(acc / teacher["accuracy"], 5),
        "accuracy_source": source,
        "width": width,
        "searched_width": genotype.search.get("searched_channels", width),
        "stage1_epochs": s1.epochs,
        "stage1_batches": s1.limit_batches,
        "stage1_temperature": s1.temperature,
        "stage1_losses": s1.losses,
        # The epoch stage 1 kept was picked on the validation split: its score, beside the test accuracy.
        "best_val_accuracy": max((h["val_acc"] for h in (stage1 or {}).get("history", [])), default=None),
        "augment": augmenting(s1.augment, cfg.data.augment),  # what stage 1 trained with
        "teacher": {"params": teacher["params"], "accuracy": teacher["accuracy"], "identity": teacher["identity"]},
        "meets_budget": params <= PARAM_SHARE * teacher["params"] and acc >= ACCURACY_SHARE * teacher["accuracy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True, help="NAME:RUN, comma list")
    ap.add_argument("--name", default="student_budget_fashion-mnist")
    args = ap.parse_args()
    results = {}
    for item in filter(None, args.runs.split(",")):
        name, run = item.split(":", 1)
        results[name] = {"run": Path(run).name, **student(Path(run))}
    teachers = {json.dumps(r["teacher"], sort_keys=True) for r in results.values()}
    if len(teachers) != 1:
        sys.exit("the runs have different teachers; compare students of one teacher")
    rows = [
        [
            name,
            f"{r['width']} (searched {r['searched_width']})",
            f"{r['stage1_epochs']} x {r['stage1_batches'] or 'all'}" + (" aug" if r["augment"] else ""),
            f"T={r['stage1_temperature']:g} " + " ".join(f"{k}={v:g}" for k, v in r["stage1_losses"].items()),
            f"{r['params']:,}",
            f"{100 * r['param_share']:.2f} %",
            "-" if r["best_val_accuracy"] is None else f"{r['best_val_accuracy']:.4f}",
            f"{r['clean_accuracy']:.4f}",
            f"{100 * r['accuracy_share']:.2f} %",
            "yes" if r["meets_budget"] else "no",
        ]
        for name, r in results.items()
    ]
    header = [
        "student",
        "width",
        "stage-1 epochs x batches",
        "KD temperature, loss weights",
        "params",
        "of teacher",
        "best val",
        "clean (test)",
        "of teacher",
        "meets",
    ]
    t = next(iter(results.values()))["teacher"]
    md = (
        f"Teacher {t['params']:,} params, clean {t['accuracy']:.4f}. Budget (issue 15): at most "
        f"{100 * PARAM_SHARE:g} % of its parameters at {100 * ACCURACY_SHARE:g} % or more of its accuracy.\n\n"
        + md_table(header, rows)
    )
    named = "" if args.name == ap.get_default("name") else f" --name {args.name}"
    record(args.name, {"students": results}, md, f"python benchmarks/student_budget.py{named} --runs {args.runs}")
    print(md)


if __name__ == "__main__":
    main()
