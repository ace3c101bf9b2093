"""Training commands: search, distill, robust, evaluate, pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from rkd_edge import env
from rkd_edge.cli.common import (
    CONFIG,
    DATA_DIR,
    DATASET,
    DEVICE,
    PRESET,
    RUN_DEVICE,
    SEED,
    SET,
    check_values,
    comma_list,
    echo_json,
    resolve,
)
from rkd_edge.config import parse_range, parse_snr_range
from rkd_edge.errors import UserError
from rkd_edge.limits import MAX_SYMBOLS
from rkd_edge.methods import METHOD_STAGES
from rkd_edge.outputs import kind_of

METHOD = typer.Option(None, "--method", "-m", help="rkd-sc (ours), authors-2025, deepjscc or no-stage2.")
TEACHER = typer.Option(
    None, "--teacher", "-t", help="Teacher spec (local:DIR, timm:NAME@FILE, ...); default: train one into RUN/teacher."
)
FROM = typer.Option(
    None,
    "--from",
    help="A finished run to start from: its stages whose settings agree with this config are copied, not "
    "trained again (e.g. a codec sweep on one stage-1 student).",
)


def _pipeline_cmd(stop_after: str | None, doc: str):
    def command(
        out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumable)."),
        preset: str = PRESET,
        config: str = CONFIG,
        overrides: list[str] = SET,
        dataset: str = DATASET,
        data_dir: str = DATA_DIR,
        teacher: str = TEACHER,
        method: str = METHOD,
        seed: int = SEED,
        device: str = DEVICE,
        source: Path = FROM,
    ):
        from rkd_edge.pipeline import Pipeline

        cfg = resolve(
            preset,
            config,
            overrides,
            dataset=dataset,
            data_dir=data_dir,
            seed=seed,
            device=device,
            flags={"teacher.spec": teacher, "method": method},
        )
        pipe = Pipeline(cfg, out, source)
        result = pipe.run(stop_after)
        from rkd_edge.distill import ddp

        if not ddp.is_main():
            return
        if stop_after is None:
            typer.echo(
                f"report: {out}/report.md  (student {result['student']['params']:,} params, "
                f"{result['ratios']['params_vs_teacher'] * 100:.2f} % of teacher; clean accuracy "
                f"{(result['student']['accuracy'] or 0):.4f} vs teacher {result['teacher']['accuracy']:.4f})"
            )
        else:
            typer.echo(f"{stop_after} done: {out}")

    command.__doc__ = doc
    return command


def evaluate(
    target: Path = typer.Argument(..., help="A run directory or an exported bundle."),
    channel: str = typer.Option(None, "--channel", help="Comma list: awgn,rayleigh,rician,identity."),
    snr: str = typer.Option(None, "--snr", help="SNR range in dB, start:stop:step or a,b,c."),
    symbols: str = typer.Option(None, "--symbols", help="Comma list of k (complex symbols)."),
    trials: int = typer.Option(None, "--trials", help="Noise draws per point."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for the files (default: TARGET/evaluation)."),
    device: str = RUN_DEVICE,
):
    """Accuracy against SNR with 95 % intervals (CSV, JSON, PNG), for a run or a bundle."""
    check_values({"device": device})
    env.set_device_override(device)  # a run trained on a GPU evaluates here too

    channels = comma_list(channel, "--channel", example="awgn,rayleigh")
    ks = None
    if symbols is not None:
        try:
            values = parse_range(symbols)
        except UserError as exc:
            if "repeats" in str(exc):
                raise UserError(f"--symbols repeats a value in {symbols!r}; give each once") from None
            values = []
        if not values or any(v != int(v) or not 1 <= v <= MAX_SYMBOLS for v in values):  # a float past 2**53 is
            raise UserError(  # another number: quoted as given, not as read
                f"--symbols takes whole numbers of complex symbols, 1 to {MAX_SYMBOLS} (e.g. 4,8,16), got {symbols!r}"
            )
        ks = [int(v) for v in values]
    if snr is not None:
        parse_snr_range(snr, "--snr")
    if trials is not None:
        # the config's range: 1 .. 10,000 draws per point
        check_values({"evaluate.trials": trials}, {"evaluate.trials": "--trials"})
    if channels is not None and set(channels) <= {"identity"}:
        raise UserError("--channel identity alone has no SNR axis (the noiseless point is always evaluated); add awgn")
    # a bundle whose manifest is gone (or not a file) is still one: its own error says so, not "not a run"
    if (target / "manifest.json").is_file() or kind_of(target) == "bundle":
        from rkd_edge.export.evaluate import evaluate_bundle

        env.pick_device(device)  # ONNX Runtime on the CPU decodes a bundle, but --device cuda without CUDA is an error

        summary = evaluate_bundle(target, channels, snr, ks, trials, out)
    elif target.is_dir():
        from rkd_edge.evaluate.run import evaluate_run

        # RUN/evaluation, as BUNDLE/evaluation: the run's own files are its evaluate stage's, which its report shows
        summary = evaluate_run(target, channels, snr, ks, trials, out, default=target / "evaluation")
    else:
        raise UserError(f"{target} is neither a run directory nor a bundle")
    echo_json({k: v for k, v in summary.items() if k != "rows"})


def search_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    dataset: str = DATASET,
    teacher: str = TEACHER,
    preset: str = PRESET,
    config: str = CONFIG,
    overrides: list[str] = SET,
    lambdas: str = typer.Option(None, "--lambda", help="Complexity weight(s): 0.5 or 0,0.1,1."),
    cost: str = typer.Option(None, "--cost", help="params, flops (multiply-accumulates) or latency."),
    latency_table: str = typer.Option(None, "--latency-table", help="Latency lookup table JSON."),
    precision: str = typer.Option(
        None, "--precision", help="--cost latency: the table must be measured in fp32 or int8 (devices lut)."
    ),
    data_dir: str = DATA_DIR,
    seed: int = SEED,
    device: str = DEVICE,
):
    """KDL-DARTS: search a student with CE + KD + lambda * cost; writes OUT/genotype.json."""
    from rkd_edge.pipeline import Pipeline

    flags = {
        "teacher.spec": teacher,
        "search.lambdas": parse_range(lambdas, "--lambda", "0:0.1:0.02") if lambdas is not None else None,
        "search.cost": cost,
        "search.latency_table": latency_table,
        "search.latency_precision": precision,
    }
    cfg = resolve(preset, config, overrides, dataset=dataset, data_dir=data_dir, seed=seed, device=device, flags=flags)
    if "search" not in METHOD_STAGES[cfg.method]:
        raise UserError(f"method {cfg.method} uses no searched student; search with --set method=rkd-sc")
    pipe = Pipeline(cfg, out)
    # Recorded as a stage, as the pipeline does: a rerun skips a finished search, and a stopped sweep
    # resumes after its last scored lambda.
    rec = pipe.run(stop_after="search")["search"]
    if "macs" not in rec:  # searched before the name said MACs: its genotype reads them with the classifier's
        from rkd_edge.nas.genotypes import Genotype

        rec = {**rec, "macs": Genotype.load(pipe.rd.genotype).macs}
    echo_json({k: rec.get(k) for k in ("lambda", "params", "macs", "sweep")})


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("distill")(
        _pipeline_cmd("stage1", "Stage 1: teacher (train or load), search, distil the student from scratch.")
    )
    app.command("robust")(
        _pipeline_cmd("stage2", "Stage 2: train the CAT codec over channels and SNRs (runs earlier stages if needed).")
    )
    app.command("pipeline")(
        _pipeline_cmd(
            None, "The whole RKD pipeline, resumable: teacher -> search -> stage 1 -> stage 2 -> evaluate -> report."
        )
    )
    app.command("evaluate")(evaluate)
