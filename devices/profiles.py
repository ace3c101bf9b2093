"""Jetson device profiles as data: what the toolkit needs to build, export and estimate for each module.

Every figure carries the public page it was read from (``sources[field]``). A figure whose page could not
be found is kept only where the toolkit needs a number, and its source says ``unverified: ...`` instead
of a URL (``rkd-edge devices show NAME`` prints both). Derived figures say how they were derived.

Dense throughputs: NVIDIA quotes Orin and Thor in *sparse* INT8 TOPS (and, for Orin NX / AGX Orin, with
the DLAs added in). The estimator needs the GPU's dense rate, so ``fp16_dense_tflops`` and
``int8_dense_tops`` are derived from tensor cores x clock x ops per clock (Volta: 128 FP16 / 256 INT8
ops per tensor core per clock; Ampere GA10B: 512 / 1024), checked against a published GPU figure where
one was found (AGX Xavier 11 TFLOPS FP16; AGX Orin 64 GB 170 sparse INT8 TOPS on the GPU = 85 dense).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rkd_edge.errors import UserError

# Pages the figures were read from (found with the project's search tool; third-party pages are named so).
_NANO_DQ = "https://gist.github.com/r7vme/45ad34e9c2e8d8cd1c01d94975ee6bee"  # deviceQuery on a Nano
_NANO_VENDOR = "https://github.com/YahboomTechnology/Jetson-NANO-4GB"  # 128-core Maxwell, 4 GB, 472 GFLOPS
_TX2_DQ = "https://gist.github.com/r7vme/d9a3f29771c3c69fc5702fd90ca7739a"  # deviceQuery on a TX2
_TX2_HF = "https://huggingface.co/hardware/jetson-tx2"  # 8 GB, 1.33 TFLOPS, 15 W
_XAVIER_DQ = "https://gist.github.com/r7vme/7276929c7ddcce41eb0872d389634e4d"  # deviceQuery on AGX Xavier
_XAVIER_SPEC = "https://gist.github.com/discort/2213fcd6a2d408e930d3b53334332f9d"  # 512-core Volta, 8 cores, 137 GB/s
_XAVIER_TC = "https://jonathan-hui.medium.com/ai-edge-chips-nvidia-jetson-xavier-nx-agx-xavier-google-coral-edge-tpu-80c0ffae3ab8"
_XAVIER_MODES = "https://github.com/ShreyasSkandanS/nvidia_xavier_utils"  # 10 W, 15 W, 30 W
# NVIDIA Xavier NX data sheet DA-09366-001 (preliminary), mirrored:
_XNX_DS = (
    "https://documents.pub/document/data-sheet-preliminary-nvidia-jetson-xavier-nx-jetson-xavier-nx-integrates.html"
)
_XNX_HF = "https://huggingface.co/hardware/jetson-xavier-nx"  # 16 GB, 20 W
_ORIN_NANO_DS = "https://www.scribd.com/document/673174036/Orin-nano-datasheet"  # NVIDIA Orin Nano data sheet, mirrored
_ORIN_NANO_SUPER = "https://www.brojogopalsapui.com/ai-foundations/sub_contents/AI_hardware/jetson_orin_nano_light.html"
_ORIN_NX_DS = "https://github.com/icub-tech-iit/cad-libraries/files/13056089/JETSON-ORIN-NX-DATASHEET.pdf"
_ORIN_NX_DQ = "https://gist.github.com/atinfinity/8cede915acda05d0ff427c09604735dd"  # deviceQuery on an Orin NX 16 GB
_ORIN_TPU = "https://github.com/huggingface/huggingface.js/pull/1333"  # TechPowerUp figures quoted in review
_AGX_ORIN_TB = "http://mzph.cn/web/30785.shtml"  # summary of NVIDIA's Jetson AGX Orin technical brief
_AGX_ORIN_CORES = "https://github.com/apache/tvm/pull/16231"  # 32 GB: 8 cores, 64 GB: 12 cores
_AGX_ORIN_275 = "https://blog.us.fixstars.com/?p=1855&preview=true"  # 15-60 W, 275 sparse INT8 TOPS
_THOR_GPU = "https://developer.ridgerun.com/wiki/index.php/NVIDIA_Jetson_AGX_Thor/Blackwell_GPU"
_THOR_SM = (
    "https://forums.developer.nvidia.com/t/clarification-on-cuda-core-and-tensor-core-counts-for-jetson-agx-thor/356355"
)
_THOR_HF = "https://huggingface.co/hardware/jetson-t5000"  # 128 GB, 258.5 TFLOPS, 130 W
_THOR_POWER = "https://learnaivisually.com/ai-explained/jetson-thor-edge-blackwell"  # 2070 FP4 TFLOPS, 40-130 W
_JP46 = "https://gist.github.com/Tiryoh/2b5dc1f86ab6bc3e6922e97a4c1ac2f2"  # JetPack 4.6.x = L4T 32.7.1, TensorRT 8.2.1
_JP512 = "https://github.com/edgehook/Jetson-AI-task"  # JetPack 5.1.2 = L4T 35.4.1, TensorRT 8.5.2
_JP61 = "https://pytorch.org/TensorRT/getting_started/jetpack.html"  # JetPack 6.1: CUDA 12.6, TensorRT 10.3
_JP70 = "https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.0.md"  # JetPack 7.0 = Jetson Linux 38.2
_TRT82_OPSET = "https://github.com/onnx/onnx-tensorrt/blob/release/8.2-GA/docs/operators.md"  # "up to Opset 13"
_TRT85_OPSET = "https://github.com/onnx/onnx-tensorrt/blob/release/8.5-GA/docs/operators.md"  # "up to Opset 17"
_CUDA_TABLE = "https://github.com/rbonghi/jetson_stats/blob/master/jtop/core/jetson_variables.py"  # SoC -> CC


def unverified(why: str) -> str:
    return f"unverified: {why}"


@dataclass(frozen=True)
class DeviceProfile:
    """One Jetson module. Units: GB, GB/s, GHz, TFLOPS / TOPS (dense, GPU only), W.

    ``fast_int8`` is False where TensorRT has no fast INT8 path (Maxwell Nano, Pascal TX2 with compute
    capability 6.2): INT8 is refused there. ``max_onnx_opset`` is the highest opset that the module's
    TensorRT ONNX parser accepts.
    """

    key: str
    name: str
    gpu_arch: str
    compute_capability: str
    fast_int8: bool
    jetpack: str
    tensorrt: str
    max_onnx_opset: int
    memory_gb: tuple[int, ...]
    sm_count: int
    cuda_cores: int
    tensor_cores: int
    gpu_clock_ghz: float
    memory_bandwidth_gbs: float
    fp32_tflops: float
    fp16_dense_tflops: float
    int8_dense_tops: float | None
    cpu_cores: int
    cpu: str
    power_modes: tuple[str, ...]
    l4t: str
    match: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    # Per-kernel launch cost used by the estimate; not a published figure (see devices/estimate.py).
    launch_overhead_us: float = 10.0
    # Optional: bandwidth for per-node traffic up to ``cache_mb`` (measured for the host; None on Jetsons,
    # where no cache figure was found and the DRAM bandwidth is used for every node).
    cache_bandwidth_gbs: float | None = None
    cache_mb: float = 0.0

    def figures(self) -> dict:
        """All fields with their sources, for ``--json`` and the ``show`` table."""
        d = asdict(self)
        src = d.pop("sources")
        return {k: {"value": v, "source": src.get(k, "")} for k, v in d.items()}

    def unverified_fields(self) -> list[str]:
        return sorted(k for k, v in self.sources.items() if v.startswith("unverified"))


def _p(**kw) -> DeviceProfile:
    return DeviceProfile(**kw)


_JP4_COMMON = {
    "jetpack": "4.6.x",
    "l4t": "32.7",
    "tensorrt": "8.2.1",
    "max_onnx_opset": 13,
}
_JP4_SRC = {"jetpack": _JP46, "l4t": _JP46, "tensorrt": _JP46, "max_onnx_opset": _TRT82_OPSET}
_JP5_COMMON = {"jetpack": "5.1.2", "l4t": "35.4.1", "tensorrt": "8.5.2", "max_onnx_opset": 17}
_JP5_SRC = {"jetpack": _JP512, "l4t": _JP512, "tensorrt": _JP512, "max_onnx_opset": _TRT85_OPSET}
_JP6_COMMON = {"jetpack": "6.1", "l4t": "36.4", "tensorrt": "10.3", "max_onnx_opset": 20}
_JP6_SRC = {
    "jetpack": _JP61,
    "l4t": unverified("JetPack 6.1 = Jetson Linux 36.4 not found on a page in the search corpus"),
    "tensorrt": _JP61,
    "max_onnx_opset": unverified(
        "onnx-tensorrt release/10.3-GA operators.md not in the search corpus; TensorRT 10.x parses at least opset 17"
    ),
}


def _ampere(tc: int, ghz: float) -> tuple[float, float]:
    """Dense FP16 TFLOPS and INT8 TOPS of GA10B tensor cores (512 / 1024 ops per core per clock)."""
    return round(tc * 512 * ghz / 1e3, 2), round(tc * 1024 * ghz / 1e3, 2)


def _volta(tc: int, ghz: float) -> tuple[float, float]:
    """Dense FP16 TFLOPS and INT8 TOPS of Xavier's Volta tensor cores (128 / 256 ops per core per clock)."""
    return round(tc * 128 * ghz / 1e3, 2), round(tc * 256 * ghz / 1e3, 2)


_DERIVED_TC = "derived: tensor cores x GPU clock x ops/clock (module docstring)"
_DERIVED_CUDA = "derived: CUDA cores x 2 FLOP (FMA) x GPU clock"


def _orin(key, name, sms, tc, ghz, mem, bw, cpu_cores, modes, srcs, match) -> DeviceProfile:
    fp16, int8 = _ampere(tc, ghz)
    return _p(
        key=key,
        name=name,
        gpu_arch="Ampere",
        compute_capability="8.7",
        fast_int8=True,
        memory_gb=mem,
        sm_count=sms,
        cuda_cores=sms * 128,
        tensor_cores=tc,
        gpu_clock_ghz=ghz,
        memory_bandwidth_gbs=bw,
        fp32_tflops=round(sms * 128 * 2 * ghz / 1e3, 2),
        fp16_dense_tflops=fp16,
        int8_dense_tops=int8,
        cpu_cores=cpu_cores,
        cpu="Arm Cortex-A78AE",
        power_modes=modes,
        match=match,
        launch_overhead_us=5.0,
        sources={
            "compute_capability": _CUDA_TABLE,
            "fast_int8": _CUDA_TABLE,
            "fp32_tflops": _DERIVED_CUDA,
            "fp16_dense_tflops": _DERIVED_TC,
            "int8_dense_tops": _DERIVED_TC,
            "cuda_cores": "derived: SMs x 128",
            "launch_overhead_us": unverified("assumed per-kernel cost, not a published figure"),
            **_JP6_SRC,
            **srcs,
        },
        **_JP6_COMMON,
    )


PROFILES: dict[str, DeviceProfile] = {
    "nano": _p(
        key="nano",
        name="Jetson Nano",
        gpu_arch="Maxwell",
        compute_capability="5.3",
        fast_int8=False,
        memory_gb=(4,),
        sm_count=1,
        cuda_cores=128,
        tensor_cores=0,
        gpu_clock_ghz=0.921,
        memory_bandwidth_gbs=25.6,
        fp32_tflops=0.236,
        fp16_dense_tflops=0.472,
        int8_dense_tops=None,
        cpu_cores=4,
        cpu="Arm Cortex-A57",
        power_modes=("MAXN (10 W)", "5W"),
        match=("jetson nano", "p3448", "p3450"),
        launch_overhead_us=15.0,
        sources={
            "compute_capability": _NANO_DQ,
            "sm_count": _NANO_DQ,
            "cuda_cores": _NANO_DQ,
            "gpu_clock_ghz": _NANO_DQ,
            "memory_gb": _NANO_VENDOR,
            "memory_bandwidth_gbs": unverified(
                "25.6 GB/s (64-bit LPDDR4 at 1600 MHz); deviceQuery shows the 64-bit bus"
            ),
            "fp32_tflops": "derived: half of the 472 GFLOPS FP16 figure (" + _NANO_VENDOR + ")",
            "fp16_dense_tflops": _NANO_VENDOR,
            "int8_dense_tops": "none: Maxwell has no fast INT8 (no DP4A, no tensor cores)",
            "fast_int8": _CUDA_TABLE + " (compute capability 5.3: no DP4A)",
            "cpu_cores": "https://github.com/archmangler/cuda",
            "cpu": "https://github.com/archmangler/cuda",
            "power_modes": unverified("nvpmodel modes 0 = MAXN (10 W), 1 = 5W; no page found"),
            "launch_overhead_us": unverified("assumed per-kernel cost, not a published figure"),
            **_JP4_SRC,
        },
        **_JP4_COMMON,
    ),
    "tx2": _p(
        key="tx2",
        name="Jetson TX2",
        gpu_arch="Pascal",
        compute_capability="6.2",
        fast_int8=False,
        memory_gb=(4, 8),
        sm_count=2,
        cuda_cores=256,
        tensor_cores=0,
        gpu_clock_ghz=1.3,
        memory_bandwidth_gbs=59.7,
        fp32_tflops=0.665,
        fp16_dense_tflops=1.33,
        int8_dense_tops=None,
        cpu_cores=6,
        cpu="2x NVIDIA Denver2 + 4x Arm Cortex-A57",
        power_modes=("MAXN", "MAXQ", "MAXP_CORE_ALL", "MAXP_CORE_ARM", "MAXP_CORE_DENVER"),
        match=("tx2", "p3310", "p3489", "p3636", "quill"),
        launch_overhead_us=12.0,
        sources={
            "compute_capability": _TX2_DQ,
            "sm_count": _TX2_DQ,
            "cuda_cores": _TX2_DQ,
            "gpu_clock_ghz": unverified("1.3 GHz boost; deviceQuery in " + _TX2_DQ + " shows 1.02 GHz max"),
            "memory_gb": _TX2_HF,
            "memory_bandwidth_gbs": unverified("59.7 GB/s (128-bit LPDDR4 at 1866 MHz); 128-bit bus in " + _TX2_DQ),
            "fp32_tflops": "derived: half of " + _TX2_HF,
            "fp16_dense_tflops": _TX2_HF,
            "int8_dense_tops": "none: compute capability 6.2 has no fast INT8 in TensorRT",
            "fast_int8": _CUDA_TABLE + " (compute capability 6.2)",
            "cpu_cores": "https://github.com/gustavz/realtime_object_detection/issues/24 (6 cores in tegrastats)",
            "cpu": unverified("Denver2 + A57 cluster layout; no page found"),
            "power_modes": unverified("nvpmodel mode names; no page found"),
            "launch_overhead_us": unverified("assumed per-kernel cost, not a published figure"),
            **_JP4_SRC,
        },
        **_JP4_COMMON,
    ),
    "xavier-nx": _p(
        key="xavier-nx",
        name="Jetson Xavier NX",
        gpu_arch="Volta",
        compute_capability="7.2",
        fast_int8=True,
        memory_gb=(8, 16),
        sm_count=6,
        cuda_cores=384,
        tensor_cores=48,
        gpu_clock_ghz=1.1,
        memory_bandwidth_gbs=51.2,
        fp32_tflops=round(384 * 2 * 1.1 / 1e3, 3),
        fp16_dense_tflops=_volta(48, 1.1)[0],
        int8_dense_tops=_volta(48, 1.1)[1],
        cpu_cores=6,
        cpu="NVIDIA Carmel (Armv8.2)",
        power_modes=("10W", "15W", "20W"),
        match=("xavier nx", "p3668"),
        launch_overhead_us=8.0,
        sources={
            "compute_capability": _CUDA_TABLE,
            "fast_int8": _CUDA_TABLE,
            "sm_count": "derived: 384 CUDA cores / 64 per Volta SM (" + _XNX_DS + ")",
            "cuda_cores": _XNX_DS,
            "tensor_cores": _XNX_DS,
            "gpu_clock_ghz": _XNX_DS,
            "memory_gb": _XNX_HF,
            "memory_bandwidth_gbs": "derived: 128-bit LPDDR4x at 1600 MHz x 2 (" + _XNX_DS + ")",
            "fp32_tflops": _DERIVED_CUDA,
            "fp16_dense_tflops": _DERIVED_TC,
            "int8_dense_tops": _DERIVED_TC + "; the 21 TOPS module figure includes the DLAs (" + _XNX_DS + ")",
            "cpu_cores": _XNX_DS,
            "cpu": _XNX_DS,
            "power_modes": unverified("10/15/20 W nvpmodel modes; the data sheet page found gives no mode table"),
            "launch_overhead_us": unverified("assumed per-kernel cost, not a published figure"),
            **_JP5_SRC,
        },
        **_JP5_COMMON,
    ),
    "agx-xavier": _p(
        key="agx-xavier",
        name="Jetson AGX Xavier",
        gpu_arch="Volta",
        compute_capability="7.2",
        fast_int8=True,
        memory_gb=(32, 64),
        sm_count=8,
        cuda_cores=512,
        tensor_cores=64,
        gpu_clock_ghz=1.377,
        memory_bandwidth_gbs=137.0,
        fp32_tflops=round(512 * 2 * 1.377 / 1e3, 3),
        fp16_dense_tflops=_volta(64, 1.377)[0],
        int8_dense_tops=_volta(64, 1.377)[1],
        cpu_cores=8,
        cpu="NVIDIA Carmel (Armv8.2)",
        power_modes=("MAXN", "10W", "15W", "30W"),
        match=("agx xavier", "jetson-agx", "jetson-xavier", "p2888", "p2972"),
        launch_overhead_us=8.0,
        sources={
            "compute_capability": _XAVIER_DQ,
            "fast_int8": _CUDA_TABLE,
            "sm_count": _XAVIER_DQ,
            "cuda_cores": _XAVIER_DQ,
            "tensor_cores": _XAVIER_TC,
            "gpu_clock_ghz": unverified("1.377 GHz production clock; the deviceQuery found shows 1.5 GHz"),
            "memory_gb": _XAVIER_SPEC,
            "memory_bandwidth_gbs": _XAVIER_SPEC,
            "fp32_tflops": _DERIVED_CUDA,
            "fp16_dense_tflops": _DERIVED_TC,
            "int8_dense_tops": _DERIVED_TC,
            "cpu_cores": _XAVIER_SPEC,
            "cpu": _XAVIER_TC,
            "power_modes": _XAVIER_MODES,
            "launch_overhead_us": unverified("assumed per-kernel cost, not a published figure"),
            **_JP5_SRC,
        },
        **_JP5_COMMON,
    ),
    "orin-nano-4gb": _orin(
        "orin-nano-4gb",
        "Jetson Orin Nano 4GB",
        4,
        16,
        0.625,
        (4,),
        34.0,
        6,
        ("7W", "10W"),
        {
            "tensor_cores": _ORIN_NANO_DS,
            "sm_count": "derived: 512 CUDA cores / 128 (" + _ORIN_NANO_DS + ")",
            "gpu_clock_ghz": _ORIN_NANO_DS,
            "memory_gb": _ORIN_NANO_DS,
            "memory_bandwidth_gbs": unverified(
                "34 GB/s; the data sheet found gives a 64-bit LPDDR5 bus, half of 8 GB's"
            ),
            "int8_dense_tops": _DERIVED_TC + "; data sheet: 10 dense INT8 TOPS (" + _ORIN_NANO_DS + ")",
            "cpu_cores": _ORIN_NANO_DS,
            "cpu": _ORIN_NANO_DS,
            "power_modes": unverified("7 W / 10 W nvpmodel modes (JetPack 6); no page found"),
        },
        ("orin nano 4gb", "p3767-0004"),
    ),
    "orin-nano-8gb": _orin(
        "orin-nano-8gb",
        "Jetson Orin Nano 8GB",
        8,
        32,
        0.625,
        (8,),
        68.0,
        6,
        ("7W", "15W", "MAXN_SUPER (25 W, JetPack 6.2)"),
        {
            "tensor_cores": _ORIN_NANO_DS,
            "sm_count": _ORIN_NANO_SUPER,
            "gpu_clock_ghz": _ORIN_NANO_DS + " (625 MHz; 1.02 GHz in Super mode: " + _ORIN_NANO_SUPER + ")",
            "memory_gb": _ORIN_NANO_DS,
            "memory_bandwidth_gbs": _ORIN_NANO_SUPER + " (68 GB/s; 102 GB/s in Super mode)",
            "cpu_cores": _ORIN_NANO_DS,
            "cpu": _ORIN_NANO_DS,
            "power_modes": _ORIN_NANO_SUPER + " (7-25 W)",
        },
        ("orin nano", "p3767-0003", "p3767-0005", "p3768"),
    ),
    "orin-nx-8gb": _orin(
        "orin-nx-8gb",
        "Jetson Orin NX 8GB",
        8,
        32,
        0.765,
        (8,),
        102.4,
        6,
        ("10W", "15W", "20W"),
        {
            "tensor_cores": unverified("32 tensor cores per the Orin NX series data sheet; page text not readable"),
            "sm_count": unverified("8 SMs (1024 CUDA cores) as on the 16 GB module; no page for the 8 GB found"),
            "gpu_clock_ghz": unverified("765 MHz; no page found"),
            "memory_gb": _ORIN_NX_DS,
            "memory_bandwidth_gbs": _ORIN_TPU + " (102.4 GB/s, TechPowerUp for Orin NX)",
            "cpu_cores": unverified("6 Cortex-A78AE cores on the 8 GB module; no page found"),
            "cpu": _ORIN_NX_DS,
            "power_modes": _ORIN_NX_DS + " (10-25 W for the series)",
        },
        ("orin nx 8gb", "p3767-0001"),
    ),
    "orin-nx-16gb": _orin(
        "orin-nx-16gb",
        "Jetson Orin NX 16GB",
        8,
        32,
        0.918,
        (16,),
        102.4,
        8,
        ("10W", "15W", "25W", "MAXN"),
        {
            "tensor_cores": "https://gist.github.com/dudo/5b14dcbb873aec6a6c307ecfea2ee678 (1024 CUDA / 32 tensor)",
            "sm_count": _ORIN_NX_DQ,
            "gpu_clock_ghz": _ORIN_NX_DQ,
            "memory_gb": _ORIN_NX_DQ,
            "memory_bandwidth_gbs": _ORIN_TPU + " (102.4 GB/s, TechPowerUp for Orin NX 16 GB)",
            "cpu_cores": "https://github.com/open-rdc/orne-box/issues/121 (Online CPUs: 0-7 on an Orin NX)",
            "cpu": _ORIN_NX_DS,
            "power_modes": _ORIN_NX_DS + " (10-25 W)",
        },
        ("orin nx", "p3767-0000"),
    ),
    "agx-orin-32gb": _orin(
        "agx-orin-32gb",
        "Jetson AGX Orin 32GB",
        14,
        56,
        0.93,
        (32,),
        204.8,
        8,
        ("15W", "30W", "40W"),
        {
            "tensor_cores": unverified("56 tensor cores (14 SMs x 4); no page found"),
            "sm_count": unverified("14 SMs (1792 CUDA cores); no page found"),
            "gpu_clock_ghz": unverified("930 MHz; no page found"),
            "memory_gb": _AGX_ORIN_CORES,
            "memory_bandwidth_gbs": unverified("204.8 GB/s (256-bit LPDDR5); no page found"),
            "cpu_cores": _AGX_ORIN_CORES,
            "cpu": _AGX_ORIN_TB,
            "power_modes": unverified("15-40 W; no page found"),
        },
        ("agx orin 32", "p3701-0004"),
    ),
    "agx-orin-64gb": _orin(
        "agx-orin-64gb",
        "Jetson AGX Orin 64GB",
        16,
        64,
        1.3,
        (64,),
        204.8,
        12,
        ("MAXN", "15W", "30W", "50W"),
        {
            "tensor_cores": _AGX_ORIN_TB,
            "sm_count": _AGX_ORIN_TB,
            "gpu_clock_ghz": "derived: 5.3 FP32 TFLOPS / (2048 x 2) (" + _AGX_ORIN_TB + ")",
            "memory_gb": _AGX_ORIN_CORES,
            "memory_bandwidth_gbs": unverified("204.8 GB/s (256-bit LPDDR5); no page found"),
            "fp32_tflops": _AGX_ORIN_TB + " (5.3 TFLOPS)",
            "int8_dense_tops": _DERIVED_TC + "; brief: GPU 170 sparse INT8 TOPS = 85 dense (" + _AGX_ORIN_TB + ")",
            "cpu_cores": _AGX_ORIN_TB,
            "cpu": _AGX_ORIN_TB,
            "power_modes": _AGX_ORIN_275 + " (15-60 W)",
        },
        ("agx orin", "p3701-0000", "p3701-0005", "p3737"),
    ),
    "thor": _p(
        key="thor",
        name="Jetson AGX Thor (T5000)",
        gpu_arch="Blackwell",
        compute_capability="11.0",
        fast_int8=True,
        memory_gb=(128,),
        sm_count=20,
        cuda_cores=2560,
        tensor_cores=96,
        gpu_clock_ghz=1.57,
        memory_bandwidth_gbs=273.0,
        fp32_tflops=round(2560 * 2 * 1.57 / 1e3, 2),
        fp16_dense_tflops=258.5,
        int8_dense_tops=517.0,
        cpu_cores=14,
        cpu="Arm Neoverse-V3AE",
        power_modes=("40-130 W configurable",),
        match=("thor", "t5000", "p3834"),
        launch_overhead_us=4.0,
        jetpack="7.0",
        l4t="38.2",
        tensorrt="10.13",
        max_onnx_opset=20,
        sources={
            "compute_capability": unverified("11.0 under CUDA 13 (10.1 under CUDA 12.8); no page found"),
            "fast_int8": unverified("Blackwell tensor cores run INT8; no Thor page found"),
            "sm_count": _THOR_SM,
            "cuda_cores": _THOR_GPU,
            "tensor_cores": _THOR_GPU + " (96; the forum thread " + _THOR_SM + " disputes the count)",
            "gpu_clock_ghz": unverified("1.57 GHz; no page found"),
            "memory_gb": _THOR_HF,
            "memory_bandwidth_gbs": unverified("273 GB/s (LPDDR5X); no page found"),
            "fp32_tflops": _DERIVED_CUDA,
            "fp16_dense_tflops": _THOR_HF + " (258.5 TFLOPS; = 2070 sparse FP4 / 8, " + _THOR_POWER + ")",
            "int8_dense_tops": unverified("2 x FP16 dense, assumed equal to the FP8 rate"),
            "cpu_cores": unverified("14 Neoverse-V3AE cores; no page found"),
            "cpu": unverified("Neoverse-V3AE; no page found"),
            "power_modes": _THOR_POWER + " (40-130 W)",
            "jetpack": _JP70,
            "l4t": _JP70,
            "tensorrt": unverified("TensorRT 10.13 in JetPack 7.0; the JetPack page excerpt found lists no TensorRT"),
            "max_onnx_opset": unverified("TensorRT 10.13 parser ceiling not found; at least 17 (10.x)"),
            "launch_overhead_us": unverified("assumed per-kernel cost, not a published figure"),
        },
    ),
}

# Names people type for the families; each resolves to one profile.
ALIASES = {
    "orin-nano": "orin-nano-8gb",
    "orin-nx": "orin-nx-16gb",
    "agx-orin": "agx-orin-64gb",
    "t5000": "thor",
    "agx-thor": "thor",
    "xavier": "agx-xavier",
}

# Device-tree model strings name the developer kit; the most specific patterns are tried first.
_MATCH_ORDER = [
    "thor",
    "agx-orin-32gb",
    "agx-orin-64gb",
    "orin-nx-8gb",
    "orin-nx-16gb",
    "orin-nano-4gb",
    "orin-nano-8gb",
    "agx-xavier",
    "xavier-nx",
    "tx2",
    "nano",
]


def match_profile(model: str) -> DeviceProfile | None:
    """Profile for a device-tree model string such as 'NVIDIA Jetson AGX Orin Developer Kit'.

    Developer-kit strings do not name the memory size; those resolve to the family's larger module
    (AGX Orin -> 64 GB, Orin NX -> 16 GB, Orin Nano -> 8 GB), which is what the developer kits carry.
    """
    m = " ".join(model.lower().replace("\x00", " ").split())
    for key in _MATCH_ORDER:
        if any(pat in m for pat in PROFILES[key].match):
            return PROFILES[key]
    return None


def get_profile(name: str) -> DeviceProfile:
    """Profile by key or alias; an unknown name is a :class:`~rkd_edge.errors.UserError` naming the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PROFILES:
        raise UserError(f"unknown device {name!r}; known: {', '.join(known_names())}")
    return PROFILES[key]


def known_names() -> list[str]:
    return list(PROFILES) + ["host"]
