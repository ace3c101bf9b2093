"""``rkd-edge devices``: Jetson profiles, detection, roofline estimates and per-operation latency tables."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rkd_edge.cli.common import CONFIG, DATA_DIR, DATASET, PRESET, SET, comma_list, echo_json, resolve
from rkd_edge.errors import UserError
from rkd_edge.io import OutputLock, file_in_the_way, read_text, write_json, write_new_json
from rkd_edge.limits import check_batches, check_threads
from rkd_edge.outputs import check_new_outputs, refuse_inside_bundle

app = typer.Typer(no_args_is_help=True, help="Jetson device profiles, detection, estimates and latency tables.")

JSON = typer.Option(False, "--json", help="Machine-readable JSON instead of a table.")


def _table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@app.command("list")
def list_cmd(as_json: bool = JSON):
    """All Jetson profiles: GPU, memory, dense throughput, JetPack / TensorRT / ONNX opset, fast INT8."""
    from rkd_edge.devices.profiles import PROFILES

    if as_json:
        echo_json({k: {f: v["value"] for f, v in p.figures().items()} for k, p in PROFILES.items()})
        return
    rows = [
        [
            p.key,
            p.name,
            f"{p.gpu_arch} {p.compute_capability}",
            p.sm_count,
            p.tensor_cores,
            "/".join(str(m) for m in p.memory_gb),
            p.memory_bandwidth_gbs,
            p.fp16_dense_tflops,
            p.int8_dense_tops if p.int8_dense_tops is not None else "-",
            p.jetpack,
            p.tensorrt,
            p.max_onnx_opset,
            "yes" if p.fast_int8 else "no",
        ]
        for p in PROFILES.values()
    ]
    header = ["key", "module", "GPU (CC)", "SMs", "TCs", "GB", "GB/s", "FP16 TF", "INT8 TOPS", "JetPack", "TRT"]
    typer.echo(_table([*header, "opset", "fast INT8"], rows))
    typer.echo("\nThroughputs are dense GPU figures; sources and unverified figures: rkd-edge devices show NAME")


@app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Profile key (rkd-edge devices list)."), as_json: bool = JSON):
    """One profile, every figure with the public page it came from (or 'unverified: ...')."""
    from rkd_edge.devices.profiles import get_profile

    if name.strip().lower() == "host":
        raise UserError(
            "'host' has no stored profile: its figures are measured when an estimate runs "
            "(rkd-edge devices estimate BUNDLE --device host); rkd-edge devices detect describes this machine"
        )
    p = get_profile(name)
    figs = p.figures()
    if as_json:
        echo_json(figs)
        return
    typer.echo(f"{p.name} ({p.key})")
    rows = [[k, _shown(v["value"]), v["source"]] for k, v in figs.items()]
    typer.echo(_table(["field", "value", "source"], rows))


def _shown(value) -> object:
    """A figure as a person reads it: the variants of a module (memory sizes, power modes) joined by ' / '."""
    return " / ".join(map(str, value)) if isinstance(value, tuple | list) else value


@app.command("detect")
def detect_cmd(as_json: bool = JSON):
    """Is this a Jetson? Device tree model, L4T release, JetPack, nvpmodel power mode; else the host CPU."""
    from rkd_edge.devices.detect import detect

    d = detect()
    if as_json:
        echo_json(d.to_dict())
        return
    if not d.jetson:
        typer.echo(d.reason)
        return
    for k, v in d.to_dict().items():
        if v not in (None, "", []):
            typer.echo(f"{k}: {v}")


@app.command("estimate")
def estimate_cmd(
    bundle: Path = typer.Argument(..., help="An exported bundle (rkd-edge export RUN --out BUNDLE)."),
    device: str = typer.Option(..., "--device", "-d", help="Profile key, or 'host' (measured now)."),
    precision: str = typer.Option(None, "--precision", help="Comma list: fp32,fp16,int8 (default: what it runs)."),
    batch: str = typer.Option("1", "--batch", help="Comma list of batch sizes, e.g. 1,32."),
    as_json: bool = JSON,
    out: Path = typer.Option(None, "--out", "-o", help="Also write the JSON here."),
):
    """Roofline ESTIMATE of latency and memory per model (encoder, tx, rx) and precision on a profile."""
    from rkd_edge.devices.estimate import estimate_bundle, resolve_profile
    from rkd_edge.io import write_new_json

    batches = tuple(check_batches(comma_list(batch, "--batch", int)))
    if not (bundle / "manifest.json").is_file():
        raise UserError(f"{bundle} is not a bundle (no manifest.json); make one with rkd-edge export RUN --out BUNDLE")
    if out:
        check_new_outputs({"--out": out})
    prof = resolve_profile(device)
    res = estimate_bundle(bundle, prof, comma_list(precision, "--precision", example="fp32,int8"), batches)
    if out:
        write_new_json(out, res)
    if as_json:
        echo_json(res)
        return
    typer.echo(f"ESTIMATE (not a measurement) for {prof.name}: {res['method']}")
    rows = [
        [
            r["model"],
            r["precision"],
            r["batch"],
            f"{r['latency_ms']:.4f}",
            r["bound"],
            r["launches"],
            f"{r['gflops']:.4f}",
            f"{r['memory_mb']:.3f}",
        ]
        for r in res["results"]
    ]
    typer.echo(_table(["model", "precision", "batch", "est. ms", "bound", "launches", "GFLOP", "est. MiB"], rows))


@app.command("lut")
def lut_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Latency table JSON to write."),
    device: str = typer.Option("host", "--device", help="Only 'host': tables are measured where they run."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or int8 (Q/DQ, quantize_static)."),
    threads: int = typer.Option(1, "--threads", help="ONNX Runtime intra-op threads."),
    preset: str = PRESET,
    config: str = CONFIG,
    overrides: list[str] = SET,
    dataset: str = DATASET,
    data_dir: str = DATA_DIR,
    force: bool = typer.Option(False, "--force", help="Replace an existing table."),
):
    """Measure the per-operation latency table that search --cost latency --latency-table FILE reads."""
    if device != "host":  # a profile key (orin-nano) or a torch device (cuda): neither is measured from here
        raise UserError(
            f"--device {device}: a latency table is measured on the machine it describes, so only --device host "
            "is taken; run rkd-edge devices lut there (a Jetson: on the board itself) and pass the file to search"
        )
    if precision not in ("fp32", "int8"):
        raise UserError(f"--precision is fp32 or int8, got {precision!r}")
    check_threads(threads)
    if (blocker := file_in_the_way(out.parents)) is not None:
        raise UserError(f"{blocker} is a file, not a folder; choose another --out")
    refuse_inside_bundle(out, "--out")  # before the lock, whose file would be made there too
    cfg = resolve(preset, config, overrides, dataset=dataset, data_dir=data_dir)
    with OutputLock(out):  # a second table for the same file stops at once, not after measuring
        _lut(out, precision, threads, force, cfg)


def _lut(out: Path, precision: str, threads: int, force: bool, cfg) -> None:
    """``devices lut`` under its output's lock."""
    from rkd_edge import progress

    if out.is_symlink():  # followed, a write would land wherever it points; replaced, the link is lost
        raise UserError(f"{out} is a symbolic link; give a plain file name as --out")
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the latency table's file name as --out")
    if out.exists() and not out.is_file():
        raise UserError(f"{out} is not a regular file (a device or FIFO?); give the latency table's file name as --out")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; choose another --out or pass --force to replace it")
    replaced = out.stat() if out.exists() else None
    if replaced is not None:
        from rkd_edge.devices.lut import FORMAT as LUT_FORMAT

        try:
            old = json.loads(read_text(out, "latency table"))
        except (UserError, ValueError, RecursionError):
            old = None
        if not (isinstance(old, dict) and old.get("format") == LUT_FORMAT):  # a user's JSON may hold "entries"
            raise UserError(f"{out} is not a latency table; --force replaces only a table this command wrote")
    from rkd_edge.nas.cost import build_latency_table, latency_keys
    from rkd_edge.nas.search import make_skeleton
    from rkd_edge.pipeline import load_splits
    from rkd_edge.preflight import check_supernet

    splits = load_splits(cfg)
    check_supernet(cfg, splits)  # a table for a supernet the search refuses would take minutes for nothing
    sk = make_skeleton(cfg, splits)
    n = len(latency_keys(sk))
    with progress.task(f"latency table ({precision}, {n} ops)", n) as bar:
        table = build_latency_table(sk, None, precision, threads, progress=lambda i, _n: bar.advance())
    table["config"] = cfg.to_dict()  # the resolved config beside the artefact, as every config command's
    if replaced is None:
        write_new_json(out, table)  # exclusive: a file that appeared while it measured is not overwritten
    else:
        now = out.lstat() if out.exists() or out.is_symlink() else None
        if now is None or (now.st_ino, now.st_mtime_ns) != (replaced.st_ino, replaced.st_mtime_ns):
            raise UserError(f"{out} changed while the table was measured; it was left as it is: run again")
        write_json(out, table)
    typer.echo(f"{out}: {len(table['entries'])} entries, {precision}, p50 ms on {table['device_name']}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="devices", help="Jetson profiles, detection, estimates and latency tables.")
