"""Stop requests (SIGINT, SIGTERM) that must outlive a library which swallows the KeyboardInterrupt they
raise (torch-pruning's graph tracing has a bare ``except:``; torch's lazy imports turn it into another
error): the CLI records each request here, and code after such a library call asks :func:`check`."""

from __future__ import annotations

_REQUESTED: list[int] = []


def request(signum: int) -> None:
    """Record that signal ``signum`` asked this process to stop."""
    _REQUESTED.append(signum)


def requested() -> bool:
    """Whether a stop was asked for."""
    return bool(_REQUESTED)


def exit_code() -> int:
    """The shell's code for the stop: 128 + the signal (130 for SIGINT, 143 for SIGTERM), 130 if none was
    recorded (typer's own Ctrl-C)."""
    return 128 + (_REQUESTED[-1] if _REQUESTED else 2)


def check() -> None:
    """Raise KeyboardInterrupt if a stop was asked for (after a call that may have swallowed it)."""
    if _REQUESTED:
        raise KeyboardInterrupt
