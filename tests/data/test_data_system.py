"""The real Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (skipped where not installed)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from ntkrepro.data import load

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

pytestmark = pytest.mark.skipif(
    not all((SYSTEM_DIR / f).is_file() for f in FILES),
    reason=f"{SYSTEM_DIR} absent (apt-get install dataset-fashion-mnist)",
)


def test_debian_fashion_mnist_test_split(tmp_path):
    data = load("fashion_mnist", "test", cache_dir=tmp_path, allow_download=False)
    assert data.provenance.source == "system" and data.provenance.substituted_for is None
    assert data.x.shape == (10000, 28, 28, 1) and data.num_classes == 10
    assert data.x.min() == 0 and data.x.max() == 255
    # Fashion-MNIST's test split holds exactly 1,000 images of each class
    np.testing.assert_array_equal(np.bincount(data.y), np.full(10, 1000))
    listing = "".join(f"{hashlib.sha256((SYSTEM_DIR / f).read_bytes()).hexdigest()}  {f}\n" for f in FILES)
    assert data.provenance.sha256 == hashlib.sha256(listing.encode()).hexdigest()
    assert not any(tmp_path.iterdir())  # nothing copied into the cache


def test_debian_fashion_mnist_balanced_standardized_subset(tmp_path):
    data = load("fashion_mnist", "test", n=50, balanced=True, seed=1, preprocess="standardize",
                cache_dir=tmp_path, allow_download=False)
    np.testing.assert_array_equal(np.bincount(data.y), np.full(10, 5))
    assert np.isfinite(data.x).all() and data.provenance.indices_sha256


def _raw_idx(name: str, header: int) -> np.ndarray:
    """The bytes after the IDX header (16 for images, 8 for labels), read without ntkrepro.data.formats."""
    return np.frombuffer(gzip.decompress((SYSTEM_DIR / name).read_bytes())[header:], dtype=np.uint8)


def test_debian_tshirt_shirt_pair_is_exactly_labels_0_and_6(tmp_path):
    """The CIFAR-2 stand-in pair against the raw test files: every image stored with label 0 (T-shirt/top)
    or 6 (Shirt) and nothing else, in file order, 0 -> 0 and 6 -> 1; the registry's size agrees."""
    labels = _raw_idx("t10k-labels-idx1-ubyte.gz", 8)
    images = _raw_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    data = load("fashion_mnist_tshirt_shirt", "test", cache_dir=tmp_path, allow_download=False)
    keep = np.flatnonzero(np.isin(labels, [0, 6]))
    assert len(data) == len(keep) == 2000 == data.provenance.n
    np.testing.assert_array_equal(data.x[..., 0], images[keep])
    np.testing.assert_array_equal(data.y, (labels[keep] == 6).astype(int))
    assert data.provenance.source_labels == [0, 6] and data.provenance.class_names == ["T-shirt/top", "Shirt"]
    assert data.provenance.source == "system" and not any(tmp_path.iterdir())
