"""TensorRT engines built on the target from the bundle's ONNX (DESIGN.md section 5).

The API is detected by feature, not by version string:
  * ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (10.x, 11.x): Q/DQ models build strongly typed;
    precision comes from the graph, no INT8/FP16 builder flags.
  * ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` without strong typing (8.x): explicit batch, and
    the INT8 flag lets TensorRT honour the Q/DQ nodes (explicit quantization, no calibrator).
  * ``IBuilderConfig.set_memory_pool_limit`` (8.4+) or the older ``max_workspace_size``.
Jetson Nano (Maxwell) and TX2 (Pascal) have no fast INT8 path: INT8 is refused there (their profiles say so).
"""

from __future__ import annotations

import time
from pathlib import Path

from rkd_edge.devices.detect import jetson_model
from rkd_edge.devices.profiles import match_profile
from rkd_edge.errors import UserError
from rkd_edge.io import atomic_path, sha256_file
from rkd_edge.outputs import write_manifest
from rkd_edge.runtime.bundle import Bundle
from rkd_edge.runtime.onnx_wire import check_model


def int8_supported(model: str | None) -> tuple[bool, str]:
    """Whether the Jetson named by device-tree ``model`` has fast INT8 (its profile's ``fast_int8``: not the
    Maxwell Nano nor the Pascal TX2); True off Jetson and for a module no profile knows."""
    profile = match_profile(model) if model else None
    if profile is not None and not profile.fast_int8:
        return False, f"{profile.name} ({profile.gpu_arch}) has no fast INT8; build FP16 engines instead (--fp16)"
    return True, ""


def api_features(trt) -> dict:
    flags = trt.NetworkDefinitionCreationFlag
    return {
        "version": getattr(trt, "__version__", "unknown"),
        "strongly_typed": hasattr(flags, "STRONGLY_TYPED"),
        "explicit_batch_flag": hasattr(flags, "EXPLICIT_BATCH"),
        "memory_pool": hasattr(trt.IBuilderConfig, "set_memory_pool_limit"),
        "int8_flag": hasattr(trt.BuilderFlag, "INT8"),
    }


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(
            "TensorRT is not installed here; build engines on the target device with "
            "pip install 'rkd-edge[trt]' (or JetPack's python3-libnvinfer)"
        ) from None
    return trt


def build_engine(
    trt, onnx_path: Path, engine_path: Path, precision: str, max_batch: int, timing_cache: Path, features: dict
) -> dict:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = precision == "int8" and features["strongly_typed"]
    if strongly:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif features["explicit_batch_flag"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(check_model(onnx_path.read_bytes(), onnx_path.name)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: {errs[:300]}")
    config = builder.create_builder_config()
    if features["memory_pool"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    else:  # TensorRT < 8.4
        config.max_workspace_size = 1 << 30
    if not strongly:
        if precision in ("fp16", "int8") and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8" and features["int8_flag"]:
            config.set_flag(trt.BuilderFlag.INT8)  # honours the Q/DQ nodes; no calibrator
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        rest = tuple(inp.shape)[1:]
        profile.set_shape(inp.name, (1, *rest), (max(1, max_batch // 2), *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build {onnx_path.name} ({precision}); see the log above")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "file": engine_path.name,
        "precision": precision,
        "strongly_typed": strongly,
        "max_batch": max_batch,
        "build_seconds": round(time.time() - t0, 2),
    }


def build_engines(bundle: Path, fp16: bool = False, int8: bool = False, max_batch: int = 32) -> dict:
    """Build an engine per model and precision into ``BUNDLE/trt``, and record them in the manifest."""

    b = Bundle.open(bundle)
    if int8:
        ok, why = int8_supported(jetson_model())
        if not ok:
            raise UserError(f"INT8 refused: {why}")
        if "int8" not in b.manifest["precisions"]:
            raise UserError("this bundle has no INT8 Q/DQ models; re-export with rkd-edge export RUN --int8")
    trt = import_tensorrt()
    features = api_features(trt)
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0).name()
    except Exception as exc:  # noqa: BLE001 - any CUDA failure means: no usable GPU here
        raise UserError(
            f"no usable CUDA GPU for TensorRT here ({str(exc).splitlines()[0][:80]}); build on the target device"
        ) from None
    out = b.root / "trt"
    out.mkdir(exist_ok=True)
    engines = {}
    precisions = ["int8"] if int8 else ["fp16" if fp16 else "fp32"]
    for name in ("encoder", "tx", "rx"):
        for prec in precisions:
            src = b.model_path(name, "int8" if prec == "int8" else "fp32")
            rec = build_engine(trt, src, out / f"{name}.{prec}.engine", prec, max_batch, out / "timing.cache", features)
            rec["sha256"] = sha256_file(out / rec["file"])
            engines.setdefault(name, {})[prec] = rec
    m = b.manifest
    m["tensorrt"] = {
        "api": features,
        "device": device,
        "jetson": jetson_model(),
        "engines": engines,
        "note": "engines are specific to this GPU and TensorRT version",
    }
    write_manifest(b.root, m)
    return m["tensorrt"]
