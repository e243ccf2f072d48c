"""The statistics behind the verdicts: means over seeds and straight-line fits, each with its standard
error and the number of points, so that a claim's comparison can state how precise the measurement is.

``Estimate`` is what a stage reports for a measured value with an uncertainty (``StageResult.uncertainty``
takes ``estimate.record()``); the claims evaluation reads ``se`` and ``n`` from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A measured value with its standard error over ``n`` points (seeds, draws or fit points)."""

    value: float
    se: float
    n: int
    over: str  # what the n points are: "seeds", "inits", "draws", "fit points", ...

    def record(self) -> dict:
        """The ``StageResult.uncertainty`` entry of this estimate."""
        return {"se": float(self.se), "n": int(self.n), "over": self.over}


@dataclass(frozen=True)
class LineFit:
    """Least-squares line y = slope x + intercept with the slope's standard error over ``n`` points."""

    slope: float
    intercept: float
    slope_se: float
    n: int

    def slope_estimate(self) -> Estimate:
        return Estimate(self.slope, self.slope_se, self.n, "fit points")


def mean_se(values, *, over: str = "seeds") -> Estimate:
    """Mean and its standard error s / sqrt(n) (s: sample standard deviation, ddof = 1; se = nan for n = 1)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_se needs at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError("mean_se needs finite values")
    se = float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return Estimate(float(v.mean()), se, int(v.size), over)


def line_fit(x, y) -> LineFit:
    """Ordinary least squares of ``y`` on ``x``; the slope's standard error sqrt(RSS / (n - 2) / Sxx)
    (nan with two points, where the line passes through both)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"line_fit needs two 1-D arrays of equal length >= 2 (got {x.shape}, {y.shape})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("line_fit needs finite values")
    xm = x.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx == 0.0:
        raise ValueError("line_fit needs at least two distinct x values")
    slope = float(np.sum((x - xm) * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * xm)
    n = x.size
    if n > 2:
        rss = float(np.sum((y - intercept - slope * x) ** 2))
        se = float(np.sqrt(rss / (n - 2) / sxx))
    else:
        se = float("nan")
    return LineFit(slope, intercept, se, n)


def loglog_fit(x, y) -> LineFit:
    """:func:`line_fit` of log y on log x (a power law y ~ x^slope); x and y must be positive."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("loglog_fit needs positive values (a log is taken)")
    return line_fit(np.log(x), np.log(y))


def local_slopes(x, y) -> np.ndarray:
    """Slopes of log y against log x between consecutive points (how a power law's exponent drifts)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("local_slopes needs positive values (a log is taken)")
    return np.diff(np.log(y)) / np.diff(np.log(x))


def relative_error(estimate, exact) -> float:
    """||estimate - exact||_F / ||exact||_F."""
    exact = np.asarray(exact, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(estimate, dtype=np.float64) - exact) / np.linalg.norm(exact))
