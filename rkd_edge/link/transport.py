"""Transports for the wire format: UDP with fragmentation and reassembly (with a timeout), and TCP.

Everything here is torch-free and numpy-free: sockets, the reassembler, the TCP stream splitter, the
counters and the rate-limited log of dropped frames. Sizes are bounded everywhere (pending frames,
bytes held, remembered ids), so no input, however hostile, makes a receiver grow without limit.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from rkd_edge.errors import UserError
from rkd_edge.link.wire import (
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    WireError,
    fragment,
    frame_length,
    parse_fragment,
)


def parse_hostport(text: str, option: str, listen: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``.

    Args:
        text: What the user typed.
        option: The option's name, for the error line.
        listen: Port 0 (any free port) is allowed for listening only.

    Raises:
        UserError: a missing or non-numeric port, a port out of range, or an empty host.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise UserError(f"{option} takes HOST:PORT (e.g. 127.0.0.1:9000), got {text!r}")
    p = int(port)
    if not (0 if listen else 1) <= p <= 65535:
        raise UserError(f"{option}: port {p} is out of range (1..65535{', or 0 for any' if listen else ''})")
    return host, p


def resolve(host: str, port: int, kind: int, option: str) -> tuple[int, tuple]:
    """Resolve a host name to ``(address family, sockaddr)``; one clear line when it cannot be."""
    try:
        info = socket.getaddrinfo(host, port, type=kind)
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"{option}: cannot resolve host {host!r} ({exc}); give an IP address or a known name") from None
    family, _, _, _, addr = info[0]
    return family, addr


class RateLimitedLog:
    """One stderr line per reason at most every ``interval_s`` seconds, with the count since the last line.

    Args:
        prefix: Put before every line (``rx``).
        interval_s: Minimum seconds between two lines of the same reason.
        stream: Where lines go (stderr).
    """

    def __init__(self, prefix: str, interval_s: float = 5.0, stream=None) -> None:
        self.prefix, self.interval_s = prefix, interval_s
        self.stream = stream or sys.stderr
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}
        self.lines = 0

    def __call__(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        self._since[reason] = self._since.get(reason, 0) + 1
        if now - self._last.get(reason, -1e18) < self.interval_s:
            return
        n = self._since.pop(reason)
        self._last[reason] = now
        self.lines += 1
        extra = f" (and {n - 1} more since the last such line)" if n > 1 else ""
        print(f"{self.prefix}: dropped {reason}: {detail}{extra}", file=self.stream, flush=True)


@dataclass
class _Pending:
    count: int
    frame_bytes: int
    first_seen: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    held: int = 0


class Reassembler:
    """Reassemble frames from UDP fragments (see :mod:`rkd_edge.link.wire`), bounded in time and memory.

    Fragments are keyed by (sender address, frame id). A frame incomplete after ``timeout_s`` is dropped
    (``incomplete``); when more than ``max_pending`` frames are incomplete the oldest is dropped
    (``evicted``). Fragments of a frame already accepted are ``duplicate``; of one already dropped, ``stale``.
    A frame counts as accepted only when the receiver says so (:meth:`accepted`, after its CRC and key
    checks): a forged datagram under a frame id to come must not turn the genuine frame into a "duplicate".

    Args:
        timeout_s: Seconds to wait for a frame's missing fragments.
        max_pending: Incomplete frames held at most.
        max_frame_bytes: Longest frame accepted (larger ones are ``oversized``).
        remember: Completed or dropped frame keys remembered to recognise late fragments.
    """

    def __init__(
        self,
        timeout_s: float = 1.0,
        max_pending: int = 256,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        remember: int = 4096,
    ) -> None:
        self.timeout_s, self.max_pending, self.max_frame_bytes = timeout_s, max_pending, max_frame_bytes
        self.remember = remember
        self.pending: OrderedDict[tuple, _Pending] = OrderedDict()
        self.done: OrderedDict[tuple, str] = OrderedDict()  # key -> "accepted" | "dropped"

    def _finish(self, key: tuple, how: str) -> None:
        self.done[key] = how
        self.done.move_to_end(key)
        while len(self.done) > self.remember:
            self.done.popitem(last=False)

    def accepted(self, data: bytes, addr) -> None:
        """Remember the frame that ``data`` (the datagram that completed it, from ``addr``) belongs to as
        accepted: later fragments of it are duplicates."""
        self._finish((addr, parse_fragment(data, self.max_frame_bytes).frame_id), "accepted")

    @property
    def held_bytes(self) -> int:
        """Bytes of fragments held for incomplete frames."""
        return sum(p.held for p in self.pending.values())

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop frames incomplete for longer than the timeout; returns ``(reason, detail)`` per drop."""
        drops = []
        while self.pending:
            key, p = next(iter(self.pending.items()))
            if now - p.first_seen < self.timeout_s:
                break
            self.pending.popitem(last=False)
            self._finish(key, "dropped")
            drops.append(("incomplete", f"frame {key[1]} got {len(p.chunks)} of {p.count} fragments in time"))
        return drops

    def add(self, data: bytes, addr, now: float) -> tuple[bytes | None, list[tuple[str, str]]]:
        """Take one datagram.

        Returns:
            ``(frame or None, drops)``: the completed frame's bytes when this fragment completed one, and the
            ``(reason, detail)`` of incomplete frames evicted to make room (call :meth:`expire` for timeouts).

        Raises:
            WireError: this datagram is dropped (``truncated``, ``malformed``, ``oversized``, ``duplicate``,
                ``stale``).
        """
        drops: list[tuple[str, str]] = []
        frag = parse_fragment(data, self.max_frame_bytes)
        key = (addr, frag.frame_id)
        if key in self.done:
            how = self.done[key]
            raise WireError(
                "duplicate" if how == "accepted" else "stale",
                f"fragment {frag.index} of frame {frag.frame_id}, which was already {how}",
            )
        if frag.count == 1:
            if len(frag.chunk) != frag.frame_bytes:
                raise WireError("malformed", f"lone fragment of {len(frag.chunk)} bytes, frame has {frag.frame_bytes}")
            return frag.chunk, drops
        p = self.pending.get(key)
        if p is None:
            if frag.count > frag.frame_bytes:
                raise WireError("malformed", f"{frag.count} fragments for a {frag.frame_bytes}-byte frame")
            while len(self.pending) >= self.max_pending:
                old, q = self.pending.popitem(last=False)
                self._finish(old, "dropped")
                drops.append(("evicted", f"frame {old[1]} ({len(q.chunks)} of {q.count} fragments): too many pending"))
            p = self.pending[key] = _Pending(frag.count, frag.frame_bytes, now)
        elif (p.count, p.frame_bytes) != (frag.count, frag.frame_bytes):
            raise WireError("malformed", f"fragment {frag.index} of frame {frag.frame_id} disagrees on its size")
        if frag.index in p.chunks:
            raise WireError("duplicate", f"fragment {frag.index} of frame {frag.frame_id} again")
        if p.held + len(frag.chunk) > p.frame_bytes:
            del self.pending[key]
            self._finish(key, "dropped")
            raise WireError("malformed", f"fragments of frame {frag.frame_id} hold more than {p.frame_bytes} bytes")
        p.chunks[frag.index] = frag.chunk
        p.held += len(frag.chunk)
        if len(p.chunks) < p.count:
            return None, drops
        del self.pending[key]
        frame = b"".join(p.chunks[i] for i in range(p.count))
        sizes = {len(p.chunks[i]) for i in range(p.count - 1)}
        if len(frame) != p.frame_bytes or len(sizes) > 1:
            raise WireError("malformed", f"fragments of frame {frag.frame_id} do not tile its {p.frame_bytes} bytes")
        return frame, drops


class StreamSplitter:
    """Split a TCP byte stream into frames; a bad header desynchronises the stream for good.

    Args:
        max_frame_bytes: Longest frame accepted; a longer one ends the stream as ``oversized``.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.buf = bytearray()
        self.error: WireError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return the whole frames now available.

        A ``malformed`` or ``oversized`` header ends the stream: the frames before it are still returned, the
        bytes from it on are discarded (not a frame cut short) and :attr:`error` says why; the caller closes
        the connection.
        """
        if self.error is not None:
            return []
        self.buf += data
        frames = []
        while len(self.buf) >= HEADER_BYTES:
            try:
                n = frame_length(bytes(self.buf[:HEADER_BYTES]))
                if n > self.max_frame_bytes:
                    raise WireError("oversized", f"a {n}-byte frame, at most {self.max_frame_bytes} accepted")
            except WireError as exc:
                self.error = exc
                self.buf.clear()
                break
            if len(self.buf) < n:
                break
            frames.append(bytes(self.buf[:n]))
            del self.buf[:n]
        return frames


class ReceiverStalledError(ConnectionError):
    """A TCP receiver took no byte for the sender's ``send_timeout_s``: it stopped reading, or cannot keep up."""


class SendStoppedError(Exception):
    """The sender's ``stopped()`` turned true while a TCP send waited: the frame in flight was cut short."""


POLL_S = 0.2  # a blocked TCP send looks at the stop flag and its deadline this often


class Sender:
    """Send frames over UDP (fragmented to ``max_datagram`` bytes) or TCP to ``host:port``.

    Counters: ``datagrams``, ``bytes``, ``send_errors`` (UDP datagrams the kernel refused, e.g. ENOBUFS),
    ``refused`` (UDP datagrams the receiver's host answered with "port unreachable": nothing listens there;
    a lower bound, as hosts rate-limit those answers). A refused datagram was sent, so ``datagrams`` holds it.

    Args:
        send_timeout_s: TCP: longest wait for the receiver to take any byte of a frame.
        stopped: TCP: asked while a send waits (a signal's flag): true ends the wait.

    Raises:
        UserError: cannot resolve or (TCP) connect.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tcp: bool = False,
        max_datagram: int = 1400,
        option: str = "--to",
        send_timeout_s: float = 10.0,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self.tcp, self.max_datagram = tcp, max_datagram
        self.send_timeout_s, self.stopped = send_timeout_s, stopped
        family, self.addr = resolve(host, port, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM, option)
        self.sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self.datagrams = self.bytes = self.send_errors = self.refused = 0
        if not tcp:  # connected, the socket hears the receiver's host say that nothing listens on the port
            self.sock.connect(self.addr)
        if tcp:
            self.sock.settimeout(5.0)
            try:
                self.sock.connect(self.addr)
            except OSError as exc:
                self.sock.close()
                raise UserError(
                    f"{option}: cannot connect to {host}:{port} over TCP ({exc.strerror or exc}); start "
                    "rkd-edge rx --tcp --listen there first"
                ) from None
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # sendall with no timeout waits forever on a receiver that stopped reading, deaf to Ctrl-C
            self.sock.settimeout(POLL_S)

    def _send_stream(self, frame: bytes) -> None:
        view, last = memoryview(frame), time.monotonic()
        while view:
            try:
                n = self.sock.send(view)
            except TimeoutError:
                n = 0
            if n:
                view, last = view[n:], time.monotonic()
            elif self.stopped():
                raise SendStoppedError(f"stopped {len(frame) - len(view)} bytes into a {len(frame)}-byte frame")
            elif time.monotonic() - last >= self.send_timeout_s:
                raise ReceiverStalledError(f"the receiver took nothing for {self.send_timeout_s:g} s")

    def send(self, frame: bytes, frame_id: int) -> None:
        """Send one frame.

        Raises:
            ConnectionError: the TCP peer went away (:class:`ReceiverStalledError`: it stopped reading).
            SendStoppedError: ``stopped()`` while a TCP send waited.
        """
        if self.tcp:
            self._send_stream(frame)  # a stream has no datagrams (0, as the receiver counts it): frames are counted
            self.bytes += len(frame)
            return
        for d in fragment(frame, frame_id, self.max_datagram):
            try:
                sent = self._send_datagram(d)
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE):
                    raise
                sent = False
            if not sent:
                self.send_errors += 1
                continue
            self.datagrams += 1
            self.bytes += len(d)

    def _send_datagram(self, d: bytes) -> bool:
        """Send one datagram; whether it went. An ICMP "port unreachable" for an earlier one, which Linux
        reports on the next send of a connected socket (that send does not happen), is counted and this one
        sent again."""
        for _ in range(3):
            try:
                self.sock.send(d)
                return True
            except ConnectionRefusedError:
                self.refused += 1
        return False

    def _pending_refusal(self) -> None:
        """The answer to the last datagram sent: counted when it says that nothing listens (it comes within a
        round trip; waited for only once the port was seen closed)."""
        if self.refused and not self.tcp:
            time.sleep(0.05)
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED:
                self.refused += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._pending_refusal()
        try:
            if self.tcp:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()


def bind(host: str, port: int, tcp: bool, option: str = "--listen", rcvbuf: int = 4 << 20) -> socket.socket:
    """A bound (and for TCP, listening) non-blocking socket.

    Raises:
        UserError: the address cannot be resolved, the port is in use or not ours to take.
    """
    family, addr = resolve(host, port, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM, option)
    sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    try:
        if tcp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            # A deep queue absorbs bursts while the receiver decodes (the kernel caps it at rmem_max).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(addr)
        if tcp:
            sock.listen(socket.SOMAXCONN)  # a burst of senders waits in the kernel's queue, not reset
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"{option}: {host}:{port} is already in use; stop the other receiver or pick another port"
            ) from None
        raise UserError(f"{option}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.setblocking(False)
    return sock
