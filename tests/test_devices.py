"""Device telemetry parsers on real-format samples, the latency protocol, and process memory."""

import subprocess
import sys
from pathlib import Path

import pytest
from rkd_edge.devices.latency import measure, summarize
from rkd_edge.devices.profiles import match_profile
from rkd_edge.devices.telemetry import energy_per_inference_j, parse_meminfo, parse_tegrastats, peak_rss_kb

ORIN = (
    "RAM 2448/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,0%@729,0%@729,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 13% cpu@45.75C soc2@44.593C soc0@45.468C gpu@44.875C tj@45.75C soc1@45.093C "
    "VDD_IN 4556mW/4556mW VDD_CPU_GPU_CV 479mW/479mW VDD_SOC 1437mW/1437mW"
)
XAVIER = (
    "RAM 1993/31928MB (lfb 7037x4MB) SWAP 0/15964MB (cached 0MB) CPU [1%@1190,0%@1190,0%@1190,0%@1190,"
    "0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 APE 150 MTS fg 0% bg 0% AO@35C "
    "GPU@35.5C Tdiode@38.5C PMIC@100C AUX@34.5C CPU@36.5C thermal@35.75C Tboard@35C GPU 310/310 CPU 620/620 "
    "SOC 1550/1550 CV 0/0 VDDRQ 310/310 SYS5V 1736/1736"
)
NANO = (
    "RAM 1543/3964MB (lfb 57x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [6%@102,2%@102,"
    "off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@23C CPU@26C PMIC@100C GPU@24.5C AO@31C "
    "thermal@25C POM_5V_IN 1084/1084 POM_5V_GPU 0/0 POM_5V_CPU 123/123"
)


@pytest.mark.parametrize(
    "line,ram,cores,gpu,power",
    [(ORIN, (2448, 7620), 6, 13, 4556), (XAVIER, (1993, 31928), 8, 0, 1736), (NANO, (1543, 3964), 4, 0, 1084)],
)
def test_tegrastats_formats(line, ram, cores, gpu, power):
    s = parse_tegrastats(line)
    assert (s.ram_used_mb, s.ram_total_mb) == ram
    assert len(s.cpu_load) == cores and s.gpu_load == gpu
    assert s.input_power_mw == power
    assert s.temps_c and all(20 < t < 120 for t in s.temps_c.values())


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
    power = [5000.0, 5000.0, 5000.0, 5000.0]  # 5 W for 3 s, idle 2 W -> 9 J over 100 inferences
    assert energy_per_inference_j(times, power, (0, 3), 2000.0, 100) == pytest.approx(0.09)
    with pytest.raises(ValueError):
        energy_per_inference_j(times, power, (10, 20), 0, 1)


def test_latency_protocol_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0], batch=8)
    assert s["mean_ms"] == 2.5 and s["max_ms"] == 4.0 and s["throughput_per_s"] == pytest.approx(3200)
    r = measure(lambda: sum(range(100)), batch=1, warmup_s=0.01, min_seconds=0.05, min_iterations=50)
    assert r["iterations"] >= 50 and r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


def test_profiles():
    assert match_profile("NVIDIA Jetson AGX Orin Developer Kit").name == "Jetson AGX Orin"
    assert not match_profile("NVIDIA Jetson Nano Developer Kit").fast_int8
    assert match_profile("NVIDIA Jetson Orin Nano Developer Kit").fast_int8
    assert match_profile("Raspberry Pi 4") is None
