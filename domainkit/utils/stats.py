"""Small statistics shared by the calibrations."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def prediction_bound(values: Sequence[float], share: float) -> float | None:
    """The value a new draw like ``values`` falls below with probability ``share``: the
    normal prediction bound mean + t * sd * sqrt(1 + 1/n), exact for normal values. It rests
    on all n values, where an empirical quantile in the tail of a few dozen is one or two
    of them. None with fewer than 3 values or no spread."""
    from scipy.stats import t

    x, n = np.asarray(values, dtype=float), len(values)
    if n < 3 or x.std() < 1e-9:
        return None
    return float(x.mean() + t.ppf(share, n - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / n))
