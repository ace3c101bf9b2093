"""One rate-adaptive CAT codec against codecs trained for a single k, the uncoded analog baseline at the
same rate, and the CSI receiver against ZF equalisation (issue 15), all on one stage-1 student.

Runs are made with ``rkd-edge pipeline --from SOURCE`` (benchmarks/codec_sweep.py shows how); this script
evaluates every run at the same points (``rkd-edge evaluate RUN --out RUN/rates``: the whole test split,
``--trials`` noise draws per image, 95 % intervals) and compares. Every run of a comparison is evaluated
on the same images, so more draws narrow the noise part of each difference, not the choice of images.

    python benchmarks/codec_rates.py --adaptive runs/codec-sweep/d32-l1-h4 \\
        --dedicated 16:runs/codec-sweep/d32-l1-h4-k16,32:runs/codec-sweep/d32-l1-h4-k32 \\
        --uncoded runs/codec-sweep/uncoded --csi decoder:runs/codec-sweep/d32-l1-h4-csi-decoder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_points, md_table, record  # noqa: E402

from rkd_edge.config import parse_range  # noqa: E402

SNRS = "-10,-4,0,10"
CHANNELS = ("awgn", "rayleigh")


def curves(
    run: Path,
    symbols: list[int],
    channels: tuple[str, ...] = CHANNELS,
    trials: int = 1,
    snrs: str = SNRS,
    folder: str = "rates",
) -> dict:
    """``{channel: {k: {snr: [accuracy, ci_low, ci_high]}}}`` of ``run`` at ``snrs``, evaluated once into
    ``RUN/FOLDER`` (again, replacing it, when its rows hold other points or another ``trials``)."""
    out = run / folder
    want = {(c, k, float(s)) for c in channels for k in symbols for s in snrs.split(",")}
    if not evaluated(out / "evaluation.json", want, trials):
        cmd = ["rkd-edge", "-q", "evaluate", str(run), "--channel", ",".join(channels), f"--snr={snrs}"]
        cmd += ["--symbols", ",".join(map(str, symbols)), "--trials", str(trials), "--out", str(out)]
        subprocess.run(cmd + (["--force"] if out.exists() else []), check=True, stdout=subprocess.DEVNULL)
    return evaluation_points(out / "evaluation.json", channels)


def evaluated(path: Path, want: set, trials: int) -> bool:
    """Whether the ``evaluation.json`` at ``path`` holds exactly the points ``want`` ``{(channel, k, snr)}``,
    each from ``trials`` noise draws (the evaluation folder holds only what ``rkd-edge evaluate`` wrote, so
    a run with it inside stays resumable)."""
    if not path.is_file():
        return False
    channels = {c for c, _, _ in want}  # evaluate adds a noiseless (identity) row of its own
    rows = [r for r in json.loads(path.read_text())["rows"] if r["channel"] in channels]
    have = {(r["channel"], r["k"], float(r["snr_db"])) for r in rows}
    return have == want and all(r.get("trials", 1) == trials for r in rows)


def pairs(name: str, a: dict, b: dict) -> tuple[list[list], float]:
    """Rows ``a - b`` (points) at every channel, k and SNR both have; the smallest difference."""
    rows, worst = [], float("inf")
    for ch in a:
        for k in a[ch]:
            for snr, (acc, *_) in a[ch][k].items():
                other = b.get(ch, {}).get(k, {}).get(snr)
                if other is None:
                    continue
                diff = 100 * (acc - other[0])
                worst = min(worst, diff)
                rows.append([name, ch, k, f"{snr:g}", f"{100 * acc:.2f}", f"{100 * other[0]:.2f}", f"{diff:+.2f}"])
    return rows, worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adaptive", required=True, help="The rate-adaptive run (ZF equalisation on Rayleigh).")
    ap.add_argument("--dedicated", default="", help="k:RUN, comma list: codecs trained for one k each.")
    ap.add_argument("--uncoded", default=None, help="The no-stage2 run of the same student (k = D/2).")
    ap.add_argument("--csi", default="", help="NAME:RUN, comma list: other receivers on Rayleigh.")
    ap.add_argument(
        "--fast", default="", help="CODEC_RUN:UNCODED_RUN trained / evaluated with codec.rayleigh_mode=fast."
    )
    ap.add_argument("--trials", type=int, default=1, help="Noise draws per test image at every point.")
    ap.add_argument("--name", default="fashion-mnist", help="Results go to codec_rates_NAME.{json,md}.")
    ap.add_argument("--snr", default=SNRS, help="SNR points (dB), a list or LOW:HIGH:STEP, for every comparison.")
    args = ap.parse_args()
    if args.trials < 1:
        ap.error("--trials must be at least 1")
    snrs = ",".join(f"{v:g}" for v in parse_range(args.snr))
    # Each set of points is kept in its own folder of every run, so runs of other points do not replace it.
    folder = "rates" if snrs == SNRS else "rates_" + snrs.replace(",", "_")

    def at(run: Path, symbols: list[int], channels: tuple[str, ...] = CHANNELS) -> dict:
        return curves(run, symbols, channels, args.trials, snrs, folder)

    adaptive = Path(args.adaptive)
    ks = json.loads((adaptive / "system.json").read_text())["codec"]["symbols"]
    ad = at(adaptive, ks)
    data: dict = {"adaptive": {"run": args.adaptive, "curves": ad}}
    sections = []
    head = ["comparison", "channel", "k", "SNR dB", "accuracy %", "against %", "difference (points)"]

    dedicated = dict(item.split(":", 1) for item in args.dedicated.split(",") if item)
    if dedicated:
        rows, worst = [], float("inf")
        data["dedicated"] = {}
        for k, run in dedicated.items():
            cur = at(Path(run), [int(k)])
            data["dedicated"][k] = {"run": run, "curves": cur}
            r, w = pairs(f"adaptive - dedicated k={k}", ad, cur)
            rows += r
            worst = min(worst, w)
        data["adaptive_minus_dedicated_min_points"] = round(worst, 2)
        sections.append(
            f"## Rate-adaptive against dedicated codecs\n\nSmallest difference {worst:+.2f} points "
            f"(target: no worse than -1).\n\n" + md_table(head, rows)
        )
    if args.uncoded:
        k = int(json.loads((Path(args.uncoded) / "report.json").read_text())["noiseless_symbols"])
        un = at(Path(args.uncoded), [k])
        data["uncoded"] = {"run": args.uncoded, "k": k, "curves": un}
        rows, worst = pairs(f"adaptive - uncoded (k={k})", ad, un)
        for name, d in data.get("dedicated", {}).items():
            r, w = pairs(f"dedicated k={name} - uncoded", d["curves"], un)
            rows += r
        data["adaptive_minus_uncoded_min_points"] = round(worst, 2)
        sections.append(
            f"## Against the uncoded analog code at k = {k} (D/2 symbols)\n\nSmallest difference of the adaptive "
            f"codec {worst:+.2f} points (target: >= +2 at AWGN -10 dB and Rayleigh -4 dB, >= 0 "
            f"everywhere).\n\n" + md_table(head, rows)
        )
    csi = dict(item.split(":", 1) for item in args.csi.split(",") if item)
    if csi:
        rows = []
        data["csi"] = {}
        for name, run in csi.items():
            cur = at(Path(run), ks, ("rayleigh",))
            data["csi"][name] = {"run": run, "curves": cur}
            r, _ = pairs(f"{name} - zf", cur, {"rayleigh": ad["rayleigh"]})
            rows += r
        sections.append("## Receivers on Rayleigh (block fading) against ZF equalisation\n\n" + md_table(head, rows))
    if args.fast:
        coded, uncoded = args.fast.split(":", 1)
        k = int(json.loads((Path(uncoded) / "report.json").read_text())["noiseless_symbols"])
        cur = at(Path(coded), ks, ("rayleigh",))
        un = at(Path(uncoded), [k], ("rayleigh",))
        data["fast"] = {"run": coded, "uncoded": uncoded, "curves": cur, "uncoded_curves": un}
        rows, worst = pairs(f"adaptive - uncoded (k={k})", cur, un)
        data["fast"]["adaptive_minus_uncoded_min_points"] = round(worst, 2)
        sections.append(
            "## Rayleigh fast fading (one coefficient per symbol, ZF), codec and uncoded both trained and "
            "evaluated on it\n\n" + md_table(head, rows)
        )
    md = (
        f"Accuracy on the whole fashion-mnist test split, {args.trials} noise draw(s) per image (95 % intervals "
        "in the JSON, about +-0.6 point near 90 % with one draw).\n\n" + "\n\n".join(sections)
    )
    cmd = " ".join(["python benchmarks/codec_rates.py", *sys.argv[1:]])
    print(record(f"codec_rates_{args.name}", data, md, cmd))


if __name__ == "__main__":
    main()
