"""The runner protocol every back end implements (modelled on Polygraphy's runners), torch-free.

A runner runs one model of a bundle (``encoder``, ``tx`` or ``rx``) on one back end::

    r = OnnxRuntimeRunner(model="tx", provider="cpu")
    if (why := r.available()) is None:
        r.load(path, "fp32")
        outputs = r.infer({"features": f, "snr_db": s, "k": k, "channel": c})
        r.close()

``available()`` says why the back end cannot run here (or ``None``); ``load`` raises
:class:`~rkd_edge.runtime.bundle.BundleError` with one line when it cannot load what was asked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rkd_edge.devices.latency import HOST, Timer
from rkd_edge.runtime.bundle import Bundle, BundleError


@dataclass(frozen=True)
class TensorMeta:
    """One input or output of a loaded model.

    Attributes:
        name: Tensor name in the graph.
        shape: Dimensions; a string (``"batch"``) or ``None`` for a dynamic one.
        dtype: numpy dtype name (``float32``, ``int64``).
    """

    name: str
    shape: tuple
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Runner(ABC):
    """One model on one back end.

    Args:
        model: The bundle model this runner runs (``encoder``, ``tx``, ``rx``): used in messages and by
            back ends that build the model themselves (PyTorch).

    Class attributes:
        backend: Registry name of the back end.
        precisions: Precisions the back end can run.
    """

    backend: str = ""
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, model: str = "model") -> None:
        self.model = model
        self.precision: str | None = None
        self.path: Path | None = None
        self.inputs: list[TensorMeta] = []
        self.outputs: list[TensorMeta] = []

    def available(self) -> str | None:
        """Why this back end cannot run on this machine (one line), or ``None`` when it can."""
        return None

    def locate(self, bundle: Bundle, model: str, precision: str) -> Path:
        """The artefact of ``model`` at ``precision`` this back end loads (default: the ONNX file)."""
        return bundle.model_path(model, precision)

    @abstractmethod
    def load(self, model_path: str | Path, precision: str, sha256: str | None = None) -> Runner:
        """Load the artefact; fills :attr:`inputs` / :attr:`outputs`. Returns ``self``.

        ``sha256``: what the bundle's manifest says the file hashes to; a back end that loads a file reads
        it once (:func:`~rkd_edge.runtime.bundle.read_verified`) and loads those bytes.
        """

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once: input name -> array, output name -> array (host memory, synchronous). The names are the
        model's (:data:`rkd_edge.runtime.bundle.INTERFACE`, e.g. ``image: [B, C, H, W] float32`` normalised,
        ``symbols: [B, K, 2] float32`` I/Q); other names are refused (:meth:`check_feeds`)."""

    def close(self) -> None:  # noqa: B027 - optional: back ends with nothing to release keep it
        """Release sessions, engines and device memory."""

    @property
    def providers(self) -> list[str]:
        """What actually executes the model (ONNX Runtime providers, ``TensorRT 10.3``, ``PyTorch cpu``)."""
        return [self.backend]

    def timer(self) -> Timer:
        """How :mod:`rkd_edge.devices.latency` should time :meth:`infer` (CUDA events where the runner
        owns a stream; the host clock otherwise)."""
        return HOST

    def size_bytes(self) -> int:
        """Bytes of the loaded artefact (the model or engine file)."""
        return self.path.stat().st_size if self.path and self.path.is_file() else 0

    def memory(self) -> dict:
        """Back-end memory figures readable in this process (``cuda_peak_mb`` ...); empty when none."""
        return {}

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise BundleError(
                f"back end {self.backend} runs {', '.join(self.precisions)}, not {precision}; "
                f"choose --precision {self.precisions[0]} or another back end"
            )

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Refuse feeds whose names differ from the model's inputs (one line naming both); every back end's
        :meth:`infer` starts with it (ONNX Runtime's own refusal is a ValueError, a dict lookup a KeyError)."""
        if feeds.keys() != {m.name for m in self.inputs}:
            raise BundleError(f"{self.model} takes inputs {[m.name for m in self.inputs]}, got {sorted(feeds)}")
