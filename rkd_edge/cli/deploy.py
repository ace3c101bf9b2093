"""Deployment commands: export (ONNX / INT8 / TensorRT), prune. ``rkd-edge bench`` is in :mod:`rkd_edge.cli.bench`."""

from __future__ import annotations

from pathlib import Path

import typer

from rkd_edge import env
from rkd_edge.cli.common import RUN_DEVICE, check_values, echo_json
from rkd_edge.devices.profiles import get_profile
from rkd_edge.errors import UserError
from rkd_edge.limits import MIN_CALIB_SAMPLES, ROUND_TO
from rkd_edge.runtime.bundle import DEFAULT_OPSET


def export(
    target: str = typer.Argument(..., help="RUN directory, or 'trt' followed by a BUNDLE."),
    bundle: Path = typer.Argument(None, help="With 'trt': the bundle to build engines for."),
    out: Path = typer.Option(None, "--out", "-o", help="Bundle directory to create."),
    int8: bool = typer.Option(False, "--int8", help="Also write INT8 Q/DQ models (calibrated) / engines."),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT: allow FP16 kernels."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default 17, or the --target's ceiling if lower)."),
    target_device: str = typer.Option(
        None, "--target", help="Device profile to export for (rkd-edge devices list): opset and INT8 follow it."
    ),
    calibration: str = typer.Option(None, "--calibration", help="--int8: minmax (default), entropy or percentile."),
    calib_samples: int = typer.Option(
        None, "--calib-samples", help="--int8: real calibration samples (--calib-min to the train split's size; 256)."
    ),
    calib_min: int = typer.Option(
        None, "--calib-min", help="--int8: floor on real calibration samples (default 128; lower it explicitly)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
):
    """Export a run to a bundle (ONNX + manifest), or build TensorRT engines: export trt BUNDLE."""
    # Options that would do nothing are refused rather than silently ignored.
    if target != "trt" and bundle is not None:
        raise UserError(f"'export RUN' takes one folder, got a second one ({bundle}); only 'export trt BUNDLE' has two")
    if target != "trt" and fp16:
        raise UserError("--fp16 allows TensorRT FP16 kernels, for 'export trt BUNDLE'; drop it from 'export RUN'")
    calib = {"--calibration": calibration, "--calib-samples": calib_samples, "--calib-min": calib_min}
    if not int8 and (given := [name for name, value in calib.items() if value is not None]):
        raise UserError(f"{', '.join(given)}: INT8 calibration options, used only with --int8; add --int8 or drop them")
    if target == "trt":
        if bundle is None:
            raise UserError("usage: rkd-edge export trt BUNDLE [--fp16] [--int8]")
        export_only = {"--out": out, "--opset": opset, "--target": target_device, **calib}
        if given := [name for name, value in export_only.items() if value is not None] + ["--force"] * force:
            raise UserError(
                f"{', '.join(given)}: options of 'export RUN'; 'export trt BUNDLE' builds engines from the bundle's "
                "ONNX into BUNDLE/trt, drop them"
            )
        from rkd_edge.export.tensorrt import build_engines

        echo_json(build_engines(bundle, fp16=fp16, int8=int8))
        return
    calibration = calibration or "minmax"
    calib_min = MIN_CALIB_SAMPLES if calib_min is None else calib_min
    opset = _target_opset(target_device, opset, int8)
    if out is None:
        raise UserError("give the bundle folder with --out BUNDLE")
    from rkd_edge.export.bundle import export_bundle
    from rkd_edge.export.onnx_export import check_opset

    check_opset(opset)  # before the run is loaded: a wrong opset is one line, not an exporter traceback
    m = export_bundle(
        Path(target),
        out,
        int8=int8,
        opset=opset,
        calibration=calibration,
        calib_samples=calib_samples,
        force=force,
        calib_min=calib_min,
        target=_target_record(target_device),
    )
    echo_json(
        {
            "bundle": str(out),
            "models": {k: sorted(v) for k, v in m["models"].items()},
            "parity": m["parity"],
            "files": len(m["files"]),
        }
    )


def _target_record(name: str | None) -> dict | None:
    """What a bundle records of the device profile it was exported for (``--target``)."""
    if name is None:
        return None
    p = get_profile(name)
    return {"profile": p.key, "name": p.name, "tensorrt": p.tensorrt, "max_onnx_opset": p.max_onnx_opset}


def _target_opset(name: str | None, opset: int | None, int8: bool) -> int:
    """The opset to export at: the explicit one, else 17 capped at the target's TensorRT ceiling.

    A target whose TensorRT parses less than the exporter needs, an explicit ``--opset`` above the
    target's ceiling, and INT8 for a target without fast INT8 are each refused with one line.
    """
    default = DEFAULT_OPSET
    if name is None:
        return default if opset is None else opset
    p = get_profile(name)
    if int8 and not p.fast_int8:
        raise UserError(
            f"{p.name} ({p.gpu_arch}, compute capability {p.compute_capability}) has no fast INT8 in TensorRT; "
            "export it without --int8"
        )
    if opset is not None and opset > p.max_onnx_opset:
        raise UserError(
            f"--opset {opset} is above what {p.name}'s TensorRT {p.tensorrt} parses (opset {p.max_onnx_opset}); "
            f"use --opset {min(default, p.max_onnx_opset)} or leave --opset out"
        )
    chosen = opset if opset is not None else min(default, p.max_onnx_opset)
    if chosen < default:
        raise UserError(
            f"{p.name}'s TensorRT {p.tensorrt} (JetPack {p.jetpack}) parses ONNX up to opset {p.max_onnx_opset}, "
            f"but the codec's LayerNormalization needs opset {default}; this bundle cannot target it (run the "
            "ONNX models with ONNX Runtime there, or target a JetPack 5+ module)"
        )
    return chosen


def prune(
    run: Path = typer.Argument(..., help="A trained run directory."),
    out: Path = typer.Option(..., "--out", "-o", help="New run directory for the pruned system."),
    ratio: float = typer.Option(0.3, "--ratio", help="Fraction of encoder channels to remove."),
    epochs: int = typer.Option(3, "--epochs", help="Fine-tune epochs for each of stage 1 and stage 2."),
    round_to: int = typer.Option(
        ROUND_TO,
        "--round-to",
        help="Keep a multiple of N channels per layer, the nearest to what --ratio keeps (odd widths run "
        "slower in ONNX Runtime's CPU kernels, TensorRT's FP16 formats take multiples of 8; 1: exactly --ratio).",
    ),
    device: str = RUN_DEVICE,
):
    """Prune the student encoder with torch-pruning, fine-tune, and evaluate (a new run)."""
    from rkd_edge.prune import prune_run

    check_values({"device": device})
    env.set_device_override(device)  # a run trained on a GPU prunes here too

    rec = prune_run(run, out, ratio, epochs, round_to)
    echo_json({k: rec[k] for k in ("ratio", "round_to", "before", "after")})


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("prune")(prune)
