"""``rkd-edge prune RUN --ratio R --out RUN2``: structured channel pruning of the student encoder with
torch-pruning, then a short distillation fine-tune of encoder and codec, and a fresh evaluation.

The pruned run is an ordinary run directory: ``system.json`` marks the encoder as pruned, and
:func:`rkd_edge.rundir.shrink_to_state` rebuilds the narrower layers from the checkpoint's tensor
shapes, so export, evaluation and the runtime work on it unchanged.

It is built in a hidden folder beside ``RUN2`` (``.RUN2.prune-partial``) and renamed into place only when
``prune.json`` is written, so an interrupted prune never leaves a folder that looks pruned; rerunning the
same command resumes it (pruning is deterministic, and the fine-tune resumes from its epoch checkpoints).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from pathlib import Path

import torch

from rkd_edge import env, progress, stops
from rkd_edge.checkpoints import save_checkpoint
from rkd_edge.config import RANGES
from rkd_edge.distill.stages import run_stage, validate
from rkd_edge.errors import UserError
from rkd_edge.evaluate.run import evaluate_run
from rkd_edge.io import OutputLock, commit_dir, read_json, special_entry, write_json
from rkd_edge.limits import MAX_ROUND_TO, ROUND_TO
from rkd_edge.nas.cost import count_macs, count_params
from rkd_edge.outputs import MARKER, RUN_ENTRIES, check_output
from rkd_edge.pipeline import Pipeline
from rkd_edge.rundir import RunDir, checkpoint_state, weights_digest

# What a pruned run does not take from its source: caches, epoch checkpoints and results of the source.
JOB_FILE = "prune-job.json"  # in the partial folder: what is being pruned, written once the copy is whole
NOT_COPIED = ("cache", "train", "report.*", "evaluation*", "*.png", "*.lock", ".staging.*", "prune.json")


def _import_torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        raise UserError("pruning needs torch-pruning: pip install 'rkd-edge[prune]'") from None
    return tp


MAX_EPOCHS = int(RANGES["epochs"][1])  # the config's own ceiling on a stage's epochs


def prune_run(run: Path, out: Path, ratio: float, epochs: int = 3, round_to: int = ROUND_TO) -> dict:
    """Prune ``ratio`` of the encoder's channels (L2 group magnitude), fine-tune, evaluate. Returns a record.

    Args:
        run: a trained, complete run directory (not itself pruned).
        out: the new run directory (must not exist).
        ratio: fraction of each layer's channels to remove, in (0, 1).
        epochs: fine-tune epochs for each of stage 1 and stage 2 (0: none).
        round_to: keep a multiple of this many channels per layer, the nearest to what ``ratio`` keeps and at
            least ``round_to`` (1: exactly what ``ratio`` keeps; a layer narrower than it stays whole).
    """
    tp = _import_torch_pruning()
    if not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
        raise UserError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}")
    if not 0 <= epochs <= MAX_EPOCHS:
        raise UserError(f"--epochs must be from 0 to {MAX_EPOCHS:,} fine-tune epochs per stage, got {epochs}")
    if not 1 <= round_to <= MAX_ROUND_TO:
        raise UserError(f"--round-to must be from 1 (no rounding) to {MAX_ROUND_TO} channels, got {round_to}")
    run, out = Path(run), Path(out)
    check_output(out, "run", force=None, sources=(run,))
    src = RunDir(run)
    cfg, system, spec = src.load()
    src.require_complete(cfg, "pruning it")
    src.require_teacher(cfg)
    env.pick_device(cfg.device)  # a device this machine lacks is refused before the run is copied
    if spec["encoder"].get("pruned"):
        raise UserError(f"{run} is already pruned; prune its source run with a larger --ratio instead")
    _check_removes_channels(tp, system, tuple(spec["input_shape"]), ratio, round_to)
    with OutputLock(out):
        work = out.parent / f".{out.name}.prune-partial"
        source = Path(os.path.relpath(run.resolve(), out.resolve().parent)).as_posix()  # no absolute path
        job = {"source": source, "ratio": ratio, "epochs": epochs, "round_to": round_to}
        if work.exists() or work.is_symlink():
            recorded = _job_of(work)
            if recorded is None:
                raise UserError(
                    f"{work} is in the way and was not made by rkd-edge prune; move it or choose another --out"
                )
            if recorded != job:  # a partial prune of another job, or a copy cut short: start over, and say so
                changed = ", ".join(f"{k} {recorded.get(k)} -> {v}" for k, v in job.items() if recorded.get(k) != v)
                progress.log(f"prune: an unfinished prune at {out} had other settings ({changed}); starting over")
                shutil.rmtree(work)
        if work.is_dir():
            progress.log(f"prune: resuming {work}")
        else:
            _copy_run(run, work, job)
        # A failure from here on (a full disk, an interruption) leaves the partial folder to resume from.
        record = _prune(tp, work, run, cfg, system, spec, ratio, epochs, round_to)
        commit_dir(work, out, replace=False)
        # after the rename: killed before it, the partial folder is still a prune's (its job file says so)
        (out / JOB_FILE).unlink()
    return record


def nearest_kept(current: int, n_pruned: int, round_to: int) -> int:
    """How many of ``current`` channels to prune so that a multiple of ``round_to`` stays: the multiple nearest
    to ``current - n_pruned`` (halves round up), at least ``round_to``; none where ``current < round_to``.

    torch-pruning's own ``round_to`` floors the kept count instead: at ``--ratio 0.3`` and 4 it removed half of
    every 8- and 16-channel layer.
    """
    kept = current - n_pruned
    rounded = max(round_to, math.floor(kept / round_to + 0.5) * round_to)
    return max(current - rounded, 0)


def _pruner(tp, system, shape: tuple[int, ...], ratio: float, round_to: int):
    """torch-pruning's structured pruner over the encoder's channels (L2 group magnitude; the head stays),
    keeping multiples of ``round_to`` channels (:func:`nearest_kept`)."""

    class Pruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            return nearest_kept(current_channels, n_pruned, round_to)

    return Pruner(
        system.encoder,
        torch.zeros(2, *shape, device=next(system.parameters()).device),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[system.encoder.head],
        round_to=round_to if round_to > 1 else None,
    )


def _channels(system) -> list[int]:
    """Output channels of each convolution of the encoder, in order."""
    return [m.out_channels for m in system.encoder.modules() if isinstance(m, torch.nn.Conv2d)]


def _removes_any(tp, system, shape: tuple[int, ...], ratio: float, round_to: int) -> bool:
    """Whether pruning a copy of ``system`` at ``ratio`` and ``round_to`` removes any parameter."""
    pruned = copy.deepcopy(system)
    _pruner(tp, pruned, shape, ratio, round_to).step()
    stops.check()  # torch-pruning's tracing swallows a KeyboardInterrupt (a bare except)
    return count_params(pruned.encoder) < count_params(system.encoder)


def _check_removes_channels(tp, system, shape: tuple[int, ...], ratio: float, round_to: int) -> None:
    """Refuse a ratio that would remove no channel, by pruning copies of ``system`` before any work starts."""
    widest = max(_channels(system), default=0)
    if widest <= 1:
        raise UserError(f"this encoder's widest layer has {widest} channel(s): there is nothing to prune")
    if widest * ratio < 1:
        raise UserError(
            f"--ratio {ratio} removes less than one channel of the widest layer ({widest} channels); "
            f"give at least {1 / max(widest, 1):.3g}"
        )
    if _removes_any(tp, system, shape, ratio, round_to):
        return
    if round_to > 1 and _removes_any(tp, system, shape, ratio, 1):  # the rounding is what keeps every channel
        raise UserError(
            f"--ratio {ratio} removes no channel of this encoder once each layer keeps a multiple of "
            f"--round-to {round_to} channels; give a larger ratio, or --round-to 1"
        )
    # torch-pruning leaves whole a layer the ratio would empty, so near 1 nothing goes either.
    hint = "give a smaller ratio, e.g. 0.5" if ratio > 0.5 else "give a larger ratio"
    why = (
        "it would empty every layer, and torch-pruning keeps a layer whole rather than empty it"
        if ratio > 0.5
        else "it is under one channel of every prunable layer"
    )
    raise UserError(f"--ratio {ratio} removes no channel of this encoder ({why}); {hint}")


def _job_of(work: Path) -> dict | None:
    """The job a prune's partial folder records (None: not a prune's folder, so not ours to remove)."""
    try:
        job = read_json(work / JOB_FILE) if work.is_dir() and not work.is_symlink() else None
    except (OSError, UserError):
        return None
    return job if isinstance(job, dict) and "source" in job else None


def _copy_run(run: Path, work: Path, job: dict) -> None:
    """Copy the plain files of ``run`` to ``work``; the job file says the copy is whole only at the end, so
    a kill mid-copy makes the next prune start over."""
    if (odd := special_entry(run)) is not None:
        raise UserError(f"{odd} is a symbolic link or a special file; prune copies only the plain files of a run")
    work.mkdir()
    write_json(work / JOB_FILE, {**job, "copied": False})
    try:
        shutil.copytree(run, work, ignore=_not_copied(run), dirs_exist_ok=True)
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(work, ignore_errors=True)
        reason = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else exc
        raise UserError(f"cannot copy {run} to prune it ({reason}); free space or fix the run and rerun") from None
    write_json(work / JOB_FILE, job)


def _not_copied(run: Path):
    """``copytree``'s ignore: :data:`NOT_COPIED`, and at the top of the run whatever rkd-edge did not write
    there (a user's notes stay with the source; a copy would make the pruned run not the toolkit's)."""
    patterns = shutil.ignore_patterns(*NOT_COPIED, JOB_FILE)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(patterns(folder, names))
        if Path(folder) == run:
            skipped |= {n for n in names if n not in RUN_ENTRIES | {MARKER}}
        return skipped

    return ignore


def _prune(tp, work: Path, run: Path, cfg, system, spec: dict, ratio: float, epochs: int, round_to: int) -> dict:
    pipe = Pipeline(cfg, work)
    rd = pipe.rd
    pipe.stage_teacher()
    shape = tuple(spec["input_shape"])
    source = {"run": Path(run).name, "weights_sha256": weights_digest(system)}
    before = {  # the encoder alone (what pruning changes; the report's student counts add the classifier)
        "encoder_params": count_params(system.encoder),
        "encoder_macs": count_macs(system.encoder, shape),
        "conv_channels": _channels(system),
        "clean_accuracy": validate(system, pipe.splits.test, "cpu", cfg.seed),
        "curves": (RunDir(run).done("evaluate") or {}).get("curves"),  # the source as trained, without fine-tune
    }
    system.to(pipe.device)
    _pruner(tp, system, shape, ratio, round_to).step()  # removes channels: checked on a copy before the work began
    stops.check()
    progress.log(f"pruned encoder: {before['encoder_params']:,} -> {count_params(system.encoder):,} parameters")
    # What each trained stage's record says of the pruned model: its fine-tune and the accuracy after it.
    tuned = {}
    for name, sc in (("stage1", pipe.cfg.stage1), ("stage2", pipe.cfg.stage2)):
        sc = copy.deepcopy(sc)
        sc.epochs = epochs
        t0, resumed = time.time(), rd.resumable(f"prune-{name}")
        history = run_stage(
            f"prune-{name}",
            sc,
            system,
            pipe.splits,
            pipe.teacher,
            pipe.cache,
            seed=cfg.seed,
            batch_size=cfg.data.batch_size,
            augment=cfg.data.augment,
            device=pipe.device,
            codec_cfg=pipe.cfg.codec if name == "stage2" else None,
            # Kept until the prune is committed: a rerun after an interruption resumes from here.
            checkpoint=rd.epoch_checkpoint(f"prune-{name}"),
        ) if epochs > 0 else []  # fmt: skip
        tuned[name] = {
            "history": history,
            "seconds": round(time.time() - t0, 2),
            "clean_test_accuracy": validate(system, pipe.splits.test, pipe.device, cfg.seed),
            "finetune_epochs": epochs,
            **({"resumed": True} if resumed else {}),  # its seconds are the part after the interruption
        }
    system.cpu()
    for stage in ("stage1", "probe"):
        rd.checkpoint(stage).unlink(missing_ok=True)  # the unpruned weights stay with the source run
    save_checkpoint(rd.checkpoint("stage2"), checkpoint_state(system, cfg))
    # The copied records say they come from the source; the trained stages' describe the pruned model (its
    # fine-tune, its accuracy; stage 2's holds the pruned checkpoint's digest).
    for stage in [p.stem for p in sorted((work / "stages").glob("*.json"))]:
        rd.mark(stage, {**rd.done(stage), **tuned.get(stage, {}), "pruned_from": Path(run).name})
    spec = read_json(rd.system)
    spec["encoder"]["pruned"] = {"ratio": ratio, "from": Path(run).name}
    write_json(rd.system, spec)
    kept = _channels(system)
    after = {
        "encoder_params": count_params(system.encoder),
        "encoder_macs": count_macs(system.encoder, shape),
        "conv_channels": kept,
        # what --ratio came to: torch-pruning keeps a layer whole rather than empty it, so it is not the ratio
        "channels_removed": round(1 - sum(kept) / sum(before["conv_channels"]), 4),
        "clean_accuracy": tuned["stage2"]["clean_test_accuracy"],  # measured once, after the last fine-tune
    }
    summary = evaluate_run(work)
    rd.mark("evaluate", {**rd.done("evaluate"), **summary, "pruned_from": Path(run).name})
    pipe.close()
    shutil.rmtree(work / "train", ignore_errors=True)
    record = {
        "ratio": ratio,
        "round_to": round_to,
        # "after" is the pruned model after this many fine-tune epochs per stage, which "before" did not get
        "finetune_epochs": epochs,
        "source": source,
        "versions": env.versions(),
        "before": before,
        "after": after,
        "curves": summary["curves"],
    }
    write_json(rd.prune_record, record)
    return record
