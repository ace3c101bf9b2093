"""Training on one GPU, checked and timed in one go (issue 10 asks under 8 minutes on one H200-class GPU;
the first run took longer: ``results/gpu-nvidia-h200-partial.md``).

python benchmarks/gpu.py      (on a machine with CUDA; see benchmarks/README.md for a lent machine)

1. The GPU tests (``pytest -m gpu tests/test_gpu.py``): passed / failed.
2. The fashion-mnist preset pipeline on the GPU: wall time, seconds per stage, GPU utilisation (sampled
   every 0.5 s through NVML, or nvidia-smi where pynvml is missing), peak CUDA memory, clean and AWGN 0 dB
   accuracy; then each ``--variants`` run of it.
3. The quickstart pipeline on the GPU and, from the start, on two CPU cores of the same machine
   (pinned to cores the GPU jobs do not use; 2 threads): seconds per stage, for the GPU/CPU ratio.

Writes ``benchmarks/results/gpu-<device>.json`` and ``.md``. Without CUDA it exits 2 with one line and
writes nothing.

Options: ``--logs DIR`` keeps the pytest output, the quickstart logs, each fashion-mnist run's ``run.log``
and a ``partial.json`` updated after every part (so that a run cut short still says what it measured);
``--variants graph,bf16`` also runs the preset with every training step replayed from a CUDA graph
(``cuda_graph``), or under bf16 autocast (accuracy effect, speed), last, each only while the whole script
is under ``--budget-s``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
COMMAND = "python benchmarks/gpu.py"
LIMIT_S = {"tests": 300, "quickstart": 240}  # caps on the subprocess parts (the fashion run is in-process)


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


class UtilSampler:
    """GPU utilisation (%) of device 0 every ``period`` seconds in a background thread: NVML, else
    ``nvidia-smi``. ``mean`` is None when neither is available."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.samples, self.source = period, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "nvml"
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no pynvml or no NVML: fall back to nvidia-smi
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
            return lambda: float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.split()[0])
        return None

    def _run(self) -> None:
        read = self._reader()
        while read is not None and not self._stop.is_set():
            with contextlib.suppress(Exception):  # a missed sample is not a failure
                self.samples.append(read())
            self._stop.wait(self.period)

    def __enter__(self) -> UtilSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def commit() -> str:
    if os.environ.get("RKD_EDGE_COMMIT"):  # a copied tree: its .git (if any) may be stale
        return os.environ["RKD_EDGE_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    return "unknown"


def run_gpu_tests(logs: Path | None = None) -> dict:
    """``pytest -m gpu tests/test_gpu.py``: counts from its JUnit XML (the output kept in ``logs``)."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", f"--junitxml={xml}", "-rfE",
               "--durations=20", "-p", "no:cacheprovider"]  # fmt: skip
        t0 = time.time()
        # Its own process group: at the cap the rkd-edge processes the tests started stop with it, rather
        # than train on beside the timed runs.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            tail, _ = proc.communicate(timeout=LIMIT_S["tests"])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            tail = f"timed out after {LIMIT_S['tests']} s\n{(out or '')[-20000:]}"
        if logs is not None:
            (logs / "tests.log").write_text(tail)
        tail = tail[-3000:]
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        if xml.is_file():
            suite = ET.parse(xml).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            tests = int(suite.get("tests", 0))
            failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            counts = {"passed": tests - failed - skipped, "failed": failed, "skipped": skipped}
        else:
            counts["failed"] = 1  # pytest did not finish: count the run as a failure
        print(tail, file=sys.stderr)
        return {**counts, "seconds": round(time.time() - t0, 1)}


def pipeline_cmd(out: Path, device: str, *args: str) -> list[str]:
    return [sys.executable, "-c", "from rkd_edge.cli import main; main()", "-q", "pipeline", "--out", str(out),
            "--device", device, *args]  # fmt: skip


def stages(run: Path) -> dict | None:
    rep = run / "report.json"
    return json.loads(rep.read_text())["timings_s"] if rep.is_file() else None


VARIANTS = {"graph": {"cuda_graph": True}, "bf16": {"amp": "bf16"}}  # set in the teacher and every stage


def run_fashion(name: str = "gpu-fashion-mnist", variant: str | None = None, logs: Path | None = None) -> dict:
    """The fashion-mnist preset on the GPU in this process (so that its peak CUDA memory is known), as it
    is or with a :data:`VARIANTS` entry set in the teacher and every training stage."""
    import torch

    from rkd_edge import progress
    from rkd_edge.config import load_config
    from rkd_edge.pipeline import Pipeline

    out = RUNS / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config("fashion-mnist")
    cfg.device = "cuda"
    for key, value in VARIANTS.get(variant, {}).items():
        for section in (cfg.teacher, cfg.search, cfg.stage1, cfg.stage2):
            if hasattr(section, key):
                setattr(section, key, value)
    progress.set_quiet(True)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    try:
        with UtilSampler() as util:
            Pipeline(cfg, out).run()
    finally:
        if logs is not None and (out / "run.log").is_file():
            shutil.copy(out / "run.log", logs / f"{name}.log")
    total = time.time() - t0
    rep = json.loads((out / "report.json").read_text())
    epochs = {}  # seconds of each epoch per stage: where the time goes
    for f in sorted((out / "stages").glob("*.json")):
        hist = json.loads(f.read_text()).get("history") or []
        epochs[f.stem] = [h["seconds"] for h in hist if isinstance(h, dict) and "seconds" in h]
    return {
        "variant": variant,
        "total_s": round(total, 1),
        "stages_s": rep["timings_s"],
        "epoch_s": epochs,
        "gpu_util_mean_pct": util.mean,
        "gpu_util_source": util.source,
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "clean": rep["student"]["accuracy"],
        "awgn_0db": rep["curves"]["awgn"]["0"],
    }


def guarded(part: str, fn, *args, **kwargs) -> dict:
    """Run one part; a failure is recorded (one line and the traceback on stderr), not fatal."""
    import traceback

    t0 = time.time()
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the other parts still run and the failure is in the record
        print(f"[gpu.py] part {part} failed:", file=sys.stderr)
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, help="keep logs and partial.json here")
    ap.add_argument("--variants", default="", help="also run the preset as: graph, bf16 (comma-separated)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start a variant's run only under this")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if any(v not in VARIANTS for v in variants):
        fail(f"unknown variant in {args.variants!r}; use {', '.join(VARIANTS)}")
    try:
        import torch
    except ImportError:
        fail("benchmarks/gpu.py needs PyTorch with CUDA; install it, then run on a machine with a GPU")
    if not torch.cuda.is_available():
        fail(
            "benchmarks/gpu.py needs a CUDA GPU and none is visible here; run it on a GPU machine "
            "(see benchmarks/README.md)"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import md_table, record

    from rkd_edge.io import write_json

    logs = args.logs
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    cores = sorted(os.sched_getaffinity(0))
    RUNS.mkdir(exist_ok=True)
    data: dict = {"device": device, "commit": commit(), "torch": torch.__version__}

    def part_done(key: str, value) -> None:
        data[key] = value
        print(f"[gpu.py {time.time() - t_start:.0f} s] {key}: {json.dumps(value)[:600]}", file=sys.stderr)
        if logs is not None:
            write_json(logs / "partial.json", data)

    # The 2-core CPU quickstart runs alongside everything else, on two cores the GPU jobs leave alone.
    cpu_cores, gpu_cores = (cores[:2], cores[2:]) if len(cores) >= 6 else (cores, cores)
    cpu_out, gpu_out = RUNS / "gpu-qs-cpu", RUNS / "gpu-qs-cuda"
    for d in (cpu_out, gpu_out):
        shutil.rmtree(d, ignore_errors=True)
    env2 = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
    cpu_log = open(logs / "quickstart-cpu.log", "w") if logs is not None else subprocess.DEVNULL  # noqa: SIM115
    cpu_proc = subprocess.Popen(
        pipeline_cmd(cpu_out, "cpu"), cwd=ROOT, env=env2, stdout=subprocess.DEVNULL, stderr=cpu_log
    )
    os.sched_setaffinity(cpu_proc.pid, cpu_cores)  # not preexec_fn: this process may already hold threads
    os.sched_setaffinity(0, gpu_cores)
    # torch sized its CPU thread pool for every core when it was imported: more threads than the cores
    # left would make each small host op (the evaluation's channel) wait for a descheduled thread.
    torch.set_num_threads(len(gpu_cores))
    t_start = time.time()

    # The tests first (capped: a hang costs its cap, not the budget), then the acceptance numbers.
    tests = run_gpu_tests(logs)
    part_done("tests", tests)
    fashion = guarded("fashion", run_fashion, logs=logs)
    part_done("fashion_mnist", fashion)
    for v in variants:
        if time.time() - t_start < args.budget_s:
            part_done(f"fashion_mnist_{v}", guarded(v, run_fashion, f"gpu-fashion-mnist-{v}", v, logs))
        else:
            part_done(f"fashion_mnist_{v}", {"skipped": f"started after --budget-s {args.budget_s:g} s"})
    try:
        proc = subprocess.run(
            pipeline_cmd(gpu_out, "cuda"), cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S["quickstart"]
        )
        gpu_qs = proc.returncode
        if gpu_qs != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
    except subprocess.TimeoutExpired:
        gpu_qs = -1
    part_done("quickstart_gpu_s", stages(gpu_out))
    try:
        cpu_proc.wait(timeout=max(30, LIMIT_S["quickstart"] - (time.time() - t_start) + 240))
    except subprocess.TimeoutExpired:
        cpu_proc.kill()
        cpu_proc.wait()
    if logs is not None:
        cpu_log.close()
    quick = {
        "gpu_stages_s": stages(gpu_out),
        "cpu_stages_s": stages(cpu_out),
        "cpu_threads": 2,
        "errors": [p for p, ok in (("gpu", gpu_qs == 0), ("cpu", cpu_proc.returncode == 0)) if not ok],
        # Stage start times, also of a run cut short by its cap.
        "run_logs": {
            dev: (d / "run.log").read_text().splitlines() if (d / "run.log").is_file() else None
            for dev, d in (("gpu", gpu_out), ("cpu", cpu_out))
        },
    }
    g, c = quick["gpu_stages_s"] or {}, quick["cpu_stages_s"] or {}
    quick["gpu_over_cpu"] = {k: round(g[k] / c[k], 3) for k in g if c.get(k)}
    part_done("quickstart", quick)
    data["tests"] = {k: tests[k] for k in ("passed", "failed", "skipped")}
    data["wall_s"] = round(time.time() - t_start, 1)
    rows = [["GPU tests passed / failed", f"{tests['passed']} / {tests['failed']}"]]
    for key in ("fashion_mnist", *(f"fashion_mnist_{v}" for v in variants)):
        f = data.get(key)
        if not f:
            continue
        if "error" in f or "skipped" in f:
            rows.append([key, f.get("error") or f["skipped"]])
            continue
        rows += [
            [f"{key} total (s)", f["total_s"]],
            [f"{key} stages (s)", ", ".join(f"{k} {v}" for k, v in f["stages_s"].items())],
            [f"{key} GPU utilisation mean (%)", f["gpu_util_mean_pct"]],
            [f"{key} peak CUDA memory (MiB)", f["peak_cuda_mb"]],
            [f"{key} clean / AWGN 0 dB", f"{f['clean']:.4f} / {f['awgn_0db']:.4f}"],
        ]
    rows += [[f"quickstart {k}: GPU / 2-core CPU (s)", f"{g[k]} / {c.get(k)}"] for k in g]
    print(record(f"gpu-{slug}", data, md_table(["", "value"], rows), COMMAND))


if __name__ == "__main__":
    main()
