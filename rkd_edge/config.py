"""Typed configuration: dataclasses, YAML presets, dotted CLI overrides, saved next to every artefact.

Training stages are declared as data (:class:`StageConfig`): each has its own losses, optimiser
settings and the list of modules it trains; everything else is frozen during that stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from rkd_edge.errors import UserError


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


@dataclass
class SearchConfig:
    epochs: int = 10
    warmup_epochs: int = 2
    layers: int = 3
    steps: int = 3
    init_channels: int = 8
    stem_multiplier: int = 2
    stem_stride: int = 1
    feature_dim: int = 64
    lambdas: list[float] = field(default_factory=lambda: [0.5])
    cost: str = "params"  # params | flops | latency
    latency_table: str | None = None
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


@dataclass
class CodecConfig:
    name: str = "cat"
    max_symbols: int = 16
    symbols: list[int] = field(default_factory=lambda: [4, 8, 16])
    dim: int = 64
    depth: int = 2
    heads: int = 4
    csi: str = "zf"  # zf | mmse | decoder (fading channels)
    rayleigh_mode: str = "block"
    rician_k: float = 3.0


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
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def validate(cfg: RunConfig) -> RunConfig:
    """Check names against the registries before any work starts (one clear line if wrong)."""
    from rkd_edge.channel import CHANNELS
    from rkd_edge.codec import CODECS
    from rkd_edge.methods import METHOD_STAGES
    from rkd_edge.nas.cost import METRICS

    checks = [
        ("method", cfg.method, METHOD_STAGES),
        ("search.cost", cfg.search.cost, METRICS),
        ("codec.name", cfg.codec.name, CODECS),
    ]
    checks += [("stage2.channels", c, CHANNELS) for c in cfg.stage2.channels]
    amp_modes = ("off", "bf16")
    checks += [(f"{k}.amp", getattr(cfg, k).amp, amp_modes) for k in ("teacher", "search", "stage1", "stage2")]
    checks += [("evaluate.channels", c, CHANNELS) for c in cfg.evaluate.channels]
    for key, value, allowed in checks:
        if value not in allowed:
            raise UserError(f"{key}: unknown value {value!r}; choose one of {', '.join(allowed)}")
    bad = [k for k in cfg.codec.symbols if not 1 <= k <= cfg.codec.max_symbols]
    if bad:
        raise UserError(f"codec.symbols {bad} outside 1..{cfg.codec.max_symbols} (codec.max_symbols)")
    if not cfg.search.lambdas or any(v < 0 for v in cfg.search.lambdas):
        raise UserError("search.lambdas must be a non-empty list of values >= 0")
    parse_range(cfg.evaluate.snr_db)
    return cfg


def _build(cls, data: dict, where: str):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with one clear line."""
    if not isinstance(data, dict):
        raise UserError(f"config section {where or 'root'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(
            f"unknown config key {where + '.' if where else ''}{sorted(unknown)[0]}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        kwargs[key] = _build(hint, value, f"{where}.{key}".strip(".")) if dataclasses.is_dataclass(hint) else value
    base = cls()
    for key, value in kwargs.items():
        setattr(base, key, value)
    return base


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
        data = yaml.safe_load(resources.files("rkd_edge.presets").joinpath(f"{preset}.yaml").read_text())
    if file:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"config file not found: {file}")
        try:
            _merge(data, yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as exc:
            raise UserError(f"config file {file} is not valid YAML ({str(exc).splitlines()[0]})") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"override {item!r} must look like section.key=value")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    try:
        return _build(RunConfig, data, "")
    except TypeError as exc:
        raise UserError(f"config value of the wrong type ({exc}); check your --set values") from None


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def from_dict(data: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from its saved dict (``config.json`` in a run)."""
    return _build(RunConfig, data, "")


def parse_range(text: str) -> list[float]:
    """Parse ``start:stop:step`` (inclusive) or ``a,b,c`` into floats, e.g. ``-10:24:2``."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            start, stop, step = parts
            n = int(round((stop - start) / step)) + 1
            return [round(start + i * step, 6) for i in range(n) if start + i * step <= stop + 1e-9]
        values = [float(p) for p in text.split(",") if p.strip()]
        if not values:
            raise ValueError
        return values
    except ValueError:
        raise UserError(f"malformed range {text!r}; use start:stop:step (e.g. -10:24:2) or a,b,c") from None
