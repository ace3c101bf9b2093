"""Loaders that turn each data source into raw arrays (``uint8 [N, H, W, C]``, ``int64 [N]``)."""

from __future__ import annotations

import gzip
import os
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rkd_edge.errors import UserError
from rkd_edge.images import eight_bit
from rkd_edge.limits import IMAGE_SIZE_RANGE

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class RawData:
    """A labelled image set before splitting.

    Attributes:
        images: ``uint8 [N, H, W, C]`` pixel values 0..255.
        labels: ``int64 [N]`` class indices.
        classes: Class names, index-aligned with labels.
        source: Where the data came from (a path or package name), for ``data info`` and records.
        test_start: If the source has an official test split, the index where it starts.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str
    test_start: int | None = None
    notes: dict = field(default_factory=dict)


def load_digits() -> RawData:
    """scikit-learn's 1,797 8x8 digits (values 0..16, rescaled to 0..255)."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    return RawData(images, d.target.astype(np.int64), [str(i) for i in range(10)], "scikit-learn digits")


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, ValueError, struct.error) as exc:
        raise UserError(f"cannot read IDX file {path}: {exc}; re-download or reinstall the dataset") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(data_dir: str | None) -> RawData:
    """Fashion-MNIST from IDX files: ``data_dir``, the Debian package, or a torchvision download."""
    # A --data-dir that lacks the files is an error, not a cue to read another copy from elsewhere.
    candidates = [Path(data_dir)] if data_dir else [Path(FASHION_DEBIAN_DIR)]
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for folder in candidates:
        for sub in (folder, folder / "FashionMNIST" / "raw"):
            files = [_find_idx(sub, s) for s in stems]
            if all(files):
                tr_x, tr_y, te_x, te_y = (read_idx(f) for f in files)
                images = np.concatenate([tr_x, te_x])[..., None]
                labels = np.concatenate([tr_y, te_y]).astype(np.int64)
                return RawData(images, labels, FASHION_CLASSES, _portable(sub), test_start=len(tr_x))
    if data_dir and os.environ.get("RKD_EDGE_DOWNLOAD") == "1":
        return _torchvision_set("FashionMNIST", data_dir, FASHION_CLASSES)
    if data_dir:
        raise UserError(
            f"--data-dir {data_dir} holds no fashion-mnist IDX files ({stems[0]}, ...); give the folder with the "
            "four files, or leave --data-dir out to read the Debian package dataset-fashion-mnist"
        )
    raise UserError(
        "fashion-mnist not found: install the Debian package dataset-fashion-mnist, or pass "
        "--data-dir with the four IDX files (set RKD_EDGE_DOWNLOAD=1 to download there)"
    )


def _portable(path: Path) -> str:
    """A path for records: system paths as they are, others relative to the working directory."""
    path = Path(path)
    if str(path).startswith("/usr/"):
        return str(path)
    try:
        return os.path.relpath(path)
    except ValueError:
        return path.name


def _torchvision_set(cls_name: str, data_dir: str | None, classes: list[str] | None = None) -> RawData:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise UserError(f"{cls_name} needs torchvision: pip install 'rkd-edge[vision]'") from None
    root = data_dir or os.path.join(os.path.expanduser("~"), ".cache", "rkd-edge", "data")
    download = os.environ.get("RKD_EDGE_DOWNLOAD") == "1"
    try:
        tr = getattr(tvd, cls_name)(root, train=True, download=download)
        te = getattr(tvd, cls_name)(root, train=False, download=download)
    except (RuntimeError, OSError) as exc:
        raise UserError(
            f"{cls_name} not found under {root} ({str(exc).splitlines()[0]}); pass --data-dir "
            "to a copy, or set RKD_EDGE_DOWNLOAD=1 with internet access"
        ) from None
    xs = [np.asarray(d.data) for d in (tr, te)]
    xs = [x[..., None] if x.ndim == 3 else x for x in xs]
    ys = [np.asarray(d.targets, dtype=np.int64) for d in (tr, te)]
    names = classes or list(getattr(tr, "classes", [str(i) for i in range(int(ys[0].max()) + 1)]))
    return RawData(
        np.concatenate(xs).astype(np.uint8), np.concatenate(ys), names, _portable(Path(root)), test_start=len(xs[0])
    )


def load_cifar(n_classes: int, data_dir: str | None) -> RawData:
    """CIFAR-10 or CIFAR-100 through torchvision (a local copy, or a download where allowed)."""
    return _torchvision_set("CIFAR10" if n_classes == 10 else "CIFAR100", data_dir)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# Folders an image folder's tools leave beside the classes (notebooks, macOS archives): not classes.
NOT_CLASSES = ("__MACOSX",)
# Text direction overrides and isolates: in a class name they reverse how every list of classes reads.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def class_folders(root: Path) -> list[str]:
    """The class folders of an image folder, sorted: hidden folders and :data:`NOT_CLASSES` are skipped.

    Raises:
        UserError: a class name with a control character (it would break the CSV, logs and manifests), or
            two class folders that are one folder (a link: the same images under two labels).
    """
    classes = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_CLASSES
    )
    for name in classes:
        if any(unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS for ch in name):
            raise UserError(f"imagefolder class folder {name!r} has a control character in its name; rename it")
    seen: dict[Path, str] = {}
    for name in classes:
        real = (root / name).resolve()
        if real in seen:
            raise UserError(
                f"imagefolder class folders {seen[real]!r} and {name!r} are the same folder (a link); keep one of them"
            )
        seen[real] = name
    return classes


def _first_size(f: Path, wh: tuple[int, int]) -> int:
    """The image size an image folder takes from its first image (its shorter side), if in range."""
    lo, hi = IMAGE_SIZE_RANGE
    if not lo <= min(wh) <= hi:
        raise UserError(
            f"the first image {f} is {wh[0]}x{wh[1]} px: its shorter side sets the image size, which must be "
            f"{lo} to {hi}; give one with --set data.image_size=N (data info: --image-size N)"
        )
    return min(wh)


def load_imagefolder(path: str, image_size: int | None) -> RawData:
    """Images in ``PATH/CLASS/*.png`` folders, resized to ``image_size`` squares at load time (default: the
    shorter side of the first image)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"imagefolder path {path!r} is not a directory; give PATH with one folder per class")
    classes = class_folders(root)
    if len(classes) < 2:
        raise UserError(f"imagefolder {path!r} needs at least two class folders, found {len(classes)}")
    size = image_size
    images, labels = [], []
    for ci, cname in enumerate(classes):
        for f in sorted((root / cname).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith("."):  # macOS's ._x.png, thumbnails
                continue
            if not f.is_file():  # a FIFO would block the read forever
                raise UserError(f"{f} is not a regular file (a FIFO, device or folder); remove it from the dataset")
            try:
                with Image.open(f) as im:
                    size = size or _first_size(f, im.size)
                    im = eight_bit(im).convert("RGB").resize((size, size), Image.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8))
            except ValueError as exc:  # a floating-point image (eight_bit)
                raise UserError(f"cannot read image {f}: {exc}") from None
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
                raise UserError(f"cannot read image {f}; remove or replace it") from None
            labels.append(ci)
    if not images:
        raise UserError(f"imagefolder {path!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    # A class with no image of its own (an empty folder, or images only in subfolders) cannot be learned.
    held = set(labels)
    if empty := [c for i, c in enumerate(classes) if i not in held]:
        raise UserError(f"imagefolder class folder {empty[0]!r} holds no images directly; fill it or remove it")
    return RawData(np.stack(images), np.asarray(labels, dtype=np.int64), classes, _portable(root))
