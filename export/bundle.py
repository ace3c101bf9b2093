"""``rkd-edge export RUN --out BUNDLE``: ONNX models, parity, optional INT8, and ``manifest.json``.

The bundle is assembled in a temporary folder next to ``BUNDLE`` and renamed into place at the end, so a
failed export leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from rkd_edge import env, progress
from rkd_edge.channel import create_channel
from rkd_edge.channel_ids import CHANNEL_IDS, CHANNEL_TYPES, channel_id
from rkd_edge.config import RunConfig
from rkd_edge.data import DataSplits
from rkd_edge.errors import UserError
from rkd_edge.export.calibration import MIN_SAMPLES, build_feeds, check_count, feeds_count, feeds_digest
from rkd_edge.export.graphs import graph_io
from rkd_edge.export.int8 import int8_path, select_precisions
from rkd_edge.export.onnx_export import DEFAULT_OPSET, export_onnx, parity
from rkd_edge.export.quantize import check_method, cpu_recipe, qdq_summary, quantize_model, quantize_qdq
from rkd_edge.io import OutputLock, staged_dir, write_json
from rkd_edge.methods import method_config
from rkd_edge.outputs import check_output, write_manifest
from rkd_edge.rundir import RunDir, load_splits, weights_digest
from rkd_edge.runtime.bundle import FORMAT
from rkd_edge.runtime.runners.ort import cpu_session
from rkd_edge.system import SemanticSystem

PARITY_TOLERANCE = 1e-4
# INT8 forms are made of the three stage models; the fused transmitter graph stays FP32 (the runtime runs
# it when encoder and tx both run FP32, and the two separate models otherwise).
QUANTIZED = ("encoder", "tx", "rx")


def parity_feeds(system, split, cc, seed: int) -> dict[str, list[tuple]]:
    """Real test images, their features at several SNRs and lengths, and channel outputs of those."""
    x = split.transform(split.images[:48])
    with torch.no_grad():
        f = system.encoder(x)
    feeds = {"encoder": [(x,)], "tx": [], "rx": [], "transmitter": []}
    g = torch.Generator().manual_seed(seed)
    for snr in (-10.0, 0.0, 10.0, 20.0):
        for k in system.codec.symbol_set:
            for name in ("awgn", "rayleigh"):
                n = len(f)
                s = torch.full((n,), snr)
                kk = torch.full((n,), k, dtype=torch.long)
                c = torch.full((n,), channel_id(name), dtype=torch.long)
                with torch.no_grad():
                    sym, mask = system.codec.tx(f, s, kk, c)
                    out = create_channel(name, **cc.channel_kwargs())(sym, s, mask, g)
                feeds["tx"].append((f, s, kk, c))
                feeds["transmitter"].append((x, s, kk, c))
                rx = (out.y, mask, s, c) + ((out.csi,) if system.codec.uses_csi else ())
                feeds["rx"].append(rx)
    return feeds


def export_bundle(
    run: Path,
    out: Path,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    calibration: str = "minmax",
    calib_samples: int | None = None,
    force: bool = False,
    calib_min: int = MIN_SAMPLES,
    target: dict | None = None,
) -> dict:
    """Export a trained run; returns the manifest (``target``: the device profile exported for, recorded).

    The bundle is built in a hidden folder beside ``out`` while this process holds ``out``'s lock, and
    renamed into place at the end: a second export to the same ``out`` fails at once, a failed one leaves
    nothing, and ``force`` replaces only an rkd-edge bundle (never the run, or a folder of other files).
    """
    replace = check_output(out, "bundle", force, sources=(run,))
    if replace and (out / "evaluation").is_dir():
        progress.log(f"{out} is replaced whole: its evaluation/ goes with it (evaluate the new bundle again)")
    check_method(calibration)  # these before the run is loaded: one line, at once
    if int8:
        check_count(calib_samples, calib_min)
    rd = RunDir(run)
    cfg, system, _ = rd.load()
    rd.require_complete(cfg, "exporting it")
    mcfg = method_config(cfg)
    splits = load_splits(mcfg)
    if int8:  # against the split too, before four models are exported for nothing
        check_count(calib_samples, calib_min, len(splits.train))
    system = system.cpu().eval()
    # Replacing a bundle waits for no evaluation of it: one running now is refused (its lock), not overtaken.
    evaluation = OutputLock(out / "evaluation") if replace else contextlib.nullcontext()
    with OutputLock(out), evaluation, staged_dir(out, replace) as work:
        calib = (calibration, calib_samples, calib_min)
        # The source run as seen from the bundle's folder (the PyTorch reference finds it there).
        source = Path(os.path.relpath(run.resolve(), out.resolve().parent)).as_posix()
        manifest = _build(work, source, cfg, mcfg, system, splits, int8, opset, calib, target)
    return manifest


def _build(
    work: Path,
    source: str,
    cfg: RunConfig,
    mcfg: RunConfig,
    system: SemanticSystem,
    splits: DataSplits,
    int8: bool,
    opset: int,
    calib: tuple[str, int | None, int],
    target: dict | None,
) -> dict:
    """Write the bundle's models, config and manifest into ``work``; returns the manifest.

    Args:
        source: The run, relative to the bundle's parent folder.
        mcfg: The config the run's method trained with (:func:`rkd_edge.methods.method_config`).
        calib: ``(method, samples, minimum)`` of the INT8 calibration.
    """
    (work / "models").mkdir()
    models, parities = _export_fp32(work, system, splits, mcfg, cfg.seed, opset)
    calib_rec, int8_report, default_precision = None, None, "fp32"
    if int8:
        calib_rec, int8_report, default_precision = _add_int8(work, system, splits, mcfg, cfg.seed, calib, models)
    write_json(work / "config.json", cfg.to_dict())
    t = splits.transform
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_run": {
            "path": source,
            "config_sha256": cfg.digest(),
            "weights_sha256": weights_digest(system),
            "method": cfg.method,
        },
        "models": models,
        "opset": opset,
        **({"target": target} if target else {}),
        "precisions": ["fp32", "int8"] if int8 else ["fp32"],
        # INT8 is kept only where it wins: per model, measured by export/int8.py at export (int8_report).
        "default_precision": default_precision,
        "int8_report": int8_report,
        "normalisation": {
            "mean": list(t.mean),
            "std": list(t.std),
            "size": t.size,
            "channels": t.channels,
            "input_layout": "NCHW float32 after (x/255 - mean)/std",
        },
        "classes": splits.classes,
        "dataset": splits.name,
        "channel_types": CHANNEL_TYPES,
        "channel_ids": CHANNEL_IDS,
        "snr_db": {"trained_range": mcfg.stage2.snr_db, "unit": "dB, Es/N0 per complex symbol"},
        "symbols": {
            "max": system.codec.max_symbols,
            "set": list(system.codec.symbol_set),
            "csi_input": bool(system.codec.uses_csi),
            "layout": "[B, K, 2] float32 I/Q + mask [B, K]",
            "source_dim": splits.source_dim,
        },
        "channel": mcfg.codec.fading_settings(),
        "parity": parities,
        "parity_tolerance": PARITY_TOLERANCE,
        "calibration": calib_rec,
        "versions": env.versions(),
    }
    return write_manifest(work, manifest)


def _model_file(name: str, form: str) -> str:
    """A model's file as the manifest lists it (``models/<name>.onnx``, ``.int8.onnx``, ``.int8-cpu.onnx``)."""
    return int8_path(Path("models"), name, form).as_posix()


def _export_fp32(
    work: Path, system: SemanticSystem, splits: DataSplits, mcfg: RunConfig, seed: int, opset: int
) -> tuple[dict, dict]:
    """Export every graph to ONNX and check it against PyTorch; returns the manifest's ``models`` (FP32
    records) and the parity of each graph.

    Raises:
        UserError: a graph differs from PyTorch by more than :data:`PARITY_TOLERANCE`.
    """
    feeds = parity_feeds(system, splits.test, mcfg.codec, seed)
    models, parities = {}, {}
    for name, g in graph_io(system, splits.input_shape).items():
        progress.log(f"export {name}")
        path = work / _model_file(name, "fp32")
        io = export_onnx(g["module"], g["inputs"], g["input_names"], g["output_names"], path, opset)
        p = parity(g["module"], cpu_session(path), feeds[name], g["input_names"])
        parities[name] = p
        if p["max_abs_error"] > PARITY_TOLERANCE:
            raise UserError(
                f"{name}: ONNX Runtime differs from PyTorch by {p['max_abs_error']:.2e} (> "
                f"{PARITY_TOLERANCE:g}); the export is not trustworthy, nothing was written"
            )
        models[name] = {"fp32": {"file": _model_file(name, "fp32"), **io}}
    return models, parities


def _add_int8(
    work: Path,
    system: SemanticSystem,
    splits: DataSplits,
    mcfg: RunConfig,
    seed: int,
    calib: tuple[str, int | None, int],
    models: dict,
) -> tuple[dict, dict, dict]:
    """Calibrate and quantize :data:`QUANTIZED` (the Q/DQ record and the ONNX Runtime CPU form), measure
    which form wins per model, and add the INT8 records to ``models``.

    Returns:
        The calibration record, the INT8 report and the default precision per model.
    """
    calibration, calib_samples, calib_min = calib
    feeds = build_feeds(
        system, splits.train, calib_samples, seed, mcfg.codec, uses_csi=system.codec.uses_csi, minimum=calib_min
    )
    calib_rec = {}
    for name in QUANTIZED:
        src, dst, cpu = (work / _model_file(name, form) for form in ("fp32", "int8", "int8-cpu"))
        preset = "encoder" if name == "encoder" else "linear-only"
        progress.log(f"quantize {name} ({preset}, {calibration})")
        rec = quantize_qdq(src, dst, feeds[name], preset, calibration)
        # the ONNX Runtime CPU form beside the Q/DQ record (DESIGN.md 5); kept only if it measures faster
        rec["cpu_form"] = quantize_model(src, cpu, feeds[name], preset, calibration, cpu_recipe(preset))
        rec.update(
            count=feeds_count(feeds[name]),
            sha256=feeds_digest(feeds[name]),
            source="train split" if name == "encoder" else "real encoder outputs",
            structure=qdq_summary(dst),
        )
        calib_rec[name] = rec
        models[name]["int8"] = {**models[name]["fp32"], "file": _model_file(name, "int8")}
    n = min(len(splits.test), 2000)
    int8_report, default_precision = select_precisions(
        work,
        splits.test.transform(splits.test.images[:n]).numpy(),
        splits.test.labels[:n],
        system.codec.max_symbols,
        mcfg.codec.channel_kwargs(),
        seed,
    )
    for name, r in int8_report.items():
        progress.log(
            f"int8 {name}: {r['form']} latency x{r['ratio_b1']:.2f} (batch 1), x{r['ratio_b32']:.2f} (batch 32) "
            f"of FP32, accuracy {r['accuracy_change_pts']:+.2f} pts -> default {r['default']}"
        )
        calib_rec[name]["cpu_form"]["kept"] = r["form"] == "int8-cpu"
        if r["form"] == "int8-cpu":  # ONNX Runtime on a CPU loads this one; TensorRT the Q/DQ file
            cpu_form = calib_rec[name]["cpu_form"]
            models[name]["int8"]["onnxruntime_cpu"] = {
                "file": _model_file(name, "int8-cpu"),
                "format": cpu_form["format"],
                "reduce_range": cpu_form["recipe"]["reduce_range"],
            }
    return calib_rec, int8_report, default_precision
