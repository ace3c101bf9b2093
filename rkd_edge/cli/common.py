"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
import re

import typer

from rkd_edge.config import RunConfig, from_dict, load_config
from rkd_edge.errors import UserError

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
    set_keys = {o.split("=", 1)[0].strip() for o in overrides or ()}
    for key, value in given.items():
        if value is None:
            continue
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node[part]
        if key in set_keys and node[last] != value:  # one of the two would be dropped without a word
            raise UserError(f"--set {key}={node[last]} and the option for {key} ({value}) disagree; give one of them")
        node[last] = value
    # Rebuilt from the dict, so that flag values pass the same type and range checks as --set values.
    return from_dict(data)


def check_values(values: dict, flags: dict[str, str] | None = None) -> None:
    """Check options that mirror config keys (``{"seed": 3, "data.image_size": 28}``; ``None`` = not given)
    with the config's own type and range rules: one line naming the option (``flags``: key -> flag, e.g.
    ``{"data.image_size": "--image-size"}``; else the key), the value and what is allowed."""
    data: dict = {}
    for key, value in values.items():
        if value is None:
            continue
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        from_dict(data)
    except UserError as exc:
        text = str(exc)
        for key, flag in (flags or {}).items():
            if text.startswith(f"{key}:"):
                raise UserError(flag + text[len(key) :]) from None
        raise


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def comma_list(text: str | None, option: str, cast=str, example: str = "1,32") -> list | None:
    """``a,b,c`` -> ``[cast(a), ...]`` (``None`` stays ``None``). An empty item (``1,,2``, ``","``), a value
    ``cast`` refuses and a repeated value are each one line: none of them is ever what a user meant."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise UserError(f"{option} has an empty item in {text!r}; give a comma list like {example}")
    try:
        if cast is int and not all(re.fullmatch(r"[+-]?[0-9]+", t) for t in items):  # not 1_0, not other scripts
            raise ValueError
        values = [cast(t) for t in items]
    except ValueError:
        raise UserError(f"{option} takes a comma list like {example}, got {text!r}") from None
    if len(set(values)) != len(values):
        raise UserError(f"{option} repeats a value in {text!r}; give each once")
    return values
