"""Bad inputs (issue 11): every command and the ``Runtime`` API answer a wrong input with one line.

The contract for the CLI: one ``error: ...`` line on stderr, exit code 2, no traceback, no hang, and
nothing left behind (the temp folder, the working directory and the shared fixtures are unchanged). For
the ``Runtime`` API: a :class:`BundleError` with a one-line message, and nothing else raised.

The CLI runs in-process (``rkd_edge.cli.main([...])``, the real entry point; ``SystemExit`` carries the
exit code, ``capsys`` the streams) so that a few hundred cases take seconds; a handful also run as real
subprocesses to prove that the in-process harness sees what a user sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rkd_edge.cli import main
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(60, func_only=True)  # the session fixtures train first

# --- the harness --------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> ``dir`` or the sha256 of the file (symlinks by target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = f"link:{p.readlink()}"
        elif p.is_dir():
            out[rel] = "dir"
        elif not p.is_file():  # a FIFO: reading it would block
            out[rel] = "special"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_in_process(capsys, args: list[str]) -> tuple[int, str, str]:
    """``rkd-edge ARGS`` through :func:`rkd_edge.cli.main` in this process: (exit code, stdout, stderr)."""
    try:
        main(["-q", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line(code: int, err: str, needle: str | None, args) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"rkd-edge {' '.join(map(str, args))}: exit {code}, stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    if needle:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in: {lines[0]}"


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each case starts as a fresh process would: no log file or device override left by the one before."""
    from rkd_edge import env, progress

    yield
    progress.set_log_file(None)
    env.set_device_override(None)


class Env(dict):
    """Placeholders of a case's arguments, made on first use: ``{out}``, ``{file}``, ``{run}``, ..."""

    def __init__(self, tmp: Path, request) -> None:
        super().__init__()
        self.tmp, self.request = tmp, request
        self.shared: list[Path] = []

    def fixture(self, name: str) -> Path:
        path = Path(self.request.getfixturevalue(name))
        if path not in self.shared:
            self.shared.append(path)
        return path

    def copy(self, name: str, dst: str) -> Path:
        target = self.tmp / dst
        if not target.exists():
            shutil.copytree(self.fixture(name), target)
        return target

    def __missing__(self, key: str) -> str:
        t = self.tmp
        makers = {
            "tmp": lambda: t,
            "out": lambda: t / "out",  # free
            "file": lambda: _write(t / "afile.txt", "a user's file\n"),
            "dir": lambda: (t / "empty").mkdir() or t / "empty",
            "missing": lambda: t / "no-such-thing",
            "run": lambda: self.fixture("tiny_run"),
            "bundle": lambda: self.fixture("tiny_bundle"),
            "teacher": lambda: self.fixture("tiny_teacher_dir"),
            "myrun": lambda: self.copy("tiny_run", "myrun"),
            "mybundle": lambda: self.copy("tiny_bundle", "mybundle"),
            "myteacher": lambda: self.copy("tiny_teacher_dir", "myteacher"),
            "cfg": lambda: t / "config.yaml",
            "geno": lambda: t / "genotype.json",
            "lut": lambda: t / "lut.json",
        }
        value = str(makers[key]())
        self[key] = value
        return value


PLACEHOLDERS = ("tmp", "out", "file", "dir", "missing", "run", "bundle", "teacher", "myrun", "mybundle", "myteacher")
PLACEHOLDERS += ("cfg", "geno", "lut")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def case(cid: str, args: str | list[str], needle: str | None = None, setup=None):
    """One bad input: ``args`` (a string is split on spaces), the expected word of the error line and an
    optional ``setup(env)`` that writes the files it needs."""
    argv = args.split() if isinstance(args, str) else args
    return pytest.param(argv, needle, setup, id=cid)


def check_cli_case(argv, needle, setup, tmp_path, request, capsys, monkeypatch) -> None:
    work = tmp_path / "case"
    work.mkdir()
    env = Env(work, request)
    monkeypatch.chdir(work)
    if setup is not None:
        setup(env)
    args = [PLACEHOLDER.sub(lambda m: env[m[1]] if m[1] in PLACEHOLDERS else m[0], a) for a in argv]
    shared = {p: snapshot(p) for p in env.shared}
    before = snapshot(work)
    code, _out, err = run_in_process(capsys, args)
    assert_one_line(code, err, needle, args)
    assert snapshot(work) == before, "files were created, changed or removed"
    for p, snap in shared.items():
        assert snapshot(p) == snap, f"the shared fixture {p} changed"


# --- config files, presets and --set -----------------------------------------------------------------------


def cfg_file(content: str | bytes):
    return lambda env: _write(Path(env["cfg"]), content)


# 30 lines whose merge keys (<<) double the mapping each line: 2^29 values once constructed
MERGE_BOMB = "l0: &l0 {x: 1}\n" + "".join(f"l{n}: &l{n} {{<<: [*l{n - 1}, *l{n - 1}]}}\n" for n in range(1, 30))


CONFIG_COMMANDS = ["pipeline --out {out}", "distill --out {out}", "robust --out {out}", "search --out {out}"]
SET_CASES = [
    ("seed.x=1", "seed"),
    ("seed=-1", "seed"),
    ("seed=abc", "seed"),
    ("seed=1.5", "seed"),
    ("seed=true", "seed"),
    ("seed=4294967296", "seed"),
    ("evaluate.snr_db=-1000:0:1", "finite SNR from -100 to 100 dB"),
    ("evaluate.trials=99999999999999999999", "outside the allowed range [1, 10,000]"),
    ("data.channels=2", "choose one of 1, 3"),
    ("stage1.epochs=0x10", "write it in decimal"),  # YAML 1.1: 16
    ("stage1.epochs=010", "write it in decimal"),  # YAML 1.1: 8
    ("stage1.epochs=1_0", "write it in decimal"),
    ("codec.symbols=abc", "codec.symbols"),
    ("codec.symbols=[0]", "codec.symbols"),
    ("codec.symbols=[32]", "codec.symbols"),
    ("codec.symbols=[]", "codec.symbols"),
    ("codec.symbols=[4.5]", "codec.symbols"),
    ("search.lambdas=-1", "search.lambdas"),
    ("search.lambdas=[]", "search.lambdas"),
    ("search.lambdas=abc", "search.lambdas"),
    ("search.lambdas=.nan", "search.lambdas"),
    ("evaluate.snr_db=abc", "range"),
    ("evaluate.snr_db=20:-10:5", "range"),
    ("evaluate.snr_db=0:10:0", "range"),
    ("evaluate.snr_db=nan:1:1", "range"),
    ("evaluate.snr_db=", "evaluate.snr_db"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.batch_size=-5", "data.batch_size"),
    ("data.batch_size=1.5", "data.batch_size"),
    ("teacher.lr=.nan", "teacher.lr"),
    ("teacher.lr=.inf", "teacher.lr"),
    ("teacher.lr=0", "teacher.lr"),
    ("teacher.lr=-1", "teacher.lr"),
    ("teacher.lr=abc", "teacher.lr"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("data.test_fraction=0", "data.test_fraction"),
    ("data.val_fraction=0.9", "training data"),  # with the default test_fraction 0.2
    ("teacher.epochs=0", "teacher.epochs"),
    ("teacher.epochs=2.5", "teacher.epochs"),
    ("stage1.epochs=-1", "stage1.epochs"),
    ("stage2.lr=0", "stage2.lr"),
    ("codec.dim=0", "codec.dim"),
    ("codec.dim=66", "codec.heads"),
    ("codec.heads=0", "codec.heads"),
    ("codec.depth=-1", "codec.depth"),
    ("codec.max_symbols=0", "codec.max_symbols"),
    ("codec.csi=nope", "codec.csi"),
    ("codec.rayleigh_mode=slow", "codec.rayleigh_mode"),
    ("codec.name=nope", "codec.name"),
    ("codec.rician_k=-1", "codec.rician_k"),
    ("codec.gains=maybe", "codec.gains"),
    ("codec.posterior=maybe", "codec.posterior"),
    ("codec.rx_per_length=maybe", "codec.rx_per_length"),
    ("stage1.augment=maybe", "stage1.augment"),
    ("stage2.lengths=some", "stage2.lengths"),
    ("method=nope", "method"),
    ("device=tpu", "device"),
    ("search.cost=watts", "search.cost"),
    ("stage2.channels=[wifi]", "stage2.channels"),
    ("stage1.channels=[bogus]", "stage1.channels"),
    ("evaluate.channels=[wifi]", "evaluate.channels"),
    ("teacher.amp=fp8", "teacher.amp"),
    ("stage1.cuda_graph=maybe", "stage1.cuda_graph"),
    ("teacher.cuda_graph=1", "teacher.cuda_graph"),
    ("stage1.losses={xx: 1}", "stage1.losses"),
    ("stage1.losses={ce: -1}", "stage1.losses"),
    ("stage1.train=[brain]", "stage1.train"),
    ("stage2.snr_db=[20,-10]", "stage2.snr_db"),
    ("stage2.snr_db=[1,2,3]", "stage2.snr_db"),
    ("stage2.snr_db=[-1000,0]", "stage2.snr_db"),
    ("evaluate.trials=0", "evaluate.trials"),
    ("evaluate.symbols=[64]", "evaluate.symbols"),
    ("evaluate.symbols=[]", "evaluate.symbols"),
    ("evaluate.symbols=[4,4]", "more than once"),
    ("codec.symbols=[4,8,4]", "more than once"),
    ("search.warmup_epochs=8", "search.warmup_epochs"),
    ("stage1.losses={ce: 1, ce: 2}", "given twice"),
    ("stage1.losses={<<: {ce: 1}, <<: {ce: 0}, kd: 1}", "'<<' given twice"),
    ("seed=2001-13-45", "cannot build"),
    ("seed=!!int x", "cannot build"),
    ("seed=1:0", "base-60"),
    ("stage1.epochs=1:30", "base-60"),
    ("stage1.lr=" + "9" * 400, "outside the allowed range (0, 10]"),  # its range, where the key has one
    ("stage1.losses={ce: " + "9" * 400 + "}", "too large"),
    ("evaluate.symbols=", "gives no value"),
    ("evaluate.snr_db=-1e300,1e300", "evaluate.snr_db is a finite SNR from -100 to 100 dB"),
    ("evaluate.report_symbols=5", "not an evaluated length"),
    ("stage1.train=encoder,encoder", "more than once"),
    ("stage2.channels=awgn,awgn", "more than once"),
    ("evaluate.channels=awgn,awgn", "more than once"),
    ("search.lambdas=0.5,0.5", "more than once"),
    ("stage2.snr_schedule=[]", "empty list"),
    ("teacher.arch=nope", "unknown teacher arch"),
    ("teacher.spec=timm:@random", "unknown teacher spec"),
    ("teacher.spec=timm:resnet18@", "unknown teacher spec"),
    ("evaluate.report_symbols=64", "evaluate.report_symbols"),
    ("data.image_size=2", "data.image_size"),
    ("data.channels=5", "data.channels"),
    ("search.stem_stride=3", "search.stem_stride"),
    ("search.layers=0", "search.layers"),
    ("search.steps=0", "search.steps"),
    ("search.feature_dim=0", "search.feature_dim"),
    ("search.init_channels=0", "search.init_channels"),
    ("search.derive_channels=0", "search.derive_channels"),
    ("search.derive_channels=wide", "search.derive_channels"),
    ("search.derive_max_params=0", "search.derive_max_params"),
    ("search.derive_max_params=1.5", "search.derive_max_params"),
    ("search.partial_channels=0", "search.partial_channels"),
    ("search.train_fraction=1", "search.train_fraction"),
    ("search.temperature=0", "search.temperature"),
    ("search.limit_batches=0", "search.limit_batches"),
    ("nosuch=1", "unknown config key"),
    ("data.nosuch=1", "unknown config key"),
    ("data.name.x=1", "unknown config key"),
    ("stage1=3", "stage1"),
    ("=1", "section.key=value"),
    ("data.batch_size", "section.key=value"),
    ("data.batch_size=[1", "not a valid value"),
    ("data.name=nope", "unknown dataset"),
    ("data.name=imagefolder:/nonexistent", "not a directory"),
    ("teacher.arch=nope", "teacher"),
    ("search.genotype=/nonexistent/genotype.json", "genotype"),
    ("search.partial_channels=3", "must divide search.init_channels 8"),  # a reshape error in the first step
    ("search.train_fraction=0.00001", "leaves none of the 1,259 training images for the weights half"),
]
SET_PARAMS = [case(f"set-{s}", ["pipeline", "--out", "{out}", "--set", s], n) for s, n in SET_CASES]
# The same checks behind the other config commands (a sample: they share one code path).
for cmd in CONFIG_COMMANDS[1:] + ["teacher train --out {out}"]:
    name = cmd.split(" --")[0].replace(" ", "-")
    for s, n in [("seed.x=1", "seed"), ("teacher.lr=.nan", "teacher.lr"), ("data.batch_size=0", "batch_size")]:
        SET_PARAMS.append(case(f"{name}-set-{s}", [*cmd.split(), "--set", s], n))
SET_PARAMS.append(case("lut-set-seed.x", "devices lut --out {out} --set seed.x=1", "seed"))
# The fashion-mnist preset turns codec.posterior on: a codec without a linear path to feed is refused.
SET_PARAMS.append(
    case(
        "posterior-needs-cat",
        "pipeline --out {out} --preset fashion-mnist --set codec.name=plain",
        "needs the cat codec",
    )
)
SET_PARAMS.append(
    case(
        "rx-per-length-needs-cat",
        "pipeline --out {out} --set codec.name=plain --set codec.rx_per_length=true",
        "codec.rx_per_length",
    )
)
# Two ways to choose the built width at once; and a budget the network without searched cells exceeds,
# refused before the search trains.
SET_PARAMS.append(
    case("derive-width-and-budget", "pipeline --out {out} --preset fashion-mnist --set search.derive_channels=9", "one")
)
SET_PARAMS.append(
    case(
        "derive-budget-below-skeleton",
        "search --out {out} --teacher local:{teacher} --set search.derive_max_params=100",
        "search.derive_max_params",
    )
)
SET_PARAMS.append(
    case("val+test-fraction", "pipeline --out {out} --set data.val_fraction=0.5 --set data.test_fraction=0.5", "data")
)

CONFIG_FILE_PARAMS = [
    case(f"{c.split()[0]}-config-yaml-list", f"{c} --config {{cfg}}", "mapping", cfg_file("- a\n- b\n"))
    for c in CONFIG_COMMANDS + ["teacher train --out {out}", "devices lut --out {out}"]
] + [
    case("config-binary", "pipeline --out {out} --config {cfg}", "config", cfg_file(bytes(range(256)) * 4)),
    case("config-scalar", "pipeline --out {out} --config {cfg}", "mapping", cfg_file("42\n")),
    case("config-invalid-yaml", "pipeline --out {out} --config {cfg}", "yaml", cfg_file("data: [1, 2\n")),
    case("config-bad-date", "pipeline --out {out} --config {cfg}", "cannot build", cfg_file("seed: 2001-13-45\n")),
    case("config-bool-tag", "pipeline --out {out} --config {cfg}", "cannot build", cfg_file("seed: !!bool maybe\n")),
    case("config-timestamp-tag", "pipeline --out {out} --config {cfg}", "yaml", cfg_file("seed: !!timestamp x\n")),
    case("config-5000-digits", "pipeline --out {out} --config {cfg}", "yaml", cfg_file("seed: " + "9" * 5000 + "\n")),
    case("config-self-alias", "pipeline --out {out} --config {cfg}", "contains itself", cfg_file("seed: &x [*x]\n")),
    case("config-merge-bomb", "pipeline --out {out} --config {cfg}", "expands to more than", cfg_file(MERGE_BOMB)),
    case("config-base-60", "pipeline --out {out} --config {cfg}", "quote", cfg_file("evaluate: {snr_db: -10:24:2}\n")),
    case(
        "config-key-newline",
        "pipeline --out {out} --config {cfg}",
        "'losses\\nX'",
        cfg_file('stage1: {"losses\\nX": {ce: 1}}\n'),
    ),  # fmt: skip
    case("config-fifo", "pipeline --out {out} --config {cfg}", "not a regular file", lambda env: os.mkfifo(env["cfg"])),
    case("config-key-twice", "pipeline --out {out} --config {cfg}", "line 3", cfg_file("a: 1\nb: {}\nb: {}\n")),
    case(
        "config-key-twice-nested",
        "pipeline --out {out} --config {cfg}",
        "'lr' given twice",
        cfg_file("stage1:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n"),
    ),  # fmt: skip
    case("config-section-scalar", "pipeline --out {out} --config {cfg}", "data", cfg_file("data: 3\n")),
    case("config-section-list", "pipeline --out {out} --config {cfg}", "data", cfg_file("data: [1, 2]\n")),
    case("config-bad-value", "pipeline --out {out} --config {cfg}", "batch_size", cfg_file("data: {batch_size: 0}\n")),
    case("config-unknown-key", "pipeline --out {out} --config {cfg}", "unknown", cfg_file("nosuch: {a: 1}\n")),
    case("config-missing", "pipeline --out {out} --config {missing}", "not found"),
    case("config-is-a-dir", "pipeline --out {out} --config {dir}", "is a folder"),
    case("config-nan-lr", "pipeline --out {out} --config {cfg}", "teacher.lr", cfg_file("teacher: {lr: .nan}\n")),
    case("config-genotype-int", "pipeline --out {out} --config {cfg}", "genotype", cfg_file("search: {genotype: 3}\n")),
    case("preset-unknown", "pipeline --out {out} --preset nope", "unknown preset"),
]

FLAG_PARAMS = [
    case("seed-huge", "pipeline --out {out} --seed 99999999999999999999", "seed"),
    case("seed-negative", "pipeline --out {out} --seed -1", "seed"),
    case("seed-not-int", "pipeline --out {out} --seed abc", "--seed"),
    case("distill-seed-huge", "distill --out {out} --seed 99999999999999999999", "seed"),
    case("search-seed-huge", "search --out {out} --seed 99999999999999999999", "seed"),
    case("teacher-train-seed-huge", "teacher train --out {out} --seed 99999999999999999999", "seed"),
    case("device-tpu", "pipeline --out {out} --device tpu", "device"),
    case("dataset-unknown", "pipeline --out {out} --dataset nope", "unknown dataset"),
    case("dataset-folder-missing", "distill --out {out} --dataset imagefolder:/nonexistent", "not a directory"),
    case("method-unknown", "pipeline --out {out} --method nope", "method"),
    case("teacher-spec-unknown", "pipeline --out {out} --teacher nope:x", "teacher"),
    case("teacher-local-missing", "robust --out {out} --teacher local:/nonexistent", "not found"),
    case("teacher-local-empty", "pipeline --out {out} --teacher local:", "teacher"),
    case("search-lambda-negative", ["search", "--out", "{out}", "--lambda=-1"], "lambdas"),
    case("search-lambda-nan", "search --out {out} --lambda nan", "range"),
    # the --set value was dropped without a word (a key --set twice is refused)
    case(
        "search-lambda-and-set-disagree",
        ["search", "--out", "{out}", "--lambda", "0.5", "--set", "search.lambdas=[0.1]"],
        "--set search.lambdas=[0.1] and the option for search.lambdas ([0.5]) disagree",
    ),
    case("seed-and-set-disagree", "search --out {out} --seed 3 --set seed=4", "--set seed=4 and the option"),
    case("search-lambda-text", "search --out {out} --lambda abc", "range"),
    case("search-lambda-empty-item", "search --out {out} --lambda 1,,2", "range"),
    case("search-lambda-empty", ["search", "--out", "{out}", "--lambda", ""], "empty"),
    case("search-cost-unknown", "search --out {out} --cost watts", "watts"),
    case("search-latency-table-unused", "search --out {out} --latency-table {file}", "read only with --cost latency"),
    case("search-latency-missing", "search --out {out} --cost latency --latency-table {missing}", "latency table"),
    case("search-latency-no-table", "search --out {out} --cost latency", "latency"),
    case(
        "pipeline-latency-missing",
        "pipeline --out {out} --set search.cost=latency --set search.latency_table={missing}",
        "latency table",
    ),
    case("pipeline-latency-no-table", "pipeline --out {out} --set search.cost=latency", "latency"),
    case("teacher-train-arch-unknown", "teacher train --out {out} --arch nope", "nope"),
    case("teacher-train-epochs-0", "teacher train --out {out} --epochs 0", "epochs"),
    case("teacher-train-epochs-text", "teacher train --out {out} --epochs many", "--epochs"),
    case("teacher-train-dataset", "teacher train --out {out} --dataset nope", "unknown dataset"),
    # click keeps the last of two values silently: two different ones are a mistake, named in full
    case("option-twice", "pipeline --out {out} --seed 1 --seed 2", "--seed is given twice (--seed 1 and --seed 2)"),
    case("option-twice-equals", "evaluate {bundle} --snr 0 --snr=5", "--snr is given twice"),
    case("set-key-twice", "pipeline --out {out} --set seed=1 --set seed=2", "--set seed is given twice (seed=1 and"),
    # a newline or escape in a path stays escaped inside the one line
    case("path-with-newline", ["bench", "{tmp}/new\nline\x1b[31m", "--no-memory"], "new\\nline\\x1b[31m"),
    case("config-unreadable", "pipeline --out {out} --config /proc/self/mem", "cannot be read (input/output error)"),
    case("lut-out-in-proc", "devices lut --out /proc/self/mem", "not even its lock file"),
    case("export-a-device", "export /dev/null --out {out}", "/dev/null is not a folder"),
    case("lut-fifo-force", "devices lut --out {cfg} --force", "not a regular file", lambda env: os.mkfifo(env["cfg"])),
]


def lut_table(content):
    text = content if isinstance(content, str | bytes) else json.dumps(content)
    return lambda env: _write(Path(env["lut"]), text)


LATENCY_PARAMS = [
    case("lut-list", "search --out {out} --cost latency --latency-table {lut}", "latency table", lut_table("[]")),
    case("lut-not-json", "search --out {out} --cost latency --latency-table {lut}", "not JSON", lut_table("{")),
    case(
        "lut-empty-entries",
        "search --out {out} --cost latency --latency-table {lut}",
        "latency table",
        lut_table({"format": "rkd-edge/latency-table@1", "device": "host", "unit": "ms", "entries": {}}),
    ),
    case(
        "lut-negative-entry",
        "search --out {out} --cost latency --latency-table {lut}",
        "latency table",
        lut_table({"device": "host", "entries": {"a": -1}}),
    ),
    case("lut-is-dir", "search --out {out} --cost latency --latency-table {dir}", "latency table"),
    # /dev/zero filled the memory (9 GB, then killed) and a FIFO blocked forever (a hostile pass, session 24)
    case("lut-dev-zero", "search --out {out} --cost latency --latency-table /dev/zero", "not a regular file"),
    case(
        "lut-fifo",
        "search --out {out} --cost latency --latency-table {lut}",
        "not a regular file",
        lambda env: os.mkfifo(env["lut"]),
    ),
    case(
        "lut-not-utf8", "search --out {out} --cost latency --latency-table {lut}", "not text", lut_table(b"\xff\xfe{")
    ),
    case(
        "lut-other-precision",
        "search --out {out} --cost latency --latency-table {lut} --precision int8",
        "measured in fp32",
        lut_table({"device": "host", "precision": "fp32", "entries": {}}),
    ),
    case("search-precision-unknown", "search --out {out} --cost latency --precision int4", "latency_precision"),
]

# --- genotypes (--set search.genotype=FILE) ------------------------------------------------------------------


def genotype(**changes) -> dict:
    """A valid 1-channel 8x8 digits genotype with ``changes`` (``skeleton.X`` keys change the skeleton)."""
    g = {
        "format": "rkd-edge/genotype@1",
        "normal": [["skip_connect", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_3x3", 2]],
        "reduce": [["max_pool_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1]],
        "skeleton": {
            "in_channels": 1,
            "image_size": 8,
            "num_classes": 10,
            "layers": 2,
            "steps": 2,
            "init_channels": 4,
            "stem_multiplier": 2,
            "feature_dim": 16,
            "stem_stride": 1,
        },
        "normal_concat": [2, 3],
        "reduce_concat": [2, 3],
    }
    for k, v in changes.items():
        if k.startswith("skeleton_"):
            g["skeleton"][k.removeprefix("skeleton_")] = v
        else:
            g[k] = v
    return g


def geno_file(content):
    return lambda env: _write(Path(env["geno"]), content if isinstance(content, str) else json.dumps(content))


GENOTYPE_DAMAGE = {
    "negative-channels": genotype(skeleton_init_channels=-4),
    "zero-channels": genotype(skeleton_init_channels=0),
    "zero-feature-dim": genotype(skeleton_feature_dim=0),
    "negative-feature-dim": genotype(skeleton_feature_dim=-16),
    "wrong-input-channels": genotype(skeleton_in_channels=3),
    "other-class-count": genotype(skeleton_num_classes=3),
    "other-image-size": genotype(skeleton_image_size=1024),
    "huge-student": genotype(skeleton_init_channels=4096, skeleton_layers=64),
    "dangling-concat": genotype(normal_concat=[2, 9]),
    "negative-concat": genotype(reduce_concat=[-1, 3]),
    "empty-concat": genotype(normal_concat=[]),
    "concat-text": genotype(normal_concat=["a"]),
    "zero-layers": genotype(skeleton_layers=0),
    "zero-steps": genotype(skeleton_steps=0, normal=[], reduce=[], normal_concat=[], reduce_concat=[]),
    "stem-stride-5": genotype(skeleton_stem_stride=5),
    "channels-text": genotype(skeleton_init_channels="8"),
    "channels-float": genotype(skeleton_init_channels=8.5),
    "channels-bool": genotype(skeleton_init_channels=True),
    "huge-channels": genotype(skeleton_init_channels=10**9),
    "future-node": genotype(
        normal=[["skip_connect", 0], ["sep_conv_3x3", 3], ["skip_connect", 0], ["skip_connect", 1]]
    ),
    "negative-node": genotype(normal=[["skip_connect", -1], ["sep_conv_3x3", 1], ["skip_connect", 0], ["none", 1]]),
    "unknown-op": genotype(normal=[["conv_99", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 1]]),
    "node-fraction": genotype(normal=[["skip_connect", 0], ["sep_conv_3x3", 1.5], ["skip_connect", 0], ["none", 1]]),
    "node-bool": genotype(normal=[["skip_connect", 0], ["sep_conv_3x3", True], ["skip_connect", 0], ["none", 1]]),
    "op-number": genotype(normal=[["skip_connect", 0], [7, 1], ["skip_connect", 0], ["none", 1]]),
    "edge-not-pair": genotype(normal=[["skip_connect"], ["sep_conv_3x3", 1], ["skip_connect", 0], ["none", 1]]),
    "skeleton-unknown-key": genotype(skeleton_colour=1),
    "skeleton-missing": {k: v for k, v in genotype().items() if k != "skeleton"},
    "wrong-format": genotype(format="something-else"),
    "a-list": [1, 2, 3],
    "not-json": "{not json",
}
GENOTYPE_PARAMS = [
    case(
        f"genotype-{name}",
        "distill --out {out} --teacher local:{teacher} --set search.genotype={geno}",
        "genotype",
        geno_file(content),
    )
    for name, content in GENOTYPE_DAMAGE.items()
] + [
    case(
        f"pipeline-genotype-{name}",
        "pipeline --out {out} --set search.genotype={geno}",
        "genotype",
        geno_file(GENOTYPE_DAMAGE[name]),
    )
    for name in ("negative-channels", "dangling-concat", "wrong-input-channels", "zero-feature-dim")
]

# --- --out in the way ---------------------------------------------------------------------------------------

OUT_COMMANDS = {
    "pipeline": "pipeline --out {o}",
    "distill": "distill --out {o}",
    "robust": "robust --out {o}",
    "search": "search --out {o}",
    "teacher-train": "teacher train --out {o}",
    "evaluate-run": "evaluate {run} --snr 0 --trials 1 --out {o}",
    "evaluate-bundle": "evaluate {bundle} --snr 0 --trials 1 --out {o}",
    "export": "export {run} --out {o}",
    "prune": "prune {run} --out {o} --epochs 1",
    "devices-estimate": "devices estimate {bundle} --device orin-nano-8gb --out {o}",
    "devices-lut": "devices lut --out {o}",
    "rx": "rx {bundle} --listen 127.0.0.1:0 --count 1 --idle-timeout 1 --out {o}",
    "rx-summary": "rx {bundle} --listen 127.0.0.1:0 --count 1 --idle-timeout 1 --summary {o}",
    "tx-summary": "tx {bundle} split:test --to 127.0.0.1:9 --snr-db 10 --count 1 --summary {o}",
    "bench-json": "bench {bundle} --seconds 0.05 --warmup 0 --batch 1 --no-memory --trials 1 --json {o}",
}
OUT_PARAMS = [
    case(f"{name}-out-{kind}", cmd.replace("{o}", where), None)
    for name, cmd in OUT_COMMANDS.items()
    for kind, where in (("file", "{file}"), ("under-file", "{file}/sub"))
] + [
    case("export-out-is-source", "export {myrun} --out {myrun} --force", "source"),
    case("export-out-is-parent-of-source", "export {myrun} --out {tmp} --force", None),
    case("export-out-existing", "export {run} --out {mybundle}", "already exists"),
    case("prune-out-is-source", "prune {myrun} --out {myrun} --epochs 1", None),
    case("teacher-train-out-user-folder", "teacher train --out {tmp}", None, cfg_file("x: 1\n")),
    case("pipeline-out-user-folder", "pipeline --out {tmp}", None, cfg_file("x: 1\n")),
    case("pipeline-out-is-bundle", "pipeline --out {mybundle}", None),
    case("evaluate-out-user-folder", "evaluate {bundle} --snr 0 --trials 1 --out {tmp}", None, cfg_file("x: 1\n")),
]

# --- data, teacher eval / list ----------------------------------------------------------------------------


def teacher_damage(edit):
    def setup(env):
        edit(Path(env["myteacher"]))

    return setup


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))


class _Payload:
    """Unpickled, it would create ``path``: a weights file that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _torch_save(obj, path: Path) -> None:
    """``torch.save(obj)``, the string ``"zeros"`` in a dict's values standing for a tensor of three zeros."""
    import torch

    if isinstance(obj, dict):
        obj = {k: torch.zeros(3) if isinstance(v, str) and v == "zeros" else v for k, v in obj.items()}
    torch.save(obj, path)


TEACHER_DAMAGE = {
    "json-list": lambda d: (d / "teacher.json").write_text("[1, 2]"),
    "json-no-arch": lambda d: _edit_json(d / "teacher.json", lambda m: {k: v for k, v in m.items() if k != "arch"}),
    "json-arch-unknown": lambda d: _edit_json(d / "teacher.json", lambda m: {**m, "arch": "nope"}),
    "json-arch-int": lambda d: _edit_json(d / "teacher.json", lambda m: {**m, "arch": 3}),
    "json-classes-text": lambda d: _edit_json(d / "teacher.json", lambda m: {**m, "num_classes": "ten"}),
    "json-shape-wrong": lambda d: _edit_json(d / "teacher.json", lambda m: {**m, "input_shape": [3, 32, 32]}),
    "json-not-json": lambda d: (d / "teacher.json").write_text("{"),
    "json-missing": lambda d: (d / "teacher.json").unlink(),
    "pt-empty": lambda d: (d / "teacher.pt").write_bytes(b""),
    "pt-list": lambda d: _torch_save([1, 2, 3], d / "teacher.pt"),
    "pt-garbage": lambda d: (d / "teacher.pt").write_bytes(b"\x00garbage" * 100),
    "pt-missing": lambda d: (d / "teacher.pt").unlink(),
    "pt-passwd-like": lambda d: (d / "teacher.pt").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n" * 3),
    "pt-other-arch": lambda d: _edit_json(d / "teacher.json", lambda m: {**m, "arch": "cnn-large"}),
    "pt-tensor": lambda d: _torch_save(__import__("torch").zeros(3), d / "teacher.pt"),
    "pt-fifo": lambda d: ((d / "teacher.pt").unlink(), os.mkfifo(d / "teacher.pt")),  # "not a regular file"
}
TEACHER_PARAMS = (
    [
        case(f"teacher-eval-{n}", "teacher eval local:{myteacher} --dataset digits", "teacher", teacher_damage(e))
        for n, e in TEACHER_DAMAGE.items()
    ]
    + [
        case(f"pipeline-teacher-{n}", "pipeline --out {out} --teacher local:{myteacher}", "teacher", teacher_damage(e))
        for n, e in TEACHER_DAMAGE.items()
        if n in ("json-list", "json-no-arch", "pt-empty", "pt-list", "pt-other-arch")
    ]
    + [
        case("teacher-eval-spec-unknown", "teacher eval nope:x --dataset digits", "unknown teacher spec"),
        case("teacher-eval-name-unknown", "teacher eval nosuch --dataset digits", "unknown teacher spec"),
        case("teacher-eval-spec-empty", ["teacher", "eval", "", "--dataset", "digits"], "empty"),
        case("teacher-eval-untrained", "teacher eval cnn-base --dataset digits", "untrained"),
        case("teacher-eval-local-missing", "teacher eval local:{missing} --dataset digits", "not found"),
        case("teacher-eval-split", "teacher eval local:{teacher} --split holdout", "split"),
        case("teacher-eval-image-size-0", "teacher eval cnn-base --image-size 0", "image"),
        case("teacher-eval-image-size-negative", "teacher eval cnn-base --image-size -8", "image"),
        case("teacher-eval-channels-2", "teacher eval cnn-base --channels 2", "channels"),
        case("teacher-eval-channels-0", "teacher eval cnn-base --channels 0", "channels"),
        case("teacher-eval-seed-negative", "teacher eval cnn-base --seed -1", "seed"),
        case("teacher-eval-seed-huge", "teacher eval cnn-base --seed 99999999999999999999", "seed"),
        case("teacher-eval-device", "teacher eval cnn-base --device tpu", "device"),
        case("teacher-eval-dataset", "teacher eval cnn-base --dataset nope", "unknown dataset"),
        case("teacher-eval-shape-mismatch", "teacher eval local:{teacher} --image-size 16", "expects input"),
        case("teacher-eval-missing-spec", "teacher eval", "spec"),
        case("teacher-eval-timm-empty", "teacher eval timm: --dataset digits", "teacher"),
        case("teacher-list-extra", "teacher list extra", None),
        case("teacher-list-option", "teacher list --bogus", "--bogus"),
    ]
)


def _folder(env, first=(8, 8), names=("a", "b"), link=False) -> None:
    """Two classes of three PNGs, the first image ``first`` (w, h) px; with ``link`` a third class linked to a."""
    from PIL import Image

    root = Path(env["tmp"]) / "imgs"
    for ci, cls in enumerate(names):
        for i in range(3):
            path = root / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", first if (ci, i) == (0, 0) else (8, 8), 40 * i).save(path)
    if link:
        (root / "c").symlink_to(root / names[0])


DATA_PARAMS = [
    case("data-info-digits-data-dir", "data info digits --data-dir {dir}", "reads no --data-dir"),
    case("data-info-unknown", "data info nope", "unknown dataset"),
    case("data-info-channels-2", "data info digits --channels 2", "--channels: 2 is not allowed; choose one of 1, 3"),
    case("data-info-folder-missing", "data info imagefolder:/nonexistent", "not a directory"),
    case("data-info-folder-is-file", "data info imagefolder:{file}", "directory"),
    case("data-info-folder-empty", "data info imagefolder:{dir}", "imagefolder"),
    case("data-info-image-size-0", "data info digits --image-size 0", "image"),
    case("data-info-image-size-negative", "data info digits --image-size -3", "--image-size"),
    case("data-info-image-size-huge", "data info digits --image-size 100000", "image"),
    case("data-info-channels-2", "data info digits --channels 2", "channels"),
    case("data-info-channels-0", "data info digits --channels 0", "channels"),
    case("data-info-seed-negative", "data info digits --seed -1", "--seed: -1 is outside the allowed range [0, 4,294"),
    case("data-info-seed-huge", "data info digits --seed 99999999999999999999", "seed"),
    case("data-info-seed-text", "data info digits --seed x", "--seed"),
    case("data-info-missing-name", "data info", "name"),
    case("data-info-empty-name", ["data", "info", ""], "empty"),
    case("data-list-extra", "data list extra", None),
    case(
        "data-info-first-image-tiny", "data info imagefolder:{tmp}/imgs", "is 1x1 px", lambda env: _folder(env, (1, 1))
    ),
    case(
        "pipeline-first-image-tiny",
        "pipeline --out {out} -d imagefolder:{tmp}/imgs",
        "data.image_size",
        lambda env: _folder(env, (1, 1)),
    ),
    case(
        "data-info-class-newline",
        "data info imagefolder:{tmp}/imgs",
        "control character",
        lambda env: _folder(env, names=("a", "new\nline")),
    ),
    case(
        "data-info-class-linked",
        "data info imagefolder:{tmp}/imgs",
        "are the same folder",
        lambda env: _folder(env, link=True),
    ),
    case("unknown-command", "nosuch", "nosuch"),
    case("unknown-root-option", "--bogus", "--bogus"),
]

# --- runs: evaluate RUN, export, prune --------------------------------------------------------------------


def run_damage(edit):
    def setup(env):
        edit(Path(env["myrun"]), env)

    return setup


def _other_model_ckpt(run: Path, env) -> None:
    import torch

    ck = run / "checkpoints" / "stage2.pt"
    saved = torch.load(ck, map_location="cpu", weights_only=True)
    teacher = torch.load(Path(env["teacher"]) / "teacher.pt", map_location="cpu", weights_only=True)
    saved["model"] = teacher
    torch.save(saved, ck)


def _shape_changed_ckpt(run: Path, env) -> None:
    import torch

    ck = run / "checkpoints" / "stage2.pt"
    saved = torch.load(ck, map_location="cpu", weights_only=True)
    saved["model"] = {k: torch.zeros([s + 1 for s in v.shape]) for k, v in saved["model"].items()}
    torch.save(saved, ck)


def _spec_edit(field: str, value):
    """Set ``field`` (``a.b``) of the run's system.json to ``value``."""

    def edit(spec: dict) -> dict:
        *path, last = field.split(".")
        holder = spec
        for key in path:
            holder = holder[key]
        holder[last] = value
        return spec

    return lambda r, e: _edit_json(r / "system.json", edit)


# Hand-edited system.json fields: each was a traceback or a huge allocation before the spec was checked.
SPEC_DAMAGE = {
    "encoder-kind": ("encoder.kind", "bogus"),
    "genotype-outside": ("encoder.file", "../../genotype.json"),
    "classes-huge": ("num_classes", 10**12),
    "classes-float": ("num_classes", 10.0),
    "teacher-dim-text": ("teacher_dim", "x"),
    "codec-name": ("codec.name", "turbo"),
    "codec-dim-negative": ("codec.dim", -3),
    "codec-heads-0": ("codec.heads", 0),
    "codec-heads-uneven": ("codec.heads", 3),
    "max-symbols-huge": ("codec.max_symbols", 10**9),
    "symbols-bool": ("codec.symbols", [True]),
    "csi-text": ("codec.csi", "yes"),
    "input-shape-short": ("input_shape", [1, 8]),
}


def _config_key(run: Path, env) -> None:
    _edit_json(run / "config.json", lambda c: {**c, "stage1": {**c["stage1"], "epochz": 3}})


def _config_digits(run: Path, env) -> None:
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(re.sub(r'"seed": \d+', '"seed": ' + "9" * 5000, text, count=1))


RUN_DAMAGE = {
    "ckpt-list": lambda r, e: _torch_save([1, 2, 3], r / "checkpoints" / "stage2.pt"),
    "ckpt-empty": lambda r, e: (r / "checkpoints" / "stage2.pt").write_bytes(b""),
    # arbitrary bytes make the unpickler fail with KeyError / IndexError (hostile pass, session 16)
    "ckpt-text": lambda r, e: (r / "checkpoints" / "stage2.pt").write_bytes(b"hello\n"),
    "ckpt-passwd-like": lambda r, e: (r / "checkpoints" / "stage2.pt").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n"),
    "ckpt-other-model": _other_model_ckpt,
    "ckpt-other-shapes": _shape_changed_ckpt,
    "ckpt-missing": lambda r, e: (r / "checkpoints" / "stage2.pt").unlink(),
    "config-list": lambda r, e: (r / "config.json").write_text("[]"),
    "config-bad-value": lambda r, e: _edit_json(r / "config.json", lambda c: {**c, "seed": -5}),
    "config-missing": lambda r, e: (r / "config.json").unlink(),
    "system-garbage": lambda r, e: (r / "system.json").write_text("garbage{"),
    "system-list": lambda r, e: (r / "system.json").write_text("[]"),
    **{f"system-{name}": _spec_edit(field, value) for name, (field, value) in SPEC_DAMAGE.items()},
    "genotype-missing": lambda r, e: (r / "genotype.json").unlink(),
    "genotype-negative": lambda r, e: (r / "genotype.json").write_text(json.dumps(genotype(skeleton_init_channels=-4))),
}
RUN_COMMANDS = {
    "evaluate": "evaluate {myrun} --snr 0 --trials 1",
    "export": "export {myrun} --out {out}",
    "prune": "prune {myrun} --out {out} --epochs 0",
}
RUN_PARAMS = (
    [case(f"{c}-run-{n}", cmd, None, run_damage(e)) for n, e in RUN_DAMAGE.items() for c, cmd in RUN_COMMANDS.items()]
    + [
        # A config.json that no longer reads names its file (it was a bare "unknown config key").
        case(f"{c}-run-config-{n}", cmd, "config.json", run_damage(e))
        for c, cmd in RUN_COMMANDS.items()
        for n, e in (("unknown-key", _config_key), ("5000-digits", _config_digits))
    ]
    + [
        case("evaluate-missing-target", "evaluate {missing}", "neither"),
        case("evaluate-target-file", "evaluate {file}", "neither"),
        case("evaluate-empty-dir", "evaluate {dir} --snr 0", None),
        case("evaluate-snr-neg-inf", ["evaluate", "{run}", "--snr=-inf:0:1"], "range"),
        case("evaluate-snr-nan", "evaluate {run} --snr nan", "not a finite number"),
        case("evaluate-snr-full-width-digit", "evaluate {run} --snr \uff15", "malformed range"),
        case("evaluate-snr-far-and-dense", "evaluate {run} --snr -1000:0:1", "finite SNR from -100 to 100 dB"),
        case("evaluate-trials-20-digits", "evaluate {run} --trials 99999999999999999999", "allowed range"),
        case("evaluate-out-blank", ["evaluate", "{run}", "--out", " "], "empty value"),
        case("prune-out-blank", ["prune", "{run}", "--out", " \t"], "empty value"),
        case("evaluate-snr-reversed", "evaluate {run} --snr 10:0:1", "range"),
        case("evaluate-snr-step-0", "evaluate {run} --snr 0:10:0", "range"),
        case("evaluate-snr-text", "evaluate {run} --snr loud", "range"),
        case("evaluate-snr-empty", ["evaluate", "{run}", "--snr", ""], "empty"),
        case("evaluate-snr-huge", "evaluate {run} --snr 1e9", "snr"),
        case("evaluate-symbols-nan", "evaluate {run} --symbols nan", "symbols"),
        case("evaluate-symbols-0", "evaluate {run} --symbols 0 --snr 0", "symbols"),
        case("evaluate-symbols-too-many", "evaluate {run} --symbols 64 --snr 0", "16"),
        case("evaluate-symbols-fraction", "evaluate {run} --symbols 2.5 --snr 0", "symbols"),
        case("evaluate-symbols-text", "evaluate {run} --symbols four", "symbols"),
        case("evaluate-channel-unknown", "evaluate {run} --channel wifi --snr 0", "wifi"),
        case("evaluate-channel-empty", ["evaluate", "{run}", "--channel", ",", "--snr", "0"], "channel"),
        case("evaluate-snr-repeated", "evaluate {run} --snr 5,5,5", "repeats"),
        case("evaluate-snr-overflow", ["evaluate", "{run}", "--snr=-1e308:1e308:1e300"], "finite SNR"),
        case("evaluate-snr-dense", ["evaluate", "{run}", "--snr=-100:100:1e-300"], "more than 1,000 points"),
        case("evaluate-snr-step-below-rounding", "evaluate {run} --snr 0:1e-7:1e-8", "step below"),
        case("evaluate-symbols-repeated", "evaluate {run} --symbols 4,4 --snr 0", "repeats"),
        case("evaluate-channel-repeated", "evaluate {run} --channel awgn,awgn --snr 0", "repeats"),
        case("evaluate-channel-empty-item", "evaluate {run} --channel awgn,,rayleigh --snr 0", "empty item"),
        case("evaluate-bundle-symbols-17", "evaluate {bundle} --symbols 17 --snr 0", "1..16"),
        case("evaluate-trials-0", "evaluate {run} --trials 0 --snr 0", "trials"),
        case("evaluate-trials-negative", "evaluate {run} --trials -3 --snr 0", "trials"),
        case("evaluate-trials-text", "evaluate {run} --trials x", "--trials"),
        case("evaluate-device", "evaluate {run} --device tpu --snr 0", "device"),
        case("evaluate-bundle-snr-nan", "evaluate {bundle} --snr nan", "range"),
        case("evaluate-bundle-symbols-too-many", "evaluate {bundle} --symbols 64 --snr 0", "16"),
        case("evaluate-bundle-channel-unknown", "evaluate {bundle} --channel wifi --snr 0", "wifi"),
        case("evaluate-bundle-trials-0", "evaluate {bundle} --trials 0 --snr 0", "trials"),
        case("evaluate-missing-arg", "evaluate", "target"),
        case("export-opset-99", "export {run} --out {out} --opset 99", "opset"),
        case("export-opset-0", "export {run} --out {out} --opset 0", "opset"),
        case("export-opset-16", "export {run} --out {out} --opset 16", "opset"),
        case("export-opset-negative", "export {run} --out {out} --opset -1", "opset"),
        case("export-opset-text", "export {run} --out {out} --opset abc", "--opset"),
        case("export-target-unknown", "export {run} --out {out} --target nope", "nope"),
        case("export-target-nano-int8", "export {run} --out {out} --target nano --int8", "int8"),
        case("export-target-opset-above", "export {run} --out {out} --target xavier-nx --opset 20", "opset"),
        case("export-calibration-unknown", "export {run} --out {out} --int8 --calibration magic", "calibration"),
        case("export-calib-samples-0", "export {run} --out {out} --int8 --calib-samples 0", "calib"),
        case("export-calib-samples-negative", "export {run} --out {out} --int8 --calib-samples -5", "calib"),
        case("export-calib-below-floor", "export {run} --out {out} --int8 --calib-samples 10", "calib"),
        case(  # taken quietly as the split's size before
            "export-calib-beyond-split",
            "export {run} --out {out} --int8 --calib-samples 100000000000",
            "images of the training split; give at most",
        ),
        case("export-calib-min-negative", "export {run} --out {out} --int8 --calib-min -1", "calib"),
        case("export-no-out", "export {run}", "--out"),
        case("export-run-missing", "export {missing} --out {out}", None),
        case("export-run-file", "export {file} --out {out}", None),
        case("export-run-empty-dir", "export {dir} --out {out}", None),
        case("export-run-is-bundle", "export {bundle} --out {out}", None),
        case("export-trt-no-bundle", "export trt", "bundle"),
        case("export-trt-missing", "export trt {missing}", None),
        case("export-trt-not-bundle", "export trt {dir}", None),
        case("export-trt-out", "export trt {bundle} --out {out}", "--out"),
        case("export-trt-opset", "export trt {bundle} --opset 13", "--opset"),
        case("prune-ratio-0", "prune {run} --out {out} --ratio 0", "ratio"),
        case("prune-ratio-1", "prune {run} --out {out} --ratio 1", "ratio"),
        case("prune-ratio-negative", "prune {run} --out {out} --ratio -0.5", "ratio"),
        case("prune-ratio-nan", "prune {run} --out {out} --ratio nan", "ratio"),
        case("prune-ratio-tiny", "prune {run} --out {out} --ratio 0.0001", "ratio"),
        case("prune-ratio-text", "prune {run} --out {out} --ratio half", "--ratio"),
        case("prune-epochs-negative", "prune {run} --out {out} --epochs -1", "epochs"),
        case("prune-run-missing", "prune {missing} --out {out}", None),
        case("prune-run-is-bundle", "prune {bundle} --out {out}", None),
        case("prune-device", "prune {run} --out {out} --device tpu", "device"),
        case("prune-no-out", "prune {run}", "--out"),
        case("prune-round-to-0", "prune {run} --out {out} --round-to 0", "--round-to must be from 1"),
        case("prune-round-to-negative", "prune {run} --out {out} --round-to -4", "--round-to must be from 1"),
        case("prune-round-to-huge", "prune {run} --out {out} --round-to 100000", "--round-to must be from 1"),
        case("prune-round-to-text", "prune {run} --out {out} --round-to four", "--round-to"),
        # every layer is narrower than 256: rounded, nothing goes (unrounded, 0.5 removes channels)
        case("prune-round-to-keeps-all", "prune {run} --out {out} --ratio 0.5 --round-to 256", "--round-to 1"),
    ]
)

# --- bundles: evaluate, bench, devices estimate, tx, rx, export trt -----------------------------------------


def _manifest(bundle: Path, edit) -> None:
    _edit_json(bundle / "manifest.json", edit)


def _pop(key):
    def edit(m):
        m.pop(key)
        return m

    return edit


def _entry_without_bytes(m):
    next(iter(m["files"].values())).pop("bytes")
    return m


def _rehashed_garbage(bundle: Path) -> None:
    """A model file replaced by garbage, with its sha256 and size updated in the manifest."""
    m = json.loads((bundle / "manifest.json").read_text())
    rel = m["models"]["encoder"]["fp32"]["file"]
    data = b"not an onnx model at all" * 40
    (bundle / rel).write_bytes(data)
    m["files"][rel] = {**m["files"][rel], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(m))


def _rehashed_swap(bundle: Path) -> None:
    """The encoder file replaced by the (valid) rx model, rehashed: the wrong graph behind a valid hash."""
    m = json.loads((bundle / "manifest.json").read_text())
    enc, rx = m["models"]["encoder"]["fp32"]["file"], m["models"]["rx"]["fp32"]["file"]
    data = (bundle / rx).read_bytes()
    (bundle / enc).write_bytes(data)
    m["files"][enc] = {**m["files"][enc], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(m))


def _truncate_model(bundle: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    p = bundle / m["models"]["tx"]["fp32"]["file"]
    p.write_bytes(p.read_bytes()[:100])


BUNDLE_DAMAGE = {
    "no-models": lambda b: _manifest(b, _pop("models")),
    "no-normalisation": lambda b: _manifest(b, _pop("normalisation")),
    "no-symbols": lambda b: _manifest(b, _pop("symbols")),
    "manifest-list": lambda b: (b / "manifest.json").write_text("[]"),
    "entry-without-bytes": lambda b: _manifest(b, _entry_without_bytes),
    "rehashed-garbage-onnx": _rehashed_garbage,
    "rehashed-wrong-graph": _rehashed_swap,
    "manifest-not-json": lambda b: (b / "manifest.json").write_text("{"),
    "manifest-5000-digit-int": lambda b: (b / "manifest.json").write_text('{"format": 1' + "0" * 5000 + "}"),
    "manifest-empty": lambda b: (b / "manifest.json").write_bytes(b""),
    "model-truncated": _truncate_model,
    "std-zero": lambda b: _manifest(b, lambda m: {**m, "normalisation": {**m["normalisation"], "std": [0.0]}}),
    # found by a hostile pass (session 16): each ran, or ended in a traceback
    "cpu-form-outside": lambda b: _manifest(b, _tx_fp32(onnxruntime_cpu={"file": "../outside.onnx"})),
    "model-file-list": lambda b: _manifest(b, _tx_fp32(file=["models/tx.onnx"])),
    "outputs-dict": lambda b: _manifest(b, _tx_fp32(outputs={"a": 1})),
    "outputs-without-name": lambda b: _manifest(b, _tx_fp32(outputs=[{"shape": "x"}])),
    "size-huge": lambda b: _manifest(b, lambda m: {**m, "normalisation": {**m["normalisation"], "size": 100_000}}),
    "channels-3": lambda b: _manifest(b, _three_channels),
    "unlisted-external-data": lambda b: (b / "models" / "data.bin").write_bytes(b"weights from someone else"),
    "engine-outside": lambda b: _manifest(b, _engine_outside),
}


def _tx_fp32(**changes):
    def edit(m):
        m["models"]["tx"]["fp32"].update(changes)
        return m

    return edit


def _three_channels(m):
    m["normalisation"].update(channels=3, mean=[0.0] * 3, std=[1.0] * 3)
    return m


def _engine_outside(m):
    m["tensorrt"] = {"engines": {"encoder": {"fp32": {"file": "../../etc/passwd", "sha256": "0" * 64}}}}
    return m


def bundle_damage(edit):
    return lambda env: edit(Path(env["mybundle"]))


BUNDLE_COMMANDS = {
    "evaluate": "evaluate {mybundle} --snr 0 --trials 1 --out {out}",
    "estimate": "devices estimate {mybundle} --device orin-nano-8gb",
    "bench": "bench {mybundle} --seconds 0.05 --warmup 0 --batch 1 --no-memory --trials 1",
    "tx": "tx {mybundle} split:test --to 127.0.0.1:9 --snr-db 10 --count 1",
    "rx": "rx {mybundle} --listen 127.0.0.1:0 --count 1 --idle-timeout 1",
}
BUNDLE_PARAMS = [
    case(f"{c}-bundle-{n}", cmd, None, bundle_damage(e))
    for n, e in BUNDLE_DAMAGE.items()
    for c, cmd in BUNDLE_COMMANDS.items()
]

TX = "tx {bundle} split:test --to 127.0.0.1:9 --count 1"
RX = "rx {bundle} --listen 127.0.0.1:0 --count 1 --idle-timeout 1"
BENCH = "bench {bundle} --seconds 0.05 --warmup 0 --no-memory --trials 1"
LINK_PARAMS = [
    case("tx-snr-nan", f"{TX} --snr-db nan", "snr"),
    case("tx-snr-inf", f"{TX} --snr-db inf", "snr"),
    case("tx-snr-text", f"{TX} --snr-db loud", "--snr-db"),
    case("tx-snr-missing", TX, "--snr-db"),
    case("tx-symbols-0", f"{TX} --snr-db 10 --symbols 0", "symbols"),
    case("tx-symbols-too-many", f"{TX} --snr-db 10 --symbols 999", "symbols"),
    case("tx-symbols-nan", f"{TX} --snr-db 10 --symbols nan", "--symbols"),
    case("tx-dtype", f"{TX} --snr-db 10 --dtype float64", "dtype"),
    case("tx-channel", f"{TX} --snr-db 10 --channel wifi", "wifi"),
    case("tx-precision", f"{TX} --snr-db 10 --precision int4", "int4"),
    case("tx-mtu-0", f"{TX} --snr-db 10 --mtu 0", "mtu"),
    case("tx-batch-0", f"{TX} --snr-db 10 --batch 0", "batch"),
    case("tx-rate-negative", f"{TX} --snr-db 10 --rate -1", "rate"),
    case("tx-rate-tiny", f"{TX} --snr-db 10 --rate 1e-300", "rate"),
    case("tx-count-0", f"{TX} --snr-db 10 --count 0", "count"),
    case("tx-to-no-port", "tx {bundle} split:test --to localhost --snr-db 10 --count 1", "port"),
    case("tx-to-bad-port", "tx {bundle} split:test --to 127.0.0.1:99999 --snr-db 10 --count 1", "port"),
    case("tx-source-missing", "tx {bundle} {missing} --to 127.0.0.1:9 --snr-db 10 --count 1", None),
    case("tx-source-empty-dir", "tx {bundle} {dir} --to 127.0.0.1:9 --snr-db 10 --count 1", None),
    # as an empty folder is: it ran nothing and exited 0 in silence (run_cli's stdin is empty)
    case("tx-stdin-empty", "tx {bundle} - --to 127.0.0.1:9 --snr-db 10", "ended before its first frame"),
    case("tx-source-not-image", "tx {bundle} {file} --to 127.0.0.1:9 --snr-db 10 --count 1", None),
    case("tx-split-unknown", "tx {bundle} split:holdout --to 127.0.0.1:9 --snr-db 10 --count 1", "split"),
    case("tx-bundle-missing", "tx {missing} split:test --to 127.0.0.1:9 --snr-db 10", None),
    case("tx-bundle-is-run", "tx {run} split:test --to 127.0.0.1:9 --snr-db 10", None),
    case("rx-listen-no-port", "rx {bundle} --listen localhost --count 1", "port"),
    case("rx-listen-bad-port", "rx {bundle} --listen 127.0.0.1:70000 --count 1", "port"),
    case("rx-listen-bad-host", "rx {bundle} --listen 999.1.1.1:0 --count 1 --idle-timeout 1", None),
    case("rx-channel", f"{RX} --channel wifi --snr-db 10", "wifi"),
    case("rx-channel-no-snr", f"{RX} --channel awgn", "snr"),
    case("rx-snr-nan", f"{RX} --channel awgn --snr-db nan", "snr"),
    case("rx-batch-0", f"{RX} --batch 0", "batch"),
    case("rx-count-negative", f"{RX} --count -1", "count"),
    case("rx-idle-negative", "rx {bundle} --listen 127.0.0.1:0 --count 1 --idle-timeout -1", "idle"),
    case("rx-reassembly-0", f"{RX} --reassembly-timeout 0", "reassembly"),
    case("rx-precision", f"{RX} --precision int4", "int4"),
    case("rx-threads-negative", f"{RX} --threads -2", "threads"),
    case("rx-bundle-missing", "rx {missing} --listen 127.0.0.1:0", None),
    case("bench-backend", f"{BENCH} --backend magic", "magic"),
    case("bench-precision", f"{BENCH} --precision int4", "int4"),
    case("bench-batch-0", f"{BENCH} --batch 0", "batch"),
    case("bench-batch-text", f"{BENCH} --batch a,b", "batch"),
    case("bench-batch-empty-item", f"{BENCH} --batch 1,,2", "empty item"),
    case("bench-batch-repeated", f"{BENCH} --batch 1,1", "repeats"),
    case("bench-batch-many", f"{BENCH} --batch " + ",".join(map(str, range(1, 41))), "at most"),
    case("bench-batch-other-digits", f"{BENCH} --batch \u0661,\u0662", "comma list"),
    case("bench-batch-underscore", f"{BENCH} --batch 1_0", "comma list"),
    case("bench-trials-huge", f"{BENCH} --trials 1000000000", "trials"),
    case("bench-precision-comma", [*BENCH.split(), "--precision", ","], "empty item"),
    case("bench-backend-repeated", f"{BENCH} --backend onnxruntime,onnxruntime", "repeats"),
    case("bench-snr-nan", f"{BENCH} --snr-db nan", "snr"),
    case("bench-symbols-too-many", f"{BENCH} --symbols 999", "symbols"),
    case("bench-symbols-0", f"{BENCH} --symbols 0", "symbols"),
    case("bench-channel", f"{BENCH} --channel wifi", "wifi"),
    case("bench-trials-0", "bench {bundle} --seconds 0.05 --no-memory --trials 0", "trials"),
    case("bench-seconds-negative", f"{BENCH} --seconds -1", "seconds"),
    case("bench-tolerance", f"{BENCH} --tolerance 2", "tolerance"),
    case("bench-no-bundle", "bench", "bundle"),
    case("bench-bundle-missing", "bench {missing}", None),
    case("bench-host-malformed", f"{BENCH} --host @", "host"),
    case("bench-run-a-file", f"{BENCH} --backend pytorch --run {{file}}", "not a folder"),
    case("bench-run-not-a-run", f"{BENCH} --backend pytorch --run {{dir}}", "without system.json"),
]

DEVICES_PARAMS = [
    case("devices-show-unknown", "devices show nope", "nope"),
    case("devices-show-missing", "devices show", "name"),
    case("devices-show-host", "devices show host", "devices detect"),
    case("devices-list-extra", "devices list extra", None),
    case("devices-detect-option", "devices detect --bogus", "--bogus"),
    case("devices-estimate-device-unknown", "devices estimate {bundle} --device nope", "nope"),
    case("devices-estimate-device-missing", "devices estimate {bundle}", "--device"),
    case("devices-estimate-batch-0", "devices estimate {bundle} --device orin-nano-8gb --batch 0", "batch"),
    case("devices-estimate-batch-text", "devices estimate {bundle} --device orin-nano-8gb --batch x", "batch"),
    case(
        "devices-estimate-batch-empty", ["devices", "estimate", "{bundle}", "--device", "thor", "--batch", ","], "batch"
    ),
    case("devices-estimate-precision", "devices estimate {bundle} --device orin-nano-8gb --precision int4", "int4"),
    case("devices-estimate-nano-int8", "devices estimate {bundle} --device nano --precision int8", "int8"),
    case("devices-estimate-not-bundle", "devices estimate {dir} --device orin-nano-8gb", "not a bundle"),
    case("devices-estimate-missing", "devices estimate {missing} --device orin-nano-8gb", "not a bundle"),
    case("devices-lut-device", "devices lut --out {out} --device orin-nano-8gb", "host"),
    case("devices-lut-precision", "devices lut --out {out} --precision int4", "int4"),
    case("devices-lut-threads-negative", "devices lut --out {out} --threads -1", "threads"),
    case("devices-lut-threads-huge", "devices lut --out {out} --threads 100000", "--threads"),
    case("devices-lut-out-exists", "devices lut --out {file}", None),
    case("devices-lut-force-not-table", "devices lut --out {file} --force", "not a latency table"),
    case(
        "devices-lut-force-user-json",
        "devices lut --out {cfg} --force",
        "not a latency table",
        cfg_file('{"entries": {}, "my_notes": "mine"}'),
    ),
    case("devices-lut-out-dir", "devices lut --out {dir} --force", None),
    case("devices-lut-dataset", "devices lut --out {out} --dataset nope", "unknown dataset"),
]

# --- found by a hostile pass (session 12): each case was a traceback, a hang or a silent acceptance -------------

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON and YAML, deeper than Python's recursion limit
MANIFEST, TEACHER_JSON = "manifest.json", "teacher.json"


def deep_file(key: str, rel: str):
    return lambda env: _write(Path(env[key]) / rel, DEEP)


def png_bomb(env) -> None:
    """A PNG header announcing 20000 x 20000 pixels (Pillow's decompression-bomb limit), with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    _write(Path(env["tmp"]) / "bomb.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def manifest_edit(**changes):
    def setup(env) -> None:
        path = Path(env["mybundle"]) / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return setup


def linked_models(env) -> None:
    root = Path(env["mybundle"])
    (root / "models").rename(root.parent / "models-elsewhere")
    (root / "models").symlink_to(root.parent / "models-elsewhere")


def folder_with_empty_class(env) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        for i in range(3):
            path = Path(env["tmp"]) / "imgs" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), 40 * i).save(path)
    (Path(env["tmp"]) / "imgs" / "c").mkdir()


def folder_with_a_fifo(env) -> None:
    folder_with_empty_class(env)
    os.mkfifo(Path(env["tmp"]) / "imgs" / "b" / "3.png")


def _alias_bomb(levels: int) -> str:
    """A YAML file of a few hundred bytes whose aliases expand to 9**levels values."""
    rows, prev = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"], "a"
    for name in "bcdefghij"[: levels - 1]:
        rows.append(f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "seed: [" + ", ".join(rows) + "]\n"


SET_BOMB = _alias_bomb(6).strip().replace(": ", "=", 1)  # the same through --set seed=[...]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


BENCH_FAST = "bench {bundle} --warmup 0 --no-memory --trials 1"
HOSTILE_PARAMS = [
    case(
        "pipeline-supernet-huge",
        "pipeline --out {out} --set search.init_channels=4096 --set search.layers=64 --set search.steps=16",
        "the search's supernet",
    ),
    case("pipeline-codec-huge", "pipeline --out {out} --set codec.dim=16384 --set codec.depth=64", "the codec"),
    case("bench-json-inside-bundle", f"{BENCH} --json {{bundle}}/r.json", "inside the bundle"),
    case("estimate-out-inside-bundle", "devices estimate {bundle} --device nano -o {bundle}/models/e.json", "inside"),
    case("rx-out-inside-bundle", "rx {bundle} --listen 127.0.0.1:0 --out {bundle}/p.jsonl", "inside the bundle"),
    case("tx-summary-inside-bundle", f"{TX} --snr-db 1 --summary {{bundle}}/s.json", "inside the bundle"),
    case("lut-out-inside-bundle", "devices lut --out {bundle}/t.json", "inside the bundle"),
    case("lut-supernet-huge", "devices lut --out {out} --set search.init_channels=4096", "the search's supernet"),
    case("pipeline-derive-max-params", "pipeline --out {out} --set search.derive_max_params=1000000000", "range"),
    case("pipeline-plain-codec-gains", "pipeline --out {out} --set codec.name=plain --set codec.gains=true", "gains"),
    case("evaluate-grid-days", "evaluate {bundle} --snr -50:50:0.5 --trials 10000 --out {out}", "passes"),
    case("evaluate-snr-step-tiny", "evaluate {bundle} --snr 0:100:1e-9 --trials 1 --out {out}", "points"),
    case("pipeline-snr-step-tiny", "pipeline --out {out} --set evaluate.snr_db=0:100:1e-6", "points"),
    case("estimate-batch-huge", "devices estimate {bundle} --device nano --batch 1000000000000", "batch"),
    case("estimate-batch-overflow", "devices estimate {bundle} --device nano --batch 99999999999999999999", "batch"),
    case("estimate-batch-blank", ["devices", "estimate", "{bundle}", "--device", "nano", "--batch", ""], "batch"),
    case("bench-seconds-inf", f"{BENCH_FAST} --seconds inf", "seconds"),
    case("bench-seconds-nan", f"{BENCH_FAST} --seconds nan", "seconds"),
    case("bench-warmup-nan", f"{BENCH} --warmup nan", "warmup"),
    case("bench-threads-huge", f"{BENCH} --threads 100000", "threads"),
    case("bench-snr-huge", f"{BENCH} --snr-db 1e308", "snr"),
    case("bench-batch-blank", [*BENCH.split(), "--batch", ""], "batch"),
    case("bench-batch-huge", f"{BENCH} --batch 1000000000", "batch"),
    case("bench-backend-comma", [*BENCH.split(), "--backend", ","], "backend"),
    case("bench-port-without-host", f"{BENCH} --port 22", "--host"),
    case("bench-host-blank", [*BENCH.split(), "--host", ""], "host"),
    # ssh -o keys that run a local command: a copied command line ran them (hostile pass, session 16)
    *[
        case(f"bench-ssh-option-{k.lower()}", [*BENCH.split(), "--host", "u@127.0.0.1", "--ssh-option", f"{k}=x"], k)
        for k in ("ProxyCommand", "LocalCommand", "PermitLocalCommand", "KnownHostsCommand", "Match", "Include")
    ],
    case(
        "bench-ssh-option-spaced",
        [*BENCH.split(), "--host", "u@127.0.0.1", "--ssh-option", "ConnectTimeout=5 x"],
        "KEY=VALUE",
    ),
    # an empty path was the current folder: `pipeline --out ""` made a run of it (hostile pass, session 16)
    case("pipeline-out-empty", ["pipeline", "--out", ""], "--out was given an empty value"),
    case("pipeline-out-equals-empty", ["pipeline", "--out="], "--out was given an empty value"),
    case("export-out-empty", ["export", "{run}", "--out", ""], "--out was given an empty value"),
    case("tx-source-empty", ["tx", "{bundle}", "", "--to", "127.0.0.1:9", "--snr-db", "10"], "is empty"),
    case("bench-seconds-a-lifetime", f"{BENCH_FAST} --seconds 1e9", "up to 86,400"),
    case("tx-batch-huge", f"{TX} --snr-db 10 --batch 10000000", "batch"),
    case("rx-batch-huge", f"{RX} --batch 10000000", "batch"),
    case("bench-manifest-deep", BENCH.replace("{bundle}", "{mybundle}"), "JSON", deep_file("mybundle", MANIFEST)),
    case("estimate-manifest-deep", "devices estimate {mybundle} -d nano", "JSON", deep_file("mybundle", MANIFEST)),
    case(
        "bench-default-precision-bogus",
        BENCH.replace("{bundle}", "{mybundle}"),
        "default_precision",
        manifest_edit(default_precision="bogus"),
    ),
    case("bench-models-folder-linked", BENCH.replace("{bundle}", "{mybundle}"), "plain file", linked_models),
    case("teacher-eval-record-deep", "teacher eval local:{myteacher}", "nested", deep_file("myteacher", TEACHER_JSON)),
    case("lut-config-deep", "devices lut --out {out} --config {cfg}", "nested", cfg_file(DEEP)),
    case("pipeline-config-deep", "pipeline --out {out} --config {cfg}", "nested", cfg_file(DEEP)),
    case("teacher-eval-timm-text-weights", "teacher eval timm:resnet18@{file}", "is not a PyTorch or safetensors file"),
    case(
        "teacher-eval-timm-pickle-payload",
        "teacher eval timm:resnet18@{tmp}/w.pth",
        "cannot be loaded",
        lambda env: _torch_save({"w": _Payload(str(Path(env["tmp"]) / "PWNED"))}, Path(env["tmp"]) / "w.pth"),
    ),
    case(
        "teacher-eval-text-checkpoint",
        "teacher eval local:{myteacher} --dataset digits",
        "it is not a PyTorch file",
        teacher_damage(lambda d: (d / "teacher.pt").write_text("hello, not weights\n")),
    ),
    case(
        "teacher-eval-timm-bad-safetensors",
        "teacher eval timm:resnet18@{tmp}/w.safetensors",
        "is not a PyTorch or safetensors file",
        lambda env: _write(Path(env["tmp"]) / "w.safetensors", "garbage"),
    ),
    case(
        "teacher-eval-timm-empty-pth",
        "teacher eval timm:resnet18@{tmp}/w.pth",
        "is not a PyTorch or safetensors file",
        lambda env: _write(Path(env["tmp"]) / "w.pth", b""),
    ),
    case(  # timm loads a file for another class count leniently: one of none of its keys gave a random teacher
        "teacher-eval-timm-foreign-keys",
        "teacher eval timm:resnet18@{tmp}/w.pth",
        "lack 100 of the 100 backbone tensors of resnet18",
        lambda env: _torch_save({"foo": "zeros"}, Path(env["tmp"]) / "w.pth"),
    ),
    case("teacher-eval-untrained", "teacher eval cnn-base", "untrained"),
    case("teacher-eval-random-timm", "teacher eval timm:resnet18@random", "untrained"),
    case("tx-image-bomb", "tx {bundle} {tmp}/bomb.png --to 127.0.0.1:9 --snr-db 10", "cannot read image", png_bomb),
    case("tx-snr-overflow", f"{TX} --snr-db 1e39", "snr"),
    case("tx-snr-huge", f"{TX} --snr-db 1e6", "snr"),
    case("tx-threads-huge", f"{TX} --snr-db 10 --threads 1000", "threads"),
    case("tx-source-device-file", "tx {bundle} /dev/zero --to 127.0.0.1:9 --snr-db 10", "not a regular file"),
    case("rx-seed-negative", f"{RX} --seed -1", "seed"),
    case("rx-snr-without-channel", f"{RX} --snr-db 10", "--channel"),
    case("rx-snr-huge", f"{RX} --channel awgn --snr-db 1e308", "snr"),
    case("stage2-channels-empty", "pipeline --out {out} --set stage2.channels=[]", "stage2.channels"),
    case("stage1-losses-empty", "pipeline --out {out} --set stage1.losses={}", "stage1.losses"),
    case("stage1-losses-all-zero", ["pipeline", "--out", "{out}", "--set", "stage1.losses={ce: 0}"], "stage1.losses"),
    case("stage1-train-empty", "pipeline --out {out} --set stage1.train=[]", "stage1.train"),
    case("evaluate-channels-empty", "pipeline --out {out} --set evaluate.channels=[]", "evaluate.channels"),
    case("evaluate-bundle-into-a-run", "evaluate {bundle} --snr 0 --trials 1 --out {myrun}", "another"),
    case("evaluate-bundle-into-a-bundle", "evaluate {bundle} --snr 0 --trials 1 --out {mybundle}", "another"),
    case("export-fp16-without-trt", "export {run} --out {out} --fp16", "--fp16"),
    case("export-calibration-without-int8", "export {run} --out {out} --calibration entropy", "--int8"),
    case("export-calib-samples-without-int8", "export {run} --out {out} --calib-samples 5", "--int8"),
    case("export-second-folder", "export {run} extra --out {out}", "one folder"),
    case("export-calib-samples-negative", "export {run} --out {out} --int8 --calib-samples -5", "calib-samples"),
    case("export-out-inside-a-bundle", "export {run} --out {mybundle}/inner", "inside the bundle"),
    case("export-out-inside-the-run", "export {myrun} --out {myrun}/sub", "inside the source"),
    case("data-dir-missing", "data info fashion-mnist --data-dir {missing}", "data-dir"),
    case("evaluate-identity-only", "evaluate {run} --channel identity --trials 1 --snr 0 --out {out}", "identity"),
    case(
        "evaluate-trials-huge",
        "evaluate {bundle} --trials 100000000 --snr 0 --out {out}",
        "--trials: 100000000 is outside",
    ),
    case("prune-epochs-huge", "prune {run} --out {out} --epochs 100000000", "epochs"),
    case("teacher-train-into-a-run", "teacher train --out {myrun}/teacher --force --epochs 1", "inside the run"),
    case("imagefolder-empty-class", "data info imagefolder:{tmp}/imgs", "holds no images", folder_with_empty_class),
    case("val-split-empty", "distill --out {out} --set data.val_fraction=0.0001", "no validation images"),
    case("imagefolder-fifo", "data info imagefolder:{tmp}/imgs", "not a regular file", folder_with_a_fifo),
    case("config-alias-bomb", "pipeline --out {out} --config {cfg}", "100,000 values", cfg_file(_alias_bomb(9))),
    case("set-alias-bomb", ["pipeline", "--out", "{out}", "--set", SET_BOMB], "values"),
    case("config-too-big", "pipeline --out {out} --config {cfg}", "bytes", cfg_file("# x\n" * 300_000)),
    pytest.param(
        ["evaluate", "{bundle}", "--device", "cuda", "--snr", "0", "--trials", "1", "--out", "{out}"],
        "CUDA",
        None,
        id="evaluate-bundle-cuda-without-cuda",
        marks=pytest.mark.skipif(_has_cuda(), reason="CUDA is present here"),
    ),
]

ALL_CLI = (
    SET_PARAMS
    + CONFIG_FILE_PARAMS
    + FLAG_PARAMS
    + LATENCY_PARAMS
    + GENOTYPE_PARAMS
    + OUT_PARAMS
    + TEACHER_PARAMS
    + DATA_PARAMS
    + RUN_PARAMS
    + BUNDLE_PARAMS
    + LINK_PARAMS
    + DEVICES_PARAMS
    + HOSTILE_PARAMS
)


ARTEFACT = re.compile(r"\{(my)?(run|bundle|teacher)\}")
ON_ARTEFACTS = [p for p in ALL_CLI if any(ARTEFACT.search(a) for a in p.values[0])]
PLAIN = [p for p in ALL_CLI if p not in ON_ARTEFACTS]


@pytest.mark.parametrize(("argv", "needle", "setup"), PLAIN)
def test_cli_bad_input(argv, needle, setup, tmp_path, request, capsys, monkeypatch):
    check_cli_case(argv, needle, setup, tmp_path, request, capsys, monkeypatch)


@pytest.mark.parametrize(("argv", "needle", "setup"), ON_ARTEFACTS)
def test_cli_bad_input_on_artefacts(
    argv, needle, setup, tiny_run, tiny_bundle, tiny_teacher_dir, tmp_path, request, capsys, monkeypatch
):
    """Cases on a trained teacher, run or bundle (the session fixtures are built outside the time limit)."""
    check_cli_case(argv, needle, setup, tmp_path, request, capsys, monkeypatch)


# --- things that must be accepted (they were refused or crashed before) ---------------------------------------


def test_a_config_file_without_a_preset_keeps_each_stages_defaults(tmp_path):
    """Only what the file names changes: a stage section was rebuilt from StageConfig(), which trains nothing."""
    from rkd_edge.config import RunConfig, load_config, validate

    path = _write(tmp_path / "c.yaml", "stage1:\n  lr: 0.001\nstage2:\n  epochs: 3\n")
    cfg, default = validate(load_config(None, str(path))), RunConfig()
    assert cfg.stage1.lr == 0.001 and cfg.stage2.epochs == 3
    for name in ("stage1", "stage2"):
        got, want = getattr(cfg, name), getattr(default, name)
        assert (got.train, got.losses) == (want.train, want.losses) and got.train


@pytest.mark.parametrize(
    "override",
    [
        "evaluate.snr_db=-10:20:10",
        "evaluate.snr_db=0,5,10",
        "codec.symbols=4",
        "search.lambdas=0",
        "teacher.lr=1e-3",
        "evaluate.channels=rayleigh",
        "evaluate.channels=awgn, rician",
        "codec.symbols=8,16",
    ],
)
def test_valid_overrides_are_accepted(override):
    from rkd_edge.config import load_config, parse_range, validate

    cfg = validate(load_config("quickstart", None, [override]))
    if override.startswith("evaluate.snr_db=-10"):
        assert cfg.evaluate.snr_db == "-10:20:10" and parse_range(cfg.evaluate.snr_db) == [-10.0, 0.0, 10.0, 20.0]
    # a text for a list key is its comma-separated items
    expected = {
        "evaluate.channels=rayleigh": ("evaluate", "channels", ["rayleigh"]),
        "evaluate.channels=awgn, rician": ("evaluate", "channels", ["awgn", "rician"]),
        "codec.symbols=8,16": ("codec", "symbols", [8, 16]),
    }.get(override)
    if expected:
        assert getattr(getattr(cfg, expected[0]), expected[1]) == expected[2]


# --- the in-process harness sees what a user sees ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["pipeline", "--out", "OUT", "--set", "seed.x=1"],
        ["pipeline", "--out", "OUT", "--seed", "99999999999999999999"],
        ["data", "info", "digits", "--bogus"],
        ["export", "RUN", "--out", "OUT", "--opset", "abc"],
        ["data", "info"],
    ],
    ids=["set-seed.x", "seed-huge", "unknown-option", "bad-int", "missing-argument"],
)
def test_subprocess_matches_in_process(args, tmp_path, capsys, monkeypatch):
    args = [str(tmp_path / "out") if a == "OUT" else str(tmp_path / "run") if a == "RUN" else a for a in args]
    proc = run_cli("-q", *args, cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_in_process(capsys, args)
    assert_one_line(proc.returncode, proc.stderr, None, args)
    assert (proc.returncode, proc.stderr.strip()) == (code, err.strip())
    assert not (tmp_path / "out").exists()


# --- the Runtime API ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    from rkd_edge.runtime import Runtime

    with Runtime(str(tiny_bundle)) as r:
        yield r


def _imgs(rt, n=2, dtype=np.uint8):
    return np.zeros((n, rt.size, rt.size, rt.channels), dtype)


def _feats(rt, n=2):
    return np.zeros((n, rt.feature_dim), np.float32)


def _y(rt, n=2):
    return np.zeros((n, rt.max_symbols, 2), np.float32)


def _mask(rt, n=2):
    return np.ones((n, rt.max_symbols), np.float32)


def _nan_image(rt):
    x = _imgs(rt, 1, np.float32)
    x[0, 0, 0, 0] = np.nan
    return x


API_CALLS = {
    # encode
    "encode-none": lambda rt: rt.encode(None),
    "encode-string": lambda rt: rt.encode("image.png"),
    "encode-list-of-str": lambda rt: rt.encode([["a"]]),
    "encode-3d": lambda rt: rt.encode(_imgs(rt)[0]),
    "encode-5d": lambda rt: rt.encode(_imgs(rt)[None]),
    "encode-wrong-size": lambda rt: rt.encode(np.zeros((1, rt.size + 1, rt.size + 1, rt.channels), np.uint8)),
    "encode-2-channels": lambda rt: rt.encode(np.zeros((1, rt.size, rt.size, 2), np.uint8)),
    "encode-channels-first": lambda rt: rt.encode(np.zeros((1, 7, rt.size, rt.size), np.uint8)),
    "encode-empty": lambda rt: rt.encode(_imgs(rt, 0)),
    "encode-nan": lambda rt: rt.encode(_nan_image(rt)),
    "encode-inf": lambda rt: rt.encode(_imgs(rt, 1, np.float32) + np.inf),
    "encode-above-255": lambda rt: rt.encode(_imgs(rt, 1, np.float32) + 300),
    "encode-negative": lambda rt: rt.encode(_imgs(rt, 1, np.int16) - 1),
    "encode-bool": lambda rt: rt.encode(_imgs(rt, 1, bool)),
    "encode-complex": lambda rt: rt.encode(_imgs(rt, 1, np.complex64)),
    "encode-object": lambda rt: rt.encode(np.array([object()])),
    "encode-pre-wrong-shape": lambda rt: rt.encode(_imgs(rt, 1, np.float32), preprocessed=True),
    "encode-pre-nan": lambda rt: rt.encode(
        np.full((1, rt.channels, rt.size, rt.size), np.nan, np.float32), preprocessed=True
    ),
    "encode-pre-empty": lambda rt: rt.encode(np.zeros((0, rt.channels, rt.size, rt.size), np.float32), True),
    # transmit
    "tx-features-1d": lambda rt: rt.transmit(_feats(rt)[0], 10.0, 4),
    "tx-features-wrong-dim": lambda rt: rt.transmit(np.zeros((2, rt.feature_dim + 3), np.float32), 10.0, 4),
    "tx-features-nan": lambda rt: rt.transmit(_feats(rt) + np.nan, 10.0, 4),
    "tx-features-inf": lambda rt: rt.transmit(_feats(rt) - np.inf, 10.0, 4),
    "tx-features-empty": lambda rt: rt.transmit(_feats(rt, 0), 10.0, 4),
    "tx-features-none": lambda rt: rt.transmit(None, 10.0, 4),
    "tx-features-text": lambda rt: rt.transmit("features", 10.0, 4),
    "tx-k-0": lambda rt: rt.transmit(_feats(rt), 10.0, 0),
    "tx-k-negative": lambda rt: rt.transmit(_feats(rt), 10.0, -4),
    "tx-k-above-max": lambda rt: rt.transmit(_feats(rt), 10.0, rt.max_symbols + 1),
    "tx-k-fraction": lambda rt: rt.transmit(_feats(rt), 10.0, 2.5),
    "tx-k-nan": lambda rt: rt.transmit(_feats(rt), 10.0, float("nan")),
    "tx-k-wrong-length": lambda rt: rt.transmit(_feats(rt, 3), 10.0, [4, 4]),
    "tx-k-2d": lambda rt: rt.transmit(_feats(rt), 10.0, [[4, 4]]),
    "tx-k-text": lambda rt: rt.transmit(_feats(rt), 10.0, "4"),
    "tx-k-none": lambda rt: rt.transmit(_feats(rt), 10.0, None),
    "tx-snr-nan": lambda rt: rt.transmit(_feats(rt), float("nan"), 4),
    "tx-snr-inf": lambda rt: rt.transmit(_feats(rt), float("inf"), 4),
    "tx-snr-neg-inf": lambda rt: rt.transmit(_feats(rt), -np.inf, 4),
    "tx-snr-array-nan": lambda rt: rt.transmit(_feats(rt), np.array([1.0, np.nan]), 4),
    "tx-snr-wrong-length": lambda rt: rt.transmit(_feats(rt), [1.0, 2.0, 3.0], 4),
    "tx-snr-text": lambda rt: rt.transmit(_feats(rt), "10 dB", 4),
    "tx-snr-none": lambda rt: rt.transmit(_feats(rt), None, 4),
    "tx-channel-unknown": lambda rt: rt.transmit(_feats(rt), 10.0, 4, channel="wifi"),
    "tx-channel-none": lambda rt: rt.transmit(_feats(rt), 10.0, 4, channel=None),
    "tx-channel-int": lambda rt: rt.transmit(_feats(rt), 10.0, 4, channel=0),
    # receive
    "rx-y-wrong-k": lambda rt: rt.receive(np.zeros((2, rt.max_symbols + 1, 2), np.float32), _mask(rt), 10.0),
    "rx-y-2d": lambda rt: rt.receive(np.zeros((2, rt.max_symbols * 2), np.float32), _mask(rt), 10.0),
    "rx-y-complex-axis-3": lambda rt: rt.receive(np.zeros((2, rt.max_symbols, 3), np.float32), _mask(rt), 10.0),
    "rx-y-nan": lambda rt: rt.receive(_y(rt) + np.nan, _mask(rt), 10.0),
    "rx-y-empty": lambda rt: rt.receive(_y(rt, 0), _mask(rt, 0), 10.0),
    "rx-y-none": lambda rt: rt.receive(None, _mask(rt), 10.0),
    "rx-mask-wrong-batch": lambda rt: rt.receive(_y(rt), _mask(rt, 3), 10.0),
    "rx-mask-half": lambda rt: rt.receive(_y(rt), _mask(rt) * 0.5, 10.0),
    "rx-mask-nan": lambda rt: rt.receive(_y(rt), _mask(rt) * np.nan, 10.0),
    "rx-mask-none": lambda rt: rt.receive(_y(rt), None, 10.0),
    "rx-snr-nan": lambda rt: rt.receive(_y(rt), _mask(rt), float("nan")),
    "rx-snr-inf": lambda rt: rt.receive(_y(rt), _mask(rt), np.inf),
    "rx-channel-unknown": lambda rt: rt.receive(_y(rt), _mask(rt), 10.0, channel="wifi"),
    "rx-csi-not-taken": lambda rt: rt.receive(_y(rt), _mask(rt), 10.0, csi=_y(rt)),
}


def _api_params(calls: dict) -> list:
    return [pytest.param(*(v if isinstance(v, tuple) else (v,)), id=k) for k, v in calls.items()]


@pytest.mark.parametrize("call", _api_params(API_CALLS))
def test_runtime_bad_input(rt, call):
    from rkd_edge.runtime import BundleError

    with pytest.raises(BundleError) as info:
        call(rt)
    assert len(str(info.value).splitlines()) == 1, str(info.value)


def _csi_manifest(b: Path) -> None:
    _manifest(b, lambda m: {**m, "symbols": {**m["symbols"], "csi_input": True}})


OPEN_CASES = {
    "missing-folder": (None, {}),
    "a-file": ("file", {}),
    "precision-fp64": (None, {"precision": "fp64"}),
    "precision-model-unknown": (None, {"precision": {"decoder": "fp32"}}),
    "precision-value-unknown": (None, {"precision": {"encoder": "int4"}}),
    "precision-int": (None, {"precision": 8}),
    "providers-gpu": (None, {"providers": "gpu"}),
    "backend-unknown": (None, {"backend": "magic"}),
    "threads-negative": (None, {"threads": -1}),
    "threads-text": (None, {"threads": "four"}),
    "csi-declared-not-in-graph": (_csi_manifest, {}),
    **{f"damaged-{n}": (e, {}) for n, e in BUNDLE_DAMAGE.items()},
}


@pytest.mark.parametrize(("damage", "kwargs"), _api_params(OPEN_CASES))
def test_runtime_refuses_to_open(tiny_bundle, tmp_path, damage, kwargs):
    from rkd_edge.runtime import BundleError, Runtime

    b = tmp_path / "b"
    if damage == "file":
        b = _write(tmp_path / "bundle.txt", "x")
    elif damage is not None or kwargs:
        shutil.copytree(tiny_bundle, b)
        if damage is not None:
            damage(b)
    with pytest.raises(BundleError) as info:
        Runtime(str(b), **kwargs).close()
    assert len(str(info.value).splitlines()) == 1, str(info.value)


def test_runtime_missing_csi_is_refused(tiny_bundle, tmp_path):
    """A receiver that takes CSI, called without it: one line (the manifest is patched to say so)."""
    from rkd_edge.runtime import BundleError, Runtime

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    with Runtime(str(b)) as r:
        r.uses_csi = True  # what a CSI bundle's manifest sets; its graph is not needed to reach the check
        with pytest.raises(BundleError, match="CSI"):
            r.receive(_y(r), _mask(r), 10.0)


def test_case_count():
    """The issue asks for at least 250 bad inputs across the commands and the runtime."""
    n = len(ALL_CLI) + len(API_CALLS) + len(OPEN_CASES) + 1
    assert n >= 250, n


@pytest.mark.parametrize("command", ["evaluate {bundle} --snr 0 --trials 1", "prune {run} --epochs 0"])
def test_no_force_advice_from_a_command_without_force(command, tiny_run, tiny_bundle, tmp_path, capsys):
    """A command that has no ``--force`` does not advise it when ``--out`` is taken (it once did)."""
    mine = tmp_path / "mine"
    _write(mine / "notes.md", "mine\n")
    args = [*command.format(bundle=tiny_bundle, run=tiny_run).split(), "--out", str(mine)]
    code, _out, err = run_in_process(capsys, args)
    assert_one_line(code, err, "already exists", args)
    assert "--force" not in err
    assert (mine / "notes.md").read_text() == "mine\n" and len(list(mine.iterdir())) == 1
