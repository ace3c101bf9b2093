"""CAT codec size sweep (issue 15): the transmitter half's parameters and measured latency next to the
accuracy at -10, 0 and 10 dB, on one stage-1 student.

Every variant is ``rkd-edge pipeline --from SOURCE`` with other ``codec.dim / depth / heads``: teacher,
search and stage 1 are copied from SOURCE (stage 1 never runs the codec), stage 2 trains the new codec,
evaluate covers -10, 0 and 10 dB on AWGN and Rayleigh at every k. SOURCE itself is the reference row.
Each run is exported (FP32) and encoder + tx of all variants are timed in one process, interleaved, with
the machine reference kernel beside them, through the deployed runtime (ONNX Runtime, one thread).

    python benchmarks/codec_sweep.py --source runs/fm/rkd-sc --teacher local:runs/fmnist-teacher \\
        --variants 32x1x4,16x1x2,32x1x2,16x2x2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_points, md_table, record  # noqa: E402

from rkd_edge.devices.latency import REFERENCE, interleaved  # noqa: E402
from rkd_edge.nas.cost import count_params  # noqa: E402
from rkd_edge.rundir import load_run, load_splits  # noqa: E402
from rkd_edge.runtime import Runtime  # noqa: E402

SNRS = (-10.0, 0.0, 10.0)
# The CAT codec's options as the table names them, and the system.json key that says each is on.
OPTIONS = {"gains": "gains", "task head": "posterior_classes", "rx per k": "rx_per_length"}
CHANNELS = ("awgn", "rayleigh")


def rkd(*args: str) -> None:
    subprocess.run(["rkd-edge", "-q", *args], check=True, stdout=subprocess.DEVNULL)


def train(variant: str, args) -> Path:
    dim, depth, heads = variant.split("x")
    out = Path(args.root) / f"d{dim}-l{depth}-h{heads}"
    if not (out / "report.json").is_file():  # a finished variant is kept; an unfinished one resumes
        sets = [f"codec.dim={dim}", f"codec.depth={depth}", f"codec.heads={heads}", "evaluate.snr_db=-10:10:10"]
        cmd = ["pipeline", "--preset", args.preset, "--teacher", args.teacher, "--from", args.source, "--out"]
        rkd(*cmd, str(out), *(x for s in sets for x in ("--set", s)))
    return out


def bundle_of(run: Path) -> Path:
    bundle = run.parent / f"{run.name}-bundle"
    if not (bundle / "manifest.json").is_file():
        rkd("export", str(run), "--out", str(bundle))
    return bundle


def sizes(run: Path) -> dict:
    _, system, _ = load_run(run)
    tx = sum(p.numel() for _, p in system.group_parameters("codec.tx"))
    return {"encoder_params": count_params(system.encoder), "tx_params": tx, "codec_params": count_params(system.codec)}


def worst_against(run: Path, source: dict) -> dict:
    """The largest loss of ``run`` against the source at every channel, k and SNR both were evaluated at."""
    mine = evaluation_points(run / "evaluation.json", CHANNELS)
    diffs = [
        (round(100 * (acc - source[c][k][s][0]), 2), c, k, s)
        for c in mine
        for k in mine[c]
        for s, (acc, *_) in mine[c][k].items()
        if s in source.get(c, {}).get(k, {})
    ]
    points, channel, k, snr = min(diffs)
    return {"points": points, "channel": channel, "k": k, "snr_db": snr, "compared": len(diffs)}


def latency(bundles: dict[str, Path], images: np.ndarray, seconds: float) -> dict:
    """encoder + tx per variant at batch 1 and 32 (uint8 images in, symbols out), interleaved: ``two``
    runner calls (encoder, then tx: how every bundle ran before the fused graph) and, for bundles that
    have it, the ``fused`` transmitter graph (what ``Runtime.send`` runs now)."""
    fns, batch, runtimes = {}, {}, []
    for name, b in bundles.items():
        for path in ("two", "fused"):
            rt = Runtime(str(b), precision="fp32", threads=1, fused=path == "fused")
            runtimes.append(rt)
            if path == "fused" and rt.fused is None:
                continue
            k = max(rt.symbol_set)
            for n in (1, 32):
                fns[(name, path, n)] = lambda rt=rt, x=images[:n], k=k: rt.send(x, 0.0, k, "awgn")
                batch[(name, path, n)] = n
    res = interleaved(fns, batch, rounds=10, per_round_s=seconds / 10, warmup_s=0.3, reference=True)
    for rt in runtimes:
        rt.close()
    ref = res.pop(REFERENCE)
    out: dict = {name: {} for name in bundles}
    for (name, path, n), r in res.items():
        rec = {"p50_ms": round(r["p50_ms"], 4), "p50_per_reference": round(r["p50_per_reference"], 3)}
        out[name].setdefault(path, {})[n] = rec
    return {"variants": out, "reference_p50_ms": round(ref["p50_ms"], 5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, help="The finished run whose stage-1 student every variant uses.")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--preset", default="fashion-mnist")
    ap.add_argument("--variants", default="32x1x4,16x1x2,32x1x2,16x2x2", help="DIMxDEPTHxHEADS, comma list.")
    ap.add_argument("--runs", default="", help="NAME:RUN, comma list: finished runs to add as variants.")
    ap.add_argument("--root", default="runs/codec-sweep")
    ap.add_argument("--seconds", type=float, default=6.0, help="Timed seconds per variant and batch.")
    args = ap.parse_args()

    runs = {"source": Path(args.source)} | {v: train(v, args) for v in filter(None, args.variants.split(","))}
    runs |= {name: Path(run) for name, run in (item.split(":", 1) for item in filter(None, args.runs.split(",")))}
    bundles = {name: bundle_of(run) for name, run in runs.items()}
    cfg, _, _ = load_run(runs["source"])
    images = load_splits(cfg).test.images[:32]
    timed = latency(bundles, images, args.seconds)

    rows, data, k_max = [], {}, {}
    source_points = evaluation_points(runs["source"] / "evaluation.json", CHANNELS)
    base = timed["variants"]["source"]["two"]  # the reference: the source as it ran, two calls
    for name, run in runs.items():
        spec = json.loads((run / "system.json").read_text())["codec"]
        acc = evaluation_points(run / "evaluation.json", CHANNELS, SNRS)
        k = k_max[name] = max(spec["symbols"])
        lat = timed["variants"][name]
        best = lat.get("fused", lat["two"])  # what Runtime.send runs for this bundle
        mean = float(np.mean([acc[c][k][s][0] for c in CHANNELS for s in SNRS]))
        data[name] = {
            "codec": {key: spec[key] for key in ("dim", "depth", "heads")}
            | {option: bool(spec.get(key)) for option, key in OPTIONS.items()},
            **sizes(run),
            "latency": lat,
            "latency_vs_source": {
                path: {n: round(t[n]["p50_per_reference"] / base[n]["p50_per_reference"], 3) for n in t}
                for path, t in lat.items()
            },
            "send_vs_source": {n: round(best[n]["p50_per_reference"] / base[n]["p50_per_reference"], 3) for n in best},
            "accuracy": {c: {str(kk): {str(s): v for s, v in pts.items()} for kk, pts in acc[c].items()} for c in acc},
            "mean_accuracy_k_max": round(mean, 4),
            "worst_vs_source": worst_against(run, source_points),
        }
    for name, d in data.items():
        better = [
            o
            for o, e in data.items()
            if o != name
            and e["tx_params"] <= d["tx_params"]
            and e["send_vs_source"][1] <= d["send_vs_source"][1]
            and e["mean_accuracy_k_max"] > d["mean_accuracy_k_max"]
        ]
        d["pareto"] = not better
        c, k = d["codec"], k_max[name]
        cells = [f"{100 * d['accuracy'][ch][str(k)][str(s)][0]:.2f}" for ch in CHANNELS for s in SNRS]
        vs = d["latency_vs_source"]
        fused = vs.get("fused")
        w = d["worst_vs_source"]
        rows.append(
            [
                name,
                f"{c['dim']}/{c['depth']}/{c['heads']}" + "".join(f" +{o}" for o in OPTIONS if c[o]),
                f"{d['tx_params']:,}",
                f"{d['encoder_params']:,}",
                f"{d['latency']['two'][1]['p50_ms']:.3f}",
                f"{vs['two'][1]:.2f} / {vs['two'][32]:.2f}",
                f"{fused[1]:.2f} / {fused[32]:.2f}" if fused else "-",
                *cells,
                f"{100 * d['mean_accuracy_k_max']:.2f}",
                f"{w['points']:+.2f} ({w['channel']} k={w['k']} {w['snr_db']:g} dB; {w['compared']} points)",
                "yes" if d["pareto"] else "",
            ]
        )
    head = ["variant", "dim/depth/heads", "tx params", "encoder params", "enc+tx ms (b1, two calls)"]
    head += ["vs source b1 / b32, two calls", "fused graph b1 / b32"]
    head += [f"{ch} {s:g} dB" for ch in CHANNELS for s in SNRS] + ["mean", "worst vs source", "Pareto"]
    md = md_table(head, rows)
    md += (
        f"\n\nAccuracy (%) at the largest k on the whole test split (1 noise draw per image; 95 % intervals in the "
        f"JSON). Latency: uint8 images to symbols through the deployed runtime (ONNX Runtime, one thread, FP32), "
        f"all variants interleaved in one process: two calls (encoder, then tx) and, for bundles exported with "
        f"it, the fused transmitter graph (one call, what Runtime.send runs); both compared with the source's "
        f"two calls, p50 in units of the machine reference kernel (p50 {timed['reference_p50_ms']} ms) timed "
        f"beside each. Pareto: no other variant has at most the tx parameters, at most the batch-1 latency of "
        f"what it runs and a higher mean accuracy. Worst vs source: the largest loss against the source at every "
        f"channel, k and SNR both runs were evaluated at (1 draw per image each).\n"
    )
    cmd = (
        f"python benchmarks/codec_sweep.py --source {args.source} --teacher {args.teacher} --preset {args.preset} "
        f"--variants {args.variants} --root {args.root} --seconds {args.seconds:g}"
        + (f" --runs {args.runs}" if args.runs else "")
    )
    print(record(f"codec_sweep_{args.preset}", {"source": args.source, "variants": data}, md, cmd))


if __name__ == "__main__":
    main()
