"""Deployment commands: export (ONNX / INT8 / TensorRT), bench, prune."""

from __future__ import annotations

from pathlib import Path

import typer

from rkd_edge.cli.common import echo_json


def export(
    target: str = typer.Argument(..., help="RUN directory, or 'trt' followed by a BUNDLE."),
    bundle: Path = typer.Argument(None, help="With 'trt': the bundle to build engines for."),
    out: Path = typer.Option(None, "--out", "-o", help="Bundle directory to create."),
    int8: bool = typer.Option(False, "--int8", help="Also write INT8 Q/DQ models (calibrated) / engines."),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT: allow FP16 kernels."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 = TensorRT 8.5 / JetPack 5 ceiling)."),
    calibration: str = typer.Option("minmax", "--calibration", help="minmax, entropy or percentile."),
    calib_samples: int = typer.Option(256, "--calib-samples", help="Real calibration samples (>= 128)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
):
    """Export a run to a bundle (ONNX + manifest), or build TensorRT engines: export trt BUNDLE."""
    from rkd_edge.errors import UserError

    if target == "trt":
        if bundle is None:
            raise UserError("usage: rkd-edge export trt BUNDLE [--fp16] [--int8]")
        from rkd_edge.export.tensorrt import build_engines

        echo_json(build_engines(bundle, fp16=fp16, int8=int8))
        return
    if out is None:
        raise UserError("give the bundle folder with --out BUNDLE")
    from rkd_edge.export.bundle import export_bundle

    m = export_bundle(
        Path(target), out, int8=int8, opset=opset, calibration=calibration, calib_samples=calib_samples, force=force
    )
    echo_json(
        {
            "bundle": str(out),
            "models": {k: sorted(v) for k, v in m["models"].items()},
            "parity": m["parity"],
            "files": len(m["files"]),
        }
    )


def prune(
    run: Path = typer.Argument(..., help="A trained run directory."),
    out: Path = typer.Option(..., "--out", "-o", help="New run directory for the pruned system."),
    ratio: float = typer.Option(0.3, "--ratio", help="Fraction of encoder channels to remove."),
    epochs: int = typer.Option(3, "--epochs", help="Fine-tune epochs for each of stage 1 and stage 2."),
):
    """Prune the student encoder with torch-pruning, fine-tune, and evaluate (a new run)."""
    from rkd_edge.prune import prune_run

    rec = prune_run(run, out, ratio, epochs)
    echo_json({k: rec[k] for k in ("ratio", "before", "after")})


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("prune")(prune)
