"""Jetson device profiles: what the toolkit needs to know to build and measure on each module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    gpu_arch: str
    compute_capability: str
    fast_int8: bool
    jetpack: str
    tensorrt: str
    max_onnx_opset: int
    memory_gb: tuple[int, ...]


PROFILES = {
    "nano": DeviceProfile("Jetson Nano", "Maxwell", "5.3", False, "4.6", "8.2", 13, (2, 4)),
    "tx2": DeviceProfile("Jetson TX2", "Pascal", "6.2", False, "4.6", "8.2", 13, (4, 8)),
    "xavier-nx": DeviceProfile("Jetson Xavier NX", "Volta", "7.2", True, "5.1", "8.5", 17, (8, 16)),
    "agx-xavier": DeviceProfile("Jetson AGX Xavier", "Volta", "7.2", True, "5.1", "8.5", 17, (32, 64)),
    "orin-nano": DeviceProfile("Jetson Orin Nano", "Ampere", "8.7", True, "6.2", "10.3", 19, (4, 8)),
    "orin-nx": DeviceProfile("Jetson Orin NX", "Ampere", "8.7", True, "6.2", "10.3", 19, (8, 16)),
    "agx-orin": DeviceProfile("Jetson AGX Orin", "Ampere", "8.7", True, "6.2", "10.3", 19, (32, 64)),
}


def match_profile(model: str) -> DeviceProfile | None:
    """Profile for a device-tree model string such as 'NVIDIA Jetson AGX Orin Developer Kit'."""
    m = model.lower()
    order = ["agx-orin", "orin-nx", "orin-nano", "agx-xavier", "xavier-nx", "tx2", "nano"]
    keys = {
        "agx-orin": ("agx orin",),
        "orin-nx": ("orin nx",),
        "orin-nano": ("orin nano",),
        "agx-xavier": ("agx xavier",),
        "xavier-nx": ("xavier nx",),
        "tx2": ("tx2",),
        "nano": ("nano",),
    }
    for key in order:
        if any(k in m for k in keys[key]):
            return PROFILES[key]
    return None
