"""Every helper of ntkrepro.plotting rendered from a small fixture to PNG and PDF, with what it promises."""

import inspect
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.image import imread
from PIL import Image

from ntkrepro import plotting
from ntkrepro.io import atomic_savefig
from ntkrepro.plotting import band, figure, loglog_with_fit, mark_paper_value

TESTED = {"figure", "band", "mark_paper_value", "loglog_with_fit"}


def _save(fig, tmp_path, name):
    """Write PNG and PDF as a stage does; both must be valid files. Returns the PNG's RGBA pixels."""
    png, pdf = (atomic_savefig(fig, tmp_path / f"{name}.{fmt}", bbox_inches="tight") for fmt in ("png", "pdf"))
    plt.close(fig)
    with Image.open(png) as im:
        assert im.format == "PNG"
        im.verify()
    pdf_bytes = pdf.read_bytes()
    assert pdf_bytes.startswith(b"%PDF-") and pdf_bytes.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf_bytes)) == 1  # one page
    pixels = imread(png)
    assert pixels.std() > 0  # something was drawn
    return pixels


def test_every_public_helper_is_tested():
    public = {name for name, obj in inspect.getmembers(plotting, inspect.isfunction)
              if obj.__module__ == plotting.__name__ and not name.startswith("_")}
    assert public == TESTED


def test_figure_is_one_paper_column_per_panel_and_readable(tmp_path):
    fig, ax = figure()
    assert isinstance(ax, plt.Axes)
    np.testing.assert_allclose(fig.get_size_inches(), [3.4, 2.4])
    ax.plot([0, 1, 2], [1, 0, 1], label="depth 4")
    ax.set_xlabel("width")
    ax.set_title("Fig. 1")
    legend = ax.legend()
    fig.canvas.draw()
    texts = [ax.title, ax.xaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels(), *legend.get_texts()]
    assert min(t.get_fontsize() for t in texts) >= 7  # readable when printed at column width
    pixels = _save(fig, tmp_path, "single")
    assert 0.9 * 3.4 * 200 <= pixels.shape[1] <= (3.4 + 2 * 0.1) * 200  # 200 dpi; tight bbox pads 0.1 in

    fig, axes = figure(2, 3, height=2.0)
    assert axes.shape == (2, 3)
    np.testing.assert_allclose(fig.get_size_inches(), [3 * 3.4 * 0.85, 4.0])
    for a in axes.flat:
        a.plot([0, 1], [0, 1])
    _save(fig, tmp_path, "panels")

    fig, _ = figure(width=7.0)
    assert fig.get_size_inches()[0] == pytest.approx(7.0)
    plt.close(fig)


def test_band_fills_between_lower_and_upper(tmp_path):
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean = np.array([1.0, 3.0, 2.0, 4.0])
    lo, hi = mean - [0.1, 0.5, 0.2, 0.3], mean + [0.3, 0.1, 0.4, 0.2]
    fig, ax = figure()
    line = band(ax, x, mean, lo, hi, label="width 500")
    np.testing.assert_array_equal(line.get_xdata(), x)
    np.testing.assert_array_equal(line.get_ydata(), mean)
    assert line.get_label() == "width 500"
    (fill,) = ax.collections
    vertices = np.concatenate([p.vertices for p in fill.get_paths()])
    for xi, low, high in zip(x, lo, hi, strict=True):
        at = vertices[np.isclose(vertices[:, 0], xi), 1]
        assert at.min() == pytest.approx(low) and at.max() == pytest.approx(high)
    assert vertices[:, 1].min() == pytest.approx(lo.min()) and vertices[:, 1].max() == pytest.approx(hi.max())
    np.testing.assert_allclose(fill.get_facecolor()[0], to_rgba(line.get_color(), 0.2))

    red = band(ax, x, mean + 5, lo + 5, hi + 5, color="red")
    assert to_rgba(red.get_color()) == to_rgba("red")
    np.testing.assert_allclose(ax.collections[1].get_facecolor()[0], to_rgba("red", 0.2))

    pixels = _save(fig, tmp_path, "band")
    shade = 0.8 + 0.2 * np.array(to_rgba(line.get_color())[:3])  # 20% of the line colour on white
    assert (np.abs(pixels[..., :3] - shade).max(axis=-1) < 0.02).sum() > 100  # the band is drawn


@pytest.mark.parametrize("axis", ["y", "x"])
def test_mark_paper_value_draws_a_visible_dashed_reference(tmp_path, axis):
    fig, ax = figure()
    ax.plot([0, 1], [0, 1], label="ours")
    marker = mark_paper_value(ax, 5.0, label="paper (Tab. 1)", axis=axis)
    data = marker.get_ydata() if axis == "y" else marker.get_xdata()
    np.testing.assert_array_equal(data, [5.0, 5.0])
    assert marker.get_linestyle() == "--" and to_rgba(marker.get_color()) == to_rgba("black")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    assert lo < 5.0 < hi  # the axis grows to show the published value
    legend = ax.legend()
    assert [t.get_text() for t in legend.get_texts()] == ["ours", "paper (Tab. 1)"]
    _save(fig, tmp_path, f"paper_{axis}")


@pytest.mark.parametrize("as_series", [False, True])
def test_loglog_with_fit_overlays_the_requested_power_law(tmp_path, as_series):
    x = np.array([10.0, 30.0, 100.0, 300.0, 1000.0])
    y = 3.0 * x**-0.5 * np.array([1.05, 0.97, 1.02, 0.99, 1.01])
    fig, ax = figure()
    args = (pd.Series(x), pd.Series(y)) if as_series else (x, y)
    line = loglog_with_fit(ax, *args, slope=-0.5, intercept=np.log(3.0), label="data", marker="o")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    data, fit = ax.get_lines()
    assert data is line
    np.testing.assert_allclose(fit.get_xdata(), x)
    np.testing.assert_allclose(fit.get_ydata(), 3.0 * x**-0.5)
    slope, intercept = np.polyfit(np.log(fit.get_xdata()), np.log(fit.get_ydata()), 1)
    assert slope == pytest.approx(-0.5) and intercept == pytest.approx(np.log(3.0))
    assert fit.get_linestyle() == ":" and fit.get_color() == data.get_color()
    assert fit.get_label() == "slope -0.50"
    loglog_with_fit(ax, x, 2 * y, slope=-0.5, intercept=np.log(6.0), fit_label="fit -0.50")
    assert ax.get_lines()[-1].get_label() == "fit -0.50"
    _save(fig, tmp_path, f"loglog_{as_series}")
