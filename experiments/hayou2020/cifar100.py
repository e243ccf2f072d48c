"""CIFAR-100 (fine labels) for Table 2, registered in ``ntkrepro.data``'s registry on import.

``cifar-100-python.tar.gz`` from the publisher (https://www.cs.toronto.edu/~kriz/cifar.html): pickled
dicts ``{b'data': (n, 3072) uint8, b'fine_labels': [...]}`` in members ``cifar-100-python/train``
(50,000 images) and ``cifar-100-python/test`` (10,000). The publisher lists the MD5
eb9058c3a382ffc7106e4002c42a8d85; the SHA-256 verified here is the one of that same file
(85cd44d0..., as pinned by Keras' and torchvision's loaders). Belongs in ``ntkrepro.data.registry``;
kept with the only experiment that needs it until it moves there.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ntkrepro.data import REGISTRY, DatasetSpec, RemoteFile, register

ARCHIVE = RemoteFile(
    "cifar-100-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
)
MEMBERS = {"train": "cifar-100-python/train", "test": "cifar-100-python/test"}


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds plain containers and numpy arrays only (all a CIFAR-100 batch holds)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-100 batch refers to {module}.{name}: refused")
        return super().find_class(module, name)


def parse_cifar100_archive(paths: tuple[Path, ...], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 32, 32, 3) uint8 and fine labels (n,) int64 of ``split``."""
    (archive_path,) = paths
    with tarfile.open(archive_path, "r:gz") as archive:
        try:
            raw = archive.extractfile(MEMBERS[split]).read()
        except KeyError:
            raise ValueError(f"{archive_path.name} lacks member {MEMBERS[split]}") from None
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{MEMBERS[split]}: expected data (n, 3072) and n labels, got {data.shape}, {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


if "cifar100" not in REGISTRY:
    register(
        DatasetSpec(
            name="cifar100",
            kind="files",
            description="CIFAR-100 (fine labels), python pickles in tar.gz",
            num_classes=100,
            image_shape=(32, 32, 3),
            pixel_max=255.0,
            sizes={"train": 50000, "test": 10000},
            files={"train": (ARCHIVE,), "test": (ARCHIVE,)},
            parse=parse_cifar100_archive,
        )
    )
