"""Small datasets written in the real file formats (used by tests/data/conftest.py and the tests).

The writers here follow the published format descriptions (IDX: yann.lecun.com/exdb/mnist; CIFAR-10
python version: www.cs.toronto.edu/~kriz/cifar.html), independently of ``ntkrepro.data.formats``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass

import numpy as np


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_gz(array: np.ndarray) -> bytes:
    """IDX file of unsigned bytes: 0, 0, type 0x08, ndim, big-endian uint32 dims, data; gzipped."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def cifar_row(image: np.ndarray) -> np.ndarray:
    """One CIFAR row: the 1024 red values (row-major), then the 1024 green, then the 1024 blue."""
    return np.concatenate([image[:, :, 0].ravel(), image[:, :, 1].ravel(), image[:, :, 2].ravel()])


def cifar_tar_gz(batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """``cifar-10-python.tar.gz`` with pickled dicts {b'batch_label', b'labels', b'data', b'filenames'}
    under ``cifar-10-batches-py/``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, (images, labels) in batches.items():
            payload = pickle.dumps({
                b"batch_label": member.encode(),
                b"labels": [int(v) for v in labels],
                b"data": np.stack([cifar_row(im) for im in images]).astype(np.uint8),
                b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
            }, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        meta = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return buf.getvalue()


@dataclass
class FakeSplits:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def fake_mnist_files(seed: int = 0, n_train: int = 40, n_test: int = 12, side=(6, 5)):
    """Random uint8 images (non-square, to catch transposes) and labels 0..9 as the four IDX gz files."""
    rng = np.random.default_rng(seed)
    arrays = FakeSplits(
        rng.integers(0, 256, (n_train, *side), dtype=np.uint8),
        rng.permutation(np.arange(n_train) % 10).astype(np.uint8),
        rng.integers(0, 256, (n_test, *side), dtype=np.uint8),
        rng.permutation(np.arange(n_test) % 10).astype(np.uint8),
    )
    files = {
        "train": [("train-images-idx3-ubyte.gz", idx_gz(arrays.train_images)),
                  ("train-labels-idx1-ubyte.gz", idx_gz(arrays.train_labels))],
        "test": [("t10k-images-idx3-ubyte.gz", idx_gz(arrays.test_images)),
                 ("t10k-labels-idx1-ubyte.gz", idx_gz(arrays.test_labels))],
    }
    return arrays, files


def fake_cifar_files(seed: int = 0, per_batch: int = 8, n_test: int = 10):
    """Five train batches and a test batch of random 32x32x3 images, labels 0..9."""
    rng = np.random.default_rng(seed)
    n_train = 5 * per_batch
    arrays = FakeSplits(
        rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        rng.permutation(np.arange(n_train) % 10),
        rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        rng.permutation(np.arange(n_test) % 10),
    )
    batches = {f"data_batch_{i + 1}": (arrays.train_images[i * per_batch:(i + 1) * per_batch],
                                       arrays.train_labels[i * per_batch:(i + 1) * per_batch])
               for i in range(5)}
    batches["test_batch"] = (arrays.test_images, arrays.test_labels)
    archive = ("cifar-10-python.tar.gz", cifar_tar_gz(batches))
    return arrays, {"train": [archive], "test": [archive]}
