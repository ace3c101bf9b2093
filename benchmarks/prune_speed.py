"""Does pruning make the encoder faster? Pruned variants of one run against its source, side by side.

Each variant is a real ``rkd-edge prune`` (``--ratio``, ``--round-to``, ``--epochs``) of ``--run``, exported
like the source. Then, per model (the encoder, and the fused transmitter = encoder + tx where the bundle
has it) and batch, the FP32 ONNX Runtime CPU sessions of the source and of every variant are timed with
the one timing protocol (:func:`rkd_edge.devices.latency.interleaved`: rounds alternate between them, with
the machine reference kernel beside each), and each variant's p50 is set against the source's. Beside the
speed: parameters, MACs, the conv channels kept, the fraction of channels removed, and accuracy (clean
after the fine-tune; AWGN and Rayleigh at the given SNRs from the pruned run's evaluation against the
source's).

    python benchmarks/prune_speed.py --run runs/quickstart --work /tmp/prune-speed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record, synthetic_feeds  # noqa: E402

from rkd_edge.devices.latency import interleaved  # noqa: E402
from rkd_edge.export.bundle import export_bundle  # noqa: E402
from rkd_edge.io import read_json  # noqa: E402
from rkd_edge.prune import prune_run  # noqa: E402
from rkd_edge.runtime.bundle import Bundle  # noqa: E402
from rkd_edge.runtime.runners.ort import cpu_session  # noqa: E402

SOURCE = "source"


def _variants(text: str) -> list[tuple[float, int]]:
    """``"0.3:1,0.3:4"`` -> ``[(0.3, 1), (0.3, 4)]`` (ratio:round_to)."""
    out = []
    for item in text.split(","):
        ratio, _, round_to = item.partition(":")
        out.append((float(ratio), int(round_to or 1)))
    return out


def _build(run: Path, work: Path, variants, epochs: int) -> dict[str, dict]:
    """Prune and export each variant (kept in ``work``: a rerun reuses what is there)."""
    built = {SOURCE: {"run": run, "bundle": work / "source-bundle", "prune": None}}
    for ratio, round_to in variants:
        name = f"r{ratio}-to{round_to}"
        pruned = work / name
        if not (pruned / "prune.json").is_file():
            prune_run(run, pruned, ratio, epochs, round_to)
        built[name] = {"run": pruned, "bundle": work / f"{name}-bundle", "prune": read_json(pruned / "prune.json")}
    for b in built.values():
        if not (b["bundle"] / "manifest.json").is_file():
            export_bundle(b["run"], b["bundle"])
        b["opened"] = Bundle.open(b["bundle"])  # verified once, timed per model and batch
    return built


def _timed(built: dict, model: str, batch: int, rounds: int, per_round_s: float, threads: int) -> dict:
    """Every variant's session of ``model`` at ``batch``, interleaved; summaries by variant name."""
    fns = {}
    for name, b in built.items():
        bundle = b["opened"]
        if model not in bundle.manifest["models"]:
            continue
        session = cpu_session(bundle.model_path(model), threads)
        feeds = synthetic_feeds(bundle.manifest["models"][model]["fp32"], bundle.manifest, batch)
        fns[name] = lambda s=session, f=feeds: s.run(None, f)
    return interleaved(fns, batch, rounds=rounds, per_round_s=per_round_s, warmup_s=0.5, reference=True)


def _accuracy(run: Path, channel: str, snr: float) -> float | None:
    curves = read_json(run / "stages" / "evaluate.json").get("curves", {})
    return curves.get(channel, {}).get(f"{snr:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a complete run (e.g. the quickstart)")
    ap.add_argument("--work", required=True, type=Path, help="folder for the pruned runs and the bundles")
    ap.add_argument("--variants", default="0.3:1,0.3:4,0.3:8,0.5:1,0.5:4", help="ratio:round_to,...")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tune epochs per stage of each prune")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--snrs", default="0,10", help="dB, AWGN and Rayleigh points from the evaluations")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-round-s", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="prune_speed")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    built = _build(args.run, args.work, _variants(args.variants), args.epochs)
    snrs = [float(x) for x in args.snrs.split(",")]
    points = [(c, s) for c in ("awgn", "rayleigh") for s in snrs]
    rows, md_rows = [], []
    for model in ("encoder", "transmitter"):
        for batch in (int(x) for x in args.batch.split(",")):
            timed = _timed(built, model, batch, args.rounds, args.per_round_s, args.threads)
            if SOURCE not in timed:
                continue
            base = timed[SOURCE]
            for name, b in built.items():
                if name not in timed:
                    continue
                rec = b["prune"]
                got = timed[name]
                row = {
                    "variant": name,
                    "model": model,
                    "batch": batch,
                    "ratio": rec and rec["ratio"],
                    "round_to": rec and rec["round_to"],
                    "channels_removed": rec["after"]["channels_removed"] if rec else 0.0,
                    "conv_channels": rec["after"]["conv_channels"] if rec else None,
                    "encoder_params": rec["after"]["encoder_params"] if rec else None,
                    "encoder_macs": rec["after"]["encoder_macs"] if rec else None,
                    "clean_accuracy": rec["after"]["clean_accuracy"] if rec else None,
                    "accuracy": {f"{c} {s:g} dB": _accuracy(b["run"], c, s) for c, s in points},
                    "p50_ms": got["p50_ms"],
                    "p50_per_reference": got["p50_per_reference"],
                    "iterations": got["iterations"],
                    "p50_vs_source": round(got["p50_per_reference"] / base["p50_per_reference"], 3),
                }
                rows.append(row)
                md_rows.append(
                    [
                        model,
                        batch,
                        name,
                        f"{row['channels_removed']:.3f}",
                        row["encoder_params"] or "",
                        f"{row['p50_ms']:.4f}",
                        f"{row['p50_vs_source']:.2f}",
                        *(f"{a:.4f}" if a is not None else "" for a in row["accuracy"].values()),
                    ]
                )
    first = next((b["prune"] for b in built.values() if b["prune"]), None)  # its "before" is the source
    md = (
        f"Pruned variants of `{args.run.name}` (`rkd-edge prune --ratio R --round-to N --epochs {args.epochs}`) "
        "against the source, FP32 ONNX Runtime CPU sessions, "
        f"{args.threads} thread(s), interleaved with the reference kernel ({args.rounds} rounds of "
        f"{args.per_round_s} s); `vs source` is the ratio of p50s in units of the reference kernel (below 1: "
        "faster). Accuracy from each run's evaluation (the source as trained; the variants after their "
        "fine-tune).\n\n"
        + md_table(
            ["model", "batch", "variant", "removed", "enc. params", "p50 ms", "vs source"]
            + [f"{c} {s:g} dB" for c, s in points],
            md_rows,
        )
        + "\n"
    )
    if first:
        md += f"\nSource encoder: {first['before']['encoder_params']:,} parameters, conv channels "
        md += f"{first['before']['conv_channels']}.\n"
        for name, b in built.items():
            if b["prune"]:
                md += f"\n- {name}: conv channels {b['prune']['after']['conv_channels']}"
        md += "\n"
    cmd = "python benchmarks/prune_speed.py " + " ".join(sys.argv[1:])
    out = record(args.name, {"run": args.run.name, "epochs": args.epochs, "results": rows}, md, cmd)
    print(md)
    print(out)


if __name__ == "__main__":
    main()
