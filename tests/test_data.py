"""Datasets: every registered source builds, splits are deterministic and disjoint."""

import shutil

import numpy as np
import pytest

from rkd_edge.data import create_dataset, dataset_names
from rkd_edge.data.sources import FASHION_DEBIAN_DIR
from rkd_edge.errors import UserError


def _check(d, n_classes):
    ids = [set(s.ids.tolist()) for s in (d.train, d.val, d.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    x, y, pos = next(d.train.batches(8, shuffle=True, seed=1))
    assert x.shape == (8, *d.input_shape) and x.dtype.is_floating_point
    assert y.max() < n_classes and len(pos) == 8
    assert d.num_classes == n_classes == len(d.classes)


def test_digits(digits):
    _check(digits, 10)
    assert digits.input_shape == (1, 8, 8)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797


@pytest.mark.skipif(not __import__("os").path.isdir(FASHION_DEBIAN_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_official_split():
    d = create_dataset("fashion-mnist")
    _check(d, 10)
    assert len(d.test) == 10000 and len(d.train) + len(d.val) == 60000
    assert d.info()["official_test_split"]


def test_imagefolder_and_resize(rgb_folder):
    d = create_dataset(f"imagefolder:{rgb_folder}", image_size=24)
    _check(d, 3)
    assert d.input_shape == (3, 24, 24)
    g = create_dataset(f"imagefolder:{rgb_folder}", image_size=8, channels=1)
    assert g.input_shape == (1, 8, 8)


def test_hidden_and_archive_folders_are_not_classes(rgb_folder, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(rgb_folder, root)
    for junk in (".ipynb_checkpoints", "__MACOSX"):
        shutil.copytree(rgb_folder / "red", root / junk)
    (root / "red" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS's metadata twin
    shutil.copy(rgb_folder / "blue" / "000.png", root / "red" / ".thumb.png")
    d = create_dataset(f"imagefolder:{root}", image_size=8)
    assert d.classes == ["blue", "green", "red"]
    assert len(d.train) + len(d.val) + len(d.test) == 120
    (root / "gr\u202eeen").mkdir()  # a right-to-left override reverses how the class list reads
    shutil.copy(rgb_folder / "blue" / "000.png", root / "gr\u202eeen" / "0.png")
    with pytest.raises(UserError, match="control character"):
        create_dataset(f"imagefolder:{root}", image_size=8)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_registered_and_clear_when_missing(name, tmp_path):
    try:
        d = create_dataset(name, data_dir=str(tmp_path))
    except UserError as exc:
        assert "--data-dir" in str(exc) and "\n" not in str(exc)
    else:  # a local copy exists
        _check(d, 10 if name == "cifar10" else 100)


def test_sizes_from_8_to_224(digits):
    d = create_dataset("digits", image_size=224, channels=3)
    x, _, _ = next(d.test.batches(2))
    assert x.shape == (2, 3, 224, 224)
    assert abs(float(x.mean())) < 1.0


def test_splits_are_seeded():
    a, b, c = (create_dataset("digits", seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.test.ids, b.test.ids)
    assert not np.array_equal(a.test.ids, c.test.ids)
    o1 = next(a.train.batches(16, shuffle=True, seed=3, epoch=2))[2]
    o2 = next(b.train.batches(16, shuffle=True, seed=3, epoch=2))[2]
    assert np.array_equal(o1, o2)


def test_normalisation_recorded(digits):
    info = digits.info()
    x = np.concatenate([xb.numpy() for xb, _, _ in digits.train.batches(512)])
    assert abs(x.mean()) < 1e-3 and abs(x.std() - 1) < 1e-2
    assert info["normalisation"]["mean"] and info["source"]


def test_every_name_listed():
    assert {"digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH"} == set(dataset_names())


def _grey_folder(root, values: dict[str, tuple[int, int]], dtype: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, (lo, hi) in values.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(lo, hi, (16, 16)).astype(dtype)).save(root / name / f"{i}.png")


def test_16_bit_images_are_scaled_not_clipped_to_white(tmp_path):
    """Pillow's convert clipped every 16-bit value above 255 to white: both classes one flat image (std 0),
    then a NaN loss blamed on the learning rate. The transmitter's reader scales them the same way."""
    from rkd_edge.link.sources import read_image

    _grey_folder(tmp_path / "d", {"dark": (256, 20_000), "bright": (40_000, 60_000)}, "uint16")
    splits = create_dataset(f"imagefolder:{tmp_path / 'd'}", seed=0, val_fraction=0.2, test_fraction=0.2)
    by_class = [splits.train.images[splits.train.labels == c].mean() for c in (0, 1)]  # bright, dark
    assert by_class[0] > 150 > 80 > by_class[1] and min(splits.transform.std) > 0.1
    picture = read_image(tmp_path / "d" / "bright" / "0.png")
    assert picture.dtype == np.uint8 and 150 < picture.mean() < 240


def test_a_dataset_of_flat_images_is_refused(tmp_path):
    _grey_folder(tmp_path / "d", {"a": (255, 256), "b": (255, 256)}, "uint8")
    with pytest.raises(UserError, match="standard deviation 0"):
        create_dataset(f"imagefolder:{tmp_path / 'd'}", seed=0, val_fraction=0.2, test_fraction=0.2)
