"""Shared fixtures: small real datasets and a tiny trained teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each (and in the CLIs they start), not two threads fighting per core.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def digits():
    from rkd_edge.data import create_dataset

    return create_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def rgb_folder(tmp_path_factory) -> Path:
    """A real image folder: three classes of 16x16 RGB PNGs with class-dependent colour and texture."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir()
        for i in range(40):
            img = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)
            img[..., c] += 150
            img[:: 2 + c] //= 2
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A cnn-base teacher trained for 2 epochs on digits through the CLI (a real checkpoint)."""
    out = tmp_path_factory.mktemp("teacher")
    run_cli(
        "-q",
        "teacher",
        "train",
        "--dataset",
        "digits",
        "--arch",
        "cnn-base",
        "--epochs",
        "2",
        "--out",
        str(out),
        check=True,
    )
    return out


def write_manifest_as_rkd_edge(bundle: Path, manifest: dict) -> None:
    """Write a hand-made ``manifest.json`` and restamp the bundle's marker with its id, as rkd-edge's own
    writer does: the checks after the manifest's own (files, models, runners) then see it."""
    from rkd_edge.io import TOOL_MARKER
    from rkd_edge.runtime.bundle import bundle_id

    (bundle / "manifest.json").write_text(json.dumps(manifest))
    marker = bundle / TOOL_MARKER
    if marker.is_file():
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "bundle_id": bundle_id(manifest)}))


def restamp_checkpoint(run: Path, stage: str) -> None:
    """Record a replaced checkpoint's sha256 in its stage record, as a run that trained it would hold: the
    checks after the record's (the unpickler, the weights digest) then see it."""
    import hashlib

    record = run / "stages" / f"{stage}.json"
    sha = hashlib.sha256((run / "checkpoints" / f"{stage}.pt").read_bytes()).hexdigest()
    record.write_text(json.dumps({**json.loads(record.read_text()), "checkpoint_sha256": sha}))


def run_cli(*args: str, check: bool = False, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run the real ``rkd-edge`` entry point in a fresh process (``env``: its environment, default ours;
    stdin empty)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from rkd_edge.cli import main; main()", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"rkd-edge {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


TINY = {
    "teacher.epochs": "1",
    "teacher.arch": "cnn-base",
    "search.epochs": "1",
    "search.warmup_epochs": "0",
    "search.layers": "2",
    "search.steps": "2",
    "stage1.epochs": "1",
    "stage2.epochs": "1",
    "evaluate.trials": "1",
    "evaluate.snr_db": "0:10:10",
    "codec.dim": "16",
    "search.limit_batches": "3",
}


def tiny_overrides(*changes: str) -> list[str]:
    """Config overrides that make a whole pipeline run in seconds (for behaviour tests, not accuracy);
    ``changes`` (``key=value``) replace the tiny value of their key or add one (a key set twice is refused)."""
    pairs = {**TINY, **dict(c.split("=", 1) for c in changes)}
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_teacher_dir) -> Path:
    """A whole (tiny) pipeline run on digits through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli(
        "-q", "pipeline", "--out", str(out), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides(), check=True
    )
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "b"
    run_cli("-q", "export", str(tiny_run), "--out", str(out), "--int8", "--calib-samples", "128", check=True)
    return out


@pytest.fixture()
def small_disk(tmp_path):
    """A 64 MiB tmpfs where the test may mount one; otherwise skip (the ENOSPC wrapper test covers it)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()[:80]})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(disk: Path) -> None:
    """Take every free byte of ``disk``."""
    for name, block in (("filler", 1 << 20), ("filler2", 512), ("filler3", 1)):
        try:
            with open(disk / name, "wb", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * block)
        except OSError:
            pass
