"""Evaluate a trained run (PyTorch) over channels, SNRs and lengths, writing files and plots."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rkd_edge import env
from rkd_edge.config import parse_range
from rkd_edge.errors import UserError
from rkd_edge.evaluate.plots import plot_snr, plot_symbols
from rkd_edge.evaluate.snr import Grid, curves, evaluate_torch, noiseless_grid, write_rows
from rkd_edge.io import FileSet, OutputLock, json_text
from rkd_edge.methods import method_config
from rkd_edge.outputs import (
    EVALUATION_ENTRIES,
    MARKER,
    check_output,
    evaluation_leftovers,
    foreign_entries,
    kind_of,
    marker_field,
    write_marker,
)
from rkd_edge.rundir import RunDir, load_splits, weights_digest

EVALUATION_FILES = ["evaluation.csv", "evaluation.json", "accuracy_vs_snr.png", "accuracy_vs_symbols.png"]


def evaluation_folder(out: Path | None, default: Path, sources: tuple[Path, ...], of: str) -> tuple[Path, bool]:
    """Where an evaluation writes: ``default`` (the run itself for its evaluate stage, else the target's own
    ``evaluation`` folder, replaced whatever it last held), the run itself when ``--out`` names it, or ``--out``
    when it is free or already an rkd-edge evaluation of the same thing (whose files are replaced). Another run
    or bundle, or the evaluation of another one, is refused: this one would replace it.

    Args:
        of: What is evaluated (a run's weights digest, a bundle's id), recorded in the folder's marker.

    Returns:
        The folder, and whether it is an evaluation folder to mark (False: the run itself).
    """
    if out is not None and kind_of(Path(out)) == "run" and Path(out).resolve() in {Path(s).resolve() for s in sources}:
        return Path(out), False  # the run's own files (its report's), asked for by name
    own = out is None or Path(out).resolve() == Path(default).resolve()
    if own:
        default = Path(default)
        if default in sources:  # the run itself: its evaluation files are the run's
            return default, False
        # A bundle's evaluation folder: written in place, so a link there would lead the writes elsewhere.
        if default.is_symlink() or (default.exists() and not default.is_dir()):
            raise UserError(f"{default} is a symbolic link or not a folder; remove it, or give --out a new folder")
        if not default.exists() or not any(default.iterdir()) or evaluation_leftovers(default):
            return default, True
        if kind_of(default) != "evaluation":
            raise UserError(f"{default} holds files rkd-edge did not write; move them, or give --out a new folder")
        out = default
    out = Path(out)
    found = kind_of(out) if out.is_dir() else None
    if found == "evaluation":
        # Only the evaluation's own files are replaced: a user's notes or plots beside them stop it.
        if extra := foreign_entries(out, "evaluation"):
            raise UserError(
                f"{out} holds files rkd-edge did not write ({', '.join(extra[:3])}); move them, or give --out "
                "a new folder"
            )
        # the target's own folder (RUN/evaluation, BUNDLE/evaluation) holds its latest evaluation, whatever
        # weights it had then; another --out holds another run's or bundle's, which this must not replace (a
        # marker that does not say whose is no one's this may replace: deleting its "of" turned the check off)
        if not own and marker_field(out, "of") != of:
            raise UserError(f"{out} holds the evaluation of another run or bundle; give --out a new folder")
        return out, True
    if found in ("run", "bundle"):
        raise UserError(
            f"--out {out} is another rkd-edge {found}, whose own evaluation this would replace; choose a new folder"
        )
    check_output(out, "evaluation", force=None, sources=sources)
    return out, True


@contextlib.contextmanager
def evaluation_target(
    out: Path | None, default: Path, sources: tuple[Path, ...], of: str
) -> Iterator[tuple[Path, bool]]:
    """:func:`evaluation_folder`'s choice, locked for the whole evaluation: a second evaluation of the same
    folder stops at once with one line instead of silently replacing the first one's files at the end. The
    choice is made again under the lock (another evaluation may have finished there meanwhile)."""
    folder, _ = evaluation_folder(out, default, sources, of)
    with OutputLock(folder):
        yield evaluation_folder(out, default, sources, of)


def commit_evaluation(out: Path, mark: bool, write, of: str) -> None:
    """Write one evaluation's files as a set: all of them, or (on failure) none. The caller holds the folder's
    lock (:func:`evaluation_target`).

    Args:
        out: The folder.
        mark: Mark it as an evaluation folder (of ``of``); the marker is part of the set, committed first.
        write: ``write(staging_dir)`` writes every file of the set into the staging folder.
        of: What was evaluated (see :func:`evaluation_folder`).
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # --out a/b makes a, as every --out does
    try:
        with FileSet(out, EVALUATION_ENTRIES | ({MARKER} if mark else set())) as fs:
            write(fs.dir)
            if mark:
                write_marker(fs.dir, "evaluation", of=of)
            # A set is whole or absent: a plot the new evaluation does not draw must not outlive the old one.
            for name in EVALUATION_ENTRIES - {p.name for p in fs.dir.iterdir()}:
                (out / name).unlink(missing_ok=True)
    except BaseException:
        if created:  # a full disk left nothing, not an empty folder the next evaluation must be told about
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def write_summary(folder: Path, summary: dict, grid: Grid, of: str, config_sha256: str) -> None:
    """``evaluation_summary.json``: the summary and what it was computed from: what was evaluated (``of``, as
    the folder's marker says), the config's digest, the grid (channels, SNRs in dB, lengths, draws, seed) and
    the versions that computed it."""
    points = {
        "channels": grid.channels,
        "snr_db": grid.snrs,
        "symbols": grid.ks,
        "trials": grid.trials,
        "seed": grid.seed,
    }
    record = {**summary, "of": of, "config_sha256": config_sha256, "grid": points, "versions": env.versions()}
    (folder / "evaluation_summary.json").write_text(json_text(record))


def evaluate_run(
    run: Path,
    channels: list[str] | None = None,
    snr: str | None = None,
    symbols: list[int] | None = None,
    trials: int | None = None,
    out: Path | None = None,
    default: Path | None = None,
) -> dict:
    """Accuracy against SNR for every channel and length; returns a summary for the report.

    Args:
        out: ``--out``; None: ``default``.
        default: The run's own folder for it (``RUN/evaluation`` for ``evaluate RUN``); None: the run itself
            (its evaluate stage, whose files its report shows).
    """
    rd = RunDir(run)
    cfg, system, spec = rd.load()
    of = f"run weights {weights_digest(system)[:16]}"  # a pruned run keeps its source's config, not its weights
    with evaluation_target(out, default or rd.root, (rd.root,), of) as (out, mark):
        ec = cfg.evaluate
        channels = channels or ec.channels
        snrs = parse_range(snr or ec.snr_db)
        ks = symbols or ec.symbols or list(system.codec.symbol_set)
        bad = [k for k in ks if not 1 <= k <= system.codec.max_symbols]
        if bad:
            raise UserError(f"symbol lengths {bad} outside 1..{system.codec.max_symbols} supported by this codec")
        mcfg = method_config(cfg)
        splits = load_splits(mcfg)
        device = env.pick_device(cfg.device)
        system.to(device)
        grid = Grid(channels, snrs, ks, trials or ec.trials, cfg.seed)
        rows = evaluate_torch(system, splits.test, grid, mcfg.codec, splits.source_dim, device, cfg.method)
        bound = evaluate_torch(
            system, splits.test, noiseless_grid(mcfg, ks), mcfg.codec, splits.source_dim, device, cfg.method
        )
        rows += bound
        report_k = ec.report_symbols or max(ks)
        title = f"{cfg.method} on {splits.name}"
        # Upper bounds drawn as dashed levels: the student through the noiseless codec, and the teacher on
        # the same test split (recorded by the run's teacher stage).
        noiseless_row = bound[0]  # not an identity row the user's grid may also hold
        noiseless = noiseless_row["accuracy"]
        bounds = {"student, noiseless codec": noiseless}
        teacher = rd.done("teacher")
        if teacher is not None:
            bounds["teacher"] = teacher.get("accuracy")
        noisy = [r for r in rows if r["channel"] != "identity"]
        summary = {
            "rows": len(rows),
            "report_symbols": report_k,
            "curves": curves(rows, report_k),
            "noiseless": noiseless,
            "noiseless_symbols": noiseless_row["k"],
            "upper_bounds": bounds,
            "files": EVALUATION_FILES,
            "source_dim": splits.source_dim,
        }

        def write(staging: Path) -> None:
            write_rows(rows, staging)
            plot_snr(noisy, staging / "accuracy_vs_snr.png", title, bounds)
            plot_symbols(
                noisy, staging / "accuracy_vs_symbols.png", [s for s in (0.0, 10.0) if s in snrs] or snrs[:1], title
            )
            write_summary(staging, summary, grid, of, cfg.digest())

        commit_evaluation(out, mark, write, of=of)
        return summary
