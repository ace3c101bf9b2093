"""The ``rkd-edge`` command line (typer). Commands only parse arguments and override the config."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import sys

import typer

try:  # typer >= 0.16 carries its own copy of click; its exceptions are those classes
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_errors

from rkd_edge import progress, stops
from rkd_edge.errors import UserError, one_line
from rkd_edge.runtime.bundle import BundleError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="rkd-edge: distill a large vision model into a tiny semantic encoder, make it robust "
    "to channel noise, and ship it to edge devices.",
)


@app.callback()
def _root(quiet: bool = typer.Option(False, "--quiet", "-q", help="Silence progress bars and status lines.")):
    progress.set_quiet(quiet)
    if quiet:  # matplotlib's notes about an unwritable config folder (it uses a temporary one) are not errors
        logging.getLogger("matplotlib").setLevel(logging.ERROR)


def _register() -> None:
    from rkd_edge.cli import bench, data, deploy, devices, link, teacher, train

    app.add_typer(data.app, name="data", help="Inspect datasets.")
    app.add_typer(teacher.app, name="teacher", help="Train, evaluate and inspect teachers.")
    train.register(app)
    deploy.register(app)
    bench.register(app)
    devices.register(app)
    link.register(app)


_register()


INTERRUPTED = 130  # the shell's code for SIGINT (typer's Ctrl-C exit); no command exits with it otherwise
BROKEN_PIPE = 1  # click's code for a reader that went away during a command's own writes; the same after it


def _stop(signum, frame) -> None:
    """SIGINT, and SIGTERM (``kill``, a job scheduler, ``timeout``): stop as Ctrl-C does (locks released,
    partial work kept for the rerun to resume, one line said), remembering that a stop was asked for."""
    stops.request(signum)
    raise KeyboardInterrupt


# Packages of the full install that the torch-free one (the ``runtime`` extra: tx, rx, the Runtime, devices
# list/show/detect) lacks, with their pip names: a command that needs one says so in one line.
FULL_INSTALL = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxslim": "onnxslim",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "rich": "rich",
}


def _missing_package(exc: ModuleNotFoundError, args: list[str]) -> str | None:
    """The one line for a command run on an install that lacks a package it needs, or ``None`` when the
    missing module is not one of the full install's (a bug, shown as such)."""
    top = (exc.name or "").split(".")[0]
    if top not in FULL_INSTALL:
        return None
    return (
        f"error: {_command_path(args)} needs {FULL_INSTALL[top]}, which is not installed here (the torch-free "
        f"install runs tx, rx, the Runtime and devices list/show/detect); pip install {FULL_INSTALL[top]}, or "
        "install rkd-edge with its dependencies"
    )


MAX_MESSAGE = 600  # characters of an error line (a message quoting a hostile value in full ran to 2,000)


def _refuse_empty(args: list[str]) -> None:
    """An empty argument is a missing value (an unset shell variable), never a choice: as a path it would
    mean the current folder, so ``--out ""`` would make a run of whatever folder the user stands in."""
    for i, a in enumerate(args):
        if not a.strip() or (a.startswith("--") and a.endswith("=")):  # blank (" ") is as empty
            opt = a[:-1] if a.strip() else (args[i - 1] if i and args[i - 1].startswith("-") else "")
            before = " ".join(args[max(0, i - 2) : i])
            what = f"{opt} was given an empty value" if opt else f"the argument after {before!r} is empty"
            raise UserError(f"{what} (an unset shell variable?); give a value or leave it out")


def _option_value(args: list[str], option: str) -> str | None:
    """The value given to ``option`` in ``args`` (``--out X`` or ``--out=X``), if any."""
    for i, a in enumerate(args):
        if a == option and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(option + "="):
            return a.partition("=")[2]
    return None


def _option_at(options: dict, token: str) -> tuple[object | None, str, str | None]:
    """The option ``token`` names, as written, and the value attached to it (``--x=1``, ``-x1``), if any."""
    name, eq, value = token.partition("=")
    if token.startswith("--") and name in options:
        return options[name], name, value if eq else None
    if token in options:
        return options[token], token, None
    if len(token) > 2 and token[0] == "-" and token[1] != "-" and token[:2] in options:
        return options[token[:2]], token[:2], token[2:]
    return None, token, None


def _refuse_repeats(args: list[str]) -> None:
    """An option given twice with different values is a mistake (click would keep the last one silently):
    refused, naming both. Repeatable options (``--set``) and the same value twice (as parsed) pass."""
    if not isinstance(app, typer.Typer):  # a test's stand-in for the app
        return
    cmd, i = typer.main.get_command(app), 0
    while hasattr(cmd, "commands"):  # down the groups to the command: skip their own options (-q)
        while i < len(args) and args[i].startswith("-"):
            i += 1
        if i == len(args) or (cmd := cmd.commands.get(args[i])) is None:
            return  # no command, or an unknown one: click says so
        i += 1
    options = {o: p for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
    seen: dict[str, tuple[str, object]] = {}  # parameter -> (the option and value as given, the value parsed)
    while i < len(args) and args[i] != "--":
        p, name, value = _option_at(options, args[i])
        i += 1
        if p is None or p.multiple or p.count:
            continue
        if p.is_flag:
            value, parsed = None, name in p.opts
        else:
            if value is None and i < len(args):
                value, i = args[i], i + 1
            try:
                parsed = float(value)  # 1, 1.0 and 01 are one number
            except (TypeError, ValueError):
                parsed = value
            parsed = "nan" if parsed != parsed else parsed  # NaN twice is the same value (refused as NaN later)
        given = (" ".join(filter(None, (name, value))), parsed)
        if (before := seen.setdefault(p.name, given))[1] != parsed:
            raise UserError(f"{p.opts[0]} is given twice ({before[0]} and {given[0]}); give it once")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (Python's, torch's CPU allocator or CUDA's)."""
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError, without importing torch here
        or "can't allocate memory" in text
        or "not enough memory" in text
        or "CUDA out of memory" in text
    )


def _say(line: str) -> None:
    """One line on stderr; a closed or full stderr does not change the exit code the line went with."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # AttributeError: no sys.stderr at all
        print(one_line(line), file=sys.stderr, flush=True)


def _writable(stream, fd: int) -> bool:
    """Whether a standard stream can be written. Closed at start, Python makes it ``None``, or a launcher's
    own file (a pyenv shim script, read-only) takes its descriptor: writes to it fail mid-command."""
    try:
        return stream is not None and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except OSError:
        return False


def _command_path(args: list[str]) -> str:
    """``rkd-edge evaluate`` for ``[-q, evaluate, RUN, --snr]``: the command a usage error belongs to (click
    names only the root for an option that lacks its value)."""
    cmd, path = typer.main.get_command(app), ["rkd-edge"]
    for a in args:
        if a.startswith("-"):
            continue
        sub = getattr(cmd, "commands", {}).get(a)
        if sub is None:
            break
        cmd = sub
        path.append(a)
    return " ".join(path)


def _usage_line(exc: click_errors.UsageError, args: list[str]) -> str:
    where = exc.ctx.command_path if exc.ctx and exc.ctx.command_path != "rkd-edge" else _command_path(args)
    message = exc.format_message().rstrip(".")
    if where != "rkd-edge" and re.match(r"No such option: (-q|--quiet)\b", message):  # click may add suggestions
        return f"error: -q belongs before the command: rkd-edge -q {where.removeprefix('rkd-edge ')} ..."
    return f"error: {message}; see {where} --help"


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a parent that chose to ignore it is obeyed
        signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)
    args = sys.argv[1:] if argv is None else argv
    if not _writable(sys.stdout, 1):  # started with stdout closed (`>&-`): a result printed there would vanish
        _say("error: standard output is closed; redirect it to a file or /dev/null")
        sys.exit(2)
    if not _writable(sys.stderr, 2):  # closed (`2>&-`): progress and messages go nowhere, the work still runs
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        sys.stderr = sys.stderr or open(2, "w", closefd=False)  # noqa: SIM115 - the process's own stream
    try:
        _refuse_empty(args)
        _refuse_repeats(args)
        code = app(args=argv, prog_name="rkd-edge", standalone_mode=False)  # usage errors reach us: one line
        sys.stdout.flush()  # a reader that went away is found here, not in the interpreter's exit
    except getattr(click_errors, "NoArgsIsHelpError", ()):  # bare `rkd-edge` or group: typer printed the help
        sys.exit(2)
    except click_errors.UsageError as exc:  # unknown option, missing argument, a value click cannot convert
        _say(_usage_line(exc, args))
        sys.exit(2)
    except click_errors.ClickException as exc:
        _say(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        _say("aborted")
        sys.exit(1)
    except (UserError, BundleError) as exc:
        text = str(exc)  # a message quoting a huge argument stays one readable line
        _say(f"error: {text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + ' ...'}")
        sys.exit(2)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except BrokenPipeError:  # `rkd-edge ... | head`: the reader has what it wanted; exit as a pipe's writer does
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(BROKEN_PIPE)
    except ModuleNotFoundError as exc:
        if (line := _missing_package(exc, args)) is None:
            raise
        _say(line)
        sys.exit(2)
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        tried = re.search(r"tried to allocate [\d.]+ ?[KMGT]?i?B(ytes)?", str(exc), re.IGNORECASE)
        _say(
            f"error: out of memory ({tried[0] if tried else type(exc).__name__}); lower data.batch_size, "
            "data.image_size or the network sizes (finished stages and checkpoints are kept: rerun to resume)"
        )
        sys.exit(2)
    except OSError as exc:
        # A full disk, a read-only folder, a vanished file: the environment, said in one line. Outputs are
        # committed whole or not at all, so what was there before is intact.
        named = exc.filename or _option_value(args, "--out")  # a failed write names no file: the --out then
        where = f" ({named})" if named else ""
        _say(
            f"error: {exc.strerror or exc}{where}; check that path and its permissions (outputs are written whole "
            "or not at all: nothing was left half-written)"
        )
        sys.exit(2)
    except Exception:
        # A stop that lands inside a library (torch's lazy imports swallow the KeyboardInterrupt and fail
        # later with another error) is still the stop that was asked for, not a failure of the command.
        if not stops.requested():
            raise
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer turns any stop into Exit(130) inside app(): the line is said here
        code = stops.exit_code()  # 128 + the signal, as a shell reports it: 143 for SIGTERM
        _say(
            "interrupted: nothing half-written is left (a training command keeps its finished stages and "
            "checkpoints: rerun it to resume; a remote bench was stopped on the device)"
        )
    if isinstance(code, int) and code:  # typer.Exit(n) and --help come back as a code outside standalone mode
        sys.exit(code)
    return 0
