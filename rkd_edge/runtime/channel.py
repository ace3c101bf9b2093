"""The simulated channels in numpy, for receivers without PyTorch (``rkd-edge rx --channel``).

A twin of :mod:`rkd_edge.channel` with exactly the conventions of DESIGN.md section 2:

- symbols are ``[B, K, 2] float32`` I/Q (no complex dtype), unit power per sample over the active symbols;
- SNR is Es/N0 in dB per complex symbol: noise ``CN(0, s2)``, ``s2 = 10^(-snr_db/10)``, ``s2/2`` on each of I, Q;
- Rayleigh ``h ~ CN(0, 1)``; Rician ``h = sqrt(K/(K+1)) + sqrt(1/(K+1)) CN(0, 1)`` (``E|h|^2 = 1``);
  ``block`` draws one ``h`` per sample per transmission, ``fast`` one per symbol;
- the receiver equalises with perfect CSI (``zf``: ``conj(h) y / |h|^2``; ``mmse``: ``conj(h) y / (|h|^2 + s2)``)
  or passes ``y`` unequalised with ``h`` to the decoder (``decoder``);
- masked (inactive) symbols come out as 0; the CSI of AWGN and identity is ``1 + 0j``.

Given the same draws (fading ``[B, 1 or K, 2]``, noise ``[B, K, 2]`` standard normals) both give the same
output (``tests/test_link.py`` checks it against :mod:`rkd_edge.channel`). Here the draws come from a seeded
``numpy.random.Generator``, one sample after the other: the same seed gives the same noise, however the
samples are grouped into calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rkd_edge.channel_ids import CHANNEL_TYPES, check_fading
from rkd_edge.errors import UserError

NAMES = tuple(CHANNEL_TYPES)


def noise_variance(snr_db: float | np.ndarray) -> np.ndarray:
    """Complex noise variance ``s2 = 10^(-snr_db/10)`` (float32) for unit-power symbols, SNR Es/N0 in dB."""
    return np.power(np.float32(10.0), -np.asarray(snr_db, np.float32) / np.float32(10.0)).astype(np.float32)


def cmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Complex product of ``[..., 2]`` I/Q arrays."""
    return np.stack([a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1], a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]], -1)


def conj(a: np.ndarray) -> np.ndarray:
    """Complex conjugate of ``[..., 2]`` I/Q arrays."""
    return np.stack([a[..., 0], -a[..., 1]], -1)


@dataclass(frozen=True)
class Draws:
    """The standard normals one channel use consumes.

    Attributes:
        fading: ``[B, 1 or K, 2] float32`` (``None`` for channels without fading).
        noise: ``[B, K, 2] float32`` (``None`` for the identity channel).
    """

    fading: np.ndarray | None
    noise: np.ndarray | None


class NumpyChannel:
    """One channel: identity, AWGN, Rayleigh or Rician (see the module docstring for the conventions).

    Args:
        name: ``identity``, ``awgn``, ``rayleigh`` or ``rician``.
        mode: Fading mode, ``block`` or ``fast`` (fading channels).
        csi: ``zf``, ``mmse`` (equalise with perfect CSI) or ``decoder`` (pass ``h`` on) (fading channels).
        k_factor: Rician K, linear ratio of line-of-sight to scattered power (Rician only; Rayleigh is 0).
    """

    def __init__(self, name: str, mode: str = "block", csi: str = "zf", k_factor: float = 3.0) -> None:
        if name not in NAMES:
            raise UserError(f"unknown channel {name!r}; choose one of {', '.join(NAMES)}")
        check_fading(mode, csi, k_factor)
        self.name, self.mode, self.csi = name, mode, csi
        self.k_factor = 0.0 if name == "rayleigh" else float(k_factor)
        self.fading = name in ("rayleigh", "rician")

    def describe(self) -> dict:
        """Parameters to record next to every result (the torch channels' ``describe``)."""
        if not self.fading:
            return {"channel": self.name}
        d = {"channel": self.name, "mode": self.mode, "csi": self.csi}
        if self.name == "rician":
            d["k_factor"] = self.k_factor
        return d

    def draw(self, batch: int, k: int, rng: np.random.Generator) -> Draws:
        """Standard normals for ``batch`` samples of ``k`` symbols, one sample after the other.

        Each sample takes its fading and then its noise from the stream before the next sample's: a receiver
        that decodes frames one by one or in batches of any size draws the same channel for every frame.
        """
        n_fading = (1 if self.mode == "block" else k) * 2 if self.fading else 0
        n_noise = k * 2 if self.name != "identity" else 0
        z = rng.standard_normal((batch, n_fading + n_noise), np.float32)
        fading = z[:, :n_fading].reshape(batch, -1, 2) if n_fading else None
        noise = z[:, n_fading:].reshape(batch, k, 2) if n_noise else None
        return Draws(fading, noise)

    def __call__(
        self,
        x: np.ndarray,
        snr_db: float | np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        draws: Draws | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Send symbols through the channel.

        Args:
            x: ``[B, K, 2] float32`` unit-power I/Q symbols.
            snr_db: Es/N0 in dB, scalar or ``[B]``.
            mask: ``[B, K]`` 1 for active symbols; ``None`` means all active.
            rng: Source of the draws (used when ``draws`` is not given).
            draws: The standard normals to use (see :meth:`draw`).

        Returns:
            ``(y, csi)``: received symbols ``[B, K, 2] float32`` (equalised unless ``csi='decoder'``, 0 where
            masked) and the channel coefficients ``[B, K, 2] float32``.
        """
        x = np.asarray(x, np.float32)
        b, k, _ = x.shape
        if draws is None:
            if rng is None:
                raise ValueError("give rng or draws")
            draws = self.draw(b, k, rng)
        unit = np.zeros_like(x)
        unit[..., 0] = 1.0
        if self.name == "identity":
            y, h = x, unit
        else:
            s2 = np.broadcast_to(noise_variance(snr_db), (b,)).reshape(b, 1, 1)
            noise = draws.noise * np.sqrt(s2 / np.float32(2.0))
            if not self.fading:
                y, h = x + noise, unit
            else:
                scatter = draws.fading * np.sqrt(np.float32(0.5))
                h = scatter * np.float32(math.sqrt(1.0 / (self.k_factor + 1.0)))
                h[..., 0] += np.float32(math.sqrt(self.k_factor / (self.k_factor + 1.0)))
                h = np.ascontiguousarray(np.broadcast_to(h, (b, k, 2)))
                y = cmul(h, x) + noise
                if self.csi != "decoder":
                    denom = (h * h).sum(-1, keepdims=True)
                    if self.csi == "mmse":
                        denom = denom + s2
                    y = cmul(conj(h), y) / np.maximum(denom, np.float32(1e-12))
        if mask is not None:
            y = y * np.asarray(mask, np.float32)[..., None]
        return y.astype(np.float32), h.astype(np.float32)


def create_channel(name: str, mode: str | None = None, csi: str | None = None, k_factor: float | None = None):
    """Build a numpy channel by name (arguments a channel does not take are ignored, as in torch's)."""
    kw = {"mode": mode, "csi": csi, "k_factor": k_factor}
    return NumpyChannel(name, **{k: v for k, v in kw.items() if v is not None})
