"""Bench on a device over SSH: copy the bundle there, verify its hashes there, run the device's own
``rkd-edge bench``, bring the JSON back (``rkd-edge bench BUNDLE --host USER@HOST``).

Only the OpenSSH client is needed here, and ``rkd-edge``, ``tar`` and ``sha256sum`` there. Every failure
is one line (:class:`~rkd_edge.errors.UserError`): the connection, the authentication, a missing or
different rkd-edge on the device, a bundle that arrived damaged, the remote bench's own error.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rkd_edge import __version__, progress
from rkd_edge.bench_schema import SCHEMA, STAGES, check_result, unselected
from rkd_edge.errors import UserError
from rkd_edge.runtime.bundle import MANIFEST, PRECISIONS, load_manifest

# ssh failure messages -> what the user should hear (ssh exits 255 for its own failures)
_AUTH = ("Permission denied", "Too many authentication failures", "no mutual signature", "Authentication failed")
_CONNECT = (
    "Connection refused",
    "Connection timed out",
    "No route to host",
    "Could not resolve hostname",
    "Network is unreachable",
    "Connection closed",
    "Connection reset",
    "closed by remote host",
    "kex_exchange_identification",
    "Operation timed out",
)
_HOSTKEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


# ssh -o keys a user may pass: connection, host-key and cipher settings. Keys that run a local command or
# load code (ProxyCommand, LocalCommand, KnownHostsCommand, Match exec, PKCS11Provider, Include, ...) are not
# here: a copied command line must not run anything on this machine.
SSH_OPTIONS = frozenset(
    k.lower()
    for k in [
        "AddressFamily",
        "BatchMode",
        "BindAddress",
        "CheckHostIP",
        "Ciphers",
        "Compression",
        "ConnectionAttempts",
        "ConnectTimeout",
        "GlobalKnownHostsFile",
        "HashKnownHosts",
        "HostKeyAlgorithms",
        "HostKeyAlias",
        "IPQoS",
        "KexAlgorithms",
        "LogLevel",
        "MACs",
        "PubkeyAcceptedAlgorithms",
        "PubkeyAcceptedKeyTypes",
        "RekeyLimit",
        "ServerAliveCountMax",
        "ServerAliveInterval",
        "StrictHostKeyChecking",
        "TCPKeepAlive",
        "UpdateHostKeys",
        "UserKnownHostsFile",
    ]
)


@dataclass
class Target:
    """An SSH destination.

    Attributes:
        user: Login name (``None``: ssh's default).
        host: Host name or address.
        port: SSH port (``None``: 22 or the ssh config's).
        identity: Private key file.
        options: Extra ``-o KEY=VALUE`` options; they win over the defaults (ssh takes the first value).
    """

    user: str | None
    host: str
    port: int | None = None
    identity: Path | None = None
    options: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str, port: int | None = None, identity: Path | None = None, options=()) -> Target:
        user, _, host = spec.rpartition("@")
        # A host (or user) starting with '-' would reach ssh as an option (-oProxyCommand=...).
        if not host or any(c.isspace() for c in spec) or spec.startswith("-") or host.startswith("-"):
            raise UserError(f"--host {spec!r} is not USER@HOST or HOST")
        # what a host name, an IPv6 address or a login may hold (ssh itself refuses the rest, in words that
        # would read as a device without rkd-edge)
        if not re.fullmatch(r"[\w.-]+", user or "x") or not re.fullmatch(r"[\w.:%\[\]-]+", host):
            raise UserError(f"--host {spec!r} has characters no user or host name has; give USER@HOST or HOST")
        if port is not None and not 0 < port < 65536:
            raise UserError(f"--port must be 1..65535, got {port}")
        if identity is not None and not Path(identity).is_file():
            raise UserError(f"--identity {identity} is not a file; pass the private key of the device login")
        for opt in options:
            if "=" not in opt or opt.startswith("-") or any(c.isspace() for c in opt):
                raise UserError(f"--ssh-option {opt!r} is not KEY=VALUE (for example ConnectTimeout=5)")
            if opt.split("=", 1)[0].strip().lower() not in SSH_OPTIONS:
                raise UserError(
                    f"--ssh-option {opt.split('=', 1)[0]!r} is not allowed (options that run a local command or load "
                    f"code, like ProxyCommand, are refused); allowed: {', '.join(sorted(SSH_OPTIONS))}"
                )
        return cls(user or None, host, port, Path(identity) if identity else None, list(options))

    @property
    def name(self) -> str:
        where = f"{self.user}@{self.host}" if self.user else self.host
        return f"{where}:{self.port}" if self.port else where

    def ssh(self, command: str) -> list[str]:
        """The ssh argv that runs ``command`` (a shell line) on the target."""
        args = ["ssh"]
        for opt in self.options:
            args += ["-o", opt]
        args += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "StrictHostKeyChecking=accept-new"]
        args += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]  # a dead link ends in a minute
        if self.port:
            args += ["-p", str(self.port)]
        if self.identity:
            args += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        args += ["--", f"{self.user}@{self.host}" if self.user else self.host, command]  # no option after --
        return args


def _last_line(text: str) -> str:
    """The last non-empty line of a device's message, cut to 200 characters, control characters (terminal
    escapes) shown as ``?``."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return "".join(c if c.isprintable() else "?" for c in lines[-1][:200]) if lines else "no message"


def ssh_failed(returncode: int, stderr: str) -> bool:
    """Whether a finished ssh process failed itself, rather than the remote command exiting with 255 (ssh
    passes that status on): ssh's own failures print one of its known messages, an ``ssh:`` line, or nothing
    (``-q``)."""
    if returncode != 255:
        return False
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return (
        not lines
        or any(s in stderr for s in (*_AUTH, *_CONNECT, *_HOSTKEY))
        or any(ln.startswith("ssh:") for ln in lines)
    )


def ssh_error(target: Target, stderr: str) -> UserError:
    """One line for an ssh failure (exit status 255)."""
    msg = _last_line(stderr)
    if any(s in stderr for s in _AUTH):
        return UserError(
            f"authentication to {target.name} failed ({msg}); check --identity and the device's authorized_keys"
        )
    if any(s in stderr for s in _HOSTKEY):
        return UserError(
            f"the host key of {target.name} is not trusted ({msg}); check it and update known_hosts "
            "(ssh-keygen -R HOST), or pass --ssh-option UserKnownHostsFile=FILE"
        )
    if any(s in stderr for s in _CONNECT):
        return UserError(f"cannot connect to {target.name} ({msg}); check the host, --port and that sshd runs there")
    return UserError(f"ssh to {target.name} failed ({msg})")


# Seconds a short command (version check, mktemp, sha256sum, cat, rm) may take: a peer that accepts the
# connection and then says nothing is given up on after this.
SHORT_TIMEOUT = 60
# Bytes kept of what a device prints: a bench JSON is kilobytes, a message a line. More is refused, never held.
MAX_STDOUT = 16 * 2**20
MAX_STDERR = 2**20

# The remote command runs beside a watcher that reads the ssh channel's stdin and stops the command when it
# closes: without a terminal sshd sends no SIGHUP, so a Ctrl-C, a timeout or a dropped link here would leave
# the command running on the device. ``exec 3<&0``: a background job's stdin is /dev/null unless redirected.
_TIED = (
    "exec 3<&0; {cmd} </dev/null & p=$!; {{ cat <&3; kill $p; }} >/dev/null 2>&1 & w=$!; "
    "wait $p; r=$?; kill $w 2>/dev/null; exit $r"
)


def _read_capped(stream, limit: int, out: list, over: list) -> None:
    """Read ``stream`` to its end, keeping at most ``limit`` bytes (``over`` says that more came)."""
    kept = 0
    while chunk := stream.read(65536):
        if kept + len(chunk) > limit:
            over.append(True)
            continue  # drained, not kept, so the far end never blocks on a full pipe
        out.append(chunk)
        kept += len(chunk)


def run(
    target: Target, command: str, stdin: bytes | None = None, timeout: float = SHORT_TIMEOUT, what: str = ""
) -> subprocess.CompletedProcess:
    """Run a shell line on the target; returns the finished process (stdout, stderr as bytes).

    Without ``stdin`` the command is tied to this process (``_TIED``): it stops there when this process stops
    waiting (Ctrl-C, ``timeout``). Output beyond :data:`MAX_STDOUT` / :data:`MAX_STDERR`, a timeout and ssh's
    own failures (exit 255) are each one line naming ``what`` (default: the command's first word).
    """
    what = what or repr(command.split()[0])
    try:
        proc = subprocess.Popen(
            target.ssh(command if stdin is not None else _TIED.format(cmd=command)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise UserError("the OpenSSH client (ssh) is not installed here; apt-get install openssh-client") from None
    out, err, over = [], [], []
    readers = [
        threading.Thread(target=_read_capped, args=(proc.stdout, MAX_STDOUT, out, over), daemon=True),
        threading.Thread(target=_read_capped, args=(proc.stderr, MAX_STDERR, err, over), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin)
            proc.stdin.close()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{target.name} did not finish {what} within {timeout:g} s; it was stopped") from None
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # ends the watcher there, and the command if it still runs
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in readers:
            t.join(timeout=5)
    stdout, stderr = b"".join(out), b"".join(err)
    if ssh_failed(proc.returncode, text := stderr.decode(errors="replace")):
        raise ssh_error(target, text)
    if over:
        raise UserError(
            f"{target.name} printed more for {what} than a bench writes ({MAX_STDOUT // 2**20} MB of output, "
            f"{MAX_STDERR // 2**20} MB of messages); refused unread"
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def check_version(target: Target, exe: str) -> dict:
    """The device's rkd-edge must exist and speak this bench schema and version (``X.Y``)."""
    proc = run(target, f"{shlex.quote(exe)} bench --schema")
    err = proc.stderr.decode(errors="replace")
    if proc.returncode == 127:  # the shell's status for a command it cannot find
        raise UserError(
            f"{exe} is not found on {target.name}; install rkd-edge there (pip install rkd-edge) or pass "
            "--remote-rkd-edge PATH (non-interactive ssh sessions do not read .bashrc)"
        )
    if proc.returncode != 0:  # ssh's own complaint (a bad --ssh-option), or the device's rkd-edge failing
        raise UserError(
            f"'{exe} bench --schema' failed on {target.name} (exit {proc.returncode}: {_last_line(err) or 'no message'}"
            f"); check --host and --ssh-option, and that rkd-edge {__version__} runs there"
        )
    try:
        info = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        remote_version, remote_schema = info["rkd_edge"], info["schema"]
        if not (isinstance(remote_version, str) and isinstance(remote_schema, str)):
            raise TypeError
    except (ValueError, IndexError, KeyError, TypeError, RecursionError):
        raise UserError(
            f"the rkd-edge on {target.name} does not know 'bench --schema' (older than {__version__}); "
            f"install rkd-edge {__version__} there"
        ) from None
    if remote_schema != SCHEMA or remote_version.split(".")[:2] != __version__.split(".")[:2]:
        raise UserError(
            f"version mismatch: {target.name} has rkd-edge {remote_version[:40]!r} ({remote_schema[:40]!r}), this is "
            f"{__version__} ({SCHEMA}); install the same version on both"
        )
    return info


def _bundle_files(bundle: Path) -> tuple[dict, list[str]]:
    manifest = load_manifest(bundle)
    return manifest, [*sorted(manifest.get("files", {})), MANIFEST]


def push_bundle(target: Target, bundle: Path, dest: str) -> None:
    """Copy the manifest's files to ``dest`` on the target (a tar stream over ssh), then verify every
    file's sha256 there."""
    manifest, files = _bundle_files(bundle)
    for rel in files:
        if not (bundle / rel).is_file():
            raise UserError(f"bundle file missing here: {rel}; re-export the bundle")
    q = shlex.quote(dest)
    cmd = target.ssh(f"mkdir -p {q} && tar -xf - -C {q}")
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        with contextlib.suppress(BrokenPipeError):  # the far end gave up: its stderr says why
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for rel in files:
                    tar.add(bundle / rel, arcname=rel, recursive=False)
            proc.stdin.close()
        err = proc.stderr.read()
        proc.wait(timeout=600)
    if proc.returncode:
        text = err.decode(errors="replace")
        raise (
            ssh_error(target, text)
            if ssh_failed(proc.returncode, text)
            else UserError(f"copying the bundle to {target.name}:{dest} failed ({_last_line(text)})")
        )
    listing = "".join(f"{rec['sha256']}  {rel}\n" for rel, rec in manifest["files"].items()).encode()
    proc = run(target, f"cd {q} && sha256sum --check --quiet --strict -", stdin=listing)
    if proc.returncode:
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        raise UserError(f"the bundle copied to {target.name} does not match its hashes there ({_last_line(out)})")


def bench_argv(settings) -> list[str]:
    """``rkd-edge bench`` flags that reproduce ``settings`` on the device (all but --run and --json)."""
    s = settings
    argv = ["--backend", ",".join(s.backends), "--batch", ",".join(map(str, s.batches))]
    argv += ["--snr-db", repr(float(s.snr_db)), "--channel", s.channel]
    argv += ["--seconds", repr(float(s.seconds)), "--warmup", repr(float(s.warmup)), "--threads", str(s.threads)]
    argv += ["--tolerance", repr(float(s.tolerance))]
    if s.precisions:
        argv += ["--precision", ",".join(s.precisions)]
    if s.symbols:
        argv += ["--symbols", str(s.symbols)]
    if s.trials:
        argv += ["--trials", str(s.trials)]
    if s.select:
        argv.append("--select")
    if not s.memory:
        argv.append("--no-memory")
    return argv


def bench_timeout(settings) -> float:
    """Seconds the remote bench may take: ten minutes for loading and the accuracy point, plus three times
    its timed and warm-up seconds (every back end, precision, batch and stage)."""
    s = settings
    variants = len(s.backends) * len(s.precisions or PRECISIONS) * len(s.batches) * len(STAGES)
    return 600 + 3 * variants * (s.seconds + s.warmup)


def remote_bench(bundle: Path, target: Target, settings, exe: str = "rkd-edge", timeout: float | None = None) -> dict:
    """Bench ``bundle`` on ``target`` with its own rkd-edge; returns the bench JSON (schema as a local one).

    The remote bench stops when this process does (Ctrl-C, a dropped link) or after ``timeout`` seconds
    (default :func:`bench_timeout`); its temporary folder is removed after.
    """
    bundle = Path(bundle)
    info = check_version(target, exe)
    proc = run(target, "mktemp -d /tmp/rkd-edge-bench.XXXXXX")
    work = proc.stdout.decode().strip()
    if proc.returncode or not work.startswith("/tmp/rkd-edge-bench."):
        raise UserError(f"cannot make a temporary folder on {target.name} ({_last_line(proc.stderr.decode())})")
    try:
        remote_bundle = f"{work}/{bundle.name or 'bundle'}"
        push_bundle(target, bundle, remote_bundle)
        out = f"{work}/bench.json"
        argv = [exe, "-q", "bench", remote_bundle, "--json", out, *bench_argv(settings)]
        progress.log(f"running on {target.name}: {' '.join(argv)}")
        proc = run(
            target, " ".join(map(shlex.quote, argv)), timeout=timeout or bench_timeout(settings), what="the bench"
        )
        failed = None
        if proc.returncode:
            msg = _last_line(proc.stderr.decode(errors="replace")).removeprefix("error: ")
            hint = "" if msg != "no message" else f"; rerun it on {target.name} without -q to see why"
            failed = UserError(f"the bench on {target.name} failed (exit {proc.returncode}): {msg}{hint}")
        # A bench that measured writes its JSON before it exits 2 for a --select it could not make: the rows
        # come back and this side says why nothing was selected.
        proc = run(target, f"cat {shlex.quote(out)}")
        try:
            result = json.loads(proc.stdout.decode()) if not proc.returncode else None
        except (ValueError, RecursionError):
            result = None
        if result is None:
            raise failed or UserError(f"the bench on {target.name} wrote no readable JSON at {out}")
        check_result(result, target.name)
        if failed is not None and not (settings.select and unselected(result)):
            raise failed  # the device's own error, not the documented --select it could not make
    finally:
        with contextlib.suppress(UserError):  # the connection went away: the folder stays in /tmp
            run(target, f"rm -rf {shlex.quote(work)}")
    # the bundle as named here; the device's copy lived in a temporary folder, removed above (its absolute path
    # would only make two results of one bundle differ)
    result["remote"] = {"host": target.name, "rkd_edge": info["rkd_edge"]}
    result["bundle"] = Path(bundle).resolve().name  # the name: a result names no absolute path
    return result
