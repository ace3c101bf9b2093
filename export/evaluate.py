"""Accuracy against SNR of an exported bundle through ONNX Runtime, FP32 and INT8 side by side.

The channel is simulated outside the graphs with the same torch channel code as training (DESIGN.md
section 2), so the numbers compare directly with ``rkd-edge evaluate RUN``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rkd_edge.config import CodecConfig, parse_range, read_config
from rkd_edge.errors import UserError
from rkd_edge.evaluate.plots import plot_snr
from rkd_edge.evaluate.run import commit_evaluation, evaluation_target, write_summary
from rkd_edge.evaluate.snr import NOISE_BATCH, Grid, curves, noiseless_grid, sweep, write_rows
from rkd_edge.methods import method_config
from rkd_edge.rundir import load_splits
from rkd_edge.runtime import Bundle, Runtime
from rkd_edge.runtime.bundle import bundle_id


def evaluate_bundle(
    bundle: Path,
    channels: list[str] | None = None,
    snr: str | None = None,
    symbols: list[int] | None = None,
    trials: int | None = None,
    out: Path | None = None,
    precisions: list[str] | None = None,
) -> dict:
    """Accuracy against SNR of a verified bundle, every precision it holds; files under
    ``BUNDLE/evaluation`` (or ``out``), committed as one set."""
    manifest = Bundle.open(bundle).manifest  # refuses a bundle whose files do not match the manifest
    k_max = manifest["symbols"]["max"]
    if bad := [k for k in symbols or [] if not 1 <= k <= k_max]:  # before the features are encoded
        raise UserError(f"symbol lengths {bad} outside 1..{k_max} supported by this bundle")
    if bad := [c for c in channels or [] if c not in manifest["channel_types"]]:
        raise UserError(f"channel {bad[0]!r} is not one this bundle knows: {', '.join(manifest['channel_types'])}")
    given = read_config(bundle / "config.json", "bundle config")
    cfg = method_config(given)
    of = f"bundle {bundle_id(manifest)}"
    with evaluation_target(out, bundle / "evaluation", (bundle,), of) as (out, mark):
        ec = cfg.evaluate
        splits = load_splits(cfg)
        channels = channels or ec.channels
        snrs = parse_range(snr or ec.snr_db)
        trials = trials or ec.trials
        rows, noiseless, files = [], {}, {}
        for prec in precisions or manifest["precisions"]:
            rt, method = Runtime(str(bundle), precision=prec), f"onnx-{prec}"
            files[method] = rt.files  # an INT8 number is the CPU form's where the runtime runs that one
            grid = Grid(channels, snrs, symbols or ec.symbols or rt.symbol_set, trials, cfg.seed)
            ks = grid.ks
            rows += evaluate_runtime(rt, splits.test, grid, cfg.codec, splits.source_dim, method)
            # the bound is the noiseless grid's row, not an identity row the user's grid may also hold
            bound = evaluate_runtime(rt, splits.test, noiseless_grid(cfg, ks), cfg.codec, splits.source_dim, method)
            rows += bound
            noiseless[method] = bound[0]["accuracy"]
        k = max(symbols or ec.symbols or rt.symbol_set)
        summary = {
            "report_symbols": k,
            "noiseless": noiseless,
            "models": files,
            "curves": {m: curves([r for r in rows if r["method"] == m], k) for m in {r["method"] for r in rows}},
            "files": ["evaluation.csv", "evaluation.json", "accuracy_vs_snr.png"],
        }

        def write(staging: Path) -> None:
            write_rows(rows, staging)
            plot_snr(
                [r for r in rows if r["channel"] != "identity"],
                staging / "accuracy_vs_snr.png",
                f"bundle {bundle.name}: FP32 vs INT8 (ONNX Runtime)",
            )
            write_summary(staging, summary, grid, of, given.digest())

        commit_evaluation(out, mark, write, of=of)
        return summary


def evaluate_runtime(rt: Runtime, split, grid: Grid, cc: CodecConfig, source_dim: int, method: str) -> list[dict]:
    """Accuracy of a bundle through ONNX Runtime; the same loop and noise as the PyTorch evaluation."""
    nb = NOISE_BATCH
    feats = [(rt.encode(split.images[i : i + nb]), split.labels[i : i + nb]) for i in range(0, len(split), nb)]

    def link(f, snr, k, name, ch, g):
        sym, mask = rt.transmit(f, snr, k, name)
        o = ch(torch.from_numpy(sym), torch.full((len(f),), snr), torch.from_numpy(mask), g)
        return np.argmax(rt.receive(o.y.numpy(), mask, snr, name, o.csi.numpy() if rt.uses_csi else None), -1)

    return sweep(feats, link, grid, cc, source_dim, method)
