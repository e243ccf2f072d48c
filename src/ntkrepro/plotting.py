"""Figure style shared by every artifact: paper-column width, readable fonts, PNG + PDF via the stage.

    from ntkrepro.plotting import figure, mark_paper_value, band
    fig, ax = figure()                      # one column (3.4 in wide); figure(ncols=3) for panels
    band(ax, x, mean, lo, hi, label="width 500")
    mark_paper_value(ax, 0.0457, label="paper")
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMN_WIDTH_IN = 3.4
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 150,
    "savefig.dpi": 200,
}
PAPER_STYLE = {"color": "black", "linestyle": "--", "linewidth": 0.9}


def figure(nrows: int = 1, ncols: int = 1, *, height: float = 2.4, width: float | None = None, **kw):
    """A figure sized for a paper column per panel (``width`` overrides the total width)."""
    plt.rcParams.update(STYLE)
    w = width if width is not None else COLUMN_WIDTH_IN * max(1, ncols) * (0.85 if ncols > 1 else 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, height * nrows), squeeze=False, **kw)
    fig.set_layout_engine("constrained")
    return fig, (axes[0, 0] if nrows == ncols == 1 else axes)


def band(ax, x, mean, lo, hi, *, label=None, color=None, **kw):
    """A mean line with a shaded band (seeds spread, CI or percentiles)."""
    (line,) = ax.plot(x, mean, label=label, color=color, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def mark_paper_value(ax, value, *, label="paper", axis="y"):
    """Mark a published value as a dashed reference line."""
    draw = ax.axhline if axis == "y" else ax.axvline
    return draw(value, label=label, **PAPER_STYLE)


def loglog_with_fit(ax, x, y, *, slope, intercept, label=None, fit_label=None, **kw):
    """Data on log-log axes with a fitted power law ``y = exp(intercept) x^slope`` overlaid."""
    x = np.asarray(x, dtype=float)
    (line,) = ax.loglog(x, y, label=label, **kw)
    ax.loglog(x, np.exp(intercept) * x**slope, linestyle=":", color=line.get_color(),
              label=fit_label or f"slope {slope:.2f}")
    return line
