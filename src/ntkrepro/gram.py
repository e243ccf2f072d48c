"""Tiled, cached, resumable Gram matrices: the one way the experiments compute expensive kernels.

A Gram matrix K(x1[subset1], x2[subset2]) of a registered kernel is split into square tiles of side
``tile``; every tile is an independent unit of work, written atomically into a content-addressed cache:

    <cache_root>/gram/<hash>/manifest.json        identity + tile grid (+ data paths for the CLI)
    <cache_root>/gram/<hash>/tile_<i>_<j>.npz     arrays nngp / ntk (those the kernel returns) + hash, i, j,
                                                  sha256 (of the contents, checked on every read), and
                                                  wall_s / cpu_s: what computing the tile took

``<hash>`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the identity
(:class:`GramSpec`): kernel name, kernel keyword arguments, data fingerprints (SHA-256 of the array
bytes + shape + dtype), subset fingerprints, tile side, dtype, the cache format version and, when not all,
the outputs kept. A symmetric Gram (x2 None) stores the upper-triangle tiles (j >= i) only and is assembled
exactly symmetric.

Timing: every tile records the wall and CPU seconds its computation took (in whichever process computed
it: this one, or a tile job of the workflow; a process's first tile of a shape includes the kernel's
compilation), and :class:`Gram` sums them (``seconds``), so a Gram's cost is known however its cache was
filled.

Resuming and checking: :func:`compute_gram` computes only the tiles that are missing, so an
interrupted run restarted with the same arguments recomputes nothing that was written. Every tile carries
the SHA-256 of its contents (:func:`tile_digest`: the arrays' bytes, dtypes and shapes, its position and
its configuration hash), computed when it is written and checked whenever it is read. A damaged cache
never stops a run and never reaches a Gram: a tile that cannot be read (truncated, not a zip), lacks a
field, has the wrong shape or non-finite values, whose contents do not match their SHA-256 (values
changed in a valid file), that belongs to another configuration or another position (copied or moved
in) is logged in one line and recomputed. Tiles are written to ``.tile_<i>_<j>.npz.<host>.<pid>.<n>.tmp``
and renamed; such a temporary file left by a killed writer (its process gone, or older than
:data:`STALE_TEMP_SECONDS`) is logged and removed, and its tile computed again.

Large Grams: :func:`compute_gram_into` writes one output of the same tiles straight into one preallocated
array (in memory or a ``.npy`` memory map), the upper tiles only of a symmetric Gram, never assembling a
second copy; its memory and disk needs are refused in one line before anything is allocated.

Kernels: :data:`KERNELS` maps names to ``"module:function"`` (imported on first use); any
``"package.module:function"`` path works as a name too. A kernel is called as
``fn(x1_rows, x2_cols_or_None, **kernel_kwargs[, dtype=dtype])`` and returns an object with ``nngp`` and/or
``ntk`` arrays (trailing axes (rows, cols); leading axes, e.g. all depths, are kept) or one array (stored
as ``ntk``). Multi-device execution happens inside the kernels (:mod:`ntkrepro.kernels.conv` shards
pair blocks over ``jax.devices()``).

Stage declarations: :class:`GramRequest` is one Gram as a stage computes it (``compute``); a stage lists
its Grams as requests once, and both its own computation and the workflow's tile jobs use that list
(:func:`request_gram` writes a request file with the same hash, so tile jobs fill the cache the stage reads).
:func:`regression_requests` makes the two Grams of a kernel regression, large ones (above
:data:`LARGE_GRAM_BYTES`) through :func:`compute_gram_into`.

Command line (one Snakemake job per tile, see rules/gram.smk):

    python -m ntkrepro.gram plan --x1 X1.npy [--x2 X2.npy] --kernel cntk --kwargs '{"depth": 6}' \\
        --tile 256 [--dtype float32] --cache-root results/cache [--plan-out plan.json]
    python -m ntkrepro.gram plan --request request.json --cache-root results/cache [--plan-out plan.json]
    python -m ntkrepro.gram tile --manifest M --i I --j J [--threads N] [--done marker]
    python -m ntkrepro.gram assemble --manifest M --out gram.npz
    python -m ntkrepro.gram status --manifest M

``plan`` writes the manifest (recording the absolute .npy paths) and prints one ``i j`` line per tile;
``--plan-out`` also copies the manifest there. A request file is a JSON object with the keys x1, x2,
kernel, kwargs, tile, dtype and optionally fields (:func:`write_request`). ``tile`` loads the data
(memory-mapped), checks its fingerprint against the manifest, computes the tile unless a valid one is cached,
and touches ``--done``. ``assemble`` writes an .npz with the assembled arrays; ``status`` prints the missing
tiles. (A stage's requests are written by the workflow's edge, scripts/gram_requests.py.)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import itertools
import json
import logging
import math
import os
import re
import socket
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, process_time

import numpy as np

from ntkrepro import set_cpu_threads
from ntkrepro.io import atomic_save_npy, atomic_save_npz, atomic_write_json
from ntkrepro.progress import progress as progress_bar

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FIELDS = ("nngp", "ntk")
STALE_TEMP_SECONDS = 3600  # a tile's temporary file this old is stale whoever wrote it (writes take seconds)
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"^\.(?P<tile>tile_\d+_\d+\.npz)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.\d+\.tmp$")
_TEMP_COUNTER = itertools.count()
KERNELS: dict[str, str] = {
    "fc": "ntkrepro.kernels.fc:fc_kernels",
    "cntk": "ntkrepro.kernels.conv:cntk",
    "cdeq": "ntkrepro.kernels.cdeq:cdeq_ntk",
    "deq": "ntkrepro.kernels.deq:deq_ntk",
    "resnet": "ntkrepro.kernels.resnet:resnet_kernels",
}


class GramCacheError(ValueError):
    """A cache entry belongs to another configuration (hash mismatch) or contradicts its manifest."""


# ---------------------------------------------------------------- kernels


def register_kernel(name: str, target: str | Callable) -> None:
    """Register ``name`` -> ``"module:function"`` (usable from every process) or a callable (this process)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"kernel name must be a non-empty string without ':', got {name!r}")
    if not (callable(target) or (isinstance(target, str) and ":" in target)):
        raise ValueError(f"kernel target must be 'module:function' or a callable, got {target!r}")
    KERNELS[name] = target


def resolve_kernel(name: str) -> Callable:
    """The function of a registered kernel name or of a ``"module:function"`` path."""
    if not isinstance(name, str):
        raise ValueError(f"kernel must be a registered name or 'module:function', got {name!r}")
    target = KERNELS.get(name, name)
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"unknown kernel {name!r}; registered: {', '.join(sorted(KERNELS))} "
                         "(or give 'package.module:function')")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"kernel {name!r}: cannot import {target!r} ({err})") from None


# ---------------------------------------------------------------- fingerprints and the spec


def _sha256_array(x: np.ndarray) -> str:
    """SHA-256 of the C-order bytes of ``x``, read in chunks (works on memory maps)."""
    h = hashlib.sha256()
    if x.ndim == 0 or x.shape[0] == 0:
        h.update(np.ascontiguousarray(x).tobytes())
        return h.hexdigest()
    row_bytes = max(1, x.nbytes // x.shape[0])
    step = max(1, (64 << 20) // row_bytes)
    for start in range(0, x.shape[0], step):
        h.update(np.ascontiguousarray(x[start:start + step]).tobytes())
    return h.hexdigest()


def fingerprint(x) -> dict:
    """Data identity: SHA-256 of the array bytes, shape and dtype."""
    x = np.asarray(x)
    return {"sha256": _sha256_array(x), "shape": list(x.shape), "dtype": str(x.dtype)}


def _canonical(value, where: str = "kernel_kwargs"):
    """JSON-ready copy of plain data (mappings, sequences, numbers, strings); anything else: ValueError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite number {value}")
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (bytes, bytearray)):
        return [_canonical(v, f"{where}[]") for v in value]
    raise ValueError(f"{where}: {value!r} is not plain data (numbers, strings, lists, dicts), so it cannot "
                     "be hashed into the cache key; pass names (e.g. activation='relu') instead of objects")


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _subset_fingerprint(indices: np.ndarray | None, n: int, name: str) -> dict | None:
    if indices is None:
        return None
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integer indices")
    if indices.min() < 0 or indices.max() >= n:
        raise ValueError(f"{name} indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}]")
    return {"sha256": _sha256_array(indices.astype(np.int64)), "size": int(indices.size)}


@dataclass(frozen=True)
class GramSpec:
    """What a cached Gram is: the fields of its identity hash (module docstring)."""

    kernel: str
    kernel_kwargs: dict
    x1: dict
    x2: dict | None
    subset1: dict | None
    subset2: dict | None
    tile: int
    dtype: str | None
    format: int = FORMAT_VERSION
    fields: tuple[str, ...] | None = None  # the outputs kept (None: all the kernel returns)
    _hash: str = field(default="", init=False, repr=False, compare=False)

    def identity(self) -> dict:
        identity = {"kernel": self.kernel, "kernel_kwargs": self.kernel_kwargs, "x1": self.x1, "x2": self.x2,
                    "subset1": self.subset1, "subset2": self.subset2, "tile": self.tile, "dtype": self.dtype,
                    "format": self.format}
        if self.fields is not None:  # only when set: the hashes of every Gram that keeps all outputs stay
            identity["fields"] = list(self.fields)
        return identity

    @property
    def hash(self) -> str:
        if not self._hash:
            object.__setattr__(self, "_hash", hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest())
        return self._hash

    @property
    def symmetric(self) -> bool:
        return self.x2 is None and self.subset2 is None

    @property
    def n1(self) -> int:
        return self.subset1["size"] if self.subset1 else self.x1["shape"][0]

    @property
    def n2(self) -> int:
        if self.subset2:
            return self.subset2["size"]
        return self.x2["shape"][0] if self.x2 else self.n1

    def grid(self) -> tuple[int, int]:
        return -(-self.n1 // self.tile), -(-self.n2 // self.tile)

    def tiles(self) -> list[tuple[int, int]]:
        """(i, j) of every tile; j >= i only when symmetric."""
        g1, g2 = self.grid()
        return [(i, j) for i in range(g1) for j in range(i if self.symmetric else 0, g2)]

    def rows(self, i: int) -> slice:
        return slice(i * self.tile, min(self.n1, (i + 1) * self.tile))

    def cols(self, j: int) -> slice:
        return slice(j * self.tile, min(self.n2, (j + 1) * self.tile))

    @classmethod
    def from_identity(cls, identity: Mapping) -> GramSpec:
        fields = {k: identity[k] for k in ("kernel", "kernel_kwargs", "x1", "x2", "subset1", "subset2", "tile",
                                           "dtype", "format")}
        kept = identity.get("fields")
        return cls(**fields, fields=None if kept is None else tuple(kept))


def make_spec(x1, x2=None, *, kernel: str, kernel_kwargs: Mapping | None = None, tile: int = 1024,
              subset1=None, subset2=None, dtype=None, fields: Sequence[str] | None = None) -> GramSpec:
    """Validate the arguments of a Gram and build its :class:`GramSpec` (hashes the data once); ``fields``
    (a subset of :data:`FIELDS`) keeps only those outputs in the cache (None: all the kernel returns)."""
    if not isinstance(kernel, str) or not kernel:
        raise ValueError(f"kernel must be a registered name or 'module:function', got {kernel!r}")
    if kernel not in KERNELS and ":" not in kernel:
        raise ValueError(f"unknown kernel {kernel!r}; registered: {', '.join(sorted(KERNELS))}")
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if fields is not None and (isinstance(fields, str) or not fields or not set(fields) <= set(FIELDS)):
        raise ValueError(f"fields must be a non-empty list of {FIELDS}, got {fields!r}")
    x1 = np.asarray(x1)
    if x1.ndim < 1 or x1.shape[0] == 0:
        raise ValueError(f"x1 must have at least one row, got shape {x1.shape}")
    if x2 is not None:
        x2 = np.asarray(x2)
        if x2.ndim < 1 or x2.shape[0] == 0:
            raise ValueError(f"x2 must have at least one row, got shape {x2.shape}")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x1 and x2 rows differ in shape: {x1.shape[1:]} vs {x2.shape[1:]}")
    sub1 = None if subset1 is None else np.asarray(subset1)
    sub2 = None if subset2 is None else np.asarray(subset2)
    return GramSpec(
        kernel=kernel,
        kernel_kwargs=_canonical(dict(kernel_kwargs or {})),
        x1=fingerprint(x1),
        x2=None if x2 is None else fingerprint(x2),
        subset1=_subset_fingerprint(sub1, x1.shape[0], "subset1"),
        subset2=_subset_fingerprint(sub2, (x1 if x2 is None else x2).shape[0], "subset2"),
        tile=int(tile),
        dtype=None if dtype is None else str(np.dtype(dtype)),
        fields=None if fields is None else tuple(f for f in FIELDS if f in fields),
    )


# ---------------------------------------------------------------- the cache


@dataclass(frozen=True)
class Gram:
    """An assembled Gram: ``nngp`` / ``ntk`` (None if the kernel has no such output), where it lives, how
    many tiles this call computed versus found in the cache, and ``seconds``: (wall, CPU) seconds of
    computing all its tiles, summed over the tiles' records wherever they were computed (None when a tile
    has no record)."""

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    hash: str
    cache_dir: Path
    computed_tiles: int
    cached_tiles: int
    seconds: tuple[float, float] | None = None


def cache_dir(spec: GramSpec, cache_root: str | Path) -> Path:
    return Path(cache_root) / "gram" / spec.hash


def tile_path(directory: Path, i: int, j: int) -> Path:
    return Path(directory) / f"tile_{i}_{j}.npz"


def write_manifest(spec: GramSpec, cache_root: str | Path, *, data_paths: Mapping | None = None) -> Path:
    """Write (or check) ``manifest.json`` of ``spec``; returns its path."""
    directory = cache_dir(spec, cache_root)
    path = directory / "manifest.json"
    manifest = {
        "hash": spec.hash,
        "identity": spec.identity(),
        "grid": {"n1": spec.n1, "n2": spec.n2, "tile": spec.tile, "symmetric": spec.symmetric,
                 "shape": list(spec.grid()), "tiles": [list(t) for t in spec.tiles()]},
        "data_paths": {k: (None if v is None else str(Path(v).resolve())) for k, v in (data_paths or {}).items()},
    }
    if path.exists():
        try:
            existing = read_manifest(path)
            if existing["hash"] != spec.hash:
                raise GramCacheError(f"it belongs to configuration {existing['hash']}")
        except GramCacheError as err:  # the directory is named by the hash: the manifest is rewritten from it
            log.warning("gram cache: damaged manifest %s (%s); rewriting it", path, err)
        else:
            if not data_paths or existing.get("data_paths") == manifest["data_paths"]:
                return path
    atomic_write_json(path, manifest)
    return path


def read_manifest(path: str | Path) -> dict:
    """Load a manifest and check that its hash is the hash of its identity and of its directory."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
        identity = manifest["identity"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GramCacheError(f"{path}: not a readable Gram manifest ({err})") from None
    try:
        spec = GramSpec.from_identity(identity)
    except (KeyError, TypeError) as err:
        raise GramCacheError(f"{path}: not a readable Gram manifest (identity lacks {err})") from None
    if spec.hash != manifest.get("hash"):
        raise GramCacheError(f"{path}: stored hash {manifest.get('hash')} is not the hash of its identity "
                             f"({spec.hash}); the manifest was edited or is corrupt: delete its directory")
    return manifest


def _tile_shape(spec: GramSpec, i: int, j: int) -> tuple[int, int]:
    rows, cols = spec.rows(i), spec.cols(j)
    return rows.stop - rows.start, cols.stop - cols.start


def tile_digest(spec_hash: str, i: int, j: int, arrays: Mapping) -> str:
    """SHA-256 of a tile's contents: its configuration hash, position, and each array's name, dtype, shape
    and C-order bytes (fields in sorted order)."""
    header = {"hash": spec_hash, "i": int(i), "j": int(j),
              "arrays": {k: [str(np.asarray(v).dtype), list(np.shape(v))] for k, v in sorted(arrays.items())}}
    h = hashlib.sha256(canonical_json(header).encode())
    for _, v in sorted(arrays.items()):
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def load_tile(spec: GramSpec, directory: Path, i: int, j: int) -> dict | None:
    """The arrays of a valid cached tile, or None when it is missing or damaged: unreadable, partial, of
    another configuration or position, or with contents that do not match their SHA-256 (one log line)."""
    path = tile_path(directory, i, j)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        log.warning("gram cache: unreadable tile %s (%s); recomputing it", path, str(err).splitlines()[0][:200])
        return None
    problem = None
    arrays = {k: stored[k] for k in FIELDS if k in stored}
    required = ("hash", "i", "j", "sha256", *(spec.fields or ()))
    if any(k not in stored for k in required):
        problem = f"missing {', '.join(k for k in required if k not in stored)}"
    elif str(stored["hash"]) != spec.hash:
        problem = f"written for configuration {str(stored['hash'])[:12]}, not {spec.hash[:12]} (copied in?)"
    elif (int(stored["i"]), int(stored["j"])) != (i, j):
        problem = f"it holds tile ({int(stored['i'])}, {int(stored['j'])}), not ({i}, {j}) (moved or copied?)"
    elif not arrays:
        problem = f"none of the fields {FIELDS}"
    elif tile_digest(spec.hash, i, j, arrays) != str(stored["sha256"]):
        problem = "its contents do not match their SHA-256 (changed after it was written)"
    else:
        shape = _tile_shape(spec, i, j)
        for name, a in arrays.items():
            if a.shape[-2:] != shape:
                problem = f"{name} has shape {a.shape}, expected (..., {shape[0]}, {shape[1]})"
            elif not np.all(np.isfinite(a)):
                problem = f"{name} has non-finite values"
    if problem:
        log.warning("gram cache: invalid tile %s (%s); recomputing it", path, problem)
        return None
    return arrays


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists
        return True
    return True


def remove_stale_temps(directory: Path, tile: tuple[int, int] | None = None) -> list[Path]:
    """Remove the temporary tile files (of one tile, or all) whose writer is gone: its process on this host
    has ended (kill -9), or the file is older than :data:`STALE_TEMP_SECONDS`. One log line per file."""
    pattern = ".tile_*.tmp" if tile is None else f".tile_{tile[0]}_{tile[1]}.npz.*.tmp"
    removed = []
    for path in Path(directory).glob(pattern):
        match = _TEMP_NAME.match(path.name)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:  # renamed by its writer meanwhile
            continue
        stale = age > STALE_TEMP_SECONDS
        if match and match["host"] == _HOST and not _pid_alive(int(match["pid"])):
            stale, why = True, f"its writer, process {match['pid']}, is gone"
        else:
            why = f"{age / 60:.0f} min old"
        if stale:
            path.unlink(missing_ok=True)
            name = match["tile"] if match else path.name
            log.warning("gram cache: removed stale temporary file %s (%s); %s is computed again unless cached",
                        path, why, name)
            removed.append(path)
    return removed


def _kernel_outputs(result) -> dict:
    """{field: array} of a kernel's result (dataclass with nngp / ntk, or one array = ntk)."""
    if any(hasattr(result, f) for f in FIELDS):
        outputs = {f: np.asarray(getattr(result, f)) for f in FIELDS if getattr(result, f, None) is not None}
    else:
        outputs = {"ntk": np.asarray(result)}
    if not outputs:
        raise ValueError("the kernel returned neither nngp nor ntk")
    return outputs


def compute_tile(spec: GramSpec, x1, x2, i: int, j: int, *, kernel_fn: Callable | None = None,
                 subset1=None, subset2=None) -> dict:
    """Evaluate tile (i, j) of ``spec`` on the data (no cache): {field: array (..., rows, cols)}."""
    fn = kernel_fn or resolve_kernel(spec.kernel)
    idx1 = np.arange(spec.n1) if subset1 is None else np.asarray(subset1)
    idx2 = idx1 if spec.symmetric else np.arange(spec.n2) if subset2 is None else np.asarray(subset2)
    other = x1 if x2 is None else x2
    rows = idx1[spec.rows(i)]
    kwargs = dict(spec.kernel_kwargs)
    if spec.dtype is not None:
        kwargs["dtype"] = np.dtype(spec.dtype)
    if spec.symmetric and i == j:
        result = fn(np.asarray(x1[rows]), None, **kwargs)
    else:
        result = fn(np.asarray(x1[rows]), np.asarray(other[idx2[spec.cols(j)]]), **kwargs)
    outputs = _kernel_outputs(result)
    if spec.fields is not None:
        if not set(spec.fields) <= set(outputs):
            raise ValueError(f"kernel {spec.kernel} returns {sorted(outputs)}, not the fields {list(spec.fields)}")
        outputs = {name: outputs[name] for name in spec.fields}
    shape = _tile_shape(spec, i, j)
    for name, a in outputs.items():
        if a.shape[-2:] != shape:
            raise ValueError(f"kernel {spec.kernel}: {name} of tile ({i}, {j}) has shape {a.shape}, "
                             f"expected (..., {shape[0]}, {shape[1]})")
    return outputs


def save_tile(spec: GramSpec, directory: Path, i: int, j: int, arrays: Mapping,
              seconds: tuple[float, float] | None = None) -> Path:
    """Write a tile atomically with its configuration hash, position and SHA-256 (:func:`tile_digest`), and
    the (wall, CPU) ``seconds`` its computation took: a temporary file named by host and process (so a
    stale one is recognised, :func:`remove_stale_temps`), flushed to disk, then renamed."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    timing = {} if seconds is None else {"wall_s": np.array(seconds[0]), "cpu_s": np.array(seconds[1])}
    buf = io.BytesIO()
    np.savez(buf, hash=np.array(spec.hash), i=np.array(i), j=np.array(j),
             sha256=np.array(tile_digest(spec.hash, i, j, arrays)), **timing, **arrays)
    path = tile_path(directory, i, j)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{next(_TEMP_COUNTER)}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def compute_and_save_tile(spec: GramSpec, directory: Path, x1, x2, i: int, j: int, *,
                          kernel_fn: Callable | None = None, subset1=None, subset2=None) -> dict:
    """:func:`compute_tile`, timed (wall and this process's CPU seconds), saved with its timing
    (:func:`save_tile`); returns the arrays."""
    wall, cpu = perf_counter(), process_time()
    arrays = compute_tile(spec, x1, x2, i, j, kernel_fn=kernel_fn, subset1=subset1, subset2=subset2)
    save_tile(spec, directory, i, j, arrays, seconds=(perf_counter() - wall, process_time() - cpu))
    return arrays


def tile_seconds(directory: Path, i: int, j: int) -> tuple[float, float] | None:
    """The (wall, CPU) seconds recorded with cached tile (i, j), None when it has no record."""
    try:
        with np.load(tile_path(directory, i, j), allow_pickle=False) as data:
            if "wall_s" not in data.files or "cpu_s" not in data.files:
                return None
            return float(data["wall_s"]), float(data["cpu_s"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None


def gram_seconds(spec: GramSpec, directory: Path) -> tuple[float, float] | None:
    """(wall, CPU) seconds of computing every tile of a Gram, from the tiles' records (None if one lacks it)."""
    records = [tile_seconds(directory, i, j) for i, j in spec.tiles()]
    if any(r is None for r in records):
        return None
    return sum(r[0] for r in records), sum(r[1] for r in records)


def missing_tiles(spec: GramSpec, directory: Path) -> list[tuple[int, int]]:
    return [(i, j) for i, j in spec.tiles() if load_tile(spec, directory, i, j) is None]


def assemble(spec: GramSpec, directory: Path) -> dict:
    """Assemble the verified tiles into {field: (..., n1, n2)}; a missing or invalid tile is an error."""
    full: dict[str, np.ndarray] = {}
    for i, j in spec.tiles():
        arrays = load_tile(spec, directory, i, j)
        if arrays is None:
            raise GramCacheError(f"tile ({i}, {j}) of {directory} is missing or invalid; compute it first")
        rows, cols = spec.rows(i), spec.cols(j)
        if not full:  # the exact size, from the first tile, before the Gram is allocated
            _check_assembled(spec, sum(math.prod(a.shape[:-2]) * a.dtype.itemsize for a in arrays.values()))
        for name, a in arrays.items():
            if name not in full:
                full[name] = np.zeros((*a.shape[:-2], spec.n1, spec.n2), a.dtype)
            full[name][..., rows, cols] = a
            if spec.symmetric and i != j:
                full[name][..., cols, rows] = np.swapaxes(a, -1, -2)
    return full


def _check_assembled(spec: GramSpec, per_pair_bytes: int, *, at_least: bool = False) -> None:
    """Refuse (:class:`ntkrepro.blocks.MemoryEstimateError`) an assembled Gram larger than the memory available."""
    from ntkrepro.blocks import check_memory

    check_memory(spec.n1 * spec.n2 * per_pair_bytes,
                 what=f"the assembled {spec.kernel} Gram of {spec.n1} x {spec.n2} inputs "
                      f"({'at least ' if at_least else ''}{per_pair_bytes} bytes per pair)",
                 driver=f"the number of inputs (rows of x1: {spec.n1}"
                        + ("" if spec.symmetric else f", of x2: {spec.n2}") + "), quadratically; tile jobs "
                        "(python -m ntkrepro.gram tile) need one tile's memory only")


def compute_gram(x1, x2=None, *, kernel: str, kernel_kwargs: Mapping | None = None, cache_root: str | Path,
                 tile: int = 1024, subset1=None, subset2=None, dtype=None, progress: bool = True) -> Gram:
    """The Gram matrix of ``kernel`` on (x1[subset1], x2[subset2]) (x2 None: x1 with itself), from the cache,
    computing the missing tiles only (resumable; module docstring).

    Args:
        x1, x2: data arrays, batch-first; x2 None means the symmetric Gram of x1.
        kernel: a name of :data:`KERNELS` or ``"module:function"``; kernel_kwargs: its keyword arguments
            (plain data: part of the cache key).
        cache_root: the cache folder (``<cache_root>/gram/<hash>/``).
        tile: tile side (rows and columns per tile).
        subset1, subset2: integer indices of the rows of x1 / x2 to use (None: all).
        dtype: passed to the kernel as ``dtype=`` (None: the kernel's default); part of the cache key.
        progress: progress bar with ETA over the tiles to compute (plain log lines when not a TTY).
    Returns:
        :class:`Gram` with the assembled ``nngp`` / ``ntk``.
    """
    spec = make_spec(x1, x2, kernel=kernel, kernel_kwargs=kernel_kwargs, tile=tile, subset1=subset1,
                     subset2=subset2, dtype=dtype)
    fn = resolve_kernel(spec.kernel)
    # the assembled Gram, at least one array of 4 bytes per pair, refused before any tile is listed or computed
    _check_assembled(spec, 4 if dtype is None else np.dtype(dtype).itemsize, at_least=True)
    directory = cache_dir(spec, cache_root)
    write_manifest(spec, cache_root)
    remove_stale_temps(directory)
    todo = missing_tiles(spec, directory)
    for i, j in progress_bar(todo, total=len(todo), desc=f"gram {spec.kernel} {spec.hash[:8]}", enabled=progress):
        compute_and_save_tile(spec, directory, x1, x2, i, j, kernel_fn=fn, subset1=subset1, subset2=subset2)
    full = assemble(spec, directory)
    return Gram(nngp=full.get("nngp"), ntk=full.get("ntk"), hash=spec.hash, cache_dir=directory,
                computed_tiles=len(todo), cached_tiles=len(spec.tiles()) - len(todo),
                seconds=gram_seconds(spec, directory))


TILE_WORK_ARRAYS = 12  # arrays of one tile's size alive while a tile is computed and cached (an estimate)


def _gram_out(out, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """The array a large Gram is written into: ``out`` itself, a new .npy memory map at a path, or zeros."""
    if isinstance(out, np.ndarray):
        return out
    if out is None:
        return np.zeros(shape, dtype)  # calloc: pages become resident as tiles are written
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape)


def _check_gram_into(spec: GramSpec, out, dtype: np.dtype, cache_root, absent: int) -> None:
    """Refuse, before allocating, a large Gram whose array (in memory or at a path), working tiles or new cache
    tiles exceed the memory or the free disk (:mod:`ntkrepro.blocks`)."""
    from ntkrepro.blocks import check_disk, check_memory

    inputs = f"the number of inputs (rows of x1: {spec.n1}" + ("" if spec.symmetric else f", of x2: {spec.n2}")
    tile_bytes = spec.tile * spec.tile * dtype.itemsize
    in_memory = 0 if out is not None else spec.n1 * spec.n2 * dtype.itemsize
    check_memory(in_memory + TILE_WORK_ARRAYS * tile_bytes,
                 what=f"the {spec.kernel} Gram of {spec.n1} x {spec.n2} inputs in memory ({dtype}) and its "
                      f"working tiles of {spec.tile} x {spec.tile}",
                 driver=f"{inputs}), quadratically; write it to disk with out=<path>.npy")
    if isinstance(out, (str, Path)):
        check_disk(spec.n1 * spec.n2 * dtype.itemsize, Path(out).parent,
                   what=f"the {spec.kernel} Gram of {spec.n1} x {spec.n2} inputs ({dtype}) at {out}",
                   driver=f"{inputs}), quadratically")
    check_disk(absent * tile_bytes * len(spec.fields or FIELDS), cache_root,
               what=f"{absent} tiles of {spec.tile} x {spec.tile} of the {spec.kernel} Gram cache",
               driver=f"{inputs}), quadratically")


def compute_gram_into(x1, x2=None, *, kernel: str, kernel_kwargs: Mapping | None = None, cache_root: str | Path,
                      out=None, field: str = "ntk", tile: int = 1024, subset1=None, subset2=None, dtype=None,
                      out_dtype=None, mirror: bool = False, progress: bool = True) -> Gram:
    """One output of a Gram too large to assemble twice, written tile by tile into one preallocated array.

    The tiles are those of :func:`compute_gram` (the same cache and resumability: a killed run restarted with
    the same arguments loses at most the tile it was computing), keeping ``field`` only (``fields`` in the
    identity, so the cache holds one output). Of a symmetric Gram (x2 None) only the upper tiles are
    computed and written: the lower ones stay zero unless ``mirror``, which is what the in-place solve
    (:func:`ntkrepro.regression.solve` with ``overwrite_k=True``) reads. The array's memory (or disk, for a
    path), the working tiles and the new cache tiles are estimated and refused in one line before allocating.

    Args:
        x1, x2, kernel, kernel_kwargs, cache_root, tile, subset1, subset2: as :func:`compute_gram`.
        out: None (a new array in memory), a path (a new ``.npy`` memory map there) or an (n1, n2) writeable
            float array (e.g. ``np.memmap``); tiles are cast into it (same kind).
        field: the output kept, ``"ntk"`` or ``"nngp"``.
        dtype: passed to the kernel (as :func:`compute_gram`).
        out_dtype: the dtype of a new array (None: ``dtype``, else float64; an array ``out`` keeps its own).
        mirror: copy the upper tiles of a symmetric Gram into the lower ones at the end.
        progress: progress with ETA over the tiles to compute (and over the cached tiles read back).
    Returns:
        :class:`Gram` whose ``field`` is the array (the other output None).
    """
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    spec = make_spec(x1, x2, kernel=kernel, kernel_kwargs=kernel_kwargs, tile=tile, subset1=subset1,
                     subset2=subset2, dtype=dtype, fields=(field,))
    fn = resolve_kernel(spec.kernel)
    if isinstance(out, np.ndarray):
        if out.shape != (spec.n1, spec.n2) or out.dtype.kind != "f" or not out.flags.writeable:
            raise ValueError(f"out must be a writeable float array of shape ({spec.n1}, {spec.n2}), got "
                             f"{out.dtype} {out.shape}{'' if out.flags.writeable else ' (read-only)'}")
        out_dtype = out.dtype
    elif out is None or isinstance(out, (str, Path)):
        out_dtype = np.dtype(next((d for d in (out_dtype, dtype) if d is not None), np.float64))
    else:
        raise ValueError(f"out must be None, a path or a numpy array, got {type(out).__name__}")
    directory = cache_dir(spec, cache_root)
    absent = {t for t in spec.tiles() if not tile_path(directory, *t).exists()}
    _check_gram_into(spec, out, out_dtype, cache_root, len(absent))  # before any file or array
    write_manifest(spec, cache_root)
    remove_stale_temps(directory)
    array = _gram_out(out, (spec.n1, spec.n2), out_dtype)

    def put(i: int, j: int, arrays: Mapping) -> None:
        a = arrays[field]
        if a.ndim != 2:
            raise ValueError(f"kernel {spec.kernel}: {field} tiles have shape {a.shape}; compute_gram_into stores "
                             "one (n1, n2) matrix (no leading axes, e.g. all_depths=False)")
        np.copyto(array[spec.rows(i), spec.cols(j)], a, casting="same_kind")

    desc = f"gram {spec.kernel} {spec.hash[:8]}"
    todo = []
    cached = [t for t in spec.tiles() if t not in absent]
    for i, j in progress_bar(cached, total=len(cached), desc=f"{desc} cached", enabled=progress and bool(cached)):
        arrays = load_tile(spec, directory, i, j)
        if arrays is None:
            todo.append((i, j))
        else:
            put(i, j, arrays)
    todo += sorted(absent)
    for i, j in progress_bar(todo, total=len(todo), desc=desc, enabled=progress):
        put(i, j, compute_and_save_tile(spec, directory, x1, x2, i, j, kernel_fn=fn, subset1=subset1,
                                        subset2=subset2))
    if mirror and spec.symmetric:
        for i, j in spec.tiles():
            if j > i:
                array[spec.cols(j), spec.rows(i)] = array[spec.rows(i), spec.cols(j)].T
    if isinstance(array, np.memmap):
        array.flush()
    return Gram(nngp=array if field == "nngp" else None, ntk=array if field == "ntk" else None, hash=spec.hash,
                cache_dir=directory, computed_tiles=len(todo), cached_tiles=len(spec.tiles()) - len(todo),
                seconds=gram_seconds(spec, directory))


# ---------------------------------------------------------------- command line


def write_request(path: str | Path, *, x1: str | Path, x2: str | Path | None = None, kernel: str,
                  kwargs: Mapping | None = None, tile: int = 1024, dtype: str | None = None,
                  fields: Sequence[str] | None = None) -> Path:
    """Write a Gram request (the input of ``plan --request`` and of rules/gram.smk's checkpoint)."""
    request = {"x1": str(x1), "x2": None if x2 is None else str(x2), "kernel": kernel,
               "kwargs": _canonical(dict(kwargs or {})), "tile": int(tile), "dtype": dtype}
    if fields is not None:  # only when set, as in the identity
        request["fields"] = list(fields)
    return atomic_write_json(path, request)


LARGE_GRAM_BYTES = 1 << 30  # a regression's train Gram (float64) above this goes through compute_gram_into


@dataclass(frozen=True, eq=False)
class GramRequest:
    """One Gram as a stage computes it: :func:`compute_gram`'s arguments but the cache. With ``into`` (a float
    dtype) its ``ntk`` only is kept, written into one new array of that dtype by :func:`compute_gram_into`
    (of a symmetric Gram the upper tiles, what ``kernel_regression(..., overwrite_k=True)`` reads)."""

    x1: np.ndarray
    x2: np.ndarray | None
    kernel: str
    kernel_kwargs: Mapping
    tile: int
    dtype: object = None
    into: str | None = None

    @property
    def fields(self) -> tuple[str, ...] | None:
        return ("ntk",) if self.into else None

    def spec(self) -> GramSpec:
        return make_spec(self.x1, self.x2, kernel=self.kernel, kernel_kwargs=self.kernel_kwargs, tile=self.tile,
                         dtype=self.dtype, fields=self.fields)

    def compute(self, cache_root: str | Path, *, progress: bool = True, mirror: bool = False) -> Gram:
        """The Gram from the cache at ``cache_root``, computing its missing tiles; ``mirror``: as
        :func:`compute_gram_into` (an assembled Gram is whole anyway)."""
        common = dict(kernel=self.kernel, kernel_kwargs=self.kernel_kwargs, cache_root=cache_root, tile=self.tile,
                      dtype=self.dtype, progress=progress)
        if self.into is None:
            return compute_gram(self.x1, self.x2, **common)
        return compute_gram_into(self.x1, self.x2, **common, out_dtype=self.into, mirror=mirror)


def regression_requests(x_train, x_test, *, kernel: str, kernel_kwargs: Mapping, tile: int, dtype=None,
                        precision: str) -> tuple[GramRequest, GramRequest]:
    """K(train, train) and K(test, train) of a kernel regression. When the train Gram in float64 exceeds
    :data:`LARGE_GRAM_BYTES`, both keep ``ntk`` only, each in one ``precision`` array (compute_gram_into), for
    the in-place solve; else both are assembled (compute_gram)."""
    into = str(np.dtype(precision)) if 8 * len(x_train) ** 2 > LARGE_GRAM_BYTES else None
    common = dict(kernel=kernel, kernel_kwargs=kernel_kwargs, tile=tile, dtype=dtype, into=into)
    return GramRequest(x_train, None, **common), GramRequest(x_test, x_train, **common)


def request_gram(cache_root: str | Path, request: GramRequest) -> Path:
    """Write the request of the Gram ``request.compute(cache_root)`` computes, named by its hash: the data as
    ``<cache_root>/gram_data/<sha256>.npy`` and ``<cache_root>/gram_requests/<hash>.json`` (planned from those
    files, the Gram has the same hash, so its tiles land where the stage looks)."""
    spec = request.spec()
    paths = {}
    for name, x in (("x1", request.x1), ("x2", request.x2)):
        if x is not None:
            paths[name] = Path(cache_root) / "gram_data" / f"{getattr(spec, name)['sha256']}.npy"
            if not paths[name].exists():
                atomic_save_npy(paths[name], x)
    path = Path(cache_root) / "gram_requests" / f"{spec.hash}.json"
    if path.exists():  # named by its content: rewriting it would only make Snakemake plan it again
        return path
    return write_request(path, x1=paths["x1"], x2=paths.get("x2"), kernel=spec.kernel, kwargs=spec.kernel_kwargs,
                         tile=spec.tile, dtype=spec.dtype, fields=spec.fields)


def _load_data(manifest: dict):
    """(x1, x2, None, None) of a manifest planned on the command line: memory-mapped, fingerprints checked."""
    identity, paths = manifest["identity"], manifest.get("data_paths") or {}
    arrays = []
    for name in ("x1", "x2"):
        if identity[name] is None:
            arrays.append(None)
            continue
        if not paths.get(name):
            raise GramCacheError(f"the manifest has no data path for {name} (planned in-process?); "
                                 "plan it with the command line")
        x = np.load(paths[name], mmap_mode="r", allow_pickle=False)
        if fingerprint(x) != identity[name]:
            raise GramCacheError(f"{paths[name]} changed since the plan (fingerprint mismatch); plan again")
        arrays.append(x)
    if identity["subset1"] is not None or identity["subset2"] is not None:
        raise GramCacheError("the command line plans whole arrays only; save the subset as its own .npy")
    return (*arrays, None, None)


def _cmd_plan(a) -> int:
    if a.request:
        request = json.loads(Path(a.request).read_text())
        unknown = set(request) - {"x1", "x2", "kernel", "kwargs", "tile", "dtype", "fields"}
        if unknown:
            raise ValueError(f"{a.request}: unknown request keys {sorted(unknown)}")
        x1_path, x2_path, kernel = request.get("x1"), request.get("x2"), request.get("kernel")
        kwargs, tile, dtype = request.get("kwargs") or {}, request.get("tile", 1024), request.get("dtype")
        fields = request.get("fields")
    else:
        x1_path, x2_path, kernel = a.x1, a.x2, a.kernel
        kwargs, tile, dtype, fields = json.loads(a.kwargs), a.tile, a.dtype, None
    if not x1_path or not kernel:
        raise ValueError("plan needs x1 and kernel (as options or in the request file)")
    x1 = np.load(x1_path, mmap_mode="r", allow_pickle=False)
    x2 = None if not x2_path else np.load(x2_path, mmap_mode="r", allow_pickle=False)
    spec = make_spec(x1, x2, kernel=kernel, kernel_kwargs=kwargs, tile=tile, dtype=dtype, fields=fields)
    path = write_manifest(spec, a.cache_root, data_paths={"x1": x1_path, "x2": x2_path})
    if a.plan_out:
        copy = json.loads(path.read_text())
        copy["cache_dir"] = str(path.parent.resolve())
        atomic_write_json(a.plan_out, copy)
    print(path)
    for i, j in spec.tiles():
        print(i, j)
    return 0


def _cmd_tile(a) -> int:
    set_cpu_threads(a.threads)
    manifest = read_manifest(a.manifest)
    spec = GramSpec.from_identity(manifest["identity"])
    if (a.i, a.j) not in spec.tiles():
        raise ValueError(f"tile ({a.i}, {a.j}) is not in the grid of {a.manifest}")
    directory = Path(a.cache_root) / "gram" / spec.hash if a.cache_root else _manifest_cache_dir(a.manifest, spec)
    remove_stale_temps(directory, (a.i, a.j))
    if load_tile(spec, directory, a.i, a.j) is None:
        x1, x2, s1, s2 = _load_data(manifest)
        compute_and_save_tile(spec, directory, x1, x2, a.i, a.j, subset1=s1, subset2=s2)
        print(f"computed tile ({a.i}, {a.j}) of {spec.hash}")
    else:
        print(f"tile ({a.i}, {a.j}) of {spec.hash} already cached")
    if a.done:
        with np.load(tile_path(directory, a.i, a.j), allow_pickle=False) as data:
            digest = str(data["sha256"])
        atomic_write_json(a.done, {"hash": spec.hash, "tile": [a.i, a.j], "sha256": digest,
                                   "path": str(tile_path(directory, a.i, a.j))})
    return 0


def _manifest_cache_dir(manifest_path, spec: GramSpec) -> Path:
    """The cache directory of a manifest: for a copy the one recorded in the copy (a plan folder may be named
    by the hash too), else its own folder."""
    manifest_path = Path(manifest_path).resolve()
    recorded = json.loads(manifest_path.read_text()).get("cache_dir")
    if recorded:
        return Path(recorded)
    if manifest_path.parent.name == spec.hash:
        return manifest_path.parent
    raise GramCacheError(f"{manifest_path} is a copy of a manifest; pass --cache-root")


def _cmd_assemble(a) -> int:
    manifest = read_manifest(a.manifest)
    spec = GramSpec.from_identity(manifest["identity"])
    directory = Path(a.cache_root) / "gram" / spec.hash if a.cache_root else _manifest_cache_dir(a.manifest, spec)
    full = assemble(spec, directory)
    atomic_save_npz(a.out, hash=np.array(spec.hash), **full)
    print(f"assembled {spec.hash} into {a.out}")
    return 0


def _cmd_status(a) -> int:
    manifest = read_manifest(a.manifest)
    spec = GramSpec.from_identity(manifest["identity"])
    directory = Path(a.cache_root) / "gram" / spec.hash if a.cache_root else _manifest_cache_dir(a.manifest, spec)
    remove_stale_temps(directory)
    missing = missing_tiles(spec, directory)
    print(f"{len(spec.tiles()) - len(missing)}/{len(spec.tiles())} tiles cached")
    for i, j in missing:
        print(i, j)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntkrepro.gram", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="write the manifest and list the tiles")
    plan.add_argument("--request", help="JSON request (x1, x2, kernel, kwargs, tile, dtype)")
    plan.add_argument("--x1")
    plan.add_argument("--x2")
    plan.add_argument("--kernel")
    plan.add_argument("--kwargs", default="{}", help="kernel keyword arguments as JSON")
    plan.add_argument("--tile", type=int, default=1024)
    plan.add_argument("--dtype")
    plan.add_argument("--cache-root", required=True)
    plan.add_argument("--plan-out", help="also copy the manifest here")
    for name, helptext in (("tile", "compute one tile unless cached"), ("assemble", "assemble the tiles"),
                           ("status", "list the missing tiles")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--manifest", required=True)
        p.add_argument("--cache-root", help="default: the manifest's folder (or the one a plan copy records)")
        if name == "tile":
            p.add_argument("--i", type=int, required=True)
            p.add_argument("--j", type=int, required=True)
            p.add_argument("--threads", type=int, default=0, help="XLA CPU threads (0: XLA's default)")
            p.add_argument("--done", help="marker file written when the tile is in the cache")
        if name == "assemble":
            p.add_argument("--out", required=True)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {"plan": _cmd_plan, "tile": _cmd_tile, "assemble": _cmd_assemble, "status": _cmd_status}
    try:
        return commands[a.command](a)
    except (ValueError, OSError) as err:
        print(str(err) if str(err).startswith("error: ") else f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
