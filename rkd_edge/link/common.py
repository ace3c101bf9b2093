"""What the transmitter and the receiver share: signal handling, bounded timing windows, summaries."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np

from rkd_edge.devices.latency import summarize
from rkd_edge.env import versions
from rkd_edge.errors import UserError
from rkd_edge.io import read_bytes, write_json
from rkd_edge.link.wire import MIN_KEY_BYTES

MAX_KEY_BYTES = 4096


def read_key(path: Path) -> bytes:
    """The link's pre-shared key: the bytes of ``path`` (e.g. ``head -c 32 /dev/urandom > link.key``), the
    same file on both sides. Refused, in one line: not a regular file, not 16 to 4096 bytes, or readable by
    others than its owner (as ssh refuses an open private key: anyone who reads it can forge frames)."""
    key = read_bytes(path, "--key", MAX_KEY_BYTES, private=True)
    if len(key) < MIN_KEY_BYTES:
        raise UserError(
            f"--key {path} holds {len(key)} bytes; a key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes "
            "(head -c 32 /dev/urandom > link.key)"
        )
    return key


class ForcedStopError(Exception):
    """A second signal while the first one's clean stop was pending (e.g. blocked in a send)."""


class StopOnSignal:
    """SIGINT and SIGTERM ask the loop to stop (``bool(self)`` turns True); a second one raises
    :class:`ForcedStopError`.

    Use as a context manager; the previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None:
            raise ForcedStopError(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopOnSignal:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Window:
    """The last ``size`` values (milliseconds) in a fixed ring buffer: bounded memory on an endless run.

    Args:
        size: Values kept; the summary states the window.
    """

    def __init__(self, size: int = 65536) -> None:
        self.buf = np.zeros(size, np.float64)
        self.n = 0

    def add(self, value: float) -> None:
        self.buf[self.n % len(self.buf)] = value
        self.n += 1

    def summary(self) -> dict | None:
        """:func:`rkd_edge.devices.latency.summarize` of the window (``batch`` 1), or ``None`` when empty."""
        if self.n == 0:
            return None
        s = summarize(self.buf[: min(self.n, len(self.buf))].tolist(), 1)
        s.pop("batch")
        s.pop("throughput_per_s")  # 1 / mean latency is not the link's throughput; the caller reports that
        s["window"] = min(self.n, len(self.buf))
        return s


def report(summary: dict, path: Path | None, prefix: str) -> None:
    """The summary, with whether PyTorch was loaded and the library versions, as one JSON line on stderr
    (``{prefix}: {...}``) and, with ``path``, a JSON file (atomic)."""
    summary.update(torch_imported="torch" in sys.modules, versions=versions())
    print(f"{prefix}: {json.dumps(summary, sort_keys=True, default=str)}", file=sys.stderr, flush=True)
    if path is not None:
        write_json(path, summary)
