"""Parsing the real formats: IDX gz, CIFAR-10 python pickles in tar.gz, scikit-learn's digits."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
from fake_datasets import idx_gz
from sklearn.datasets import load_digits

from ntkrepro.data import get_spec, load
from ntkrepro.data.formats import parse_cifar10_archive, parse_cifar100_archive, parse_idx_pair, read_idx


def test_idx_split_parses_to_nhwc_images_and_int_labels(fake_mnist, tmp_path):
    train = load("mnist", "train", cache_dir=tmp_path)
    assert train.x.shape == (40, 6, 5, 1) and train.x.dtype == np.float64
    assert train.y.dtype == np.int64 and train.num_classes == 10
    np.testing.assert_array_equal(train.x[..., 0], fake_mnist.train_images)
    np.testing.assert_array_equal(train.y, fake_mnist.train_labels)
    test = load("mnist", "test", cache_dir=tmp_path, dtype=np.float32)
    assert test.x.shape == (12, 6, 5, 1) and test.x.dtype == np.float32
    np.testing.assert_array_equal(test.x[..., 0], fake_mnist.test_images)


def test_read_idx_other_type_codes_and_uncompressed(tmp_path):
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    header = struct.pack(">BBBB", 0, 0, 0x0D, 3) + struct.pack(">3I", 2, 3, 4)
    (tmp_path / "f.idx").write_bytes(header + values.astype(">f4").tobytes())
    parsed = read_idx(tmp_path / "f.idx")
    assert parsed.dtype == np.float32 and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, values)


# raw bytes as parameters, compressed in the test: gzip output carries a timestamp, and parameter ids that
# differ between pytest-xdist workers (collected a second apart) abort the whole run
@pytest.mark.parametrize("raw, message", [
    (b"\x00\x00\x07\x01\x00\x00\x00\x02ab", "not an IDX file"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05ab", "announces 13 bytes, file has 10"),
])
def test_read_idx_rejects_bad_files(tmp_path, raw, message):
    (tmp_path / "bad-idx1-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "bad-idx1-ubyte.gz")


def test_idx_images_and_labels_must_agree(tmp_path):
    (tmp_path / "i.gz").write_bytes(idx_gz(np.zeros((3, 2, 2))))
    (tmp_path / "l.gz").write_bytes(idx_gz(np.zeros(4)))
    with pytest.raises(ValueError, match="3 images but l.gz has 4 labels"):
        parse_idx_pair((tmp_path / "i.gz", tmp_path / "l.gz"), "train")


def test_cifar_archive_channels_order_and_splits(fake_cifar, tmp_path):
    train = load("cifar10", "train", cache_dir=tmp_path)
    assert train.x.shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(train.x, fake_cifar.train_images)  # batches 1..5 in order
    np.testing.assert_array_equal(train.y, fake_cifar.train_labels)
    test = load("cifar10", "test", cache_dir=tmp_path)
    np.testing.assert_array_equal(test.x, fake_cifar.test_images)
    np.testing.assert_array_equal(test.y, fake_cifar.test_labels)
    # one red pixel: row-major red plane first
    assert train.x[0, 0, 1, 0] == fake_cifar.train_images[0, 0, 1, 0]


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_unpickler_refuses_foreign_globals(tmp_path):
    payload = pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        parse_cifar10_archive((archive,), "test")
    with pytest.raises(ValueError, match="lacks member cifar-10-batches-py/data_batch_1"):
        parse_cifar10_archive((archive,), "train")


def test_digits_match_scikit_learn_with_fixed_split():
    reference = load_digits()
    train, test = load("digits", "train"), load("digits", "test")
    assert train.x.shape == (1347, 8, 8, 1) and test.x.shape == (450, 8, 8, 1)
    np.testing.assert_array_equal(train.x[..., 0], reference.images[:1347])
    np.testing.assert_array_equal(test.y, reference.target[1347:])
    assert train.provenance.source == "bundled" and len(train.provenance.sha256) == 64


def test_cifar100_archive_fine_labels_and_channel_order(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar-100-python.tar.gz"
    rows = {}
    with tarfile.open(path, "w:gz") as archive:
        for split, n in (("train", 6), ("test", 3)):
            rows[split] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            blob = pickle.dumps({b"data": rows[split], b"fine_labels": [7 * i for i in range(n)],
                                 b"coarse_labels": [0] * n}, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{split}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    images, labels = parse_cifar100_archive((path,), "test")
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 7, 14]  # fine labels, not coarse
    # a row holds the red, green and blue 32x32 planes one after another
    assert images[1, 0, 1, 0] == rows["test"][1, 1] and images[1, 0, 0, 2] == rows["test"][1, 2048]
    assert get_spec("cifar100").num_classes == 100
