"""Tiled, cached, resumable Gram matrices: the one way the harness computes and caches kernels.

A Gram of inputs ``x1`` (and ``x2``, or the symmetric Gram of ``x1``) under a named kernel is split
into ``tile x tile`` blocks. Its identity — kernel name and arguments, SHA-256 fingerprints of the
inputs, tile size — is hashed (SHA-256 of the canonical JSON) into ``<cache_root>/gram/<key>/``, which
holds ``manifest.json``, the inputs (``x1.npy``, ``x2.npy``) and one ``tile_<i>_<j>.npz`` per block.
Every tile is written atomically (temporary name, then rename) and carries the key it belongs to.

* Resumable: an interrupted computation keeps its finished tiles; the next call computes the missing
  ones only. A corrupt or partial tile (unreadable, wrong shape, non-finite) is recomputed; a tile
  carrying another configuration's key raises an error (a cache folder was tampered with).
* Symmetric Grams compute the upper-triangle tiles only and assemble a symmetric matrix.
* Parallel or cluster execution, one job per tile (``rules/gram.smk``)::

      python -m ntkrepro.gram plan --x1 x.npy --kernel cntk --kwargs '{"depth": 6}' --cache-root results/cache
      python -m ntkrepro.gram targets --dir results/cache/gram/<key>     # tile files still missing
      snakemake -s rules/gram.smk --cores 8 $(python -m ntkrepro.gram targets --dir ...)
      python -m ntkrepro.gram assemble --dir results/cache/gram/<key>    # checks every tile

  after which ``compute_gram`` with the same arguments finds every tile in the cache.
* Multi-device: the kernels are jitted JAX functions; each tile runs on the default device, and with
  several devices tiles are assigned round-robin (``jax.devices()[t % n]``). Inside a tile, the
  kernels bound their own pair-batch memory (``ntkrepro.kernels.conv.PAIR_BATCH_ELEMENTS``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ntkrepro.io import atomic_save_npz, atomic_write_bytes, atomic_write_json
from ntkrepro.progress import progress as progress_bar

FORMAT_VERSION = 1


def _kernel_fn(name: str):
    """Kernel registry: name -> function(x1, x2=None, **kwargs) returning an object with nngp, ntk."""
    if name == "fc":
        from ntkrepro.kernels.fc import fc_kernels

        return fc_kernels
    if name == "cntk":
        from ntkrepro.kernels.conv import cntk

        return cntk
    if name == "deq":
        from ntkrepro.kernels.deq import deq_ntk

        return deq_ntk
    if name == "deq_finite":
        from ntkrepro.kernels.deq import deq_kernels

        return deq_kernels
    if name == "cdeq":
        from ntkrepro.kernels.conv import cdeq_ntk

        return lambda x1, x2=None, **kw: cdeq_ntk(x1, x2, **kw)[0]
    if name == "resnet":
        from ntkrepro.kernels.resnet import resnet_kernels

        return resnet_kernels
    raise ValueError(f"unknown kernel {name!r}; known: fc, cntk, deq, deq_finite, cdeq, resnet")


KERNELS = ("fc", "cntk", "deq", "deq_finite", "cdeq", "resnet")


def fingerprint(x: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class GramResult:
    """The assembled Gram: ``nngp``, ``ntk`` (n1, n2) numpy arrays; where it is cached; what was done."""

    nngp: np.ndarray
    ntk: np.ndarray
    key: str
    directory: Path
    computed_tiles: int
    cached_tiles: int


@dataclass(frozen=True)
class GramPlan:
    key: str
    directory: Path
    manifest: dict

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return [tuple(t) for t in self.manifest["tiles"]]

    def tile_path(self, i: int, j: int) -> Path:
        return self.directory / f"tile_{i}_{j}.npz"


def plan(x1, x2=None, *, kernel: str, kernel_kwargs: dict | None = None, cache_root="results/cache",
         tile: int = 256) -> GramPlan:
    """Fix the tile grid and the cache key; write the manifest and inputs (idempotent)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be an integer >= 1, got {tile!r}")
    x1 = np.asarray(x1)
    x2 = None if x2 is None else np.asarray(x2)
    if x1.ndim < 2 or x1.shape[0] == 0:
        raise ValueError(f"x1 must be a non-empty batch of inputs, got shape {x1.shape}")
    if x2 is not None and x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"input shapes differ: x1 {x1.shape[1:]} vs x2 {x2.shape[1:]}")
    kwargs = dict(kernel_kwargs or {})
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    rows = range(0, -(-n1 // tile))
    cols = range(0, -(-n2 // tile))
    tiles = [(i, j) for i in rows for j in cols if x2 is not None or j >= i]
    identity = {
        "format": FORMAT_VERSION,
        "kernel": kernel,
        "kernel_kwargs": kwargs,
        "x1": {"sha256": fingerprint(x1), "shape": list(x1.shape), "dtype": x1.dtype.str},
        "x2": None if x2 is None else {"sha256": fingerprint(x2), "shape": list(x2.shape), "dtype": x2.dtype.str},
        "tile": int(tile),
    }
    key = hashlib.sha256(_canonical(identity).encode()).hexdigest()
    directory = Path(cache_root) / "gram" / key
    manifest = {**identity, "key": key, "symmetric": x2 is None, "n1": n1, "n2": n2,
                "tiles": [list(t) for t in tiles]}
    if not (directory / "manifest.json").exists():
        _save_npy(directory / "x1.npy", x1)
        if x2 is not None:
            _save_npy(directory / "x2.npy", x2)
        atomic_write_json(directory / "manifest.json", manifest)
    return GramPlan(key, directory, manifest)


def _save_npy(path: Path, x: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, x)
    atomic_write_bytes(path, buf.getvalue())


def load_plan(directory: str | Path) -> GramPlan:
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    return GramPlan(manifest["key"], directory, manifest)


def _tile_shape(m: dict, i: int, j: int) -> tuple[int, int]:
    t = m["tile"]
    return min(t, m["n1"] - i * t), min(t, m["n2"] - j * t)


def read_tile(p: GramPlan, i: int, j: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The tile's (nngp, ntk), or None if it is missing, partial or corrupt (then it is recomputed).

    Raises ValueError if the tile belongs to another configuration (its key differs)."""
    path = p.tile_path(i, j)
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            key = str(z["key"])
            nngp, ntk = z["nngp"], z["ntk"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if key != p.key:
        raise ValueError(f"{path}: tile of another configuration (key {key[:12]}..., expected "
                         f"{p.key[:12]}...); remove the folder {p.directory} to recompute")
    shape = _tile_shape(p.manifest, i, j)
    if nngp.shape != shape or ntk.shape != shape or not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
        return None
    return nngp, ntk


def compute_tile(p: GramPlan, i: int, j: int, *, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Compute one tile from the stored inputs and write it atomically."""
    m = p.manifest
    t = m["tile"]
    x1 = np.load(p.directory / "x1.npy", mmap_mode="r")
    x2 = x1 if m["symmetric"] else np.load(p.directory / "x2.npy", mmap_mode="r")
    xa = np.asarray(x1[i * t : (i + 1) * t])
    fn = _kernel_fn(m["kernel"])
    with jax.default_device(device) if device is not None else _null():
        if m["symmetric"] and i == j:
            k = fn(xa, None, **m["kernel_kwargs"])
        else:
            k = fn(xa, np.asarray(x2[j * t : (j + 1) * t]), **m["kernel_kwargs"])
        nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
    atomic_save_npz(p.tile_path(i, j), nngp=nngp, ntk=ntk, key=np.asarray(p.key), i=i, j=j)
    return nngp, ntk


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def missing_tiles(p: GramPlan) -> list[tuple[int, int]]:
    return [(i, j) for i, j in p.tiles if read_tile(p, i, j) is None]


def assemble(p: GramPlan, *, compute_missing: bool = False, progress: bool = False, desc: str = "gram"
             ) -> GramResult:
    """Read every tile (computing missing ones if asked) into the full (n1, n2) matrices."""
    m = p.manifest
    t = m["tile"]
    dtype = None
    nngp = ntk = None
    computed = cached = 0
    devices = jax.devices()
    for index, (i, j) in enumerate(progress_bar(p.tiles, desc=desc, enabled=progress)):
        block = read_tile(p, i, j)
        if block is None:
            if not compute_missing:
                raise ValueError(f"{p.directory}: tile ({i}, {j}) is missing; run compute_gram or "
                                 f"`python -m ntkrepro.gram tile --dir {p.directory} --i {i} --j {j}`")
            device = devices[index % len(devices)] if len(devices) > 1 else None
            block = compute_tile(p, i, j, device=device)
            computed += 1
        else:
            cached += 1
        if nngp is None:
            dtype = block[0].dtype
            nngp = np.zeros((m["n1"], m["n2"]), dtype)
            ntk = np.zeros((m["n1"], m["n2"]), dtype)
        rs, cs = slice(i * t, i * t + block[0].shape[0]), slice(j * t, j * t + block[0].shape[1])
        nngp[rs, cs], ntk[rs, cs] = block
        if m["symmetric"] and i != j:
            nngp[cs, rs], ntk[cs, rs] = block[0].T, block[1].T
    return GramResult(nngp, ntk, p.key, p.directory, computed, cached)


def compute_gram(x1, x2=None, *, kernel: str, kernel_kwargs: dict | None = None, cache_root="results/cache",
                 tile: int = 256, progress: bool = True) -> GramResult:
    """The Gram of ``x1`` (x2 None: symmetric) or of (x1, x2) under ``kernel``, from the tile cache;
    missing tiles are computed (with a progress bar and ETA) and cached."""
    p = plan(x1, x2, kernel=kernel, kernel_kwargs=kernel_kwargs, cache_root=cache_root, tile=tile)
    return assemble(p, compute_missing=True, progress=progress, desc=f"{kernel} gram tiles")


# ---------------------------------------------------------------- command line (one job per tile)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntkrepro.gram", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("plan", help="write the manifest and inputs; print the cache folder")
    pp.add_argument("--x1", required=True, type=Path)
    pp.add_argument("--x2", type=Path)
    pp.add_argument("--kernel", required=True, choices=KERNELS)
    pp.add_argument("--kwargs", default="{}", help="kernel keyword arguments as JSON")
    pp.add_argument("--cache-root", default="results/cache")
    pp.add_argument("--tile", type=int, default=256)
    for name in ("tile", "targets", "assemble", "status"):
        sp = sub.add_parser(name)
        sp.add_argument("--dir", required=True, type=Path)
        if name == "tile":
            sp.add_argument("--i", type=int, required=True)
            sp.add_argument("--j", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "plan":
            x2 = None if args.x2 is None else np.load(args.x2)
            p = plan(np.load(args.x1), x2, kernel=args.kernel, kernel_kwargs=json.loads(args.kwargs),
                     cache_root=args.cache_root, tile=args.tile)
            print(p.directory)
            return 0
        p = load_plan(args.dir)
        if args.cmd == "tile":
            if (args.i, args.j) not in p.tiles:
                raise ValueError(f"tile ({args.i}, {args.j}) is not in the grid of {p.directory}")
            start = time.perf_counter()
            if read_tile(p, args.i, args.j) is None:
                compute_tile(p, args.i, args.j)
            print(f"tile ({args.i}, {args.j}) done in {time.perf_counter() - start:.1f}s")
        elif args.cmd == "targets":
            print(" ".join(str(p.tile_path(i, j)) for i, j in missing_tiles(p)))
        elif args.cmd == "status":
            missing = missing_tiles(p)
            print(f"{p.directory}: {len(p.tiles) - len(missing)}/{len(p.tiles)} tiles done")
        else:
            r = assemble(p)
            print(f"{p.directory}: all {r.cached_tiles} tiles present; Gram {r.ntk.shape}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
