"""``rkd-edge pipeline``: teacher -> search -> stage 1 -> stage 2 -> evaluate -> report, resumable.

Each finished stage leaves ``RUN/stages/NAME.json``; a rerun skips finished stages and resumes the
unfinished one from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from rkd_edge import env, progress
from rkd_edge.codec import create_codec
from rkd_edge.config import RunConfig, from_dict
from rkd_edge.data import DataSplits, create_dataset
from rkd_edge.distill import ddp
from rkd_edge.distill.loop import load_checkpoint, save_checkpoint
from rkd_edge.distill.stages import run_stage, validate
from rkd_edge.errors import UserError
from rkd_edge.io import read_json, write_json
from rkd_edge.methods import METHOD_STAGES, method_config, probe_stage
from rkd_edge.nas.cost import count_macs, count_params
from rkd_edge.nas.genotypes import Genotype
from rkd_edge.students import create_encoder
from rkd_edge.system import SemanticSystem
from rkd_edge.teachers import create_teacher
from rkd_edge.teachers.base import accuracy
from rkd_edge.teachers.cache import TeacherCache


def load_splits(cfg: RunConfig) -> DataSplits:
    d = cfg.data
    return create_dataset(d.name, d.data_dir, d.image_size, d.channels, cfg.seed, d.val_fraction, d.test_fraction)


def system_spec(cfg: RunConfig, splits: DataSplits, teacher_dim: int) -> dict:
    """What it takes to rebuild the system of a run (``RUN/system.json``)."""
    cc = cfg.codec
    encoder = (
        {"kind": "resnet-like", "feature_dim": cfg.search.feature_dim}
        if cfg.method == "authors-2025"
        else {"kind": "genotype", "file": "genotype.json"}
    )
    codec = {
        "name": cc.name,
        "max_symbols": cc.max_symbols,
        "symbols": cc.symbols,
        "dim": cc.dim,
        "depth": cc.depth,
        "heads": cc.heads,
        "csi": cc.csi == "decoder",
    }
    return {
        "encoder": encoder,
        "codec": codec,
        "num_classes": splits.num_classes,
        "teacher_dim": teacher_dim,
        "input_shape": list(splits.input_shape),
    }


def build_system(spec: dict, run: Path) -> SemanticSystem:
    enc = spec["encoder"]
    if enc["kind"] == "genotype":
        encoder = create_encoder(Genotype.load(run / enc["file"]))
    else:
        encoder = create_encoder("resnet-like", tuple(spec["input_shape"]), enc["feature_dim"])
    c = dict(spec["codec"])
    name = c.pop("name")
    codec = create_codec(name, encoder.feature_dim, **(c if name == "cat" else {"dim": c["dim"]}))
    return SemanticSystem(encoder, spec["num_classes"], spec["teacher_dim"], codec)


def load_run(run: str | Path) -> tuple[RunConfig, SemanticSystem, dict]:
    """Config, trained system (latest stage checkpoint) and the system spec of a finished run."""
    run = Path(run)
    if not (run / "system.json").is_file():
        raise UserError(f"{run} is not a trained run (no system.json); run rkd-edge pipeline --out {run}")
    cfg = from_dict(read_json(run / "config.json", "run config"))
    spec = read_json(run / "system.json", "system spec")
    system = build_system(spec, run)
    for stage in ("stage2", "probe", "stage1"):
        ck = run / "checkpoints" / f"{stage}.pt"
        if ck.is_file():
            state = load_checkpoint(ck)["model"]
            if spec["encoder"].get("pruned"):
                from rkd_edge.prune import shrink_to_state

                shrink_to_state(system.encoder, state, "encoder.")
            try:
                system.load_state_dict(state)
            except RuntimeError:
                raise UserError(f"checkpoint {ck} does not match {run}/system.json; rerun the stage") from None
            break
    else:
        raise UserError(f"{run} has no trained checkpoint; finish the pipeline first")
    return cfg, system.eval(), spec


DISTRIBUTED_STAGES = ("stage1", "probe", "stage2")


class Pipeline:
    """One run directory, its config, data, teacher and the stages of its method."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        from rkd_edge.config import validate

        self.user_cfg, self.cfg, self.out = validate(cfg), method_config(cfg), Path(out)
        saved = self.out / "config.json"
        # Compare resolved configs, so that a run made before a new config key existed still resumes.
        if saved.is_file() and from_dict(read_json(saved, "run config")).to_dict() != cfg.to_dict():
            raise UserError(f"{out} holds a run with a different config; use a new --out (or delete it)")
        # Everything that can fail on bad input happens before the run folder is created.
        self.device = env.pick_device(cfg.device)
        self.splits = load_splits(self.cfg)
        self.created = not self.out.exists()
        (self.out / "stages").mkdir(parents=True, exist_ok=True)
        write_json(saved, cfg.to_dict())
        progress.set_log_file(self.out / "run.log")
        self.cache = TeacherCache(self.out / "cache")
        self.teacher = None

    @contextlib.contextmanager
    def removed_if_failed_early(self):
        """A run folder this invocation created is removed again if a user error stops it before any
        stage finished (a wrong teacher spec, say): nothing half-made is left behind."""
        try:
            yield
        except UserError:
            if self.created and ddp.is_main() and not any((self.out / "stages").glob("*.json")):
                progress.set_log_file(None)
                shutil.rmtree(self.out, ignore_errors=True)
            raise

    def done(self, stage: str) -> dict | None:
        p = self.out / "stages" / f"{stage}.json"
        return read_json(p) if p.is_file() else None

    def mark(self, stage: str, info: dict) -> dict:
        write_json(self.out / "stages" / f"{stage}.json", info)
        return info

    def run(self, stop_after: str | None = None) -> dict:
        """Run the method's stages in order, skipping finished ones.

        Under torchrun, stage 1 and stage 2 train with DDP on every rank; rank 0 alone trains the
        teacher, searches, evaluates and writes records while the other ranks wait.
        """
        with self.removed_if_failed_early():
            return self._run(stop_after)

    def _run(self, stop_after: str | None) -> dict:
        env.seed_everything(self.cfg.seed)
        ddp.init_from_env(self.device)
        main = ddp.is_main()
        results = {}
        for stage in METHOD_STAGES[self.cfg.method]:
            prev = self.done(stage)
            if prev is not None and stage != "teacher":
                progress.log(f"[{stage}] done earlier, skipped")
                results[stage] = prev
            elif main or stage in DISTRIBUTED_STAGES:
                progress.log(f"[{stage}] starting")
                t0 = time.time()
                info = getattr(self, f"stage_{stage}")()
                info["seconds"] = prev["seconds"] if prev else round(time.time() - t0, 2)
                results[stage] = self.mark(stage, info) if main else info
            ddp.barrier()
            if stage == "teacher" and not main:
                results[stage] = self.stage_teacher()  # loads what rank 0 trained
            if stage == stop_after:
                break
        if stop_after is None and main:
            from rkd_edge.report import write_report

            return write_report(self, results)
        return results

    # --- stages -------------------------------------------------------------------------------------
    def stage_teacher(self) -> dict:
        tc = self.cfg.teacher
        spec = tc.spec
        rec = {}
        if spec is None:
            tdir = self.out / "teacher"
            if not (tdir / "teacher.json").is_file():
                from rkd_edge.teachers.train import train_teacher

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
        from rkd_edge.nas.sweep import run_sweep

        if self.cfg.search.genotype:
            g = Genotype.load(self.cfg.search.genotype)
            g.save(self.out / "genotype.json")
            return {
                "lambda": g.search.get("lambda"),
                "params": g.params,
                "flops": g.flops,
                "genotype": "genotype.json",
                "reused": self.cfg.search.genotype,
                "sweep": [],
            }
        return run_sweep(self.cfg, self.splits, self.teacher, self.cache, self.out, self.device)

    def _system(self) -> SemanticSystem:
        spec = system_spec(self.cfg, self.splits, self.teacher.embed_dim)
        if ddp.is_main():
            write_json(self.out / "system.json", spec)
        env.seed_everything(self.cfg.seed)
        return build_system(spec, self.out).to(self.device)

    def _train(self, name: str, sc, system: SemanticSystem, robust: bool, previous: str | None) -> dict:
        if previous is not None and (self.out / "checkpoints" / f"{previous}.pt").is_file():
            self._load_previous(system, previous)
        teacher = None if self.cfg.method == "deepjscc" else self.teacher
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
            checkpoint=self.out / "train" / f"{name}.ckpt",
        )
        save_checkpoint(
            self.out / "checkpoints" / f"{name}.pt", {"model": system.state_dict(), "config": self.cfg.to_dict()}
        )
        (self.out / "train" / f"{name}.ckpt").unlink(missing_ok=True)
        clean = validate(system, self.splits.test, self.device, False, self.cfg.seed, None)
        return {"history": history, "clean_test_accuracy": clean, "trained": sc.train, "losses": sc.losses}

    def _load_previous(self, system: SemanticSystem, previous: str) -> None:
        """Start from the previous stage's weights. The codec comes from there only if that stage trained
        it; otherwise it keeps the seeded initialisation (the same one the previous stage held), so a
        codec changed after stage 1 finished does not force stage 1 to run again."""
        ck = self.out / "checkpoints" / f"{previous}.pt"
        state = load_checkpoint(ck)["model"]
        trained = (self.done(previous) or {}).get("trained", [])
        if not any(g.startswith("codec") for g in trained):
            state = {n: v for n, v in state.items() if not n.startswith("codec.")}
            state.update({n: v for n, v in system.state_dict().items() if n.startswith("codec.")})
        try:
            system.load_state_dict(state)
        except RuntimeError:
            raise UserError(f"checkpoint {ck} does not match this run's system; rerun stage {previous}") from None

    def stage_stage1(self) -> dict:
        return self._train("stage1", self.cfg.stage1, self._system(), False, None)

    def stage_probe(self) -> dict:
        return self._train("probe", probe_stage(self.cfg), self._system(), False, "stage1")

    def stage_stage2(self) -> dict:
        prev = "probe" if self.cfg.method == "authors-2025" else "stage1"
        return self._train("stage2", self.cfg.stage2, self._system(), True, prev)

    def stage_evaluate(self) -> dict:
        from rkd_edge.evaluate.run import evaluate_run

        return evaluate_run(self.out, quiet_summary=True)


def student_costs(system: SemanticSystem, input_shape) -> dict:
    return {
        "params": count_params(system.encoder) + count_params(system.classifier),
        "encoder_params": count_params(system.encoder),
        "flops": count_macs(system.encoder, tuple(input_shape)) + system.classifier.weight.numel(),
    }
