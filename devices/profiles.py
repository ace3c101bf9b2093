"""Jetson device profiles as data: what the toolkit needs to build, export and estimate for each module.

The figures live in ``profiles.yaml`` next to this module; :func:`load_profiles` reads them, checks every
field's presence and type, and computes the derived figures. Every figure carries the public page it was
read from (``sources[field]``). A figure whose page could not be found is kept only where the toolkit needs
a number, and its source says ``unverified: ...`` instead of a URL (``rkd-edge devices show NAME`` prints
both). Derived figures say how they were derived.

Dense throughputs: NVIDIA quotes Orin and Thor in *sparse* INT8 TOPS (and, for Orin NX / AGX Orin, with
the DLAs added in). The estimator needs the GPU's dense rate, so ``fp16_dense_tflops`` and
``int8_dense_tops`` are derived from tensor cores x clock x ops per clock (Volta: 128 FP16 / 256 INT8
ops per tensor core per clock; Ampere GA10B: 512 / 1024), checked against a published GPU figure where
one was found (AGX Xavier 11 TFLOPS FP16; AGX Orin 64 GB 170 sparse INT8 TOPS on the GPU = 85 dense).
A profile that leaves a derived figure out of the data gets it from the rules in ``_DERIVED`` below.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from rkd_edge.errors import UserError, short_repr

DATA = Path(__file__).with_name("profiles.yaml")


@dataclass(frozen=True)
class DeviceProfile:
    """One Jetson module. Units: GB, GB/s, GHz, TFLOPS / TOPS (dense, GPU only), W.

    ``fast_int8`` is False where TensorRT has no fast INT8 path (Maxwell Nano, Pascal TX2 with compute
    capability 6.2): INT8 is refused there. ``max_onnx_opset`` is the highest opset that the module's
    TensorRT ONNX parser accepts.
    """

    key: str
    name: str
    gpu_arch: str
    compute_capability: str
    fast_int8: bool
    jetpack: str
    tensorrt: str
    max_onnx_opset: int
    memory_gb: tuple[int, ...]
    sm_count: int
    cuda_cores: int
    tensor_cores: int
    gpu_clock_ghz: float
    memory_bandwidth_gbs: float
    fp32_tflops: float
    fp16_dense_tflops: float
    int8_dense_tops: float | None
    cpu_cores: int
    cpu: str
    power_modes: tuple[str, ...]
    l4t: str
    match: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    # Per-kernel launch cost used by the estimate; not a published figure (see devices/estimate.py).
    launch_overhead_us: float = 10.0
    # Optional: bandwidth for per-node traffic up to ``cache_mb`` (measured for the host; None on Jetsons,
    # where no cache figure was found and the DRAM bandwidth is used for every node).
    cache_bandwidth_gbs: float | None = None
    cache_mb: float = 0.0

    def figures(self) -> dict:
        """All fields with their sources, for ``--json`` and the ``show`` table."""
        d = asdict(self)
        src = d.pop("sources")

        def source(k: str, v) -> str:  # every figure says where it is from, or that nothing says so
            if k in src or k in ("key", "name", "match"):  # the last three name the profile, not a figure
                return src.get(k, "")
            if v in (None, 0):
                return "unverified: none recorded (the estimate leaves it out or uses its fallback)"
            return "unverified: no source recorded"

        return {k: {"value": v, "source": source(k, v)} for k, v in d.items()}


# Derivation rules, by architecture: CUDA cores per SM, and (FP16, INT8) ops per tensor core per clock.
_CORES_PER_SM = {"Ampere": 128}
_TENSOR_OPS = {"Volta": (128, 256), "Ampere": (512, 1024)}


def _per_arch(table: dict, f: dict):
    if f["gpu_arch"] not in table:
        raise KeyError(f"a per-SM / per-tensor-core rate for {f['gpu_arch']}")
    return table[f["gpu_arch"]]


def _cuda_cores(f: dict) -> int:
    return f["sm_count"] * _per_arch(_CORES_PER_SM, f)


def _fp32_tflops(f: dict) -> float:
    """CUDA cores x 2 FLOP (FMA) x clock, to 3 significant figures."""
    return float(f"{f['cuda_cores'] * 2 * f['gpu_clock_ghz'] / 1e3:.3g}")


def _tensor_rate(f: dict, which: int) -> float:
    """Tensor cores x clock x ops per core per clock (``which``: 0 FP16, 1 INT8), to 2 decimals."""
    return round(f["tensor_cores"] * _per_arch(_TENSOR_OPS, f)[which] * f["gpu_clock_ghz"] / 1e3, 2)


_DERIVED_TC = "derived: tensor cores x GPU clock x ops/clock (module docstring)"
# Figures a profile may leave out of the data: the rule that computes it and its default source, in the
# order they run (fp32_tflops uses cuda_cores).
_DERIVED: dict[str, tuple[Callable[[dict], float], str]] = {
    "cuda_cores": (_cuda_cores, "derived: SMs x 128"),
    "fp32_tflops": (_fp32_tflops, "derived: CUDA cores x 2 FLOP (FMA) x GPU clock"),
    "fp16_dense_tflops": (lambda f: _tensor_rate(f, 0), _DERIVED_TC),
    "int8_dense_tops": (lambda f: _tensor_rate(f, 1), _DERIVED_TC),
}
# Partial profiles a profile names, and the section of the data that holds them.
_BASES = {"release": "jetpack_releases", "family": "families"}
# Fields that are not figures in the data: the key is the profile's name there, sources sit apart.
_NOT_FIGURES = ("key", "sources")


def _check_type(value, hint, fail: Callable[[str], None]):
    """``value`` as the field type ``hint`` wants (YAML lists -> tuples, ints -> floats), else ``fail``."""
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list):
            return tuple(_check_type(v, typing.get_args(hint)[0], fail) for v in value)
    elif typing.get_origin(hint) is dict:
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return value
    elif hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    fail(f"expected {hint.__name__ if type(hint) is type else hint}, got {type(value).__name__} {value!r}")


def _build(key: str, entry, data: dict, path: Path) -> DeviceProfile:
    """One profile from the defaults, its release and family, and its own entry (a later one wins)."""

    def fail(name: str | None, problem: str):
        raise ValueError(f"{path.name}: profile {key!r}" + (f", field {name!r}" if name else "") + f": {problem}")

    if not isinstance(entry, dict):
        fail(None, f"expected a mapping of fields, got {entry!r}")
    hints = typing.get_type_hints(DeviceProfile)
    parts = [data["defaults"]]
    for ref, section in _BASES.items():
        if ref in entry:
            base = data[section].get(entry[ref]) if isinstance(entry[ref], str) else None
            if not isinstance(base, dict):
                fail(ref, f"{entry[ref]!r} is not a mapping under {section}:")
            parts.append(base)
    parts.append(entry)
    figures: dict = {}
    sources: dict = {}
    for part in parts:
        figures.update({k: v for k, v in part.items() if k not in _BASES and k != "sources"})
        sources.update(_check_type(part.get("sources", {}), hints["sources"], lambda p: fail("sources", p)))
    for name, value in figures.items():
        if name not in hints or name in _NOT_FIGURES:
            fail(name, "not a DeviceProfile figure")
        figures[name] = _check_type(value, hints[name], lambda p, name=name: fail(name, p))
    for name, (rule, source) in _DERIVED.items():
        if name not in figures:
            try:
                figures[name] = rule(figures)
            except KeyError as e:
                fail(name, f"missing, and not derivable without {e.args[0]}")
            sources.setdefault(name, source)
    for f in fields(DeviceProfile):
        if f.name not in figures and f.name not in _NOT_FIGURES and f.default is MISSING:
            fail(f.name, "missing")

    def page(m: re.Match, name: str) -> str:
        if m[1] not in data["pages"]:
            fail(name, f"its source names {{{m[1]}}}, which is not under pages:")
        return data["pages"][m[1]]

    for name, text in sources.items():
        if name not in hints or name in _NOT_FIGURES:
            fail(name, "has a source but is not a DeviceProfile figure")
        sources[name] = re.sub(r"\{(\w+)\}", lambda m, name=name: page(m, name), text)
    return DeviceProfile(key=key, sources=sources, **figures)


def load_profiles(path: Path = DATA) -> dict[str, DeviceProfile]:
    """Every profile in the data file, in the file's order.

    Args:
        path: The YAML file (``profiles.yaml`` next to this module).

    Returns:
        Profiles by key.

    Raises:
        ValueError: The file is malformed (a developer error); the message names the profile and field.
    """
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ValueError(f"{path.name}: expected a mapping with a 'profiles:' mapping")
    for section in ("pages", "defaults", *_BASES.values()):
        if not isinstance(data.setdefault(section, {}), dict):
            raise ValueError(f"{path.name}: {section}: expected a mapping, got {data[section]!r}")
    for name, url in data["pages"].items():
        if not isinstance(url, str):
            raise ValueError(f"{path.name}: pages: {name}: expected a string, got {url!r}")
    return {key: _build(key, entry, data, path) for key, entry in data["profiles"].items()}


PROFILES: dict[str, DeviceProfile] = load_profiles()

# Names people type for the families; each resolves to one profile.
ALIASES = {
    "orin-nano": "orin-nano-8gb",
    "orin-nx": "orin-nx-16gb",
    "agx-orin": "agx-orin-64gb",
    "t5000": "thor",
    "agx-thor": "thor",
    "xavier": "agx-xavier",
}

# Device-tree model strings name the developer kit; the most specific patterns are tried first.
_MATCH_ORDER = [
    "thor",
    "agx-orin-32gb",
    "agx-orin-64gb",
    "orin-nx-8gb",
    "orin-nx-16gb",
    "orin-nano-4gb",
    "orin-nano-8gb",
    "agx-xavier",
    "xavier-nx",
    "tx2",
    "nano",
]


def match_profile(model: str) -> DeviceProfile | None:
    """Profile for a device-tree model string such as 'NVIDIA Jetson AGX Orin Developer Kit'.

    Developer-kit strings do not name the memory size; those resolve to the family's larger module
    (AGX Orin -> 64 GB, Orin NX -> 16 GB, Orin Nano -> 8 GB), which is what the developer kits carry.
    """
    m = " ".join(model.lower().replace("\x00", " ").split())
    for key in _MATCH_ORDER:
        if any(pat in m for pat in PROFILES[key].match):
            return PROFILES[key]
    return None


def get_profile(name: str) -> DeviceProfile:
    """Profile by key or alias; an unknown name is a :class:`~rkd_edge.errors.UserError` naming the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PROFILES:
        raise UserError(
            f"unknown device {short_repr(name)}; known: {', '.join(PROFILES)} (estimates also take 'host', "
            "measured now)"
        )
    return PROFILES[key]
