"""The tx/rx wire format: one frame carries the channel symbols of one image.

Version 1 (current)
-------------------
All integers and floats little-endian. A frame is a fixed 52-byte header, the payload, and a CRC32::

    offset size  field          type     meaning
    0      4     magic          bytes    b"RKDF"
    4      1     version        uint8    1
    5      1     dtype          uint8    payload element type: 0 = float16, 1 = int8 (times ``scale``)
    6      1     flags          uint8    bit 0: ``label`` is valid; bit 1: an authentication tag follows the
                                         payload; other bits 0 (a v1 receiver refuses others)
    7      1     channel        uint8    the channel type the transmitter's codec was conditioned on: its id in
                                         the stable table of ``rkd_edge.channel_ids`` (identity 0, awgn 1,
                                         rayleigh 2, rician 3, new types appended; never a registry's order)
    8      8     frame_id       uint64   per-transmitter counter, from 0
    16     8     timestamp_ns   uint64   transmitter's wall clock when the image entered the encoder
                                         (``time.time_ns()``; end-to-end latency needs synchronised clocks)
    24     8     bundle_id      bytes    the bundle id (16 hex digits, :attr:`Bundle.bundle_id`) as 8 raw bytes;
                                         a receiver refuses frames of any other bundle
    32     4     snr_db         float32  the SNR the transmitter's codec was conditioned on, dB (Es/N0 per
                                         complex symbol)
    36     2     k              uint16   complex symbols in the payload (1 .. the bundle's K)
    38     2     reserved       uint16   0
    40     4     label          int32    the image's class index when flag bit 0 is set, else -1
    44     4     scale          float32  int8 payload: symbol value = int8 * scale; float16: 1.0
    48     4     payload_bytes  uint32   2 * k * (2 for float16, 1 for int8)
    52     n     payload        k I/Q pairs, [k, 2] row-major (I then Q of symbol 0, then symbol 1, ...)
    52+n   t     tag            bytes    flag bit 1 only (t = 16, else 0): the first 16 bytes of HMAC-SHA256 of
                                         bytes 0 .. 52+n under the link's pre-shared key (``--key FILE``)
    52+n+t 4     crc32          uint32   zlib.crc32 of bytes 0 .. 52+n+t (header, payload and tag)

The symbols are the transmitter's unit-power symbols (mean ``|x|^2 = 1`` over the k active ones, DESIGN.md
section 2); the receiver pads them to the bundle's K with zeros and a mask. int8 uses one symmetric scale per
frame, ``scale = max|x| / 127`` (``1.0`` for an all-zero frame), ``q = round(x / scale)`` clipped to +-127.

Authentication. The CRC finds transmission errors, not forgery: anyone who knows a bundle id can send
frames a receiver accepts. With a key (both sides ``--key FILE``, the same secret bytes), every frame
carries the tag and a receiver drops frames without a valid one (``unauthenticated``); an authenticated
frame seen again with the same frame id and timestamp is a replay from anywhere, not only from its first
sender's address (``duplicate``), and ``--max-age-ms`` bounds how old a replay may be. The payload is not
encrypted.

Transport. Over TCP frames follow each other on the stream; a receiver that reads a bad magic, version or
length cannot find the next frame boundary and closes that connection. Over UDP every datagram is one
fragment, a 24-byte fragment header and a chunk of the frame::

    offset size  field          type     meaning
    0      4     magic          bytes    b"RKDU"
    4      1     version        uint8    1
    5      1     reserved       uint8    0
    6      2     index          uint16   fragment number, 0 .. count-1
    8      2     count          uint16   fragments in this frame (>= 1)
    10     2     reserved       uint16   0
    12     8     frame_id       uint64   the frame's id (reassembly key with the sender's address)
    20     4     frame_bytes    uint32   the whole frame's length
    24     m     chunk          the bytes [index * chunk_size, ...) of the frame; every chunk but the last
                                has the same size

A frame that fits in one datagram is one fragment (count 1). Reassembly waits at most a timeout for the
missing fragments of a frame and drops it then (counted).

Version history
---------------
- 1: first version (this one). Flag bit 1 (the tag) was added within it: frames without it are byte for
  byte what they were, and receivers from before refuse tagged frames as unknown flags.

Changing any field's meaning or layout increments ``VERSION``; a receiver refuses versions it does not know.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from rkd_edge.channel_ids import CHANNEL_IDS
from rkd_edge.limits import SNR_LIMIT_DB, snr_in_range

MAGIC = b"RKDF"
FRAGMENT_MAGIC = b"RKDU"
VERSION = 1

HEADER = struct.Struct("<4sBBBBQQ8sfHHifI")
FRAGMENT = struct.Struct("<4sBBHHHQI")
CRC = struct.Struct("<I")
HEADER_BYTES = HEADER.size  # 52
FRAGMENT_BYTES = FRAGMENT.size  # 24

DTYPES = {"float16": 0, "int8": 1}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
ELEMENT_BYTES = {0: 2, 1: 1}
FLAG_LABEL = 0x01
FLAG_TAG = 0x02
KNOWN_FLAGS = FLAG_LABEL | FLAG_TAG
TAG_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (RFC 2104 section 5 allows truncation to half or more)
MIN_KEY_BYTES = 16

# One table of channel ids for codecs, checkpoints, manifests and the wire (rkd_edge.channel_ids).
CHANNEL_NAMES = {v: k for k, v in CHANNEL_IDS.items()}


def longest_frame(max_k: int) -> int:
    """Longest version-1 frame of a codec that sends at most ``max_k`` complex symbols (tag included)."""
    return HEADER_BYTES + 4 * max_k + TAG_BYTES + CRC.size


# The largest k any version-1 frame can carry (uint16), and so the largest frame.
MAX_K = 0xFFFF
MAX_FRAME_BYTES = longest_frame(MAX_K)


class WireError(ValueError):
    """A frame or fragment that cannot be accepted; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        frame_id: The transmitter's frame counter.
        timestamp_ns: Transmitter wall clock (ns since the epoch) when the image entered the encoder.
        bundle_id: 16 hex digits.
        snr_db: SNR the transmitter conditioned on, dB (Es/N0).
        channel: Channel type name the transmitter conditioned on.
        symbols: ``[k, 2] float32`` I/Q, dequantised.
        dtype: ``float16`` or ``int8``.
        label: Class index, or ``None`` when the source had no labels.
        tagged: Whether it carried an authentication tag (checked when the receiver has a key).
    """

    frame_id: int
    timestamp_ns: int
    bundle_id: str
    snr_db: float
    channel: str
    symbols: np.ndarray
    dtype: str
    label: int | None
    tagged: bool = False

    @property
    def k(self) -> int:
        return int(self.symbols.shape[0])


def quantize(symbols: np.ndarray, dtype: str) -> tuple[bytes, float]:
    """``[k, 2] float32`` I/Q -> (payload bytes, scale) for ``float16`` or ``int8``."""
    x = np.asarray(symbols, np.float32)
    if dtype == "float16":
        return x.astype("<f2").tobytes(), 1.0
    if dtype == "int8":
        peak = float(np.abs(x).max()) if x.size else 0.0
        scale = peak / 127.0 if peak > 0 and math.isfinite(peak) else 1.0
        q = np.clip(np.rint(x / np.float32(scale)), -127, 127).astype(np.int8)
        return q.tobytes(), float(np.float32(scale))
    raise ValueError(f"unknown payload dtype {dtype!r}; use float16 or int8")


def encode_frame(
    *,
    frame_id: int,
    timestamp_ns: int,
    bundle_id: str,
    snr_db: float,
    channel: str,
    symbols: np.ndarray,
    dtype: str = "float16",
    label: int | None = None,
    key: bytes | None = None,
) -> bytes:
    """Serialise one frame (see the module docstring for the layout).

    Args:
        symbols: ``[k, 2] float32`` I/Q, the k active symbols only.
        bundle_id: 16 hex digits.
        snr_db: dB (Es/N0).
        key: The link's pre-shared key: the frame carries its authentication tag (``None``: no tag).
    """
    k = int(symbols.shape[0])
    if symbols.ndim != 2 or symbols.shape[1] != 2 or not 1 <= k <= MAX_K:
        raise ValueError(f"symbols must be [k, 2] with 1 <= k <= {MAX_K}, got {list(symbols.shape)}")
    payload, scale = quantize(symbols, dtype)
    flags = (FLAG_LABEL if label is not None else 0) | (FLAG_TAG if key is not None else 0)
    header = HEADER.pack(
        MAGIC,
        VERSION,
        DTYPES[dtype],
        flags,
        CHANNEL_IDS[channel],
        frame_id,
        timestamp_ns,
        bytes.fromhex(bundle_id),
        snr_db,
        k,
        0,
        -1 if label is None else int(label),
        scale,
        len(payload),
    )
    body = header + payload
    if key is not None:
        body += tag(key, body)
    return body + CRC.pack(zlib.crc32(body))


def tag(key: bytes, signed: bytes) -> bytes:
    """The authentication tag of a frame's header and payload (``signed``) under ``key``."""
    return hmac.new(key, signed, hashlib.sha256).digest()[:TAG_BYTES]


def frame_length(header: bytes) -> int:
    """The whole frame's length from its first :data:`HEADER_BYTES` bytes (checks magic, version, sizes).

    Raises:
        WireError: ``malformed`` (bad magic, version or payload length) or ``oversized``.
    """
    if len(header) < HEADER_BYTES:
        raise WireError("truncated", f"{len(header)} bytes, a header has {HEADER_BYTES}")
    magic, version, dtype, flags, _, _, _, _, _, k, _, _, _, payload_bytes = HEADER.unpack_from(header)
    if magic != MAGIC:
        raise WireError("malformed", f"bad magic {magic!r}")
    if version != VERSION:
        raise WireError("malformed", f"wire version {version}, this receiver speaks {VERSION}")
    if dtype not in ELEMENT_BYTES:
        raise WireError("malformed", f"unknown payload dtype {dtype}")
    if payload_bytes != 2 * k * ELEMENT_BYTES[dtype] or k == 0:
        raise WireError("malformed", f"payload of {payload_bytes} bytes does not hold k={k} symbols")
    return HEADER_BYTES + payload_bytes + (TAG_BYTES if flags & FLAG_TAG else 0) + CRC.size


def decode_frame(data: bytes, bundle_id: str | None = None, max_k: int = MAX_K, key: bytes | None = None) -> Frame:
    """Parse and check one whole frame; never raises anything but :class:`WireError`.

    Args:
        data: Exactly one frame.
        bundle_id: The receiver's bundle id; frames of another bundle raise ``foreign``.
        max_k: The receiver's K; larger k raises ``oversized``.
        key: The link's pre-shared key: a frame without a valid tag raises ``unauthenticated`` (``None``:
            a tag is not checked).

    Raises:
        WireError: with ``reason`` one of ``truncated``, ``malformed``, ``crc``, ``unauthenticated``,
            ``oversized``, ``foreign``.
    """
    data = bytes(data)
    n = frame_length(data)
    if len(data) < n:
        raise WireError("truncated", f"{len(data)} bytes, the header announces {n}")
    if len(data) > n:
        raise WireError("malformed", f"{len(data) - n} bytes after the frame's end")
    (crc,) = CRC.unpack_from(data, n - CRC.size)
    if zlib.crc32(data[: n - CRC.size]) != crc:
        raise WireError("crc", "CRC32 mismatch")
    _, _, dtype, flags, channel, frame_id, ts, bid, snr, k, reserved, label, scale, _ = HEADER.unpack_from(data)
    if flags & ~KNOWN_FLAGS:
        raise WireError("malformed", f"unknown flags 0x{flags:02x}")
    if key is not None:  # before any other field is trusted: an unauthenticated frame is nobody's
        if not flags & FLAG_TAG:
            raise WireError("unauthenticated", "the frame has no tag (its sender has no --key)")
        signed = n - CRC.size - TAG_BYTES
        if not hmac.compare_digest(data[signed : n - CRC.size], tag(key, data[:signed])):
            raise WireError("unauthenticated", "the tag does not match (another --key, or the frame was altered)")
    if reserved:  # a later version's field: refused like an unknown flag, not read as version 1
        raise WireError("malformed", f"reserved field 0x{reserved:04x} is not 0")
    if channel not in CHANNEL_NAMES:
        raise WireError("malformed", f"unknown channel id {channel}")
    if not snr_in_range(snr):
        raise WireError("malformed", f"SNR {snr!r} dB is not a finite number within +-{SNR_LIMIT_DB:g} dB")
    if not (math.isfinite(scale) and scale > 0) or (dtype == 0 and scale != 1.0):
        raise WireError("malformed", f"bad scale {scale} for a {DTYPE_NAMES[dtype]} payload")
    if not flags & FLAG_LABEL and label != -1:
        raise WireError("malformed", f"label {label} without the label flag (it must be -1)")
    if k > max_k:
        raise WireError("oversized", f"k={k} symbols, this bundle carries at most {max_k}")
    if bundle_id is not None and bid.hex() != bundle_id:
        raise WireError("foreign", f"bundle {bid.hex()}, this receiver serves {bundle_id}")
    raw = np.frombuffer(data, "<f2" if dtype == 0 else np.int8, 2 * k, HEADER_BYTES)
    symbols = raw.astype(np.float32).reshape(k, 2)
    if dtype == 1:
        with np.errstate(over="ignore"):  # a scale near float32's top overflows: refused just below, no warning
            symbols *= np.float32(scale)
    if not np.isfinite(symbols).all():
        raise WireError("malformed", "payload holds non-finite symbols")
    return Frame(
        frame_id=frame_id,
        timestamp_ns=ts,
        bundle_id=bid.hex(),
        snr_db=float(snr),
        channel=CHANNEL_NAMES[channel],
        symbols=symbols,
        dtype=DTYPE_NAMES[dtype],
        label=label if flags & FLAG_LABEL else None,
        tagged=bool(flags & FLAG_TAG),
    )


def fragment(frame: bytes, frame_id: int, max_datagram: int = 1400) -> list[bytes]:
    """Split a frame into UDP datagrams of at most ``max_datagram`` bytes (fragment header included)."""
    chunk = max_datagram - FRAGMENT_BYTES
    if chunk < 1:
        raise ValueError(f"datagram size {max_datagram} leaves no room after the {FRAGMENT_BYTES}-byte header")
    count = max(1, -(-len(frame) // chunk))
    if count > 0xFFFF:
        raise ValueError(f"a {len(frame)}-byte frame needs {count} fragments, more than 65535")
    head = [FRAGMENT.pack(FRAGMENT_MAGIC, VERSION, 0, i, count, 0, frame_id, len(frame)) for i in range(count)]
    return [h + frame[i * chunk : (i + 1) * chunk] for i, h in enumerate(head)]


@dataclass(frozen=True)
class Fragment:
    """One parsed UDP fragment (``chunk`` is the bytes after the fragment header)."""

    index: int
    count: int
    frame_id: int
    frame_bytes: int
    chunk: bytes


def parse_fragment(data: bytes, max_frame_bytes: int = MAX_FRAME_BYTES) -> Fragment:
    """Parse one datagram's fragment header; never raises anything but :class:`WireError`.

    Raises:
        WireError: ``truncated``, ``malformed`` or ``oversized`` (a frame longer than ``max_frame_bytes``).
    """
    if len(data) < FRAGMENT_BYTES:
        raise WireError("truncated", f"datagram of {len(data)} bytes, a fragment header has {FRAGMENT_BYTES}")
    magic, version, reserved, index, count, reserved2, frame_id, frame_bytes = FRAGMENT.unpack_from(data)
    if magic != FRAGMENT_MAGIC:
        raise WireError("malformed", f"bad fragment magic {magic!r}")
    if version != VERSION:
        raise WireError("malformed", f"fragment version {version}, this receiver speaks {VERSION}")
    if reserved or reserved2:
        raise WireError("malformed", "a fragment's reserved fields are not 0")
    if frame_bytes > max_frame_bytes:
        raise WireError("oversized", f"a {frame_bytes}-byte frame, at most {max_frame_bytes} accepted")
    if count == 0 or index >= count or frame_bytes < HEADER_BYTES + CRC.size:
        raise WireError("malformed", f"fragment {index}/{count} of a {frame_bytes}-byte frame")
    chunk = bytes(data[FRAGMENT_BYTES:])
    if not chunk or len(chunk) > frame_bytes:
        raise WireError("malformed", f"chunk of {len(chunk)} bytes in a {frame_bytes}-byte frame")
    return Fragment(index, count, frame_id, frame_bytes, chunk)
