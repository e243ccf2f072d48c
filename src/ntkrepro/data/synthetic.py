"""Synthetic datasets: points on the unit circle, standard Gaussian inputs and shape-matched image sets.

A generator takes ``(split, n, seed, options)`` and returns ``(x, y, num_classes)``. Draws use
``numpy.random.default_rng([seed, split_id])`` so that train and test are independent and every
value follows from the seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

SPLIT_IDS = {"train": 0, "test": 1}
TEACHER_STREAM = 2  # the "linear" target's weights: shared by both splits, drawn from [seed, 2]
GAUSSIAN_TARGETS = ("sign", "linear", "product")


def _check_options(name: str, options: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {list(allowed)}")


def check_circle_options(options: Mapping[str, Any]) -> None:
    _check_options("circle", options, ("grid",))
    if not isinstance(options.get("grid", False), bool):
        raise ValueError(f"circle: option grid must be true or false, got {options['grid']!r}")


def circle(split: str, n: int, seed: int, options: Mapping[str, Any]):
    """Points ``x = (cos g, sin g)`` on the unit circle; ``y = g`` in [-pi, pi) (float targets).

    ``grid=True``: train angles ``-pi + 2 pi k / n``, test angles the midpoints between them (shifted
    by ``pi / n``). ``grid=False`` (default): angles uniform on [-pi, pi)."""
    if options.get("grid", False):
        angles = -np.pi + 2 * np.pi * (np.arange(n) + (0.5 if split == "test" else 0.0)) / n
    else:
        angles = np.random.default_rng([seed, SPLIT_IDS[split]]).uniform(-np.pi, np.pi, size=n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1), angles, None


def check_gaussian_options(options: Mapping[str, Any]) -> None:
    _check_options("gaussian", options, ("dim", "target"))
    dim = options.get("dim")
    dims = (dim,) if isinstance(dim, int) else tuple(dim) if isinstance(dim, Sequence) else None
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ValueError(f"gaussian: option dim must be a positive int or a shape tuple, got {dim!r}")
    target = options.get("target")
    if target is not None and not callable(target) and target not in GAUSSIAN_TARGETS:
        raise ValueError(f"gaussian: target must be None, a callable or one of {list(GAUSSIAN_TARGETS)}, "
                         f"got {target!r}")


def gaussian(split: str, n: int, seed: int, options: Mapping[str, Any]):
    """Inputs ``x ~ N(0, I)`` of shape ``(n, *dim)`` (``dim`` an int for vectors, a sequence for images).

    ``target``: None -> ``y = 0``; ``"sign"`` -> class ``1[x_1 > 0]`` (2 classes); ``"linear"`` ->
    ``y = <w, x> / sqrt(d)`` with ``w ~ N(0, I)`` shared by both splits; ``"product"`` -> ``y =
    prod_i x_i`` over the flattened coordinates; a callable ``f`` -> ``y = f(x)`` (numpy, batch-first).
    """
    dim = options["dim"]
    shape = (dim,) if isinstance(dim, int) else tuple(dim)
    x = np.random.default_rng([seed, SPLIT_IDS[split]]).standard_normal((n, *shape))
    flat = x.reshape(n, -1)
    target: str | Callable | None = options.get("target")
    if target is None:
        return x, np.zeros(n), None
    if target == "sign":
        return x, (flat[:, 0] > 0).astype(np.int64), 2
    if target == "linear":
        w = np.random.default_rng([seed, TEACHER_STREAM]).standard_normal(flat.shape[1])
        return x, flat @ w / np.sqrt(flat.shape[1]), None
    if target == "product":
        return x, np.prod(flat, axis=1), None
    y = np.asarray(target(x), dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"gaussian: the target callable must return shape ({n},), got {y.shape}")
    return x, y, None


SHAPED_SEED = 0  # a shape-matched image set is one fixed dataset (like a stored file), not a per-run draw
SHAPED_CHUNK = 4096
CLASS_SIGNAL = 0.05  # class-mean amplitude in units of the per-pixel noise


@functools.lru_cache(maxsize=2)
def class_images(split: str, *, n: int, image_shape: tuple[int, int, int], num_classes: int):
    """A fixed synthetic image split shaped like a stored dataset: ``n`` uint8 images of ``image_shape`` and
    balanced labels 0..num_classes-1 (a shuffled ``arange(n) % num_classes``). Pixel = 127.5 + 40 (mu_y + z),
    rounded and clipped to 0..255, with the class means mu_c ~ CLASS_SIGNAL * N(0, I) shared by both splits
    and noise z ~ N(0, I) per image, drawn from ``default_rng([SHAPED_SEED, split_id])`` in chunks (never a
    float64 copy of the whole split). A stand-in for time, memory and numerics at a dataset's size only."""
    means = CLASS_SIGNAL * np.random.default_rng([SHAPED_SEED, TEACHER_STREAM]).standard_normal(
        (num_classes, *image_shape))
    rng = np.random.default_rng([SHAPED_SEED, SPLIT_IDS[split]])
    labels = rng.permutation(np.arange(n) % num_classes)
    images = np.empty((n, *image_shape), dtype=np.uint8)
    for start in range(0, n, SHAPED_CHUNK):
        y = labels[start:start + SHAPED_CHUNK]
        z = rng.standard_normal((len(y), *image_shape))
        images[start:start + len(y)] = np.clip(np.rint(127.5 + 40.0 * (means[y] + z)), 0, 255)
    images.flags.writeable = False  # cached: shared by every caller
    return images, labels
