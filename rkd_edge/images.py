"""Image files to 8 bits per channel (Pillow), for the data loaders and the torch-free transmitter alike."""

from __future__ import annotations

import numpy as np

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit PNG/TIFF greyscale, and Pillow's 32-bit int


def eight_bit(im):
    """``im`` (a Pillow image) with 8 bits per channel.

    Pillow's ``convert`` clips a 16-bit image's values above 255 to white: every 16-bit photograph became
    one flat image. Integer images are scaled from their range instead (16 bits, or 32 bits past 65535);
    floating-point images have no range to scale from and are refused.

    Raises:
        ValueError: a floating-point (mode ``F``) image.
    """
    from PIL import Image

    if im.mode == "F":
        raise ValueError("a floating-point image has no pixel range to read; save it with 8 or 16 bits")
    if im.mode not in WIDE_MODES:
        return im
    a = np.asarray(im).astype(np.int64)
    top = 65535 if a.max(initial=0) <= 65535 else 2**31 - 1
    return Image.fromarray((np.clip(a, 0, top) * 255 // top).astype(np.uint8), "L")
