"""The command line: help, data info, and one-line errors with exit code 2 for bad input."""

import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli


def test_help_lists_groups():
    out = run_cli("--help", check=True).stdout
    for group in ("data", "teacher", "search", "distill", "robust", "evaluate", "pipeline", "export"):
        assert group in out


def test_data_info_digits():
    out = run_cli("data", "info", "digits", check=True).stdout
    assert "1797" in out and "scikit-learn" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["data", "info", "mnist-not"], "unknown dataset"),
        (["data", "info", "imagefolder:/nonexistent"], "not a directory"),
        (["teacher", "eval", "nope:x", "--dataset", "digits"], "unknown teacher spec"),
        (["teacher", "eval", "local:/nonexistent", "--dataset", "digits"], "not found"),
        (["evaluate", "/nonexistent", "--snr", "1:2"], "malformed range"),
        (["pipeline", "--out", "OUT", "--set", "stage1.nonsense=1"], "unknown config key"),
        (["pipeline", "--out", "OUT", "--preset", "nope"], "unknown preset"),
        (["search", "--out", "OUT", "--cost", "watts", "--set", "search.epochs=1"], "unknown value 'watts'"),
        (["search", "--out", "OUT", "--set", "search.epochs=0"], "search.epochs: 0 is outside"),
    ],
)
def test_bad_input_one_line_exit_2(args, needle, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_start_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("pipeline", "--out", str(out), "--teacher", "local:/nonexistent")
    assert proc.returncode == 2 and "not found" in proc.stderr
    assert not out.exists()
    proc = run_cli("pipeline", "--out", str(out), "--dataset", "nope")
    assert proc.returncode == 2 and not out.exists()


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 3221225472 bytes. Error code 12 (Cannot allocate memory)"
        ),
        MemoryError(),
    ],
)
def test_running_out_of_memory_is_one_line(monkeypatch, capsys, error):
    import rkd_edge.cli as cli

    def app(**_kw):
        raise error

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as e:
        cli.main(["teacher", "train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: out of memory"), err
    assert "lower data.batch_size" in err[0]
    if isinstance(error, RuntimeError):
        assert "(tried to allocate 3221225472 bytes)" in err[0]


def test_other_runtime_errors_are_not_called_memory(monkeypatch):
    import rkd_edge.cli as cli

    def app(**_kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["teacher", "train"])


@pytest.mark.parametrize(
    "args,line",
    [
        (["evaluate", "X", "--snr"], "error: Option '--snr' requires an argument; see rkd-edge evaluate --help"),
        (["devices", "estimate", "X", "--batch"], "see rkd-edge devices estimate --help"),
        (["evaluate", "X", "-q"], "error: -q belongs before the command: rkd-edge -q evaluate ..."),
        (["evaluate", "X", "--quiet"], "error: -q belongs before the command: rkd-edge -q evaluate ..."),
    ],
)
def test_a_usage_error_names_its_own_command(args, line):
    """An option without its value pointed at the root's help; -q after the command said only 'No such option'."""
    proc = run_cli(*args)
    (said,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and said.startswith("error: ") and line in said, proc.stderr


def _with_closed(fd: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from rkd_edge.cli import main; main()", *args],
        stdout=None if fd == 1 else subprocess.PIPE,
        stderr=None if fd == 2 else subprocess.PIPE,
        preexec_fn=lambda: os.close(fd),
        text=True,
        timeout=120,
    )


def test_a_closed_stdout_or_stderr_keeps_the_exit_code():
    """`data list >&-` printed its result nowhere and exited 0; with stderr closed a usage error exited 1."""
    proc = _with_closed(1, "data", "list")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: standard output is closed; redirect it to a file or /dev/null"
    )
    assert _with_closed(2, "nosuch").returncode == 2
    assert (
        subprocess.run(
            [sys.executable, "-c", "from rkd_edge.cli import main; main()", "nosuch"],
            stderr=open("/dev/full", "w"),  # noqa: SIM115 - closed with the process
            timeout=120,
        ).returncode
        == 2
    )


# The torch-free install (the `runtime` extra) lacks torch and onnx: `import torch` fails as it does there.
WITHOUT = "import sys; sys.modules.update(dict.fromkeys({mods}, None)); from rkd_edge.cli import main; main()"


@pytest.mark.parametrize(
    "args, blocked, needs",
    [
        (["bench", "{b}", "--no-memory"], ["torch"], "rkd-edge bench needs torch"),
        (["evaluate", "{b}"], ["torch"], "rkd-edge evaluate needs torch"),
        (["data", "info", "digits"], ["torch"], "rkd-edge data info needs torch"),
        (["devices", "estimate", "{b}", "--device", "orin-nano-8gb"], ["torch", "onnx"], "needs onnx"),
        (["export", "trt", "{b}"], ["torch", "onnx"], "TensorRT is not installed"),  # torch-free up to TensorRT
    ],
)
def test_a_command_the_torch_free_install_cannot_run_says_so_in_one_line(tiny_bundle, args, blocked, needs):
    """On a board with the runtime extra only, these were a ModuleNotFoundError traceback, exit 1."""
    code = WITHOUT.format(mods=blocked)
    argv = [a.format(b=tiny_bundle) for a in args]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and needs in err[0], proc.stderr[-2000:]
