"""``load``: one split of a registered dataset as arrays plus a provenance record."""

from __future__ import annotations

import hashlib
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ntkrepro.data import preprocess as prep
from ntkrepro.data.fetch import DataUnavailable, default_cache_dir, find_file, sha256_file
from ntkrepro.data.registry import SPLITS, DatasetSpec, get_spec
from ntkrepro.data.synthetic import SPLIT_IDS


@dataclass(frozen=True)
class Provenance:
    """Where the data came from. ``source``: "path", "cache", "system", "download", "bundled" or
    "synthetic" (files of one split found in different places: joined with "+").
    ``sha256``: of the raw file when the split comes from one file, else of the ``sha256sum``-style
    listing ``"<sha256>  <file name>\\n"`` of its files in registry order; synthetic data: of the
    generated ``x`` and ``y`` bytes. ``substituted_for``: the dataset that was asked for when this is
    its stand-in. ``indices_sha256``: SHA-256 of the selected indices (int64, little-endian) into the
    split as stored. ``classes``: the ``classes`` argument of ``load``. ``source_labels``: the labels as
    stored in the files that were kept, label ``i`` of ``y`` being ``source_labels[i]`` (a class subset
    such as CIFAR-2 or a stand-in pair; None for synthetic data), ``class_names`` their names. Lists, as
    metrics.json stores them (the record written equals the record returned)."""

    name: str
    split: str
    source: str
    sha256: str | None
    substituted_for: str | None
    n: int
    seed: int
    indices_sha256: str
    preprocess: str | None = None
    classes: list[int] | None = field(default=None, hash=False)
    source_labels: list[int] | None = field(default=None, hash=False)
    class_names: list[str] | None = field(default=None, hash=False)


@dataclass(frozen=True, eq=False)
class Dataset:
    """``x``: (n, H, W, C) images or (n, d) vectors, float; ``y``: (n,) int labels 0..num_classes-1
    (float targets for regression sets, where ``num_classes`` is None)."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int | None
    provenance: Provenance

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class _Request:
    split: str
    n: int | None
    seed: int
    preprocess: str | None
    classes: tuple[int, ...] | None
    balanced: bool
    cache_dir: Path
    path: Path | None
    allow_download: bool
    options: Mapping[str, Any]
    dtype: np.dtype


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_spec(spec: DatasetSpec, req: _Request, *, label_space: int | None) -> None:
    """One-line ValueError for a request ``spec`` cannot serve (before any file is read)."""
    if req.preprocess in prep.IMAGE_ONLY and not spec.is_image:
        raise ValueError(f"preprocess={req.preprocess!r} applies to image datasets; {spec.name} is not one")
    if spec.kind == "synthetic":
        if req.n is None:
            raise ValueError(f"synthetic dataset {spec.name} needs n")
        if req.classes is not None or req.balanced:
            raise ValueError(f"classes/balanced do not apply to synthetic dataset {spec.name}")
        spec.check_options(req.options)
        return
    if req.options:
        raise ValueError(f"options apply to synthetic datasets only, not to {spec.name}")
    if req.path is not None and spec.kind != "files":
        raise ValueError(f"path= applies to file datasets; {spec.name} is {spec.kind}")
    if req.classes is not None and any(c >= (label_space or spec.num_classes) for c in req.classes):
        raise ValueError(f"classes {list(req.classes)} out of range for {spec.name} "
                         f"({label_space or spec.num_classes} classes)")
    if req.n is not None and spec.sizes is not None and req.n > spec.sizes[req.split]:
        raise ValueError(f"n={req.n} exceeds the {spec.sizes[req.split]} examples of {spec.name}/{req.split}")


def _combined_sha256(names_and_digests: Sequence[tuple[str, str]]) -> str:
    if len(names_and_digests) == 1:
        return names_and_digests[0][1]
    listing = "".join(f"{digest}  {name}\n" for name, digest in names_and_digests)
    return hashlib.sha256(listing.encode()).hexdigest()


def _read_split(spec: DatasetSpec, split: str, req: _Request):
    """(images, labels, source, sha256) of one split as stored."""
    if spec.kind == "bundled":
        file, images, labels = spec.read_bundled(split)
        return images, labels, "bundled", sha256_file(file)
    if spec.kind == "generated":
        images, labels = spec.generate(split)
        return images, labels, "synthetic", hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    found = [find_file(spec, f, path=req.path, cache_dir=req.cache_dir, allow_download=req.allow_download)
             for f in spec.files[split]]
    images, labels = spec.parse(tuple(f.path for f in found), split)
    sources = list(dict.fromkeys(f.source for f in found))
    sha = _combined_sha256([(r.name, f.sha256) for r, f in zip(spec.files[split], found, strict=True)])
    return images, labels, "+".join(sources), sha


def _class_filter(labels: np.ndarray, keep: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the examples whose label is in ``keep`` and their labels relabelled to positions."""
    keep = np.asarray(keep, dtype=np.int64)
    idx = np.flatnonzero(np.isin(labels, keep))
    lookup = np.full(int(max(labels.max(initial=0), keep.max())) + 1, -1, dtype=np.int64)
    lookup[keep] = np.arange(len(keep))
    return idx, lookup[labels[idx]]


def select_subset(labels: np.ndarray, n: int | None, *, seed: int, split: str, balanced: bool = False,
                  num_classes: int | None = None) -> np.ndarray:
    """Positions of a seeded random subset of size ``n`` (all positions, in order, when n is None).

    The draw uses ``numpy.random.default_rng([seed, split_id])``; without ``balanced`` the subset of
    size m is a prefix of the subset of size m' > m. ``balanced``: ``n // k`` examples per class
    (labels 0..k-1, ``k = num_classes`` or ``max(labels) + 1``), one more for ``n % k`` classes chosen
    at random among those with examples to spare, shuffled together."""
    total = len(labels)
    if n is None:
        return np.arange(total)
    if n > total:
        raise ValueError(f"n={n} exceeds the {total} available examples")
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    if not balanced:
        return rng.permutation(total)[:n]
    num_classes = num_classes or int(labels.max()) + 1
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    sizes = np.array([len(m) for m in members])
    counts = np.full(num_classes, n // num_classes)
    spare = np.flatnonzero(sizes > counts)
    if (sizes < counts).any() or len(spare) < n % num_classes:
        raise ValueError(f"a balanced subset of n={n} needs {n // num_classes} examples of each of "
                         f"{num_classes} classes (one more in {n % num_classes}); "
                         f"class sizes {sizes.tolist()}")
    counts[rng.permutation(spare)[: n % num_classes]] += 1
    chosen = [rng.choice(m, size=k, replace=False) for m, k in zip(members, counts, strict=True)]
    return rng.permutation(np.concatenate(chosen))


_STATS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _train_stats(spec: DatasetSpec, keep: tuple[int, ...], req: _Request, train=None):
    """``channel_stats`` of the whole training split restricted to ``keep`` (cached per file hash)."""
    if train is None:
        train = _read_split(spec, "train", req)
    images, labels, _, sha = train
    key = (spec.name, sha, keep)
    if key not in _STATS_CACHE:
        idx, _ = _class_filter(labels, keep)
        _STATS_CACHE[key] = prep.channel_stats(images[idx], pixel_max=spec.pixel_max)
    return _STATS_CACHE[key]


def _load_one(spec: DatasetSpec, req: _Request, *, substituted_for: str | None,
              max_classes: int | None) -> Dataset:
    if spec.kind == "synthetic":
        x, y, num_classes = spec.generate(req.split, req.n, req.seed, req.options)
        sha = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes())
        selected, source, sha256 = np.arange(req.n), "synthetic", sha.hexdigest()
        keep = None
        x = prep.apply(x, req.preprocess)
    else:
        raw = _read_split(spec, req.split, req)
        images, labels, source, sha256 = raw
        base = tuple(spec.classes or range(spec.num_classes))[:max_classes]
        keep = base if req.classes is None else tuple(base[c] for c in req.classes)
        pool, y_pool = _class_filter(labels, keep)
        num_classes = len(keep)
        try:
            pick = select_subset(y_pool, req.n, seed=req.seed, split=req.split, balanced=req.balanced,
                                 num_classes=num_classes)
        except ValueError as exc:
            raise ValueError(f"{spec.name}/{req.split}: {exc}") from None
        selected, y = pool[pick], y_pool[pick]
        stats = None
        if req.preprocess in prep.NEEDS_TRAIN_STATS:
            stats = _train_stats(spec, base, req, train=raw if req.split == "train" else None)
        x = prep.apply(images[selected], req.preprocess, pixel_max=spec.pixel_max, stats=stats)
    indices_sha = hashlib.sha256(np.asarray(selected, dtype="<i8").tobytes()).hexdigest()
    provenance = Provenance(
        name=spec.name, split=req.split, source=source, sha256=sha256, substituted_for=substituted_for,
        n=len(selected), seed=req.seed, indices_sha256=indices_sha, preprocess=req.preprocess,
        classes=None if req.classes is None else list(req.classes),
        source_labels=None if keep is None else [int(c) for c in keep],
        class_names=None if keep is None or spec.class_names is None else [spec.class_names[c] for c in keep],
    )
    return Dataset(x=x.astype(req.dtype, copy=False), y=y, num_classes=num_classes, provenance=provenance)


def load(
    name: str,
    split: str,
    *,
    n: int | None = None,
    seed: int = 0,
    preprocess: str | None = None,
    classes: Sequence[int] | None = None,
    balanced: bool = False,
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    substitute: str | None = None,
    allow_substitute: bool = True,
    allow_download: bool = True,
    options: Mapping[str, Any] | None = None,
    dtype: Any = np.float64,
) -> Dataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` (see ``REGISTRY``).

    Args:
      n: a seeded random subset of this size (``balanced=True``: equal counts per class); None = all.
        Synthetic datasets: the number of points to draw (required).
      seed: drives the subset and synthetic draws (``default_rng([seed, 0 for train / 1 for test])``).
      preprocess: None (raw pixel values as float), "scale01", "standardize", "unit_norm",
        "pixel_unit_norm" (see ``ntkrepro.data.preprocess``); standardization uses the statistics of
        the whole training split, also for the test split.
      classes: keep these classes only, relabelled 0..k-1 in the order given.
      cache_dir: cache root, files under ``<cache_dir>/<dataset folder>/``; default
        ``$NTKREPRO_DATA`` if set, else ``~/.cache/ntkrepro``.
      path: a folder holding the dataset's files under their published names (or the file itself
        for one-file datasets), looked at first.
      substitute: a stand-in dataset loaded instead when ``name`` is unavailable (``DataUnavailable``)
        and ``allow_substitute`` is true; the provenance records ``substituted_for=name``. The
        stand-in keeps its own image shape (e.g. digits as (8, 8, 1) images for an image task) and,
        when ``name`` has fewer classes, only its first ``num_classes(name)`` classes.
      allow_download: False = never touch the network.
      options: synthetic datasets only: circle ``{grid}``, gaussian ``{dim, target}``.
      dtype: float dtype of ``x``.

    Raises ValueError (one line, before any file is read or computation starts) for bad arguments,
    and ``DataUnavailable`` when the data (and any allowed stand-in) cannot be found or verified.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if n is not None and (not _is_int(n) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if preprocess is not None and preprocess not in prep.PREPROCESSING:
        raise ValueError(f"preprocess must be None or one of {list(prep.PREPROCESSING)}, got {preprocess!r}")
    if classes is not None:
        classes = tuple(classes)
        if not classes or not all(_is_int(c) and c >= 0 for c in classes) or len(set(classes)) < len(classes):
            raise ValueError(f"classes must be distinct non-negative integers, got {list(classes)}")
        classes = tuple(int(c) for c in classes)
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype must be a float dtype, got {np.dtype(dtype)}")
    stand_in = None
    if substitute is not None:
        stand_in = get_spec(substitute)
        if stand_in.name == spec.name or stand_in.kind == "synthetic" or spec.kind == "synthetic":
            raise ValueError(f"{substitute!r} cannot stand in for {name!r}")
    req = _Request(
        split=split, n=None if n is None else int(n), seed=int(seed), preprocess=preprocess,
        classes=classes, balanced=bool(balanced),
        cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
        path=Path(path).expanduser() if path is not None else None, allow_download=allow_download,
        options=dict(options or {}), dtype=np.dtype(dtype),
    )
    _check_spec(spec, req, label_space=None)
    if stand_in is not None:
        limit = spec.num_classes if spec.num_classes < stand_in.num_classes else None
        stand_in_req = replace(req, path=None)  # path= names the requested dataset's files
        _check_spec(stand_in, replace(stand_in_req, n=None), label_space=limit)
    try:
        return _load_one(spec, req, substituted_for=None, max_classes=None)
    except DataUnavailable as exc:
        if stand_in is None:
            raise
        if not allow_substitute:
            raise DataUnavailable(f"{exc} (stand-in {stand_in.name} not allowed at this scale)") from None
        _check_spec(stand_in, stand_in_req, label_space=limit)
        return _load_one(stand_in, stand_in_req, substituted_for=name, max_classes=limit)
