"""``rkd-edge bench``: the JSON and table, accuracy equal to ``evaluate BUNDLE``, unavailable back ends as
rows, ``--select`` used by the runtime, and the remote bench against a real sshd on loopback."""

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rkd_edge.bench_schema import warnings_of
from rkd_edge.devices.latency import drift
from rkd_edge.runtime import Runtime
from rkd_edge.runtime.bundle import Bundle
from rkd_edge.runtime.runners import unavailable
from rkd_edge.runtime.runners.device import fingerprint
from tests.conftest import run_cli
from tests.test_devices import ORIN_JP6

# Short timings: these tests check behaviour and schema, never speed.
FAST = ["--seconds", "0.3", "--warmup", "0.05", "--snr-db", "5", "--symbols", "4", "--trials", "2"]


def fast(seconds: float) -> list[str]:
    """:data:`FAST` timing ``seconds`` per row (an option given twice is refused)."""
    return ["--seconds", str(seconds), *FAST[2:]]


LATENCY_KEYS = {"mean", "p50", "p90", "p95", "p99", "max"}


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def local(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "local.json"
    proc = run_cli("bench", str(tiny_bundle), "--precision", "fp32,int8", "--batch", "1,4", *FAST, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_json_has_every_field_for_fp32_and_int8(local, tiny_bundle):
    result, stdout = local
    assert result["schema"] == "rkd-edge/bench@1" and result["bundle_id"] == Bundle.open(tiny_bundle).bundle_id
    rows = result["results"]
    if shutil.which("tegrastats") is None:  # not a Jetson: no power figures, and the result says why
        assert result["power"]["status"].startswith("unavailable here: tegrastats not found")
        assert not any("power" in r for r in rows) and "mJ/call" not in stdout
    keys = {(r["precision"], r["batch"], r["stage"]) for r in rows}
    stages = ("encoder", "tx", "rx", "end_to_end")
    fused = {("fp32", b, "transmitter") for b in (1, 4)}  # the fused graph runs FP32 (INT8: the two models)
    assert keys == {(p, b, s) for p in ("fp32", "int8") for b in (1, 4) for s in stages} | fused
    for r in rows:
        assert r["status"] == "ok" and r["backend"] == "onnxruntime"
        assert set(r["latency_ms"]) == LATENCY_KEYS
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["throughput_per_s"] > 0 and r["iterations"] > 0 and r["timer"] == "host"
        assert 0 <= r["accuracy"] <= 1 and r["size_mb"] > 0
        assert r["memory"]["peak_rss_mb"] > 20 and r["memory"]["torch_imported"] is False
        assert r["providers"] == ["CPUExecutionProvider"]
    by = {(r["precision"], r["batch"], r["stage"]): r for r in rows}
    # end to end is the sum of the files it loads: the fused transmitter and rx at FP32, the three at INT8
    for p, parts in (("fp32", ("transmitter", "rx")), ("int8", ("encoder", "tx", "rx"))):
        total = sum(by[(p, 1, s)]["size_mb"] for s in parts)
        assert abs(by[(p, 1, "end_to_end")]["size_mb"] - total) < 1e-3
    env = result["environment"]
    assert env["cpu"] and env["cpu_count"] >= 1 and env["versions"]["onnxruntime"] and "device" in env
    point = {k: v for k, v in result["accuracy_point"].items() if k != "seed"}
    rt = Runtime(str(tiny_bundle))
    dim = rt.size * rt.size * rt.channels
    assert point == {"channel": "awgn", "mode": "-", "csi": "-", "k_factor": "-", "snr_db": 5.0, "k": 4, "trials": 2,
                     "bandwidth_ratio": round(4 / dim, 6), "source_dim": dim}  # fmt: skip
    assert result["bundle"] == tiny_bundle.name  # a name, no absolute path
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    for prec in ("fp32", "int8"):  # which file produced each number: the CPU form of INT8 where it was kept
        files = result["models"][f"onnxruntime/{prec}"]
        assert set(files) >= {"encoder", "tx", "rx"} and all((tiny_bundle / f).is_file() for f in files.values())
        if prec == "int8" and "onnxruntime_cpu" in m["models"]["encoder"]["int8"]:
            assert files["encoder"] == m["models"]["encoder"]["int8"]["onnxruntime_cpu"]["file"]
    assert "end_to_end" in stdout and "p50 ms" in stdout and "ok" in stdout
    # 0.3 s per row: the table says the protocol's 10 s or 1,000 calls were met only where they were
    fewest = min(r["iterations"] for r in rows if r["status"] == "ok")
    assert result["protocol"] == {"seconds_per_row": 0.3, "fewest_calls": fewest, "met": fewest >= 1000}
    assert ("protocol (10 s or 1,000 calls per row) met" in stdout) == (fewest >= 1000)


def test_machine_reference_is_timed_beside_the_variants(local):
    """The reference kernel ran in every round; each row's p50 is also given in its units."""
    result, stdout = local
    ref = result["machine_reference"]
    rounds = result["settings"]["rounds"]
    assert len(ref["round_p50_ms"]) == rounds and ref["p50_ms"] > 0
    r = ref["round_p50_ms"]
    assert ref["drift"] == pytest.approx(drift(r), abs=1e-3)
    assert ref["steady"] == (ref["drift"] <= 0.10)
    assert ref["cpu_steal"] is None or 0 <= ref["cpu_steal"] <= 1
    for row in result["results"]:  # the median over rounds of p50 / the kernel's p50 next to it: near the ratio
        assert 0.25 < row["p50_per_reference"] / (row["latency_ms"]["p50"] / ref["p50_ms"]) < 4
    assert "machine reference kernel p50" in stdout


def test_more_threads_than_usable_cpus_is_a_warning(local):
    result, stdout = local
    env = result["environment"]
    assert env["cpus_usable"] == len(os.sched_getaffinity(0)) and "warning: --threads" not in stdout
    over = {**result, "environment": {**env, "threads_requested": env["cpus_usable"] + 1}}
    assert any(f"warning: --threads {env['cpus_usable'] + 1} is more than" in w for w in warnings_of(over))
    at = {**result, "environment": {**env, "threads_requested": env["cpus_usable"]}}
    assert not any("warning: --threads" in w for w in warnings_of(at))


def test_accuracy_column_equals_evaluate_bundle(local, tiny_bundle, tmp_path):
    result, _ = local
    proc = run_cli(
        "-q", "evaluate", str(tiny_bundle), "--channel", "awgn", "--snr", "5", "--symbols", "4", "--trials", "2",
        "--out", str(tmp_path / "ev"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["rows"]
    for prec in ("fp32", "int8"):
        ev = [r for r in rows if r["method"] == f"onnx-{prec}" and r["channel"] == "awgn" and r["k"] == 4]
        assert len(ev) == 1 and ev[0]["snr_db"] == 5.0
        bench_acc = {r["accuracy"] for r in result["results"] if r["precision"] == prec}
        assert bench_acc == {ev[0]["accuracy"]}, (prec, bench_acc, ev[0])
        assert result["accuracy"][f"onnxruntime/{prec}"]["n"] == ev[0]["n"]


def test_on_a_jetson_bench_measures_board_power(tiny_bundle, tmp_path):
    """``tegrastats`` on PATH replays a published Orin line (VDD_IN 17946 mW) at the asked --interval: the
    power section, the idle baseline and each timed row's energy follow from that power and the timing."""
    fake = tmp_path / "bin" / "tegrastats"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\nimport sys, time\nms = int(sys.argv[sys.argv.index('--interval') + 1])\n"
        f"while True:\n    print({ORIN_JP6!r}, flush=True)\n    time.sleep(ms / 1e3)\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "p.json"
    proc = run_cli(
        "bench", str(tiny_bundle), "--precision", "fp32", "--batch", "1", "--no-memory", *fast(2),
        "--json", str(out), env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    power = result["power"]
    assert power["status"] == "ok" and power["idle_w"] == pytest.approx(17.946) and power["peak_ram_mb"] == 6982
    rows = [r for r in result["results"] if r["status"] == "ok"]
    assert len(rows) >= 4 and all("power" in r for r in rows)
    for r in rows:  # constant power: W x ms per call = mJ per call (the timed slots hold the calls back to back)
        assert r["power"]["mean_w"] == pytest.approx(17.946, abs=1e-3)
        assert r["power"]["energy_mj_per_call"] == pytest.approx(17.946 * r["latency_ms"]["mean"], rel=0.25)
        assert r["power"]["net_energy_mj_per_call"] is None or r["power"]["net_energy_mj_per_call"] < 1e-3
    assert "mJ/call" in proc.stdout and "board power from tegrastats" in proc.stdout
    assert "power" not in proc.stderr  # 200 ms slots: four samples or more each


def test_unavailable_backends_are_rows_and_pytorch_is_the_reference(tiny_bundle, tiny_run, tmp_path):
    out = tmp_path / "r.json"
    backends = "onnxruntime,onnxruntime-cuda,tensorrt,pytorch"
    proc = run_cli(
        "bench", str(tiny_bundle), "--backend", backends, "--precision", "fp32,int8", "--batch", "1",
        "--run", str(tiny_run), "--no-memory", *FAST, "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    status = {(r["backend"], r["precision"]): r["status"] for r in rows}
    assert status[("onnxruntime", "fp32")] == "ok" and status[("pytorch", "fp32")] == "ok"
    assert status[("pytorch", "int8")] == "unavailable here: pytorch runs fp32, not int8"
    for backend in ("onnxruntime-cuda", "tensorrt"):
        why = unavailable(backend)
        if why:
            assert status[(backend, "fp32")] == f"unavailable here: {why}"
            assert f"unavailable here: {why}"[:40] in proc.stdout
    acc = {(r["backend"], r["precision"]): r["accuracy"] for r in rows if r["stage"] == "end_to_end"}
    n = json.loads(out.read_text())["accuracy"]["pytorch/fp32"]["n"]
    assert abs(acc[("pytorch", "fp32")] - acc[("onnxruntime", "fp32")]) <= 2 / n


def test_too_few_timed_calls_are_said_and_never_selected_from(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    out = tmp_path / "s.json"
    proc = run_cli("bench", str(b), "--select", "--batch", "1", "--no-memory", "--seconds", "0.001", "--warmup", "0",
                   "--snr-db", "5", "--symbols", "4", "--trials", "1", "--json", str(out))  # fmt: skip
    # asked to select and could not: exit 2 in one last line; the table on stdout, its warning on stderr
    assert proc.returncode == 2 and "no selection for onnxruntime" in proc.stderr.splitlines()[-1]
    assert "warning: as few as" in proc.stderr and "warning" not in proc.stdout and "p50 ms" in proc.stdout
    sel = json.loads(out.read_text())["selection"]["onnxruntime"]
    assert not sel["written"] and "timed calls" in sel["reason"]
    assert "selection" not in json.loads((b / "manifest.json").read_text())


def test_select_on_a_read_only_bundle_is_refused_before_timing(tiny_bundle, tmp_path):
    """It failed only when it wrote its choice, after every row was timed, and the table was lost."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(tiny_bundle), str(ro)], capture_output=True).returncode:
        pytest.skip("no bind mounts here (needs root with CAP_SYS_ADMIN)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        proc = run_cli("bench", str(ro), "--select", "--batch", "1", *FAST)
        json_there = run_cli("bench", str(ro), "--json", str(ro / "r.json"), "--batch", "1", *FAST)  # the same
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    for p in (proc, json_there):
        assert p.returncode == 2 and "is not writable here" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "p50" not in p.stdout  # before any timing


def test_nothing_measurable_here_is_one_line(tiny_bundle):
    if unavailable("tensorrt") is None:
        pytest.skip("TensorRT runs here")
    line = _one_error_line(run_cli("bench", str(tiny_bundle), "--backend", "tensorrt", "--no-memory", *FAST))
    assert "nothing could be measured" in line and "unavailable here" in line


def test_select_writes_the_device_choice_and_the_runtime_uses_it(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    before = Bundle.open(b).bundle_id
    out = tmp_path / "s.json"
    # 1.5 s: the selection needs 100 timed calls per row, which 0.3 s misses on a loaded machine
    proc = run_cli("bench", str(b), "--select", "--tolerance", "0.05", "--batch", "1", "--no-memory", *fast(1.5),
                   "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sel = json.loads(out.read_text())["selection"]["onnxruntime"]
    fp = fingerprint("onnxruntime")
    assert sel["written"] and sel["fingerprint"] == fp
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["selection"] == {fp: sel["choice"]}
    assert Runtime(str(b)).precisions == sel["choice"]
    assert Bundle.open(b).bundle_id == before
    for model, prec in sel["choice"].items():  # a precision other than FP32 only where it measured a win
        ev = sel["evidence"][model]
        if prec != "fp32":
            assert ev[prec]["p50_ratio"] <= 0.95 and ev[prec]["accuracy"] >= sel["reference_accuracy"] - 0.05
        else:
            assert all(e["p50_ratio"] > 0.95 or e["accuracy"] < sel["reference_accuracy"] - 0.05
                       for p, e in ev.items() if p != "fp32")  # fmt: skip
    assert sel["accuracy"] >= sel["reference_accuracy"] - 0.05
    assert "selected for onnxruntime" in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--batch", "0"], "--batch"),
        (["--batch", "1,x"], "batch"),
        (["--symbols", "999"], "--symbols"),
        (["--backend", "nope"], "unknown back end"),
        (["--snr-db", "nan"], "--snr-db"),
        (["--channel", "satellite"], "--channel"),
        (["--tolerance", "2"], "--tolerance"),
        (["--host", "-oProxyCommand=x"], "--host"),
        (["--host", "@-oProxyCommand=touch${IFS}pwned"], "--host"),
        (["--host", "me@-oProxyCommand=x"], "--host"),
    ],
)
def test_bad_input_is_one_line(tiny_bundle, args, needle):
    assert needle in _one_error_line(run_cli("bench", str(tiny_bundle), *args))


def test_missing_bundle_is_one_line(tmp_path):
    assert "manifest.json" in _one_error_line(run_cli("bench", str(tmp_path)))


# -- remote, against a real sshd on loopback -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    exe = Path("/usr/sbin/sshd")
    if not exe.is_file() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server / openssh-client are not installed (./install.sh --dev installs them as root)")
    d = tmp_path_factory.mktemp("sshd")
    host_key, key, stranger = _keygen(d / "host_key"), _keygen(d / "client_key"), _keygen(d / "stranger_key")
    (d / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = _free_port()
    bindir = Path(sys.executable).parent  # where this rkd-edge is installed: the "device's own" rkd-edge
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nLogLevel ERROR\n"
        f"SetEnv PATH={bindir}:/usr/local/bin:/usr/bin:/bin\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    check = subprocess.run([str(exe), "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([str(exe), "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.1)
    user = getpass.getuser()
    common = ["--host", f"{user}@127.0.0.1", "--port", str(port), "--ssh-option", f"UserKnownHostsFile={d}/known"]
    yield {"args": common, "key": key, "stranger": stranger, "port": port, "dir": d}
    proc.terminate()
    proc.wait(timeout=10)


def test_remote_bench_over_loopback_sshd_matches_the_local_schema(sshd, local, tiny_bundle, tmp_path):
    result_local, _ = local
    out = tmp_path / "remote.json"
    proc = run_cli(
        "bench", str(tiny_bundle), *sshd["args"], "--identity", str(sshd["key"]), "--precision", "fp32,int8",
        "--batch", "1,4", *FAST, "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert set(remote) - {"remote"} == set(result_local)
    assert remote["remote"]["host"].endswith(f"127.0.0.1:{sshd['port']}")
    assert set(remote["remote"]) == {"host", "rkd_edge"}  # no path of the device's temporary copy
    work = re.search(r"bench (/tmp/rkd-edge-bench\.\w+)/", proc.stderr)  # the command it ran there, logged
    assert work and not Path(work[1]).exists()  # the remote folder was cleaned up
    assert remote["bundle_id"] == result_local["bundle_id"]

    def index(res):
        return {(r["backend"], r["precision"], r["batch"], r["stage"]): r for r in res["results"]}

    loc, rem = index(result_local), index(remote)
    assert loc.keys() == rem.keys()
    for key, r in rem.items():
        assert set(r) == set(loc[key]) and set(r["latency_ms"]) == LATENCY_KEYS and r["status"] == "ok"
        assert r["accuracy"] == loc[key]["accuracy"]  # same code, same seed, same noise
    assert "end_to_end" in proc.stdout


def test_remote_failures_are_one_line(sshd, tiny_bundle, tmp_path):
    base = [str(tiny_bundle), *FAST, "--batch", "1", "--no-memory"]
    line = _one_error_line(run_cli("bench", *base, *sshd["args"], "--identity", str(sshd["stranger"])))
    assert "authentication" in line and "127.0.0.1" in line
    closed = ["--host", "root@127.0.0.1", "--port", str(_free_port())]
    assert "cannot connect" in _one_error_line(run_cli("bench", *base, *closed, "--identity", str(sshd["key"])))
    old = tmp_path / "old-rkd-edge"  # an older rkd-edge installed on the device
    old.write_text('#!/bin/sh\necho \'{"rkd_edge": "0.0.9", "schema": "rkd-edge/bench@0"}\'\n')
    old.chmod(0o755)
    args = [*sshd["args"], "--identity", str(sshd["key"])]
    line = _one_error_line(run_cli("bench", *base, *args, "--remote-rkd-edge", str(old)))
    assert "version mismatch" in line and "0.0.9" in line
    line = _one_error_line(run_cli("bench", *base, *args, "--remote-rkd-edge", "/nonexistent/rkd-edge"))
    assert "not found" in line
    # ssh's own refusals were read as 'the rkd-edge there is older than 0.1.0'; debug output naming a missing
    # known_hosts file as 'rkd-edge not found'
    line = _one_error_line(run_cli("bench", *base, *args, "--ssh-option", "ConnectTimeout=abc"))
    assert "failed on" in line and "exit 255" in line and "older than" not in line, line
    host = ["--host", "root@127.0.0.1;touch${IFS}x", *args[2:]]
    assert "no user or host name has" in _one_error_line(run_cli("bench", *base, *host))
    proc = run_cli("-q", "bench", *base, *args, "--ssh-option", "LogLevel=DEBUG1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_bundle, damaged)
    model = damaged / "models" / "rx.onnx"
    data = bytearray(model.read_bytes())
    data[200] ^= 1
    model.write_bytes(bytes(data))
    line = _one_error_line(run_cli("bench", str(damaged), *FAST, "--batch", "1", "--no-memory", *args))
    assert "does not match its hashes there" in line


def _fake_remote(tmp_path: Path, body: str) -> Path:
    """A device-side rkd-edge that speaks this schema and version, then runs ``body`` for the bench
    (``$5`` is the --json path the caller reads back)."""
    from rkd_edge import __version__
    from rkd_edge.bench_schema import SCHEMA

    exe = tmp_path / "fake-rkd-edge"
    info = json.dumps({"rkd_edge": __version__, "schema": SCHEMA})
    exe.write_text(f"#!/bin/sh\nif [ \"$2\" = --schema ]; then echo '{info}'; exit 0; fi\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_a_devices_bench_json_is_checked_before_it_is_used(sshd, local, tiny_bundle, tmp_path):
    result_local, _ = local
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = (copy / "manifest.json").read_bytes()
    args = [str(copy), *FAST, "--batch", "1", "--no-memory", *sshd["args"], "--identity", str(sshd["key"])]
    args = ["-q", "bench", *args]  # -q: the error is the only line
    choice = {"encoder": "fp32", "tx": "fp32", "rx": "fp32"}
    written = {"written": True, "fingerprint": "0123456789abcdef", "choice": choice}
    written |= {"accuracy": 0.5, "reference_accuracy": 0.5}
    cases = {
        "no-results": {"schema": result_local["schema"]},
        "results-not-a-list": {**result_local, "results": 7},
        "row-without-stage": {**result_local, "results": [{"backend": "onnxruntime"}]},
        "selection-a-list": {**result_local, "selection": []},
        "selection-bad-choice": {**result_local, "selection": {"onnxruntime": {**written, "choice": {"rx": "fp64"}}}},
        "selection-bad-fingerprint": {**result_local, "selection": {"onnxruntime": {**written, "fingerprint": "../x"}}},
        "selection-nan-accuracy": {**result_local, "selection": {"onnxruntime": {**written, "accuracy": float("nan")}}},
        "selection-unknown-backend": {**result_local, "selection": {"\x1b[31mevil": written}},
        "row-400-digit-size": {**result_local, "results": [{**result_local["results"][0], "size_mb": 10**400}]},
        "row-escape-in-backend": {
            **result_local,
            "results": [{**result_local["results"][0], "backend": "x\n\x1b]0;t"}],
        },
        "row-negative-batch": {**result_local, "results": [{**result_local["results"][0], "batch": -5}]},
        "cpu-escape": {**result_local, "environment": {**result_local["environment"], "cpu": "\x1b[2J"}},
        "power-negative-idle": {
            **result_local,
            "power": {"status": "ok", "source": "x", "interval_ms": 5, "idle_w": -1},
        },
        "row-power-negative": {**result_local, "results": [{**result_local["results"][0], "power": {"mean_w": -1}}]},
        "settings-400-digit-seconds": {**result_local, "settings": {**result_local["settings"], "seconds": 10**400}},
        "row-huge-iterations": {**result_local, "results": [{**result_local["results"][0], "iterations": 10**400}]},
        "memory-error-escape": {
            **result_local,
            "results": [{**result_local["results"][0], "memory": {"error": "boom\x1b]0;PWNED\x07"}}],
        },
    }
    for name, payload in cases.items():
        (tmp_path / name).write_text(json.dumps(payload))
        exe = _fake_remote(tmp_path, f'cp {tmp_path / name} "$5"')
        proc = run_cli(*args, "--remote-rkd-edge", str(exe))
        assert proc.returncode == 2, name
        line = _one_error_line(proc)
        assert "malformed" in line and "127.0.0.1" in line, (name, line)
    # the device's bench exiting 255 is its own failure, not ssh's: its message is passed on as such
    exe = _fake_remote(tmp_path, "echo 'CUDA driver too old for this engine' >&2; exit 255")
    line = _one_error_line(run_cli(*args, "--remote-rkd-edge", str(exe)))
    assert "the bench on " in line and "127.0.0.1" in line and "exit 255" in line, line
    assert "CUDA driver too old" in line, line
    # a well-formed selection the device made is recorded here only when --select asked for one
    (tmp_path / "deep").write_text("[" * 100_000 + "]" * 100_000)  # beyond the JSON parser's recursion
    line = _one_error_line(run_cli(*args, "--remote-rkd-edge", str(_fake_remote(tmp_path, f'cp {tmp_path}/deep "$5"'))))
    assert "no readable JSON" in line
    other = {**result_local, "bundle_id": "deadbeef", "selection": {"onnxruntime": written}}
    (tmp_path / "other").write_text(json.dumps(other))
    line = _one_error_line(
        run_cli(*args, "--select", "--remote-rkd-edge", str(_fake_remote(tmp_path, f'cp {tmp_path}/other "$5"')))
    )
    assert "another bundle" in line and (copy / "manifest.json").read_bytes() == manifest
    # what the device answers must be what was asked (--batch 1), and its selection must agree with its rows
    batch1 = {**result_local, "results": [r for r in result_local["results"] if r["batch"] == 1]}
    fp32 = result_local["accuracy"]["onnxruntime/fp32"]["accuracy"]
    fingerprint = result_local["fingerprints"]["onnxruntime"]["fingerprint"]
    written = {**written, "fingerprint": fingerprint, "accuracy": fp32, "reference_accuracy": fp32}
    row = batch1["results"][0]
    unasked = {
        "rows-of-another-batch": {**result_local, "selection": {"onnxruntime": written}},
        "another-point": {**batch1, "accuracy_point": {**batch1["accuracy_point"], "snr_db": 30.0}},
        "selection-of-another-device": {
            **batch1,
            "selection": {"onnxruntime": {**written, "fingerprint": "0123456789abcdef"}},
        },
        "selection-claims-another-accuracy": {**batch1, "selection": {"onnxruntime": {**written, "accuracy": 0.99}}},
    }
    lying = {
        "percentiles-out-of-order": {**row, "latency_ms": {**row["latency_ms"], "p50": 50.0, "max": 0.5}},
        "throughput-not-batch-over-mean": {**row, "throughput_per_s": 1e11},
    }
    for name, payload in [*unasked.items(), *((n, {**batch1, "results": [r]}) for n, r in lying.items())]:
        (tmp_path / name).write_text(json.dumps(payload))
        exe = _fake_remote(tmp_path, f'cp {tmp_path / name} "$5"')
        line = _one_error_line(run_cli(*args, "--select", "--remote-rkd-edge", str(exe)))
        assert ("does not answer" if name in unasked else "malformed") in line, (name, line)
    assert (copy / "manifest.json").read_bytes() == manifest
    (tmp_path / "selected").write_text(json.dumps({**batch1, "selection": {"onnxruntime": written}}))
    exe = _fake_remote(tmp_path, f'cp {tmp_path / "selected"} "$5"')
    proc = run_cli(*args, "--remote-rkd-edge", str(exe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (copy / "manifest.json").read_bytes() == manifest
    assert "selected for" not in proc.stdout  # not asked for here: not made here
    head = proc.stdout.splitlines()[0]  # the bundle as named here (by its name: no absolute path)
    assert head.startswith(f"bundle {copy.name} (") and str(tmp_path) not in head
    assert "on " in proc.stdout.splitlines()[0] and "127.0.0.1" in proc.stdout.splitlines()[0]
    proc = run_cli(*args, "--select", "--remote-rkd-edge", str(exe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((copy / "manifest.json").read_text())["selection"] == {fingerprint: choice}


def _ctrl_c_while_the_device_runs(sshd, bundle: Path, exe: Path, pidfile: Path) -> str:
    """Bench ``bundle`` with the device-side ``exe`` (it writes its pid to ``pidfile``, then hangs), send
    SIGINT here as Ctrl-C does once it runs, and check the device process ends too. Returns stderr here."""
    args = [str(bundle), *FAST, "--batch", "1", "--no-memory", *sshd["args"], "--identity", str(sshd["key"])]
    cmd = [sys.executable, "-c", "from rkd_edge.cli import main; main()", "bench", *args, "--remote-rkd-edge", str(exe)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    remote_pid = int(pidfile.read_text())
    os.kill(proc.pid, 2)  # SIGINT
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("interrupted:"), err
    deadline = time.time() + 20
    while Path(f"/proc/{remote_pid}").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{remote_pid}").exists(), f"{exe.name} still runs on the device after Ctrl-C here"
    return err


def test_a_hung_device_is_stopped_there_too(sshd, tiny_bundle, tmp_path):
    pidfile = tmp_path / "remote.pid"
    exe = tmp_path / "hangs"  # hangs at the version check, before any bench
    exe.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 300\n")
    exe.chmod(0o755)
    _ctrl_c_while_the_device_runs(sshd, tiny_bundle, exe, pidfile)


def test_ctrl_c_here_stops_the_bench_on_the_device(sshd, tiny_bundle, tmp_path):
    pidfile = tmp_path / "remote.pid"
    exe = _fake_remote(tmp_path, f"echo $$ > {pidfile}\nexec sleep 300")
    _ctrl_c_while_the_device_runs(sshd, tiny_bundle, exe, pidfile)
