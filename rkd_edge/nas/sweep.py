"""Search at one or several complexity weights; with several, score each derived student and write a
Pareto table (cost against validation accuracy)."""

from __future__ import annotations

import copy
from pathlib import Path

from rkd_edge import progress
from rkd_edge.config import RunConfig
from rkd_edge.distill.stages import run_stage
from rkd_edge.errors import UserError
from rkd_edge.io import read_json, write_json, write_text
from rkd_edge.nas.genotypes import Genotype
from rkd_edge.nas.search import plot_weights, search
from rkd_edge.students import create_encoder
from rkd_edge.system import SemanticSystem

SCORED = "scored.json"  # in a sweep's lambda folder: its Pareto row, once searched and scored


def score_genotype(genotype: Genotype, cfg: RunConfig, splits, teacher, cache, device: str) -> float:
    """Validation accuracy of the derived student after ``sweep_epochs`` of stage-1 distillation."""
    sc = copy.deepcopy(cfg.stage1)
    sc.epochs = cfg.search.sweep_epochs
    system = SemanticSystem(create_encoder(genotype), splits.num_classes, teacher.embed_dim)
    history = run_stage(
        "sweep-score",
        sc,
        system,
        splits,
        teacher,
        cache,
        seed=cfg.seed,
        batch_size=cfg.data.batch_size,
        augment=False,
        device=device,
    )
    return max(h["val_acc"] for h in history)


def run_sweep(cfg: RunConfig, splits, teacher, cache, out: Path, device: str) -> dict:
    """Writes ``genotype.json``, ``search_log.json``, ``arch_weights.png`` (and ``pareto.csv/md`` for a
    sweep) under ``out``; returns the stage record."""
    lambdas = list(cfg.search.lambdas)
    rows, chosen = [], None
    for lam in lambdas:
        sub = out if len(lambdas) == 1 else out / "sweep" / f"lambda_{lam:g}"
        if len(lambdas) > 1 and (done := _finished(sub, cfg)) is not None:
            progress.log(f"lambda={lam:g}: searched and scored earlier, reused")
            rows.append(done)
            continue
        sub.mkdir(parents=True, exist_ok=True)
        genotype, log = search(cfg, splits, teacher, cache, lam, device, sub)
        genotype.save(sub / "genotype.json")
        write_json(sub / "search_log.json", {"lambda": lam, "epochs": log})
        plot_weights(log, sub / "arch_weights.png")
        row = {
            "lambda": lam,
            "params": genotype.params,
            "macs": genotype.macs,
            "latency_ms": genotype.latency_ms,
            "expected_cost": genotype.search["expected_cost"],
            "normal": " ".join(op for op, _ in genotype.normal),
        }
        if len(lambdas) > 1:
            row["val_acc"] = round(score_genotype(genotype, cfg, splits, teacher, cache, device), 5)
            progress.log(f"lambda={lam:g}: params={genotype.params} val_acc={row['val_acc']}")
            # Written last: a sweep stopped later resumes after this lambda instead of searching it again.
            write_json(sub / SCORED, {"config": cfg.digest(), "row": row})
        rows.append((row, genotype))
    if len(lambdas) > 1:
        # Smallest student within one point of the best validation accuracy.
        best = max(r["val_acc"] for r, _ in rows)
        row, chosen = min((x for x in rows if x[0]["val_acc"] >= best - 0.01), key=lambda x: x[0]["params"])
        chosen.save(out / "genotype.json")
        _write_pareto([r for r, _ in rows], out)
    else:
        chosen = rows[0][1]
    return {
        "lambda": chosen.search["lambda"],
        "params": chosen.params,
        "macs": chosen.macs,
        "genotype": "genotype.json",
        "sweep": [r for r, _ in rows],
    }


def _finished(sub: Path, cfg: RunConfig) -> tuple[dict, Genotype] | None:
    """A lambda of this sweep searched and scored by an earlier, stopped run of the same config: its row
    and genotype; None when it has to run (again)."""
    try:
        record = read_json(sub / SCORED, "sweep record", expect=dict)
        if record.get("config") != cfg.digest() or not isinstance(record.get("row"), dict):
            return None
        return record["row"], Genotype.load(sub / "genotype.json")
    except UserError:  # missing or damaged: searched again
        return None


def _write_pareto(rows: list[dict], out: Path) -> None:
    cols = ["lambda", "params", "macs", "latency_ms", "expected_cost", "val_acc", "normal"]
    write_text(
        out / "pareto.csv",
        "\n".join([",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]) + "\n",
    )
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    write_text(out / "pareto.md", "\n".join(md) + "\n")
