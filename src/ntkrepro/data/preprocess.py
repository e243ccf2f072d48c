"""Input preprocessing used by the papers (numpy, float64; the data layer runs before any JAX code and
keeps whole datasets off the accelerator).

- ``scale01``: pixels / pixel_max (255 for 8-bit images, 16 for digits).
- ``standardize``: pixels / pixel_max, then per channel ``(x - mean_c) / std_c`` with the mean and
  (population) standard deviation of the whole TRAINING split of the dataset, for the test split too
  (Arora et al. 2019's code: no ZCA). The statistics never depend on ``n`` or ``classes``.
- ``unit_norm``: each example, flattened, scaled to unit Euclidean length (Feng & Kolter, Sec. 5).
- ``pixel_unit_norm``: ``standardize``, then each pixel's channel vector scaled to unit length
  (Feng & Kolter, Sec. 5, CDEQ-NTK: ``||x_ij||_2 = 1``). With one channel this leaves the sign
  ``+-1`` of each standardized pixel.
Vectors of zero length stay zero under both normalizations.
"""

from __future__ import annotations

import numpy as np

PREPROCESSING = ("scale01", "standardize", "unit_norm", "pixel_unit_norm")
IMAGE_ONLY = ("scale01", "standardize", "pixel_unit_norm")
NEEDS_TRAIN_STATS = ("standardize", "pixel_unit_norm")
STATS_CHUNK = 4096


def channel_stats(train_images: np.ndarray, *, pixel_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of ``train_images / pixel_max`` over (n, H, W); two passes
    over chunks so that a uint8 dataset is never copied whole to float64."""
    channels = train_images.shape[-1]
    count = train_images.size // channels
    total = np.zeros(channels)
    for start in range(0, len(train_images), STATS_CHUNK):
        chunk = train_images[start:start + STATS_CHUNK].reshape(-1, channels) / pixel_max
        total += chunk.sum(axis=0)
    mean = total / count
    squares = np.zeros(channels)
    for start in range(0, len(train_images), STATS_CHUNK):
        chunk = train_images[start:start + STATS_CHUNK].reshape(-1, channels) / pixel_max
        squares += ((chunk - mean) ** 2).sum(axis=0)
    std = np.sqrt(squares / count)
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))  # zero up to the rounding of the mean
    if np.any(constant):
        raise ValueError(f"standardize: channel(s) {np.flatnonzero(constant).tolist()} are constant "
                         "on the training split")
    return mean, std


def _scale_to_unit(v: np.ndarray, axis) -> np.ndarray:
    """``v / ||v||`` along ``axis``, dividing by the largest entry first so that tiny vectors do not
    underflow; zero vectors stay zero."""
    scale = np.max(np.abs(v), axis=axis, keepdims=True)
    u = v / np.where(scale == 0, 1.0, scale)
    norms = np.sqrt(np.sum(u * u, axis=axis, keepdims=True))
    return u / np.where(norms == 0, 1.0, norms)


def unit_norm(x: np.ndarray) -> np.ndarray:
    """Each example (all axes but the first) scaled to unit Euclidean norm."""
    return _scale_to_unit(x, axis=tuple(range(1, x.ndim)))


def pixel_unit_norm(images: np.ndarray) -> np.ndarray:
    """Each pixel's channel vector ``images[i, h, w, :]`` scaled to unit Euclidean norm."""
    return _scale_to_unit(images, axis=-1)


def apply(x: np.ndarray, method: str | None, *, pixel_max: float | None = None,
          stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Apply ``method`` to raw data ``x`` (float64 result). ``stats`` = ``channel_stats`` of the
    training split, needed by ``standardize`` and ``pixel_unit_norm``."""
    x = np.asarray(x, dtype=np.float64)
    if method is None:
        return x
    if method == "unit_norm":
        return unit_norm(x)
    if method == "scale01":
        return x / pixel_max
    mean, std = stats
    standardized = (x / pixel_max - mean) / std
    return standardized if method == "standardize" else pixel_unit_norm(standardized)
