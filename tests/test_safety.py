"""Nothing lost, nothing forged (issue 9): every case through the real CLI, with checksums of the user's
files before and after."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rkd_edge.io import COMMIT_LIST, FILE_SET_TAG, FileSet, finish_file_sets
from rkd_edge.outputs import EVALUATION_ENTRIES, foreign_entries
from rkd_edge.runtime import BundleError, Runtime
from tests.conftest import fill_disk, restamp_checkpoint, run_cli, tiny_overrides, write_manifest_as_rkd_edge


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("months of work\n")
    (path / "data").mkdir()
    (path / "data" / "measurements.csv").write_text("snr,acc\n0,0.9\n")
    return path


def one_line_exit_2(proc, needle: str = "") -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr, proc.stderr


@pytest.fixture()
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run (tests may damage it)."""
    dst = tmp_path / "work" / "run"
    shutil.copytree(tiny_run, dst)
    return dst


# --- --force replaces only what rkd-edge wrote ---------------------------------------------------------


@pytest.mark.parametrize("where", ["source", "parent", "user-folder", "file"])
def test_export_force_never_deletes_what_it_does_not_own(run_copy, where):
    parent = run_copy.parent
    (parent / "notes.txt").write_text("keep me\n")
    target = {
        "source": run_copy,
        "parent": parent,
        "user-folder": user_folder(parent.parent / "mine"),
        "file": parent / "notes.txt",
    }[where]
    before = tree_digest(parent.parent)
    proc = run_cli("-q", "export", str(run_copy), "--out", str(target), "--force")
    one_line_exit_2(proc, str(target.name))
    assert tree_digest(parent.parent) == before


def test_a_marker_or_manifest_that_json_cannot_hold_is_not_the_toolkits(tmp_path):
    from rkd_edge.outputs import kind_of

    huge = "9" * 5000  # Python refuses integers of more than 4,300 digits: ValueError, not JSONDecodeError
    for name in (".rkd-edge.json", "manifest.json"):
        folder = tmp_path / name.strip(".")
        folder.mkdir()
        (folder / name).write_text(f'{{"kind": "bundle", "format": "rkd-edge-bundle", "n": {huge}}}')
        assert kind_of(folder) is None


def test_export_force_replaces_a_bundle_but_not_a_bundle_with_user_files(tiny_run, tiny_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    run_cli("-q", "export", str(tiny_run), "--out", str(out), "--force", check=True)
    assert Runtime(str(out)).precision == "fp32"
    (out / "my-notes.md").write_text("mine\n")
    before = tree_digest(out)
    one_line_exit_2(run_cli("-q", "export", str(tiny_run), "--out", str(out), "--force"), "my-notes.md")
    assert tree_digest(out) == before
    # BUNDLE/evaluation holds what evaluate wrote there and nothing else of the toolkit's
    (out / "my-notes.md").unlink()
    run_cli("-q", "evaluate", str(out), "--snr", "0", "--trials", "1", check=True)
    (out / "evaluation" / "mine").mkdir()
    (out / "evaluation" / "mine" / "results.csv").write_text("mine\n")
    before = tree_digest(out)
    one_line_exit_2(run_cli("-q", "export", str(tiny_run), "--out", str(out), "--force"), "results.csv")
    assert tree_digest(out) == before


@pytest.mark.parametrize("case", ["handmade-manifest", "edited-config"])
def test_export_force_replaces_only_a_bundle_that_still_verifies(tiny_run, tiny_bundle, tmp_path, case):
    """A manifest proves nothing by itself: a user's folder with a hand-written one listing their thesis, or a
    bundle whose config.json someone edited since, is not the bundle rkd-edge wrote."""
    out = tmp_path / "b"
    if case == "handmade-manifest":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work\n")
        manifest = {"format": "rkd-edge/bundle@1", "files": {"thesis.tex": {}}}
        (out / "manifest.json").write_text(json.dumps(manifest))
    else:
        shutil.copytree(tiny_bundle, out)
        cfg = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**cfg, "seed": 99}))
    before = tree_digest(out)
    one_line_exit_2(run_cli("-q", "export", str(tiny_run), "--out", str(out), "--force"), "refusing to replace")
    assert tree_digest(out) == before


def test_a_fresh_bundle_is_marked_and_evaluated_in_place_but_a_users_evaluation_folder_is_kept(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b, ignore=shutil.ignore_patterns("evaluation"))
    assert json.loads((b / ".rkd-edge.json").read_text())["kind"] == "bundle"
    args = ["--snr", "0", "--trials", "1", "--channel", "awgn", "--symbols", "4"]
    run_cli("-q", "evaluate", str(b), *args, check=True)
    assert json.loads((b / "evaluation" / ".rkd-edge.json").read_text())["kind"] == "evaluation"
    run_cli("-q", "evaluate", str(b), *args, check=True)  # its own evaluation is replaced
    # a folder of the user's that happens to hold files named like an evaluation's is not one
    for where in (b / "evaluation", tmp_path / "theirs"):
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir()
        (where / "evaluation_summary.json").write_text("{}")
        (where / "accuracy_vs_symbols.png").write_text("their plot")
        before = tree_digest(where)
        out = [] if where.parent == b else ["--out", str(where)]
        one_line_exit_2(run_cli("-q", "evaluate", str(b), *args, *out))
        assert tree_digest(where) == before


def test_an_evaluation_folder_is_replaced_only_by_an_evaluation_of_the_same_thing(tiny_run, tiny_bundle, tmp_path):
    ev = tmp_path / "ev"
    args = ["--snr", "0", "--trials", "1", "--channel", "awgn", "--symbols", "4", "--out", str(ev)]
    run_cli("-q", "evaluate", str(tiny_bundle), *args, check=True)
    run_cli("-q", "evaluate", str(tiny_bundle), *args, check=True)  # the same bundle again: replaced
    before = tree_digest(ev)
    one_line_exit_2(run_cli("-q", "evaluate", str(tiny_run), *args), "evaluation of another run or bundle")
    assert tree_digest(ev) == before
    marker = ev / ".rkd-edge.json"  # a marker that no longer says whose: replaced by no one's evaluation
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "of"}))
    before = tree_digest(ev)
    one_line_exit_2(run_cli("-q", "evaluate", str(tiny_run), *args), "evaluation of another run or bundle")
    assert tree_digest(ev) == before


def test_hidden_files_of_a_user_stop_force(tiny_teacher_dir, tmp_path):
    out = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, out)
    (out / ".my_api_notes").write_text("secret\n")
    (out / ".thesis.tmp").write_text("my draft\n")  # named like what rkd-edge writes while it works
    (out / ".ideas.old").mkdir()
    (out / ".notes.lock").write_text("not a pid\n")
    (out / ".pin.lock").write_text("1234\n")  # shaped like rkd-edge's (session 20, third pass), named after no entry
    (out / ".notes.20240115.old").write_text("a backup\n")
    (out / ".thesis.draft_v2.tmp").write_text("a draft\n")
    (out / ".staging.projects").mkdir()
    (out / ".staging.projects" / "ch1.txt").write_text("chapter one\n")
    (out / ".git").mkdir()
    before = tree_digest(out)
    args = ["-q", "teacher", "train", "--dataset", "digits", "--arch", "cnn-base", "--epochs", "1", "--out", str(out)]
    one_line_exit_2(run_cli(*args, "--force"), ".git")
    assert tree_digest(out) == before and (out / ".my_api_notes").is_file()


def test_nothing_from_elsewhere_is_written_inside_a_run(run_copy, tiny_run, tiny_teacher_dir, tmp_path):
    """A run holds its own evaluations only: a run or a bundle (its own too) inside it would stop it
    resuming, be copied by prune, and go with it when it is replaced."""
    proc = run_cli("-q", "pipeline", "--out", str(run_copy / "sub"), "--teacher", f"local:{tiny_teacher_dir}")
    one_line_exit_2(proc, "lies inside the run")
    one_line_exit_2(run_cli("-q", "export", str(tiny_run), "--out", str(run_copy / "b")), "lies inside the run")
    one_line_exit_2(run_cli("-q", "export", str(run_copy), "--out", str(run_copy / "b")), "inside")
    assert not (run_copy / "sub").exists() and not (run_copy / "b").exists()
    # a path through a run that does not lead into it is not refused for lying inside it
    proc = run_cli("-q", "export", str(tiny_run), "--out", f"{run_copy}/../fresh")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_copy.parent / "fresh" / "manifest.json").is_file()


def test_a_stage_trained_again_trains_every_later_stage_again(run_copy, tiny_teacher_dir):
    """Stage 2 trained anew (its record removed) left the evaluation of the old weights as "done earlier":
    report and curves described another model. Every stage after one trained now runs again."""
    before = (run_copy / "stages" / "evaluate.json").stat().st_mtime_ns
    (run_copy / "stages" / "stage2.json").unlink()
    args = ["pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    proc = run_cli(*args, check=True)
    assert "[evaluate] done earlier, but stage2 was trained again: evaluate too" in proc.stderr
    assert (run_copy / "stages" / "evaluate.json").stat().st_mtime_ns > before  # written anew


def test_a_run_holding_an_evaluation_it_wrote_resumes_but_not_one_with_user_files(run_copy, tiny_teacher_dir):
    """``evaluate RUN --out RUN/eval`` writes a marked evaluation inside the run: the run stays the toolkit's
    and a rerun resumes it (was refused as 'files rkd-edge did not write'). A user's file in that
    evaluation makes it foreign again: one line, nothing changed."""
    eval_args = ["--snr", "0", "--channel", "awgn", "--symbols", "4"]
    run_cli("-q", "evaluate", str(run_copy), *eval_args, "--out", str(run_copy / "eval"), check=True)
    rerun = ["pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    before = tree_digest(run_copy / "checkpoints")
    assert "done earlier, skipped" in run_cli(*rerun, check=True).stderr
    assert tree_digest(run_copy / "checkpoints") == before
    (run_copy / "eval" / "notes.md").write_text("mine\n")
    before = tree_digest(run_copy)
    one_line_exit_2(run_cli("-q", *rerun), "eval")
    assert tree_digest(run_copy) == before


def test_out_under_a_file_is_one_line(tiny_run, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    one_line_exit_2(run_cli("-q", "export", str(tiny_run), "--out", str(f / "sub")), "is a file")
    one_line_exit_2(run_cli("-q", "evaluate", str(tiny_run), "--out", str(f / "sub")), "is a file")
    assert f.read_text() == "x"


def test_pipeline_refuses_a_folder_of_user_files(tmp_path, tiny_teacher_dir):
    mine = user_folder(tmp_path / "mine")
    before = tree_digest(mine)
    proc = run_cli("-q", "pipeline", "--out", str(mine), "--teacher", f"local:{tiny_teacher_dir}")
    one_line_exit_2(proc, "not an rkd-edge artefact")
    assert tree_digest(mine) == before


def test_teacher_train_never_overwrites_a_trained_teacher(tiny_teacher_dir, tmp_path):
    out = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, out)
    before = tree_digest(out)
    args = ["-q", "teacher", "train", "--dataset", "digits", "--arch", "cnn-base", "--epochs", "1", "--out", str(out)]
    one_line_exit_2(run_cli(*args), "already exists")
    assert tree_digest(out) == before
    mine = user_folder(tmp_path / "mine")
    one_line_exit_2(run_cli(*args[:-1], str(mine), "--force"), "not an rkd-edge artefact")
    # --force on a teacher replaces it, and only once the new one is complete.
    run_cli(*args, "--force", check=True)
    rec = json.loads((out / "teacher.json").read_text())
    assert rec["history"][-1]["epoch"] == 0 and ".partial" not in rec["load_spec"]


def test_unfinished_teacher_resumes_only_with_its_own_settings(tiny_teacher_dir, tmp_path):
    """An unfinished teacher is resumed only by the options that started it: other ones would load its
    checkpoint into another model or schedule (a size-mismatch traceback, or a silent mix of two configs)."""
    out = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, out)
    (out / "teacher.json").unlink()  # as if it were stopped before the end
    job = json.loads((out / "teacher-job.json").read_text())
    assert job["teacher"]["epochs"] == 2 and "device" not in job
    args = ["-q", "teacher", "train", "--dataset", "digits", "--arch", "cnn-base", "--out", str(out)]
    before = tree_digest(out)
    one_line_exit_2(run_cli(*args, "--epochs", "1"), "other settings")
    other_arch = [a if a != "cnn-base" else "cnn-large" for a in args]
    one_line_exit_2(run_cli(*other_arch, "--epochs", "2"), "other settings")
    assert tree_digest(out) == before
    run_cli(*args, "--epochs", "1", "--force", check=True)  # starts it over with the new settings
    assert json.loads((out / "teacher-job.json").read_text())["teacher"]["epochs"] == 1
    assert json.loads((out / "teacher.json").read_text())["history"][-1]["epoch"] == 0


STOP_SWALLOWED = """
import os, signal, sys, time
from rkd_edge import cli

def swallowing():  # as torch's lazy sympy import did: it caught the stop, then failed with another error
    try:
        os.kill(os.getpid(), signal.{sig})
        time.sleep(5)
    except KeyboardInterrupt:
        pass
    raise AttributeError("module 'sympy' has no attribute 'logic'")

cli.app.command("swallow")(swallowing)
cli.main(["swallow"])
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_a_library_swallowed_is_still_one_interrupted_line(sig):
    """A SIGTERM landing inside torch's lazy import was a 105-line AttributeError traceback, exit 1."""
    proc = subprocess.run(
        [sys.executable, "-c", STOP_SWALLOWED.replace("{sig}", sig)], capture_output=True, text=True, timeout=120
    )
    err = proc.stderr.strip()
    assert proc.returncode == 128 + getattr(signal, sig), (proc.returncode, err)  # as a shell says: 130, 143
    assert err.startswith("interrupted:") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_says_what_is_kept_in_one_line(tiny_run, tmp_path, sig):
    """typer turns Ctrl-C into exit 130 inside the app: the line must still reach the user. SIGTERM (a job
    scheduler, ``kill``) stops the same way, and its lock goes with it; it exits 143, as a shell reports it
    (it exited 130, which read as a Ctrl-C nobody pressed)."""
    proc = _cli_popen(
        "-q", "evaluate", str(tiny_run), "--snr", "0:20:1", "--trials", "700", "--out", str(tmp_path / "e")
    )
    time.sleep(6)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # no-op once it has exited; a child that ignored the signal must not outlive the test
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e").exists() and not (tmp_path / ".e.lock").exists()


def test_the_next_holder_of_an_output_clears_what_a_killed_command_left(tmp_path):
    """Only what the toolkit left goes: a staged folder (tagged, or empty: killed right after mkdtemp) and a
    replaced artefact (marked); folders of the same names with a user's files stay."""
    from rkd_edge.io import STAGING_TAG, TOOL_MARKER, OutputLock

    names = (".b.k1l2m3n4.partial", ".b.emptyxyz.partial", ".b.x.k1l2m3n4.partial", ".bb.k1l2m3n4.partial")
    for name in (*names, ".b.4242.old", ".b.user1234.partial", ".b.77.old"):
        (tmp_path / name).mkdir()
    for tagged in (".b.k1l2m3n4.partial", ".b.x.k1l2m3n4.partial", ".bb.k1l2m3n4.partial"):
        (tmp_path / (tagged + STAGING_TAG)).touch()
    (tmp_path / ".b.4242.old" / "manifest.json").write_text("{}")
    (tmp_path / ".b.4242.old" / TOOL_MARKER).write_text("{}")
    (tmp_path / ".b.user1234.partial" / "thesis.txt").write_text("mine")  # no tag: not ours
    (tmp_path / ".b.77.old" / "thesis.txt").write_text("mine")  # no marker: not ours
    with OutputLock(tmp_path / "b"):  # b is missing: the kill fell between commit_dir's two renames
        pass
    left = [".b.77.old", ".b.user1234.partial", ".b.x.k1l2m3n4.partial", ".b.x.k1l2m3n4.partial.tag"]
    left += [".bb.k1l2m3n4.partial", ".bb.k1l2m3n4.partial.tag", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left
    assert (tmp_path / "b" / "manifest.json").read_text() == "{}"  # the replaced artefact is back
    (tmp_path / ".b.4243.old").mkdir()
    (tmp_path / ".b.4243.old" / TOOL_MARKER).write_text("{}")
    with OutputLock(tmp_path / "b"):  # b exists: the moved-aside copy was garbage
        pass
    assert not (tmp_path / ".b.4243.old").exists() and (tmp_path / "b" / "manifest.json").is_file()


def test_a_bundle_a_killed_replace_left_moved_aside_is_back_before_the_next_export_decides(tiny_run, tmp_path):
    """Killed between commit_dir's two renames, ``export --force`` left the old bundle at ``.b.PID.old``: the
    next export put it back only after deciding that nothing was there, then refused "b appeared while this
    command ran" even with --force. Now --force replaces it, and without it the usual line is said."""
    out = tmp_path / "b"
    run_cli("-q", "export", str(tiny_run), "--out", str(out), check=True)
    before = tree_digest(out)
    out.rename(tmp_path / ".b.12345.old")
    one_line_exit_2(run_cli("export", str(tiny_run), "--out", str(out)), "already exists")
    assert tree_digest(out) == before  # put back whole
    out.rename(tmp_path / ".b.12345.old")
    run_cli("-q", "export", str(tiny_run), "--out", str(out), "--force", check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (out / "manifest.json").is_file()


# --- exclusive creation ----------------------------------------------------------------------------------


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored and Python keeps an inherited ignore: give the child
    # the Ctrl-C a user at a terminal has, whatever started pytest.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli_popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from rkd_edge.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def test_two_exports_to_one_out_cannot_both_win(tiny_run, tmp_path):
    out = tmp_path / "same"
    procs = [_cli_popen("-q", "export", str(tiny_run), "--out", str(out)) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "another rkd-edge process" in loser or "already exists" in loser or "appeared" in loser
    Runtime(str(out))  # the winner's bundle verifies
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], list(tmp_path.iterdir())


@pytest.mark.parametrize("change", ["user file added", "folder swapped", "appeared"])
def test_a_staged_folder_is_not_committed_over_what_changed_meanwhile(tmp_path, change):
    from rkd_edge.errors import UserError
    from rkd_edge.io import staged_dir

    out = tmp_path / "out"
    if change != "appeared":
        out.mkdir()
        (out / "model.onnx").write_bytes(b"old")
    replace = change != "appeared"
    with pytest.raises(UserError, match="changed while this command ran"), staged_dir(out, replace) as work:
        (work / "model.onnx").write_bytes(b"new")
        if change == "user file added":
            (out / "notes.txt").write_text("mine")
        elif change == "folder swapped":
            shutil.rmtree(out)
            out.mkdir()
            (out / "model.onnx").write_bytes(b"someone else's")
        else:
            out.mkdir()
            (out / "theirs.txt").write_text("mine")
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    assert b"new" not in kept.values() and kept, kept
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder or tag left


def test_a_run_made_at_out_while_the_pipeline_loads_its_data_is_checked_again(tmp_path, tiny_teacher_dir, monkeypatch):
    """Another process may make a run at --out between the first check and the lock: the pipeline decides
    again under the lock instead of writing its config over that run."""
    from rkd_edge import pipeline
    from rkd_edge.config import load_config
    from rkd_edge.errors import UserError
    from rkd_edge.io import write_json
    from rkd_edge.outputs import write_marker

    out = tmp_path / "run"
    other = load_config(overrides=["seed=7"])
    real_load = pipeline.load_splits

    def load_while_another_run_starts(cfg):
        out.mkdir()
        write_marker(out, "run")
        write_json(out / "config.json", other.to_dict())
        return real_load(cfg)

    monkeypatch.setattr(pipeline, "load_splits", load_while_another_run_starts)
    cfg = load_config(overrides=[f"teacher.spec=local:{tiny_teacher_dir}"])
    with pytest.raises(UserError, match="different config"):
        pipeline.Pipeline(cfg, out)
    assert json.loads((out / "config.json").read_text()) == other.to_dict()
    assert not (tmp_path / ".run.lock").exists()


def test_evaluate_run_writes_beside_the_report_not_over_its_files(run_copy):
    """evaluate RUN replaced the CSV and PNGs that report.md shows and quotes, leaving the report stale: it
    writes RUN/evaluation now, as evaluate BUNDLE writes BUNDLE/evaluation."""
    own = {n: (run_copy / n).read_bytes() for n in ("evaluation.csv", "accuracy_vs_snr.png", "report.md")}
    run_cli("-q", "evaluate", str(run_copy), "--snr", "0", "--channel", "awgn", "--trials", "1", check=True)
    assert {n: (run_copy / n).read_bytes() for n in own} == own
    assert "0.0" in (run_copy / "evaluation" / "evaluation.csv").read_text()
    assert not foreign_entries(run_copy, "run")  # the run stays the toolkit's: resumable, replaceable


def test_a_locked_run_is_not_written_by_a_second_process(run_copy):
    from rkd_edge.io import OutputLock

    with OutputLock(run_copy):  # as a running pipeline holds it
        proc = run_cli("-q", "evaluate", str(run_copy), "--out", str(run_copy))  # its own evaluation, in place
    one_line_exit_2(proc, "another rkd-edge process")


@pytest.mark.parametrize("what", ["link", "user file", "folder", "hard link"])
def test_a_lock_path_that_is_not_a_lock_is_refused_and_left_alone(tiny_run, tmp_path, what):
    """A link named like an output's lock was followed (its target truncated to a pid, then unlinked)."""
    user = tmp_path / "mine.txt"
    user.write_text("mine\n")
    lock = tmp_path / ".b.lock"
    if what == "hard link":  # a user's file of digits only reads as a pid: its link count says it is not ours
        user.write_text("42\n")
    {
        "link": lambda: lock.symlink_to(user),
        "user file": lambda: lock.write_text("notes\n"),
        "folder": lock.mkdir,
        "hard link": lambda: os.link(user, lock),
    }[what]()
    proc = run_cli("-q", "export", str(tiny_run), "--out", str(tmp_path / "b"))
    one_line_exit_2(proc, "is not an rkd-edge lock")
    assert user.read_text() == ("42\n" if what == "hard link" else "mine\n") and not (tmp_path / "b").exists()
    assert lock.is_symlink() if what == "link" else lock.exists()
    if what == "user file":
        assert lock.read_text() == "notes\n"


def test_a_lock_left_by_a_killed_process_is_taken(tmp_path):
    from rkd_edge.io import OutputLock

    for left in ("", "4242\n"):  # a pid, or nothing when the disk was full
        (tmp_path / ".b.lock").write_text(left)
        with OutputLock(tmp_path / "b"):
            assert (tmp_path / ".b.lock").read_text() == f"{os.getpid()}\n"
        assert not (tmp_path / ".b.lock").exists()


def test_a_second_latency_table_or_evaluation_of_one_output_is_refused(tiny_run, tmp_path):
    """devices lut took no lock (a second one measured and left a .partial) and evaluate locked only to commit
    (two evaluations of one folder both ran, the last silently won)."""
    from rkd_edge.io import OutputLock

    table, ev = tmp_path / "t.json", tmp_path / "ev"
    with OutputLock(table), OutputLock(ev):  # as a running lut and evaluation hold them
        lut = run_cli("-q", "devices", "lut", "--out", str(table))
        evaluate = run_cli("-q", "evaluate", str(tiny_run), "--out", str(ev), "--snr", "0", "--trials", "1")
    one_line_exit_2(lut, "another rkd-edge process")
    one_line_exit_2(evaluate, "another rkd-edge process")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_evaluation_marker_is_committed_with_its_set(tmp_path, monkeypatch):
    """Written after the set, a kill between them left evaluation files without a marker: a folder the next
    evaluation refused as the user's. The marker is part of the set, renamed first."""
    from rkd_edge.evaluate.run import commit_evaluation
    from rkd_edge.outputs import kind_of

    out = tmp_path / "ev"
    out.mkdir()
    real = os.replace

    def full_at_the_last(src, dst):
        if Path(dst).name == "evaluation.json":
            raise OSError(28, "No space left on device")
        return real(src, dst)

    def write(staging: Path) -> None:
        for name in ("evaluation.csv", "evaluation.json"):
            (staging / name).write_text("x")

    monkeypatch.setattr(os, "replace", full_at_the_last)
    with pytest.raises(OSError):
        commit_evaluation(out, True, write, of="bundle 0123456789abcdef")
    assert (out / "evaluation.csv").exists() and kind_of(out) == "evaluation"
    monkeypatch.setattr(os, "replace", real)
    finish_file_sets(out, frozenset({"evaluation.csv", "evaluation.json", ".rkd-edge.json"}))  # the next writer
    assert (out / "evaluation.json").read_text() == "x" and not list(out.glob(".staging.*"))


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from rkd_edge.io import FileSet
real, done = os.replace, []
def replace(src, dst):
    real(src, dst)
    if ".staging." in str(src) and ".staging." not in str(dst):
        done.append(dst)
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
with FileSet(sys.argv[1], {"a.png", "b.png", "c.csv", "d.json"}) as fs:
    for name in ("a.png", "b.png", "c.csv", "d.json"):
        fs.path(name).write_text("new")
"""


def test_a_file_set_killed_between_its_renames_is_finished_by_the_next_writer(tmp_path):
    """A kill between two renames (an OOM kill, a power cut) left new plots beside the old CSV and JSON, and a
    staging folder no later evaluation removed: the next writer now completes the committed set."""
    out = tmp_path / "ev"
    out.mkdir()
    for name in ("a.png", "b.png", "c.csv", "d.json"):
        (out / name).write_text("old")
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(out)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert sorted((out / n).read_text() for n in ("a.png", "b.png", "c.csv", "d.json")) == ["new", "new", "old", "old"]
    with FileSet(out, {"a.png", "b.png", "c.csv", "d.json", "e.txt"}) as fs:
        fs.path("e.txt").write_text("next")
    assert {(out / n).read_text() for n in ("a.png", "b.png", "c.csv", "d.json")} == {"new"}
    assert not list(out.glob(".staging.*"))


@pytest.mark.parametrize(
    "listing",
    ['["system.json", "config.json", ".rkd-edge.json"]', '["evil"]', "5", "null", "[" * 100_000, "link", "huge"],
)
def test_a_planted_staging_folder_never_replaces_a_runs_files(tmp_path, listing):
    """A hand-made .staging.x whose commit list named system.json, config.json or the marker replaced them
    at the next evaluation (which said exit 0); a list that was a number, null or nested 100,000 deep was a
    traceback at every later evaluation; a list linked to a 12 GB file was read whole."""
    run = tmp_path / "run"
    (run / ".staging.x").mkdir(parents=True)
    (run / ".staging.mine").mkdir()  # a user's own folder of that name: no tag, never touched
    (run / ".staging.mine" / "notes.txt").write_text("precious")
    for name in ("system.json", "config.json", ".rkd-edge.json", "evil", FILE_SET_TAG):  # the tag forged too
        (run / ".staging.x" / name).write_text("planted")
    (run / "system.json").write_text("mine")
    commit = run / ".staging.x" / ".commit.json"
    if listing == "link":
        (tmp_path / "big").write_bytes(b"[" * (1 << 17))
        commit.symlink_to(tmp_path / "big")
    elif listing == "huge":
        commit.write_text('["evaluation.csv"' + ", " * (1 << 16) + "]")
    else:
        commit.write_text(listing)
    with FileSet(run, EVALUATION_ENTRIES) as fs:
        fs.path("evaluation.csv").write_text("new")
    assert (run / "system.json").read_text() == "mine" and (run / "evaluation.csv").read_text() == "new"
    assert not any((run / n).exists() for n in ("config.json", ".rkd-edge.json", "evil"))
    assert (run / ".staging.mine" / "notes.txt").read_text() == "precious"


def _killed_file_set(folder: Path, names: list[str], committed: bool) -> Path:
    """What a FileSet killed while it wrote leaves: its tagged staging folder, files of the set, an atomic
    write's temporary, and (killed between its renames) its commit list."""
    staging = folder / ".staging.k1ll3d00"
    staging.mkdir(parents=True)
    (staging / FILE_SET_TAG).touch()
    for name in names:
        (staging / name).write_text("new")
    (staging / f".{names[0]}.abcd1234.tmp").write_text("half")
    if committed:
        (staging / COMMIT_LIST).write_text(json.dumps(names))
    return staging


def test_a_killed_file_sets_leftovers_are_the_toolkits_and_do_not_block_a_resume(run_copy, tiny_teacher_dir):
    """A kill while the report or an evaluation was committed left .staging.X, which made the run 'hold files
    rkd-edge did not write': the pipeline could not resume (nor prune, which then deleted its partial work)."""
    staging = _killed_file_set(run_copy, ["report.md", "report.json"], committed=True)
    rerun = ["-q", "pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    run_cli(*rerun, check=True)
    assert not staging.exists() and json.loads((run_copy / "report.json").read_text())["student"]
    # a user's file in such a folder makes it someone else's again
    staging = _killed_file_set(run_copy, ["evaluation.csv"], committed=False)
    (staging / "thesis.txt").write_text("mine")
    one_line_exit_2(run_cli(*rerun), ".staging.k1ll3d00")
    assert (staging / "thesis.txt").read_text() == "mine"


def test_a_killed_evaluate_run_leaves_the_run_resumable_and_evaluable(run_copy, tiny_teacher_dir):
    """Killed right after making its staging folder, evaluate RUN left RUN/.evaluation.lock and an
    RUN/evaluation holding only that folder: the pipeline refused to resume the run ('files rkd-edge did not
    write'), and evaluate RUN said its folder was not empty."""
    (run_copy / "evaluation" / ".staging.k1ll3d00").mkdir(parents=True)  # not yet tagged: empty
    (run_copy / ".evaluation.lock").write_text("4242\n")
    rerun = ["-q", "pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    run_cli(*rerun, check=True)
    run_cli("-q", "evaluate", str(run_copy), "--snr", "0", "--channel", "awgn", "--trials", "1", check=True)
    assert (run_copy / "evaluation" / "evaluation.csv").is_file()
    assert not list((run_copy / "evaluation").glob(".staging.*"))


def test_a_runs_own_evaluation_folder_is_refreshed_after_its_weights_change(run_copy):
    """RUN/evaluation recorded the weights it evaluated: once stage 2 trained further, evaluate RUN refused
    its own folder as 'the evaluation of another run or bundle'."""
    args = ["-q", "evaluate", str(run_copy), "--snr", "0", "--channel", "awgn", "--trials", "1"]
    run_cli(*args, check=True)
    marker = run_copy / "evaluation" / ".rkd-edge.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "of": "run weights 0123456789abcdef"}))
    run_cli(*args, check=True)
    assert json.loads(marker.read_text())["of"] != "run weights 0123456789abcdef"


def test_export_force_does_not_replace_a_bundle_being_evaluated(tiny_run, tiny_bundle, tmp_path):
    """export --force replaced a bundle under a running evaluate, whose results then landed in the new
    bundle as the evaluation of the old one."""
    from rkd_edge.io import OutputLock

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    before = tree_digest(bundle)
    with OutputLock(bundle / "evaluation"):  # as a running evaluate BUNDLE holds it
        one_line_exit_2(run_cli("-q", "export", str(tiny_run), "--out", str(bundle), "--force"), "another rkd-edge")
    assert tree_digest(bundle) == before


KILLED_AFTER_PRUNE_COMMIT = """
import os, signal, sys
import rkd_edge.prune as prune
real = prune.commit_dir
def commit_then_die(*a, **kw):
    real(*a, **kw)
    os.kill(os.getpid(), signal.SIGKILL)
prune.commit_dir = commit_then_die
from rkd_edge.cli import main
main(sys.argv[1:])
"""


def test_a_prune_killed_after_its_rename_is_a_whole_run(run_copy, tmp_path):
    """The job file went before the rename: killed between them, the finished partial folder was 'not made by
    rkd-edge prune' and its result lost."""
    out = tmp_path / "pruned"
    args = ["-q", "prune", str(run_copy), "--out", str(out), "--ratio", "0.5", "--epochs", "0"]
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_PRUNE_COMMIT, *args], capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (out / "prune.json").is_file() and not (tmp_path / ".pruned.prune-partial").exists()
    run_cli("-q", "export", str(out), "--out", str(tmp_path / "b"), check=True)


def test_an_evaluation_folder_left_by_a_kill_before_its_marker_is_written_again(tiny_run, tmp_path):
    out = tmp_path / "ev"
    staging = _killed_file_set(out, ["evaluation.csv", "evaluation.json"], committed=False)
    args = ["-q", "evaluate", str(tiny_run), "--snr", "0", "--channel", "awgn", "--symbols", "4", "--out", str(out)]
    run_cli(*args, check=True)
    assert not staging.exists() and (out / "evaluation.csv").read_text() != "new"


def test_a_killed_bundle_evaluations_lock_and_staging_do_not_stop_export_force(tiny_run, tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / ".evaluation.lock").write_text("4242\n")
    _killed_file_set(bundle / "evaluation", ["evaluation.csv"], committed=True)
    run_cli("-q", "export", str(tiny_run), "--out", str(bundle), "--force", check=True)
    assert not (bundle / ".evaluation.lock").exists() and not (bundle / "evaluation").exists()
    Runtime(str(bundle))  # verifies


def test_a_finished_stage_whose_checkpoint_is_gone_is_refused_not_trained_from_scratch(run_copy, tiny_teacher_dir):
    """Stage 2 started from random weights when stage 1's checkpoint was gone (its record still there): a run
    at chance, recorded with a valid digest."""
    for rel in ("checkpoints/stage1.pt", "checkpoints/stage2.pt", "stages/stage2.json", "stages/evaluate.json"):
        (run_copy / rel).unlink()
    rerun = ["-q", "pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    one_line_exit_2(run_cli(*rerun), "stage1.pt is missing although stage stage1 finished")
    assert not (run_copy / "checkpoints" / "stage2.pt").exists()


def test_prune_leaves_a_users_files_with_the_source(run_copy, tmp_path):
    """A user's notes in the run were copied into the partial folder, which then 'held files rkd-edge did not
    write' (naming the partial folder, which no --out could change)."""
    (run_copy / "notes.txt").write_text("mine")
    out = tmp_path / "pruned"
    run_cli("-q", "prune", str(run_copy), "--out", str(out), "--ratio", "0.5", "--epochs", "0", check=True)
    assert not (out / "notes.txt").exists() and (run_copy / "notes.txt").read_text() == "mine"


# a finite loss of 4.26e8 (stage1.lr=10) was accepted: stage 2 then went to NaN and was blamed
@pytest.mark.parametrize(("bad", "said"), [(float("nan"), "nan"), (4.26e8, "4.26e\\+08"), (float("inf"), "inf")])
def test_a_diverging_stage_stops_with_one_line_and_keeps_the_last_sane_epoch(tmp_path, bad, said):
    import torch

    from rkd_edge.checkpoints import load_checkpoint
    from rkd_edge.distill.loop import fit
    from rkd_edge.errors import UserError

    model = torch.nn.Linear(2, 2)
    losses = iter([1.0, bad, 1.0])
    ck = tmp_path / "ck.pt"
    with pytest.raises(UserError, match=f"stage1 diverged in epoch 2: its loss is {said};"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), 3, lambda e: {"loss": next(losses)}, ck, desc="stage1")
    assert load_checkpoint(ck)["epoch"] == 0


def test_resuming_on_another_thread_count_says_it_will_not_repeat(tmp_path):
    """A stage resumed with another torch thread count trained on silently: its epochs after the interruption
    summed in another order, and its record named only the last host."""
    import torch

    from rkd_edge import progress
    from rkd_edge.distill.loop import fit
    from rkd_edge.errors import UserError

    model, ck, threads = torch.nn.Linear(2, 2), tmp_path / "ck.pt", torch.get_num_threads()
    losses = iter([1.0, float("nan")])  # epoch 2 stops the stage: epoch 1 is checkpointed
    with pytest.raises(UserError):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), 3, lambda e: {"loss": next(losses)}, ck, desc="s1")
    torch.set_num_threads(threads + 1)
    progress.set_log_file(tmp_path / "run.log")  # as a run's log: read whether or not stderr is quiet
    try:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), 3, lambda e: {"loss": 1.0}, ck, desc="s1")
    finally:
        torch.set_num_threads(threads)
        progress.set_log_file(None)
    log = (tmp_path / "run.log").read_text()
    assert f"epochs 1..1 ran on cpu with {threads} torch thread(s), this process runs on cpu with {threads + 1}" in log


def test_a_finished_teacher_keeps_where_it_was_trained(run_copy, tiny_teacher_dir):
    """Every rerun loads the teacher: its record took this process's host (2 threads said 1 after a no-op
    rerun), and the report said only where the report was written."""
    rec = run_copy / "stages" / "teacher.json"
    elsewhere = {"device": "cpu", "torch_threads": 99, "cpu": "the machine it trained on"}
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "host": elsewhere}))
    args = ["pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    run_cli("-q", *args, check=True)
    assert json.loads(rec.read_text())["host"] == elsewhere
    hosts = json.loads((run_copy / "report.json").read_text())["stage_hosts"]
    stage2 = json.loads((run_copy / "stages" / "stage2.json").read_text())
    assert hosts["teacher"] == elsewhere and hosts["stage2"] == stage2["host"]


def test_a_loss_weight_that_overflows_stops_the_pipeline_in_one_line(tiny_run, tiny_teacher_dir, tmp_path):
    """1e308 is a float, but an infinite one in float32: stage 1 diverges at once instead of finishing a run
    of NaN weights at chance level with exit 0."""
    proc = run_cli(
        "-q", "pipeline", "--out", str(tmp_path / "r"), "--teacher", f"local:{tiny_teacher_dir}",
        *tiny_overrides(), "--set", f"search.genotype={tiny_run / 'genotype.json'}",
        "--set", "stage1.losses={ce: 1e308}",
    )  # fmt: skip
    one_line_exit_2(proc, "stage1 diverged in epoch 1")
    assert not (tmp_path / "r" / "stages" / "stage1.json").exists()


# --- untrusted checkpoints ---------------------------------------------------------------------------------


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_pickle_payload_in_a_checkpoint_does_not_run(run_copy, tmp_path, command):
    pwned = tmp_path / "PWNED"
    ck = run_copy / "checkpoints" / "stage2.pt"
    state = torch.load(ck, weights_only=True)
    state["extra"] = _Payload(str(pwned))
    torch.save(state, ck)
    restamp_checkpoint(run_copy, "stage2")  # as a sender of such a run would: the unpickler is what is tested
    args = [str(run_copy)] + (["--out", str(tmp_path / "bundle")] if command == "export" else [])
    one_line_exit_2(run_cli("-q", command, *args), "not plain weights")
    assert not pwned.exists()
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("content", [b"", b"[1, 2]", b"\x80\x04K\x01.", b"garbage"])
def test_unreadable_checkpoint_is_one_line(run_copy, content):
    (run_copy / "checkpoints" / "stage2.pt").write_bytes(content)
    one_line_exit_2(run_cli("-q", "evaluate", str(run_copy)), "checkpoint")


def test_a_checkpoint_swapped_in_after_its_stage_is_refused(run_copy, tmp_path):
    """Same architecture, other weights (stage 1's in stage 2's place): export made a bundle at chance."""
    shutil.copy(run_copy / "checkpoints" / "stage1.pt", run_copy / "checkpoints" / "stage2.pt")
    for args in (["export", str(run_copy), "--out", str(tmp_path / "b")], ["evaluate", str(run_copy)]):
        one_line_exit_2(run_cli("-q", *args), "is not the checkpoint stage stage2 wrote")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "file,key,widths",
    [("system.json", "codec", {"dim": 16384, "heads": 256, "depth": 64}),
     ("genotype.json", "skeleton", {"init_channels": 4096, "layers": 64})],
)  # fmt: skip
def test_a_run_whose_files_describe_a_huge_network_is_refused_before_it_is_built(run_copy, tmp_path, file, key, widths):
    """system.json and genotype.json carry no digest: widened by hand they described 10^11 parameters, which
    export allocated (killed by memory) before any checkpoint was compared."""
    data = json.loads((run_copy / file).read_text())
    data[key].update(widths)
    (run_copy / file).write_text(json.dumps(data))
    one_line_exit_2(run_cli("-q", "export", str(run_copy), "--out", str(tmp_path / "b")), "parameters, more than")
    assert not (tmp_path / "b").exists()


def test_a_run_whose_trained_teacher_is_gone_is_refused_not_retrained(run_copy):
    """prune (and a resumed pipeline) quietly trained another teacher, whose accuracy no record held. The
    tiny run loads its teacher by spec; a run that trained its own keeps it in teacher/."""
    from rkd_edge.errors import UserError
    from rkd_edge.rundir import RunDir

    rd = RunDir(run_copy)
    cfg = rd.load_config()
    cfg.teacher.spec = None  # as a run that trained its teacher: teacher/ holds it
    assert rd.done("teacher") is not None and not (run_copy / "teacher" / "teacher.json").exists()
    with pytest.raises(UserError, match="teacher is missing although stage teacher finished"):
        rd.require_teacher(cfg)
    (run_copy / "teacher").mkdir()
    (run_copy / "teacher" / "teacher.json").write_text("{}")
    rd.require_teacher(cfg)


def test_export_refuses_an_unfinished_run(run_copy, tmp_path):
    (run_copy / "stages" / "stage2.json").unlink()
    proc = run_cli("-q", "export", str(run_copy), "--out", str(tmp_path / "b"))
    one_line_exit_2(proc, "stage stage2")
    assert not (tmp_path / "b").exists()


# --- bundles that cannot be verified ----------------------------------------------------------------------


def _edit_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    write_manifest_as_rkd_edge(bundle, m)


def _swap_models(m):
    m["models"]["encoder"]["fp32"]["file"] = "models/encoder.int8.onnx"
    del m["files"]["models/encoder.int8.onnx"]


def _ids(m: dict, drop: int | None = None) -> dict:
    """The manifest's channel id table, without the type at position ``drop`` (leaving a gap)."""
    return {n: i for i, n in enumerate(m["channel_types"]) if i != drop}


def _undeclared_swap(m: dict) -> None:
    """The encoder's file swapped for the rx model, its declarations removed (they used to be optional)."""
    enc = m["models"]["encoder"]["fp32"]
    enc["file"] = m["models"]["rx"]["fp32"]["file"]
    enc.pop("inputs"), enc.pop("outputs")


MANIFEST_DAMAGE = {
    "files-deleted": lambda m: m.pop("files"),
    "files-empty": lambda m: m.update(files={}),
    "model-not-listed": _swap_models,
    "symbols-max-lies": lambda m: m["symbols"].update(max=64, set=[16, 32, 64]),
    "channels-reordered": lambda m: m.update(channel_types=list(reversed(m["channel_types"]))),
    "models-missing": lambda m: m.pop("models"),
    "normalisation-missing": lambda m: m.pop("normalisation"),
    "entry-without-bytes": lambda m: next(iter(m["files"].values())).pop("bytes"),
    "absolute-path": lambda m: m["files"].update({"/etc/passwd": {"sha256": "0" * 64, "bytes": 1}}),
    # A hostile pass on the manifest's fields (session 18): each of these passed the checks and then ended
    # in a traceback, a hang, NaN symbols or another channel's conditioning.
    "channel-ids-text": lambda m: m.update(channel_ids={**_ids(m), "x": "a"}),
    "channel-ids-gap": lambda m: m.update(channel_types=["identity", "awgn", "rician"], channel_ids=_ids(m, 2)),
    "channel-types-nested": lambda m: m.update(channel_types=[["identity"], "awgn"], channel_ids=None),
    "channel-a-list": lambda m: m.update(channel=[1]),
    "channel-csi-without-input": lambda m: m["channel"].update(csi="decoder"),
    "classes-one-too-many": lambda m: m.update(classes=[str(i) for i in range(len(m["classes"]) + 1)]),
    "classes-repeated": lambda m: m.update(classes=["a"] * len(m["classes"])),
    "precisions-repeated": lambda m: m.update(precisions=["fp32"] * 2000),
    "precisions-number": lambda m: m.update(precisions=["fp32", 7]),
    "symbols-set-repeated": lambda m: m["symbols"].update(set=[m["symbols"]["max"]] * 20000),
    "symbols-set-bool": lambda m: m["symbols"].update(set=[True, m["symbols"]["max"]]),
    "std-below-float32": lambda m: m["normalisation"].update(std=[1e-300] * m["normalisation"]["channels"]),
    "size-huge": lambda m: m["normalisation"].update(size=10**30),
    "io-undeclared-and-swapped": _undeclared_swap,
    "source-run-text": lambda m: m.update(source_run="run"),
    "manifest-of-6-mb": lambda m: m.update(versions=[{}] * 2_000_000),
    # A hostile pass on bundle trust (session 20): each of these ran.
    "nan-tolerance": lambda m: m.update(parity_tolerance=float("nan")),
    "infinite-snr-range": lambda m: m["snr_db"].update(trained_range=[float("-inf"), 10.0]),
    "opset-text": lambda m: m.update(opset="x"),
    "dataset-number": lambda m: m.update(dataset=5),
    "snr-db-text": lambda m: m.update(snr_db="x"),
    "source-run-path-number": lambda m: m["source_run"].update(path=5),
    "default-precision-unknown-model": lambda m: m.update(default_precision={"evil": "fp32"}),
    "precision-not-declared": lambda m: m["models"]["encoder"].update(fp64=m["models"]["encoder"]["fp32"]),
    "fp32-forms-undeclared": lambda m: m.update(precisions=["int8"], default_precision="int8"),
    "extra-model": lambda m: m["models"].update(evil={"fp32": {"file": "/etc/passwd"}}),
    "unknown-key": lambda m: m.update(run_this="rm -rf ~"),
    "selection-unknown-precision": lambda m: m.update(selection={"0123456789abcdef": {"rx": "fp64"}}),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_unverifiable_manifest_refused_by_runtime_and_evaluate(tiny_bundle, tmp_path, damage):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    _edit_manifest(b, MANIFEST_DAMAGE[damage])
    with pytest.raises(BundleError):
        Runtime(str(b))
    one_line_exit_2(run_cli("-q", "evaluate", str(b), "--snr", "0", "--trials", "1"), "manifest.json")


@pytest.mark.parametrize(
    "old,new",
    [
        ('"format": "rkd-edge/bundle@1"', '"format": "other", "format": "rkd-edge/bundle@1"'),
        ('"opset": 17', '"opset": 1e400'),
    ],
)
def test_a_manifest_json_would_read_two_ways_is_refused(tiny_bundle, tmp_path, old, new):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    text = json.dumps(json.loads((b / "manifest.json").read_text()))
    assert old in text
    (b / "manifest.json").write_text(text.replace(old, new, 1))
    with pytest.raises(BundleError, match="not valid JSON"):
        Runtime(str(b))


@pytest.mark.parametrize("entry", ["manifest-link", "notes.txt", "config-unlisted", "docs/readme.md"])
def test_a_bundle_holds_only_what_its_manifest_lists(tiny_bundle, tmp_path, entry):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    if entry == "manifest-link":
        (tmp_path / "elsewhere.json").write_bytes((b / "manifest.json").read_bytes())
        (b / "manifest.json").unlink()
        (b / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    elif entry == "config-unlisted":  # an edited config beside the models, its hash dropped from the manifest
        _edit_manifest(b, lambda m: m["files"].pop("config.json"))
        cfg = json.loads((b / "config.json").read_text())
        (b / "config.json").write_text(json.dumps({**cfg, "seed": 12345}))
    else:
        (b / entry).parent.mkdir(exist_ok=True)
        (b / entry).write_text("a user's note")
    with pytest.raises(BundleError):
        Runtime(str(b))
    one_line_exit_2(run_cli("-q", "evaluate", str(b), "--snr", "0", "--trials", "1"))


def test_manifest_as_a_list_is_refused(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "manifest.json").write_text("[]")
    with pytest.raises(BundleError, match="not a manifest"):
        Runtime(str(b))


def test_bundle_id_follows_content(tiny_bundle, tmp_path):
    from rkd_edge.runtime import Bundle

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    first = Bundle.open(b).bundle_id
    assert len(first) == 16 and first == Bundle.open(tiny_bundle).bundle_id
    m = json.loads((b / "manifest.json").read_text())
    m["classes"].reverse()
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="was changed after rkd-edge wrote it"):  # by hand: the marker says so
        Bundle.open(b)
    write_manifest_as_rkd_edge(b, m)  # as rkd-edge writes one (export trt): a new id
    assert Bundle.open(b).bundle_id != first


# --- interrupted prune ---------------------------------------------------------------------------------


def test_prune_killed_leaves_nothing_and_resumes(run_copy, tmp_path):
    out = tmp_path / "pruned"
    partial = tmp_path / ".pruned.prune-partial"
    args = ["-q", "prune", str(run_copy), "--out", str(out), "--ratio", "0.5", "--epochs", "2"]
    proc = _cli_popen(*args)
    deadline = time.time() + 300
    ck = partial / "train" / "prune-stage1.ckpt"
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"prune ended before it could be interrupted: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.is_dir()
    run_cli(*args, check=True)
    rec = json.loads((out / "prune.json").read_text())
    assert rec["after"]["encoder_params"] < rec["before"]["encoder_params"]
    assert not partial.exists() and not (out / "train").exists()
    assert not (out / "checkpoints" / "stage1.pt").exists()  # the unpruned weights stay with the source
    # Its fine-tune's seconds are the part after the kill, and its record says so (as a pipeline stage's).
    assert json.loads((out / "stages" / "stage1.json").read_text()).get("resumed") is True
    one_line_exit_2(run_cli(*args), "already exists")


def test_prune_keeps_a_user_folder_in_its_partial_place(run_copy, tmp_path):
    """A folder at ``.OUT.prune-partial`` that no prune made is refused, never removed."""
    (tmp_path / ".mine.prune-partial").mkdir()
    (tmp_path / ".mine.prune-partial" / "thesis.txt").write_text("mine")
    args = ["-q", "prune", str(run_copy), "--out", str(tmp_path / "mine"), "--ratio", "0.5", "--epochs", "0"]
    one_line_exit_2(run_cli(*args), "not made by rkd-edge prune")
    assert (tmp_path / ".mine.prune-partial" / "thesis.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["link-out", "fifo"])
def test_prune_copies_only_plain_files(run_copy, tmp_path, kind):
    """A link in the run could copy a secret or /dev/zero into the pruned run; a FIFO would block the copy."""
    odd = run_copy / "run.log"
    odd.unlink()
    if kind == "link-out":
        (tmp_path / "secret").write_text("key")
        odd.symlink_to(tmp_path / "secret")
    else:
        os.mkfifo(odd)
    out = tmp_path / "pruned"
    proc = run_cli("-q", "prune", str(run_copy), "--out", str(out), "--ratio", "0.5", "--epochs", "0")
    one_line_exit_2(proc, "run.log")
    assert not out.exists() and not (tmp_path / ".pruned.prune-partial").exists()


def test_stage_killed_after_its_last_epoch_resumes_there(tiny_teacher_dir, tmp_path):
    """Killed between a stage's last epoch and its record (while the clean accuracy is measured), a rerun
    resumes after the last epoch instead of training the stage again (the epoch checkpoint used to go
    before the record existed)."""
    out = tmp_path / "run"
    args = ["distill", "--out", str(out), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    ck = _kill_after_stage1(out, args)
    assert ck.is_file() and not (out / "stages" / "stage1.json").exists()
    last = torch.load(ck, weights_only=True)["epoch"]
    again = run_cli(*args, check=True)
    assert f"resuming after epoch {last + 1} of {last + 1}" in again.stderr, again.stderr[-2000:]
    record = json.loads((out / "stages" / "stage1.json").read_text())
    assert len(record["history"]) == last + 1 and not ck.exists()
    # its seconds are those after the interruption: the record says so (they read as the whole stage's)
    assert record["resumed"] is True and "resumed" not in json.loads((out / "stages" / "search.json").read_text())


@pytest.mark.parametrize(("flag", "value"), [("--ratio", "0.0001"), ("--ratio", "nan"), ("--epochs", "-1")])
def test_prune_refuses_nonsense(tiny_run, tmp_path, flag, value):
    args = {"--ratio": "0.5", "--epochs": "1", flag: value}
    flat = [x for kv in args.items() for x in kv]
    one_line_exit_2(run_cli("-q", "prune", str(tiny_run), "--out", str(tmp_path / "p"), *flat))
    assert not (tmp_path / "p").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- full disk ---------------------------------------------------------------------------------------------


def test_full_disk_during_evaluate_and_export_keeps_the_previous_results(tiny_run, small_disk):
    run = small_disk / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("cache"))
    before = tree_digest(run)
    fill_disk(small_disk)
    one_line_exit_2(run_cli("-q", "evaluate", str(run), "--snr", "0", "--trials", "1"), "No space left")
    assert tree_digest(run) == before
    one_line_exit_2(run_cli("-q", "evaluate", str(run), "--snr", "0", "--trials", "1", "--out", str(small_disk / "ev")))
    assert not (small_disk / "ev").exists()  # it said nothing was left: no empty folder either
    one_line_exit_2(run_cli("-q", "export", str(run), "--out", str(small_disk / "b")))
    assert not (small_disk / "b").exists()
    assert not [p.name for p in small_disk.iterdir() if p.name.startswith(".")]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".staging")]


def test_full_disk_while_training_is_one_line(tiny_teacher_dir, small_disk):
    """torch's archive writer reports a full disk as a RuntimeError; checkpoints are written so that it is the
    OSError the CLI says in one line. 400 kB free: the run's config fits, the teacher's cache does not."""
    slack = small_disk / "slack"
    slack.write_bytes(b"\0" * (400 << 10))
    fill_disk(small_disk)
    slack.unlink()
    proc = run_cli(
        "-q", "pipeline", "--out", str(small_disk / "r"), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()
    )
    one_line_exit_2(proc, "No space left")


def test_full_disk_while_copying_stages_from_another_run_leaves_no_torn_file(tiny_run, tiny_teacher_dir, small_disk):
    """``pipeline --from`` on a full disk printed shutil's list of errors and left a teacher.pt cut short; now
    one line, and every copied file is whole or absent (the rerun with room resumes)."""
    slack = small_disk / "slack"
    slack.write_bytes(b"\0" * (400 << 10))
    fill_disk(small_disk)
    slack.unlink()
    out = small_disk / "p"
    args = ["-q", "pipeline", "--out", str(out), "--from", str(tiny_run), "--teacher", f"local:{tiny_teacher_dir}"]
    proc = run_cli(*args, *tiny_overrides())
    one_line_exit_2(proc, "No space left")
    assert "cannot copy the" in proc.stderr and "[(" not in proc.stderr
    copied = [p for p in out.rglob("*") if p.is_file() and (tiny_run / p.relative_to(out)).is_file()]
    for p in copied:
        if p.relative_to(out).parts[0] in ("teacher", "cache", "checkpoints"):
            assert p.read_bytes() == (tiny_run / p.relative_to(out)).read_bytes(), p
    assert not [p for p in out.rglob(".*.tmp")]


ENOSPC_WRAPPER = """
import builtins, errno, io, os, sys
real_open = io.open
def full_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+") and ".staging." in os.fspath(file):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
    return real_open(file, mode, *a, **k)
builtins.open = io.open = full_open
from rkd_edge.cli import main
main()
"""


def test_enospc_while_writing_an_evaluation_set_keeps_the_old_set(run_copy):
    before = tree_digest(run_copy)
    proc = subprocess.run(
        [sys.executable, "-c", ENOSPC_WRAPPER, "-q", "evaluate", str(run_copy), "--snr", "0", "--trials", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    one_line_exit_2(proc, "No space left")
    assert tree_digest(run_copy) == before


# --- modes ---------------------------------------------------------------------------------------------


def test_outputs_follow_the_umask(tiny_run, tiny_bundle):
    for root in (tiny_run, tiny_bundle):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            want = 0o755 if p.is_dir() else 0o644  # pytest runs under the default umask 022
            assert mode == want, f"{p}: {oct(mode)}"


def test_an_evaluation_folder_holds_one_evaluation(tiny_run, tiny_bundle, tmp_path):
    """Re-evaluating into an evaluation folder replaces the whole set: a plot the new evaluation does not
    draw (the bundle's has no accuracy-vs-symbols plot; one left by an earlier evaluation) goes with the
    rest, rather than outliving it. A run or bundle named as ``--out`` is refused: its own evaluation would
    be overwritten."""
    out = tmp_path / "eval"
    args = ["--snr", "0", "--channel", "awgn", "--trials", "1", "--out", str(out)]
    run_cli("-q", "evaluate", str(tiny_run), "--out", str(tmp_path / "run-eval"), *args[:-2], check=True)
    run_cli("-q", "evaluate", str(tiny_bundle), *args, check=True)
    shutil.copy(tmp_path / "run-eval" / "accuracy_vs_symbols.png", out)
    run_cli("-q", "evaluate", str(tiny_bundle), *args, check=True)
    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert not (out / "accuracy_vs_symbols.png").exists()
    assert {p.name for p in out.iterdir()} == {*summary["files"], "evaluation_summary.json", ".rkd-edge.json"}
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree_digest(run)
    one_line_exit_2(run_cli("-q", "evaluate", str(tiny_bundle), *args[:-1], str(run)), "another rkd-edge run")
    assert tree_digest(run) == before


# --- nothing written through a link, nothing trusted from a damaged record (hostile pass, session 18) ----


def test_evaluate_bundle_never_writes_through_a_link_in_the_bundle(tiny_bundle, tmp_path):
    """``BUNDLE/evaluation`` is written in place; a link there led the writes (and deletes) into the folder
    it points at, a user's here."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    shutil.rmtree(bundle / "evaluation", ignore_errors=True)
    victim = user_folder(tmp_path / "victim")
    (victim / "evaluation.csv").write_text("my results\n")
    (victim / "accuracy_vs_symbols.png").write_bytes(b"my plot")
    (bundle / "evaluation").symlink_to(victim)
    before = tree_digest(victim)
    args = ["--snr", "0", "--channel", "awgn", "--symbols", "4", "--trials", "1"]
    one_line_exit_2(run_cli("-q", "evaluate", str(bundle), *args), "symbolic link")
    assert tree_digest(victim) == before


@pytest.mark.parametrize("entry", ["checkpoints", "stages", "train"])
def test_a_run_with_a_link_inside_is_not_resumed(run_copy, tiny_teacher_dir, tmp_path, entry):
    """A resumed run is written in place: a linked folder inside it would take the writes to wherever it
    points (a user's own ``stage2.pt`` was overwritten with a checkpoint)."""
    (run_copy / "stages" / "evaluate.json").unlink()  # something left to do
    victim = tmp_path / "victim"
    if (run_copy / entry).is_dir():
        shutil.move(run_copy / entry, victim)
    else:
        victim.mkdir()
    (victim / "notes.md").write_text("mine\n")
    (run_copy / entry).symlink_to(victim)
    before = tree_digest(victim)
    rerun = ["pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    one_line_exit_2(run_cli("-q", *rerun), "symbolic link")
    assert tree_digest(victim) == before


def _kill_after_stage1(out: Path, args: list[str]) -> Path:
    """Run ``args`` until stage 1's last epoch is checkpointed, and kill it there (before its record)."""
    die = "import os, rkd_edge.pipeline as p; p.clean_accuracy = lambda *a, **k: os._exit(9); "
    proc = subprocess.run(
        [sys.executable, "-c", die + "from rkd_edge.cli import main; main()", "-q", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 9, proc.stderr[-2000:]
    return out / "train" / "stage1.ckpt"


def _shapes_changed(state: dict) -> dict:
    name = next(iter(state["model"]))
    return {**state, "model": {**state["model"], name: torch.zeros(3, 1, 2)}}


CKPT_DAMAGE = {
    "no-model": lambda s: {"epoch": 0},
    "epoch-text": lambda s: {**s, "epoch": "0"},
    "epoch-beyond": lambda s: {**s, "epoch": 99},
    "history-short": lambda s: {**s, "history": []},
    "other-shapes": _shapes_changed,
    "other-keys": lambda s: {**s, "best_model": {"w": torch.zeros(1)}},
    "optimizer-garbage": lambda s: {**s, "optimizer": {"state": 5}},
    "rng-garbage": lambda s: {**s, "rng": torch.zeros(3)},
    "best-score-text": lambda s: {**s, "best_score": "high"},
}


def test_a_damaged_epoch_checkpoint_is_one_line(tiny_teacher_dir, tmp_path):
    """An epoch checkpoint is resumed from; one that is not what the loop wrote (edited, or from another
    model) used to end in a KeyError / RuntimeError traceback."""
    out = tmp_path / "run"
    args = ["distill", "--out", str(out), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    ck = _kill_after_stage1(out, args)
    good = torch.load(ck, weights_only=True)
    for name, damage in CKPT_DAMAGE.items():
        torch.save(damage(good), ck)
        proc = run_cli("-q", *args)
        assert proc.returncode == 2 and "not one this stage wrote" in proc.stderr, (name, proc.stderr[-2000:])
        one_line_exit_2(proc)
    torch.save(good, ck)
    assert "resuming after epoch" in run_cli(*args, check=True).stderr


@pytest.mark.parametrize(
    ("stage", "field", "value", "command"),
    [
        ("evaluate", "report_symbols", "16", "pipeline"),
        ("evaluate", "noiseless", [0.9], "pipeline"),
        ("teacher", "accuracy", "high", "evaluate"),
        ("teacher", "params", True, "pipeline"),
        ("search", "params", 1.5, "pipeline"),
    ],
)
def test_a_stage_record_with_other_types_is_one_line(run_copy, tiny_teacher_dir, stage, field, value, command):
    """Records are rkd-edge's own; one edited to hold another type ended in a TypeError in the report."""
    rec = run_copy / "stages" / f"{stage}.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), field: value}))
    if command == "pipeline":
        args = ["pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    else:
        args = ["evaluate", str(run_copy), "--snr", "0", "--channel", "awgn", "--trials", "1"]
    before = tree_digest(run_copy)
    one_line_exit_2(run_cli("-q", *args), f"{stage}.json has {field}")
    after = tree_digest(run_copy)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} <= {"run.log"}


def test_a_hard_linked_run_log_is_not_written_through(run_copy, tiny_teacher_dir, tmp_path):
    """A resumed run appended its status lines to whatever file its run.log was hard-linked to (a snapshot
    made with ``cp -al``, or a planted link): the log gets its own copy first."""
    victim = tmp_path / "victim.txt"
    victim.write_text("VICTIM\n")
    (run_copy / "run.log").unlink()
    os.link(victim, run_copy / "run.log")
    args = ["pipeline", "--out", str(run_copy), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    run_cli("-q", *args, check=True)  # finished: every stage is skipped, and says so in the log
    assert victim.read_text() == "VICTIM\n"
    log = (run_copy / "run.log").read_text()
    assert log.startswith("VICTIM\n") and "done earlier, skipped" in log and os.stat(run_copy / "run.log").st_nlink == 1


def test_a_huge_sparse_marker_is_not_read_into_memory(tiny_bundle, tmp_path):
    """A 2 GB sparse ``.rkd-edge.json`` took 4.7 GB of memory in every command that opened the bundle before it
    was called unreadable (a hostile pass, session 24): markers are read with a 64 KiB bound."""
    import resource

    from rkd_edge.outputs import kind_of
    from rkd_edge.runtime import Bundle

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    os.truncate(b / ".rkd-edge.json", 2 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match="unreadable"):
        Bundle.open(b)
    assert kind_of(b) is None
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_a_model_swapped_after_verification_is_not_loaded(tiny_bundle, tmp_path):
    """A runtime loads the bytes it hashed: a file replaced between :meth:`Bundle.open` and the load (by
    another process) is refused, not run unverified."""
    from rkd_edge.runtime.bundle import Bundle
    from rkd_edge.runtime.runners.ort import OnnxRuntimeRunner

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    b = Bundle.open(bundle)
    r = OnnxRuntimeRunner("encoder")
    path = r.locate(b, "encoder", "fp32")
    assert b.sha256_of(path) == b.manifest["files"][path.relative_to(bundle).as_posix()]["sha256"]
    r.load(path, "fp32", sha256=b.sha256_of(path)).close()
    other = r.locate(b, "rx", "fp32")
    os.replace(other, path)  # a valid model, not the one verified
    with pytest.raises(BundleError, match="changed after the bundle was verified"):
        OnnxRuntimeRunner("encoder").load(path, "fp32", sha256=b.sha256_of(path))
    with pytest.raises(BundleError):
        Runtime(str(bundle))


# --- models that keep data in other files -------------------------------------------------------------------


def _external(tensor, location: str = "secret.bin") -> None:
    """Mark ``tensor`` as kept in ``location`` (its bytes removed from the model)."""
    from onnx import TensorProto, external_data_helper

    external_data_helper.set_external_data(tensor, location=location, offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL


def _wire_cases() -> dict:
    """Small models with tensors in every place ONNX keeps one, and how many of them are external."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def tensor(name):
        return numpy_helper.from_array(np.arange(4, dtype=np.float32), name)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    cases = {}
    for where in ("none", "initializer", "constant", "subgraph", "sparse", "function"):
        init, const = tensor("w"), tensor("c")
        body = helper.make_graph([helper.make_node("Add", ["x", "w2"], ["y"])], "body", [], [y], [tensor("w2")])
        nodes = [
            helper.make_node("Constant", [], ["c"], value=const),
            helper.make_node("Add", ["x", "w"], ["s"]),
            helper.make_node("Add", ["s", "c"], ["t"]),
            helper.make_node("Identity", ["t"], ["y"]),
        ]
        sparse = helper.make_sparse_tensor(tensor("sv"), numpy_helper.from_array(np.array([0], np.int64), "si"), [4])
        graph = helper.make_graph(nodes, "g", [x], [y], [init], sparse_initializer=[sparse])
        fn_const = tensor("fc")
        fn = helper.make_function(
            "local", "f", ["a"], ["b"], [helper.make_node("Constant", [], ["b"], value=fn_const)], []
        )
        cond = helper.make_node("If", ["x"], ["z"], then_branch=body, else_branch=body)
        graph.node.append(cond)
        model = helper.make_model(graph, functions=[fn])
        target = {
            "initializer": model.graph.initializer[0],
            "constant": model.graph.node[0].attribute[0].t,
            "subgraph": model.graph.node[4].attribute[0].g.initializer[0],
            "sparse": model.graph.sparse_initializer[0].values,
            "function": model.functions[0].node[0].attribute[0].t,
        }.get(where)
        if target is not None:
            _external(target)
        cases[where] = (model.SerializeToString(), 0 if where == "none" else 1)
    return cases


def test_the_wire_scanner_finds_external_tensors_wherever_onnx_keeps_them(tiny_bundle):
    from rkd_edge.runtime.onnx_wire import WireError, external_tensors

    for where, (data, want) in _wire_cases().items():
        assert external_tensors(data) == want, where
    for model in (tiny_bundle / "models").glob("*.onnx"):
        assert external_tensors(model.read_bytes()) == 0, model.name
    for bad in (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x3a\x05ab", b"\x0f"):
        with pytest.raises(WireError):
            external_tensors(bad)

    # Hand-encoded tensors in a graph initializer (a hostile pass, session 20): a tag whose bits beyond 32
    # protobuf drops (so it names data_location there), and a location of 2**32 + 1 (read as 1, EXTERNAL).
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def model_with(tensor: bytes) -> bytes:
        graph = varint(5 << 3 | 2) + varint(len(tensor)) + tensor
        return varint(7 << 3 | 2) + varint(len(graph)) + graph

    with pytest.raises(WireError, match="beyond 32 bits"):
        external_tensors(model_with(varint((14 << 3) + (1 << 32)) + varint(1)))
    assert external_tensors(model_with(varint(14 << 3) + varint((1 << 32) + 1))) == 1
    # a group (wire types 3 and 4) is valid protobuf that ONNX Runtime skips: so does the scanner
    group = varint(99 << 3 | 3) + b"\x08\x05" + varint(99 << 3 | 4)
    data = (tiny_bundle / "models" / "encoder.onnx").read_bytes()
    assert external_tensors(data + group) == 0


def _replace_model(bundle: Path, rel: str, model) -> None:
    """Write ``model`` over the bundle's file ``rel`` and rehash it in the manifest, as rkd-edge's writer would."""
    data = model.SerializeToString()
    (bundle / rel).write_bytes(data)
    _edit_manifest(
        bundle, lambda m: m["files"].update({rel: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}})
    )


def test_a_model_reading_external_data_from_the_working_folder_is_refused(tiny_bundle, tmp_path):
    """ONNX Runtime resolves a model's external data against the folder a command runs in: a bundle whose
    (rehashed) encoder names ``secret.bin`` would run on whatever file of that name lies there."""
    import onnx

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    rel = "models/encoder.onnx"
    model = onnx.load(str(b / rel))
    big = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    size = len(big.raw_data)
    _external(big)
    _replace_model(b, rel, model)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(b"\x00" * size)
    proc = subprocess.run(
        [sys.executable, "-c", "from rkd_edge.cli import main; main()", "-q", "bench", str(b), "--seconds", "0.05",
         "--warmup", "0.01", "--no-memory", "--batch", "1", "--precision", "fp32"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    one_line_exit_2(proc, "external data")


def _looped_forever(model) -> None:
    """Pass ``model``'s first output through a Loop of 10**15 iterations (a hostile pass, session 24: bench
    and the Runtime ran it past Ctrl-C and SIGTERM, as a signal waits for ONNX Runtime's call to return)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    out = model.graph.output[0]
    inner = out.name + "_before_loop"
    for node in model.graph.node:
        node.output[:] = [inner if o == out.name else o for o in node.output]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model.graph.initializer.extend(
        [numpy_helper.from_array(np.array(10**15, np.int64), "trips"), numpy_helper.from_array(np.array(True), "go")]
    )
    model.graph.node.append(helper.make_node("Loop", ["trips", "go", inner], [out.name], body=body))


@pytest.mark.parametrize("how", ["loop", "custom-domain"])
def test_a_model_with_an_operator_export_never_writes_is_refused(tiny_bundle, tmp_path, how):
    """A Loop's trip count is its author's: a stranger's (rehashed) bundle held bench for as long as it liked.
    An operator of another domain has no kernel here. Both are refused before ONNX Runtime sees the model."""
    import onnx

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    for rel in ("models/encoder.onnx", "models/transmitter.onnx"):  # the fused graph starts with the encoder
        model = onnx.load(str(b / rel))
        if how == "loop":
            _looped_forever(model)
        else:
            model.graph.node[0].domain = "evil.ops"
        _replace_model(b, rel, model)
    proc = subprocess.run(
        [sys.executable, "-c", "from rkd_edge.cli import main; main()", "-q", "bench", str(b), "--seconds", "0.05",
         "--warmup", "0.01", "--no-memory", "--batch", "1", "--precision", "fp32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    one_line_exit_2(proc, "an operator export never writes")


def _asks_16_tb(model) -> None:
    """Add a 16 TB constant to ``model``'s first output, through a node that ONNX Runtime runs each call."""
    import numpy as np
    from onnx import helper, numpy_helper

    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_before" if o == out else o for o in node.output]
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([200_000, 200_000, 100], np.int64), "huge_shape"),
            numpy_helper.from_array(np.array([0, 1, 2], np.int64), "all_axes"),
        ]
    )
    model.graph.node.extend(
        [
            helper.make_node("ConstantOfShape", ["huge_shape"], ["huge"]),
            helper.make_node("ReduceSum", ["huge", "all_axes"], ["total"], keepdims=0),
            helper.make_node("Add", [f"{out}_before", "total"], [out]),
        ]
    )


def test_a_model_that_fails_inside_onnx_runtime_is_one_line(tiny_bundle, tmp_path):
    """(Rehashed) transmitter models that load and declare the right interface but ask ONNX Runtime for a 16 TB
    tensor when they run: evaluate and tx said so in a 60-line traceback, exit 1."""
    import onnx

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    for name in ("encoder", "transmitter"):  # tx runs the fused graph, evaluate the encoder
        rel = f"models/{name}.onnx"
        model = onnx.load(str(b / rel))
        _asks_16_tb(model)
        _replace_model(b, rel, model)
    proc = run_cli("-q", "evaluate", str(b), "--snr", "0", "--trials", "1", "--out", str(tmp_path / "ev"))
    one_line_exit_2(proc, "the encoder model failed in ONNX Runtime")
    assert not (tmp_path / "ev").exists()
    proc = run_cli("-q", "tx", str(b), "split:test", "--to", "127.0.0.1:9", "--snr-db", "10", "-n", "1")
    one_line_exit_2(proc, "the transmitter model failed in ONNX Runtime (ConstantOfShape: Failed to allocate memory")


def test_a_closed_pipeline_stops_logging_into_its_run(tmp_path, tiny_teacher_dir):
    """A prune renames its folder after the pipeline closes: status lines kept going to the old run.log and
    the next one in the process (an export of the pruned run) died on the missing folder."""
    from rkd_edge import pipeline, progress
    from rkd_edge.config import load_config

    cfg = load_config(overrides=[f"teacher.spec=local:{tiny_teacher_dir}"])
    pipe = pipeline.Pipeline(cfg, tmp_path / "run")
    assert progress.log_file() == pipe.rd.log
    pipe.close()
    assert progress.log_file() is None
    (tmp_path / "run").rename(tmp_path / "moved")
    progress.log("after the run folder moved")  # no error: nothing appends to the old path
    assert not (tmp_path / "run").exists()


def test_a_run_resumed_with_a_replaced_teacher_is_refused(tmp_path, tiny_teacher_dir):
    """teacher.pt replaced under the same --teacher spec: the teacher stage ran again, search and stage 1 were
    skipped as done, and the report named the new teacher beside a student distilled from the old one."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, teacher)
    args = ["-q", "search", "--out", str(tmp_path / "run"), "--teacher", f"local:{teacher}", *tiny_overrides()]
    run_cli(*args, check=True)
    state = torch.load(teacher / "teacher.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01  # other weights, same spec
    torch.save(state, teacher / "teacher.pt")
    record = (tmp_path / "run" / "stages" / "teacher.json").read_bytes()
    proc = run_cli(*args)
    one_line_exit_2(proc, "is not the one its search stage(s) learnt from")
    assert (tmp_path / "run" / "stages" / "teacher.json").read_bytes() == record  # the old record stays


def test_calibration_larger_than_the_split_is_refused_before_any_model_is_exported(tiny_run, tmp_path):
    """It was refused only after the four FP32 models were exported (their progress lines came first)."""
    proc = run_cli("export", str(tiny_run), "--out", str(tmp_path / "b"), "--int8", "--calib-samples", "100000000")
    one_line_exit_2(proc, "images of the training split; give at most")
    assert not (tmp_path / "b").exists()


def test_evaluate_of_a_bundle_without_its_manifest_says_so(tiny_bundle, tmp_path):
    """It said "is an rkd-edge bundle, not a run" (bench and devices estimate named the missing manifest)."""
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "manifest.json").unlink()
    one_line_exit_2(run_cli("evaluate", str(bundle), "--snr", "10", "--trials", "1"), "no manifest.json in")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_bundle_marker_that_is_not_a_plain_file_is_refused(tiny_bundle, tmp_path, kind):
    """A FIFO or folder in place of the marker skipped the manifest-id check: an edited manifest then ran."""
    from rkd_edge.io import TOOL_MARKER

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / TOOL_MARKER).unlink()
    os.mkfifo(bundle / TOOL_MARKER) if kind == "fifo" else (bundle / TOOL_MARKER).mkdir()
    with pytest.raises(BundleError, match="is not a plain file, so the manifest cannot be checked"):
        Runtime(str(bundle))


def test_an_int8_graph_in_an_fp32_slot_is_refused(tiny_bundle, tmp_path):
    """The INT8 encoder copied over the FP32 one (manifest rehashed) ran, and its results said fp32."""
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = manifest["models"]["encoder"]["int8"]["file"]
    shutil.copyfile(bundle / int8, bundle / "models" / "encoder.onnx")
    data = (bundle / "models" / "encoder.onnx").read_bytes()
    manifest["files"]["models/encoder.onnx"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest_as_rkd_edge(bundle, manifest)
    with pytest.raises(BundleError, match="is an INT8 graph .QuantizeLinear nodes. in a floating-point slot"):
        Runtime(str(bundle), precision="fp32")
    Runtime(str(bundle), precision="int8")  # its INT8 slot still loads
