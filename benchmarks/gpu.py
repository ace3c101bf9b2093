"""Training on one GPU, checked and timed in one go (issue 10); under 8 minutes on an H200-class GPU.

python benchmarks/gpu.py      (on a machine with CUDA; see benchmarks/README.md for a lent machine)

1. The GPU tests (``pytest -m gpu tests/test_gpu.py``): passed / failed.
2. The fashion-mnist preset pipeline on the GPU: wall time, seconds per stage, GPU utilisation (sampled
   every 0.5 s through NVML, or nvidia-smi where pynvml is missing), peak CUDA memory, clean and AWGN 0 dB
   accuracy.
3. The quickstart pipeline on the GPU and, at the same time, on two CPU cores of the same machine
   (pinned to cores the GPU jobs do not use; 2 threads): seconds per stage, for the GPU/CPU ratio.

Writes ``benchmarks/results/gpu-<device>.json`` and ``.md``. Without CUDA it exits 2 with one line and
writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
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
LIMIT_S = {"tests": 240, "quickstart": 180}  # caps on the subprocess parts (the fashion run is in-process)


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
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    return os.environ.get("RKD_EDGE_COMMIT", "unknown")  # a copied tree without .git: say it here


def run_gpu_tests() -> dict:
    """``pytest -m gpu tests/test_gpu.py``: counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", f"--junitxml={xml}", "-x"]
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S["tests"])
            tail = proc.stdout[-3000:]
        except subprocess.TimeoutExpired as exc:
            tail = f"timed out after {LIMIT_S['tests']} s\n{(exc.stdout or b'')[-2000:]!r}"
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


def run_fashion() -> dict:
    """The fashion-mnist preset on the GPU in this process (so that its peak CUDA memory is known)."""
    import torch

    from rkd_edge import progress
    from rkd_edge.config import load_config
    from rkd_edge.pipeline import Pipeline

    out = RUNS / "gpu-fashion-mnist"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config("fashion-mnist")
    cfg.device = "cuda"
    progress.set_quiet(True)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    with UtilSampler() as util:
        Pipeline(cfg, out).run()
    total = time.time() - t0
    rep = json.loads((out / "report.json").read_text())
    return {
        "total_s": round(total, 1),
        "stages_s": rep["timings_s"],
        "gpu_util_mean_pct": util.mean,
        "gpu_util_source": util.source,
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "clean": rep["student"]["accuracy"],
        "awgn_0db": rep["curves"]["awgn"]["0"],
    }


def main() -> None:
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

    device = torch.cuda.get_device_name(0)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    cores = sorted(os.sched_getaffinity(0))
    RUNS.mkdir(exist_ok=True)

    # The 2-core CPU quickstart runs alongside everything else, on two cores the GPU jobs leave alone.
    cpu_cores, gpu_cores = (cores[:2], cores[2:]) if len(cores) >= 6 else (cores, cores)
    cpu_out, gpu_out = RUNS / "gpu-qs-cpu", RUNS / "gpu-qs-cuda"
    for d in (cpu_out, gpu_out):
        shutil.rmtree(d, ignore_errors=True)
    env2 = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
    cpu_proc = subprocess.Popen(
        pipeline_cmd(cpu_out, "cpu"),
        cwd=ROOT,
        env=env2,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, cpu_cores),
    )
    os.sched_setaffinity(0, gpu_cores)
    t_start = time.time()

    # The acceptance numbers first, then the tests (capped: a hang costs its cap, not the budget).
    fashion = run_fashion()
    try:
        gpu_qs = subprocess.run(
            pipeline_cmd(gpu_out, "cuda"), cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S["quickstart"]
        ).returncode
    except subprocess.TimeoutExpired:
        gpu_qs = -1
    tests = run_gpu_tests()
    try:
        cpu_proc.wait(timeout=max(30, LIMIT_S["quickstart"] - (time.time() - t_start) + 240))
    except subprocess.TimeoutExpired:
        cpu_proc.kill()
    quick = {
        "gpu_stages_s": stages(gpu_out),
        "cpu_stages_s": stages(cpu_out),
        "cpu_threads": 2,
        "errors": [p for p, ok in (("gpu", gpu_qs == 0), ("cpu", cpu_proc.returncode == 0)) if not ok],
    }
    g, c = quick["gpu_stages_s"] or {}, quick["cpu_stages_s"] or {}
    quick["gpu_over_cpu"] = {k: round(g[k] / c[k], 3) for k in g if c.get(k)}
    data = {
        "device": device,
        "commit": commit(),
        "tests": {"passed": tests["passed"], "failed": tests["failed"], "skipped": tests["skipped"]},
        "fashion_mnist": fashion,
        "quickstart": quick,
        "wall_s": round(time.time() - t_start, 1),
    }
    rows = [
        ["GPU tests passed / failed", f"{tests['passed']} / {tests['failed']}"],
        ["fashion-mnist total (s)", fashion["total_s"]],
        ["fashion-mnist stages (s)", ", ".join(f"{k} {v}" for k, v in fashion["stages_s"].items())],
        ["GPU utilisation mean (%)", fashion["gpu_util_mean_pct"]],
        ["peak CUDA memory (MiB)", fashion["peak_cuda_mb"]],
        ["clean / AWGN 0 dB", f"{fashion['clean']:.4f} / {fashion['awgn_0db']:.4f}"],
        *[[f"quickstart {k}: GPU / 2-core CPU (s)", f"{g[k]} / {c.get(k)}"] for k in g],
    ]
    print(record(f"gpu-{slug}", data, md_table(["", "value"], rows), COMMAND))


if __name__ == "__main__":
    main()
