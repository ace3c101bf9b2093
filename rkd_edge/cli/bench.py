"""``rkd-edge bench BUNDLE``: latency, throughput, accuracy, size and memory per back end, precision,
batch and stage, here or on a device over SSH (``--host USER@HOST``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from rkd_edge import __version__, progress
from rkd_edge.bench_schema import (
    SCHEMA,
    Settings,
    check_answer,
    check_asked,
    table,
    unselected,
    warnings_of,
    write_selection,
)
from rkd_edge.cli.common import comma_list
from rkd_edge.errors import UserError, one_line
from rkd_edge.io import write_new_json
from rkd_edge.outputs import check_new_outputs
from rkd_edge.runtime.bundle import bundle_id, load_manifest
from rkd_edge.runtime.runners import BACKENDS


def bench(
    bundle: Path = typer.Argument(None, help="A bundle directory (rkd-edge export RUN --out BUNDLE)."),
    backend: str = typer.Option(
        "onnxruntime",
        "--backend",
        help="Comma list of back ends, or 'all': onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt "
        "(engines from 'export trt'), pytorch, pytorch-cuda (the source run, fp32 reference).",
    ),
    precision: str = typer.Option(None, "--precision", help="Comma list: fp32, fp16, int8 (default: the bundle's)."),
    batch: str = typer.Option("1,32", "--batch", help="Comma list of batch sizes."),
    snr_db: float = typer.Option(10.0, "--snr-db", help="SNR in dB (Es/N0) of the accuracy point and the inputs."),
    symbols: int = typer.Option(None, "--symbols", help="k, complex symbols sent (default: the bundle's K)."),
    channel: str = typer.Option("awgn", "--channel", help="Channel of the accuracy point: awgn, rayleigh, rician."),
    trials: int = typer.Option(None, "--trials", help="Noise draws of the accuracy point (default: the config's)."),
    seconds: float = typer.Option(
        1.0, "--seconds", help="Timed seconds per variant and stage (DESIGN.md's protocol: 10)."
    ),
    warmup: float = typer.Option(0.2, "--warmup", help="Untimed warm-up seconds per variant and stage."),
    threads: int = typer.Option(0, "--threads", help="Intra-op threads (0 = the back end's default)."),
    run: Path = typer.Option(None, "--run", help="Source run for the pytorch back end (default: the manifest's)."),
    json_out: Path = typer.Option(None, "--json", help="Write the full results (JSON) here."),
    select: bool = typer.Option(
        False, "--select", help="Write the fastest precision per model within --tolerance into the manifest."
    ),
    tolerance: float = typer.Option(0.01, "--tolerance", help="--select: accuracy a precision may lose (0..1)."),
    no_memory: bool = typer.Option(False, "--no-memory", help="Skip the fresh-process memory measurement."),
    host: str = typer.Option(None, "--host", help="Run on USER@HOST over SSH with the device's own rkd-edge."),
    port: int = typer.Option(None, "--port", help="SSH port of --host."),
    identity: Path = typer.Option(None, "--identity", help="SSH private key for --host."),
    ssh_option: list[str] = typer.Option(None, "--ssh-option", help="Extra ssh -o KEY=VALUE (repeatable)."),
    remote_rkd_edge: str = typer.Option("rkd-edge", "--remote-rkd-edge", help="rkd-edge command on --host."),
    schema: bool = typer.Option(False, "--schema", hidden=True, help="Print this rkd-edge's bench schema."),
):
    """Profile a bundle: per stage and end to end latency (mean, p50..p99, max), throughput, accuracy
    through the simulated channel, model size and peak memory; a table, and the JSON with --json."""

    if schema:
        typer.echo(json.dumps({"rkd_edge": __version__, "schema": SCHEMA}))
        return
    if bundle is None:
        raise UserError("give the bundle to profile: rkd-edge bench BUNDLE [--backend ...] [--batch ...] ...")
    check_new_outputs({"--json": json_out})
    if select and bundle.is_dir() and not os.access(bundle, os.W_OK):  # found out after minutes of timing, else
        raise UserError(
            f"--select records its choice in {bundle}/manifest.json, but {bundle} is not writable here; copy the "
            "bundle somewhere writable, or leave --select out"
        )

    backends = (
        list(BACKENDS) if backend.strip() == "all" else comma_list(backend, "--backend", example="onnxruntime,pytorch")
    )
    if host is not None and not host.strip():
        raise UserError("--host is empty; give USER@HOST, or leave --host out to measure here")
    if host is None and (port is not None or identity is not None or ssh_option):
        raise UserError("--port, --identity and --ssh-option are for --host; add --host USER@HOST or drop them")
    settings = Settings(
        backends=backends,
        precisions=comma_list(precision, "--precision", example="fp32,int8"),
        batches=comma_list(batch, "--batch", int),
        snr_db=snr_db,
        symbols=symbols,
        channel=channel,
        trials=trials,
        seconds=seconds,
        warmup=warmup,
        threads=threads,
        run=str(run) if run else None,
        memory=not no_memory,
        select=select,
        tolerance=tolerance,
    )
    settings.check()
    if host:
        from rkd_edge.devices.remote import Target, remote_bench

        target = Target.parse(host, port, identity, ssh_option or [])
        manifest = load_manifest(bundle)
        k, precisions = check_asked(settings, manifest)  # what needs no device is refused before ssh
        result = remote_bench(bundle, target, settings, remote_rkd_edge)  # checked: bench_schema.check_result
        if result["bundle_id"] != bundle_id(manifest):
            raise UserError(f"{target.name} benched another bundle ({result['bundle_id']}); rerun the bench")
        check_answer(result, settings, k, precisions, target.name)  # a selection only if --select asked for it
        for sel in (result.get("selection") or {}).values():
            if sel["written"]:  # the device measured it: record it in the local bundle too
                write_selection(bundle, sel["fingerprint"], sel["choice"])
    else:
        from rkd_edge.bench import run_bench  # torch: only to measure here

        result = run_bench(bundle, settings)
    typer.echo(table(result))
    for line in warnings_of(result):  # a device's words among them: escaped
        typer.echo(one_line(line), err=True)
    if json_out:
        write_new_json(json_out, result, "--json")
        progress.log(f"wrote {json_out}")
    if select and (why := unselected(result)):  # asked for and not done: the measurements stay, the exit says so
        raise UserError("; ".join(why))
    for backend, sel in (result.get("selection") or {}).items():  # another back end's choice was written
        if not sel.get("written"):
            progress.log(f"no selection for {backend}: {sel.get('reason')}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
