"""``RUN/report.json`` and ``RUN/report.md``: what a run produced, in numbers and pictures."""

from __future__ import annotations

from rkd_edge import env
from rkd_edge.config import RunConfig
from rkd_edge.data import DataSplits
from rkd_edge.io import FileSet, json_text
from rkd_edge.nas.cost import count_params
from rkd_edge.rundir import RunDir, student_costs


def write_report(rd: RunDir, splits: DataSplits, mcfg: RunConfig, results: dict) -> dict:
    """Assemble ``report.json`` and ``report.md`` from the stage records of a finished run.

    Args:
        rd: The run folder.
        splits: Its data splits.
        mcfg: The config its method trained with (``rkd_edge.methods.method_config``).
        results: Stage name -> stage record.
    """
    cfg, system, _ = rd.load()
    ev = results.get("evaluate", {})
    teacher = results["teacher"]
    student = student_costs(system, splits.input_shape)
    # The stage that last trained the clean path: the probe (authors-2025), else stage 1. A method without
    # either (deepjscc) never fed its classifier clean features: its accuracy is the noiseless codec path.
    last = next((results[s] for s in ("probe", "stage1") if s in results), None)
    if last is not None:
        clean, path = last.get("clean_test_accuracy"), "clean: encoder -> classifier"
    else:
        clean, path = ev.get("noiseless"), "noiseless: encoder -> codec (identity channel) -> classifier"
    student["accuracy"], student["accuracy_path"] = clean, path
    report = {
        "dataset": splits.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "teacher": {k: teacher[k] for k in ("spec", "params", "accuracy", "embed_dim")},
        "student": student,
        "ratios": {
            "params_vs_teacher": round(student["params"] / teacher["params"], 5),
            "accuracy_vs_teacher": round(clean / teacher["accuracy"], 5) if clean else None,
        },
        "codec": {
            "name": mcfg.codec.name,
            "params": count_params(system.codec),
            # The transmitter half runs on the device next to the encoder; the receiver half does not.
            "tx_params": sum(p.numel() for _, p in system.group_parameters("codec.tx")),
            "rx_params": sum(p.numel() for _, p in system.group_parameters("codec.rx")),
            "symbols": list(system.codec.symbol_set),
            "max_symbols": system.codec.max_symbols,
            "report_symbols": ev.get("report_symbols"),
            "bandwidth_ratio": round(ev.get("report_symbols", 0) / splits.source_dim, 6),
            "source_dim": f"C*H*W = {splits.source_dim}",
        },
        "channel": {
            "rayleigh_mode": mcfg.codec.rayleigh_mode,
            "csi": mcfg.codec.csi,
            "snr": "Es/N0 dB per complex symbol",
        },
        "curves": ev.get("curves", {}),
        "noiseless_accuracy": ev.get("noiseless"),
        "noiseless_symbols": ev.get("noiseless_symbols"),
        "timings_s": {k: v.get("seconds") for k, v in results.items()},
        "resumed_stages": [k for k, v in results.items() if v.get("resumed")],  # timed after an interruption only
        # Where each stage ran (what a rerun must match to repeat it bit for bit); ``environment`` is the
        # process that wrote this report, which may only have loaded finished stages.
        "stage_hosts": {k: v.get("host") for k, v in results.items()},
        "versions": env.versions(),
        "environment": env.environment(),
        "config_hash": cfg.digest(),
    }
    with FileSet(rd.root, {rd.report_json.name, rd.report_md.name}) as fs:
        fs.path(rd.report_json.name).write_text(json_text(report))
        fs.path(rd.report_md.name).write_text(markdown(report, results))
    return report


def markdown(r: dict, results: dict) -> str:
    t, s, c = r["teacher"], r["student"], r["codec"]
    lines = [
        f"# rkd-edge report: {r['method']} on {r['dataset']}",
        "",
        "| model | parameters | accuracy (clean) |",
        "|---|---:|---:|",
        f"| teacher `{t['spec']}` | {t['params']:,} | {t['accuracy']:.4f} |",
        f"| student | {s['params']:,} ({100 * r['ratios']['params_vs_teacher']:.2f} % of teacher) | "
        f"{(s['accuracy'] or 0):.4f} ({100 * (r['ratios']['accuracy_vs_teacher'] or 0):.1f} % of teacher) |",
        f"| codec `{c['name']}` | {c['params']:,} (transmitter half {c['tx_params']:,}) | k in {c['symbols']} |",
        "",
        f"Student accuracy path: {s['accuracy_path']}.",
        "",
        f"Student MACs: {s['macs']:,}. Report length k = {c['report_symbols']} complex symbols, bandwidth "
        f"ratio {c['bandwidth_ratio']} ({c['source_dim']}). Channel: Rayleigh {r['channel']['rayleigh_mode']} "
        f"fading, CSI `{r['channel']['csi']}`; SNR is {r['channel']['snr']}.",
        "",
        "## Accuracy against SNR",
        "",
        f"Upper bounds (noiseless): teacher {t['accuracy']:.4f}; student through the codec "
        f"{r['noiseless_accuracy'] or 0:.4f} at k = {r['noiseless_symbols']}.",
        "",
    ]
    curves = r["curves"]
    if curves:
        snrs = sorted({float(x) for cur in curves.values() for x in cur})
        lines += ["| SNR (dB) | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
        for snr in snrs:
            lines.append(
                f"| {snr:g} | " + " | ".join(f"{curves[ch].get(f'{snr:g}', float('nan')):.4f}" for ch in curves) + " |"
            )
    lines += [
        "",
        "![accuracy against SNR](accuracy_vs_snr.png)",
        "",
        "![accuracy against symbols](accuracy_vs_symbols.png)",
        "",
    ]
    if "search" in results:
        search = results["search"]
        # "flops" in a run searched before the name said MACs: the encoder's, without the classifier's
        head = r["student"]["macs"] - r["student"]["encoder_macs"]
        macs = search["macs"] if "macs" in search else search.get("flops", 0) + head
        lines += [
            "## Architecture search",
            "",
            f"lambda = {search['lambda']}, params = {search['params']:,}, MACs = {macs:,} (encoder and classifier)",
            "",
            "![architecture weights](arch_weights.png)",
            "",
        ]
    lines += ["## Timings (s)", "", "| stage | seconds |", "|---|---:|"]
    resumed = set(r.get("resumed_stages") or [])
    lines += [f"| {k} | {v}{' (resumed: the part after the interruption)' if k in resumed else ''} |"
              for k, v in r["timings_s"].items()]  # fmt: skip
    lines += [
        "",
        f"Config hash `{r['config_hash'][:16]}`; versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        "",
    ]
    return "\n".join(lines)
