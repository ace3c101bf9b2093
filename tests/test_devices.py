"""Device telemetry parsers on real-format samples, the latency protocol, and process memory."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from rkd_edge.devices.detect import detect, parse_device_tree_model, parse_nv_tegra_release, parse_nvpmodel_query
from rkd_edge.devices.estimate import estimate_model, host_profile, load_with_batch, node_costs
from rkd_edge.devices.latency import REFERENCE, drift, interleaved, measure, steal_fraction, summarize
from rkd_edge.devices.lut import check_entries, make_table, measure_entries, read_table
from rkd_edge.devices.profiles import _MATCH_ORDER, ALIASES, DATA, PROFILES, get_profile, load_profiles, match_profile
from rkd_edge.devices.telemetry import (
    PowerMeter,
    TegrastatsSampler,
    jtop_available,
    meminfo_delta,
    parse_meminfo,
    parse_tegrastats,
    peak_rss_kb,
    read_meminfo,
    window_energy_j,
)
from rkd_edge.errors import UserError
from rkd_edge.runtime import Runtime
from tests.conftest import run_cli, write_manifest_as_rkd_edge

# Real tegrastats lines as published, each with the page it was copied from.
# JetPack 4, Jetson Nano (4 GB): https://github.com/evanmayer/effex/issues/12
NANO = (
    "RAM 717/3964MB (lfb 140x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [18%@102,2%@102,0%@102,"
    "0%@102] EMC_FREQ 2%@204 GR3D_FREQ 0%@76 APE 25 PLL@26C CPU@29.5C iwlwifi@33C PMIC@100C GPU@29C AO@38.5C "
    "thermal@29.5C POM_5V_IN 1057/1057 POM_5V_GPU 0/0 POM_5V_CPU 126/126"
)
# JetPack 3/4 format, Jetson TX2: https://github.com/gustavz/realtime_object_detection/issues/24
TX2 = (
    "RAM 1685/7854MB (lfb 1044x4MB) SWAP 278/8192MB (cached 23MB) CPU [0%@1303,0%@345,0%@345,0%@1419,0%@1420,"
    "0%@1421] EMC_FREQ 0%@1866 GR3D_FREQ 0%@140 APE 150 MTS fg 1% bg 8% BCPU@41C MCPU@41C GPU@39C PLL@41C "
    "Tboard@37C Tdiode@37.25C PMIC@100C thermal@39.9C VDD_IN 1931/1931 VDD_CPU 231/231 VDD_GPU 154/154 "
    "VDD_SOC 385/385 VDD_WIFI 38/38 VDD_DDR 326/326"
)
# JetPack 4.2, Jetson AGX Xavier (no total rail: the rails add up): https://github.com/martinkersner/gtop/pull/7
XAVIER = (
    "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,"
    "0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C "
    "CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"
)
# JetPack 5+ format (time stamp, per-GPC GPU frequency list, -256C for powered-off sensors), AGX Orin 64 GB:
# https://github.com/GDWR/jetson_exporter/issues/14
AGX_ORIN = (
    "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ "
    "0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C "
    "CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW "
    "VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
# JetPack 6 format (lower-case sensors, GR3D_FREQ n%@[MHz], 1 MB lfb blocks), Orin Nano/NX 8 GB under load:
# https://github.com/rbonghi/jetson_stats/issues/624
ORIN_JP6 = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) CPU [97%@1984,95%@1984,"
    "95%@1984,91%@1984,88%@1984,93%@247] EMC_FREQ 18%@3199 GR3D_FREQ 84%@[713] NVENC 1%@115 NVDEC 40%@115 "
    "NVJPG off NVJPG1 off VIC 31%@115 OFA off NVDLA0 off PVA0_FREQ off APE 174 cv0@63.031C cpu@65.562C "
    "soc2@64.156C soc0@63.031C cv1@62.937C gpu@63.5C tj@65.562C soc1@64.718C cv2@60.875C VDD_IN "
    "17946mW/15710mW VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW"
)


@pytest.mark.parametrize(
    "line,ram,cores,gpu,power,stamp",
    [
        (NANO, (717, 3964), 4, 0, 1057, None),
        (TX2, (1685, 7854), 6, 0, 1931, None),
        (XAVIER, (14700, 15692), 8, 0, 463 + 618 + 2936 + 0 + 309 + 3306, None),
        (AGX_ORIN, (4321, 62801), 12, 0, 2340 + 390 + 4025 + 301, "04-11-2025 10:36:27"),
        (ORIN_JP6, (6982, 7620), 6, 84, 17946, "05-15-2025 18:30:28"),
    ],
)
def test_tegrastats_formats(line, ram, cores, gpu, power, stamp):
    s = parse_tegrastats(line)
    assert (s.ram_used_mb, s.ram_total_mb) == ram
    assert len(s.cpu_load) == cores and s.gpu_load == gpu
    assert s.input_power_mw == power
    assert s.timestamp == stamp
    assert s.temps_c and all(20 < t < 120 for t in s.temps_c.values())  # -256C (sensor off) dropped


def test_tegrastats_details():
    assert parse_tegrastats(ORIN_JP6).gpu_freq_mhz == 713
    assert parse_tegrastats(ORIN_JP6).rails_mw["VDD_CPU_GPU_CV"] == (8896, 7585)
    assert parse_tegrastats(NANO).gpu_freq_mhz == 76
    assert parse_tegrastats(AGX_ORIN).gpu_freq_mhz == 0 and "NC" not in parse_tegrastats(AGX_ORIN).rails_mw
    assert parse_tegrastats("RAM 1/2MB CPU [off,off]").cpu_load == [None, None]


@pytest.mark.parametrize(
    "line",
    [
        "RAM 1/2MB CPU []",
        "RAM 1/2MB CPU [18%@102,]",
        "RAM 1/2MB CPU [N/A,12.5%@1190,OFF]",
        "RAM 9999/2MB CPU [1%@1] GR3D_FREQ 99999999999999999999%",
        "RAM \u0667\u0661\u0667/\u0663\u0669\u0666\u0664MB VDD_IN 5.1W/5.0W",
        "RAM 1/2MB CPU [\u00b2%@1]",
        "RAM 1/2MB VDD_IN " + "9" * 5000 + "mW/1mW",  # int() refuses 4,300 digits
        "RAM " + "9" * 5000 + "/" + "9" * 5001 + "MB CPU [" + "9" * 5000 + "%@1] tj@" + "9" * 400 + "C",
        "RAM 1/2MB GR3D_FREQ 5%@" + "9" * 5000,
    ],
)
def test_an_odd_tegrastats_line_is_read_as_far_as_it_goes(line):
    """A field out of the tool's format is left unset (it used to raise, which ended the sampler's thread)."""
    s = parse_tegrastats(line)
    assert all(c is None or 0 <= c <= 100 for c in s.cpu_load)
    assert s.gpu_load is None or s.gpu_load <= 100
    assert s.ram_used_mb is None or s.ram_used_mb <= s.ram_total_mb
    assert all(abs(t) < 1e4 for t in s.temps_c.values()) and all(p < 1e9 for p, _ in s.rails_mw.values())


def test_the_sampler_keeps_reading_after_an_odd_line():
    lines = [ORIN_JP6] * 3 + ["RAM 1/2MB CPU [12.5%@1190]"] + [ORIN_JP6] * 3
    code = f"for line in {lines!r}:\n    print(line, flush=True)"
    s = TegrastatsSampler(command=[sys.executable, "-c", code])
    with s:
        time.sleep(0.6)
    assert len(s.samples) == 7 and len(s.power_series()[0]) == 6


def test_tegrastats_sampler_here_and_on_a_replayed_stream():
    here = TegrastatsSampler()
    reason = here.available()
    if shutil.which("tegrastats") is None:
        assert reason and "not found" in reason
    # The same subprocess + reader thread, fed the published JetPack 6 line by a child process.
    code = f"import time\nfor i in range(6):\n    print({ORIN_JP6!r}, flush=True)\n    time.sleep(0.05)"
    s = TegrastatsSampler(command=[sys.executable, "-c", code])
    with s:
        time.sleep(0.6)
    times, power = s.power_series()
    assert len(times) == 6 and power == [17946.0] * 6 and times == sorted(times)
    assert s.peak_ram_mb() == 6982
    assert window_energy_j(times, power, [(times[0], times[-1])]) == pytest.approx(17.946 * (times[-1] - times[0]))


def test_meminfo_delta_and_jtop():
    before = parse_meminfo("MemAvailable:    5000000 kB\nNvMapMemUsed:     100000 kB\n")
    after = parse_meminfo("MemAvailable:    4900000 kB\nNvMapMemUsed:     150000 kB\n")
    assert meminfo_delta(before, after) == {"mem_available_drop_kb": 100000, "nvmap_used_rise_kb": 50000}
    assert "nvmap_used_rise_kb" not in meminfo_delta(read_meminfo(), read_meminfo())  # not a Jetson kernel
    reason = jtop_available()
    try:
        import jtop  # noqa: F401

        assert reason is None
    except ImportError:
        assert "jetson-stats" in reason


def test_meminfo_and_peak_rss():
    info = parse_meminfo(Path("/proc/meminfo").read_text())
    assert info["MemAvailable"] > 0
    sample = "MemTotal:        7620000 kB\nMemAvailable:    5000000 kB\nNvMapMemUsed:     123456 kB\n"
    assert parse_meminfo(sample)["NvMapMemUsed"] == 123456
    code = (
        "import numpy as np; from rkd_edge.devices.telemetry import peak_rss_kb; a = peak_rss_kb(); "
        "b = np.ones(64 * 2**20 // 8); b += 1; print(a, peak_rss_kb())"
    )
    before, after = map(
        int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert after - before > 50_000  # a fresh process: 64 MiB touched shows in VmHWM
    assert peak_rss_kb() > 0


def test_energy_integration():
    times = [0.0, 1.0, 2.0, 3.0]
    power = [5000.0, 5000.0, 9000.0, 9000.0]  # mW
    assert window_energy_j(times, power, [(0, 1)]) == pytest.approx(5.0)
    # between samples the power is interpolated: 1.5 s -> 7 W, so (5 + 7) / 2 W over 0.5 s, then 7..9 W
    assert window_energy_j(times, power, [(1.0, 1.5), (1.5, 2.0)]) == pytest.approx(3.0 + 4.0)
    assert window_energy_j(times, power, [(0.25, 0.5), (2.5, 3.0)]) == pytest.approx(1.25 + 4.5)
    with pytest.raises(ValueError, match="cover"):
        window_energy_j(times, power, [(2.0, 3.5)])
    with pytest.raises(ValueError, match="increase"):
        window_energy_j([0.0, 2.0, 1.0], [5000.0] * 3, [(0, 1)])
    with pytest.raises(ValueError, match="finite"):
        window_energy_j(times, [float("nan")] * 4, [(0, 3)])
    with pytest.raises(ValueError, match="two power samples"):
        window_energy_j([0.0], [5000.0], [(0, 0)])
    assert parse_meminfo("MemTotal: \u00b2 kB\nMemAvailable: 5 kB") == {"MemAvailable": 5}


def test_power_meter_baseline_and_per_variant_energy(tmp_path):
    """A replayed tegrastats stream whose board power steps from 5 W (idle) to 9 W once the work starts
    (a marker file), around a real interleaved timing: idle, mean power and energy per call follow."""
    flag = tmp_path / "busy"
    line = ORIN_JP6.replace("VDD_IN 17946mW/15710mW", "VDD_IN {p}mW/{p}mW")
    code = (
        "import os, time\n"
        "while True:\n"
        f"    p = 9000 if os.path.exists({str(flag)!r}) else 5000\n"
        f"    print({line!r}.format(p=p), flush=True)\n"
        "    time.sleep(0.01)"
    )
    with PowerMeter(interval_ms=10, idle_s=0.3, command=[sys.executable, "-c", code]) as meter:
        flag.touch()
        time.sleep(0.1)  # the stream has stepped up before the first timed slot
        timed = interleaved({"a": lambda: sum(range(2000))}, 4, rounds=3, per_round_s=0.1, warmup_s=0.01)
        section, per = meter.report(timed)
    assert section["status"] == "ok" and section["samples"] > 30 and section["peak_ram_mb"] == 6982
    assert section["idle_w"] == pytest.approx(5.0, abs=0.2)
    rec, seconds = per["a"], sum(b - a for a, b in timed["a"]["windows_s"])
    assert rec["mean_w"] == pytest.approx(9.0, abs=0.01)
    calls = timed["a"]["iterations"]
    assert rec["energy_mj_per_call"] == pytest.approx(9.0 * seconds / calls * 1e3, rel=1e-3)
    assert rec["energy_mj_per_sample"] == pytest.approx(rec["energy_mj_per_call"] / 4, rel=1e-3)
    assert rec["net_energy_mj_per_call"] == pytest.approx((9.0 - section["idle_w"]) * seconds / calls * 1e3, rel=1e-3)


def _meter_on(stream: str, tmp_path) -> tuple[dict, dict, dict]:
    """A PowerMeter over a child that runs ``stream`` (Python; ``LINE`` is a published Orin line with VDD_IN
    {p} mW), around a short real timing; returns its section, per-variant records and the timing."""
    line = ORIN_JP6.replace("VDD_IN 17946mW/15710mW", "VDD_IN {p}mW/{p}mW")
    code = f"import sys, time\nLINE = {line!r}\n" + stream
    with PowerMeter(interval_ms=10, idle_s=0.3, command=[sys.executable, "-c", code]) as meter:
        timed = interleaved({"a": lambda: sum(range(2000))}, 1, rounds=3, per_round_s=0.1, warmup_s=0.01)
        section, per = meter.report(timed)
    return section, per, timed


EVERY_10_MS = "while True:\n    {body}\n    sys.stdout.flush()\n    time.sleep(0.01)"


@pytest.mark.parametrize(
    "body,status,mean_w",
    [
        # a line without VDD_IN (the sum of the other rails) is not read as the board's power
        ("print(LINE.format(p=2000)); print(LINE.replace(' VDD_IN {p}mW/{p}mW', ''))", "ok", 2.0),
        # readings no board draws (1 GW) are dropped, not averaged in
        ("print(LINE.format(p=2000)); print(LINE.format(p=999999999))", "ok", 2.0),
        # one line of bytes that are no UTF-8, and a 100 kB line without a newline: read past, bounded
        (
            "sys.stdout.buffer.write(b'\\xff\\xfe RAM 1/2MB \\x80\\n' + b'RAM ' * 25000); print(); "
            "print(LINE.format(p=3000))",
            "ok",
            3.0,
        ),
        # no reading at all: says what the tool printed
        ("print('tegrastats: need root to read the rails')", "failed: ", None),
    ],
)
def test_power_meter_reads_only_the_board_rail_and_says_why_not(body, status, mean_w, tmp_path, capfd):
    section, per, _ = _meter_on(EVERY_10_MS.format(body=body), tmp_path)
    assert section["status"].startswith(status), section
    if mean_w is not None:
        assert per["a"]["mean_w"] == pytest.approx(mean_w, abs=1e-3) and section["idle_w"] == pytest.approx(mean_w)
        assert per["a"]["net_energy_mj_per_call"] == 0.0  # constant power: nothing above idle, not "None"
    else:
        assert "gave no board power reading" in section["status"] and "need root" in section["status"]
    assert "Traceback" not in capfd.readouterr().err


def test_power_meter_that_cannot_start_leaves_the_timing(tmp_path):
    bad = tmp_path / "tegrastats"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    with PowerMeter(command=[str(bad)]) as meter:
        section, per = meter.report({})
    assert per == {} and section["status"].startswith("failed: cannot start") and "No such file" in section["status"]


def test_power_meter_off_a_jetson_says_why():
    with PowerMeter(command=["no-such-tegrastats-here"]) as meter:
        section, per = meter.report({})
    assert per == {} and section == {"status": "unavailable here: no-such-tegrastats-here not found on PATH: "
                                               "not a Jetson (or L4T's tegrastats is not installed)"}  # fmt: skip


def test_latency_protocol_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0], batch=8)
    assert s["mean_ms"] == 2.5 and s["max_ms"] == 4.0 and s["throughput_per_s"] == pytest.approx(3200)
    r = measure(lambda: sum(range(100)), batch=1, warmup_s=0.01, min_seconds=0.05, min_iterations=50)
    assert r["iterations"] >= 50 and r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


def test_interleaved_reports_rounds_and_the_machine_reference():
    res = interleaved({"a": lambda: sum(range(200))}, 4, rounds=3, per_round_s=0.02, warmup_s=0.01, reference=True)
    assert set(res) == {"a", REFERENCE} and res["a"]["batch"] == 4 and res[REFERENCE]["batch"] == 1
    assert all(len(v["round_p50_ms"]) == 3 and min(v["round_p50_ms"]) > 0 for v in res.values())
    a = res["a"]  # the kernel's p50 next to each of a's rounds, and a's p50 in its units
    ratios = sorted(x / r for x, r in zip(a["round_p50_ms"], a["round_reference_p50_ms"], strict=True))
    assert len(a["round_reference_p50_ms"]) == 3 and a["p50_per_reference"] == pytest.approx(ratios[1])
    with pytest.raises(ValueError, match="may not be called"):
        interleaved({REFERENCE: lambda: None}, 1, rounds=1, per_round_s=0.01, reference=True)
    assert drift([1.0, 1.1, 1.2]) == pytest.approx(0.16 / 1.1) and drift([2.0]) == 0.0
    assert drift([1.0] * 9 + [2.0]) == pytest.approx(0.1)  # one slow round of ten barely counts
    # /proc/stat columns: user nice system idle iowait irq softirq steal
    assert steal_fraction([0] * 8, [50, 0, 10, 30, 0, 0, 0, 10]) == 0.1
    assert steal_fraction(None, [1] * 8) is None and steal_fraction([1] * 8, [1] * 8) == 0.0


def test_profiles():
    assert match_profile("NVIDIA Jetson AGX Orin Developer Kit").name == "Jetson AGX Orin 64GB"
    assert not match_profile("NVIDIA Jetson Nano Developer Kit").fast_int8
    assert match_profile("NVIDIA Jetson Orin Nano Developer Kit").fast_int8
    assert match_profile("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super").key == "orin-nano-8gb"
    assert match_profile("NVIDIA Jetson Xavier NX Developer Kit").key == "xavier-nx"
    assert match_profile("Jetson-AGX").key == "agx-xavier"  # L4T 32 device-tree name of AGX Xavier
    assert match_profile("quill").key == "tx2"
    assert match_profile("NVIDIA Jetson AGX Thor Developer Kit").key == "thor"
    assert match_profile("Raspberry Pi 4") is None
    assert get_profile("agx-orin").key == "agx-orin-64gb"
    with pytest.raises(UserError, match="known: nano"):
        get_profile("jetson-9000")


def test_every_figure_has_a_source_or_says_unverified():
    needed = (
        "sm_count",
        "tensor_cores",
        "memory_gb",
        "memory_bandwidth_gbs",
        "fp16_dense_tflops",
        "int8_dense_tops",
        "compute_capability",
        "jetpack",
        "tensorrt",
        "max_onnx_opset",
        "fast_int8",
        "cpu_cores",
        "power_modes",
    )
    for p in PROFILES.values():
        for f in needed:
            src = p.sources.get(f, "")
            if p.tensor_cores == 0 and f == "tensor_cores":
                continue
            assert src.startswith(("http", "derived:", "unverified:", "none:")), (p.key, f, src)
    assert {p.key for p in PROFILES.values() if not p.fast_int8} == {"nano", "tx2"}
    assert [p.max_onnx_opset for p in (PROFILES["nano"], PROFILES["agx-xavier"])] == [13, 17]
    # The derived dense rate agrees with the published GPU figure (AGX Orin 64 GB: 170 sparse = 85 dense).
    assert PROFILES["agx-orin-64gb"].int8_dense_tops == pytest.approx(85, rel=0.01)
    assert PROFILES["agx-xavier"].fp16_dense_tflops == pytest.approx(11, rel=0.05)


def test_profile_data_is_whole():
    """Derived figures come out of the rules (module docstring); aliases and match order name real profiles."""
    assert (PROFILES["agx-orin-64gb"].cuda_cores, PROFILES["agx-orin-64gb"].fp32_tflops) == (2048, 5.32)
    assert PROFILES["xavier-nx"].fp32_tflops == 0.845 and PROFILES["orin-nano-4gb"].int8_dense_tops == 10.24
    assert PROFILES["orin-nano-4gb"].sources["cuda_cores"] == "derived: SMs x 128"
    assert PROFILES["thor"].sources["jetpack"].startswith("https://")  # {page} names are filled in
    assert sorted(_MATCH_ORDER) == sorted(PROFILES) and set(ALIASES.values()) <= set(PROFILES)
    # `devices show` promises every figure's page or "unverified": Nano's tensor_cores and cache had neither
    for key, profile in PROFILES.items():
        bare = [k for k, f in profile.figures().items() if not f["source"] and k not in ("key", "name", "match")]
        assert not bare, (key, bare)


def _drop(d: dict, key: str):
    del d[key]


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: _drop(d["profiles"]["nano"], "name"), "profile 'nano', field 'name': missing"),
        (
            lambda d: _drop(d["profiles"]["nano"], "cuda_cores"),
            "profile 'nano', field 'cuda_cores': missing, and not derivable without a per-SM",
        ),
        (
            lambda d: d["profiles"]["tx2"].update(compute_capability=6.2),
            "profile 'tx2', field 'compute_capability': expected str, got float 6.2",
        ),
        (
            lambda d: d["jetpack_releases"]["jetpack-7.0"].update(jetpack=7.0),
            "profile 'thor', field 'jetpack': expected str, got float 7.0",
        ),
        (
            lambda d: d["profiles"]["thor"].update(memory_gb="128"),
            r"profile 'thor', field 'memory_gb': expected tuple\[int, ...\], got str '128'",
        ),
        (lambda d: d["profiles"]["thor"].update(sm_count=True), "field 'sm_count': expected int, got bool"),
        (lambda d: d["profiles"]["thor"].update(gpu_clok_ghz=1.5), "field 'gpu_clok_ghz': not a DeviceProfile"),
        (
            lambda d: d["profiles"]["thor"]["sources"].update(sm_count="{thor_sn}"),
            r"field 'sm_count': its source names \{thor_sn\}, which is not under pages",
        ),
        (
            lambda d: d["profiles"]["thor"].update(release="jetpack-9"),
            "profile 'thor', field 'release': 'jetpack-9' is not a mapping under jetpack_releases",
        ),
    ],
)
def test_malformed_profile_data_names_profile_and_field(tmp_path, change, message):
    data = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    assert load_profiles(DATA) == PROFILES
    change(data)
    bad = tmp_path / "profiles.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_profiles(bad)


# /etc/nv_tegra_release as L4T writes it (format as read by jetson-stats, jtop/core/jetson_variables.py).
RELEASES = [
    (
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
        "DATE: Sat Feb 19 17:05:08 UTC 2022",
        "32.7.1",
        "4.6.x",
        "t210ref",
    ),
    (
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
        "DATE: Tue Aug  1 19:57:35 UTC 2023",
        "35.4.1",
        "5.1.2",
        "t186ref",
    ),
    (
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
        "DATE: Fri Sep 13 04:36:44 UTC 2024",
        "36.4.0",
        "6.1 / 6.2",
        "generic",
    ),
]


@pytest.mark.parametrize("text,l4t,jetpack,board", RELEASES)
def test_l4t_release_parser(text, l4t, jetpack, board):
    assert parse_nv_tegra_release(text + "\n# KERNEL_VARIANT: oot\n") == {
        "l4t": l4t,
        "jetpack": jetpack,
        "board": board,
    }


def test_detect_parsers_and_host(tmp_path):
    assert (
        parse_device_tree_model(b"NVIDIA Jetson Xavier NX Developer Kit\x00") == "NVIDIA Jetson Xavier NX Developer Kit"
    )
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == {"power_mode": "MAXN", "power_mode_id": 0}
    # '²'.isdigit() is True and int() refuses it; 5,000 digits are no mode id either: a traceback before
    for odd in ("\u00b2", "9" * 5000):
        assert parse_nvpmodel_query(f"NV Power Mode: MAXN\n{odd}\n") == {"power_mode": "MAXN"}
    assert parse_device_tree_model(b"NVIDIA Jetson \x1b]0;PWNED\x07Orin\x00") == "NVIDIA Jetson ]0;PWNEDOrin"
    assert parse_nvpmodel_query("NVPM VERB: Current mode: NV Power Mode: 15W\n2\n")["power_mode"] == "15W"
    assert parse_nv_tegra_release("Ubuntu 22.04") == {}
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (tmp_path / "etc/nv_tegra_release").write_text(RELEASES[2][0])
    d = detect(root=tmp_path, run_nvpmodel=False)
    assert d.jetson and d.profile == "agx-orin-64gb" and d.l4t == "36.4.0" and d.jetpack == "6.1 / 6.2"
    if not Path("/etc/nv_tegra_release").exists():
        here = detect()
        assert not here.jetson and here.reason.startswith("not a Jetson") and here.cpu in here.reason


def _tiny_onnx(path: Path) -> Path:
    """image [B,1,8,8] -> Conv 3x3 (4 ch) -> Relu -> Flatten -> MatMul [256, 10]: FLOPs known by hand."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "m"),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_roofline_counts_and_estimates(tmp_path):
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    costs = {c.op: c for c in node_costs(load_with_batch(path, 2))}
    assert costs["Conv"].flops == 2 * (2 * 4 * 8 * 8) * 9  # 2 x out elements x Cin x k x k
    assert costs["MatMul"].flops == 2 * (2 * 10) * 256
    assert costs["Relu"].fused and costs["Flatten"].view and costs["Flatten"].bytes == 0
    orin = get_profile("agx-orin-64gb")
    e1, e32 = (estimate_model(path, orin, "fp16", b) for b in (1, 32))
    assert e32["latency_ms"] > e1["latency_ms"] and e32["gflops"] == pytest.approx(32 * e1["gflops"], rel=0.02)
    assert e1["launches"] == 2 and e1["overhead_ms"] == pytest.approx(2 * orin.launch_overhead_us / 1e3)
    fp32, int8 = (estimate_model(path, orin, p, 32) for p in ("fp32", "int8"))
    assert int8["mbytes_moved"] < fp32["mbytes_moved"] and int8["weights_mb"] < fp32["weights_mb"]
    for p in PROFILES.values():  # every profile estimates; INT8 only where it is fast
        assert estimate_model(path, p, "fp16", 1)["latency_ms"] > 0
        if not p.fast_int8:
            with pytest.raises(UserError, match="no fast INT8"):
                estimate_model(path, p, "int8", 1)
    host = host_profile(
        rates={
            "fp32_tflops": 0.1,
            "int8_dense_tops": 0.4,
            "memory_bandwidth_gbs": 10.0,
            "cache_bandwidth_gbs": 50.0,
            "cache_mb": 2.0,
            "launch_overhead_us": 2.0,
        }
    )
    assert host.key == "host" and estimate_model(path, host, "int8", 1)["latency_ms"] > 0


def test_latency_table_measured_and_validated(tmp_path):
    import torch

    keys = [("conv", 4, 8, 1), ("pool", 4, 8, 2)]

    def make(op, c, stride):
        return torch.nn.Conv2d(c, c, 3, stride, 1) if op == "conv" else torch.nn.AvgPool2d(3, stride, 1)

    fast = {"warmup_s": 0.01, "min_seconds": 0.02, "min_iterations": 5}
    for precision in ("fp32", "int8"):
        entries = measure_entries(keys, make, precision, protocol=fast)
        assert set(entries) == {"conv|4|8|1", "pool|4|8|2"} and all(v > 0 for v in entries.values())
    table = make_table(entries, "int8")
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(table))
    assert read_table(path)["precision"] == "int8" and table["protocol"]["timer"].endswith("latency.measure")
    check_entries(read_table(path), ["conv|4|8|1"], path)
    with pytest.raises(UserError, match="lacks 1 of the 2"):
        check_entries(table, ["conv|4|8|1", "conv|8|8|1"], path)
    with pytest.raises(UserError, match="another search skeleton"):
        check_entries(table, ["sep_conv_3x3|16|8|1"], path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        read_table(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "rkd-edge-bundle", "device": "x", "entries": {}}))
    with pytest.raises(UserError, match="not a latency table"):
        read_table(tmp_path / "other.json")


def test_search_refuses_a_bad_table_before_training(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"device": "host", "unit": "ms", "entries": {"x|1|1|1": 1.0}}))
    out = tmp_path / "run"
    r = run_cli("search", "--out", str(out), "--cost", "latency", "--latency-table", str(tmp_path / "t.json"))
    assert r.returncode == 2 and "another search skeleton" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_devices_cli():
    r = run_cli("devices", "list")
    assert r.returncode == 0 and "agx-orin-64gb" in r.stdout and "thor" in r.stdout
    r = run_cli("devices", "show", "nano", "--json")
    figs = json.loads(r.stdout)
    assert figs["max_onnx_opset"]["value"] == 13 and figs["max_onnx_opset"]["source"].startswith("https://")
    r = run_cli("devices", "show", "jetson-9000")
    assert r.returncode == 2 and "known: nano, tx2" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("devices", "detect", "--json")
    assert r.returncode == 0 and "jetson" in json.loads(r.stdout)


def test_export_target_refusals(tmp_path):
    for args, msg in [
        (["--target", "nano"], "parses ONNX up to opset 13"),
        (["--target", "agx-xavier", "--opset", "18"], "above what Jetson AGX Xavier"),
        (["--target", "tx2", "--int8"], "no fast INT8"),
        (["--target", "nope"], "unknown device"),
    ]:
        r = run_cli("export", str(tmp_path), "--out", str(tmp_path / "b"), *args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_a_bundle_exported_for_a_target_records_it(tiny_run, tmp_path):
    r = run_cli("-q", "export", str(tiny_run), "--out", str(tmp_path / "b"), "--target", "xavier-nx")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["target"] == {
        "profile": "xavier-nx",
        "name": "Jetson Xavier NX",
        "tensorrt": "8.5.2",
        "max_onnx_opset": 17,
    }
    assert m["opset"] == 17 and "target" not in json.loads((tmp_path / "b" / "config.json").read_text())
    Runtime(str(tmp_path / "b"))  # a manifest with its target still verifies
    r = run_cli("devices", "show", "orin-nano")
    assert "7W / 15W" in r.stdout and "('" not in r.stdout  # a module's variants as a person reads them


def test_estimate_cli_on_a_bundle(tiny_bundle, tmp_path):
    r = run_cli("devices", "estimate", str(tiny_bundle), "--device", "thor", "--batch", "1,32", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["kind"] == "estimate" and "roofline" in res["method"]
    assert {(x["model"], x["precision"], x["batch"]) for x in res["results"]} >= {
        ("encoder", "int8", 32),
        ("rx", "fp16", 1),
    }
    for model in ("encoder", "tx", "rx"):  # every node's shape known, so cost grows with the batch
        rows = {x["batch"]: x for x in res["results"] if (x["model"], x["precision"]) == (model, "fp16")}
        assert rows[32]["gflops"] == pytest.approx(32 * rows[1]["gflops"], rel=0.02), model
        graph = load_with_batch(tiny_bundle / "models" / f"{model}.onnx", 1)
        assert all(c.flops > 0 for c in node_costs(graph) if c.op in ("MatMul", "Gemm", "Conv")), model
    r = run_cli("devices", "estimate", str(tiny_bundle), "--device", "nano", "--precision", "int8")
    assert r.returncode == 2 and "no fast INT8" in r.stderr
    r = run_cli("devices", "estimate", str(tiny_bundle), "--device", "host", "--precision", "fp32,int8")
    assert r.returncode == 0 and "ESTIMATE" in r.stdout and "encoder" in r.stdout


def test_the_host_estimates_int8_only_for_a_bundle_that_holds_it(tiny_run, tmp_path):
    """On the host ONNX Runtime runs the bundle's own Q/DQ graphs: an FP32-only bundle has none (its INT8 rows
    were the FP32 graph relabelled)."""
    b = tmp_path / "fp32"
    run_cli("-q", "export", str(tiny_run), "--out", str(b), check=True)
    r = run_cli("devices", "estimate", str(b), "--device", "host", "--json")
    assert r.returncode == 0, r.stderr
    assert {x["precision"] for x in json.loads(r.stdout)["results"]} == {"fp32"}
    r = run_cli("devices", "estimate", str(b), "--device", "host", "--precision", "int8")
    assert r.returncode == 2 and "no INT8 models" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_latency_table_is_never_written_through_a_link(tmp_path):
    link = tmp_path / "table.json"
    link.symlink_to(tmp_path / "nowhere.json")
    r = run_cli("devices", "lut", "--out", str(link))
    assert r.returncode == 2 and "symbolic link" in r.stderr, r.stderr
    assert link.is_symlink() and not (tmp_path / "nowhere.json").exists()


def _external_data(model) -> None:
    t = model.graph.initializer[0]
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../secret.txt"), ("offset", "0"), ("length", str(n))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def _custom_op(model) -> None:
    model.graph.node[0].domain = "evil.custom"
    model.opset_import.add(domain="evil.custom", version=1)


def _shape_from_values(model, op: str) -> None:
    """Add to the first output a tensor whose shape comes from the input's values: through ``op`` (a
    NonZero), or through ReduceMax + 1.6e13 (16 TB of zeros the probe of open shapes would allocate)."""
    import numpy as np
    from onnx import helper, numpy_helper

    out, image = model.graph.output[0].name, model.graph.input[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_before" if o == out else o for o in node.output]
    model.graph.initializer.extend([numpy_helper.from_array(np.array([200_000, 200_000, 100], np.int64), "huge")])
    if op == "NonZero":
        shaped = [helper.make_node("NonZero", [image], ["where"]), helper.make_node("Shape", ["where"], ["shape"])]
    else:
        shaped = [
            helper.make_node("ReduceMax", [image], ["top"], keepdims=0),
            helper.make_node("Cast", ["top"], ["top_int"], to=TensorProto.INT64),
            helper.make_node("Add", ["top_int", "huge"], ["shape"]),
        ]
    model.graph.node.extend(
        [
            *shaped,
            helper.make_node("ConstantOfShape", ["shape"], ["filled"]),
            helper.make_node("ReduceSum", ["filled"], ["total"], keepdims=0),
            helper.make_node("Add", [f"{out}_before", "total"], [out]),
        ]
    )


@pytest.mark.parametrize(
    "damage,needle",
    [
        (_external_data, "external data"),
        (_custom_op, "uses operator evil.custom:"),
        (lambda m: _shape_from_values(m, "NonZero"), "has a NonZero node, whose output shape depends on"),
        (lambda m: _shape_from_values(m, "ReduceMax"), "failed in ONNX Runtime (ConstantOfShape: Failed to allocate"),
    ],
    ids=["external-data", "custom-op", "value-shaped", "probe-fails"],
)
def test_estimate_refuses_a_model_no_bundle_holds(tiny_bundle, tmp_path, damage, needle):
    """(Rehashed) encoders whose weights point at another file, here outside the bundle (an onnx
    ValidationError traceback; the estimate never opens that file), with an operator of another domain
    (estimated at 0 cost, exit 0, where evaluate and bench refuse it), with a shape that depends on values
    (estimated on zeros: 0 FLOPs, exit 0) or that fails when its open shapes are measured (a traceback):
    one line, exit 2."""
    import hashlib

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    path = bundle / "models" / "encoder.onnx"
    model = onnx.load(str(path))
    damage(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["models/encoder.onnx"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest_as_rkd_edge(bundle, manifest)
    r = run_cli("devices", "estimate", str(bundle), "--device", "thor")
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_search_priced_by_an_int8_table_records_it(tiny_teacher_dir, tmp_path):
    """``search --cost latency --precision int8``: the table's precision is checked and recorded in the
    genotype. The table has the real format and every key the skeleton needs; its times are made up (the
    search's plumbing is under test here, the measuring is the test above), with separable convolutions
    priced 50x higher as an INT8 table on this CPU would."""
    from rkd_edge.config import load_config
    from rkd_edge.nas.cost import latency_keys
    from rkd_edge.nas.search import make_skeleton
    from rkd_edge.rundir import load_splits
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides()
    cfg = load_config("quickstart", None, [v for v in overrides if v != "--set"])
    keys = latency_keys(make_skeleton(cfg, load_splits(cfg)))
    entries = {"|".join(map(str, k)): (5.0 if k[0].startswith("sep_conv") else 0.1) for k in keys}
    (tmp_path / "t.json").write_text(json.dumps(make_table(entries, "int8")))
    args = ["-q", "search", "--teacher", f"local:{tiny_teacher_dir}", "--cost", "latency"]
    args += ["--latency-table", str(tmp_path / "t.json"), *overrides]
    refused = run_cli(*args, "--out", str(tmp_path / "fp32"), "--precision", "fp32")
    assert refused.returncode == 2 and "measured in int8" in refused.stderr and not (tmp_path / "fp32").exists()
    run_cli(*args, "--out", str(tmp_path / "int8"), "--precision", "int8", check=True)
    g = json.loads((tmp_path / "int8" / "genotype.json").read_text())
    assert g["search"]["cost"] == "latency" and g["search"]["latency_table"]["precision"] == "int8"
    assert g["latency_ms"] > 0


def test_a_huge_argument_is_quoted_short():
    r = run_cli("devices", "show", "a" * 100_000)
    assert r.returncode == 2 and "unknown device" in r.stderr and len(r.stderr) < 3000, len(r.stderr)
    r = run_cli("devices", "show", "")
    assert r.returncode == 2 and "the argument after 'devices show' is empty" in r.stderr, r.stderr


def test_a_latency_table_carries_its_resolved_config(tmp_path):
    """The README promises the resolved config beside every artefact of a config command: the table had only
    its skeleton and environment."""
    table = tmp_path / "t.json"
    sets = ["--set", "search.layers=2", "--set", "search.steps=2", "--set", "search.init_channels=4"]
    run_cli("-q", "devices", "lut", "--out", str(table), *sets, check=True)
    t = json.loads(table.read_text())
    assert t["config"]["search"]["init_channels"] == 4 and t["config"]["seed"] == 0 and t["skeleton"]["layers"] == 2
