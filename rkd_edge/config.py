"""Typed configuration: dataclasses, YAML presets, dotted CLI overrides, saved next to every artefact.

Training stages are declared as data (:class:`StageConfig`): each has its own losses, optimiser
settings and the list of modules it trains; everything else is frozen during that stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from rkd_edge.channel_ids import CHANNEL_TYPES, CSI_MODES, FADING_KEYS, FADING_MODES, fading_kwargs
from rkd_edge.errors import UserError, short_repr
from rkd_edge.io import json_digest, read_json, read_text
from rkd_edge.limits import (
    IMAGE_SIZE_RANGE,
    MAX_PARAMS,
    MAX_SYMBOLS,
    SNR_LIMIT_DB,
    check_eval_passes,
    check_snr_db,
)

# The methods ``--method`` compares; what each one runs is declared in rkd_edge.methods.
METHODS = ("rkd-sc", "authors-2025", "deepjscc", "no-stage2")


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    channels: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    batch_size: int = 64
    augment: bool = False


@dataclass
class TeacherConfig:
    spec: str | None = None  # load this teacher; None: train `arch` into RUN/teacher
    arch: str = "cnn-large"
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    probe_only: bool = False  # train only the head (linear probe of a pretrained model)
    augment: bool | None = None  # None: follow data.augment
    amp: str = "off"  # off | bf16: autocast of the training forward pass (GPU speed; accuracy measured)
    # Replay each training step from a CUDA graph (GPU only, one process; rkd_edge/distill/graphs.py)
    cuda_graph: bool = False


@dataclass
class SearchConfig:
    epochs: int = 10
    warmup_epochs: int = 2
    layers: int = 3
    steps: int = 3
    init_channels: int = 8
    # Width the derived student is built and trained at; None: init_channels (the width searched at)
    derive_channels: int | None = None
    # Or the widest width whose student (encoder + classifier) has at most this many parameters
    derive_max_params: int | None = None
    stem_multiplier: int = 2
    stem_stride: int = 1
    feature_dim: int = 64
    lambdas: list[float] = field(default_factory=lambda: [0.5])
    cost: str = "params"  # params | flops (multiply-accumulates, MACs) | latency
    latency_table: str | None = None
    latency_precision: str | None = None  # fp32 | int8: the precision the latency table must be measured in
    alpha_kd: float = 1.0
    temperature: float = 4.0
    w_lr: float = 0.025
    arch_lr: float = 3e-3
    second_order: bool = False
    partial_channels: int = 1
    max_skip: int = 2
    batch_size: int = 64
    train_fraction: float = 0.5  # of the train split for weights, the rest for architecture
    sweep_epochs: int = 10  # stage-1 epochs to score each derived student in a lambda sweep
    limit_batches: int | None = None
    genotype: str | None = None  # reuse this genotype.json instead of searching
    amp: str = "off"  # off | bf16 (see teacher.amp)


@dataclass
class StageConfig:
    """One training stage declared as data."""

    epochs: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-4
    losses: dict[str, float] = field(default_factory=dict)  # ce, kd, feat, recon
    temperature: float = 4.0
    train: list[str] = field(default_factory=list)  # module groups; the rest stay frozen
    snr_db: list[float] = field(default_factory=lambda: [-10.0, 20.0])  # range, stage 2
    snr_schedule: list[float] | None = None  # fixed SNR per epoch (authors-2025)
    channels: list[str] = field(default_factory=lambda: ["awgn", "rayleigh"])
    limit_batches: int | None = None
    amp: str = "off"  # off | bf16 (see teacher.amp)
    # Stage 2: "draw" one length k per sample, or "all": every sample through every k of the codec's set
    # each step (the encoder runs once), so a rate-adaptive codec gets as much training per k as a
    # dedicated one.
    lengths: str = "draw"
    # Augment this stage's batches (None: follow data.augment). With augmentation the teacher runs online on
    # the same augmented batch (consistent teaching) instead of reading its cached outputs.
    augment: bool | None = None
    cuda_graph: bool = False  # see teacher.cuda_graph


@dataclass
class CodecConfig:
    name: str = "cat"
    max_symbols: int = 16
    symbols: list[int] = field(default_factory=lambda: [4, 8, 16])
    dim: int = 64
    depth: int = 2
    heads: int = 4
    # SNR-, channel- and length-conditioned gains on the codec's linear paths: a learned power allocation
    # across the feature dimensions (tx) and its inverse (rx) that moves with the SNR and k.
    gains: bool = False
    # The transmitter feeds the class posterior of its own copy of the task head to the linear path beside
    # the features (CATCodec, posterior_classes): a non-linear code for low SNR.
    posterior: bool = False
    # The receiver's linear path has one map per trained length (CATCodec, rx_per_length): a rate-adaptive
    # codec's read-out of a prefix need not be the prefix of the longest read-out. Receiver only.
    rx_per_length: bool = False
    csi: str = "zf"  # zf | mmse | decoder (fading channels)
    rayleigh_mode: str = "block"
    rician_k: float = 3.0

    def channel_kwargs(self) -> dict:
        """The fading channels' settings, as :func:`rkd_edge.channel.create_channel` takes them."""
        return fading_kwargs(**self.fading_settings())

    def fading_settings(self) -> dict:
        """The :data:`~rkd_edge.channel_ids.FADING_KEYS` settings, as a bundle's manifest records them."""
        return {key: getattr(self, key) for key in FADING_KEYS}


@dataclass
class EvalConfig:
    channels: list[str] = field(default_factory=lambda: ["awgn", "rayleigh"])
    snr_db: str = "-10:24:2"
    symbols: list[int] | None = None  # None: the codec's set
    trials: int = 3
    report_symbols: int | None = None  # k of report.json curves; None: the largest


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"
    method: str = "rkd-sc"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    stage1: StageConfig = field(
        default_factory=lambda: StageConfig(
            losses={"ce": 1.0, "kd": 1.0, "feat": 1.0}, train=["encoder", "classifier", "projector"]
        )
    )
    stage2: StageConfig = field(
        default_factory=lambda: StageConfig(
            epochs=20, lr=2e-3, losses={"ce": 1.0, "feat": 1.0, "kd": 0.5}, train=["codec", "classifier", "projector"]
        )
    )
    codec: CodecConfig = field(default_factory=CodecConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the canonical JSON form (the config hash recorded in manifests)."""
        return json_digest(self.to_dict())


def augmenting(own: bool | None, data_augment: bool) -> bool:
    """Whether a teacher or stage augments its batches: its own ``augment`` where set, else ``data.augment``."""
    return data_augment if own is None else own


def validate(cfg: RunConfig) -> RunConfig:
    """Check names against the registries before any work starts (one clear line if wrong)."""
    # The cost metrics and teachers are registered with their torch code: imported here, when a config is
    # validated, so that reading a config (the torch-free CLI paths) never loads torch.
    from rkd_edge.nas.cost import METRICS
    from rkd_edge.teachers.registry import check_arch, check_spec

    checks = [
        ("method", cfg.method, METHODS),
        ("search.cost", cfg.search.cost, METRICS),
        ("codec.name", cfg.codec.name, CODEC_NAMES),
    ]
    if cfg.search.latency_precision is not None:
        checks.append(("search.latency_precision", cfg.search.latency_precision, ("fp32", "int8")))
    checks += [(f"{n}.channels", c, CHANNEL_TYPES) for n in ("stage1", "stage2") for c in getattr(cfg, n).channels]
    amp_modes = ("off", "bf16")
    checks += [(f"{k}.amp", getattr(cfg, k).amp, amp_modes) for k in ("teacher", "search", "stage1", "stage2")]
    checks += [("evaluate.channels", c, CHANNEL_TYPES) for c in cfg.evaluate.channels]
    for key, value, allowed in checks:
        if value not in allowed:
            raise UserError(f"{key}: unknown value {short_repr(value)}; choose one of {', '.join(allowed)}")
    bad = [k for k in cfg.codec.symbols if not 1 <= k <= cfg.codec.max_symbols]
    if bad:
        raise UserError(f"codec.symbols {bad} outside 1..{cfg.codec.max_symbols} (codec.max_symbols)")
    if not cfg.search.lambdas or any(v < 0 for v in cfg.search.lambdas):
        raise UserError("search.lambdas must be a non-empty list of values >= 0")
    parse_snr_range(cfg.evaluate.snr_db, "evaluate.snr_db")
    if cfg.teacher.spec is not None:
        check_spec(cfg.teacher.spec)
    else:
        check_arch(cfg.teacher.arch)
    _check_consistency(cfg)
    return cfg


# The registries' names, torch-free (the registries live with their torch code; a test checks they agree).
CODEC_NAMES = ("cat", "plain", "direct")  # rkd_edge.codec.CODECS
LOSS_TERMS = ("ce", "kd", "feat", "recon")
STAGE_LENGTHS = ("draw", "all")
MODULE_GROUPS = ("encoder", "classifier", "projector", "codec", "codec.tx", "codec.rx")


def _check_consistency(cfg: RunConfig) -> None:
    """Checks that involve several keys."""
    d, c = cfg.data, cfg.codec
    if d.val_fraction + d.test_fraction >= 1:
        raise UserError(
            f"data.val_fraction + data.test_fraction = {d.val_fraction + d.test_fraction:g} leaves no training data"
        )
    if cfg.search.derive_channels is not None and cfg.search.derive_max_params is not None:
        raise UserError(
            "search.derive_channels and search.derive_max_params both choose the built width; give one "
            "(e.g. --set search.derive_max_params=null to build at search.derive_channels)"
        )
    if c.dim % c.heads:
        raise UserError(f"codec.dim {c.dim} must be a multiple of codec.heads {c.heads}")
    if cfg.search.init_channels % cfg.search.partial_channels:
        raise UserError(
            f"search.partial_channels {cfg.search.partial_channels} must divide search.init_channels "
            f"{cfg.search.init_channels} (each cell sends 1/partial_channels of its channels through the operations)"
        )
    for key in ("gains", "posterior", "rx_per_length"):
        if getattr(c, key) and c.name != "cat":
            raise UserError(f"codec.{key} needs the cat codec, not {short_repr(c.name)}; set codec.{key}=false")
    if not c.symbols:
        raise UserError("codec.symbols must list at least one length")
    lists = {
        "codec.symbols": c.symbols,
        "evaluate.symbols": cfg.evaluate.symbols or [],
        "evaluate.channels": cfg.evaluate.channels,
        "search.lambdas": cfg.search.lambdas,
        **{f"{n}.{k}": getattr(getattr(cfg, n), k) for n in ("stage1", "stage2") for k in ("train", "channels")},
    }
    for key, items in lists.items():
        if twice := sorted({str(v) for v in items if items.count(v) > 1}):
            raise UserError(f"{key} lists {', '.join(twice)} more than once; give each once")
    null_or_items = {f"{n}.snr_schedule": getattr(cfg, n).snr_schedule for n in ("stage1", "stage2")}
    null_or_items["evaluate.symbols"] = cfg.evaluate.symbols
    for key, value in null_or_items.items():
        if value == []:
            raise UserError(f"{key} is an empty list; give values, or null for the default")
    s = cfg.search
    if s.genotype is None and s.warmup_epochs >= s.epochs:
        raise UserError(
            f"search.warmup_epochs {s.warmup_epochs} leaves none of the search's {s.epochs} epochs to update the "
            f"architecture; give fewer warm-up epochs or more search.epochs"
        )
    for name in ("stage1", "stage2"):
        sc: StageConfig = getattr(cfg, name)
        for term in sc.losses:
            if term not in LOSS_TERMS:
                raise UserError(f"{name}.losses: unknown term {short_repr(term)}; choose from {', '.join(LOSS_TERMS)}")
        for group in sc.train:
            if group not in MODULE_GROUPS:
                raise UserError(
                    f"{name}.train: unknown module group {short_repr(group)}; use {', '.join(MODULE_GROUPS)}"
                )
        if not sc.train:
            raise UserError(f"{name}.train lists no module group, so the stage would train nothing; e.g. [encoder]")
        if not any(w > 0 for w in sc.losses.values()):
            raise UserError(f"{name}.losses gives no term a weight above 0; e.g. --set '{name}.losses={{ce: 1.0}}'")
        if not sc.channels:
            raise UserError(f"{name}.channels lists no channel to train over; e.g. [awgn, rayleigh]")
        if sc.lengths not in STAGE_LENGTHS:
            choices = ", ".join(STAGE_LENGTHS)
            raise UserError(f"{name}.lengths: unknown value {short_repr(sc.lengths)}; choose one of {choices}")
        if len(sc.snr_db) != 2 or sc.snr_db[0] > sc.snr_db[1]:
            raise UserError(f"{name}.snr_db must be [low, high] in dB with low <= high, got {sc.snr_db}")
    ev = cfg.evaluate
    if not ev.channels:
        raise UserError("evaluate.channels lists no channel to evaluate over; e.g. [awgn, rayleigh]")
    bad = [k for k in ev.symbols or [] if k > c.max_symbols]
    if bad:
        raise UserError(f"evaluate.symbols {bad} exceed codec.max_symbols {c.max_symbols}")
    if ev.report_symbols is not None and ev.report_symbols > c.max_symbols:
        raise UserError(f"evaluate.report_symbols {ev.report_symbols} exceeds codec.max_symbols {c.max_symbols}")
    evaluated = ev.symbols or c.symbols
    if ev.report_symbols is not None and ev.report_symbols not in evaluated:
        raise UserError(
            f"evaluate.report_symbols {ev.report_symbols} is not an evaluated length "
            f"({', '.join(map(str, evaluated))}); choose one of them"
        )
    check_eval_passes(len(ev.channels), len(parse_range(ev.snr_db)), len(evaluated), ev.trials, "evaluate")


def _build(cls, data: dict, where: str, base=None):
    """Build dataclass ``cls`` from a dict, checking every key's type and range (one clear line if wrong).

    Keys ``data`` leaves out keep ``base``'s values: the enclosing config's default for this section (stage 1
    and stage 2 are both a :class:`StageConfig`, with other defaults than ``StageConfig()``'s).
    """
    if not isinstance(data, dict):
        raise UserError(f"config section {where or 'root'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(
            f"unknown config key {where + '.' if where else ''}{short_repr(sorted(map(str, unknown))[0])}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    base = cls() if base is None else base
    for key, value in data.items():
        hint, dotted = hints[key], f"{where}.{key}".strip(".")
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, dotted, getattr(base, key))
        else:
            value = _typed(value, hint, dotted)
            _in_range(dotted, value)
        setattr(base, key, value)
    return base


_INT_LIMIT = 2**63


def _typed(value, hint, key: str):
    """``value`` checked against the type ``hint`` (ints are accepted for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _typed(value, inner[0], key)
    if origin is list:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # --set codec.symbols=8 means the one-element list
        elif isinstance(value, str):  # --set evaluate.channels=rayleigh, --set codec.symbols=16,32
            value = [v.strip() if args[0] is str else _yaml_value(v.strip(), key) for v in value.split(",")]
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {short_repr(value)}")
        return [_typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {short_repr(value)}")
        return {_typed(k, args[0], key): _typed(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {short_repr(value)}")
        return value
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
            _in_range(key, value)  # the key's own range, where it has one
            raise UserError(f"{key}: {short_repr(value)} is too large to be a number here")
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {short_repr(value)}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int) and abs(value) >= _INT_LIMIT:
            _in_range(key, value)
            raise UserError(f"{key}: {short_repr(value)} is too large to be a number here")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"{key}: expected a finite number, got {short_repr(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{key}: expected a non-empty string, got {short_repr(value)}")
        return value
    return value


def _leaf(key: str) -> str:
    return key.split(".")[-1].split("[")[0]


# Allowed ranges by key ("section.key") or by leaf name for keys shared by several sections; a value
# outside is refused before anything runs. (lo, hi, lo_open, hi_open); None = unbounded.
RANGES: dict[str, tuple] = {
    "seed": (0, 2**32 - 1, False, False),
    "data.val_fraction": (0.0, 1.0, True, True),  # 0: no validation split to pick the kept epoch
    "data.test_fraction": (0.0, 1.0, True, True),
    "data.image_size": (*IMAGE_SIZE_RANGE, False, False),
    "search.warmup_epochs": (0, None, False, False),
    "search.stem_stride": (1, 2, False, False),
    "search.max_skip": (0, None, False, False),
    "search.train_fraction": (0.0, 1.0, True, True),
    "search.lambdas": (0.0, None, False, False),
    "search.alpha_kd": (0.0, None, False, False),
    "teacher.label_smoothing": (0.0, 1.0, False, True),
    "codec.max_symbols": (1, MAX_SYMBOLS, False, False),
    "codec.depth": (0, 64, False, False),
    "codec.rician_k": (0.0, None, False, False),
    "stage1.losses": (0.0, None, False, False),
    "stage2.losses": (0.0, None, False, False),
    "evaluate.trials": (1, 10_000, False, False),
    # by leaf name
    "epochs": (1, 100_000, False, False),
    "sweep_epochs": (1, 100_000, False, False),
    "batch_size": (1, 1 << 20, False, False),
    "lr": (0.0, 10.0, True, False),
    "w_lr": (0.0, 10.0, True, False),
    "arch_lr": (0.0, 10.0, True, False),
    "weight_decay": (0.0, None, False, False),
    "temperature": (0.0, None, True, False),
    "layers": (1, 64, False, False),
    "steps": (1, 16, False, False),
    "init_channels": (1, 4096, False, False),
    "derive_channels": (1, 4096, False, False),
    "derive_max_params": (1, MAX_PARAMS, False, False),
    "stem_multiplier": (1, 64, False, False),
    "feature_dim": (1, 1 << 16, False, False),
    "partial_channels": (1, 64, False, False),
    "limit_batches": (1, None, False, False),
    "dim": (1, 1 << 14, False, False),
    "heads": (1, 256, False, False),
    "snr_db": (-SNR_LIMIT_DB, SNR_LIMIT_DB, False, False),
    "snr_schedule": (-SNR_LIMIT_DB, SNR_LIMIT_DB, False, False),
    "symbols": (1, 4096, False, False),
    "report_symbols": (1, 4096, False, False),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "codec.csi": CSI_MODES,
    "codec.rayleigh_mode": FADING_MODES,
    "data.channels": (1, 3),  # grey or RGB
}


def _in_range(key: str, value) -> None:
    section_key = ".".join(key.split(".")[:2]).split("[")[0]
    if section_key in CHOICES and value is not None and value not in CHOICES[section_key]:
        allowed = ", ".join(map(str, CHOICES[section_key]))
        raise UserError(f"{key}: {short_repr(value)} is not allowed; choose one of {allowed}")
    rng = RANGES.get(section_key) or RANGES.get(_leaf(key))
    if rng is None or value is None or isinstance(value, str | bool):
        return
    values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    lo, hi, lo_open, hi_open = rng
    for v in values:
        if isinstance(v, str) or v is None:
            continue
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (
            hi is not None and (v > hi or (hi_open and v == hi))
        ):
            lo_s = "-inf" if lo is None else _bound(lo)
            hi_s = "inf" if hi is None else _bound(hi)
            span = f"{'(' if lo_open else '['}{lo_s}, {hi_s}{')' if hi_open else ']'}"
            raise UserError(f"{key}: {short_repr(v)} is outside the allowed range {span}")


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in resources.files("rkd_edge.presets").iterdir() if p.name.endswith(".yaml")
    )


def load_config(
    preset: str | None = "quickstart", file: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Resolve a config: preset, then a YAML file, then ``key.sub=value`` overrides."""
    data: dict = {}
    if preset:
        if preset not in preset_names():
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(preset_names())}")
        data = _load_yaml(resources.files("rkd_edge.presets").joinpath(f"{preset}.yaml").read_text())
    if file:
        text = read_text(file, "config file", MAX_CONFIG_BYTES)  # a regular file of a config's size, UTF-8
        try:
            loaded = _load_yaml(text) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"config file {file} is not valid YAML ({str(exc).splitlines()[0][:160]})") from None
        except RecursionError:
            raise UserError(f"config file {file} is nested too deeply to be a config; replace it") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config file {file} must hold a mapping of sections, not a {type(loaded).__name__}")
        _merge(data, loaded)
    given: dict[str, str] = {}  # key -> value as written: one key set twice, differently, is a mistake
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} must look like section.key=value")
        if given.setdefault(key, raw) != raw:
            raise UserError(f"--set {key} is given twice ({key}={given[key]} and {item}); give it once")
        parts = key.split(".")
        hint = _hint_at(parts, key)
        node = data
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                node[p] = {}
            node = node[p]
        if not raw.strip():
            raise UserError(f"--set {key}= gives no value; give one, or {key}=null for none")
        node[parts[-1]] = raw if _wants_text(hint) and raw not in ("null", "~") else _yaml_value(raw, key)
    return from_dict(data)


def _hint_at(parts: list[str], key: str):
    """The type hint of a dotted config key (unknown keys are one line)."""
    cls = RunConfig
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            raise UserError(f"unknown config key {short_repr(key)}: {short_repr('.'.join(parts[:i]))} has no sub-keys")
        hints = typing.get_type_hints(cls)
        if p not in hints:
            where = ".".join(parts[:i]) or "the config"
            raise UserError(f"unknown config key {short_repr(key)}; valid keys of {where}: {', '.join(sorted(hints))}")
        cls = hints[p]
    return cls


def _wants_text(hint) -> bool:
    return hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint))


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, stricter where plain YAML guesses: a key given twice in one mapping (plain YAML
    keeps the last silently) and YAML 1.1 base-60 numbers (``1:30`` is 90) are errors."""

    def compose_mapping_node(self, anchor):
        # Checked as written, before a merge (<<) flattens anchored mappings into each other.
        node = super().compose_mapping_node(anchor)
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # unhashable keys: the safe loader's own check
            key = "<<" if key_node.tag == "tag:yaml.org,2002:merge" else self.construct_object(key_node)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {short_repr(key)} given twice in one mapping, line {line}; keep one"
                )
            seen.add(key)
        return node

    def construct_document(self, node):
        # Counted on the composed graph, where an alias is one shared node, before construction copies it:
        # a few hundred bytes of aliases and merge keys (<<) would otherwise build billions of values.
        size: dict[int, int] = {}

        def count(n) -> int:
            if id(n) not in size:
                size[id(n)] = -1  # in progress: met again below itself, the document contains itself
                children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else n.value
                kids = children if isinstance(n, yaml.CollectionNode) else []
                size[id(n)] = min(MAX_CONFIG_ITEMS + 1, 1 + sum(count(c) for c in kids))
            if size[id(n)] < 0:
                raise yaml.constructor.ConstructorError(
                    None, None, "the config contains itself (a YAML alias inside its own anchor); remove the alias"
                )
            return size[id(n)]

        if count(node) > MAX_CONFIG_ITEMS:
            raise yaml.constructor.ConstructorError(
                None, None, f"the config expands to more than {MAX_CONFIG_ITEMS:,} values; a config is a few hundred"
            )
        return super().construct_document(node)

    def _no_base_60(self, node) -> None:
        if ":" in str(node.value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{short_repr(node.value)} reads as a base-60 number in YAML 1.1; quote it"
            )

    def construct_yaml_int(self, node):
        self._no_base_60(node)
        # YAML 1.1 reads 0x10 as 16, 010 as 8 and 1_0 as 10: a count typed so is not what the user meant
        value = str(node.value)
        if not re.fullmatch(r"[-+]?(0|[1-9][0-9]*)", value) and re.fullmatch(r"[-+]?[0-9][0-9a-fA-FxXoObB_]*", value):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{short_repr(node.value)} reads as a hex, octal, binary or _-grouped number in YAML 1.1; "
                "write it in decimal",
            )
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        self._no_base_60(node)
        return super().construct_yaml_float(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def _load_yaml(text: str):
    """Parse config YAML; a value no constructor can build (``!!int x``, a 13th month, 5,000 digits) is a
    :class:`yaml.YAMLError` like any other parse error."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
        raise yaml.constructor.ConstructorError(None, None, f"a value YAML cannot build: {str(exc)[:80]}") from None


def _yaml_value(raw: str, key: str):
    try:
        return _load_yaml(raw)
    except (yaml.YAMLError, RecursionError) as exc:
        why = f" ({exc.problem})" if isinstance(exc, yaml.constructor.ConstructorError) and exc.problem else ""
        raise UserError(f"--set {key}: {raw[:40]!r} is not a valid value{why}") from None


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


# A config is a few hundred values: far beyond that it is hostile (YAML aliases nested nine deep expand a
# 300-byte file to 10^9 items) or a mistake, refused before anything walks or prints it.
MAX_CONFIG_ITEMS = 100_000
MAX_CONFIG_BYTES = 1 << 20


def _bound(x: float) -> str:
    """A range bound as a person writes it: 4294967295 in full, 0.5 as is."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _check_items(data) -> None:
    """Refuse a config of more than MAX_CONFIG_ITEMS values, counting an alias each time it is used (YAML's
    own aliases, merges and cycles are counted earlier, on the composed graph: _StrictLoader)."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_ITEMS:
            raise UserError(f"the config holds more than {MAX_CONFIG_ITEMS:,} values; a config is a few hundred")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def from_dict(data: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from its saved dict (``config.json`` in a run)."""
    _check_items(data)
    try:
        return _build(RunConfig, data, "")
    except RecursionError:  # lists nested hundreds deep: a hostile file, not a config
        raise UserError("the config is nested too deeply to be a config; replace the file") from None


def read_config(path: Path, what: str) -> RunConfig:
    """The :class:`RunConfig` saved at ``path`` (a run's or a bundle's ``config.json``); a bad one is one line
    that names the file."""
    data = read_json(path, what, expect=dict)
    try:
        return from_dict(data)
    except UserError as exc:
        raise UserError(f"{what} {path}: {exc}; the file was edited or damaged, restore it") from None


# An evaluation grid is a plot's x axis: beyond this many points a range is a typo (a step of 1e-9), not a grid.
MAX_RANGE_POINTS = 1000


def parse_snr_range(text: str, option: str) -> list[float]:
    """:func:`parse_range` of SNRs in dB (Es/N0), each finite and within +-:data:`SNR_LIMIT_DB` (``option``
    names the range in messages)."""
    return parse_range(text, check=lambda v: check_snr_db(v, option))


def parse_range(
    text: str, option: str = "", example: str = "-10:24:2", check: typing.Callable[[float], object] | None = None
) -> list[float]:
    """Parse ``start:stop:step`` (inclusive) or ``a,b,c`` into floats, e.g. ``-10:24:2``.

    Args:
        text: The range as given.
        option: The option it came from, for messages (``--lambda``); empty for SNR ranges.
        example: A range of that option's kind, for messages.
        check: Raises for a value out of bounds: applied to the ends (and every listed value) before the
            points are counted, so that -1000:0:1 is refused for -1000, not for its thousand points.
    """
    what = f"{option} range" if option else "range"
    malformed = f"malformed {what} {text!r}; use start:stop:step (e.g. {example}) or a,b,c"
    if not isinstance(text, str) or not text.isascii():  # float() reads other scripts' digits; nothing else does
        raise UserError(malformed)
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            if not all(math.isfinite(p) for p in parts):
                raise UserError(f"{what} {text!r} holds a value that is not a finite number (e.g. {example})")
            start, stop, step = parts
            for end in (start, stop) if check else ():
                check(end)
            if step <= 0 or stop < start:
                raise UserError(f"{what} {text!r} needs a positive step and stop >= start (e.g. {example})")
            span = (stop - start) / step  # inf for -1e308:1e308:1: as many points as too many
            if not span < MAX_RANGE_POINTS:
                raise UserError(
                    f"{what} {text!r} has more than {MAX_RANGE_POINTS:,} points; use a larger step or a smaller span"
                )
            n = int(round(span)) + 1
            values = [round(start + i * step, 6) + 0.0 for i in range(n) if start + i * step <= stop + 1e-9]
            if len(set(values)) != len(values):  # a step under the 6 decimals kept: 0:1e-7:1e-8
                raise UserError(f"{what} {text!r} has a step below 0.000001; use a larger step")
            return values
        values = [float(p) + 0.0 for p in text.split(",")]  # + 0.0: -0 is 0 (a "-0" key, -0.0 in the CSV)
        if not all(math.isfinite(v) for v in values):  # an empty item ("1,,2", "") is a typo: refused above
            raise UserError(f"{what} {text!r} holds a value that is not a finite number (e.g. {example})")
        for v in values if check else ():
            check(v)
        if len(values) > MAX_RANGE_POINTS:
            raise UserError(f"{len(values):,} values, more than {MAX_RANGE_POINTS:,}; give fewer")
        if len(set(values)) != len(values):
            raise UserError(f"{what} {text!r} repeats a value; give each once")
        return values
    except ValueError:
        raise UserError(malformed) from None
