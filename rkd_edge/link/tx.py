"""``rkd-edge tx``: encode images with a bundle's encoder and tx models and send the symbols (torch-free).

One image per frame. The transmitter reads its source, runs the encoder and the tx codec through
:class:`rkd_edge.runtime.Runtime` (the bundle's default precision unless told otherwise), serialises each
image's k symbols with :mod:`rkd_edge.link.wire` and sends them over UDP or TCP. On exit (end of source,
``--count``, SIGINT/SIGTERM) it reports frames sent, per-frame latency percentiles (image in -> last byte
handed to the kernel) and throughput, as one JSON line on stderr and optionally a file.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rkd_edge import progress
from rkd_edge.errors import UserError
from rkd_edge.io import new_file
from rkd_edge.limits import MAX_SECONDS, check_batch, check_seconds, check_snr_db, check_threads
from rkd_edge.link.common import ForcedStopError, StopOnSignal, Window, read_key, report
from rkd_edge.link.sources import open_source
from rkd_edge.link.transport import ReceiverStalledError, Sender, SendStoppedError, parse_hostport
from rkd_edge.link.wire import CHANNEL_IDS, DTYPES, encode_frame
from rkd_edge.outputs import check_new_outputs
from rkd_edge.runtime import Runtime

MIN_RATE = 1 / MAX_SECONDS  # frames per second: one a day


def check_options(
    to: str,
    snr_db: float,
    count: int | None,
    dtype: str,
    channel: str,
    rate: float,
    batch: int,
    mtu: int,
    threads: int = 1,
    send_timeout_s: float = 10.0,
) -> tuple[str, int]:
    """Refuse bad options before anything is loaded; returns the parsed ``(host, port)``.

    Raises:
        UserError: one line saying what is wrong.
    """
    host, port = parse_hostport(to, "--to")
    check_snr_db(snr_db, "--snr-db")
    if count is not None and count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if channel not in CHANNEL_IDS:
        raise UserError(f"--channel must be one of {', '.join(CHANNEL_IDS)}, got {channel!r}")
    if not (rate == 0 or (math.isfinite(rate) and rate >= MIN_RATE)):  # 1e-300 would wait forever per frame
        raise UserError(
            f"--rate is 0 (as fast as possible) or from {MIN_RATE:g} (a frame a day) frames per second, got {rate}"
        )
    check_batch(batch)
    if not 64 <= mtu <= 65507:
        raise UserError(f"--mtu must be between 64 and 65507 bytes per UDP datagram, got {mtu}")
    check_threads(threads)
    check_seconds(send_timeout_s, "--send-timeout")
    return host, port


RECEIVER_CLOSED = "receiver closed the connection"
RECEIVER_STALLED = "receiver stopped reading"


@dataclass
class _Sent:
    """What has gone out so far: kept however the sending ends (a signal, a receiver gone, a bad image).

    Attributes:
        latency: Per frame, ms from the batch's start (image read) to its frame handed to the socket.
        first: ``perf_counter`` at the first batch's start; ``last``: when the last frame went out.
    """

    latency: Window = field(default_factory=Window)
    frames: int = 0
    labelled: int = 0
    first: float | None = None
    last: float | None = None


def _send_frames(rt, images, sender: Sender, stop: StopOnSignal, out: _Sent, encode: dict, k: int, batch: int,
                 count: int | None, rate: float) -> str:  # fmt: skip
    """Encode ``batch`` images per model call and send one frame each until ``count``, the source's end or a
    signal, at most ``rate`` frames per second; returns why it stopped. ``encode``: the frame fields every
    frame carries (bundle id, SNR, channel type, payload dtype) and the key that tags it."""
    while True:
        if stop:
            return stop.signal
        take = batch if count is None else min(batch, count - out.frames)
        if take <= 0:
            return "count"
        chunk = [item for _, item in zip(range(take), images, strict=False)]
        if not chunk:
            return stop.signal or "end of source"  # a signal also ends a source waiting on stdin
        t0, ts = time.perf_counter(), time.time_ns()
        out.first = out.first if out.first is not None else t0
        sym, _ = rt.send(np.stack([im for im, _ in chunk]), encode["snr_db"], k, encode["channel"])
        for i, (_, label) in enumerate(chunk):
            frame = encode_frame(frame_id=out.frames, timestamp_ns=ts, symbols=sym[i, :k], label=label, **encode)
            sender.send(frame, out.frames)
            out.last = time.perf_counter()
            out.latency.add((out.last - t0) * 1e3)
            out.frames += 1
            out.labelled += label is not None
        if rate > 0:
            wait_until = out.first + out.frames / rate
            while not stop and (now := time.perf_counter()) < wait_until:
                time.sleep(min(0.2, wait_until - now))


def run_tx(
    bundle: Path,
    to: str,
    source: list[str],
    snr_db: float,
    k: int | None = None,
    tcp: bool = False,
    count: int | None = None,
    dtype: str = "float16",
    channel: str = "awgn",
    precision: str | None = None,
    threads: int = 1,
    batch: int = 1,
    rate: float = 0.0,
    repeat: bool = False,
    mtu: int = 1400,
    summary_path: Path | None = None,
    send_timeout_s: float = 10.0,
    key: Path | None = None,
) -> dict:
    """Transmit; returns the summary (also printed on stderr as ``tx: {...}``).

    Args:
        bundle: Bundle folder (verified against its manifest).
        to: ``HOST:PORT`` of the receiver.
        source: Image files / folders, or ``split:test``, or ``-`` (raw ``uint8 [S, S, C]`` frames on stdin).
        snr_db: SNR the codec is conditioned on, dB (Es/N0 per complex symbol); carried in every frame.
        k: Complex symbols per image (default: the bundle's largest).
        tcp: TCP instead of UDP.
        count: Stop after this many frames (with ``repeat``, cycling the source).
        dtype: Payload ``float16`` or ``int8`` (one scale per frame).
        channel: Channel type the codec is conditioned on (carried in every frame).
        precision: ``fp32`` or ``int8`` models (default: the bundle's default precision).
        threads: ONNX Runtime intra-op threads (1 for a one-core board; 0 = ONNX Runtime's choice).
        batch: Images encoded per model call (still one image per frame).
        rate: Frames per second at most (0: as fast as possible).
        repeat: Cycle the source (e.g. a test split smaller than ``count``).
        mtu: Largest UDP datagram, bytes (frames are fragmented to fit).
        summary_path: Also write the summary to this JSON file.
        send_timeout_s: TCP: longest wait for the receiver to take any byte of a frame.
        key: The link's pre-shared key file: every frame carries its authentication tag
            (:func:`rkd_edge.link.common.read_key`).

    Raises:
        UserError: bad options or source; the receiver closed the connection or stopped reading; an image
            that cannot be read after frames were sent (the summary of what was sent comes first).
    """
    host, port = check_options(to, snr_db, count, dtype, channel, rate, batch, mtu, threads, send_timeout_s)
    check_new_outputs({"--summary": summary_path})
    secret = read_key(key) if key is not None else None
    rt = Runtime(str(bundle), precision=precision, threads=threads)
    bundle_id = rt.bundle.bundle_id
    k = rt.max_symbols if k is None else k
    if not 1 <= k <= rt.max_symbols:
        raise UserError(f"--symbols must be between 1 and the bundle's K = {rt.max_symbols}, got {k}")
    if channel not in rt.channel_types:
        raise UserError(f"the bundle's codec knows channel types {rt.channel_types}, not {channel!r}")
    summary: dict = {
        "side": "tx",
        "bundle_id": bundle_id,
        "precision": rt.precision,
        "transport": "tcp" if tcp else "udp",
        "to": f"{host}:{port}",
        "snr_db": snr_db,
        "k": k,
        "channel": channel,
        "dtype": dtype,
        "batch": batch,
        "authenticated": secret is not None,
    }
    out = _Sent()
    stopped_by, sender, failure = "end of source", None, None
    with contextlib.ExitStack() as files, StopOnSignal() as stop:
        summary_file = files.enter_context(new_file(summary_path, "--summary")) if summary_path else None
        try:  # a second Ctrl-C while the source opens or the connection is made also ends here
            images, summary["source"] = open_source(source, bundle, rt.bundle.manifest, lambda: bool(stop), repeat)
            sender = Sender(
                host, port, tcp=tcp, max_datagram=mtu, send_timeout_s=send_timeout_s, stopped=lambda: bool(stop)
            )
            if not progress.is_quiet():
                print(
                    f"tx: bundle {bundle_id} ({rt.precision}) -> {summary['transport']} {host}:{port}, k={k}, "
                    f"{snr_db:g} dB, {dtype} payload",
                    file=sys.stderr,
                    flush=True,
                )
            encode = {"bundle_id": bundle_id, "snr_db": snr_db, "channel": channel, "dtype": dtype, "key": secret}
            stopped_by = _send_frames(rt, images, sender, stop, out, encode, k, batch, count, rate)
        except ForcedStopError as exc:
            stopped_by = f"{exc} (second signal)"
        except SendStoppedError as exc:
            stopped_by = f"{stop.signal} while the receiver was not reading ({exc})"
        except ReceiverStalledError as exc:
            stopped_by = f"{RECEIVER_STALLED} ({exc})"
        except (BrokenPipeError, ConnectionResetError) as exc:
            stopped_by = f"{RECEIVER_CLOSED} ({exc.strerror or exc})"
        except UserError as exc:  # an unreadable image mid-stream: what was sent before it is still reported
            if not out.frames:
                raise
            failure, stopped_by = exc, f"error: {exc}"
        finally:
            if sender is not None:
                sender.close()
        summary.update(_counters(out, sender), stopped_by=stopped_by)
        report(summary, summary_file, "tx")
    if failure is not None:
        raise failure
    _say_how_it_ended(summary)
    return summary


def _counters(out: _Sent, sender: Sender | None) -> dict:
    """What was sent: frames, datagrams, bytes, refusals, latency and throughput."""
    elapsed = (out.last - out.first) if out.frames and out.last is not None else 0.0
    return {
        "frames_sent": out.frames,
        "labelled": out.labelled,
        **{n: getattr(sender, n) if sender else 0 for n in ("datagrams", "bytes", "send_errors", "refused")},
        "elapsed_s": round(elapsed, 6),
        "throughput_fps": round(out.frames / elapsed, 3) if elapsed > 0 else None,
        "latency_ms": out.latency.summary(),
    }


def _say_how_it_ended(summary: dict) -> None:
    """After the summary: a warning where UDP datagrams were refused; one line (exit 2) where the receiver
    closed the link or stopped reading."""
    if summary["refused"]:  # UDP has no connection to lose: the receiver's host said nothing listens
        print(
            f"tx: warning: {summary['refused']} of {summary['datagrams']} datagram(s) were refused (port "
            f"unreachable at {summary['to']}): is rkd-edge rx listening there?",
            file=sys.stderr,
            flush=True,
        )
    stopped_by, sent = summary["stopped_by"], summary["frames_sent"]
    if stopped_by.startswith(RECEIVER_CLOSED):
        raise UserError(
            f"the {stopped_by} after {sent} frame(s); check that rx is running, accepts bundle "
            f"{summary['bundle_id']} and is not full (its log says why it closed it), then send again"
        )
    if stopped_by.startswith(RECEIVER_STALLED):
        raise UserError(
            f"the {stopped_by} after {sent} frame(s); check that rx is running and keeping up (a larger --batch "
            "there), or give a longer --send-timeout"
        )
