"""``rkd-edge pipeline``: teacher -> search -> stage 1 -> stage 2 -> evaluate -> report, resumable.

Each finished stage leaves ``RUN/stages/NAME.json``; a rerun skips finished stages and resumes the
unfinished one from its last epoch checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import time
from pathlib import Path

from rkd_edge import env, progress
from rkd_edge.checkpoints import load_checkpoint, save_checkpoint
from rkd_edge.codec.cat import CATCodec
from rkd_edge.config import RunConfig, validate
from rkd_edge.distill import ddp
from rkd_edge.distill.stages import run_stage
from rkd_edge.distill.stages import validate as clean_accuracy
from rkd_edge.errors import UserError
from rkd_edge.evaluate.run import evaluate_run
from rkd_edge.io import OutputLock, read_json, write_json
from rkd_edge.methods import (
    METHOD_STAGES,
    TRAINED_STAGES,
    WITHOUT_TEACHER,
    method_config,
    previous_trained,
    probe_stage,
    reusable_stages,
    stage_inputs,
)
from rkd_edge.nas.cost import count_params
from rkd_edge.nas.genotypes import Genotype
from rkd_edge.nas.sweep import run_sweep
from rkd_edge.outputs import check_resumable, kind_of, write_marker
from rkd_edge.preflight import check_run
from rkd_edge.report import write_report
from rkd_edge.rundir import (
    RunDir,
    build_system,
    checkpoint_state,
    load_splits,
    load_state,
    trained_codec,
    with_own_codec,
)
from rkd_edge.system import SemanticSystem
from rkd_edge.system_spec import system_spec
from rkd_edge.teachers import create_teacher
from rkd_edge.teachers.base import accuracy
from rkd_edge.teachers.cache import TeacherCache
from rkd_edge.teachers.train import train_teacher

DISTRIBUTED_STAGES = ("stage1", "probe", "stage2")


def _check_same_config(stored: RunConfig, cfg: RunConfig, out: Path) -> None:
    """Refuse to resume a run with another config; a ``local:`` teacher given from another folder is named."""
    old, new = stored.to_dict(), cfg.to_dict()
    if old == new:
        return
    old_spec, new_spec = old["teacher"].get("spec") or "", new["teacher"].get("spec") or ""
    old["teacher"]["spec"] = new["teacher"]["spec"] = None
    if old == new and old_spec.startswith("local:") and new_spec.startswith("local:"):
        raise UserError(
            f"{out} was started with --teacher {old_spec}, not {new_spec}; a local: path is relative to the folder "
            "a command runs in: resume it from the folder it was started in, with the same --teacher"
        )
    raise UserError(f"{out} holds a run with a different config; use a new --out")


class Pipeline:
    """One run directory, its config, data, teacher and the stages of its method.

    Args:
        cfg: The run's config.
        out: The run folder (new, or a run of the same config to resume).
        source: A finished run to start from: its leading stages whose settings agree with ``cfg``
            (:func:`rkd_edge.methods.reusable_stages`) are copied instead of trained again.
    """

    def __init__(self, cfg: RunConfig, out: Path, source: Path | None = None) -> None:
        self.user_cfg, self.cfg, self.out = validate(cfg), method_config(cfg), Path(out)
        self.rd = RunDir(self.out)
        # Everything that can fail on bad input happens before the run folder is created or locked.
        self.source, self.reuse = self._reusable(cfg, source)
        self._check_out(cfg)
        self.device = env.pick_device(cfg.device)
        self.splits = load_splits(self.cfg)
        check_run(self.cfg, self.splits, searched=self.done("search") is not None)
        # One process writes a run (rank 0 under torchrun): a second pipeline on the same --out stops here.
        self.lock = OutputLock(self.out).acquire() if os.environ.get("RANK", "0") == "0" else None
        atexit.register(self.close)
        # Checked again under the lock: another process may have made or finished a run at --out meanwhile.
        try:
            resume = self._check_out(cfg)
        except UserError:
            self.close()
            raise
        self.created = not resume
        (self.out / "stages").mkdir(parents=True, exist_ok=True)
        write_marker(self.out, "run")
        write_json(self.rd.config, cfg.to_dict())
        progress.set_log_file(self.rd.log)
        copied = self.rd.copy_stages(self.source, self.reuse) if self.source and ddp.is_main() else []
        if copied:
            progress.log(f"reused from {self.source.root}: {', '.join(copied)}")
        self.cache = TeacherCache(self.rd.cache_dir)
        self.teacher = None

    def _check_out(self, cfg: RunConfig) -> bool:
        """Whether ``--out`` holds a run of ``cfg`` to resume (False: it is free); one line otherwise."""
        resume = check_resumable(self.out, "run")
        # Compare resolved configs, so that a run made before a new config key existed still resumes.
        if resume and self.rd.config.is_file():
            _check_same_config(self.rd.load_config(), cfg, self.out)
        return resume

    def _reusable(self, cfg: RunConfig, source: Path | None) -> tuple[RunDir | None, list[str]]:
        """The ``--from`` run and the stages of it to reuse; one line when there is nothing to reuse."""
        if source is None:
            return None, []
        src = RunDir(source)
        if kind_of(src.root) != "run" or not src.config.is_file():
            raise UserError(f"--from {source} is not an rkd-edge run folder; give a run made by rkd-edge pipeline")
        if src.root.resolve() == self.out.resolve():
            raise UserError("--from names the run itself; to resume a run, leave --from out")
        if src.system.is_file() and src.load_spec()["encoder"].get("pruned"):
            # its stage-2 weights fit only its pruned encoder, and prune kept no stage-1 checkpoint
            raise UserError(f"--from {source} is a pruned run; start from the run it was pruned from")
        stages, differs = reusable_stages(cfg, src.load_config())
        stages = [s for s in stages if src.done(s) is not None]
        if not stages:
            why = f"its {differs} settings differ" if differs else "it finished no stage"
            raise UserError(f"nothing in --from {source} can be reused: {why}; train without --from")
        src.check_copyable(stages)
        return src, stages

    def close(self) -> None:
        """Release the run folder (also done when the process ends) and stop logging to its ``run.log``
        (a prune renames the folder after this; a later pipeline in the process logs to its own)."""
        if progress.log_file() == self.rd.log:
            progress.set_log_file(None)
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @contextlib.contextmanager
    def removed_if_failed_early(self):
        """A run folder this invocation created is removed again if a user error stops it before any
        stage finished (a wrong teacher spec, say): nothing half-made is left behind."""
        try:
            yield
        except UserError:
            if self.created and ddp.is_main() and not self.rd.any_done():
                progress.set_log_file(None)
                shutil.rmtree(self.out, ignore_errors=True)
            raise

    def done(self, stage: str) -> dict | None:
        return self.rd.done(stage)

    def mark(self, stage: str, info: dict, host: dict | None = None) -> dict:
        """Record a finished stage: ``info``, the config sections it read, and ``host`` (where it ran; default
        this process)."""
        inputs = stage_inputs(self.user_cfg, stage)
        return self.rd.mark(stage, {**info, "inputs": inputs, "host": host or env.host(self.device)})

    def _refuse_retraining_a_pruned_run(self, stage: str) -> None:
        """A pruned run keeps only its pruned stage-2 weights: training a stage again would train the
        unpruned student from scratch under its name (and leave prune.json describing another model)."""
        if self.rd.system.is_file() and self.rd.load_spec()["encoder"].get("pruned"):
            raise UserError(
                f"{self.out} is a pruned run: its {stage} stage cannot be trained again here (that would train the "
                "unpruned student); prune its source run again into a new --out"
            )

    def _check_inputs(self, stage: str, record: dict) -> None:
        """Refuse to resume past a stage whose record says it read other settings than the config's."""
        recorded = record.get("inputs")
        if not isinstance(recorded, dict):  # written before records kept them
            return
        differ = [sec for sec, h in stage_inputs(self.user_cfg, stage).items() if recorded.get(sec) != h]
        if differ:
            raise UserError(
                f"stage {stage} of {self.out} was trained with other {differ[0]} settings than its "
                f"config.json holds (was it edited?); train with these settings into a new --out"
            )

    def _check_same_teacher(self, prev: dict, info: dict) -> None:
        """Refuse to resume with a teacher whose weights changed since the run's later stages learnt from it
        (a replaced teacher.pt under the same spec): the report would name one teacher and hold another's
        student."""
        was, now = prev.get("identity"), info["identity"]
        if was is None or was == now:
            return
        later = [s for s in METHOD_STAGES[self.cfg.method] if s != "teacher" and self.done(s) is not None]
        if later:
            raise UserError(
                f"the teacher of {self.out} is not the one its {', '.join(later)} stage(s) learnt from (was {was}, "
                f"now {now}: were its weights replaced?); put the teacher back, or train into a new --out"
            )

    def run(self, stop_after: str | None = None) -> dict:
        """Run the method's stages in order, skipping finished ones.

        Under torchrun, stage 1 and stage 2 train with DDP on every rank; rank 0 alone trains the
        teacher, searches, evaluates and writes records while the other ranks wait.
        """
        try:
            with self.removed_if_failed_early():
                return self._run(stop_after)
        finally:
            self.close()

    def _run(self, stop_after: str | None) -> dict:
        env.seed_everything(self.cfg.seed)
        ddp.init_from_env(self.device)
        main = ddp.is_main()
        results, retrained = {}, None  # the first stage trained now: every later one depends on it
        for stage in METHOD_STAGES[self.cfg.method]:
            prev = self.done(stage)
            if prev is not None:
                self._check_inputs(stage, prev)
            if prev is not None and stage != "teacher" and retrained is None:
                progress.log(f"[{stage}] done earlier, skipped")
                results[stage] = prev
            elif main or stage in DISTRIBUTED_STAGES:
                if stage != "teacher":
                    if stage in TRAINED_STAGES or stage == "search":
                        self._refuse_retraining_a_pruned_run(stage)
                    if prev is not None:
                        progress.log(f"[{stage}] done earlier, but {retrained} was trained again: {stage} too")
                    retrained = retrained or stage
                progress.log(f"[{stage}] starting")
                t0, resumed = time.time(), prev is None and self.rd.resumable(stage)
                info = getattr(self, f"stage_{stage}")()
                if stage == "teacher" and prev:
                    self._check_same_teacher(prev, info)
                info["seconds"] = prev["seconds"] if prev else round(time.time() - t0, 2)
                if resumed or (prev and prev.get("resumed")):  # its seconds are the part after the interruption
                    info["resumed"] = True
                # A teacher trained earlier is only loaded: its record keeps where it was trained, and where
                # it came from (another run's, a pruned run's source).
                host = prev.get("host") if prev and isinstance(prev.get("host"), dict) else None
                if stage == "teacher" and prev:
                    info = {**{k: prev[k] for k in ("reused_from", "pruned_from") if k in prev}, **info}
                results[stage] = self.mark(stage, info, host) if main else info
                progress.log(f"[{stage}] done in {info['seconds']:.0f} s")
            ddp.barrier()
            if stage == "teacher" and not main:
                results[stage] = self.stage_teacher()  # loads what rank 0 trained
            if stage == stop_after:
                break
        if stop_after is None and main:
            return write_report(self.rd, self.splits, self.cfg, results)
        return results

    # --- stages -------------------------------------------------------------------------------------
    def stage_teacher(self) -> dict:
        tc = self.cfg.teacher
        spec = tc.spec
        rec = {}
        if spec is None:
            tdir = self.rd.teacher_dir
            self.rd.require_teacher(self.cfg)
            if not (tdir / "teacher.json").is_file():
                with ddp.solo():  # rank 0 trains it while the other ranks wait at the stage barrier
                    train_teacher(self.cfg, self.splits, tdir, self.device)
            rec = read_json(tdir / "teacher.json")
            spec = f"local:{tdir.as_posix()}"
        self.teacher = create_teacher(spec, self.splits.input_shape, self.splits.num_classes).to(self.device)
        self.teacher.freeze()
        acc = rec.get("accuracy") if rec else accuracy(self.teacher, self.splits.test, device=self.device)
        return {
            "spec": tc.spec or f"local:{(Path('teacher')).as_posix()} (trained {tc.arch})",
            "params": count_params(self.teacher),
            "accuracy": acc,
            "embed_dim": self.teacher.embed_dim,
            "identity": self.teacher.identity(),
        }

    def stage_search(self) -> dict:
        if self.cfg.search.genotype:
            g = Genotype.load(self.cfg.search.genotype)
            g.save(self.rd.genotype)
            return {
                "lambda": g.search.get("lambda"),
                "params": g.params,
                "macs": g.macs,
                "genotype": "genotype.json",
                "reused": self.cfg.search.genotype,
                "sweep": [],
            }
        return run_sweep(self.cfg, self.splits, self.teacher, self.cache, self.out, self.device)

    def _write_spec(self) -> dict:
        spec = system_spec(self.cfg, self.splits, self.teacher.embed_dim)
        if ddp.is_main():
            write_json(self.rd.system, spec)
        return spec

    def _system(self) -> SemanticSystem:
        spec = self._write_spec()
        env.seed_everything(self.cfg.seed)
        return build_system(spec, self.out).to(self.device)

    def _train(self, name: str, sc, system: SemanticSystem, robust: bool, previous: str | None) -> dict:
        # a finished previous stage whose checkpoint is gone or replaced is refused, not trained from scratch
        if previous is not None and self.rd.verified_checkpoint(previous) is not None:
            self._load_previous(system, previous)
        teacher = None if self.cfg.method in WITHOUT_TEACHER else self.teacher
        history = run_stage(
            name,
            sc,
            system,
            self.splits,
            teacher,
            self.cache,
            seed=self.cfg.seed,
            batch_size=self.cfg.data.batch_size,
            augment=self.cfg.data.augment,
            device=self.device,
            codec_cfg=self.cfg.codec if robust else None,
            checkpoint=self.rd.epoch_checkpoint(name),
        )
        save_checkpoint(self.rd.checkpoint(name), checkpoint_state(system, self.cfg))
        # The epoch checkpoint stays until the stage is marked done (RunDir.mark): stopped while the clean
        # accuracy below is measured, a rerun resumes after the last epoch instead of training again.
        clean = clean_accuracy(system, self.splits.test, self.device, self.cfg.seed)
        return {"history": history, "clean_test_accuracy": clean, "trained": sc.train, "losses": sc.losses}

    def _load_previous(self, system: SemanticSystem, previous: str) -> None:
        """Start from the previous stage's weights. The codec comes from there only if that stage trained
        it; otherwise it keeps the seeded initialisation (the same one the previous stage held), so a
        codec changed after stage 1 finished does not force stage 1 to run again."""
        ck = self.rd.checkpoint(previous)
        saved = load_checkpoint(ck)
        state = saved.get("model")
        if not isinstance(state, dict):
            raise UserError(f"checkpoint {ck} holds no model state; rerun stage {previous}")
        fresh_codec = not trained_codec(self.done(previous))
        if fresh_codec:
            state = with_own_codec(system, state)
        load_state(system, state, ck, stage=previous, channel_ids=saved.get("channel_ids"))
        if fresh_codec and isinstance(system.codec, CATCodec):
            system.codec.start_task_head(system.classifier)

    def stage_stage1(self) -> dict:
        return self._train("stage1", self.cfg.stage1, self._system(), False, None)

    def stage_probe(self) -> dict:
        return self._train("probe", probe_stage(self.cfg), self._system(), False, "stage1")

    def stage_stage2(self) -> dict:
        previous = previous_trained(self.cfg.method, "stage2")  # probe (authors-2025), stage 1, or none (deepjscc)
        return self._train("stage2", self.cfg.stage2, self._system(), True, previous)

    def stage_evaluate(self) -> dict:
        if not self.rd.system.is_file():  # every training stage came --from another run
            self._write_spec()
        return evaluate_run(self.out)
