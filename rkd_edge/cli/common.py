"""Options and helpers shared by the commands."""

from __future__ import annotations

import json

import typer

from rkd_edge.config import RunConfig, from_dict, load_config

PRESET = typer.Option(None, "--preset", "-p", help="Config preset (quickstart, fashion-mnist, cifar100-clip).")
CONFIG = typer.Option(
    None, "--config", "-c", help="YAML file merged over --preset (with no --preset: over the built-in defaults)."
)
SET = typer.Option(None, "--set", help="Override a config key, e.g. --set stage1.epochs=5 (repeatable).")
DATASET = typer.Option(
    None, "--dataset", "-d", help="Dataset: digits, fashion-mnist, cifar10, cifar100, imagefolder:PATH."
)
DATA_DIR = typer.Option(None, "--data-dir", help="Folder with the dataset files.")
SEED = typer.Option(None, "--seed", help="The run's one seed.")
DEVICE = typer.Option(
    None, "--device", help="auto (CUDA if present), cpu or cuda; cuda where there is none is an error."
)
# For commands on an existing run: where it runs now, whatever device trained it.
RUN_DEVICE = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda, for this command only.")


def resolve(
    preset: str | None,
    config: str | None,
    overrides: list[str] | None,
    *,
    dataset=None,
    data_dir=None,
    seed=None,
    device=None,
    flags: dict | None = None,
    default_preset: str = "quickstart",
) -> RunConfig:
    """Preset -> file -> --set -> dedicated flags; the flags win.

    ``flags`` maps dotted config keys (``teacher.spec``) to flag values; ``None`` values are not set.
    """
    cfg = load_config(preset or (None if config else default_preset), config, overrides)
    given = {"data.name": dataset, "data.data_dir": data_dir, "seed": seed, "device": device, **(flags or {})}
    data = cfg.to_dict()
    for key, value in given.items():
        if value is None:
            continue
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node[part]
        node[last] = value
    # Rebuilt from the dict, so that flag values pass the same type and range checks as --set values.
    return from_dict(data)


def check_values(values: dict) -> None:
    """Check options that mirror config keys (``{"seed": 3, "data.image_size": 28}``; ``None`` = not given)
    with the config's own type and range rules: one line naming the key, the value and what is allowed."""
    data: dict = {}
    for key, value in values.items():
        if value is None:
            continue
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    from_dict(data)


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
