"""PNG plots: accuracy against SNR per channel, and accuracy against the number of symbols."""

from __future__ import annotations

import itertools
from pathlib import Path

from rkd_edge.io import atomic_path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(ax, xlabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:  # a panel with nothing labelled (one k only) needs no legend
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title)


def save_figure(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_snr(rows: list[dict], path: Path, title: str, references: dict[str, float] | None = None) -> None:
    """One panel per channel; a line per (method, k) with its 95 % band; dashed reference levels."""
    plt = pyplot()
    channels = sorted({r["channel"] for r in rows})
    fig, axes = plt.subplots(1, len(channels), figsize=(5.5 * len(channels), 4), squeeze=False)
    for ax, ch in zip(axes[0], channels, strict=True):
        keys = sorted({(r["method"], r["k"]) for r in rows if r["channel"] == ch})
        for method, k in keys:
            pts = sorted(
                (r["snr_db"], r["accuracy"], r["ci_low"], r["ci_high"])
                for r in rows
                if r["channel"] == ch and r["method"] == method and r["k"] == k
            )
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1] for p in pts], marker="o", ms=3, label=f"{method} k={k}")
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15)
        for (name, level), style in zip((references or {}).items(), itertools.cycle(("--", ":", "-."))):
            ax.axhline(level, ls=style, lw=1, color="gray", label=f"{name} {level:.3f}")
        mode = next(r["mode"] for r in rows if r["channel"] == ch)
        _style(ax, "SNR (Es/N0, dB)", f"{ch}" + (f" ({mode})" if mode != "-" else ""))
    fig.suptitle(title)
    save_figure(plt, fig, path)


def plot_symbols(rows: list[dict], path: Path, snrs: list[float], title: str) -> None:
    """Accuracy against k at a few SNRs, per channel."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for ch in sorted({r["channel"] for r in rows}):
        for snr in snrs:
            pts = sorted((r["k"], r["accuracy"]) for r in rows if r["channel"] == ch and r["snr_db"] == snr)
            if len(pts) > 1:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{ch} {snr:g} dB")
    _style(ax, "complex symbols k", title)
    save_figure(plt, fig, path)
