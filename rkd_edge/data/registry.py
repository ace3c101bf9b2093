"""The dataset registry and :func:`create_dataset`."""

from __future__ import annotations

from collections.abc import Callable

from rkd_edge.data import sources
from rkd_edge.data.splits import DataSplits, Split, split_indices
from rkd_edge.data.transforms import ImageTransform, channel_stats
from rkd_edge.errors import UserError

# name -> (loader(data_dir, image_size) -> RawData, horizontal flips are label-preserving)
DATASETS: dict[str, tuple[Callable, bool]] = {
    "digits": (lambda data_dir, size: sources.load_digits(), False),
    "fashion-mnist": (lambda data_dir, size: sources.load_fashion_mnist(data_dir), True),
    "cifar10": (lambda data_dir, size: sources.load_cifar(10, data_dir), True),
    "cifar100": (lambda data_dir, size: sources.load_cifar(100, data_dir), True),
    "imagefolder": (lambda path, size: sources.load_imagefolder(path, size), True),
}


def dataset_names() -> list[str]:
    """Registered names; ``imagefolder`` is used as ``imagefolder:PATH``."""
    return [n if n != "imagefolder" else "imagefolder:PATH" for n in DATASETS]


def create_dataset(
    name: str,
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DataSplits:
    """Load a dataset and split it deterministically.

    Args:
        name: A registered name, or ``imagefolder:PATH``.
        data_dir: Where to look for files (datasets that need them).
        image_size: Output side length in pixels; ``None`` keeps the native size.
        channels: Output channels (1 or 3); ``None`` keeps the native count.
        seed: Split seed.
        val_fraction: Fraction of the training pool held out for validation.
        test_fraction: Fraction held out for test where the source has no official test split.
    """
    key, _, arg = name.partition(":")
    if key not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")
    if key == "imagefolder" and not arg:
        raise UserError("imagefolder needs a path: use imagefolder:PATH")
    if data_dir and key in ("digits", "imagefolder"):  # an ignored folder would hide a typo in the name
        where = "ships with scikit-learn" if key == "digits" else "reads the folder after imagefolder:"
        raise UserError(f"{key} reads no --data-dir ({where}); leave --data-dir (data.data_dir) out")
    if channels not in (None, 1, 3):
        raise UserError(f"data.channels (--channels) is 1 (grey) or 3 (RGB), got {channels}")
    if image_size is not None and not 4 <= image_size <= 1024:
        raise UserError(f"image size must be between 4 and 1024 pixels, got {image_size}")
    loader, flip = DATASETS[key]
    raw = loader(arg if key == "imagefolder" else data_dir, image_size)
    n = len(raw.labels)
    tr, va, te = split_indices(n, raw.labels, seed, val_fraction, test_fraction, raw.test_start)
    # Training keeps the epoch that scores best on validation and reports test accuracy: neither may be empty.
    for split, ix, key, fraction in (
        ("validation", va, "data.val_fraction", val_fraction),
        ("test", te, "data.test_fraction", test_fraction),
    ):
        if len(ix) == 0:
            raise UserError(
                f"{key} {fraction:g} leaves no {split} images of {name}'s {n:,}; raise it (--set {key}=F) or add images"
            )
    out_c = channels or raw.images.shape[-1]
    out_s = image_size or raw.images.shape[1]
    mean, std = channel_stats(raw.images[tr], out_c)
    if min(std) < 1e-6:  # normalised by it, every image is one value and every loss NaN or flat
        raise UserError(
            f"the training images of {name} are one flat value in a channel (standard deviation 0); "
            "check that they are the pictures meant (a 16-bit export clipped to white, a blank scan)"
        )
    transform = ImageTransform(size=out_s, channels=out_c, mean=mean, std=std)
    splits = {
        nm: Split(nm, raw.images[ix], raw.labels[ix], ix.astype("int64"), transform, flip)
        for nm, ix in (("train", tr), ("val", va), ("test", te))
    }
    return DataSplits(
        name=name,
        classes=raw.classes,
        source=raw.source,
        transform=transform,
        notes={
            "loaded_shape": list(raw.images.shape[1:]),  # H x W x C as read (imagefolder: squares, RGB)
            "official_test_split": raw.test_start is not None,
            **raw.notes,
        },
        **splits,
    )
