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
``/proc/meminfo`` deltas on Jetson (unified memory).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rkd_edge import __version__, env, progress
from rkd_edge.channel import create_channel
from rkd_edge.config import read_config
from rkd_edge.devices.detect import detect
from rkd_edge.devices.latency import REFERENCE, REFERENCE_KERNEL, cpu_times, drift, interleaved, steal_fraction
from rkd_edge.errors import UserError, first_sentence, short_repr
from rkd_edge.evaluate.snr import Grid
from rkd_edge.export.evaluate import evaluate_runtime
from rkd_edge.io import write_json
from rkd_edge.limits import check_batches, check_seconds, check_snr_db, check_threads
from rkd_edge.methods import method_config
from rkd_edge.rundir import load_splits
from rkd_edge.runtime import Bundle, Runtime
from rkd_edge.runtime.bundle import MANIFEST, MODELS, PRECISIONS, channel_kwargs, load_manifest
from rkd_edge.runtime.runners import BACKENDS, create_runner
from rkd_edge.runtime.runners.device import device_facts, fingerprint

SCHEMA = "rkd-edge/bench@1"
STAGES = ("encoder", "tx", "transmitter", "rx", "end_to_end")
FUSED = "transmitter"  # a row only where the runtime runs the fused graph
# --select: a precision other than the reference must be at least this much faster (p50 ratio) to win,
# so that noise between two equal precisions never flips the device default.
MIN_GAIN = 0.05
MAX_TRIALS = 10_000  # as evaluate.trials
MAX_LIST = 32  # values per list flag: each multiplies the variants timed
# The reference kernel's per-round p50 may move this much during one run before the table warns that the
# machine's speed changed while it was timing (a shared VM, throttling): then no latency of that run is
# comparable with another run's.
MAX_DRIFT = 0.10
# Fewer timed calls than this per row (a tiny --seconds) leave p90..p99 as single samples: the table says
# so, and --select does not choose from them.
MIN_TIMED_CALLS = 100


@dataclass
class Settings:
    """What one bench call measures (the CLI flags).

    Attributes:
        backends: Registered back ends (:data:`rkd_edge.runtime.runners.BACKENDS`).
        precisions: Precisions to measure; ``None``: the ones the bundle holds.
        batches: Batch sizes.
        snr_db: SNR (dB, Es/N0) of the accuracy point and of the conditioning inputs.
        symbols: k, complex symbols sent (``None``: the bundle's maximum K).
        channel: Channel of the accuracy point (the codec is told the same type).
        trials: Noise draws for the accuracy point (``None``: the bundle config's evaluate.trials).
        seconds: Timed seconds per variant and stage (spread over ``rounds`` interleaved rounds).
        warmup: Untimed seconds per variant and stage first.
        rounds: Interleaved rounds.
        threads: Intra-op threads (0 = the back end's default).
        run: Source run for the ``pytorch`` back end.
        memory: Measure peak memory in fresh processes.
        select: Write the fastest precision per model within ``tolerance`` into the manifest.
        tolerance: Accuracy a selected precision may lose against the reference (absolute, 0..1).
    """

    backends: list[str] = field(default_factory=lambda: ["onnxruntime"])
    precisions: list[str] | None = None
    batches: list[int] = field(default_factory=lambda: [1, 32])
    snr_db: float = 10.0
    symbols: int | None = None
    channel: str = "awgn"
    trials: int | None = None
    seconds: float = 1.0
    warmup: float = 0.2
    rounds: int = 10
    threads: int = 0
    run: str | None = None
    memory: bool = True
    select: bool = False
    tolerance: float = 0.01

    def check(self) -> None:
        """Refuse values that need no bundle to be wrong (before anything is loaded or sent over SSH)."""
        if not self.backends or self.precisions == []:
            raise UserError("--backend and --precision each need at least one value; leave one out for its default")
        for name in self.backends:
            if name not in BACKENDS:
                raise UserError(f"unknown back end {name!r}; choose from {', '.join(BACKENDS)} (or all)")
        if unknown := [p for p in self.precisions or [] if p not in PRECISIONS]:
            raise UserError(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
        check_batches(self.batches)
        check_snr_db(self.snr_db, "--snr-db")
        check_threads(self.threads)
        check_seconds(self.seconds, "--seconds")
        check_seconds(self.warmup, "--warmup", positive=False)
        if self.trials is not None and not 1 <= self.trials <= MAX_TRIALS:
            raise UserError(f"--trials is 1 to {MAX_TRIALS:,} noise draws per image, got {self.trials}")
        if len(self.batches) > MAX_LIST or len(self.backends) > MAX_LIST:
            raise UserError(f"--batch and --backend take at most {MAX_LIST} values each; measure fewer at a time")
        if not 0 <= self.tolerance <= 1:
            raise UserError(f"--tolerance is an accuracy difference from 0 to 1, got {self.tolerance}")


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


def run_bench(bundle: Path, s: Settings) -> dict:
    """Measure every (back end, precision, batch, stage) of ``bundle``; returns the bench JSON."""
    b = Bundle.open(bundle)
    m = b.manifest
    s.check()
    precisions = s.precisions or list(m["precisions"])
    k = m["symbols"]["max"] if s.symbols is None else s.symbols
    if not 1 <= k <= m["symbols"]["max"]:
        raise UserError(f"--symbols must be from 1 to {m['symbols']['max']} (the bundle's K), got {k}")
    if s.channel not in m["channel_types"] or s.channel == "identity":
        raise UserError(f"--channel {s.channel!r} is not one of {[c for c in m['channel_types'] if c != 'identity']}")
    cfg = method_config(read_config(b.root / "config.json", "bundle config"))
    trials = cfg.evaluate.trials if s.trials is None else s.trials  # both checked: Settings.check, the config
    splits = load_splits(cfg)
    point = {"channel": s.channel, "snr_db": float(s.snr_db), "k": int(k), "trials": int(trials), "seed": cfg.seed}
    grid = Grid([s.channel], [float(s.snr_db)], [int(k)], int(trials), cfg.seed)

    results: list[dict] = []
    fns, timers, batch_of, runtimes, where = {}, {}, {}, {}, {}

    def rows(backend, prec, status, **extra):
        """Rows of a variant that was not measured (unavailable here, or failed to load)."""
        for n in s.batches:
            for stage in (st for st in STAGES if st != FUSED):
                results.append(
                    {"backend": backend, "precision": prec, "batch": n, "stage": stage, "status": status, **extra}
                )
                results[-1].update({"latency_ms": None, "throughput_per_s": None, "accuracy": None, "size_mb": None})
                results[-1].setdefault("memory", {})

    for backend in s.backends:
        for prec in precisions:
            if status := _status(backend, prec, b, s):
                rows(backend, prec, status)
                continue
            try:
                rt = Runtime(str(b.root), precision=prec, backend=backend, threads=s.threads, run=s.run)
            except UserError as exc:  # a BundleError (not a UserError) goes up: the bundle's files are at fault
                rows(backend, prec, f"failed: {first_sentence(exc)}")
                continue
            runtimes[(backend, prec)] = rt
            for n in s.batches:
                try:
                    feeds = _stage_feeds(rt, splits.test.images, n, s, k, cfg.seed)
                    for stage, runner in rt.loaded.items():  # the three models, and the fused graph if loaded

                        def fn(r=runner, f=feeds[stage]):
                            return r.infer(f)

                        fn()  # one call first: a variant that fails is a row, not a crash
                        key = (backend, prec, n, stage)
                        fns[key], timers[key], batch_of[key] = fn, runner.timer(), n
                    e2e = _end_to_end(rt, feeds["images"], s, k)
                    e2e()
                    key = (backend, prec, n, "end_to_end")
                    fns[key], batch_of[key] = e2e, n
                except Exception as exc:  # noqa: BLE001 - a back end's failure becomes its row's status
                    for stage in STAGES:
                        fns.pop((backend, prec, n, stage), None)
                    where[(backend, prec, n)] = f"failed: {first_sentence(exc)}"

    if not fns:  # every variant failed or cannot run here: say why once, not as a table of the same line
        why = [r["status"] for r in results if r["status"].startswith("failed")] + list(where.values())
        why = why or [r["status"] for r in results]
        raise UserError(f"nothing could be measured: {why[0] if why else 'no variant was asked for'}")
    timed, machine = {}, None
    if fns:
        progress.log(f"timing {len(fns)} variants interleaved, {s.seconds:g} s each")
        before = cpu_times()
        timed = interleaved(
            fns,
            batch_of,
            rounds=s.rounds,
            per_round_s=s.seconds / s.rounds,
            warmup_s=s.warmup,
            timers=timers,
            reference=True,
        )
        machine = _machine_reference(timed.pop(REFERENCE), steal_fraction(before, cpu_times()))

    accuracy, memory = {}, {}
    for (backend, prec), rt in runtimes.items():
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

    for (backend, prec), rt in runtimes.items():
        sizes = {name: r.size_bytes() / 2**20 for name, r in rt.loaded.items()}
        # end to end: the files a deployment loads (the fused graph in place of encoder and tx where it runs)
        sent_by = (FUSED,) if FUSED in sizes else ("encoder", "tx")
        sizes["end_to_end"] = sum(sizes[name] for name in (*sent_by, "rx"))
        acc = accuracy[(backend, prec)]
        for n in s.batches:
            for stage in (st for st in STAGES if st in sizes):  # no fused row where it is not loaded
                key = (backend, prec, n, stage)
                row = {"backend": backend, "precision": prec, "batch": n, "stage": stage}
                if key in timed:
                    row["status"] = "ok"
                    row.update(_summary_to_row(timed[key]))
                    row["p50_per_reference"] = round(timed[key]["p50_per_reference"], 4)
                    row["timer"] = getattr(timers.get(key), "name", "host")
                else:
                    row["status"] = where.get((backend, prec, n), "failed: not measured")
                row["accuracy"] = acc["accuracy"]
                row["size_mb"] = round(sizes[stage], 4)
                row["memory"] = memory.get((backend, prec, n), {})
                row["providers"] = rt.providers
                results.append(row)

    order = {(bk, p): i for i, (bk, p) in enumerate((bk, p) for bk in s.backends for p in precisions)}
    results.sort(key=lambda r: (order[(r["backend"], r["precision"])], r["batch"], STAGES.index(r["stage"])))
    out = {
        "schema": SCHEMA,
        "rkd_edge": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": str(bundle),
        "bundle_id": b.bundle_id,
        "settings": {**asdict(s), "symbols": int(k), "trials": int(trials), "precisions": precisions},
        "accuracy_point": point,
        "accuracy": {f"{bk}/{p}": v for (bk, p), v in accuracy.items()},
        "fingerprints": {bk: {"fingerprint": fingerprint(bk), "facts": device_facts(bk)} for bk in s.backends},
        "environment": environment(s.threads),
        "machine_reference": machine,
        "results": results,
    }
    if s.select:
        out["selection"] = {}
        for backend in s.backends:
            if any((backend, p) in runtimes for p in precisions):
                out["selection"][backend] = select_for_device(b, backend, out, runtimes, splits, grid, cfg, s)
    for rt in runtimes.values():
        rt.close()
    return out


# -- --select --------------------------------------------------------------------------------------------


def _p50(result: dict, backend: str, prec: str, model: str) -> list[float]:
    return [
        r["latency_ms"]["p50"]
        for r in result["results"]
        if (r["backend"], r["precision"], r["stage"], r["status"]) == (backend, prec, model, "ok")
    ]


def fewest_timed_calls(rows: list[dict]) -> int | None:
    """The fewest timed calls behind any measured row (None: no row was timed)."""
    counts = [r["iterations"] for r in rows if r.get("status") == "ok" and isinstance(r.get("iterations"), int)]
    return min(counts) if counts else None


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


def write_selection(root: Path, fp: str, choice: dict[str, str]) -> None:
    """Record ``{model: precision}`` for device fingerprint ``fp`` in the manifest, atomically (the
    selection is left out of the bundle id, and the file hashes do not cover the manifest)."""
    manifest = load_manifest(root)
    sel = manifest.get("selection")
    manifest["selection"] = {**(sel if isinstance(sel, dict) else {}), fp: dict(choice)}
    write_json(Path(root) / MANIFEST, manifest)


# -- output ----------------------------------------------------------------------------------------------


def table(result: dict) -> str:
    """The results as a text table, one row per back end, precision, batch and stage."""
    head = ["backend", "precision", "batch", "stage", "status", "size MiB", "accuracy", "p50 ms", "p99 ms", "mean ms"]
    head += ["per s", "peak RSS MiB"]
    lines = []
    for r in result["results"]:
        lat = r.get("latency_ms") or {}
        acc = r.get("accuracy")
        mem = (r.get("memory") or {}).get("peak_rss_mb")
        lines.append(
            [
                r["backend"],
                r["precision"],
                str(r["batch"]),
                r["stage"],
                r["status"] if len(r["status"]) < 60 else r["status"][:57] + "...",
                f"{r['size_mb']:.3f}" if r.get("size_mb") is not None else "-",
                f"{acc:.4f}" if acc is not None else "-",
                f"{lat['p50']:.3f}" if lat else "-",
                f"{lat['p99']:.3f}" if lat else "-",
                f"{lat['mean']:.3f}" if lat else "-",
                f"{r['throughput_per_s']:.0f}" if r.get("throughput_per_s") else "-",
                f"{mem:.0f}" if mem is not None else "-",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 5 else '>'}{w}}}" for i, w in enumerate(widths))
    p = result["accuracy_point"]
    env_ = result["environment"]
    remote = result.get("remote")
    on = f" on {remote['host']}" if isinstance(remote, dict) and isinstance(remote.get("host"), str) else ""
    out = [
        f"bundle {result['bundle']} ({result['bundle_id']}){on}, accuracy on the test split through {p['channel']} at "
        f"{p['snr_db']:g} dB, k={p['k']}, {p['trials']} trial(s); {env_.get('cpu', '?')}, {env_.get('cpu_count')} CPUs",
        fmt.format(*head),
        fmt.format(*("-" * w for w in widths)),
    ]
    out += [fmt.format(*row) for row in lines]
    if machine := result.get("machine_reference"):
        steal = f", CPU steal {100 * machine['cpu_steal']:.1f} %" if machine.get("cpu_steal") is not None else ""
        out.append(
            f"machine reference kernel p50 {machine['p50_ms']:.4f} ms, moved {100 * machine['drift']:.1f} % "
            f"between rounds{steal}"
        )
    for backend, sel in (result.get("selection") or {}).items():
        if sel.get("written"):
            out.append(
                f"selected for {backend} on this device ({sel['fingerprint']}): "
                + ", ".join(f"{m}={p}" for m, p in sel["choice"].items())
                + f" (accuracy {sel['accuracy']:.4f} vs {sel['reference_accuracy']:.4f} fp32)"
            )
    return "\n".join(out)


def warnings_of(result: dict) -> list[str]:
    """What makes a result's numbers less than they seem (for stderr, next to the table on stdout)."""
    out = []
    machine, env_ = result.get("machine_reference"), result["environment"]
    if machine and not machine["steady"]:
        out.append(
            f"warning: the machine's speed moved by more than {100 * MAX_DRIFT:.0f} % while timing; "
            "ratios inside this run hold, but compare its latencies with another run's only on a quiet machine"
        )
    if (fewest := fewest_timed_calls(result["results"])) is not None and fewest < MIN_TIMED_CALLS:
        out.append(
            f"warning: as few as {fewest} timed calls per row (fewer than {MIN_TIMED_CALLS}): p50 is rough and "
            "p90..p99 are single calls; give more --seconds"
        )
    threads, usable = env_.get("threads_requested"), env_.get("cpus_usable")
    if isinstance(threads, int) and isinstance(usable, int) and threads > usable:
        out.append(
            f"warning: --threads {threads} is more than the {usable} CPUs this process may use; threads take "
            "turns on the cores, so latencies are higher and noisier than with at most that many"
        )
    return out


def unselected(result: dict) -> list[str]:
    """Why ``--select`` chose nothing, one line per back end: empty when it wrote a selection for any (the
    ``pytorch`` back end runs FP32 only and never has one to write)."""
    selection = result.get("selection") or {}
    if any(sel.get("written") for sel in selection.values()):
        return []
    return [f"no selection for {backend}: {sel.get('reason')}" for backend, sel in selection.items()]


def check_schema(result: dict) -> None:
    """Refuse a bench JSON of another schema (a remote with another rkd-edge)."""
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        got = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise UserError(f"bench result has schema {got!r}, this rkd-edge reads {SCHEMA}; install the same version")


_NUM = (int, float)
MAX_NUMBER = 1e12  # no latency, size, count or accuracy of a bench comes near; NaN fails the comparison too
MAX_TEXT = 500
_OPT_NUM = (int, float, type(None))
# field -> accepted types, for what :func:`table` and ``--select`` read from a bench JSON
_TOP = {"bundle": str, "bundle_id": str, "accuracy_point": dict, "environment": dict, "results": list}
_POINT = {"channel": str, "snr_db": _NUM, "k": int, "trials": int}
_ROW = {"backend": str, "precision": str, "batch": int, "stage": str, "status": str}
_ROW_OPTIONAL = {
    "size_mb": _OPT_NUM,
    "accuracy": _OPT_NUM,
    "throughput_per_s": _OPT_NUM,
    "latency_ms": (dict, type(None)),
}
_LATENCY = {"p50": _NUM, "p99": _NUM, "mean": _NUM}
_MACHINE = {"p50_ms": _NUM, "drift": _NUM, "steady": bool}
_WRITTEN = {"fingerprint": str, "choice": dict, "accuracy": _NUM, "reference_accuracy": _NUM}


def _fields(obj, spec: dict, what: str, optional: bool = False) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} is {type(obj).__name__}, not an object")
    for key, kind in spec.items():
        if key not in obj and optional:
            continue
        value = obj.get(key)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise ValueError(f"{what}.{key} is {short_repr(value)}")
        # a number is finite and of a size a measurement has (an int of 400 digits breaks float formatting)
        if isinstance(value, int | float) and not isinstance(value, bool) and not abs(value) <= MAX_NUMBER:
            raise ValueError(f"{what}.{key} is {short_repr(value)}")
        if isinstance(value, str) and (len(value) > MAX_TEXT or not value.isprintable()):
            raise ValueError(f"{what}.{key} is not a short line of printable text")


def check_result(result, source: str) -> dict:
    """``result`` if it is a bench JSON of this schema with every field the table and ``--select`` read,
    else one line naming ``source`` (a device's bench JSON is data from elsewhere)."""
    check_schema(result)
    try:
        _fields(result, _TOP, "result")
        _fields(result["accuracy_point"], _POINT, "accuracy_point")
        _fields(result["environment"], {"cpu": str, "cpu_count": (int, type(None))}, "environment", optional=True)
        for i, row in enumerate(result["results"]):
            _fields(row, _ROW, f"results[{i}]")
            _fields(row, _ROW_OPTIONAL, f"results[{i}]", optional=True)
            if row.get("latency_ms") is not None:
                _fields(row["latency_ms"], _LATENCY, f"results[{i}].latency_ms")
            for key, known in (("stage", STAGES), ("backend", BACKENDS), ("precision", PRECISIONS)):
                if row[key] not in known:
                    raise ValueError(f"results[{i}].{key} is {short_repr(row[key])}")
            if row["batch"] < 1 or any(row.get(k) is not None and row[k] < 0 for k in ("size_mb", "throughput_per_s")):
                raise ValueError(f"results[{i}] has a batch below 1 or a negative size or throughput")
            if row.get("accuracy") is not None and not 0 <= row["accuracy"] <= 1:
                raise ValueError(f"results[{i}].accuracy is {row['accuracy']!r}")
            if row.get("latency_ms") is not None and min(row["latency_ms"][k] for k in _LATENCY) < 0:
                raise ValueError(f"results[{i}].latency_ms is negative")
            memory = row.get("memory") or {}
            _fields(memory, {"peak_rss_mb": _OPT_NUM}, f"results[{i}].memory", optional=True)
        if result.get("machine_reference") is not None:
            _fields(result["machine_reference"], _MACHINE, "machine_reference")
            _fields(result["machine_reference"], {"cpu_steal": _OPT_NUM}, "machine_reference", optional=True)
        _fields(result, {"selection": (dict, type(None))}, "result", optional=True)
        for backend, sel in (result.get("selection") or {}).items():
            if backend not in BACKENDS:
                raise ValueError(f"selection names back end {short_repr(backend)}")
            _fields(sel, {"written": bool}, f"selection.{backend}")
            _fields(sel, {"reason": str}, f"selection.{backend}", optional=True)
            if sel["written"]:
                _fields(sel, _WRITTEN, f"selection.{backend}")
                if not 0 <= sel["accuracy"] <= 1 or not 0 <= sel["reference_accuracy"] <= 1:
                    raise ValueError(f"selection.{backend} has an accuracy outside 0..1")
                check_choice(sel["choice"], f"selection.{backend}.choice")
                if not re.fullmatch(r"[0-9a-f]{16}", sel["fingerprint"]):
                    raise ValueError(f"selection.{backend}.fingerprint is {sel['fingerprint']!r}")
    except (ValueError, AttributeError, TypeError) as exc:
        raise UserError(f"the bench result from {source} is malformed ({exc}); rerun it there") from None
    return result


def check_choice(choice, what: str) -> None:
    """A ``--select`` choice is ``{model: precision}`` over :data:`MODELS` and :data:`PRECISIONS`."""
    if not isinstance(choice, dict) or set(choice) != set(MODELS) or not all(p in PRECISIONS for p in choice.values()):
        raise ValueError(f"{what} is {choice!r}, not a precision for each of {', '.join(MODELS)}")
