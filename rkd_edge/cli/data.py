"""``rkd-edge data``: dataset information."""

from __future__ import annotations

import typer

from rkd_edge.cli.common import DATA_DIR, check_values, echo_json

app = typer.Typer(no_args_is_help=True)
FLAGS = {"seed": "--seed", "data.image_size": "--image-size", "data.channels": "--channels"}


@app.command("info")
def info(
    name: str = typer.Argument(..., help="digits, fashion-mnist, cifar10, cifar100 or imagefolder:PATH."),
    data_dir: str = DATA_DIR,
    image_size: int = typer.Option(None, help="Resize to this side (pixels)."),
    channels: int = typer.Option(None, help="1 (grey) or 3 (RGB)."),
    seed: int = 0,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Print size, classes, shape, normalisation and where the data came from."""
    from rkd_edge.data import create_dataset

    check_values({"seed": seed, "data.image_size": image_size, "data.channels": channels}, FLAGS)
    d = create_dataset(name, data_dir, image_size, channels, seed)
    info = d.info()
    if as_json:
        echo_json(info)
        return
    s = info["sizes"]
    typer.echo(
        f"dataset     {info['name']}\nsource      {info['source']}\n"
        f"samples     {s['train'] + s['val'] + s['test']} (train {s['train']}, val {s['val']}, "
        f"test {s['test']}{', official test split' if info['official_test_split'] else ''})\n"
        f"shape       {' x '.join(map(str, info['input_shape']))} (C x H x W; as loaded "
        f"{' x '.join(map(str, info['loaded_shape']))} H x W x C)\n"
        f"classes     {info['num_classes']}: {', '.join(info['classes'][:12])}"
        f"{' ...' if info['num_classes'] > 12 else ''}\n"
        f"normalise   mean {info['normalisation']['mean']} std {info['normalisation']['std']}"
    )


@app.command("list")
def list_datasets():
    """List the registered datasets."""
    from rkd_edge.data import dataset_names

    for n in dataset_names():
        typer.echo(n)
