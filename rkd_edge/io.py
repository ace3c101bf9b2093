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
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rkd_edge.errors import UserError

# The file that marks a folder as the toolkit's (outputs.py says what it holds), and the suffix of the file
# beside a folder staged_dir is building: what a later command may clear after a kill, and nothing else.
TOOL_MARKER = ".rkd-edge.json"
STAGING_TAG = ".tag"


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
    if (part := partial_of(path)).exists() or part.is_symlink():
        raise _busy(part, option, path)
    folder = next((p for p in path.parents if p.exists()), Path("."))  # the nearest that exists: it is made below
    if not os.access(folder, os.W_OK):  # a read-only file system: said now, not after the work
        raise UserError(f"{option} {path}: {folder} is not writable here; choose another path")


def check_new_files(named: dict[str, str | os.PathLike | None]) -> None:
    """:func:`check_new_file` for each ``{option: path}`` given, and no two options naming one file."""
    seen: dict[Path, str] = {}
    for option, path in named.items():
        if path is None:
            continue
        check_new_file(path, option)
        key = Path(path).absolute()
        if key in seen:
            raise UserError(f"{seen[key]} and {option} both name {path}; give each its own file")
        seen[key] = option


def partial_of(path: Path) -> Path:
    """Where :func:`new_file` writes ``path`` until it is complete (next to it, visible)."""
    return path.with_name(f"{path.name}.partial")


def _busy(part: Path, option: str, path: Path) -> UserError:
    return UserError(
        f"{part} exists: another rkd-edge process is writing {option} {path}, or one was stopped and left "
        "what it wrote there; move or remove it"
    )


def _appeared(part: Path, option: str, path: Path) -> UserError:
    return UserError(f"{option} {path} appeared while this ran; the result is kept in {part}")


@contextlib.contextmanager
def new_file(path: str | os.PathLike, option: str = "--out", keep_partial: bool = False) -> Iterator[Path]:
    """Create the file ``path`` exclusively, with what the block writes to the path it yields.

    The content goes to ``PATH.partial``, created exclusively on entry: a second process writing the same
    file, or what an interrupted one left there, stops with one line instead of one result silently
    replacing the other. On success it is linked to ``path``, which fails if ``path`` appeared meanwhile
    (the result then stays in the ``.partial`` file, and the line says so).

    Args:
        path: The file to create.
        option: The option that named it, for messages.
        keep_partial: Keep ``PATH.partial`` when the block fails (a log of results the user may want).
    """
    path = Path(path)
    _check_parent(path)
    part = partial_of(path)
    try:
        os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    except FileExistsError:
        raise _busy(part, option, path) from None
    done = False
    try:
        yield part
        try:
            _link_new(part, path)
        except FileExistsError:
            done = True  # the result is the user's now: kept in the .partial file, never removed
            raise _appeared(part, option, path) from None
        done = True
        part.unlink(missing_ok=True)
    finally:
        if not done and not (keep_partial and part.is_file() and part.stat().st_size):
            part.unlink(missing_ok=True)


def _link_new(src: Path, dst: Path) -> None:
    """Give ``src``'s content the new name ``dst``; ``FileExistsError`` if ``dst`` exists."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: exclusive creation, then the content over it
        os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
        os.replace(src, dst)


def write_new_json(path: str | os.PathLike, obj: Any, option: str = "--out") -> Path:
    """Write ``obj`` as :func:`write_json` does, to a file that must not exist (:func:`new_file`)."""
    with new_file(path, option) as part:
        part.write_text(json_text(obj))
    return Path(path)


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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {twice[:40]!r} appears twice")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise ValueError(f"{text[:40]} is beyond a float")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """Parse JSON as rkd-edge writes it: a key given twice (which copy would count?), ``NaN``, ``Infinity``
    and numbers beyond a float are refused (``ValueError``) instead of read."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite_float, parse_constant=_no_constant)


MAX_JSON_BYTES = 64 << 20  # far above any JSON rkd-edge writes (a search log, a latency table: kB to a MB)
MAX_MARKER_BYTES = 64 << 10  # a marker is a line of JSON


def _read_chunk(fd: int, n: int, what: str, path: Path) -> bytes:
    try:
        return os.read(fd, n)
    except OSError as exc:  # a "regular" file of /proc or a failing disk: EIO names no path by itself
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc}); give a readable file") from None


def read_bytes(
    path: str | os.PathLike, what: str = "file", limit: int = MAX_JSON_BYTES, private: bool = False
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. A FIFO (which would block), a device such as
    /dev/zero (which would fill the memory), a folder or a larger file is refused in one line; with
    ``private``, so is a file others than its owner may read (a secret)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; check the path") from None
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc}); check the path") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{what} {path} is a folder; give the file")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is not a regular file (a folder, device or FIFO?); give the file")
        if private and st.st_mode & 0o077:
            raise UserError(f"{what} {path} can be read by others than its owner; chmod 600 it")
        if st.st_size > limit:
            raise UserError(f"{what} {path} has {st.st_size:,} bytes, more than any such file ({limit:,}); check it")
        chunks, total = [], 0
        while chunk := _read_chunk(fd, min(1 << 20, limit + 1 - total), what, path):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew since the fstat
                raise UserError(f"{what} {path} has more than {limit:,} bytes, more than any such file; check it")
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: str | os.PathLike, what: str = "file", limit: int = MAX_JSON_BYTES) -> str:
    """:func:`read_bytes` as UTF-8 text (anything else is one line)."""
    try:
        return read_bytes(path, what, limit).decode()
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not text (UTF-8), so not a file rkd-edge wrote; replace it") from None


def read_json(path: str | os.PathLike, what: str = "file", expect: type | None = None) -> Any:
    """Read JSON, turning a missing or corrupt file into a :class:`UserError`.

    Args:
        path: The file.
        what: What the file is, for the message.
        expect: The type the top level must have (``dict``, ``list``); ``None`` accepts any.
    """
    path = Path(path)
    text = read_text(path, what)
    try:
        obj = strict_json(text)
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, or an int of 5,000 digits
        raise UserError(f"{what} {path} is not valid JSON ({str(getattr(exc, 'msg', exc))[:80]})") from None
    except RecursionError:  # [[[[...]]]] a hundred thousand deep: not a file rkd-edge wrote
        raise UserError(f"{what} {path} is nested too deeply to be a file rkd-edge wrote; replace it") from None
    if expect is not None and not isinstance(obj, expect):
        raise UserError(f"{what} {path} holds a JSON {type(obj).__name__}, expected a {expect.__name__}")
    return obj


class FileSet:
    """Several files of one result committed together: all of the new set, or the old one.

    Writers write into a hidden staging folder inside ``folder`` (same filesystem). When every file is
    written, the staging folder gets a commit list (written last, atomically) and the files are renamed into
    place. A failure while writing (a full disk) leaves the previous set whole and the staging folder is
    removed; a process killed between two renames leaves a committed staging folder, whose renames the next
    ``FileSet`` of the folder with the same ``names`` finishes before it starts (:func:`finish_file_sets`).
    Writers of one folder hold its lock (:class:`OutputLock`).

    Args:
        folder: Where the set lives.
        names: The file names a set of this kind may hold; a leftover listing any other name is not finished
            (a planted ``.staging.x`` listing ``system.json`` must not replace a run's files).

    Example::

        with FileSet(out, EVALUATION_ENTRIES) as fs:
            write_rows(rows, fs.dir)                       # writes fs.dir / "evaluation.csv", ...
            plot(fs.path("accuracy_vs_snr.png"))
    """

    def __init__(self, folder: str | os.PathLike, names: frozenset[str] | set[str]) -> None:
        self.folder, self.names = Path(folder), frozenset(names)
        self.dir: Path | None = None

    def path(self, name: str) -> Path:
        """Where to write ``name`` (a plain file name) so that it is committed with the set."""
        return self.dir / name

    def __enter__(self) -> FileSet:
        _check_parent(self.folder / "x")
        finish_file_sets(self.folder, self.names)
        self.dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
        (self.dir / FILE_SET_TAG).touch()  # a user's own .staging.x folder carries none: it is never touched
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # the writer failed: the old set stays whole
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        names = sorted(p.name for p in self.dir.iterdir() if p.is_file() and p.name != FILE_SET_TAG)
        try:
            if stray := [n for n in names if n not in self.names]:
                raise ValueError(f"a file set of {sorted(self.names)} was given {stray}")
            for name in names:
                os.chmod(self.dir / name, FILE_MODE)
            listed = self.dir / (COMMIT_LIST + ".tmp")
            listed.write_text(json.dumps(names))
            os.replace(listed, self.dir / COMMIT_LIST)  # the set is committed from here on
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        # A rename that fails here leaves the committed staging folder: the next FileSet finishes the set.
        _rename_listed(self.dir, self.folder, names)
        shutil.rmtree(self.dir, ignore_errors=True)


STAGING_PREFIX = ".staging."
COMMIT_LIST = ".commit.json"  # in a staging folder: its files form a whole set, to be renamed into place
FILE_SET_TAG = ".rkd-edge-staging"  # in a staging folder: made by a FileSet
MAX_COMMIT_LIST = 1 << 16  # bytes: a list of a few file names


def _commit_list(staging: Path) -> list[str] | None:
    """The names a staging folder's commit list holds; ``None`` when it has none, or one rkd-edge did not
    write (a link, a huge file, not a list of plain names)."""
    path = staging / COMMIT_LIST
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_COMMIT_LIST:
            return None
        names = strict_json(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    odd = ("", ".", "..", FILE_SET_TAG)
    plain = isinstance(names, list) and all(isinstance(n, str) and n == Path(n).name and n not in odd for n in names)
    return names if plain else None


def _rename_listed(staging: Path, folder: Path, names: list[str]) -> None:
    for name in names:
        src = staging / name
        if src.is_file() and not src.is_symlink():
            os.replace(src, folder / name)


def finish_file_sets(folder: Path, names: frozenset[str]) -> None:
    """Finish what a killed :class:`FileSet` of ``names`` left in ``folder``: a committed set's remaining
    renames (the new set whole); a staging folder without a readable commit list is removed (the old set
    whole). One listing another name is left alone: not a set of this kind. The caller holds the lock."""
    for staging in Path(folder).glob(STAGING_PREFIX + "*"):
        if staging.is_symlink() or not staging.is_dir():
            continue
        if not (staging / FILE_SET_TAG).is_file():  # a user's own folder of that name, or one killed before
            with contextlib.suppress(OSError):  # its tag: only an empty one goes
                staging.rmdir()
            continue
        listed = _commit_list(staging)
        if listed is not None and not set(listed) <= names:
            continue
        if listed:
            with contextlib.suppress(OSError):
                _rename_listed(staging, Path(folder), listed)
        shutil.rmtree(staging, ignore_errors=True)


def special_entry(root: Path) -> Path | None:
    """``root`` itself or the first entry under it that is a symbolic link or a special file (FIFO, device,
    socket), or None: what a copy must not follow (a link may lead out of the folder, to a secret or to
    ``/dev/zero``; a FIFO blocks the reader)."""
    mode = os.lstat(root).st_mode
    if not stat.S_ISDIR(mode):
        return None if stat.S_ISREG(mode) else root
    for folder, dirs, files in os.walk(root):  # never follows links
        for name in sorted(dirs + files):
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return path
    return None


def _staging_tag(work: Path) -> Path:
    """The file that says :func:`staged_dir` made the folder ``work`` (``.NAME.XXXXXXXX.partial.tag``)."""
    return work.with_name(work.name + STAGING_TAG)


def _moved_aside(out: Path) -> re.Pattern:
    """Names :func:`commit_dir` gives the artefact it moves aside to replace ``out`` (``.NAME.PID.old``)."""
    return re.compile(rf"\.{re.escape(out.name)}\.\d+\.old")


def restore_moved_aside(out: Path) -> None:
    """Put back an artefact a killed :func:`commit_dir` left moved aside with ``out`` missing, before a
    command decides whether ``out`` exists (under ``out``'s lock, which does it: :func:`_clear_leftovers`)."""
    if out.exists() or out.is_symlink() or not out.parent.is_dir():
        return
    if any(_moved_aside(out).fullmatch(p.name) and (p / TOOL_MARKER).is_file() for p in out.parent.iterdir()):
        with OutputLock(out):
            pass


def _clear_leftovers(out: Path) -> None:
    """What a killed command left beside ``out``, cleared by the next holder of its lock (no one else can be
    writing them): :func:`staged_dir` folders go (known by the tag they are created with); an artefact
    :func:`commit_dir` moved aside to replace it goes too (known by the toolkit's marker), unless ``out``
    itself is missing (the kill fell between the two renames): then it is put back. A folder of the same
    name that is neither is someone else's and stays.
    """
    partial = re.compile(rf"\.{re.escape(out.name)}\.[A-Za-z0-9_]{{8}}\.partial")
    old = _moved_aside(out)
    for p in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        if not p.is_dir() or p.is_symlink():
            continue
        if partial.fullmatch(p.name) and (_staging_tag(p).is_file() or not any(p.iterdir())):
            shutil.rmtree(p, ignore_errors=True)
            _staging_tag(p).unlink(missing_ok=True)
        elif old.fullmatch(p.name) and (p / TOOL_MARKER).is_file():
            if not out.exists() and not out.is_symlink():
                os.rename(p, out)
            else:
                shutil.rmtree(p, ignore_errors=True)


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
            try:
                fd = self._open()
            except OSError as exc:  # the folder takes no new file (/proc, read-only): say it of the output
                raise UserError(
                    f"{self.target} cannot be written ({exc.strerror or exc}: not even its lock file "
                    f"{self.path.name}); choose an --out in a writable folder"
                ) from None
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
                _clear_leftovers(self.target)
                with contextlib.suppress(OSError):  # the holder's pid, for people; a full disk may refuse it
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                return self
            os.close(fd)

    def _open(self) -> int:
        """The lock file's descriptor, created if missing; never through a link, never a user's file: a
        link named like the lock would have its target truncated, a file of other content overwritten."""
        not_ours = f"{self.path} is not an rkd-edge lock (a link, a hard link, a folder or a file of other content)"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise UserError(f"{not_ours}; move it away, or choose another --out") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or not re.fullmatch(rb"(\d{1,10}\n)?", os.pread(fd, 16, 0)):
            os.close(fd)
            raise UserError(f"{not_ours}; move it away, or choose another --out")
        return fd

    def release(self) -> None:
        if self._nested:
            OutputLock._held[self.path.resolve()] -= 1
            self._nested = False
            return
        if self._fd is not None:
            OutputLock._held.pop(self.path.resolve(), None)
            with contextlib.suppress(FileNotFoundError):  # the file it locked: a later holder's stays
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _snapshot(path: Path) -> list[tuple] | None:
    """What is at ``path`` (each entry's relative name, type, size, mtime and inode), links not followed;
    None when nothing is there."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return None
    entries = [(".", top.st_mode, top.st_ino)]
    if stat.S_ISDIR(top.st_mode):
        for root, dirs, files in os.walk(path):
            for name in sorted(dirs + files):
                st = os.lstat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), path)
                entries.append((rel, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino))
    return sorted(entries, key=lambda e: e[0])


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
    tag = _staging_tag(work)  # beside the folder, not in it: the folder holds exactly what is committed
    # What the caller checked may be replaced; if someone changes it while the work runs (adds their own
    # file, swaps the folder), the new folder is not committed over it.
    before = _snapshot(out)
    try:
        tag.touch()
        yield work
        if _snapshot(out) != before:
            raise UserError(f"{out} changed while this command ran; it was left as it is: run the command again")
        commit_dir(work, out, replace)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        tag.unlink(missing_ok=True)


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


def json_digest(obj: Any, compact: bool = False) -> str:
    """Hex sha256 of ``obj`` as key-sorted JSON: the one canonical form every config hash, cache key and
    id is taken of. ``compact`` drops the spaces after separators (as bundle ids and device fingerprints
    have always been hashed: changing either form would change every recorded hash)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":") if compact else None, default=str)
    return sha256_bytes(text.encode())
