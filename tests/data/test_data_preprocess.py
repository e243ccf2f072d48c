"""Preprocessing math: per-channel standardization with train statistics, unit norms, scaling."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ntkrepro.data import load
from ntkrepro.data import preprocess as prep


def _reference_stats(images):
    pixels = images.reshape(-1, images.shape[-1]) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


def test_standardize_train_has_channel_mean_0_std_1(fake_cifar, tmp_path):
    train = load("cifar10", "train", preprocess="standardize", cache_dir=tmp_path)
    pixels = train.x.reshape(-1, 3)
    np.testing.assert_allclose(pixels.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(pixels.std(axis=0), 1.0, rtol=1e-12)


def test_test_split_and_subsets_use_full_train_statistics(fake_cifar, tmp_path):
    mean, std = _reference_stats(fake_cifar.train_images)
    test = load("cifar10", "test", preprocess="standardize", cache_dir=tmp_path)
    np.testing.assert_allclose(test.x, (fake_cifar.test_images / 255.0 - mean) / std, rtol=1e-12)
    subset = load("cifar10", "train", n=7, seed=3, preprocess="standardize", cache_dir=tmp_path)
    full = load("cifar10", "train", preprocess="standardize", cache_dir=tmp_path)
    raw_subset = load("cifar10", "train", n=7, seed=3, cache_dir=tmp_path)
    for xs, raw in zip(subset.x, raw_subset.x, strict=True):
        row = np.flatnonzero((fake_cifar.train_images == raw).all(axis=(1, 2, 3)))[0]
        np.testing.assert_allclose(xs, full.x[row], rtol=1e-12)


def test_cifar2_statistics_come_from_its_own_two_classes(fake_cifar, tmp_path):
    keep = np.isin(fake_cifar.train_labels, [0, 1])
    mean, std = _reference_stats(fake_cifar.train_images[keep])
    test = load("cifar2", "test", preprocess="standardize", cache_dir=tmp_path)
    test_keep = np.isin(fake_cifar.test_labels, [0, 1])
    np.testing.assert_allclose(test.x, (fake_cifar.test_images[test_keep] / 255.0 - mean) / std, rtol=1e-12)


def test_pixel_unit_norm_is_standardize_then_unit_pixel_vectors(fake_cifar, tmp_path):
    std_x = load("cifar10", "test", preprocess="standardize", cache_dir=tmp_path).x
    x = load("cifar10", "test", preprocess="pixel_unit_norm", cache_dir=tmp_path).x
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(x * np.linalg.norm(std_x, axis=-1, keepdims=True), std_x, rtol=1e-10)


def test_unit_norm_rows_and_scale01(fake_mnist, tmp_path):
    x = load("mnist", "train", preprocess="unit_norm", cache_dir=tmp_path).x
    flat = fake_mnist.train_images.reshape(40, -1).astype(float)
    np.testing.assert_allclose(x.reshape(40, -1), flat / np.linalg.norm(flat, axis=1, keepdims=True))
    scaled = load("mnist", "train", preprocess="scale01", cache_dir=tmp_path).x
    np.testing.assert_allclose(scaled[..., 0], fake_mnist.train_images / 255.0)
    digits = load("digits", "test", preprocess="scale01").x
    assert digits.min() == 0.0 and digits.max() == 1.0


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(2, 9), *[st.integers(1, 3)] * 3)))
def test_channel_stats_match_numpy_across_chunk_boundaries(images):
    per_channel = images.reshape(-1, images.shape[-1])
    if (per_channel == per_channel[0]).all(axis=0).any():
        with pytest.raises(ValueError, match="constant"):
            prep.channel_stats(images, pixel_max=255.0)
        return
    with mock.patch.object(prep, "STATS_CHUNK", 2):
        mean, std = prep.channel_stats(images, pixel_max=255.0)
    ref_mean, ref_std = _reference_stats(images)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(std, ref_std, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)),
              elements=st.floats(-1e3, 1e3, allow_nan=False)))
def test_unit_norm_gives_unit_rows_keeps_direction_and_zero_rows(x):
    y = prep.unit_norm(x)
    norms = np.linalg.norm(x, axis=1)
    nonzero = (x != 0).any(axis=1)
    np.testing.assert_allclose(np.linalg.norm(y[nonzero], axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(y[nonzero] * norms[nonzero, None], x[nonzero], rtol=1e-9, atol=1e-9)
    assert (y[~nonzero] == 0).all()


def test_gaussian_unit_norm_lies_on_the_sphere():
    x = load("gaussian", "train", n=50, options={"dim": 7}, preprocess="unit_norm").x
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-12)
