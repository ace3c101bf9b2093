"""Atomic, exclusive file output and hashing: nothing half-written is ever left behind.

Every file and folder the toolkit writes gets the user's umask (0644 / 0755 by default), like any other
program's output: temporary files are created 0600 by :mod:`tempfile`, so their mode is set before they
are renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rkd_edge.errors import UserError


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread starts.
    old = os.umask(0o022)
    os.umask(old)
    return old


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


def file_in_the_way(paths) -> Path | None:
    """The first of ``paths`` (folders an output needs) that exists as something other than a folder."""
    return next((p for p in paths if p.exists() and not p.is_dir()), None)


def check_new_file(path: str | os.PathLike | None, option: str = "--out") -> None:
    """Refuse, before any work, an output file that exists or whose folder is a file: outputs are created,
    never silently written over (``None``: the option was not given)."""
    if path is None:
        return
    path = Path(path)
    if (blocker := file_in_the_way(reversed(path.parents))) is not None:
        raise UserError(f"{option} {path}: {blocker} is a file, not a folder; choose another path")
    if path.exists() or path.is_symlink():
        raise UserError(f"{option} {path} already exists; choose another path or remove it (it is never replaced)")


def _check_parent(path: Path) -> None:
    """Create ``path``'s parent folders, turning 'a file is in the way' into one line."""
    if (blocker := file_in_the_way(reversed(path.parents))) is not None:
        raise UserError(f"{blocker} is a file, not a folder; choose an output path outside it")
    path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (diffs cleanly), atomically."""
    return write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """``obj`` as the indented, key-sorted JSON text that :func:`write_json` writes.

    Non-finite floats become ``null``: ``NaN`` and ``Infinity`` are not JSON, and other readers refuse them.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    return text + "\n"


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (also inside lists, tuples, dicts and arrays) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike, what: str = "file", expect: type | None = None) -> Any:
    """Read JSON, turning a missing or corrupt file into a :class:`UserError`.

    Args:
        path: The file.
        what: What the file is, for the message.
        expect: The type the top level must have (``dict``, ``list``); ``None`` accepts any.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; check the path")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    except RecursionError:  # [[[[...]]]] a hundred thousand deep: not a file rkd-edge wrote
        raise UserError(f"{what} {path} is nested too deeply to be a file rkd-edge wrote; replace it") from None
    if expect is not None and not isinstance(obj, expect):
        raise UserError(f"{what} {path} holds a JSON {type(obj).__name__}, expected a {expect.__name__}")
    return obj


class FileSet:
    """Several files of one result committed together.

    Writers write into a hidden staging folder inside ``folder`` (same filesystem); only when every file
    is written are they renamed into place. A failure while writing (a full disk, say) leaves the
    previous set whole, and the staging folder is removed.

    Example::

        with FileSet(out) as fs:
            write_rows(rows, fs.dir)                       # writes fs.dir / "evaluation.csv", ...
            plot(fs.path("accuracy_vs_snr.png"))
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.dir: Path | None = None

    def path(self, name: str) -> Path:
        """Where to write ``name`` (a plain file name) so that it is committed with the set."""
        return self.dir / name

    def __enter__(self) -> FileSet:
        _check_parent(self.folder / "x")
        self.dir = Path(tempfile.mkdtemp(prefix=".staging.", dir=self.folder))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                staged = sorted(p for p in self.dir.iterdir() if p.is_file())
                for tmp in staged:
                    os.chmod(tmp, FILE_MODE)
                for tmp in staged:
                    os.replace(tmp, self.folder / tmp.name)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class OutputLock:
    """An exclusive, non-blocking lock on an output path, held by one rkd-edge process at a time.

    The lock is ``flock`` on a hidden file next to the output (``.NAME.lock``); it is released when the
    process ends, however it ends, and the file is removed on a clean release. A second process that
    targets the same output fails at once with one line instead of racing the first.
    """

    # Locks this process holds (lock path -> holders): taking the same lock again nests, since a second
    # flock on a new descriptor would conflict with our own.
    _held: dict[Path, int] = {}

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.lock"
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> OutputLock:
        _check_parent(self.target)
        key = self.path.resolve()
        if key in OutputLock._held:
            OutputLock._held[key] += 1
            self._nested = True
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise UserError(
                        f"{self.target} is being written by another rkd-edge process; wait for it to finish "
                        "or choose another --out"
                    ) from None
                raise
            # The holder before us may have removed the lock file after we opened it: only a lock on the
            # file that is still at the path counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                OutputLock._held[key] = 1
                self._fd = fd
                with contextlib.suppress(OSError):  # the holder's pid, for people; a full disk may refuse it
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                return self
            os.close(fd)

    def release(self) -> None:
        if self._nested:
            OutputLock._held[self.path.resolve()] -= 1
            self._nested = False
            return
        if self._fd is not None:
            OutputLock._held.pop(self.path.resolve(), None)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a folder aside and move it to ``out`` only when the block succeeds.

    The caller holds the :class:`OutputLock` of ``out`` and has decided whether an existing ``out`` may
    be replaced (``replace``); an existing ``out`` is otherwise an error. A failure, or a kill at any
    point, leaves ``out`` as it was (at worst a hidden ``.NAME.*.partial`` folder beside it).
    """
    out = Path(out)
    _check_parent(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(work, DIR_MODE)
    try:
        yield work
        commit_dir(work, out, replace)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def commit_dir(work: Path, out: Path, replace: bool) -> None:
    """Move the finished folder ``work`` to ``out`` (replacing it only if ``replace``)."""
    if out.exists() or out.is_symlink():
        if not replace and not (out.is_dir() and not any(out.iterdir())):
            raise UserError(f"{out} appeared while this command ran; choose another --out")
        trash = out.parent / f".{out.name}.{os.getpid()}.old"
        os.rename(out, trash)
        try:
            os.rename(work, out)
        except OSError:
            os.rename(trash, out)
            raise
        shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
    else:
        os.rename(work, out)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()
