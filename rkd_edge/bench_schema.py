"""A bench as data (torch-free): what one call measures (:class:`Settings`), the result's schema and the
check of one read from elsewhere (a device over SSH), the text table and the warnings beside it, and the
``--select`` choice recorded in a manifest. :mod:`rkd_edge.bench` measures; the laptop side of
``bench --host`` needs only this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rkd_edge.errors import UserError, short_repr
from rkd_edge.io import write_json
from rkd_edge.limits import check_batches, check_seconds, check_snr_db, check_threads
from rkd_edge.runtime.bundle import MANIFEST, MODELS, PRECISIONS, load_manifest
from rkd_edge.runtime.runners import BACKENDS

SCHEMA = "rkd-edge/bench@1"
STAGES = ("encoder", "tx", "transmitter", "rx", "end_to_end")
# The reference kernel's per-round p50 may move this much during one run before the table warns that the
# machine's speed changed while it was timing (a shared VM, throttling): then no latency of that run is
# comparable with another run's.
MAX_DRIFT = 0.10
# Fewer timed calls than this per row (a tiny --seconds) leave p90..p99 as single samples: the table says
# so, and --select does not choose from them.
MIN_TIMED_CALLS = 100
# DESIGN.md section 6: a row is timed for at least this long or this many calls. The default --seconds is
# shorter (a first look in seconds); the table says when a run's rows fall short of the protocol.
PROTOCOL_SECONDS = 10.0
PROTOCOL_CALLS = 1000


MAX_TRIALS = 10_000  # as evaluate.trials
MAX_LIST = 32  # values per list flag: each multiplies the variants timed


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


def fewest_timed_calls(rows: list[dict]) -> int | None:
    """The fewest timed calls behind any measured row (None: no row was timed)."""
    counts = [r["iterations"] for r in rows if r.get("status") == "ok" and isinstance(r.get("iterations"), int)]
    return min(counts) if counts else None


def _number(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _asked(result: dict) -> dict:
    """A result's settings (a remote result's may be anything)."""
    return result["settings"] if isinstance(result.get("settings"), dict) else {}


def protocol(result: dict) -> dict:
    """Whether every timed row met DESIGN.md's protocol: :data:`PROTOCOL_CALLS` calls, or
    :data:`PROTOCOL_SECONDS` of measured time (calls x mean latency)."""
    seconds = _asked(result).get("seconds")
    seconds = seconds if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None
    rows = [r for r in result["results"] if r.get("status") == "ok"]

    def met_by(r: dict) -> bool:
        calls, mean = r.get("iterations"), (r.get("latency_ms") or {}).get("mean")
        if not isinstance(calls, int) or not isinstance(mean, int | float):
            return False
        return calls >= PROTOCOL_CALLS or calls * mean >= PROTOCOL_SECONDS * 1e3

    met = bool(rows) and all(met_by(r) for r in rows)
    return {"seconds_per_row": seconds, "fewest_calls": fewest_timed_calls(rows), "met": met}


def table(result: dict) -> str:
    """The results as a text table, one row per back end, precision, batch and stage."""
    head = ["backend", "precision", "batch", "stage", "status", "size MiB", "accuracy", "p50 ms", "p99 ms", "mean ms"]
    head += ["per s", "peak RSS MiB"]
    powered = any(r.get("power") for r in result["results"])
    head += ["W", "mJ/call"] if powered else []
    lines = []
    for r in result["results"]:
        lat = r.get("latency_ms") or {}
        acc = r.get("accuracy")
        mem = (r.get("memory") or {}).get("peak_rss_mb")
        power = r.get("power") or {}
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
            + ([_number(power.get("mean_w"), 2), _number(power.get("energy_mj_per_call"), 3)] if powered else [])
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
    if (power := result.get("power") or {}).get("status") == "ok":
        out.append(
            f"board power from {power['source']} every {power['interval_ms']} ms, idle {power['idle_w']:.2f} W "
            "(W and mJ/call include it; net_energy_mj_per_call in the JSON does not)"
        )
    if (timing := protocol(result))["seconds_per_row"] is not None and timing["fewest_calls"] is not None:
        verdict = "met" if timing["met"] else "not met: give --seconds 10 for numbers by the protocol"
        out.append(
            f"timed {timing['seconds_per_row']:g} s per row, at least {timing['fewest_calls']} calls; "
            f"DESIGN.md's protocol ({PROTOCOL_SECONDS:g} s or {PROTOCOL_CALLS:,} calls per row) {verdict}"
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
    errors = [m["error"] for r in result["results"] if isinstance(m := r.get("memory"), dict) and m.get("error")]
    if errors:  # e.g. a bundle file changed while it was measured: the fresh process refused it
        out.append(f"warning: peak memory of {len(errors)} row(s) was not measured: {str(errors[0])[:200]}")
    power = result.get("power") or {}
    if str(power.get("status", "")).startswith("failed"):
        out.append(f"warning: board power was sampled but not measured: {power['status']}")
    seconds, rounds = _asked(result).get("seconds"), _asked(result).get("rounds")
    slot_ms = 1e3 * seconds / rounds if isinstance(seconds, float | int) and isinstance(rounds, int) and rounds else 0
    if power.get("status") == "ok" and slot_ms < 2 * power["interval_ms"]:
        out.append(
            f"warning: each timed slot lasts {slot_ms:.0f} ms, under two power samples: power per variant is "
            "interpolated between few samples; give more --seconds for energy you can compare"
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
_OPT_INT = (int, type(None))
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
_POWER = dict.fromkeys(("mean_w", "energy_mj_per_call", "energy_mj_per_sample", "net_energy_mj_per_call"), _OPT_NUM)
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


_ORDER = ("p50", "p90", "p95", "p99", "max")


def _check_latency(latency: dict, row: dict, what: str) -> None:
    """A row's latency as a measurement has it: finite, ordered p50 <= p90 <= p95 <= p99 <= max, a positive
    mean, and a throughput of batch / mean (what :mod:`rkd_edge.bench` writes)."""
    _fields(latency, dict.fromkeys(_ORDER, _NUM), f"{what}.latency_ms", optional=True)
    ordered = [latency[k] for k in _ORDER if k in latency]
    if latency["mean"] <= 0 or ordered[0] < 0 or ordered != sorted(ordered):
        raise ValueError(f"{what}.latency_ms is not a measurement (negative, or percentiles out of order)")
    per_s = row.get("throughput_per_s")
    if per_s is not None and abs(per_s - row["batch"] * 1e3 / latency["mean"]) > 0.05 * per_s:  # 4-decimal ms
        raise ValueError(f"{what}.throughput_per_s {per_s!r} is not batch / mean latency")


def check_result(result, source: str) -> dict:
    """``result`` if it is a bench JSON of this schema with every field the table and ``--select`` read,
    else one line naming ``source`` (a device's bench JSON is data from elsewhere)."""
    check_schema(result)
    try:
        _fields(result, _TOP, "result")
        if not result["results"]:
            raise ValueError("results is empty")
        _fields(result["accuracy_point"], _POINT, "accuracy_point")
        env_fields = {"cpu": str, "cpu_count": _OPT_INT, "threads_requested": (int, str, type(None))}
        env_fields |= {"cpus_usable": _OPT_INT}  # numbers a measurement has, texts short and printable
        _fields(result["environment"], env_fields, "environment", optional=True)
        if result.get("settings") is not None:
            _fields(result["settings"], {"seconds": _NUM, "rounds": int}, "settings", optional=True)
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
            if (latency := row.get("latency_ms")) is not None:
                _check_latency(latency, row, f"results[{i}]")
            memory = row.get("memory") or {}
            _fields(memory, {"peak_rss_mb": _OPT_NUM, "error": str}, f"results[{i}].memory", optional=True)
            _fields(row, {"iterations": int}, f"results[{i}]", optional=True)
            power = row.get("power") or {}
            _fields(power, _POWER, f"results[{i}].power", optional=True)
            if any(power.get(k) is not None and power[k] < 0 for k in _POWER):
                raise ValueError(f"results[{i}].power has a negative figure")
        if result.get("machine_reference") is not None:
            _fields(result["machine_reference"], _MACHINE, "machine_reference")
            _fields(result["machine_reference"], {"cpu_steal": _OPT_NUM}, "machine_reference", optional=True)
        if result.get("power") is not None:
            _fields(result["power"], {"status": str}, "power")
            if result["power"]["status"] == "ok":
                _fields(result["power"], {"source": str, "interval_ms": _NUM, "idle_w": _NUM}, "power")
                if not (result["power"]["interval_ms"] > 0 and result["power"]["idle_w"] > 0):
                    raise ValueError("power has a sampling interval or idle power that is not above 0")
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


def check_asked(s: Settings, manifest: dict) -> tuple[int, list[str]]:
    """What ``s`` asks of a bundle, checked against its (verified) manifest before anything is timed or sent
    over SSH; returns k (complex symbols) and the precisions to measure."""
    precisions = s.precisions or list(manifest["precisions"])
    k = manifest["symbols"]["max"] if s.symbols is None else s.symbols
    if not 1 <= k <= manifest["symbols"]["max"]:
        raise UserError(f"--symbols must be from 1 to {manifest['symbols']['max']} (the bundle's K), got {k}")
    channels = [c for c in manifest["channel_types"] if c != "identity"]
    if s.channel not in channels:
        raise UserError(f"--channel {s.channel!r} is not one of {channels}")
    if s.select and ("fp32" not in precisions or precisions == ["fp32"]):
        raise UserError(
            "--select chooses against the fp32 reference among the precisions measured; this bench measures "
            f"{', '.join(precisions)} (measure fp32 and int8 of a bundle exported with --int8, or drop --select)"
        )
    return k, precisions


def check_answer(result: dict, s: Settings, k: int, precisions: list[str], source: str) -> dict:
    """``result`` (already :func:`check_result`) if it answers what ``s`` asked (the accuracy point, the
    back ends, precisions and batches) and its selection agrees with its own rows, else one line naming
    ``source``. A selection ``--select`` did not ask for is dropped: it was not made here.

    Args:
        k: The complex symbols asked for (``s.symbols`` or the bundle's K).
        precisions: The precisions asked for (``s.precisions`` or the bundle's).
    """
    point, asked = result["accuracy_point"], {"channel": s.channel, "snr_db": float(s.snr_db), "k": k}
    if s.trials is not None:
        asked["trials"] = s.trials
    wrong = [f"its {key}" for key, value in asked.items() if point.get(key) != value]
    for row in result["results"]:
        if row["backend"] not in s.backends or row["precision"] not in precisions or row["batch"] not in s.batches:
            wrong.append(f"a row of {row['backend']} {row['precision']} at batch {row['batch']}")
            break
    if not s.select:
        result.pop("selection", None)
    for backend, sel in (result.get("selection") or {}).items():
        if not sel["written"]:
            continue
        accuracy = {key: (v or {}).get("accuracy") for key, v in (result.get("accuracy") or {}).items()}
        fingerprint = ((result.get("fingerprints") or {}).get(backend) or {}).get("fingerprint")
        chosen = set(sel["choice"].values())
        measured = {r["precision"] for r in result["results"] if r["backend"] == backend and r["status"] == "ok"}
        if (
            sel["fingerprint"] != fingerprint
            or sel["reference_accuracy"] != accuracy.get(f"{backend}/fp32")
            or (len(chosen) == 1 and sel["accuracy"] != accuracy.get(f"{backend}/{next(iter(chosen))}"))
            or not chosen <= measured  # so only back ends and precisions asked for, and held by the bundle
        ):
            wrong.append(f"the selection for {backend}, which its fingerprint, accuracies or rows contradict")
        elif sel["accuracy"] < sel["reference_accuracy"] - s.tolerance:
            wrong.append(f"the selection for {backend}, which loses more than --tolerance {s.tolerance:g}")
    if wrong:
        raise UserError(
            f"the bench result from {source} does not answer what was asked ({'; '.join(wrong[:3])}); rerun it there"
        )
    return result


def check_choice(choice, what: str) -> None:
    """A ``--select`` choice is ``{model: precision}`` over :data:`MODELS` and :data:`PRECISIONS`."""
    if not isinstance(choice, dict) or set(choice) != set(MODELS) or not all(p in PRECISIONS for p in choice.values()):
        raise ValueError(f"{what} is {choice!r}, not a precision for each of {', '.join(MODELS)}")


def write_selection(root: Path, fp: str, choice: dict[str, str]) -> None:
    """Record ``{model: precision}`` for device fingerprint ``fp`` in the manifest, atomically (the
    selection is left out of the bundle id, and the file hashes do not cover the manifest)."""
    manifest = load_manifest(root)
    sel = manifest.get("selection")
    manifest["selection"] = {**(sel if isinstance(sel, dict) else {}), fp: dict(choice)}
    write_json(Path(root) / MANIFEST, manifest)
