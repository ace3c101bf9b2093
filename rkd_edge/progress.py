"""Progress bars (rich) that one switch silences."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rkd_edge.io import atomic_path

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) every progress bar and status line."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


class _Null:
    def update(self, *a, **k) -> None:  # noqa: D401 - no-op
        pass

    def advance(self, *a, **k) -> None:
        pass


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator:
    """A progress task; call ``.advance(n=1, **fields)`` on the yielded object."""
    if _QUIET or sys.stderr is None:  # started with stderr closed (2>&-): progress is cosmetic, the work is not
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
        console=Console(stderr=True),  # stdout holds the result only: `rkd-edge evaluate ... > out.json` parses
    )
    with prog:
        tid = prog.add_task(description, total=total, info="")

        class _Handle:
            def advance(self, n: int = 1, info: str = "") -> None:
                prog.update(tid, advance=n, info=info)

            def update(self, info: str) -> None:
                prog.update(tid, info=info)

        yield _Handle()


_LOG_FILE = None


def set_log_file(path) -> None:
    """Also append every status line to ``path`` (the run directory's ``run.log``); None stops it.

    A log hard-linked from elsewhere (a ``cp -al`` snapshot, or a link someone planted) first gets its own
    copy: appending would write into the other name's file too.
    """
    global _LOG_FILE
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                with atomic_path(path) as tmp:
                    shutil.copyfile(path, tmp)
    _LOG_FILE = Path(path) if path is not None else None


def log_file() -> Path | None:
    """Where status lines are appended now (None: nowhere)."""
    return _LOG_FILE


def log(message: str) -> None:
    """A status line on stderr unless quiet, and in the run log if one is set."""
    if _LOG_FILE is not None:
        with open(_LOG_FILE, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
    if not _QUIET and sys.stderr is not None:
        print(message, file=sys.stderr)
