"""The four methods on fashion-mnist, same data and teacher, and the acceptance checks of issue 4.

    python benchmarks/fashion_mnist.py --teacher runs/fmnist-teacher --runs runs/fm

Runs ``rkd-sc`` first (``deepjscc`` starts from its search, ``no-stage2`` from its search and stage-1
student, through ``rkd-edge pipeline --from``), then the others; each run is resumable, so an interrupted
benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACCURACY_SHARE, PARAM_SHARE, md_table, record  # noqa: E402

from rkd_edge.config import read_config  # noqa: E402
from rkd_edge.methods import METHOD_STAGES, method_config  # noqa: E402

METHODS = ["rkd-sc", "authors-2025", "deepjscc", "no-stage2"]


def run_method(method: str, teacher: str, runs: Path, extra: list[str]) -> Path:
    out = runs / method
    cmd = [
        "rkd-edge",
        "-q",
        "pipeline",
        "--preset",
        "fashion-mnist",
        "--teacher",
        f"local:{teacher}",
        "--method",
        method,
        "--out",
        str(out),
        *extra,
    ]
    if method in ("deepjscc", "no-stage2"):
        # The stages whose settings agree with rkd-sc's are copied from it (deepjscc: the search; no-stage2:
        # the search and the stage-1 student too), so the baselines differ from ours only where they should.
        cmd += ["--from", str(runs / "rkd-sc")]
    subprocess.run(cmd, check=True)
    return out


def load_rows(run: Path) -> list[dict]:
    return json.loads((run / "evaluation.json").read_text())["rows"]


def training(run: Path) -> dict:
    """What a run's stages trained for, as its method ran them (a baseline kept from an earlier preset shows
    it here): epochs of stages 1 and 2 (None for a stage the method does not run) and stage 2's SNRs (a
    range, or the authors' schedule)."""
    c = method_config(read_config(run / "config.json", f"{run}/config.json"))
    stages = METHOD_STAGES[c.method]
    return {
        "stage1_epochs": c.stage1.epochs if "stage1" in stages else None,
        "stage2_epochs": c.stage2.epochs if "stage2" in stages else None,
        "stage2_snr_db": (c.stage2.snr_schedule or c.stage2.snr_db) if "stage2" in stages else None,
    }


def curves_by_k(rows: list[dict]) -> dict:
    """``{k: {channel: {snr_db: accuracy}}}`` of every k a run was evaluated at (keys as strings)."""
    out: dict = {}
    for r in rows:
        out.setdefault(str(r["k"]), {}).setdefault(r["channel"], {})[f"{float(r['snr_db']):g}"] = r["accuracy"]
    return out


def dedicated_curves(spec: str) -> dict:
    """``k:RUN,...`` (codecs trained for one k each, on the rkd-sc student) -> ``{k: {channel: {snr: acc}}}``."""
    out = {}
    for item in filter(None, spec.split(",")):
        k, run = item.split(":", 1)
        out[k] = curves_by_k(load_rows(Path(run)))[k]
    return out


def adaptive_gaps(ours: list[dict], dedicated: dict) -> list[list]:
    """Rows ``[k, channel, snr, adaptive, dedicated, difference (points), within 1 point]`` where both were
    evaluated. Within a point is judged as the other checks here are, by the adaptive codec's 95 % interval
    (its upper end at most 1 point below the dedicated codec): with one noise draw per image an interval is
    about +-0.9 point wide, as wide as the bar."""
    rows = []
    for k, by_ch in dedicated.items():
        for ch, pts in by_ch.items():
            for snr, acc in pts.items():
                mine = next((r for r in ours if _is(r, ch, snr, k)), None)
                if mine is not None:
                    diff = round(100 * (mine["accuracy"] - acc), 2)
                    rows.append(
                        [k, ch, snr, f"{mine['accuracy']:.4f}", f"{acc:.4f}", diff, mine["ci_high"] >= acc - 0.01]
                    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="runs/fmnist-teacher")
    ap.add_argument("--runs", default="runs/fm")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--collect-only", action="store_true", help="only tabulate finished runs")
    ap.add_argument("--dedicated", default="", help="k:RUN, comma list: rkd-sc codecs trained for one k each")
    args = ap.parse_args()
    runs = Path(args.runs)
    methods = args.methods.split(",")
    if not args.collect_only:
        for m in methods:
            run_method(m, args.teacher, runs, [])
    reports = {
        m: json.loads((runs / m / "report.json").read_text()) for m in METHODS if (runs / m / "report.json").is_file()
    }
    rows = {m: load_rows(runs / m) for m in reports}
    ours = reports["rkd-sc"]
    t_acc, s_acc = ours["teacher"]["accuracy"], ours["student"]["accuracy"]
    k_ours = ours["codec"]["report_symbols"]
    acc0 = ours["curves"]["awgn"]["0"]
    checks = {
        "student_params_le_5pct": ours["ratios"]["params_vs_teacher"] <= 0.05,
        "clean_ge_98pct_teacher": s_acc >= 0.98 * t_acc,
        "awgn_0db_ge_95pct_clean": acc0 >= 0.95 * s_acc,
        # Issue 15's tighter bar for the student.
        f"student_params_le_{100 * PARAM_SHARE:g}pct": ours["ratios"]["params_vs_teacher"] <= PARAM_SHARE,
        f"clean_ge_{100 * ACCURACY_SHARE:g}pct_teacher": s_acc >= ACCURACY_SHARE * t_acc,
    }
    table, beats = [], {}
    # Compare at equal bandwidth: rkd-sc at each baseline's own k where rkd-sc supports that k.
    ks_ours = set(ours["codec"]["symbols"])
    other_ks = sorted(ks_ours - {k_ours}, reverse=True)
    for ch in ("awgn", "rayleigh"):
        for snr in range(-10, 11, 2):
            line = [ch, snr]
            for m in METHODS:
                if m not in rows:
                    line.append("-")
                    continue
                k = reports[m]["codec"]["report_symbols"]
                p = _point(rows[m], ch, snr, k)
                line.append(f"{p['accuracy']:.4f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] k={k}")
                if m in ("authors-2025", "deepjscc"):
                    ref = _point(rows["rkd-sc"], ch, snr, k if k in ks_ours else k_ours)
                    beats.setdefault(m, []).append(ref["ci_high"] >= p["accuracy"])
                if m == "authors-2025" and k // 2 in ks_ours:  # and with half the authors' bandwidth
                    ref = _point(rows["rkd-sc"], ch, snr, k // 2)
                    beats.setdefault(f"{m}_at_half_k", []).append(ref["ci_high"] >= p["accuracy"])
            # The same rkd-sc codec at its shorter lengths (the authors' k = 32 among them).
            for k in other_ks:
                p = _point(rows["rkd-sc"], ch, snr, k)
                line.append(f"{p['accuracy']:.4f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]")
            table.append(line)
    for m, ok in beats.items():
        checks[f"rkd_sc_ge_{m}_all_snr"] = all(ok)
    dedicated = dedicated_curves(args.dedicated)
    gaps = adaptive_gaps(rows["rkd-sc"], dedicated)
    if gaps:
        checks["rate_adaptive_within_1pt_of_dedicated"] = all(g[-1] for g in gaps)
    summary = {
        "teacher": ours["teacher"],
        "student": ours["student"],
        "ratios": ours["ratios"],
        "codec": ours["codec"],
        "accuracy_awgn_0db": acc0,
        "checks": checks,
        "methods": {
            m: {
                "student_params": r["student"]["params"],
                "clean": r["student"]["accuracy"],
                "codec": r["codec"],
                "curves": r["curves"],
                "curves_by_k": curves_by_k(rows[m]),
                "timings_s": r["timings_s"],
                "training": training(runs / m),
            }
            for m, r in reports.items()
        },
        "dedicated": dedicated,
    }
    md = md_table(
        ["", "value"],
        [
            ["teacher params / accuracy", f"{ours['teacher']['params']:,} / {t_acc:.4f}"],
            [
                "student params (% of teacher)",
                f"{ours['student']['params']:,} ({100 * ours['ratios']['params_vs_teacher']:.2f} %)",
            ],
            ["student clean accuracy (% of teacher)", f"{s_acc:.4f} ({100 * s_acc / t_acc:.2f} %)"],
            ["rkd-sc AWGN 0 dB (% of clean)", f"{acc0:.4f} ({100 * acc0 / s_acc:.2f} %)"],
        ],
    )
    runs_rows = []
    for m in reports:
        trained = ("-" if v is None else v for v in summary["methods"][m]["training"].values())
        runs_rows.append([m, f"`{os.path.relpath((runs / m).resolve())}`", *trained])
    md += "\n\n## Runs\n\n"
    md += md_table(["method", "run", "stage-1 epochs", "stage-2 epochs", "stage-2 SNR dB"], runs_rows)
    md += "\n\n## Checks\n\n" + md_table(["check", "holds"], [[k, v] for k, v in checks.items()])
    md += "\n\n## Accuracy (95 % Wilson interval) at each method's report length k\n\n"
    extra = [f"rkd-sc k={k}" for k in other_ks]
    md += md_table(["channel", "SNR dB", *METHODS, *extra], table)
    if gaps:
        md += "\n\n## rkd-sc's one rate-adaptive codec against codecs trained for one k each\n\n"
        worst = min(g[-2] for g in gaps)
        md += f"Largest shortfall {worst:+.2f} points (one noise draw per image; 3 draws at fewer points: "
        md += "`benchmarks/results/codec_rates_fashion-mnist*.md`).\n\n"
        md += md_table(
            ["k", "channel", "SNR dB", "adaptive", "dedicated", "difference (points)", "within 1 (95 %)"], gaps
        )
    cmd = f"python benchmarks/fashion_mnist.py --teacher {args.teacher} --runs {args.runs}"
    cmd += f" --dedicated {args.dedicated}" if args.dedicated else ""
    print(record("fashion_mnist_methods", summary, md, cmd))


def _is(row: dict, ch: str, snr, k) -> bool:
    return row["channel"] == ch and float(row["snr_db"]) == float(snr) and int(row["k"]) == int(k)


def _point(rows, ch, snr, k):
    return next(r for r in rows if _is(r, ch, snr, k))


if __name__ == "__main__":
    main()
