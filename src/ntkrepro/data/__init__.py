"""Datasets: registry, loaders (path, cache, system folders, verified download), preprocessing.

``load(name, split, ...)`` returns a ``Dataset(x, y, num_classes, provenance)``; see ``load`` for the
arguments, ``registry`` for the datasets and their checksums, ``preprocess`` for the preprocessing.
"""

from ntkrepro.data.fetch import DataUnavailable, default_cache_dir
from ntkrepro.data.load import Dataset, Provenance, load, select_subset
from ntkrepro.data.registry import REGISTRY, DatasetSpec, RemoteFile, get_spec, register

__all__ = [
    "REGISTRY",
    "DataUnavailable",
    "Dataset",
    "DatasetSpec",
    "Provenance",
    "RemoteFile",
    "default_cache_dir",
    "get_spec",
    "load",
    "register",
    "select_subset",
]
