"""Where a transmitter's images come from: image files, a folder, raw frames on stdin, or ``split:test``.

Every source yields ``(image, label)`` pairs: ``image`` is ``uint8 [S, S, C]`` at the bundle's size and
channel count (``manifest['normalisation']``), ``label`` a class index or ``None``. Only ``split:test`` (and
``split:val``/``split:train``) imports torch, lazily, for the dataset loader; files, folders and stdin need
numpy alone. Images are decoded with Pillow when it is installed; without it PNG (8-bit, not interlaced),
binary PGM/PPM and ``.npy`` files are read by the small decoders here.
"""

from __future__ import annotations

import os
import selectors
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rkd_edge.errors import UserError
from rkd_edge.images import eight_bit

IMAGE_SUFFIXES = (".png", ".pgm", ".ppm", ".pnm", ".npy", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow's own limit (Image.MAX_IMAGE_PIXELS): a header may declare any size, the decoders here refuse more.
MAX_PIXELS = 89_478_485


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG scanline filters (RFC 2083 section 6) -> ``uint8 [height, stride]``."""
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    pos = 0
    for r in range(height):
        ftype = raw[pos]
        line = np.frombuffer(raw, np.uint8, stride, pos + 1).astype(np.int32)
        pos += stride + 1
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):
            cur = line.copy()
            for i in range(stride):  # left-to-right dependence: no vectorised form
                a = int(cur[i - bpp]) if i >= bpp else 0
                b = int(prev[i])
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) >> 1
                else:
                    c = int(prev[i - bpp]) if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {ftype}")
        out[r] = cur
        prev = cur
    return out


def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA or palette) -> ``uint8 [H, W, C]``."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, idat, palette, ihdr = 8, [], None, None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if ihdr is None:
        raise ValueError("PNG without a header")
    w, h, depth, color, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if depth != 8 or interlace or channels is None:
        raise ValueError(f"PNG with bit depth {depth}, colour type {color}, interlace {interlace}: install Pillow")
    _check_size(w, h)
    expected = h * (w * channels + 1)  # a filter byte per row
    # Inflate no more than the header declares: a few MB of IDAT can expand to many GB.
    raw = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    if len(raw) != expected:
        raise ValueError(f"PNG data holds {'more' if len(raw) > expected else 'less'} than its {w}x{h} header says")
    px = _unfilter(raw, h, w * channels, channels).reshape(h, w, channels)
    if color == 3:
        if palette is None:
            raise ValueError("palette PNG without a palette")
        px = palette[px[..., 0]]
    elif color in (4, 6):
        px = px[..., :-1]  # drop alpha
    return px


def read_pnm(data: bytes) -> np.ndarray:
    """Decode a binary PGM (P5) or PPM (P6) with maxval 1..255 -> ``uint8 [H, W, C]``, maxval as 255."""
    fields, pos = [], 2
    if data[:2] not in (b"P5", b"P6"):
        raise ValueError("not a binary PGM/PPM file")
    while len(fields) < 3:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1
            if pos == 0:
                break
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if not data[pos:end].isdigit():
            break
        fields.append(int(data[pos:end]))
        pos = end
    if len(fields) < 3 or pos >= len(data):
        raise ValueError("truncated or malformed PGM/PPM header (width, height and maxval, then one space)")
    w, h, maxval = fields
    if maxval > 255:
        raise ValueError("16-bit PGM/PPM: install Pillow")
    if maxval == 0:
        raise ValueError("PGM/PPM maxval 0: the header says no pixel can be brighter than black")
    _check_size(w, h)
    c = 1 if data[:2] == b"P5" else 3
    if len(data) - (pos + 1) < w * h * c:
        raise ValueError(f"PGM/PPM data shorter than its {w}x{h} header says")
    px = np.frombuffer(data, np.uint8, w * h * c, pos + 1).reshape(h, w, c)
    if maxval == 255:
        return px
    # maxval is white: scaled to 255 as Pillow does (values above it clamped first), so a 0..16 digit PGM reads
    # the same on a board without Pillow as with it.
    return np.rint(np.minimum(px, maxval).astype(np.float64) * 255 / maxval).astype(np.uint8)  # half to even


def _check_size(w: int, h: int) -> None:
    if min(w, h) < 1 or w * h > MAX_PIXELS:
        raise ValueError(f"image of {w}x{h} pixels: 1 to {MAX_PIXELS:,} pixels are read")


def read_image(path: Path) -> np.ndarray:
    """Any image file -> ``uint8 [H, W, C]`` (Pillow when installed, else the decoders here)."""
    try:
        from PIL import Image  # optional: a torch-free install may not have it
    except ImportError:
        Image = None
    try:
        if path.suffix.lower() == ".npy":
            try:  # mapped: the header is checked before any memory is taken
                a = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                if "mmap length" not in str(exc):
                    raise
                raise ValueError("its header declares more data than the file holds (truncated?)") from None
            if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and not 1 <= a.shape[2] <= 4):
                raise ValueError(
                    f"a .npy image must be uint8 [H, W] or [H, W, C] with C = 1..4, got {a.dtype} {list(a.shape)}"
                )
            _check_size(a.shape[1], a.shape[0])
            a = np.array(a)
            return a[..., None] if a.ndim == 2 else a
        if Image is not None:
            with Image.open(path) as im:
                im = eight_bit(im)
                a = np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB"))
            return a[..., None] if a.ndim == 2 else a
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            return read_png(data)
        if data[:2] in (b"P5", b"P6"):
            return read_pnm(data)
        raise ValueError("without Pillow only PNG, PGM/PPM and .npy images can be read (pip install pillow)")
    except (OSError, ValueError, zlib.error, struct.error, IndexError, *_pillow_errors(Image)) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None


def _pillow_errors(image_module) -> tuple[type[Exception], ...]:
    """Pillow's refusals that are not OSError: an image over its pixel limit (a decompression bomb)."""
    return (image_module.DecompressionBombError,) if image_module is not None else ()


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres, like torch's ``align_corners=False``) of ``uint8 [H, W, C]``."""
    h, w, _ = img.shape
    if (h, w) == (size, size):
        return img

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n - 1), (src - lo).astype(np.float32)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    a = img.astype(np.float32)
    top = a[y0][:, x0] * (1 - fx)[None, :, None] + a[y0][:, x1] * fx[None, :, None]
    bot = a[y1][:, x0] * (1 - fx)[None, :, None] + a[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def conform(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """``uint8 [H, W, C]``, C = 1..4 -> ``uint8 [size, size, channels]``: an alpha channel (C = 2 or 4) is
    dropped, then grey is repeated to RGB and RGB averaged to grey, as
    :meth:`rkd_edge.runtime.Runtime.preprocess` does."""
    if img.shape[-1] in (2, 4):  # grey + alpha, RGBA: the picture without its transparency
        img = img[..., : img.shape[-1] - 1]
    if img.shape[-1] != channels:
        img = np.repeat(img, channels, -1) if img.shape[-1] == 1 else img.mean(-1, keepdims=True).round()
        img = img.astype(np.uint8)
    return resize(img, size)


def _files(paths: list[Path], classes: list[str]) -> list[tuple[Path, int | None]]:
    """Expand folders (recursively, sorted); a file's label is its parent folder's name when that names a class."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {p}")
            out += [(f, index.get(f.parent.name) if f.parent != p else None) for f in found]
        elif p.is_file():
            out.append((p, index.get(p.parent.name)))
        else:
            what = "is not a regular file or folder" if p.exists() else "does not exist"
            raise UserError(f"source {p} {what}; give image files, a folder, split:test or - for stdin")
    return out


def stdin_frames(
    size: int, channels: int, stop: Callable[[], bool], fd: int = 0
) -> Iterator[tuple[np.ndarray, int | None]]:
    """Raw ``uint8 [size, size, channels]`` frames from a file descriptor until EOF or ``stop()``.

    Waits with a timeout so that a signal stops a transmitter blocked on an idle pipe.

    Raises:
        UserError: the stream ends in the middle of a frame, or holds none (as an empty folder is refused).
    """
    n = size * size * channels
    frames = 0
    sel = selectors.DefaultSelector()
    try:
        sel.register(fd, selectors.EVENT_READ)
    except (PermissionError, ValueError):  # a regular file cannot be polled: it is always ready
        sel = None
    buf = bytearray()
    while not stop():
        if sel is not None and not sel.select(0.2):
            continue
        chunk = os.read(fd, max(n - len(buf), 1 << 16))
        if not chunk:
            if buf:
                raise UserError(
                    f"stdin ended inside a frame: {len(buf)} of {n} bytes ({size}x{size}x{channels} uint8 per frame)"
                )
            if not frames:
                raise UserError(
                    f"stdin (-) ended before its first frame: pipe raw {size}x{size}x{channels} uint8 frames "
                    f"({n} bytes each) into tx"
                )
            return
        buf += chunk
        while len(buf) >= n:
            frames += 1
            yield np.frombuffer(bytes(buf[:n]), np.uint8).reshape(size, size, channels), None
            del buf[:n]


def split_images(bundle: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's dataset split (``uint8 [N, H, W, C]``, ``int64 [N]``), loaded with its run's data config.

    Imports torch (the dataset loaders need it).

    Raises:
        UserError: the bundle has no ``config.json`` or its data are not present here.
    """
    try:  # here, not at the top: files, folders and stdin must work on a transmitter without PyTorch
        from rkd_edge.config import read_config
        from rkd_edge.data import create_dataset
    except ImportError as exc:
        raise UserError(
            f"split:{which} needs PyTorch for the dataset loaders ({exc}); on this machine give image files, "
            "a folder, or - for raw frames on stdin"
        ) from None
    cfg = read_config(bundle / "config.json", "bundle config")
    d = cfg.data
    splits = create_dataset(d.name, d.data_dir, d.image_size, d.channels, cfg.seed, d.val_fraction, d.test_fraction)
    split = {"test": splits.test, "val": splits.val, "train": splits.train}[which]
    return split.images, split.labels


def open_source(
    source: list[str], bundle: Path, manifest: dict, stop: Callable[[], bool], repeat: bool = False
) -> tuple[Iterator[tuple[np.ndarray, int | None]], dict]:
    """Parse SOURCE and return ``(iterator of (image, label), description)``.

    Args:
        source: Image files and folders, or one ``split:test`` / ``split:val`` / ``split:train``, or one ``-``.
        bundle: The bundle folder (``split:`` reads its ``config.json``).
        manifest: The bundle's manifest (image size, channels, classes).
        stop: Returns True once the transmitter should stop (a signal).
        repeat: Cycle the source until stopped (not for stdin).

    Raises:
        UserError: no source, a mixed source, a missing file, an unreadable image, an unknown split.
    """
    norm = manifest["normalisation"]
    size, channels = int(norm["size"]), int(norm["channels"])
    if not source:
        raise UserError("give a SOURCE: image files, a folder, split:test, or - for raw frames on stdin")
    special = [s for s in source if s == "-" or s.startswith("split:")]
    if special and len(source) > 1:
        raise UserError(f"{special[0]} must be the only SOURCE, got {len(source)} sources")
    head = source[0]
    if head == "-":
        if repeat:
            raise UserError("--repeat cannot cycle stdin; drop --repeat or give files")
        return stdin_frames(size, channels, stop), {"source": "stdin", "frame_shape": [size, size, channels]}
    if head.startswith("split:"):
        which = head.partition(":")[2]
        if which not in ("test", "val", "train"):
            raise UserError(f"unknown split {which!r}; use split:test, split:val or split:train")
        images, labels = split_images(bundle, which)
        if images.shape[1:3] != (size, size):
            images = np.stack([conform(im, size, channels) for im in images])

        def split_iter():
            while True:
                for im, y in zip(images, labels, strict=True):
                    yield im, int(y)
                if not repeat:
                    return

        return split_iter(), {"source": head, "images": len(labels), "repeat": repeat}
    files = _files([Path(s) for s in source], list(manifest.get("classes", [])))

    def file_iter():
        while True:
            for path, label in files:
                yield conform(read_image(path), size, channels), label
            if not repeat:
                return

    labelled = sum(label is not None for _, label in files)
    return file_iter(), {"source": "files", "images": len(files), "labelled": labelled, "repeat": repeat}
