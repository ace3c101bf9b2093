"""Evaluation intervals count images, not images x trials (issue 11)."""

import numpy as np

from rkd_edge.stats import interval, wilson


def test_one_trial_is_the_wilson_interval():
    per_image = np.array([1.0] * 70 + [0.0] * 30)
    assert interval(per_image, 1) == wilson(70, 100)


def test_trials_of_one_image_are_not_independent_samples():
    # Half the images always decoded right, half always wrong: 10 trials add no information.
    per_image = np.array([1.0] * 50 + [0.0] * 50)
    lo, hi = interval(per_image, 10)
    naive_lo, naive_hi = wilson(500, 1000)  # what counting images x trials claimed
    assert hi - lo > 2.5 * (naive_hi - naive_lo)
    assert (lo, hi) <= (wilson(50, 100)[0], 1.0) and hi >= wilson(50, 100)[1]


def test_independent_trials_keep_a_wilson_floor():
    rng = np.random.default_rng(0)
    per_image = rng.binomial(10, 0.8, size=200) / 10  # every image alike: trials do average out
    lo, hi = interval(per_image, 10)
    w_lo, w_hi = wilson(round(per_image.mean() * 200), 200)
    assert lo <= w_lo and hi >= w_hi and 0.0 <= lo < per_image.mean() < hi <= 1.0
