"""Bundle manifests: format, hashes, and verification (numpy-free, torch-free)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from rkd_edge.channel_ids import CHANNEL_IDS, CSI_MODES, FADING_MODES, fading_kwargs, same_ids
from rkd_edge.errors import UserError, short_repr
from rkd_edge.io import MAX_MARKER_BYTES, TOOL_MARKER, json_digest, read_text, sha256_bytes, sha256_file, strict_json
from rkd_edge.limits import IMAGE_SIZE_RANGE, is_whole

MANIFEST = "manifest.json"
FORMAT = "rkd-edge/bundle@1"


class BundleError(Exception):
    """A bundle that cannot be trusted: missing, tampered or truncated files, or a bad manifest.

    It is a user error: the CLI prints it as one line with exit code 2.
    """

    exit_code = 2


def load_manifest(root: str | Path) -> dict:
    """Read and sanity-check ``manifest.json`` (no hash check)."""
    path = Path(root) / MANIFEST
    if path.is_symlink():  # what is verified must be what lies in the bundle
        raise BundleError(f"{path} is a symbolic link; a bundle's manifest is a plain file: re-export the bundle")
    if not path.is_file():
        raise BundleError(f"no {MANIFEST} in {root}; export a bundle with rkd-edge export RUN --out DIR")
    if path.stat().st_size > MAX_MANIFEST_BYTES:  # a few kB when exported; parsed copies multiply a big one
        raise BundleError(f"{path} has {path.stat().st_size:,} bytes, more than a manifest holds; re-export the bundle")
    try:
        manifest = strict_json(path.read_text())
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, a key twice, NaN, too deep
        why = str(exc).split(":")[0][:80] if isinstance(exc, ValueError) else "nested too deeply"
        raise BundleError(f"{path} is not valid JSON ({why}); re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest; re-export the bundle")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT}; re-export it")
    check_manifest(manifest, path)
    return manifest


REQUIRED = {
    "models": dict,
    "files": dict,
    "normalisation": dict,
    "symbols": dict,
    "classes": list,
    "channel_types": list,
    "precisions": list,
}
# The other keys export writes (and bench --select, export trt add), with the types they must have; a key
# not here or in REQUIRED is not the toolkit's.
OPTIONAL = {
    "format": str,
    "created": str,
    "dataset": str,
    "opset": int,
    "default_precision": (str, dict),
    "source_run": dict,
    "snr_db": dict,
    "channel": dict,
    "channel_ids": dict,
    "parity": dict,
    "parity_tolerance": (int, float),
    "calibration": dict,
    "int8_report": dict,
    "versions": dict,
    "tensorrt": dict,
    "selection": dict,
    "target": dict,
}
MAX_MANIFEST_BYTES = 4 << 20
MODELS = ("encoder", "tx", "rx")
# Each model's graph inputs and outputs (the rx of a codec with CSI at the decoder also reads ``csi``).
INTERFACE = {
    "encoder": ({"image"}, {"features"}),
    "tx": ({"features", "snr_db", "k", "channel"}, {"symbols", "mask"}),
    "transmitter": ({"image", "snr_db", "k", "channel"}, {"symbols", "mask"}),
    "rx": ({"symbols", "mask", "snr_db", "channel"}, {"logits"}),
}
PRECISIONS = ("fp32", "fp16", "int8")
# The ONNX opset models are exported at: the codec's LayerNormalization needs 17 (DESIGN.md section 5).
DEFAULT_OPSET = 17
MAX_IMAGE_SIZE = IMAGE_SIZE_RANGE[1]
MAX_CLASSES = 100_000
# Bundles exported since the fused graph existed also hold ``transmitter`` (encoder + tx in one graph).
OPTIONAL_MODELS = ("transmitter",)


def _fail(path: Path, what: str) -> BundleError:
    return BundleError(f"{path}: {what}; re-export the bundle")


def check_manifest(m: dict, path: Path) -> None:
    """Check the manifest's structure and its internal consistency (the files are checked by
    :func:`verify_bundle`, the graphs' inputs and outputs when a runtime loads them)."""
    for key, typ in REQUIRED.items():
        if not isinstance(m.get(key), typ):
            raise _fail(path, f"{key!r} is missing or not a {typ.__name__}")
    if unknown := sorted(set(m) - set(REQUIRED) - set(OPTIONAL)):
        raise _fail(path, f"{short_repr(unknown[0])} is not a manifest key rkd-edge writes")
    for key, typ in OPTIONAL.items():
        value = m.get(key)
        if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            raise _fail(path, f"{key!r} has the wrong type ({type(value).__name__})")
    if unknown := sorted(set(m["models"]) - set(MODELS) - set(OPTIONAL_MODELS)):
        raise _fail(path, f"model {short_repr(unknown[0])} is not one of {', '.join((*MODELS, *OPTIONAL_MODELS))}")
    files = m["files"]
    if not files:
        raise _fail(path, "'files' lists no file (a manifest must hash every file the runtime loads)")
    precs = m["precisions"]
    if not precs or not all(p in PRECISIONS for p in precs) or len(set(precs)) != len(precs):
        raise _fail(path, f"precisions {short_repr(precs)} must list distinct ones of {', '.join(PRECISIONS)}")
    classes = m["classes"]
    ok = 0 < len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)
    if not ok or len(set(classes)) != len(classes):
        raise _fail(path, f"classes must list 1 to {MAX_CLASSES:,} distinct names")
    default = m.get("default_precision", "fp32")
    if isinstance(default, dict) and not set(default) <= set(MODELS):
        raise _fail(path, f"default_precision {short_repr(default)} names a model other than {', '.join(MODELS)}")
    chosen = default.values() if isinstance(default, dict) else [default]
    if not all(isinstance(p, str) and p in m["precisions"] for p in chosen):
        raise _fail(path, f"default_precision {default!r} is not among the bundle's precisions {m['precisions']}")
    _check_records(path, m)
    for rel, rec in files.items():
        ok = isinstance(rec, dict) and isinstance(rec.get("sha256"), str) and isinstance(rec.get("bytes"), int)
        if not ok or rel.startswith("/") or ".." in Path(rel).parts:
            raise _fail(path, f"file entry {rel!r} needs a relative path, 'sha256' and 'bytes'")
    for name in (*MODELS, *(n for n in OPTIONAL_MODELS if n in m["models"])):
        variants = m["models"].get(name)
        if not isinstance(variants, dict) or not variants:
            raise _fail(path, f"no {name} model")
        for prec, rec in variants.items():
            if prec not in precs:
                raise _fail(path, f"the {name} model has a {short_repr(prec)} form, not among precisions {precs}")
            _check_model(path, f"{prec} {name}", rec, files)
            _check_interface(path, name, prec, rec)
    # The position in channel_types is the id fed to the tx and rx graphs: a manifest that lists the
    # types otherwise than the stable table would give each channel another's conditioning.
    types = m["channel_types"]
    own = {n: i for i, n in enumerate(types)} if all(isinstance(n, str) for n in types) else None
    table = m.get("channel_ids", own)
    if own is None or table != own or not all(is_whole(i) for i in table.values()) or not same_ids(table):
        raise _fail(path, f"channel_types {short_repr(types)} do not match the stable channel ids {CHANNEL_IDS}")
    sym = m["symbols"]
    k_max, k_set = sym.get("max"), sym.get("set")
    if not is_whole(k_max) or k_max < 1 or not isinstance(k_set, list) or not k_set:
        raise _fail(path, "'symbols' needs 'max' (a positive integer) and 'set' (a list)")
    if any(not is_whole(k) or not 1 <= k <= k_max for k in k_set) or len(set(k_set)) != len(k_set):
        raise _fail(path, f"symbols.set {short_repr(k_set)} must list distinct lengths within 1..{k_max}")
    _check_channel(path, m.get("channel"), sym)
    for prec, rec in m["models"]["rx"].items():
        logits = _declared_shape(rec, "outputs", "logits")
        if logits and is_whole(logits[-1]) and logits[-1] != len(classes):
            raise _fail(path, f"the {prec} rx model scores {logits[-1]} classes but 'classes' names {len(classes)}")
    senders = [(name, prec, rec) for name in ("tx", "transmitter") for prec, rec in m["models"].get(name, {}).items()]
    for name, prec, rec in senders:
        shape = _declared_shape(rec, "outputs", "symbols")
        if len(shape) == 3 and is_whole(shape[1]) and shape[1] != k_max:
            raise _fail(path, f"symbols.max is {k_max} but the {prec} {name} model sends {shape[1]} symbols")
    norm = m["normalisation"]
    for key in ("mean", "std", "size", "channels"):
        if key not in norm:
            raise _fail(path, f"normalisation lacks {key!r}")
    c, size = norm["channels"], norm["size"]
    if not (is_whole(c) and 1 <= c <= 4 and is_whole(size) and 1 <= size <= MAX_IMAGE_SIZE):
        raise _fail(path, f"normalisation.size must be 1..{MAX_IMAGE_SIZE} and .channels 1..4")
    for key in ("mean", "std"):
        v = norm[key]
        # |x| <= 1e6: within float32 whatever it is divided by (a std of 1e-300 made NaN symbols).
        if not isinstance(v, list) or len(v) != c or not all(_finite_number(x) and abs(x) <= 1e6 for x in v):
            raise _fail(path, f"normalisation.{key} must list {c} numbers within +-1e6, got {short_repr(v)}")
    if min(norm["std"]) < 1e-6:
        raise _fail(path, f"normalisation.std must be at least 1e-6 (inputs are divided by it), got {norm['std']}")
    for name in ("encoder", "transmitter"):
        for prec, rec in m["models"].get(name, {}).items():
            image = _declared_shape(rec, "inputs", "image")
            if len(image) != 4 or image[1:] != [c, size, size]:
                raise _fail(
                    path, f"normalisation gives {c}x{size}x{size} images but the {prec} {name} model reads {image}"
                )
    _check_engines(path, m.get("tensorrt"))


def _check_records(path: Path, m: dict) -> None:
    """The descriptive records a reader prints or compares: ``source_run``, ``snr_db``, ``opset``,
    ``parity_tolerance``, ``versions`` and a device's ``selection`` (``{fingerprint: {model: precision}}``)."""
    run = m.get("source_run") or {}
    if not all(
        isinstance(run.get(k), (str, type(None))) for k in ("path", "method", "config_sha256", "weights_sha256")
    ):
        raise _fail(path, "'source_run' must be a record {path, method, config_sha256, weights_sha256} of strings")
    snr = (m.get("snr_db") or {}).get("trained_range", [])
    if not isinstance(snr, list) or not all(_finite_number(x) for x in snr):
        raise _fail(path, f"snr_db.trained_range must list SNRs in dB, got {short_repr(snr)}")
    if not 1 <= m.get("opset", 1) <= 1000:
        raise _fail(path, f"opset {m['opset']} is not an ONNX opset")
    if not 0 <= m.get("parity_tolerance", 0) <= 1:
        raise _fail(path, f"parity_tolerance {m['parity_tolerance']} must be from 0 to 1")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in (m.get("versions") or {}).items()):
        raise _fail(path, "'versions' must map package names to version strings")
    for fp, choice in (m.get("selection") or {}).items():
        ok = isinstance(choice, dict) and set(choice) <= set(MODELS)
        if not ok or not all(isinstance(p, str) and p in m["precisions"] for p in choice.values()):
            raise _fail(path, f"selection {short_repr(fp)} must map models to the bundle's precisions")


def _check_model(path: Path, what: str, rec, files: dict) -> None:
    """One model variant: its files (the ONNX Runtime CPU form too) listed with their hashes, and its
    declared inputs/outputs as ``[{"name": str, "dtype": str, "shape": [int | str, ...]}]``."""
    if not isinstance(rec, dict) or not _listed(rec.get("file"), files):
        raise _fail(path, f"the {what} model's file is not listed (with its hash) in 'files'")
    cpu_form = rec.get("onnxruntime_cpu")
    if cpu_form is not None and not (isinstance(cpu_form, dict) and _listed(cpu_form.get("file"), files)):
        raise _fail(path, f"the {what} model's onnxruntime_cpu file is not listed (with its hash) in 'files'")
    for kind in ("inputs", "outputs"):
        metas = rec.get(kind)
        ok = isinstance(metas, list) and all(
            isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and isinstance(t.get("dtype"), str)
            and isinstance(t.get("shape"), list)
            and all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in t["shape"])
            for t in metas
        )
        if not ok:
            raise _fail(path, f"the {what} model's {kind} must list {{name, dtype, shape}} records")


def _check_interface(path: Path, name: str, prec: str, rec: dict) -> None:
    """The declared input and output names are the model's (a graph swapped for another model's is refused
    when the runtime checks the loaded graph against these declarations)."""
    ins, outs = INTERFACE[name]
    got_in, got_out = {t["name"] for t in rec["inputs"]}, {t["name"] for t in rec["outputs"]}
    if not (got_in == ins or (name == "rx" and got_in == ins | {"csi"})) or got_out != outs:
        raise _fail(path, f"the {prec} {name} model declares inputs {sorted(got_in)} and outputs {sorted(got_out)}")


def dims_agree(declared, actual) -> bool:
    """Dimensions agree where both are fixed integers (a named or unknown dimension is dynamic)."""
    if len(declared) != len(actual):
        return False
    return all(not (isinstance(d, int) and isinstance(a, int)) or d == a for d, a in zip(declared, actual, strict=True))


def _declared_shape(rec: dict, kind: str, name: str) -> list:
    """The shape a checked model record (:func:`_check_model`, :func:`_check_interface`) declares for its
    input or output ``name``."""
    return next(t["shape"] for t in rec[kind] if t["name"] == name)


def _check_channel(path: Path, ch, sym: dict) -> None:
    """``channel``: how the fading channels were trained; CSI at the decoder exactly when the rx reads it."""
    if ch is None:
        return
    ok = (
        isinstance(ch, dict)
        and ch.get("rayleigh_mode", "block") in FADING_MODES
        and ch.get("csi", "zf") in CSI_MODES
        and (ch.get("rician_k") is None or (_finite_number(ch["rician_k"]) and 0 <= ch["rician_k"] <= 1e6))
    )
    if not ok:
        raise _fail(path, f"'channel' needs rayleigh_mode in {FADING_MODES}, csi in {CSI_MODES}, rician_k >= 0")
    if (ch.get("csi") == "decoder") != bool(sym.get("csi_input", False)):
        raise _fail(path, f"channel.csi is {ch.get('csi')!r} but symbols.csi_input is {sym.get('csi_input')!r}")


def _listed(rel, files: dict) -> bool:
    return isinstance(rel, str) and rel in files


def _check_engines(path: Path, trt) -> None:
    """``tensorrt.engines.{model}.{precision}``: a file name in ``trt/`` and its sha256 (checked on load)."""
    if trt is None:
        return
    engines = trt.get("engines") if isinstance(trt, dict) else None
    if not isinstance(engines, dict) or not all(isinstance(v, dict) for v in engines.values()):
        raise _fail(path, "'tensorrt' needs 'engines': {model: {precision: record}}")
    for model, precs in engines.items():
        for prec, rec in precs.items():
            name = rec.get("file") if isinstance(rec, dict) else None
            plain = isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            if not plain or not isinstance(rec.get("sha256"), str):
                raise _fail(path, f"the TensorRT {prec} {model} engine needs a file name in trt/ and its 'sha256'")


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def channel_kwargs(root: Path, manifest: dict) -> dict:
    """The fading channels' settings a bundle was trained with: ``{"mode", "csi", "k_factor"}``.

    Bundles record them in ``manifest["channel"]``; those exported before ``rician_k`` was recorded there
    take it from the run config saved beside the models (3.0, the default, when neither has it).
    """
    ch = manifest.get("channel") or {}
    k_factor = ch.get("rician_k")
    if k_factor is None and (root / "config.json").is_file():
        try:
            k_factor = json.loads(read_text(root / "config.json", "bundle config")).get("codec", {}).get("rician_k")
        except (UserError, ValueError, AttributeError, RecursionError):
            k_factor = None
    recorded = {key: ch[key] for key in ("rayleigh_mode", "csi") if key in ch}
    if _finite_number(k_factor):
        recorded["rician_k"] = float(k_factor)
    return fading_kwargs(**recorded)


# Manifest keys that a device may rewrite after export (the measured precision selection per device
# fingerprint): they do not change what the bundle computes, so they are left out of its id.
DEVICE_LOCAL_KEYS = ("selection",)


def bundle_id(manifest: dict) -> str:
    """16 hex digits identifying a manifest's content (key-sorted compact JSON, sha256), leaving out
    :data:`DEVICE_LOCAL_KEYS` so that a bench selection on one device keeps the bundle's id."""
    content = {k: v for k, v in manifest.items() if k not in DEVICE_LOCAL_KEYS}
    return json_digest(content, compact=True)[:16]


def _check_file(root: Path, rel: str, rec: dict, fix: str) -> Path:
    """``root/rel`` if it is a plain file (no link anywhere on the way: what is verified is what is loaded)
    with the record's size (where it has one) and sha256; else one line ending in ``fix``."""
    path = root / rel
    parts = Path(rel).parts
    try:
        linked = any(root.joinpath(*parts[:i]).is_symlink() for i in range(1, len(parts) + 1))
        plain = path.is_file()
    except OSError:  # a name too long for the file system, say
        linked, plain = False, False
    if linked or not plain:
        raise BundleError(f"bundle file missing or not a plain file: {short_repr(rel)}; {fix}")
    if "bytes" in rec and path.stat().st_size != rec["bytes"]:
        raise BundleError(
            f"bundle file {rel} has {path.stat().st_size} bytes, the manifest says "
            f"{rec['bytes']} (truncated or replaced); {fix}"
        )
    if sha256_file(path) != rec["sha256"]:
        raise BundleError(f"bundle file {rel} does not match its sha256 in the manifest (tampered or corrupt); {fix}")
    return path


def verify_bundle(root: str | Path, manifest: dict | None = None) -> dict:
    """Check every listed file's size and sha256; refuse the bundle on any mismatch."""
    root = Path(root)
    manifest = manifest or load_manifest(root)
    for rel, rec in manifest["files"].items():
        _check_file(root, rel, rec, "re-export the bundle")
    _check_unlisted(root, manifest["files"])
    _check_recorded_id(root, manifest)
    return manifest


def _check_recorded_id(root: Path, manifest: dict) -> None:
    """Refuse a manifest edited after rkd-edge wrote it: the bundle's marker records the id of the manifest
    export (or export trt) wrote; an edit of its normalisation or classes would give wrong numbers silently.
    A bundle without the record (made by hand, or before it was kept) is not checked; a marker that is there
    but not a plain file (a FIFO, a folder, a link) is refused: it would skip the check."""
    marker = root / TOOL_MARKER
    if not (marker.exists() or marker.is_symlink()):
        return
    if not marker.is_file() or marker.is_symlink():
        raise BundleError(f"{marker} is not a plain file, so the manifest cannot be checked; re-export the bundle")
    try:
        recorded = strict_json(read_text(marker, "marker", MAX_MARKER_BYTES)).get("bundle_id")
    except (UserError, ValueError, AttributeError, RecursionError):
        raise BundleError(f"{marker} is unreadable; re-export the bundle") from None
    if recorded is not None and recorded != bundle_id(manifest):
        raise BundleError(
            f"{root / MANIFEST} was changed after rkd-edge wrote it (its id is {bundle_id(manifest)}, the bundle "
            f"was written as {recorded}); re-export the bundle"
        )


def verified_engine(root: Path, rec: dict) -> Path:
    """The TensorRT engine a manifest's ``tensorrt.engines`` record names, after its sha256 is checked
    (engines are built on the device after export, so they are not in ``files``)."""
    return _check_file(root, _engine_rel(rec), rec, "rebuild it with rkd-edge export trt")


def _engine_rel(rec: dict) -> str:
    """Where a ``tensorrt.engines`` record's engine lies in the bundle."""
    return f"trt/{rec.get('file')}"


# Unlisted top-level entries a bundle may hold: what other rkd-edge commands write into it (an evaluation,
# TensorRT engines checked against their own hashes when loaded) and hidden files (its marker, locks).
UNLISTED_OK = ("evaluation", "trt")


def outside_manifest(top: str) -> bool:
    """Whether a bundle's top-level entry ``top`` is left out of its manifest's files: the manifest itself,
    hidden entries (the marker, locks) and what other commands add later (:data:`UNLISTED_OK`)."""
    return top == MANIFEST or top in UNLISTED_OK or top.startswith(".")


def _check_unlisted(root: Path, files: dict) -> None:
    """Refuse a file the manifest does not list: ONNX Runtime would load a model's external data from beside
    it, unhashed, and a reader could take it for part of the bundle."""
    for folder, dirs, names in os.walk(root):
        rel_dir = Path(folder).relative_to(root)
        if rel_dir == Path("."):
            dirs[:] = [d for d in dirs if not outside_manifest(d)]
            names = [n for n in names if not outside_manifest(n)]
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            rel = (rel_dir / name).as_posix()
            if rel not in files:
                raise BundleError(
                    f"bundle file {short_repr(rel)} is not listed in the manifest (unverified: a model could load it "
                    "as external data); remove it or re-export the bundle"
                )


def read_verified(path: str | Path, sha256: str | None) -> bytes:
    """The bytes of ``path``, read once; with ``sha256`` refused unless they hash to it. A runtime loads
    models from these bytes, so what runs is what was verified even if the file is swapped after
    :meth:`Bundle.open` checked it (a model that names external data is refused before it is loaded:
    :mod:`rkd_edge.runtime.onnx_wire`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read bundle file {Path(path).name} ({exc.strerror}); re-export the bundle") from None
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise BundleError(
            f"bundle file {Path(path).name} changed after the bundle was verified (tampered); re-export the bundle"
        )
    return data


@dataclass
class Bundle:
    """A verified bundle directory and its manifest."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> Bundle:
        root = Path(root)
        manifest = load_manifest(root)
        if verify:
            verify_bundle(root, manifest)
        return cls(root, manifest)

    @property
    def bundle_id(self) -> str:
        """The bundle's identity: the first 16 hex digits of the sha256 of its manifest's content.

        The manifest lists every file's sha256, so the id changes whenever any model or file does.
        """
        return bundle_id(self.manifest)

    def sha256_of(self, path: Path) -> str | None:
        """The sha256 the manifest gives ``path`` (a listed file or a TensorRT engine), or ``None``."""
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        if isinstance(rec := self.manifest["files"].get(rel), dict):
            return rec["sha256"]
        for by_precision in (self.manifest.get("tensorrt") or {}).get("engines", {}).values():
            for rec in by_precision.values():
                if _engine_rel(rec) == rel:
                    return rec.get("sha256")
        return None

    def model_path(self, name: str, precision: str = "fp32") -> Path:
        models = self.manifest["models"].get(name, {})
        if precision not in models:
            raise BundleError(
                f"bundle has no {precision} {name} model (has {sorted(models) or 'none'}); export with --int8 for INT8"
            )
        return self.root / models[precision]["file"]
