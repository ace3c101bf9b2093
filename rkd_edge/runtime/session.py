"""ONNX Runtime sessions over a bundle: the transmitter (encoder, tx) and receiver (rx) halves."""

from __future__ import annotations

import numpy as np

from rkd_edge.runtime.bundle import Bundle, BundleError


def _providers(prefer: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    order = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        "auto": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    }[prefer]
    return [p for p in order if p in available] or ["CPUExecutionProvider"]


class Runtime:
    """Run a bundle's models without PyTorch.

    Args:
        bundle: Path to a bundle directory (verified against its manifest on load).
        precision: ``fp32`` or ``int8`` (the explicitly quantized Q/DQ models); ``None`` takes the
            bundle's ``default_precision`` (FP32 unless INT8 was shown to win).
        providers: ``cpu``, ``cuda``, ``tensorrt`` or ``auto``.
        threads: Intra-op threads (0 = ONNX Runtime's default).
    """

    def __init__(self, bundle: str, precision: str | None = None, providers: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        self.bundle = Bundle.open(bundle)
        m = self.bundle.manifest
        precision = precision or m.get("default_precision", "fp32")
        self.precision = precision
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        prov = _providers(providers)
        self.sessions = {
            name: ort.InferenceSession(str(self.bundle.model_path(name, precision)), opts, providers=prov)
            for name in ("encoder", "tx", "rx")
        }
        norm = m["normalisation"]
        self.mean = np.asarray(norm["mean"], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(norm["std"], np.float32).reshape(1, -1, 1, 1)
        self.size, self.channels = norm["size"], norm["channels"]
        self.max_symbols = m["symbols"]["max"]
        self.symbol_set = m["symbols"]["set"]
        self.uses_csi = m["symbols"].get("csi_input", False)
        self.classes = m["classes"]
        self.channel_types = m["channel_types"]

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """``uint8 [B, H, W, C]`` at the bundle's size -> normalised ``float32 [B, C, S, S]``."""
        x = np.asarray(images)
        if x.ndim != 4 or x.shape[1] != self.size or x.shape[2] != self.size:
            raise BundleError(f"images must be [B, {self.size}, {self.size}, C] uint8, got {list(x.shape)}")
        x = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        if x.shape[1] != self.channels:
            x = np.repeat(x, self.channels, 1) if x.shape[1] == 1 else x.mean(1, keepdims=True)
        return ((x - self.mean) / self.std).astype(np.float32)

    def encode(self, images: np.ndarray, preprocessed: bool = False) -> np.ndarray:
        """Images -> features ``[B, D] float32``."""
        x = images if preprocessed else self.preprocess(images)
        return self.sessions["encoder"].run(None, {"image": np.ascontiguousarray(x, np.float32)})[0]

    def _conditions(self, n: int, snr_db, channel: str) -> tuple[np.ndarray, np.ndarray]:
        snr = np.broadcast_to(np.asarray(snr_db, np.float32), (n,)).copy()
        if channel not in self.channel_types:
            raise BundleError(f"unknown channel type {channel!r}; the bundle knows {self.channel_types}")
        return snr, np.full((n,), self.channel_types.index(channel), np.int64)

    def transmit(
        self, features: np.ndarray, snr_db: float | np.ndarray, k: int | np.ndarray, channel: str = "awgn"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features -> unit-power symbols ``[B, K, 2] float32`` (I/Q) and mask ``[B, K] float32``.

        Args:
            features: ``[B, D] float32``.
            snr_db: Expected SNR in dB (Es/N0), scalar or ``[B]``.
            k: Complex symbols to send, scalar or ``[B]``, from 1 to K.
            channel: Channel type the transmitter conditions on.
        """
        n = len(features)
        ks = np.broadcast_to(np.asarray(k, np.int64), (n,)).copy()
        if ks.min() < 1 or ks.max() > self.max_symbols:
            raise BundleError(f"k must be between 1 and {self.max_symbols}, got {int(ks.min())}..{int(ks.max())}")
        snr, ctype = self._conditions(n, snr_db, channel)
        sym, mask = self.sessions["tx"].run(
            None, {"features": features.astype(np.float32), "snr_db": snr, "k": ks, "channel": ctype}
        )
        return sym, mask

    def receive(
        self, y: np.ndarray, mask: np.ndarray, snr_db, channel: str = "awgn", csi: np.ndarray | None = None
    ) -> np.ndarray:
        """Received symbols ``[B, K, 2]`` -> class logits ``[B, N] float32``."""
        snr, ctype = self._conditions(len(y), snr_db, channel)
        feeds = {"symbols": y.astype(np.float32), "mask": mask.astype(np.float32), "snr_db": snr, "channel": ctype}
        if self.uses_csi:
            if csi is None:
                raise BundleError("this bundle's receiver needs CSI: pass csi=[B, K, 2]")
            feeds["csi"] = csi.astype(np.float32)
        return self.sessions["rx"].run(None, feeds)[0]
