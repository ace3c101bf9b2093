"""Evaluate a trained run (PyTorch) over channels, SNRs and lengths, writing files and plots."""

from __future__ import annotations

from pathlib import Path

from rkd_edge import env
from rkd_edge.config import parse_range
from rkd_edge.evaluate.plots import plot_snr, plot_symbols
from rkd_edge.evaluate.snr import curves, evaluate_torch, write_rows
from rkd_edge.io import write_json


def evaluate_run(
    run: Path,
    channels: list[str] | None = None,
    snr: str | None = None,
    symbols: list[int] | None = None,
    trials: int | None = None,
    out: Path | None = None,
    quiet_summary: bool = False,
) -> dict:
    """Accuracy against SNR for every channel and length; returns a summary for the report."""
    from rkd_edge.pipeline import load_run, load_splits

    cfg, system, spec = load_run(run)
    ec = cfg.evaluate
    channels = channels or ec.channels
    snrs = parse_range(snr or ec.snr_db)
    ks = symbols or ec.symbols or list(system.codec.symbol_set)
    bad = [k for k in ks if not 1 <= k <= system.codec.max_symbols]
    if bad:
        from rkd_edge.errors import UserError

        raise UserError(f"symbol lengths {bad} outside 1..{system.codec.max_symbols} supported by this codec")
    from rkd_edge.methods import method_config

    mcfg = method_config(cfg)
    splits = load_splits(mcfg)
    device = env.pick_device(cfg.device)
    system.to(device)
    rows = evaluate_torch(
        system,
        splits.test,
        channels,
        snrs,
        ks,
        trials or ec.trials,
        cfg.seed,
        mcfg.codec,
        splits.source_dim,
        device,
        cfg.method,
    )
    # Noiseless upper bound of the codec: no noise, the codec told the top of its training range on a
    # channel type it was trained on (the identity type's conditioning is never trained).
    trained = mcfg.stage2.snr_schedule or mcfg.stage2.snr_db
    rows += evaluate_torch(
        system,
        splits.test,
        ["identity"],
        [float(max(trained))],
        [max(ks)],
        1,
        cfg.seed,
        mcfg.codec,
        splits.source_dim,
        device,
        cfg.method,
        told=mcfg.stage2.channels[0],
    )
    out = Path(out or run)
    write_rows(rows, out)
    report_k = ec.report_symbols or max(ks)
    title = f"{cfg.method} on {splits.name}"
    plot_snr([r for r in rows if r["channel"] != "identity"], out / "accuracy_vs_snr.png", title)
    plot_symbols(
        [r for r in rows if r["channel"] != "identity"],
        out / "accuracy_vs_symbols.png",
        [s for s in (0.0, 10.0) if s in snrs] or snrs[:1],
        title,
    )
    summary = {
        "rows": len(rows),
        "report_symbols": report_k,
        "curves": curves(rows, report_k),
        "noiseless": next(r["accuracy"] for r in rows if r["channel"] == "identity"),
        "files": ["evaluation.csv", "evaluation.json", "accuracy_vs_snr.png", "accuracy_vs_symbols.png"],
        "source_dim": splits.source_dim,
    }
    write_json(out / "evaluation_summary.json", summary)
    return summary
