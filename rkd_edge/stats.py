"""Confidence intervals of accuracies (torch-free: the receiver and the evaluation share them)."""

from __future__ import annotations

import math

import numpy as np


def wilson(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion ``correct / n``."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(per_image: np.ndarray, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of the accuracy, with the image as the independent sample.

    Args:
        per_image: ``[N] float64``, each image's fraction of correct decisions over the trials.
        trials: Noise draws per image.

    With one trial this is the Wilson score interval of a binomial proportion. With more, the trials of
    one image are not independent samples (the image decides much of the outcome), so the interval is the
    normal one of the mean of the per-image accuracies over the N images (cluster-robust), clipped to [0, 1]
    and never narrower than the Wilson interval of N single draws would be at that accuracy.
    """
    n = len(per_image)
    if n == 0:
        return 0.0, 0.0
    p = float(per_image.mean())
    lo, hi = wilson(round(p * n), n) if trials > 1 else wilson(int(per_image.sum()), n)
    if trials > 1 and n > 1:
        half = z * float(per_image.std(ddof=1)) / math.sqrt(n)
        lo, hi = min(lo, max(0.0, p - half)), max(hi, min(1.0, p + half))
    return lo, hi
