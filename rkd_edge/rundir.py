"""The run folder: one module owns its layout and its loaders (DESIGN.md section 7).

The pipeline writes a run through :class:`RunDir`, and every reader (evaluate, report, prune, export)
reads through it, so the layout lives here alone::

    RUN/
      .rkd-edge.json            marker: an rkd-edge run (see rkd_edge.outputs)
      config.json               the resolved config
      system.json               what it takes to rebuild the system (encoder kind, codec sizes, shapes)
      genotype.json             the searched student (KDL-DARTS)
      teacher/                  a teacher trained inside the run (when no --teacher was given)
      stages/NAME.json          a stage's record, written last and atomically: the stage is complete
      checkpoints/NAME.pt       a finished stage's weights (plain tensors, loaded with weights_only)
      train/NAME.ckpt           an unfinished stage's epoch checkpoint (exact resume)
      cache/                    teacher outputs
      evaluation.{csv,json}, evaluation_summary.json, accuracy_vs_*.png
      report.json, report.md, run.log
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from rkd_edge.channel_ids import CHANNEL_CAPACITY, CHANNEL_IDS, same_ids
from rkd_edge.checkpoints import load_checkpoint
from rkd_edge.codec import create_codec
from rkd_edge.config import RunConfig, read_config
from rkd_edge.data import DataSplits, create_dataset
from rkd_edge.errors import UserError, short_repr
from rkd_edge.io import atomic_path, read_json, sha256_file, special_entry, write_json
from rkd_edge.limits import MAX_PARAMS
from rkd_edge.methods import METHOD_STAGES
from rkd_edge.nas.cost import count_macs, count_params
from rkd_edge.nas.genotypes import Genotype
from rkd_edge.nas.sweep import SCORED
from rkd_edge.outputs import kind_of
from rkd_edge.students import create_encoder
from rkd_edge.system import SemanticSystem
from rkd_edge.system_spec import check_spec

# Stages whose checkpoint holds the trained system, latest first.
TRAINED_STAGES = ("stage2", "probe", "stage1")


# The fields of a stage record that later stages and the report read, and their types (``None`` where a
# field may be null): a record edited by hand is refused with one line, not a traceback downstream.
_NUM = (int, float)
RECORD_FIELDS: dict[str, dict[str, tuple]] = {
    "*": {
        "inputs": (dict,),
        "seconds": _NUM,
        "trained": (list,),
        "history": (list,),
        "clean_test_accuracy": _NUM,
        "checkpoint_sha256": (str,),
    },
    "teacher": {"accuracy": _NUM, "params": (int,), "embed_dim": (int,), "spec": (str,), "identity": (str,)},
    "search": {"params": (int,), "macs": (int,), "flops": (int,), "genotype": (str,)},  # flops: runs before macs
    "evaluate": {
        "report_symbols": (int,),
        "noiseless": (*_NUM, None),
        "noiseless_symbols": (int, None),
        "curves": (dict,),
        "source_dim": (int,),
        "files": (list,),
        "upper_bounds": (dict,),
    },
}


def _of_type(value, types: tuple) -> bool:
    """Whether ``value`` is one of ``types`` (``None`` in them allows null; a bool is never a number)."""
    if value is None:
        return None in types
    return isinstance(value, tuple(t for t in types if t is not None)) and not isinstance(value, bool)


def _copy_whole(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy one file so that ``dst`` is the whole file or not there (a full disk leaves no truncated copy)."""
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


class RunDir:
    """Named paths and loaders of one run folder.

    Args:
        root: The run folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- paths -----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def system(self) -> Path:
        return self.root / "system.json"

    @property
    def genotype(self) -> Path:
        return self.root / "genotype.json"

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def prune_record(self) -> Path:
        return self.root / "prune.json"

    def stage_record(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "checkpoints" / f"{stage}.pt"

    def epoch_checkpoint(self, stage: str) -> Path:
        return self.root / "train" / f"{stage}.ckpt"

    def resumable(self, stage: str) -> bool:
        """Whether an interrupted run of ``stage`` left work to resume from: epochs (its own or the teacher's),
        or a lambda sweep's searched and scored lambdas."""
        partial = [self.epoch_checkpoint(stage)] + ([self.teacher_dir / "checkpoint.pt"] if stage == "teacher" else [])
        if stage == "search":
            partial += list((self.root / "sweep").glob(f"*/{SCORED}"))
        return any(p.is_file() for p in partial)

    # --- records ---------------------------------------------------------------------------------
    def done(self, stage: str) -> dict | None:
        """The record of a finished stage, or ``None``; one whose fields have other types than rkd-edge
        writes (:data:`RECORD_FIELDS`) is refused with one line."""
        p = self.stage_record(stage)
        if not p.is_file():
            return None
        rec = read_json(p, f"stage record {stage}", expect=dict)
        for key, types in {**RECORD_FIELDS["*"], **RECORD_FIELDS.get(stage, {})}.items():
            v = rec.get(key)
            if key in rec and not _of_type(v, types):
                raise UserError(
                    f"stage record {p} has {key} = {short_repr(v)}, not what rkd-edge writes there; delete the "
                    "record to rerun the stage"
                )
        return rec

    def mark(self, stage: str, info: dict) -> dict:
        """Record a finished stage (written last, atomically: the stage is complete once this exists); its
        epoch checkpoint, kept until now so that an interruption resumes, goes. A trained stage's record
        holds its checkpoint's sha256: a checkpoint swapped in later (another run's, an earlier stage's) is
        refused when the run is loaded."""
        info = {k: v for k, v in info.items() if k != "checkpoint_sha256"}
        if stage in TRAINED_STAGES and self.checkpoint(stage).is_file():
            info["checkpoint_sha256"] = sha256_file(self.checkpoint(stage))
        write_json(self.stage_record(stage), info)
        self.epoch_checkpoint(stage).unlink(missing_ok=True)
        return info

    def any_done(self) -> bool:
        """Whether the run holds work worth keeping: a finished stage other than loading a given teacher, or
        a teacher trained (or being trained) into the run."""
        records = {p.name for p in (self.root / "stages").glob("*.json")}
        return bool(records - {"teacher.json"}) or self.teacher_dir.exists()

    def stage_files(self, stage: str) -> list[Path]:
        """What a finished stage leaves besides its record (what a run started ``--from`` this one copies)."""
        if stage == "teacher":
            return [self.teacher_dir, self.cache_dir]
        if stage == "search":
            return [self.genotype, self.root / "search_log.json", self.root / "arch_weights.png"]
        return [self.checkpoint(stage)]

    def check_copyable(self, stages: list[str]) -> None:
        """Refuse (one line) stage files that are or hold a symbolic link or a special file (a FIFO blocks the
        copy): ``--from`` copies plain files only."""
        for stage in stages:
            for src in self.stage_files(stage):
                if (src.exists() or src.is_symlink()) and (odd := special_entry(src)) is not None:
                    raise UserError(f"{odd} is a symbolic link or a special file; --from copies only plain files")

    def copy_stages(self, source: RunDir, stages: list[str]) -> list[str]:
        """Copy ``stages`` finished in ``source`` into this run (their files, then their records, each
        record noting where it came from); stages already finished here are left as they are. The caller
        checks ``source.check_copyable(stages)`` before it creates anything.

        Returns:
            The stages copied.
        """
        copied = []
        for stage in stages:
            rec = source.done(stage)
            if self.done(stage) is not None or rec is None:
                continue
            try:
                for src in source.stage_files(stage):
                    dst = self.root / src.relative_to(source.root)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if src.is_dir():
                        shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=_copy_whole)
                    elif src.is_file():
                        _copy_whole(src, dst)
            except OSError as exc:  # a full disk: shutil.Error lists (src, dst, why) per file
                listed = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else None
                where = exc.filename or self.root
                why = listed[0][2] if isinstance(listed, list) and listed else f"{exc.strerror or exc} ({where})"
                raise UserError(
                    f"cannot copy the {stage} stage of {source.root} into {self.root}: {why}; free space or fix "
                    "the path and rerun (no file was left half-copied; stages copied before are kept)"
                ) from None
            self.mark(stage, {**rec, "reused_from": Path(os.path.relpath(source.root, self.root)).as_posix()})
            copied.append(stage)
        return copied

    # --- loaders ---------------------------------------------------------------------------------
    def require_run(self) -> None:
        kind = kind_of(self.root)
        if kind not in (None, "run"):  # "run rkd-edge pipeline --out BUNDLE" would be refused: it is not free
            raise UserError(f"{self.root} is an rkd-edge {kind}, not a run; give the run folder rkd-edge pipeline made")
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root} is not a folder; give the run folder rkd-edge pipeline made")
        if kind != "run" or not self.system.is_file():
            raise UserError(
                f"{self.root} is not a trained run (no system.json); run rkd-edge pipeline --out {self.root}"
            )

    def load_config(self) -> RunConfig:
        return read_config(self.config, "run config")

    def load_spec(self) -> dict:
        return check_spec(read_json(self.system, "system spec", expect=dict), str(self.system))

    def missing_stages(self, cfg: RunConfig) -> list[str]:
        """Stages of the run's method that have no record yet."""
        return [s for s in METHOD_STAGES.get(cfg.method, []) if not self.stage_record(s).is_file()]

    def require_complete(self, cfg: RunConfig, what: str) -> None:
        """Refuse (one line) a run whose stages did not all complete."""
        missing = self.missing_stages(cfg)
        if missing:
            raise UserError(
                f"{self.root} is not finished (stage {missing[0]} has no record); "
                f"complete it with rkd-edge pipeline --out {self.root} before {what}"
            )

    def require_teacher(self, cfg: RunConfig) -> None:
        """Refuse (one line) a run whose teacher stage finished but whose trained teacher is gone: loading it
        would train another, quietly, whose numbers no record of the run describes."""
        trained_here = cfg.teacher.spec is None and self.done("teacher") is not None
        if trained_here and not (self.teacher_dir / "teacher.json").is_file():
            raise UserError(
                f"{self.teacher_dir} is missing although stage teacher finished; restore it, or remove "
                f"{self.stage_record('teacher')} and rerun rkd-edge pipeline --out {self.root} to train it again"
            )

    def verified_checkpoint(self, stage: str) -> Path | None:
        """``stage``'s checkpoint, checked against its stage record (None: the stage has neither).

        Raises:
            UserError: the stage finished but its checkpoint is missing, or is not the one it wrote.
        """
        ck, record = self.checkpoint(stage), self.stage_record(stage)
        again = f"restore it, or remove {record} and rerun rkd-edge pipeline --out {self.root} to train it again"
        if not ck.is_file():
            if record.is_file():
                raise UserError(f"{ck} is missing although stage {stage} finished; {again}")
            return None
        recorded = (self.done(stage) or {}).get("checkpoint_sha256")
        if recorded is not None and sha256_file(ck) != recorded:
            differs = f"its sha256 differs from {record}"
            raise UserError(f"{ck} is not the checkpoint stage {stage} wrote ({differs}); {again}")
        return ck

    def load(self) -> tuple[RunConfig, SemanticSystem, dict]:
        """Config, trained system (latest stage checkpoint, on the CPU) and the system spec."""
        self.require_run()
        cfg, spec = self.load_config(), self.load_spec()
        system = build_system(spec, self.root)
        for stage in TRAINED_STAGES:
            # the latest finished stage's weights: an earlier stage's are not this run's result
            ck = self.verified_checkpoint(stage)
            if ck is not None:
                record = self.done(stage)
                saved = load_checkpoint(ck)
                pruned = bool(spec["encoder"].get("pruned"))
                state = untrained_codec(system, saved.get("model"), record)
                load_state(system, state, ck, pruned=pruned, channel_ids=saved.get("channel_ids"))
                break
        else:
            raise UserError(f"{self.root} has no trained checkpoint; finish the pipeline first")
        return cfg, system.eval(), spec


def weights_digest(system: nn.Module) -> str:
    """sha256 of a system's weights (names, shapes, dtypes and values, in name order): which trained model a
    bundle or an evaluation came from, where configs alike say nothing (a pruned run keeps its source's)."""
    h = hashlib.sha256()
    for name, t in sorted(system.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def trained_codec(record: dict | None) -> bool:
    """Whether a stage record says its stage trained the codec (or a half of it)."""
    trained = (record or {}).get("trained")
    return isinstance(trained, list) and any(str(g).startswith("codec") for g in trained)


def untrained_codec(system: SemanticSystem, state, record: dict | None):
    """A stage that did not train the codec holds only the codec's initial weights. When they do not fit
    the run's codec (a run started ``--from`` one with another codec or method), the system's own
    initialisation stands in for them; anything else is returned as it is.

    Args:
        system: The run's system.
        state: A checkpoint's ``model`` entry.
        record: The record of the stage that wrote it.
    """
    if not isinstance(state, dict) or trained_codec(record):
        return state
    own, theirs = codec_weights(system.state_dict()), codec_weights(state)
    if theirs.keys() == own.keys() and all(getattr(theirs[n], "shape", None) == own[n].shape for n in own):
        return state
    return with_own_codec(system, state)


def codec_weights(state: dict) -> dict:
    """The ``codec.`` entries of a state dict."""
    return {n: v for n, v in state.items() if n.startswith("codec.")}


def with_own_codec(system: SemanticSystem, state: dict) -> dict:
    """``state`` with its codec weights replaced by ``system``'s own (dropped where the system has none)."""
    return {**{n: v for n, v in state.items() if not n.startswith("codec.")}, **codec_weights(system.state_dict())}


def load_state(
    system: SemanticSystem,
    state,
    ck: Path,
    pruned: bool = False,
    stage: str | None = None,
    channel_ids: dict | None = None,
) -> None:
    """Load a checkpoint's model state into ``system``; a state of another shape is one line.

    Args:
        system: The system to fill.
        state: The checkpoint's ``model`` entry (name -> tensor).
        ck: The checkpoint's path (for messages).
        pruned: Rebuild narrower encoder layers from the state's shapes first.
        stage: The stage to name in the message.
        channel_ids: The channel-id table the checkpoint was trained with (``None``: written before
            tables were stored, which used the same ids).
    """
    rerun = f"rerun stage {stage}" if stage else "rerun the stage that wrote it"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {ck} holds no model state; {rerun}")
    if channel_ids is not None and (not isinstance(channel_ids, dict) or not same_ids(channel_ids)):
        raise UserError(f"checkpoint {ck} was trained with other channel ids ({channel_ids}); {rerun}")
    if pruned:
        shrink_to_state(system.encoder, state, "encoder.")
    state = _grow_channel_embeddings(system, state)
    try:
        system.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"checkpoint {ck} does not match its run's system.json; {rerun}") from None


def _grow_channel_embeddings(system: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints from before :data:`CHANNEL_CAPACITY` embed one row per channel type known then; the
    rows of types appended since keep the model's (zero) initialisation."""
    own = system.state_dict()
    grown = dict(state)
    for name, t in state.items():
        mine = own.get(name)
        if (
            name.endswith("types.weight")
            and mine is not None
            and t.dim() == 2
            and t.shape[1] == mine.shape[1]
            and t.shape[0] < mine.shape[0] == CHANNEL_CAPACITY
        ):
            grown[name] = torch.cat([t, mine[t.shape[0] :].to(t.dtype)])
    return grown


def load_splits(cfg: RunConfig) -> DataSplits:
    """The data splits of a config (same seed, same split)."""
    d = cfg.data
    return create_dataset(d.name, d.data_dir, d.image_size, d.channels, cfg.seed, d.val_fraction, d.test_fraction)


def build_system(spec: dict, run: Path) -> SemanticSystem:
    """An untrained system shaped by ``spec`` (genotype read from ``run``).

    Counted first on the meta device (shapes only): ``system.json`` and ``genotype.json`` carry no digest, and
    hand-edited widths would otherwise allocate hundreds of gigabytes before any checkpoint is compared.
    """
    with torch.device("meta"):
        n = count_params(_build_system(spec, run))
    if n > MAX_PARAMS:
        raise UserError(
            f"{Path(run) / 'system.json'} and its genotype describe a network of {n:,} parameters, more than the "
            f"{MAX_PARAMS:,} rkd-edge builds; this is not a run rkd-edge trained (restore its files)"
        )
    return _build_system(spec, run)


def _build_system(spec: dict, run: Path) -> SemanticSystem:
    enc = spec["encoder"]
    if enc["kind"] == "genotype":
        encoder = create_encoder(Genotype.load(Path(run) / enc["file"]))
    else:
        encoder = create_encoder("resnet-like", tuple(spec["input_shape"]), enc["feature_dim"])
    codec = build_codec(spec["codec"], encoder.feature_dim)
    return SemanticSystem(encoder, spec["num_classes"], spec["teacher_dim"], codec)


def build_codec(codec_spec: dict, feature_dim: int) -> nn.Module:
    """An untrained codec from a system spec's ``codec`` record, for features of width ``feature_dim``."""
    c = dict(codec_spec)
    name = c.pop("name")
    return create_codec(name, feature_dim, **(c if name == "cat" else {"dim": c["dim"]}))


def load_run(run: str | Path) -> tuple[RunConfig, SemanticSystem, dict]:
    """Config, trained system and spec of a run folder (see :meth:`RunDir.load`)."""
    return RunDir(run).load()


def student_costs(system: SemanticSystem, input_shape) -> dict:
    """Parameters and multiply-accumulates of the student (encoder + classifier) of a system, and of its
    encoder alone."""
    encoder_macs = count_macs(system.encoder, tuple(input_shape))
    return {
        "params": count_params(system.encoder) + count_params(system.classifier),
        "encoder_params": count_params(system.encoder),
        "macs": encoder_macs + system.classifier.weight.numel(),
        "encoder_macs": encoder_macs,
    }


def shrink_to_state(module: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> nn.Module:
    """Replace Conv2d / BatchNorm2d / Linear / LayerNorm layers by ones shaped like ``state``'s tensors
    (a pruned encoder is rebuilt from its checkpoint's shapes)."""
    for name, child in list(module.named_children()):
        key = f"{prefix}{name}"
        w = state.get(f"{key}.weight")
        new = None
        if isinstance(child, nn.Conv2d) and w is not None:
            groups = 1 if child.groups == 1 else w.shape[0]  # depthwise stays depthwise
            new = nn.Conv2d(
                w.shape[1] * groups,
                w.shape[0],
                child.kernel_size,
                child.stride,
                child.padding,
                child.dilation,
                groups,
                bias=child.bias is not None,
            )
        elif isinstance(child, nn.BatchNorm2d) and f"{key}.running_mean" in state:
            new = nn.BatchNorm2d(state[f"{key}.running_mean"].shape[0], affine=child.affine)
        elif isinstance(child, nn.Linear) and w is not None:
            new = nn.Linear(w.shape[1], w.shape[0], bias=child.bias is not None)
        elif isinstance(child, nn.LayerNorm) and w is not None:
            new = nn.LayerNorm(w.shape[0], elementwise_affine=True)
        if new is not None:
            setattr(module, name, new)
        else:
            shrink_to_state(child, state, f"{key}.")
    return module


def checkpoint_state(system: nn.Module, cfg: RunConfig) -> dict:
    """What a finished stage's checkpoint holds: plain tensors, the config and the channel-id table."""
    return {"model": system.state_dict(), "config": cfg.to_dict(), "channel_ids": dict(CHANNEL_IDS)}
