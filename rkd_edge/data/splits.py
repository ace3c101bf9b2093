"""Deterministic train/val/test splits and batch iteration over in-memory images."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from rkd_edge.data.transforms import ImageTransform, augment


@dataclass
class Split:
    """One split: images, labels and their global sample ids (stable across runs, used as cache keys).

    Attributes:
        images: ``uint8 [N, H, W, C]``.
        labels: ``int64 [N]``.
        ids: ``int64 [N]`` index of each sample in the full source.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    transform: ImageTransform
    flip: bool = False
    # Set on views made by :meth:`on`: the device, its uint8 images / int64 labels, and whether the images
    # live there (else pinned host memory, copied per batch). Compared never, shown never.
    device: str = field(default="cpu", repr=False, compare=False)
    _dev: tuple | None = field(default=None, repr=False, compare=False)
    _views: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    def on(self, device: str) -> Split:
        """This split with batches made on ``device``: a view, uploaded once and kept for later calls.

        On ``cpu`` it is the split itself (unchanged batches). On a GPU the ``uint8`` images go to the
        device when they take at most a quarter of its memory (every dataset rkd-edge ships at its native
        size), else into pinned host memory, copied per batch as ``uint8``; either way conversion,
        resizing, normalisation and augmentation run on the device, batch order and positions too.
        """
        if device == "cpu" or self.device == device:
            return self
        if device not in self._views:
            budget = torch.cuda.get_device_properties(torch.device(device)).total_memory // 4
            self._views[device] = self.view(device, resident=self.images.nbytes <= budget)
        return self._views[device]

    def view(self, device: str, resident: bool = True) -> Split:
        """A new device view (see :meth:`on`, which keeps one per device). ``resident=False`` keeps the
        images in host memory, pinned where CUDA is present. On ``cpu`` it batches exactly as the split."""
        images = torch.from_numpy(np.ascontiguousarray(self.images))
        if resident:
            images = images.to(device)
        elif torch.cuda.is_available():
            images = images.pin_memory()
        view = Split(self.name, self.images, self.labels, self.ids, self.transform, self.flip)
        view.device, view._dev = device, (images, torch.from_numpy(self.labels).to(device), resident)
        return view

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        augment_data: bool = False,
        rank: int = 0,
        world: int = 1,
        limit: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x float32 [B, C, S, S], y int64 [B], pos int64 [B])`` batches.

        ``pos`` are positions within this split (index into cached teacher outputs). The order is a
        pure function of ``(seed, epoch)``, so an interrupted run resumes on the same batches. With
        ``world > 1`` each rank takes an equal, disjoint share (the tail is dropped to keep ranks equal).
        """
        if self._dev is not None:
            yield from self._device_batches(batch_size, shuffle, seed, epoch, augment_data, rank, world, limit)
            return
        n = len(self) if limit is None else min(limit, len(self))
        if shuffle:
            g = torch.Generator().manual_seed(hash_seed(seed, "order", epoch))
            order = torch.randperm(len(self), generator=g)[:n].numpy()
        else:
            order = np.arange(n)
        if world > 1:
            per = n // world
            order = order[rank * per : (rank + 1) * per]
        g_aug = torch.Generator().manual_seed(hash_seed(seed, "augment", epoch, rank))
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            x = self.transform(self.images[pos])
            if augment_data:
                x = augment(x, g_aug, self.flip)
            yield x, torch.from_numpy(self.labels[pos]), torch.from_numpy(pos)

    def _device_batches(self, batch_size, shuffle, seed, epoch, augment_data, rank, world, limit):
        """:meth:`batches` of a device view: the same order (drawn on the host once per epoch), positions
        and labels as device tensors, augmentation from a generator on the device (its own stream)."""
        images, labels, resident = self._dev
        n = len(self) if limit is None else min(limit, len(self))
        if shuffle:
            g = torch.Generator().manual_seed(hash_seed(seed, "order", epoch))
            order = torch.randperm(len(self), generator=g)[:n]
        else:
            order = torch.arange(n)
        if world > 1:
            per = n // world
            order = order[rank * per : (rank + 1) * per]
        order_dev = order.to(self.device)
        g_aug = torch.Generator(device=self.device).manual_seed(hash_seed(seed, "augment", epoch, rank))
        for start in range(0, len(order), batch_size):
            pos = order_dev[start : start + batch_size]
            if resident:
                raw = images[pos]
            else:
                raw = images[order[start : start + batch_size]]
                raw = (raw.pin_memory() if raw.device.type == "cpu" and torch.cuda.is_available() else raw).to(
                    self.device, non_blocking=True
                )
            x = self.transform(raw)
            if augment_data:
                x = augment(x, g_aug, self.flip)
            yield x, labels[pos], pos

    def fingerprint(self) -> str:
        """sha256 over ids, labels and pixels: changes whenever the samples change."""
        h = hashlib.sha256()
        for arr in (self.ids, self.labels, self.images):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


@dataclass
class DataSplits:
    """A dataset split three ways, with what downstream code needs to know about it."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    source: str
    transform: ImageTransform
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the transformed images."""
        t = self.transform
        return (t.channels, t.size, t.size)

    @property
    def source_dim(self) -> int:
        """Source dimension ``C*H*W`` (pixels) for bandwidth ratios."""
        c, h, w = self.input_shape
        return c * h * w

    def info(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "classes": self.classes,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "normalisation": {"mean": list(self.transform.mean), "std": list(self.transform.std)},
            **self.notes,
        }


def hash_seed(*parts) -> int:
    """A 63-bit seed derived from the run seed and labels: one seed source, many streams."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def split_indices(
    n: int, labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float, test_start: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split. An official test split (``test_start``) is kept as the test split."""
    rng = np.random.default_rng(hash_seed(seed, "split"))
    if test_start is not None:
        pool, test = np.arange(test_start), np.arange(test_start, n)
        fractions = {"val": val_fraction}
    else:
        pool, test = np.arange(n), None
        fractions = {"val": val_fraction, "test": test_fraction}
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels[pool]):
        idx = pool[labels[pool] == c]
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * fractions["val"]))
        n_test = int(round(len(idx) * fractions.get("test", 0.0)))
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    out = {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in parts.items()}
    if test is not None:
        out["test"] = test
    return out["train"], out["val"], out["test"]


def subset(split: Split, positions: np.ndarray, name: str) -> Split:
    """Rows ``positions`` of ``split`` as a new split (global ids are kept)."""
    return Split(
        name, split.images[positions], split.labels[positions], split.ids[positions], split.transform, split.flip
    )
