"""Variants of one codec, trained on one stage-1 student, at the same points on the same images: each
against the base run and against the uncoded analog code at the same rate (which of the codec's parts
are measured to help; e.g. the transmitter's task head, ``codec.posterior``).

    python benchmarks/codec_ablation.py --base runs/rates/v-all-gm --uncoded runs/codec-sweep/uncoded \\
        --variants posterior:runs/rates/v-all-gm-post2 --symbols 32 --trials 3 --name fashion-mnist

Runs are made with ``rkd-edge pipeline --from SOURCE --set ...``; each is evaluated once into
``RUN/ablation`` (``codec_rates.curves``), again only when the points or the draws change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_rates import CHANNELS, curves  # noqa: E402
from common import md_table, record  # noqa: E402

SNRS = "-10,-6,-4,-2,0,10"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="The run the variants change.")
    ap.add_argument("--variants", required=True, help="NAME:RUN, comma list.")
    ap.add_argument("--uncoded", required=True, help="The no-stage2 run of the same student.")
    ap.add_argument("--symbols", type=int, default=32, help="The k every run is compared at.")
    ap.add_argument("--trials", type=int, default=3, help="Noise draws per test image at every point.")
    ap.add_argument("--name", default="fashion-mnist", help="Results go to codec_ablation_NAME.{json,md}.")
    args = ap.parse_args()
    if args.trials < 1 or args.symbols < 1:
        ap.error("--trials and --symbols must be at least 1")
    runs = {"base": args.base, **dict(item.split(":", 1) for item in args.variants.split(",") if item)}
    k = args.symbols
    un_k = int(json.loads((Path(args.uncoded) / "report.json").read_text())["noiseless_symbols"])
    un = curves(Path(args.uncoded), [un_k], CHANNELS, args.trials, SNRS, "ablation")
    cur = {name: curves(Path(run), [k], CHANNELS, args.trials, SNRS, "ablation") for name, run in runs.items()}
    rows = []
    for ch in CHANNELS:
        for snr in sorted(un[ch][un_k]):
            u = un[ch][un_k][snr][0]
            line = [ch, f"{snr:g}", f"{100 * u:.2f}"]
            for name in runs:
                a = cur[name][ch][k][snr][0]
                line.append(f"{100 * a:.2f} ({100 * (a - u):+.2f})")
            rows.append(line)
    data = {"k": k, "uncoded_k": un_k, "trials": args.trials, "runs": runs, "uncoded": args.uncoded}
    data["curves"] = {**cur, "uncoded": un}
    md = (
        f"Accuracy (%) at k = {k} on the whole fashion-mnist test split, {args.trials} noise draw(s) per image, "
        f"every run on the same images; in brackets the difference to the uncoded analog code at k = {un_k} "
        f"(points). Runs: " + ", ".join(f"{n} = `{r}`" for n, r in runs.items()) + ".\n\n"
    )
    md += md_table(["channel", "SNR dB", "uncoded", *runs], rows)
    cmd = " ".join(["python benchmarks/codec_ablation.py", *sys.argv[1:]])
    print(record(f"codec_ablation_{args.name}", data, md, cmd))


if __name__ == "__main__":
    main()
