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
