"""``rkd-edge bench``: latency, throughput, accuracy, size and memory of a bundle, per back end, precision,
batch and stage, measured where it will run (DESIGN.md section 6).

Timing is :mod:`rkd_edge.devices.latency` (the one protocol): every variant of one call is measured
interleaved, round by round, so machine noise hits all alike. Stages:

- ``encoder``, ``tx``, ``rx``: one runner call on prepared inputs (the runner's own timer: CUDA events
  where it owns a stream, the host clock otherwise);
- ``transmitter``: the fused encoder + tx graph, one call (FP32 rows of bundles that have it);
- ``end_to_end``: what a deployment does per batch through :class:`~rkd_edge.runtime.Runtime`: uint8
  images -> preprocess -> encoder + tx (:meth:`~rkd_edge.runtime.Runtime.send`: the fused graph where the
  runtime runs it) -> rx (the channel between tx and rx is the air, not device compute, so it is not timed).

Accuracy is the SAME loop as ``rkd-edge evaluate BUNDLE`` (:func:`rkd_edge.export.evaluate.evaluate_runtime`
at one Grid point: channel, SNR, k, trials, the bundle's seed), so a fast but broken precision shows as
broken and the column equals ``evaluate`` at that point. Memory is the peak RSS (VmHWM) of a fresh process
that loads the variant and runs it end to end, plus CUDA figures where a GPU back end is used and the
``/proc/meminfo`` deltas on Jetson (unified memory). Power, on a Jetson (where ``tegrastats`` runs): board
input power sampled through the timing, integrated over each variant's timed slots, with an idle baseline
measured first (:class:`~rkd_edge.devices.telemetry.PowerMeter`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rkd_edge import __version__, env, progress
from rkd_edge.bench_schema import (
    MAX_DRIFT,
    MIN_TIMED_CALLS,
    SCHEMA,
    STAGES,
    Settings,
    check_asked,
    fewest_timed_calls,
    protocol,
    write_selection,
)
from rkd_edge.channel import create_channel
from rkd_edge.config import read_config
from rkd_edge.devices.detect import detect
from rkd_edge.devices.latency import REFERENCE, REFERENCE_KERNEL, cpu_times, drift, interleaved, steal_fraction
from rkd_edge.devices.telemetry import PowerMeter
from rkd_edge.errors import UserError, first_sentence
from rkd_edge.evaluate.snr import Grid, describe
from rkd_edge.export.evaluate import evaluate_runtime
from rkd_edge.methods import method_config
from rkd_edge.rundir import load_splits
from rkd_edge.runtime import Bundle, Runtime
from rkd_edge.runtime.bundle import MODELS, channel_kwargs
from rkd_edge.runtime.runners import create_runner
from rkd_edge.runtime.runners.device import device_facts, fingerprint

FUSED = "transmitter"  # a row only where the runtime runs the fused graph
# --select: a precision other than the reference must be at least this much faster (p50 ratio) to win,
# so that noise between two equal precisions never flips the device default.
MIN_GAIN = 0.05
# -- environment -----------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _nvidia_smi() -> list[dict]:
    """GPU, driver, power limit and clocks from nvidia-smi where it runs (not on Jetson)."""
    if not shutil.which("nvidia-smi"):
        return []
    keys = ["name", "driver_version", "memory.total", "power.limit", "clocks.sm", "clocks.mem", "pstate"]
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(keys)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=False)) for line in out.splitlines() if line]


def environment(threads: int) -> dict:
    """CPU model, threads, versions; GPU, driver, clocks; Jetson module, L4T, power mode where readable."""
    rec = env.environment()
    rec["threads_requested"] = threads or "default"
    rec["torch_threads"] = torch.get_num_threads()
    freqs = [
        int(f) // 1000
        for f in (_read(p) for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")))
        if f and f.isdigit()
    ]
    if freqs:
        rec["cpu_mhz"] = {"min": min(freqs), "max": max(freqs)}
    rec["cpu_governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    rec["gpus"] = _nvidia_smi()
    rec["device"] = {k: v for k, v in asdict(detect()).items() if v not in (None, "", [], 0)}
    if rec["device"].get("jetson"):
        rec["gpu_mhz"] = _read("/sys/devices/gpu.0/devfreq/17000000.ga10b/cur_freq") or _read(
            "/sys/devices/17000000.gv11b/devfreq/17000000.gv11b/cur_freq"
        )
    return rec


# -- memory in a fresh process ---------------------------------------------------------------------------

_CHILD = """
import json, sys
from rkd_edge.runtime.runners.probe import memory_probe
print(json.dumps(memory_probe(*sys.argv[1:])))
"""


def fresh_process_memory(
    bundle: Path, backend: str, precision: str, batch: int, threads: int = 0, run: str | None = None
) -> dict:
    """:func:`memory_probe` in a new Python process (its VmHWM is this variant's alone); ``{"error": ...}``
    when the process fails."""
    args = [str(bundle), backend, precision, str(batch), str(threads), run or ""]
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}


# -- the measurement -------------------------------------------------------------------------------------


def _tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.resize(x, (n, *x.shape[1:])) if len(x) < n else x[:n]


def _stage_feeds(rt: Runtime, images: np.ndarray, batch: int, s: Settings, k: int, seed: int) -> dict:
    """Real inputs of each stage at ``batch``: test images, their features, their symbols through the channel."""
    imgs = _tile(images, batch)
    x = rt.preprocess(imgs)
    f = rt.encode(x, preprocessed=True)
    sym, mask = rt.transmit(f, s.snr_db, k, s.channel)
    ch = create_channel(s.channel, **channel_kwargs(rt.bundle.root, rt.bundle.manifest))
    g = torch.Generator().manual_seed(seed)
    o = ch(torch.from_numpy(sym), torch.full((batch,), s.snr_db), torch.from_numpy(mask), g)
    ctype = np.full(batch, rt.channel_types.index(s.channel), np.int64)
    snr = np.full(batch, s.snr_db, np.float32)
    rx = {"symbols": o.y.numpy(), "mask": mask, "snr_db": snr, "channel": ctype}
    if rt.uses_csi:
        rx["csi"] = o.csi.numpy()
    conditions = {"snr_db": snr, "k": np.full(batch, k, np.int64), "channel": ctype}
    return {
        "images": imgs,
        "encoder": {"image": x},
        "tx": {"features": f, **conditions},
        "rx": rx,
        FUSED: {"image": x, **conditions},
    }


def _end_to_end(rt: Runtime, imgs: np.ndarray, s: Settings, k: int):
    csi = None
    if rt.uses_csi:
        csi = np.zeros((len(imgs), rt.max_symbols, 2), np.float32)
        csi[..., 0] = 1.0  # the air is not simulated here: h = 1

    def fn():
        sym, mask = rt.send(imgs, s.snr_db, k, s.channel)
        return rt.receive(sym, mask, s.snr_db, s.channel, csi)

    return fn


def _summary_to_row(summary: dict) -> dict:
    return {
        "latency_ms": {key: round(summary[f"{key}_ms"], 4) for key in ("mean", "p50", "p90", "p95", "p99", "max")},
        "iterations": summary["iterations"],
        "throughput_per_s": round(summary["throughput_per_s"], 2),
    }


def _machine_reference(summary: dict, steal: float | None) -> dict:
    """The reference kernel's record: the machine's speed during this run and whether it held still.

    Rows carry ``p50_per_reference``: their p50 over the kernel's, timed next to each of their rounds (a
    latency in units of the machine's speed at the time, comparable across runs). Here ``drift`` is the
    kernel's per-round spread, ``steady`` whether that stayed within :data:`MAX_DRIFT`; ``cpu_steal`` the
    share of CPU time the hypervisor gave elsewhere meanwhile.
    """
    moved = drift(summary["round_p50_ms"])
    return {
        "kernel": REFERENCE_KERNEL,
        "p50_ms": round(summary["p50_ms"], 5),
        "round_p50_ms": [round(t, 5) for t in summary["round_p50_ms"]],
        "drift": round(moved, 4),
        "steady": moved <= MAX_DRIFT,
        "cpu_steal": steal,
    }


def _status(backend: str, precision: str, bundle: Bundle, s: Settings) -> str | None:
    """``unavailable here: why`` when the back end or precision cannot run on this machine, else None."""
    r = create_runner(backend, threads=s.threads, run=s.run)
    if why := r.available():
        return f"unavailable here: {why}"
    if precision not in r.precisions:
        return f"unavailable here: {backend} runs {', '.join(r.precisions)}, not {precision}"
    return None


@dataclass
class _Variants:
    """What one bench call loaded and will time: the callables per (back end, precision, batch, stage),
    their timers and batch sizes, the runtimes per (back end, precision), and the rows of the variants
    that cannot run (unavailable here, or failed to load or on their first call)."""

    fns: dict = field(default_factory=dict)
    timers: dict = field(default_factory=dict)
    batch_of: dict = field(default_factory=dict)
    runtimes: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # (backend, precision, batch) -> "failed: why"
    rows: list = field(default_factory=list)

    def unmeasured(self, backend: str, prec: str, status: str, batches: list[int]) -> None:
        """Rows of a variant that was not measured (unavailable here, or failed to load)."""
        for n in batches:
            for stage in (st for st in STAGES if st != FUSED):
                row = {"backend": backend, "precision": prec, "batch": n, "stage": stage, "status": status}
                row.update({"latency_ms": None, "throughput_per_s": None, "accuracy": None, "size_mb": None})
                self.rows.append({**row, "memory": {}})


def _load_variants(b: Bundle, s: Settings, precisions: list[str], images: np.ndarray, k: int, seed: int) -> _Variants:
    """Open a runtime per (back end, precision) and make each stage's timed call at each batch; a variant
    that cannot run becomes its rows' status, not a crash. The caller closes ``runtimes``."""
    v = _Variants()
    for backend in s.backends:
        for prec in precisions:
            if status := _status(backend, prec, b, s):
                v.unmeasured(backend, prec, status, s.batches)
                continue
            try:
                rt = Runtime(str(b.root), precision=prec, backend=backend, threads=s.threads, run=s.run)
            except UserError as exc:  # a BundleError (not a UserError) goes up: the bundle's files are at fault
                v.unmeasured(backend, prec, f"failed: {first_sentence(exc)}", s.batches)
                continue
            v.runtimes[(backend, prec)] = rt
            for n in s.batches:
                try:
                    feeds = _stage_feeds(rt, images, n, s, k, seed)
                    for stage, runner in rt.loaded.items():  # the three models, and the fused graph if loaded

                        def fn(r=runner, f=feeds[stage]):
                            return r.infer(f)

                        fn()  # one call first: a variant that fails is a row, not a crash
                        key = (backend, prec, n, stage)
                        v.fns[key], v.timers[key], v.batch_of[key] = fn, runner.timer(), n
                    e2e = _end_to_end(rt, feeds["images"], s, k)
                    e2e()
                    key = (backend, prec, n, "end_to_end")
                    v.fns[key], v.batch_of[key] = e2e, n
                except Exception as exc:  # noqa: BLE001 - a back end's failure becomes its row's status
                    for stage in STAGES:
                        v.fns.pop((backend, prec, n, stage), None)
                    v.failed[(backend, prec, n)] = f"failed: {first_sentence(exc)}"
    return v


def _measured_rows(v: _Variants, s: Settings, timed: dict, accuracy: dict, memory: dict, power_of: dict) -> list[dict]:
    """One row per (back end, precision, batch, stage) of the loaded runtimes: latency, size, accuracy,
    memory, and board power where it was sampled."""
    rows = []
    for (backend, prec), rt in v.runtimes.items():
        sizes = {name: r.size_bytes() / 2**20 for name, r in rt.loaded.items()}
        # end to end: the files a deployment loads (the fused graph in place of encoder and tx where it runs)
        sent_by = (FUSED,) if FUSED in sizes else ("encoder", "tx")
        sizes["end_to_end"] = sum(sizes[name] for name in (*sent_by, "rx"))
        for n in s.batches:
            for stage in (st for st in STAGES if st in sizes):  # no fused row where it is not loaded
                key = (backend, prec, n, stage)
                row = {"backend": backend, "precision": prec, "batch": n, "stage": stage}
                if key in timed:
                    row["status"] = "ok"
                    row.update(_summary_to_row(timed[key]))
                    row["p50_per_reference"] = round(timed[key]["p50_per_reference"], 4)
                    row["timer"] = getattr(v.timers.get(key), "name", "host")
                    if key in power_of:
                        row["power"] = power_of[key]
                else:
                    row["status"] = v.failed.get((backend, prec, n), "failed: not measured")
                row["accuracy"] = accuracy[(backend, prec)]["accuracy"]
                row["size_mb"] = round(sizes[stage], 4)
                row["memory"] = memory.get((backend, prec, n), {})
                row["providers"] = rt.providers
                rows.append(row)
    return rows


def run_bench(bundle: Path, s: Settings) -> dict:
    """Measure every (back end, precision, batch, stage) of ``bundle``; returns the bench JSON."""
    b = Bundle.open(bundle)
    m = b.manifest
    s.check()
    k, precisions = check_asked(s, m)
    cfg = method_config(read_config(b.root / "config.json", "bundle config"))
    trials = cfg.evaluate.trials if s.trials is None else s.trials  # both checked: Settings.check, the config
    splits = load_splits(cfg)
    point = {**describe(s.channel, cfg.codec), "snr_db": float(s.snr_db), "k": int(k), "trials": int(trials)}
    point |= {"bandwidth_ratio": round(k / splits.source_dim, 6), "source_dim": splits.source_dim, "seed": cfg.seed}
    grid = Grid([s.channel], [float(s.snr_db)], [int(k)], int(trials), cfg.seed)

    v = _load_variants(b, s, precisions, splits.test.images, k, cfg.seed)
    try:
        if not v.fns:  # every variant failed or cannot run here: say why once, not as a table of the same line
            why = [r["status"] for r in v.rows if r["status"].startswith("failed")] + list(v.failed.values())
            why = why or [r["status"] for r in v.rows]
            raise UserError(f"nothing could be measured: {why[0] if why else 'no variant was asked for'}")
        progress.log(f"timing {len(v.fns)} variants interleaved, {s.seconds:g} s each")
        before = cpu_times()
        with PowerMeter() as meter:  # a Jetson's board power while each variant runs; elsewhere says why not
            timed = interleaved(
                v.fns,
                v.batch_of,
                rounds=s.rounds,
                per_round_s=s.seconds / s.rounds,
                warmup_s=s.warmup,
                timers=v.timers,
                reference=True,
            )
            machine = _machine_reference(timed.pop(REFERENCE), steal_fraction(before, cpu_times()))
            power, power_of = meter.report(timed)

        accuracy, memory = {}, {}
        for (backend, prec), rt in v.runtimes.items():
            try:
                acc = evaluate_runtime(rt, splits.test, grid, cfg.codec, splits.source_dim, f"{backend}-{prec}")[0]
                accuracy[(backend, prec)] = {
                    "accuracy": acc["accuracy"],
                    "n": acc["n"],
                    "ci": [acc["ci_low"], acc["ci_high"]],
                }
            except Exception as exc:  # noqa: BLE001 - recorded, the latency rows stay
                accuracy[(backend, prec)] = {"accuracy": None, "error": first_sentence(exc)}
            if s.memory:
                for n in s.batches:
                    memory[(backend, prec, n)] = fresh_process_memory(b.root, backend, prec, n, s.threads, s.run)

        results = v.rows + _measured_rows(v, s, timed, accuracy, memory, power_of)
        order = {(bk, p): i for i, (bk, p) in enumerate((bk, p) for bk in s.backends for p in precisions)}
        results.sort(key=lambda r: (order[(r["backend"], r["precision"])], r["batch"], STAGES.index(r["stage"])))
        out = {
            "schema": SCHEMA,
            "rkd_edge": __version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bundle": Path(bundle).resolve().name,  # the name: a result names no absolute path
            "bundle_id": b.bundle_id,
            "settings": {**asdict(s), "symbols": int(k), "trials": int(trials), "precisions": precisions}
            | {"run": Path(s.run).resolve().name if s.run else None},  # the name: no absolute path
            "accuracy_point": point,
            "accuracy": {f"{bk}/{p}": a for (bk, p), a in accuracy.items()},
            "models": {f"{bk}/{p}": rt.files for (bk, p), rt in v.runtimes.items()},  # which file ran, per model
            "fingerprints": {bk: {"fingerprint": fingerprint(bk), "facts": device_facts(bk)} for bk in s.backends},
            "environment": environment(s.threads),
            "machine_reference": machine,
            "power": power,
            "results": results,
        }
        out["protocol"] = protocol(out)
        if s.select:
            out["selection"] = {}
            for backend in s.backends:
                if any((backend, p) in v.runtimes for p in precisions):
                    out["selection"][backend] = select_for_device(b, backend, out, v.runtimes, splits, grid, cfg, s)
        return out
    finally:  # however the bench ends (an error, Ctrl-C), the runtimes' sessions and device memory go
        for rt in v.runtimes.values():
            rt.close()


# -- --select --------------------------------------------------------------------------------------------


def _p50(result: dict, backend: str, prec: str, model: str) -> list[float]:
    return [
        r["latency_ms"]["p50"]
        for r in result["results"]
        if (r["backend"], r["precision"], r["stage"], r["status"]) == (backend, prec, model, "ok")
    ]


def select_for_device(b: Bundle, backend, result, runtimes, splits, grid, cfg, s: Settings) -> dict:
    """The fastest precision per model whose accuracy stays within ``s.tolerance`` of the reference (FP32),
    written into the manifest under ``selection[fingerprint]`` atomically.

    A model's candidate precision is judged with the other models at the reference (its own accuracy
    cost), then the chosen combination is measured as a whole; while the combination loses more than the
    tolerance, the model with the smallest speed gain goes back to the reference. A precision wins only
    when its p50, averaged over the measured batches as a ratio to the reference, is at least
    :data:`MIN_GAIN` lower.
    """
    ref = "fp32"
    if (backend, ref) not in runtimes:
        return {"written": False, "reason": f"no measured {ref} reference on {backend}"}
    if not any(bk == backend and p != ref for bk, p in runtimes):
        return {"written": False, "reason": f"only {ref} was measured on {backend}: nothing to choose from"}
    fewest = fewest_timed_calls([r for r in result["results"] if r["backend"] == backend])
    if fewest is not None and fewest < MIN_TIMED_CALLS:
        return {
            "written": False,
            "reason": f"only {fewest} timed calls per row (< {MIN_TIMED_CALLS}); rerun with more --seconds",
        }

    def acc(precs: dict) -> float:
        with Runtime(str(b.root), precision=precs, backend=backend, threads=s.threads, run=s.run) as rt:
            return evaluate_runtime(rt, splits.test, grid, cfg.codec, splits.source_dim, "select")[0]["accuracy"]

    ref_acc = result["accuracy"][f"{backend}/{ref}"]["accuracy"]
    evidence, choice, gains = {}, dict.fromkeys(MODELS, ref), {}
    for model in MODELS:
        base = _p50(result, backend, ref, model)
        evidence[model] = {ref: {"p50_ratio": 1.0, "accuracy": ref_acc}}
        for prec in [p for (bk, p) in runtimes if bk == backend and p != ref]:
            cand = _p50(result, backend, prec, model)
            if not base or len(cand) != len(base):
                continue
            ratio = float(np.mean([c / r for c, r in zip(cand, base, strict=True)]))
            a = acc({**dict.fromkeys(MODELS, ref), model: prec})
            evidence[model][prec] = {"p50_ratio": round(ratio, 4), "accuracy": a}
            if (
                ratio <= 1 - MIN_GAIN
                and a >= ref_acc - s.tolerance
                and ratio < evidence[model][choice[model]]["p50_ratio"]
            ):
                choice[model], gains[model] = prec, 1 - ratio
    combined = acc(choice) if gains else ref_acc
    while gains and combined < ref_acc - s.tolerance:
        weakest = min(gains, key=gains.get)
        choice[weakest] = ref
        del gains[weakest]
        combined = acc(choice) if gains else ref_acc
    fp = result["fingerprints"][backend]["fingerprint"]
    write_selection(b.root, fp, choice)
    return {
        "fingerprint": fp,
        "choice": choice,
        "accuracy": combined,
        "reference_accuracy": ref_acc,
        "tolerance": s.tolerance,
        "min_gain": MIN_GAIN,
        "evidence": evidence,
        "written": True,
    }
