"""The deployable runtime over a bundle: the transmitter (encoder, tx, or the two fused in one graph) and
receiver (rx) halves, run by any registered back end (:mod:`rkd_edge.runtime.runners`). Importing it never
imports torch."""

from __future__ import annotations

import warnings

import numpy as np

from rkd_edge.limits import MAX_THREADS, SNR_LIMIT_DB
from rkd_edge.runtime.bundle import MODELS, Bundle, BundleError, dims_agree
from rkd_edge.runtime.runners import BACKENDS, Runner, create_runner
from rkd_edge.runtime.runners.device import fingerprint

FUSED = "transmitter"  # encoder + tx in one graph (bundles exported since it existed; FP32)
# The legacy ``providers`` argument, as back-end names (``auto``: the first of these that can run here).
PROVIDER_BACKENDS = {"cpu": "onnxruntime", "cuda": "onnxruntime-cuda", "tensorrt": "onnxruntime-tensorrt"}
AUTO = ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime")


def resolve_precisions(manifest: dict, precision: str | dict | None, fp: str | None) -> dict[str, str]:
    """Precision per model: the one asked for, else this device's measured selection
    (``manifest["selection"][fp]``, written by ``rkd-edge bench --select``), else ``default_precision``.

    ``precision`` and ``default_precision`` are a string for every model or ``{model: precision}``
    (models left out take ``fp32``).
    """
    chosen = precision
    source = "argument"
    if chosen is None:
        sel = manifest.get("selection") or {}
        chosen, source = (sel.get(fp), "selection") if fp and isinstance(sel, dict) and sel.get(fp) else (None, "")
    if chosen is None:
        chosen, source = manifest.get("default_precision", "fp32"), "default_precision"
    if isinstance(chosen, str):
        return _held(dict.fromkeys(MODELS, chosen), manifest, source)
    if not isinstance(chosen, dict) or not all(isinstance(v, str) for v in chosen.values()):
        raise BundleError(f"{source} must be a precision or {{model: precision}}, got {chosen!r}")
    unknown = set(chosen) - set(MODELS)
    if unknown:
        raise BundleError(f"{source} names unknown models {sorted(unknown)}; the models are {list(MODELS)}")
    return _held({m: chosen.get(m, "fp32") for m in MODELS}, manifest, source)


def _held(per_model: dict[str, str], manifest: dict, source: str) -> dict[str, str]:
    """``per_model``, if the manifest's own choice (``default_precision``, ``selection``) names precisions the
    bundle holds; a value the caller passed is checked where its model is loaded, with its own message."""
    bad = sorted({p for p in per_model.values() if p not in manifest.get("precisions", [])})
    if source != "argument" and bad:
        raise BundleError(f"the manifest's {source} names {bad}, but the bundle holds {manifest.get('precisions')}")
    return per_model


def _finite(x: np.ndarray, what: str) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise BundleError(f"{what} contains NaN or infinity; pass finite values")


def _numeric(x, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise BundleError(f"{what} must be numeric, got dtype {arr.dtype}")
    return arr


class Runtime:
    """Run a bundle's models without PyTorch.

    Args:
        bundle: Path to a bundle directory (verified against its manifest on load).
        precision: ``fp32``, ``fp16`` or ``int8`` for every model, or ``{model: precision}``; ``None``
            takes this device's measured selection (``rkd-edge bench --select``), else the bundle's
            ``default_precision`` (FP32 unless INT8 was shown to win).
        providers: ``cpu``, ``cuda``, ``tensorrt`` (ONNX Runtime execution providers) or ``auto`` (the
            best one present, no warning); ignored when ``backend`` is given.
        threads: Intra-op threads (0 = the back end's default).
        backend: A registered back end (:data:`rkd_edge.runtime.runners.BACKENDS`): ``onnxruntime``,
            ``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``tensorrt`` (engines), ``pytorch``.
        allow_fallback: When the back end asked for cannot run here, use ONNX Runtime on the CPU with one
            warning instead of refusing.
        run: The source run directory, for the ``pytorch`` back end.
        fused: Run :meth:`send` through the bundle's fused ``transmitter`` graph (one call instead of two)
            where it can: the bundle has it, an ONNX Runtime back end, encoder and tx both FP32.

    Attributes:
        backend: The back end in use; ``providers``: what really executes (ONNX Runtime providers ...).
        precisions: ``{model: precision}``; ``precision``: their common value, or ``mixed``.
        runners: ``{model: Runner}``.
        fused: The runner of the fused ``transmitter`` graph, or ``None`` (then :meth:`send` calls two).
        loaded: ``runners`` plus ``transmitter`` where :attr:`fused` is loaded: every runner this holds.
    """

    def __init__(
        self,
        bundle: str,
        precision: str | dict | None = None,
        providers: str = "cpu",
        threads: int = 0,
        backend: str | None = None,
        allow_fallback: bool = False,
        run: str | None = None,
        fused: bool = True,
    ) -> None:
        self.fused: Runner | None = None
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 0 <= threads <= MAX_THREADS:
            raise BundleError(f"threads is 0 (the back end's choice) or a count up to {MAX_THREADS}, got {threads!r}")
        self.bundle = Bundle.open(bundle)
        m = self.bundle.manifest
        if backend is None:
            if providers not in (*PROVIDER_BACKENDS, "auto"):
                raise BundleError(f"unknown providers {providers!r}; use cpu, cuda, tensorrt or auto")
            if providers == "auto":
                backend = next(b for b in AUTO if create_runner(b).available() is None)
            else:
                backend = PROVIDER_BACKENDS[providers]
        options = {"threads": int(threads), "run": run}
        try:
            self.runners = self._load(backend, precision, options)
        except BundleError as exc:
            if not allow_fallback or backend == "onnxruntime":
                raise
            warnings.warn(f"{exc}; falling back to ONNX Runtime on the CPU", RuntimeWarning, stacklevel=2)
            backend = "onnxruntime"
            self.runners = self._load(backend, precision, options)
        self.backend = backend
        if fused:
            self.fused = self._load_fused(backend, options)
        self._check_io()
        norm = m["normalisation"]
        self.mean = np.asarray(norm["mean"], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(norm["std"], np.float32).reshape(1, -1, 1, 1)
        self.size, self.channels = norm["size"], norm["channels"]
        self.max_symbols = m["symbols"]["max"]
        self.symbol_set = m["symbols"]["set"]
        self.uses_csi = m["symbols"].get("csi_input", False)
        self.classes = m["classes"]
        self.channel_types = m["channel_types"]
        self.feature_dim = self._dim("tx", "features", 1, inputs=True)

    def _load(self, backend: str, precision, options: dict) -> dict[str, Runner]:
        if backend not in BACKENDS:
            raise BundleError(f"unknown back end {backend!r}; choose from {', '.join(BACKENDS)}")
        probe = create_runner(backend, **options)
        if why := probe.available():
            raise BundleError(f"back end {backend} cannot run here: {why}")
        self.fingerprint = fingerprint(backend)
        self.precisions = resolve_precisions(self.bundle.manifest, precision, self.fingerprint)
        if precision is None:  # a bundle default the back end cannot run at all (int8 on the PyTorch reference)
            self.precisions = {m: p if p in probe.precisions else "fp32" for m, p in self.precisions.items()}
        uniform = set(self.precisions.values())
        self.precision = uniform.pop() if len(uniform) == 1 else "mixed"
        runners: dict[str, Runner] = {}
        try:
            for name in MODELS:
                r = create_runner(backend, name, **options)
                runners[name] = self._load_one(r, name, self.precisions[name])
        except BaseException:
            for r in runners.values():
                r.close()
            raise
        return runners

    def _load_fused(self, backend: str, options: dict) -> Runner | None:
        """The fused transmitter graph's runner, where the bundle has one and it computes what encoder + tx do."""
        same = self.precisions["encoder"] == self.precisions["tx"] == "fp32"
        if FUSED not in self.bundle.manifest["models"] or not backend.startswith("onnxruntime") or not same:
            return None
        r = create_runner(backend, FUSED, **options)
        try:
            return self._load_one(r, FUSED, "fp32")
        except BaseException:
            self.close()
            raise

    def _load_one(self, r: Runner, model: str, precision: str) -> Runner:
        """Load what ``r`` locates for ``model``, checked against the manifest's hash as it is read."""
        path = r.locate(self.bundle, model, precision)
        return r.load(path, precision, sha256=self.bundle.sha256_of(path))

    @property
    def loaded(self) -> dict[str, Runner]:
        return {**getattr(self, "runners", {}), **({FUSED: self.fused} if self.fused is not None else {})}

    @property
    def files(self) -> dict[str, str]:
        """The file each loaded model runs from, by model (relative to the bundle; a name where it lies
        outside, e.g. the PyTorch back end's run): which form of a precision produced a number."""
        root, out = self.bundle.root.resolve(), {}
        for name, r in self.loaded.items():
            if r.path is not None:
                full = r.path.resolve()
                out[name] = full.relative_to(root).as_posix() if full.is_relative_to(root) else full.name
        return out

    @property
    def providers(self) -> list[str]:
        """What really executes the models (for ONNX Runtime: the session's providers, best first)."""
        return self.runners["encoder"].providers

    @property
    def sessions(self) -> dict:
        """The ONNX Runtime sessions (ONNX Runtime back ends only; kept for older callers)."""
        return {n: getattr(r, "session", None) for n, r in self.runners.items()}

    def _declared(self, name: str) -> dict:
        recs = self.bundle.manifest["models"][name]
        return recs.get(self.precisions.get(name, "fp32")) or recs.get("fp32") or {}

    def _check_io(self) -> None:
        """The loaded graphs against the manifest's declared inputs/outputs and ``symbols.max``."""
        for name, r in self.loaded.items():
            declared = self._declared(name)
            for kind, metas in (("inputs", r.inputs), ("outputs", r.outputs)):
                want = declared.get(kind)
                if not want:
                    continue
                got = {t.name: t for t in metas}
                if sorted(got) != sorted(w["name"] for w in want):
                    raise BundleError(
                        f"{name} ({r.path.name if r.path else r.backend}) has {kind} {sorted(got)}, the manifest "
                        f"declares {[w['name'] for w in want]}; re-export the bundle"
                    )
                exact_dtypes = r.backend.startswith("onnxruntime")  # engines may narrow int64 to int32
                for w in want:
                    t = got[w["name"]]
                    if not dims_agree(w["shape"], t.shape) or (exact_dtypes and t.dtype != w["dtype"]):
                        raise BundleError(
                            f"{name} {kind[:-1]} {w['name']!r} is {t.dtype} {list(t.shape)}, the manifest declares "
                            f"{w['dtype']} {w['shape']}; re-export the bundle"
                        )
        takes_csi = any(t.name == "csi" for t in self.runners["rx"].inputs)
        if takes_csi != bool(self.bundle.manifest["symbols"].get("csi_input", False)):
            raise BundleError(
                f"the manifest's symbols.csi_input is {not takes_csi} but the rx model "
                f"{'takes' if takes_csi else 'has no'} csi input; re-export the bundle"
            )
        k_max = self.bundle.manifest["symbols"]["max"]
        shaped = [("tx", "symbols", False), ("rx", "symbols", True)]
        if self.fused:
            shaped.append((FUSED, "symbols", False))
        for model, tensor, inputs in shaped:
            k = self._dim(model, tensor, 1, inputs)
            if isinstance(k, int) and k != k_max:
                raise BundleError(
                    f"the manifest's symbols.max is {k_max} but the {model} model's {tensor} "
                    f"{'input' if inputs else 'output'} has {k} symbols; re-export the bundle"
                )
        d_enc, d_tx = self._dim("encoder", "features", 1, False), self._dim("tx", "features", 1, True)
        if isinstance(d_enc, int) and isinstance(d_tx, int) and d_enc != d_tx:
            raise BundleError(f"the encoder outputs {d_enc} features but tx takes {d_tx}; re-export the bundle")

    def _dim(self, model: str, tensor: str, axis: int, inputs: bool):
        runner = self.loaded[model]
        metas = runner.inputs if inputs else runner.outputs
        for t in metas:
            if t.name == tensor and len(t.shape) > axis:
                return t.shape[axis]
        return None

    # -- inputs ------------------------------------------------------------------------------------------

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """``uint8 [B, H, W, C]`` at the bundle's size (C = 1, 3 or the bundle's channels; values 0..255)
        -> normalised ``float32 [B, C, S, S]``."""
        x = _numeric(images, "images")
        s = self.size
        if x.ndim != 4 or x.shape[1] != s or x.shape[2] != s or x.shape[3] not in {1, 3, self.channels}:
            raise BundleError(f"images must be [B, {s}, {s}, {self.channels}] uint8, got {list(x.shape)}")
        if len(x) == 0:
            raise BundleError("images is an empty batch; pass at least one image")
        if x.dtype != np.uint8:
            _finite(x, "images")
            if x.min() < 0 or x.max() > 255:
                raise BundleError(f"image values must be within 0..255, got {x.min():g}..{x.max():g}")
        x = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        if x.shape[1] != self.channels:
            x = np.repeat(x, self.channels, 1) if x.shape[1] == 1 else x.mean(1, keepdims=True)
        return ((x - self.mean) / self.std).astype(np.float32)

    def _batch_values(self, value, n: int, dtype, what: str, limit: float | None = None) -> np.ndarray:
        arr = _numeric(value, what)
        if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != n):
            raise BundleError(f"{what} must be a scalar or [{n}], got shape {list(arr.shape)}")
        _finite(arr, what)
        if limit is not None and np.abs(arr).max(initial=0) > limit:
            raise BundleError(f"{what} must be within +-{limit:g}, got {arr.flat[np.abs(arr).argmax()]:g}")
        return np.broadcast_to(arr.astype(dtype), (n,)).copy()

    def _conditions(self, n: int, snr_db, channel: str) -> tuple[np.ndarray, np.ndarray]:
        # Within the CLI's +-100 dB: 1e9 dB ran, conditioned on nothing the codec ever met.
        snr = self._batch_values(snr_db, n, np.float32, "snr_db (dB)", limit=SNR_LIMIT_DB)
        if channel not in self.channel_types:
            raise BundleError(f"unknown channel type {channel!r}; the bundle knows {self.channel_types}")
        return snr, np.full((n,), self.channel_types.index(channel), np.int64)

    def _floats(self, x, shape: tuple, what: str) -> np.ndarray:
        arr = _numeric(x, what)
        if arr.ndim != len(shape) or any(w is not None and a != w for a, w in zip(arr.shape, shape, strict=True)):
            want = ", ".join("B" if w is None else str(w) for w in shape)
            raise BundleError(f"{what} must be [{want}] float32, got {list(arr.shape)}")
        if len(arr) == 0:
            raise BundleError(f"{what} is an empty batch")
        _finite(arr, what)
        return np.ascontiguousarray(arr, np.float32)

    # -- the three stages --------------------------------------------------------------------------------

    def _images(self, images: np.ndarray, preprocessed: bool) -> np.ndarray:
        if preprocessed:
            return self._floats(images, (None, self.channels, self.size, self.size), "preprocessed images")
        return self.preprocess(images)

    def _tx_conditions(self, n: int, snr_db, k, channel: str) -> dict[str, np.ndarray]:
        """The transmitter's condition inputs ``snr_db [n] float32``, ``k [n] int64``, ``channel [n] int64``."""
        ks = self._batch_values(k, n, np.float64, "k")
        if (ks != np.round(ks)).any() or ks.min() < 1 or ks.max() > self.max_symbols:
            raise BundleError(f"k must be whole numbers from 1 to {self.max_symbols}, got {np.unique(ks).tolist()}")
        snr, ctype = self._conditions(n, snr_db, channel)
        return {"snr_db": snr, "k": ks.astype(np.int64), "channel": ctype}

    def encode(self, images: np.ndarray, preprocessed: bool = False) -> np.ndarray:
        """Images -> features ``[B, D] float32``.

        Args:
            images: ``uint8 [B, H, W, C]`` (see :meth:`preprocess`), or with ``preprocessed`` the normalised
                ``float32 [B, C, S, S]``.
        """
        return self.runners["encoder"].infer({"image": self._images(images, preprocessed)})["features"]

    def send(
        self, images: np.ndarray, snr_db, k, channel: str = "awgn", preprocessed: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images -> unit-power symbols ``[B, K, 2] float32`` (I/Q) and mask ``[B, K] float32``: all a
        transmitter device computes, in one call of the fused graph where the runtime has it (:attr:`fused`),
        else :meth:`encode` then :meth:`transmit` (the same numbers, to float rounding).

        Args: as :meth:`encode` (``images``, ``preprocessed``) and :meth:`transmit` (``snr_db``, ``k``, ``channel``).
        """
        if self.fused is None:
            return self.transmit(self.encode(images, preprocessed), snr_db, k, channel)
        x = self._images(images, preprocessed)
        out = self.fused.infer({"image": x, **self._tx_conditions(len(x), snr_db, k, channel)})
        return out["symbols"], out["mask"]

    def transmit(
        self, features: np.ndarray, snr_db: float | np.ndarray, k: int | np.ndarray, channel: str = "awgn"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features -> unit-power symbols ``[B, K, 2] float32`` (I/Q) and mask ``[B, K] float32``.

        Args:
            features: ``[B, D] float32``.
            snr_db: Expected SNR in dB (Es/N0), scalar or ``[B]``, finite.
            k: Complex symbols to send, scalar or ``[B]``, integers from 1 to K.
            channel: Channel type the transmitter conditions on.
        """
        f = self._floats(features, (None, self.feature_dim if isinstance(self.feature_dim, int) else None), "features")
        out = self.runners["tx"].infer({"features": f, **self._tx_conditions(len(f), snr_db, k, channel)})
        return out["symbols"], out["mask"]

    def receive(
        self, y: np.ndarray, mask: np.ndarray, snr_db, channel: str = "awgn", csi: np.ndarray | None = None
    ) -> np.ndarray:
        """Received symbols -> class logits ``[B, N] float32``.

        Args:
            y: ``[B, K, 2] float32`` I/Q, K the bundle's maximum length.
            mask: ``[B, K] float32``, 1 for the symbols sent, 0 elsewhere.
            snr_db: SNR in dB, scalar or ``[B]``, finite.
            channel: Channel type the receiver conditions on.
            csi: ``[B, K, 2] float32`` channel estimate, for bundles whose receiver takes it.
        """
        y = self._floats(y, (None, self.max_symbols, 2), "received symbols")
        mask = self._floats(mask, (len(y), self.max_symbols), "mask")
        if not np.isin(mask, (0.0, 1.0)).all():
            raise BundleError("mask must hold only 0 and 1")
        snr, ctype = self._conditions(len(y), snr_db, channel)
        feeds = {"symbols": y, "mask": mask, "snr_db": snr, "channel": ctype}
        if self.uses_csi:
            if csi is None:
                raise BundleError("this bundle's receiver needs CSI: pass csi=[B, K, 2]")
            feeds["csi"] = self._floats(csi, (len(y), self.max_symbols, 2), "csi")
        elif csi is not None:
            raise BundleError(
                "this bundle's receiver takes no CSI (it was trained on equalised symbols); pass csi=None"
            )
        return self.runners["rx"].infer(feeds)["logits"]

    def close(self) -> None:
        """Release every runner."""
        for r in self.loaded.values():
            r.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
