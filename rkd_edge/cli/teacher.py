"""``rkd-edge teacher``: train, evaluate and list teachers."""

from __future__ import annotations

import os
import shutil
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
    echo_json,
    resolve,
)
from rkd_edge.config import validate
from rkd_edge.errors import UserError
from rkd_edge.io import OutputLock, read_json, staged_dir, write_json
from rkd_edge.outputs import check_output, kind_of, write_marker

app = typer.Typer(no_args_is_help=True)


@app.command("train")
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for teacher.pt and teacher.json."),
    dataset: str = DATASET,
    arch: str = typer.Option(None, help="cnn-large, cnn-base, vit-small, vit-tiny or timm:NAME[@FILE]."),
    epochs: int = typer.Option(None, help="Training epochs."),
    data_dir: str = DATA_DIR,
    preset: str = PRESET,
    config: str = CONFIG,
    overrides: list[str] = SET,
    seed: int = SEED,
    device: str = DEVICE,
    force: bool = typer.Option(False, "--force", help="Replace a finished teacher at --out (only an rkd-edge one)."),
):
    """Train a teacher; the spec local:OUT then loads it. An unfinished teacher at OUT resumes."""
    from rkd_edge.rundir import load_splits
    from rkd_edge.teachers.registry import check_arch
    from rkd_edge.teachers.train import train_teacher

    cfg = resolve(
        preset,
        config,
        overrides,
        dataset=dataset,
        data_dir=data_dir,
        seed=seed,
        device=device,
        flags={"teacher.arch": arch, "teacher.epochs": epochs},
    )
    validate(cfg)
    check_arch(cfg.teacher.arch)
    finished = (out / "teacher.json").is_file()
    resume = out.is_dir() and kind_of(out) == "teacher" and not finished
    settings = {k: v for k, v in cfg.to_dict().items() if k != "device"}  # a resume may move to a GPU
    job = out / "teacher-job.json"
    if resume and job.is_file() and read_json(job, "teacher job", expect=dict) != settings:
        # its checkpoint holds another model, optimiser or schedule: resuming would mix the two
        if not force:
            raise UserError(
                f"{out} holds an unfinished teacher started with other settings; resume it with the same "
                "options, or give --force to start it over"
            )
        resume = False
    replace = False if resume else check_output(out, "teacher", force)
    splits, dev = load_splits(cfg), env.pick_device(cfg.device)
    existed = out.exists()  # (then an empty folder: check_output refuses anything else)
    with OutputLock(out):
        if replace:  # a forced retrain is built aside: the old teacher stays until the new one is done
            with staged_dir(out, replace=True) as work:
                write_marker(work, "teacher")
                write_json(work / job.name, settings)
                rec = train_teacher(cfg, splits, work, dev)
                rec["load_spec"] = f"local:{Path(os.path.relpath(out)).as_posix()}"
                write_json(work / "teacher.json", rec)
        else:
            try:
                write_marker(out, "teacher")
                if not job.is_file():
                    write_json(job, settings)
                rec = train_teacher(cfg, splits, out, dev)
            except UserError:
                if not resume and not any(out.glob("*.pt")):  # refused before an epoch was saved: as it was
                    for p in [out] if not existed else list(out.iterdir()):
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                raise
    typer.echo(
        f"teacher {rec['arch']}: {rec['params']:,} parameters, test accuracy {rec['accuracy']:.4f} "
        f"({rec['train_seconds']:.0f} s) -> {out}/teacher.json"
    )


@app.command("eval")
def evaluate(
    spec: str = typer.Argument(..., help="Teacher spec, e.g. local:DIR."),
    dataset: str = DATASET,
    data_dir: str = DATA_DIR,
    image_size: int = typer.Option(None, help="Side in pixels the images are resized to (default: the dataset's)."),
    channels: int = typer.Option(None, help="Image channels, 1 or 3 (the dataset's own if not set)."),
    split: str = typer.Option("test", help="train, val or test."),
    seed: int = typer.Option(0, help="Seed of the train/val/test split (the run's seed gives the run's split)."),
    device: str = RUN_DEVICE,
):
    """Report a teacher's accuracy on a dataset split."""
    from rkd_edge.data import create_dataset
    from rkd_edge.teachers import create_teacher
    from rkd_edge.teachers.base import accuracy, count_params
    from rkd_edge.teachers.registry import check_spec

    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split {split!r}; use train, val or test")
    values = {"seed": seed, "device": device, "data.image_size": image_size, "data.channels": channels}
    check_values(values, {"seed": "--seed", "device": "--device", "data.image_size": "--image-size"})
    splits = create_dataset(dataset or "digits", data_dir, image_size, channels, seed)
    check_spec(spec)
    if ":" not in spec or spec.endswith("@random"):  # an architecture name alone builds untrained weights
        raise UserError(
            f"{spec} names untrained weights, whose accuracy is chance; evaluate a trained teacher: local:DIR "
            "(rkd-edge teacher train --out DIR) or timm:NAME[@FILE]"
        )
    dev = env.pick_device(device)
    teacher = create_teacher(spec, splits.input_shape, splits.num_classes).to(dev).freeze()
    acc = accuracy(teacher, getattr(splits, split), device=dev)
    echo_json(
        {
            "spec": spec,
            "dataset": splits.name,
            "split": split,
            "accuracy": round(acc, 6),
            "params": count_params(teacher),
        }
    )


@app.command("list")
def list_teachers():
    """List teacher spec forms."""
    from rkd_edge.teachers import teacher_specs

    for s in teacher_specs():
        typer.echo(s)
