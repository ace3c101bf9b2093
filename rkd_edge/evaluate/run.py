"""Evaluate a trained run (PyTorch) over channels, SNRs and lengths, writing files and plots."""

from __future__ import annotations

from pathlib import Path

from rkd_edge import env
from rkd_edge.config import parse_range
from rkd_edge.evaluate.plots import plot_snr, plot_symbols
from rkd_edge.evaluate.snr import Grid, curves, evaluate_torch, noiseless_grid, write_rows
from rkd_edge.io import read_json, write_json


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
    grid = Grid(channels, snrs, ks, trials or ec.trials, cfg.seed)
    rows = evaluate_torch(system, splits.test, grid, mcfg.codec, splits.source_dim, device, cfg.method)
    rows += evaluate_torch(
        system, splits.test, noiseless_grid(mcfg, ks), mcfg.codec, splits.source_dim, device, cfg.method
    )
    out = Path(out or run)
    write_rows(rows, out)
    report_k = ec.report_symbols or max(ks)
    title = f"{cfg.method} on {splits.name}"
    # Upper bounds drawn as dashed levels: the student through the noiseless codec, and the teacher on
    # the same test split (recorded by the run's teacher stage; a bare evaluation folder has none).
    noiseless_row = next(r for r in rows if r["channel"] == "identity")
    noiseless = noiseless_row["accuracy"]
    bounds = {"student, noiseless codec": noiseless}
    if (Path(run) / "stages" / "teacher.json").is_file():
        bounds["teacher"] = read_json(Path(run) / "stages" / "teacher.json").get("accuracy")
    plot_snr([r for r in rows if r["channel"] != "identity"], out / "accuracy_vs_snr.png", title, bounds)
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
        "noiseless": noiseless,
        "noiseless_symbols": noiseless_row["k"],
        "upper_bounds": bounds,
        "files": ["evaluation.csv", "evaluation.json", "accuracy_vs_snr.png", "accuracy_vs_symbols.png"],
        "source_dim": splits.source_dim,
    }
    write_json(out / "evaluation_summary.json", summary)
    return summary
