"""Parsers for the real on-disk formats: IDX (MNIST, Fashion-MNIST), CIFAR-10 python pickles in a
tar.gz, and scikit-learn's bundled ``digits.csv.gz``.

Every parser returns ``(images, labels)``: images ``(n, H, W, C)`` as stored (uint8 or the file's
dtype), labels ``(n,)`` int64.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); big-endian data.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

CIFAR_ROOT = "cifar-10-batches-py"
CIFAR100_ROOT = "cifar-100-python"
CIFAR_TRAIN_MEMBERS = tuple(f"{CIFAR_ROOT}/data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_MEMBERS = (f"{CIFAR_ROOT}/test_batch",)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip-compressed when the name ends in ``.gz``).

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path.name}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path.name}: IDX header announces {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def parse_idx_pair(paths: tuple[Path, ...], split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style split: ``(images idx3, labels idx1)`` -> images (n, H, W, 1), labels (n,)."""
    del split  # each split has its own pair of files
    images_path, labels_path = paths
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(f"{images_path.name}/{labels_path.name}: expected 3-d images and 1-d labels, "
                         f"got shapes {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path.name} has {len(images)} images but {labels_path.name} "
                         f"has {len(labels)} labels")
    return images[..., None], labels.astype(np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays (CIFAR batches hold nothing else)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes under pickle protocol 2
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}: refused")
        return super().find_class(module, name)


def _cifar_batch(archive: tarfile.TarFile, member: str, labels_key: bytes = b"labels") -> tuple[np.ndarray, np.ndarray]:
    try:
        fh = archive.extractfile(member)
    except KeyError:
        raise ValueError(f"CIFAR archive lacks member {member}") from None
    batch = _ArrayUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[labels_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{member}: expected data (n, 3072) and n labels, got {data.shape} "
                         f"and {labels.shape}")
    # rows store the red, green and blue 32x32 planes one after another
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def parse_cifar10_archive(paths: tuple[Path, ...], split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python version: pickled dicts ``{b'data', b'labels'}`` in ``cifar-10-python.tar.gz``;
    train = ``data_batch_1..5`` in order, test = ``test_batch``. Images (n, 32, 32, 3)."""
    (archive_path,) = paths
    members = CIFAR_TRAIN_MEMBERS if split == "train" else CIFAR_TEST_MEMBERS
    with tarfile.open(archive_path, "r:gz") as archive:
        parts = [_cifar_batch(archive, m) for m in members]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def parse_cifar100_archive(paths: tuple[Path, ...], split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 python version: pickled dicts ``{b'data', b'fine_labels', b'coarse_labels'}`` as members
    ``cifar-100-python/train`` (50,000) and ``cifar-100-python/test`` (10,000) of ``cifar-100-python.tar.gz``.
    Images (n, 32, 32, 3) and the 100 fine labels."""
    (archive_path,) = paths
    with tarfile.open(archive_path, "r:gz") as archive:
        return _cifar_batch(archive, f"{CIFAR100_ROOT}/{split}", labels_key=b"fine_labels")


def parse_digits_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``digits.csv.gz``: one row per image, 64 pixel values (0..16) then the label."""
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"{Path(path).name}: expected 65 columns, got shape {table.shape}")
    return table[:, :64].reshape(-1, 8, 8, 1), table[:, 64].astype(np.int64)
