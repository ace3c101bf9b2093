"""``rkd-edge rx``: receive frames, optionally pass them through a simulated channel, decode and classify.

The receiver is torch-free: the channel is the numpy twin :mod:`rkd_edge.runtime.channel` of the training
channels, seeded (``--seed``), and the decoder is the bundle's rx model through
:class:`rkd_edge.runtime.Runtime`. It writes one JSON line per decoded frame (``frame``, ``pred``,
``confidence``, ``k``, ``snr_db``, ``latency_ms``, ``label`` when the frame carries one) and on exit a summary
of its counters, accuracy with its 95 % Wilson interval when labels travel, latency and throughput.

Nothing a sender does crashes it or makes it grow: every datagram or frame that is truncated, malformed,
fails its CRC, is oversized, is a duplicate, arrives stale (a fragment of a frame already given up) or belongs
to another bundle (``foreign``) is counted and dropped with a rate-limited log line, and the loop goes on.
Frames that arrive out of order are counted (``reordered``) and decoded: the order carries no meaning for
classification. Optionally (``--max-age-ms``) frames older than that by their timestamp are ``stale`` too
(this needs the two clocks synchronised).
"""

from __future__ import annotations

import contextlib
import json
import math
import selectors
import socket
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TextIO

import numpy as np

from rkd_edge import progress
from rkd_edge.errors import UserError
from rkd_edge.io import new_file
from rkd_edge.limits import MAX_SECONDS, check_batch, check_seconds, check_snr_db, check_threads
from rkd_edge.link.common import ForcedStopError, StopOnSignal, Window, read_key, report
from rkd_edge.link.transport import RateLimitedLog, Reassembler, StreamSplitter, bind, parse_hostport
from rkd_edge.link.wire import Frame, WireError, decode_frame, longest_frame
from rkd_edge.outputs import check_new_outputs
from rkd_edge.runtime import Runtime
from rkd_edge.runtime.bundle import channel_kwargs
from rkd_edge.runtime.channel import NAMES as CHANNEL_NAMES
from rkd_edge.runtime.channel import NumpyChannel
from rkd_edge.stats import wilson

# A frame whose timestamp is further than this from the receiver's clock (either way) is decoded, but its
# latency is not counted ("unsynced"): clocks an hour apart are not synchronised, and the mean would be noise.
MAX_CLOCK_OFFSET_MS = 3_600_000.0
# A frame dated further ahead of the receiver's clock than this is from a clock that is not synchronised (or
# a forged header): its latency is not counted, and with --max-age-ms its age cannot be told, so it is stale.
MAX_FUTURE_MS = 1_000.0
MAX_CONNECTIONS = 64  # TCP senders served at once; more are closed (counted) so descriptors cannot run out
EVICT_IDLE_S = 2.0  # when all are taken, one silent this long makes room for a new sender
DROP_REASONS = (
    "truncated",
    "malformed",
    "crc",
    "unauthenticated",
    "oversized",
    "foreign",
    "duplicate",
    "stale",
    "incomplete",
    "evicted",
    "connection",
    "past_count",  # taken, but --count frames were decoded already
    "internal",
)


class Receiver:
    """The receive loop's state: counters, reassembly, decoding, output. Network-free (tests feed it bytes).

    Args:
        runtime: A :class:`rkd_edge.runtime.Runtime` (its rx model decodes).
        out: Text stream for the JSON lines.
        channel: Simulated channel name, or ``None`` to decode what arrives.
        snr_db: The simulated channel's SNR in dB (Es/N0), also told to the decoder; ``None``: each frame's.
        seed: Seed of the channel's noise.
        count: Stop after this many decoded frames (``None``: never).
        batch: Frames decoded per rx-model call at most.
        reassembly_timeout_s: Seconds to wait for a frame's missing UDP fragments.
        max_age_ms: Drop frames older than this by their timestamp (``None``: keep all).
        log: Where dropped-frame lines go (rate-limited).
        key: The link's pre-shared key: frames without its valid tag are dropped (``None``: not checked).
    """

    def __init__(
        self,
        runtime,
        out: TextIO,
        channel: str | None = None,
        snr_db: float | None = None,
        seed: int = 0,
        count: int | None = None,
        batch: int = 64,
        reassembly_timeout_s: float = 1.0,
        max_age_ms: float | None = None,
        log: RateLimitedLog | None = None,
        key: bytes | None = None,
    ) -> None:
        self.rt = runtime
        self.bundle_id = runtime.bundle.bundle_id
        self.out, self.count, self.batch = out, count, batch
        self.snr_db, self.max_age_ms, self.key = snr_db, max_age_ms, key
        self.channel = None
        if channel:  # the bundle's fading mode, CSI handling and Rician K
            self.channel = NumpyChannel(channel, **channel_kwargs(runtime.bundle.root, runtime.bundle.manifest))
        self.rng = np.random.default_rng(seed)
        self.max_frame = longest_frame(runtime.max_symbols)
        self.reassembler = Reassembler(reassembly_timeout_s, max_frame_bytes=self.max_frame)
        self.log = log or RateLimitedLog("rx")
        self.counters = {"datagrams": 0, "bytes": 0, "frames": 0, "decoded": 0, "reordered": 0, "unsynced": 0}
        self.counters.update({r: 0 for r in DROP_REASONS})
        self.queue: list[tuple[Frame, object]] = []
        self.seen: OrderedDict[tuple, None] = OrderedDict()  # recent (peer, frame id): duplicates
        self.highest: OrderedDict[object, int] = OrderedDict()  # per peer: reordering
        self.correct = self.labelled = 0
        self.latency = Window()
        self.first: float | None = None
        self.last: float | None = None
        self.warned_mismatch = False
        self.output_closed = False
        self.output_error: OSError | None = None

    @property
    def done(self) -> bool:
        return self.count is not None and self.counters["decoded"] >= self.count

    def drop(self, reason: str, detail: str, peer=None, n: int = 1) -> None:
        self.counters[reason] += n
        self.log(reason, f"{detail}{f' (from {peer})' if peer is not None else ''}; {self.counters[reason]} so far")

    def ingest_datagram(self, data: bytes, peer, now: float | None = None) -> bool:
        """One UDP datagram (one fragment). Never raises: whatever is wrong is counted and dropped. Returns
        whether it completed a frame that was queued for decoding."""
        now = time.monotonic() if now is None else now
        self.counters["datagrams"] += 1
        self.counters["bytes"] += len(data)
        try:
            frame, evicted = self.reassembler.add(data, peer, now)
        except WireError as exc:
            self.drop(exc.reason, exc.detail, peer)
            return False
        except Exception as exc:  # a parser bug must not stop the receiver; the counter shows it
            self.drop("internal", f"{type(exc).__name__}: {exc}", peer)
            return False
        for reason, detail in evicted:
            self.drop(reason, detail, peer)
        queued = frame is not None and self.ingest_frame(frame, peer)
        if queued:  # only a frame that passed its CRC and key marks its fragments as seen
            self.reassembler.accepted(data, peer)
        return queued

    def expire(self, now: float | None = None) -> None:
        """Give up on UDP frames whose fragments did not all arrive in time."""
        for reason, detail in self.reassembler.expire(time.monotonic() if now is None else now):
            self.drop(reason, detail)

    def ingest_frame(self, data: bytes, peer) -> bool:
        """One whole frame. Never raises: bad frames are counted and dropped; good ones queue for decoding.
        Returns whether it queued the frame (a sender whose frames are all dropped is not an active one)."""
        try:
            f = decode_frame(data, self.bundle_id, self.rt.max_symbols, self.key)
        except WireError as exc:
            self.drop(exc.reason, exc.detail, peer)
            return False
        except Exception as exc:
            self.drop("internal", f"{type(exc).__name__}: {exc}", peer)
            return False
        if f.label is not None and not 0 <= f.label < len(self.rt.classes):
            self.drop("malformed", f"frame {f.frame_id}: label {f.label} is not a class of this bundle", peer)
            return False
        # A keyed frame is the same frame from any address (a replay); otherwise each sender counts its own.
        seen = (None, f.frame_id, f.timestamp_ns) if self.key is not None else (peer, f.frame_id)
        if seen in self.seen:
            self.drop("duplicate", f"frame {f.frame_id} again", peer)
            return False
        self.seen[seen] = None
        if len(self.seen) > 65536:
            self.seen.popitem(last=False)
        if self.max_age_ms is not None:
            age = (time.time_ns() - f.timestamp_ns) / 1e6
            if age > self.max_age_ms or age < -MAX_FUTURE_MS:
                when = f"{age:.0f} ms old" if age >= 0 else f"dated {-age:.0f} ms ahead of this clock"
                self.drop("stale", f"frame {f.frame_id} is {when} (--max-age-ms {self.max_age_ms:g})", peer)
                return False
        top = self.highest.pop(peer, -1)
        self.highest[peer] = max(top, f.frame_id)
        if len(self.highest) > 1024:
            self.highest.popitem(last=False)
        if f.frame_id < top:
            self.counters["reordered"] += 1
        self.counters["frames"] += 1
        self.queue.append((f, peer))
        return True

    def flush(self) -> int:
        """Decode the queued frames (up to ``count``) in batches and write their lines; returns how many."""
        n = 0
        while self.queue and not self.done:
            room = self.batch if self.count is None else min(self.batch, self.count - self.counters["decoded"])
            chunk, self.queue = self.queue[:room], self.queue[room:]
            n += self._decode([f for f, _ in chunk])
        if self.done and self.queue:
            n = len(self.queue)
            self.drop("past_count", f"{n} frame(s) taken after --count {self.count} were decoded", n=n)
            self.queue.clear()
        return n

    def _decode(self, frames: list[Frame]) -> int:
        b, K = len(frames), self.rt.max_symbols
        y = np.zeros((b, K, 2), np.float32)
        mask = np.zeros((b, K), np.float32)
        for i, f in enumerate(frames):
            y[i, : f.k] = f.symbols
            mask[i, : f.k] = 1.0
        snr = np.array([f.snr_db if self.snr_db is None else self.snr_db for f in frames], np.float32)
        told = [f.channel for f in frames]
        csi = None
        if self.channel is not None:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught below, frame by frame
                y, csi = self.channel(y, snr, mask, self.rng)
            finite = np.isfinite(y).all(axis=(1, 2)) & np.isfinite(csi).all(axis=(1, 2))
            if not finite.all():  # symbols so large that fading overflows float32: a forged frame, not a signal
                for f in (f for f, ok in zip(frames, finite, strict=True) if not ok):
                    self.drop("malformed", f"frame {f.frame_id}: its symbols overflow float32 through the channel")
                keep = np.flatnonzero(finite)
                frames, y, mask, snr, csi = [frames[i] for i in keep], y[keep], mask[keep], snr[keep], csi[keep]
                b, told = len(frames), [f.channel for f in frames]
                if not b:
                    return 0
            if not self.warned_mismatch and any(t != self.channel.name for t in told):
                self.warned_mismatch = True
                print(
                    f"rx: frames were encoded for channel type {told[0]}, --channel simulates {self.channel.name}; "
                    "the decoder is told the transmitter's type",
                    file=sys.stderr,
                    flush=True,
                )
        if self.rt.uses_csi and csi is None:
            csi = np.zeros_like(y)
            csi[..., 0] = 1.0
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(told):
            groups.setdefault(t, []).append(i)
        logits = np.zeros((b, len(self.rt.classes)), np.float32)
        for t, idx in groups.items():  # one call per channel type the transmitters conditioned on
            sel = np.asarray(idx)
            logits[sel] = self.rt.receive(y[sel], mask[sel], snr[sel], t, csi[sel] if self.rt.uses_csi else None)
        with np.errstate(invalid="ignore"):  # NaN or inf logits: not scored just below, no warning on the log
            z = logits - logits.max(-1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(-1, keepdims=True)
        pred, conf = p.argmax(-1), p.max(-1)
        scored = np.isfinite(logits).all(-1)  # a decoder that gives NaN predicts nothing (not class 0)
        now_ns, now = time.time_ns(), time.perf_counter()
        self.first = self.first if self.first is not None else now
        self.last = now
        lines = []
        for i, f in enumerate(frames):
            lat = (now_ns - f.timestamp_ns) / 1e6
            synced = -MAX_FUTURE_MS <= lat <= MAX_CLOCK_OFFSET_MS
            if synced:
                self.latency.add(lat)
            else:  # a clock that is not set, or a forged header: no latency, rather than a poisoned mean
                self.counters["unsynced"] += 1
            rec = {
                "frame": f.frame_id,
                "pred": int(pred[i]) if scored[i] else None,
                "confidence": round(float(conf[i]), 6) if np.isfinite(conf[i]) else None,
                "k": f.k,
                "snr_db": float(snr[i]),
                "latency_ms": round(lat, 4) if synced else None,
            }
            if f.label is not None:
                rec["label"] = f.label
                self.labelled += 1
                self.correct += bool(scored[i]) and int(pred[i]) == f.label
            lines.append(json.dumps(rec))
        try:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        except BrokenPipeError:  # e.g. rx ... | head: the reader is gone, so stop as if told to
            self.output_closed = True
        except OSError as exc:  # a full disk: stop here, keep the counters, say it after the summary
            self.output_closed, self.output_error = True, exc
        self.counters["decoded"] += b
        return b

    def summary(self) -> dict:
        """Counters, accuracy (with the 95 % Wilson interval) when labels travelled, latency, throughput."""
        elapsed = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        s = {
            "side": "rx",
            "bundle_id": self.bundle_id,
            "precision": self.rt.precision,
            "channel": self.channel.describe() if self.channel else {"channel": "none (the link itself)"},
            "snr_db": self.snr_db if self.snr_db is not None else "per frame",
            "authenticated": self.key is not None,  # whether frames without a valid tag were dropped
            "counters": dict(self.counters),
            "dropped": sum(self.counters[r] for r in DROP_REASONS),
            "latency_ms": self.latency.summary(),
            "elapsed_s": round(elapsed, 6),
            "throughput_fps": round((self.counters["decoded"] - 1) / elapsed, 3) if elapsed > 0 else None,
        }
        if self.labelled:
            lo, hi = wilson(self.correct, self.labelled)
            s["accuracy"] = {
                "correct": self.correct,
                "n": self.labelled,
                "accuracy": round(self.correct / self.labelled, 6),
                "ci95": [round(lo, 6), round(hi, 6)],
            }
        return s


def check_options(
    listen: str,
    count: int | None,
    channel: str | None,
    snr_db: float | None,
    batch: int,
    idle_timeout_s: float | None = None,
    reassembly_timeout_s: float = 1.0,
    max_age_ms: float | None = None,
    seed: int = 0,
) -> tuple:
    """Refuse bad options before anything is loaded; returns the parsed ``(host, port)``.

    Raises:
        UserError: one line saying what is wrong.
    """
    host, port = parse_hostport(listen, "--listen", listen=True)
    if count is not None and count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    if channel is not None and channel not in CHANNEL_NAMES:
        raise UserError(f"unknown --channel {channel!r}; choose one of {', '.join(CHANNEL_NAMES)}")
    if snr_db is not None:
        check_snr_db(snr_db, "--snr-db")
        if channel is None:
            raise UserError(
                "--snr-db is the simulated channel's SNR; add --channel, or leave both out to decode at each frame's"
            )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UserError(f"--seed is a whole number from 0 to 2**32 - 1, got {seed!r}")
    if channel not in (None, "identity") and snr_db is None:
        raise UserError(f"--channel {channel} needs --snr-db S (the simulated channel's SNR in dB)")
    check_batch(batch)
    for option, value in (("--idle-timeout", idle_timeout_s), ("--reassembly-timeout", reassembly_timeout_s)):
        if value is not None:
            check_seconds(value, option)
    if max_age_ms is not None and not 0 < max_age_ms <= MAX_SECONDS * 1e3:  # NaN fails the comparison too
        raise UserError(f"--max-age-ms is a number of milliseconds above 0 up to a day, got {max_age_ms}")
    return host, port


def _close(rx: Receiver, conns: dict, sel: selectors.BaseSelector, conn: socket.socket, counted: bool = False) -> None:
    """Forget a TCP connection; a frame it left half-sent is counted as truncated, unless the drop that
    closes it was ``counted`` already."""
    splitter, peer, _ = conns.pop(conn)
    if splitter.buf and not counted:
        rx.drop("truncated", f"the connection closed {len(splitter.buf)} bytes into a frame", peer)
    sel.unregister(conn)
    conn.close()


def _accept(rx: Receiver, sock: socket.socket, conns: dict, sel: selectors.BaseSelector) -> None:
    """Take every connection waiting on the listening socket (one per pass let a burst of senders overflow
    the kernel's queue, which then reset them uncounted)."""
    for _ in range(4 * MAX_CONNECTIONS):
        try:
            conn, peer = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. out of file descriptors: keep serving the open connections
            rx.drop("connection", f"cannot accept: {exc}")
            return
        if len(conns) >= MAX_CONNECTIONS and not _evict_idlest(rx, conns, sel):
            conn.close()
            rx.drop("connection", f"more than {MAX_CONNECTIONS} busy connections; closed", peer)
            continue
        conn.setblocking(False)
        conns[conn] = [StreamSplitter(rx.max_frame), peer, time.monotonic()]
        sel.register(conn, selectors.EVENT_READ, "conn")


def _evict_idlest(rx: Receiver, conns: dict, sel: selectors.BaseSelector) -> bool:
    """Make room for a new sender by closing the connection that has completed no frame for longest, if that
    is at least :data:`EVICT_IDLE_S`: neither silent connections nor ones dripping a byte at a time can lock
    real senders out. Returns whether it did."""
    conn, (_, peer, last) = min(conns.items(), key=lambda item: item[1][2])
    idle = time.monotonic() - last
    if idle < EVICT_IDLE_S:
        return False
    held = len(conns[conn][0].buf)
    part = f", {held} bytes into a frame" if held else ""
    why = f"all {MAX_CONNECTIONS} connections open; closed one without a frame for {idle:.1f} s{part}"
    rx.drop("connection", why, peer)
    _close(rx, conns, sel, conn, counted=True)
    return True


def _drain(rx: Receiver, sock: socket.socket) -> None:
    """Datagrams already queued when ``--count`` was reached: read and counted (``past_count``), not left
    unseen in the socket (bounded: a sender that keeps sending does not hold rx)."""
    for _ in range(1 << 16):
        try:
            data, peer = sock.recvfrom(65536)
        except OSError:  # BlockingIOError: nothing more is queued
            break
        rx.ingest_datagram(data, peer)
    rx.flush()


def serve(rx: Receiver, sock: socket.socket, tcp: bool, stop: StopOnSignal, idle_timeout_s: float | None) -> str:
    """The receive loop over a bound socket until ``count``, a signal or idleness; returns why it stopped.

    Idle means no frame was taken for decoding: a connection that opens and never sends, sends a byte now and
    then, or sends only frames that are refused (and datagrams of garbage) does not keep rx alive past
    ``idle_timeout_s``.
    """
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "listen")
    conns: dict[socket.socket, list] = {}  # connection -> [splitter, peer, when it connected or last ended a frame]
    last_data = time.monotonic()
    try:
        while True:
            if stop:
                return stop.signal or "signal"
            if rx.done:
                if not tcp:
                    _drain(rx, sock)
                return "count"
            if rx.output_closed:
                return "output closed"
            if idle_timeout_s is not None and time.monotonic() - last_data > idle_timeout_s:
                return f"idle for {idle_timeout_s:g} s"
            for key, _ in sel.select(0.2):
                if key.data == "listen" and tcp:
                    _accept(rx, sock, conns, sel)
                elif key.data == "listen":
                    for _ in range(4096):  # drain what is queued, then decode it in batches
                        try:
                            data, peer = sock.recvfrom(65536)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as exc:  # e.g. ICMP errors reported on the socket: not fatal
                            rx.drop("connection", str(exc))
                            break
                        if rx.ingest_datagram(data, peer):  # garbage datagrams do not keep rx alive
                            last_data = time.monotonic()
                        if len(rx.queue) >= rx.batch:
                            rx.flush()
                            if rx.done:
                                break
                else:
                    conn = key.fileobj
                    if conn not in conns:  # closed earlier in this batch of events (evicted for a new sender)
                        continue
                    splitter, peer, _ = conns[conn]
                    try:
                        data = conn.recv(1 << 16)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        data = b""
                        rx.drop("connection", f"{exc}", peer)
                    closed = not data
                    if data:
                        rx.counters["bytes"] += len(data)
                        for frame in splitter.feed(data):
                            if rx.ingest_frame(frame, peer):  # only frames it takes keep a sender active
                                conns[conn][2] = last_data = time.monotonic()
                        if (exc := splitter.error) is not None:
                            rx.drop(exc.reason, f"{exc.detail}; closing the connection", peer)
                            closed = True
                    if closed:
                        _close(rx, conns, sel, conn)
                rx.flush()
            rx.expire()
            rx.flush()
    finally:  # a frame half-received when rx stops is counted, like one a sender broke off
        for conn in list(conns):
            _close(rx, conns, sel, conn)
        rx.expire(math.inf)  # and UDP frames still missing fragments: incomplete
        sel.close()


def run_rx(
    bundle: Path,
    listen: str,
    tcp: bool = False,
    channel: str | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    count: int | None = None,
    out: Path | None = None,
    precision: str | None = None,
    threads: int = 1,
    batch: int = 64,
    idle_timeout_s: float | None = None,
    reassembly_timeout_s: float = 1.0,
    max_age_ms: float | None = None,
    summary_path: Path | None = None,
    key: Path | None = None,
) -> dict:
    """Receive and decode; returns the summary (also printed on stderr as ``rx: {...}``).

    Args: see :class:`Receiver`; ``listen`` is ``HOST:PORT`` (port 0: any free one, printed on stderr),
    ``out`` the JSON-lines file (stdout when ``None``; written to ``OUT.partial``, linked to ``OUT`` at the
    end, the ``.partial`` file left in view when rx is killed), ``key`` the link's pre-shared key file
    (:func:`rkd_edge.link.common.read_key`).
    """
    host, port = check_options(
        listen, count, channel, snr_db, batch, idle_timeout_s, reassembly_timeout_s, max_age_ms, seed
    )
    check_threads(threads)
    check_new_outputs({"--summary": summary_path, "--out": out})
    secret = read_key(key) if key is not None else None
    rt = Runtime(str(bundle), precision=precision, threads=threads)
    rx = Receiver(rt, sys.stdout, channel, snr_db, seed, count, batch, reassembly_timeout_s, max_age_ms, key=secret)
    with contextlib.ExitStack() as files:
        # The port first: a busy port stops rx before it creates a folder for its outputs. Both files are taken
        # before the first frame: a second rx naming either stops now, not at the end. The decoded lines stay
        # in OUT.partial when rx is killed, where the user can see them.
        sock = bind(host, port, tcp)
        files.callback(sock.close)
        lines = files.enter_context(new_file(out, "--out", keep_partial=True)) if out is not None else None
        summary_file = files.enter_context(new_file(summary_path, "--summary")) if summary_path else None
        bound = sock.getsockname()
        with StopOnSignal() as stop, contextlib.ExitStack() as stack:
            if lines is not None:
                rx.out = stack.enter_context(open(lines, "w", buffering=1))  # line-buffered: a kill keeps them
            if not progress.is_quiet() or port == 0:  # with port 0 the line is the only way to learn the port
                print(
                    f"rx: listening on {'tcp' if tcp else 'udp'} {bound[0]}:{bound[1]} for bundle "
                    f"{rx.bundle_id} ({rt.precision}), channel {channel or 'none'}"
                    f"{', tagged frames only' if secret is not None else ''}",
                    file=sys.stderr,
                    flush=True,
                )
            try:
                why = serve(rx, sock, tcp, stop, idle_timeout_s)
                rx.flush()
            except ForcedStopError as exc:
                why = f"{exc} (second signal)"
            if rx.output_error is not None:
                why = f"output error ({rx.output_error.strerror or rx.output_error})"
                if rx.out is not sys.stdout:  # its unwritten buffer would fail again on close
                    with contextlib.suppress(OSError):
                        rx.out.close()
        sock.close()
        summary = rx.summary()
        summary.update(transport="tcp" if tcp else "udp", listen=f"{bound[0]}:{bound[1]}", seed=seed, stopped_by=why)
        if out is not None:
            summary["out"] = Path(out).name  # the name: a summary names no absolute path
        report(summary, summary_file, "rx")
    if (exc := rx.output_error) is not None:
        where = f"--out {out}" if out is not None else "standard output"
        raise UserError(
            f"rx stopped: {exc.strerror or exc} writing {where}; free space there and start rx again (the lines "
            "written before are kept)"
        )
    return summary
