"""PyTorch eager runner: the trained run's modules themselves, the reference the exports are compared to.

torch is imported only when this runner loads, so torch-free paths never import it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from rkd_edge.runtime.bundle import Bundle, BundleError
from rkd_edge.runtime.runners.base import Runner, TensorMeta

_RUNS: dict[str, tuple] = {}  # run dir -> (cfg, system, spec, weights digest): the three models share one load


def _load_run(run: Path) -> tuple:
    key = str(run.resolve())
    if key not in _RUNS:
        from rkd_edge.rundir import load_run, weights_digest

        cfg, system, spec = load_run(run)
        _RUNS[key] = cfg, system, spec, weights_digest(system)
    return _RUNS[key]


def _call_counting_bytes(torch, module, inputs: list) -> tuple[tuple, int]:
    """One call on example inputs: its outputs (for their shapes) and the bytes of the parameters and buffers
    it read.

    A parameter counts when the outputs depend on it (autograd reaches it: one gathered row of a per-length
    table counts the whole table, as the exported graph holds it); a buffer counts when the module owning it
    ran its forward.
    """
    ran: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, *_: ran.add(id(m))) for m in module.modules()]
    params = [p for p in module.parameters() if p.dtype.is_floating_point]
    flags = [p.requires_grad for p in params]
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            out = module(*inputs)
            out = out if isinstance(out, tuple) else (out,)
            floats = [t for t in out if t.dtype.is_floating_point and t.requires_grad]
            total = sum(t.sum() for t in floats)
            grads = torch.autograd.grad(total, params, allow_unused=True) if floats else [None] * len(params)
    finally:
        for h in hooks:
            h.remove()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    used = [p for p, g in zip(params, grads, strict=True) if g is not None]
    used += [b for m in module.modules() if id(m) in ran for b in m.buffers(recurse=False)]
    return tuple(t.detach() for t in out), sum(t.numel() * t.element_size() for t in used)


class TorchCudaTimer:
    """Milliseconds between ``torch.cuda.Event`` records before and after one call."""

    name = "cuda-events"

    def __init__(self, torch) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time(self, fn) -> float:
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


class TorchRunner(Runner):
    """One bundle model (``encoder``, ``tx``, ``rx``) run by the PyTorch modules of its source run.

    Args:
        model: Bundle model name.
        run: The run directory the bundle was exported from (default: the manifest's ``source_run``).
        device: ``cpu`` or ``cuda``.
        threads: torch intra-op threads (0 = torch's default).
    """

    backend = "pytorch"
    precisions = ("fp32",)

    def __init__(self, model: str = "model", run: str | Path | None = None, device: str = "cpu", threads: int = 0):
        super().__init__(model)
        self.run, self.device, self.threads = (Path(run) if run else None), device, threads
        self.backend = "pytorch" if device == "cpu" else f"pytorch-{device}"
        self.module = None
        # The source run's config and weights digests, from the manifest (locate).
        self.expected_digest: str | None = None
        self.expected_weights: str | None = None

    def available(self) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed (the PyTorch reference needs it)"
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "torch sees no CUDA GPU"
        return None

    def locate(self, bundle: Bundle, model: str, precision: str) -> Path:
        source = bundle.manifest.get("source_run") or {}
        self.expected_digest = source.get("config_sha256")
        self.expected_weights = source.get("weights_sha256")
        if not (self.expected_digest and self.expected_weights):  # a run that cannot be told from any other
            raise BundleError(
                "the manifest records no digest of its source run's config and weights (exported before "
                "rkd-edge recorded them, or edited); re-export the bundle to compare it with PyTorch"
            )
        rel = source.get("path")
        # Relative to the bundle's folder (or, in bundles exported before that, to where export ran); a path
        # from elsewhere is not followed, and whatever is found must be the run the bundle came from (load).
        rel = rel if isinstance(rel, str) and rel and not Path(rel).is_absolute() else None
        candidates = [self.run] if self.run else [bundle.root.parent / rel, Path(rel)] if rel else []
        for run in candidates:
            if run and (run / "system.json").is_file():
                return run
        if self.run and self.run.exists():  # given, but not a run: say what it is rather than "not found"
            what = "a folder without system.json" if self.run.is_dir() else "not a folder"
            raise BundleError(f"--run {self.run} is not a run ({what}); pass the run the bundle was exported from")
        where = self.run or rel or "not named in the manifest"
        raise BundleError(f"the PyTorch reference needs the bundle's source run ({where} not found); pass --run RUN")

    def load(self, model_path: str | Path, precision: str, sha256: str | None = None) -> TorchRunner:
        self.check_precision(precision)
        if why := self.available():
            raise BundleError(f"cannot run {self.model} on pytorch: {why}")
        import torch

        from rkd_edge.export.graphs import graph_io

        if self.threads:
            torch.set_num_threads(self.threads)
        cfg, system, spec, weights = _load_run(Path(model_path))
        other = (self.expected_digest is not None and cfg.digest() != self.expected_digest) or (
            self.expected_weights is not None and weights != self.expected_weights
        )
        if other:  # the same config is not enough: a pruned run keeps its source's
            raise BundleError(
                f"the run {model_path} is not the one the bundle was exported from (other config or weights); "
                "pass the bundle's source run with --run RUN"
            )
        system = system.to(self.device).eval()
        g = graph_io(system.cpu(), spec["input_shape"])[self.model]
        self.module = g["module"].to(self.device).eval()
        self.input_names, self.output_names = g["input_names"], g["output_names"]
        self.inputs = [
            TensorMeta(n, ("batch", *t.shape[1:]), str(t.numpy().dtype))
            for n, t in zip(g["input_names"], g["inputs"], strict=True)
        ]
        example, self._bytes = _call_counting_bytes(torch, self.module, [t.to(self.device) for t in g["inputs"]])
        self.outputs = [
            TensorMeta(n, ("batch", *t.shape[1:]), str(t.cpu().numpy().dtype))
            for n, t in zip(g["output_names"], example, strict=True)
        ]
        self.path, self.precision, self.config_digest = Path(model_path), precision, cfg.digest()
        self._torch = torch
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.module is None:
            raise BundleError(f"{self.model}: load() the runner before infer()")
        self.check_feeds(feeds)
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        with torch.inference_mode():
            out = self.module(*args)
            if self.device == "cuda":
                torch.cuda.synchronize()
        out = out if isinstance(out, tuple) else (out,)
        return {n: t.cpu().numpy() for n, t in zip(self.output_names, out, strict=True)}

    @property
    def providers(self) -> list[str]:
        return [f"PyTorch {self.device}"]

    def timer(self):
        """CUDA events on the current stream for ``cuda`` (GPU time); the host clock on the CPU."""
        return TorchCudaTimer(self._torch) if self.device == "cuda" and self.module is not None else super().timer()

    def size_bytes(self) -> int:
        """Bytes of the parameters and buffers this model reads (the run's checkpoint holds more than this model:
        the tx graph holds the whole codec but reads only its transmitter half)."""
        return self._bytes if self.module is not None else 0

    def memory(self) -> dict:
        if self.device != "cuda" or self.module is None:
            return {}
        torch = self._torch
        return {
            "cuda_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
            "cuda_peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
        }

    def close(self) -> None:
        self.module = None
