"""Gram matrices evaluated block by block: the one place that splits, pads and mirrors blocks.

Two levels, for two reasons to split:
- :func:`blockwise` runs *inside* one compiled call: the fully connected, ResNet and DEQ recursions are
  memory-bound elementwise work, so each cache-sized tile (``BLOCK_BYTES``; a cross Gram's tiles are row
  slabs, :func:`column_grid`) runs its whole layer recursion before the next (``lax.map`` over tiles).
- :func:`blockwise_on_host` is a Python loop of compiled calls, one per block: for kernels whose block
  is sized by device memory (the convolutional kernels, the empirical NTK, the DEQ-NTK root solve) and
  whose blocks have their own per-block results.
Both compute only the upper blocks of a Gram of one input set (x2 None / ``symmetric``), mirror them,
and make the diagonal blocks symmetric bit for bit. Rows are padded by repeating a row (a valid input),
so every block has one shape and compiles once.

Pair blocks (the convolutional kernels, whose per-pair state is a (P, Q) map): :func:`plan_pair_blocks`
sizes a block of b1 x b2 pairs (b2 a multiple of the ``LANES``-wide float32 vector unless one block spans
all columns: an odd b2 wastes vector lanes, 0.4-0.7x the throughput) and the rows one ``lax.map`` step
walks (:func:`map_row_chunks`, ~``CHUNK_ENTRIES`` entries per array, so that a layer's temporaries stay
in the CPU cache: XLA materializes them between fusions); :func:`auto_pairs_per_block` holds as many pairs
as fit in ``MEMORY_FRACTION`` of the free device memory at :func:`pair_block_bytes` per pair, at most
``MAX_PAIRS_PER_BLOCK``; with several JAX devices the rows of every block are split over the devices
(:func:`over_devices`; one block = ``device_count`` times as many pairs).

Memory is estimated before anything is allocated: the plan is arithmetic (block counts, never a list of
block pairs), and a Gram whose estimate exceeds the memory available (:func:`available_memory_bytes`: the
host's, capped by the cgroup limit of a SLURM job or container; an accelerator's own) is refused with
:class:`MemoryEstimateError` naming the estimate and the sizes that drive it. :func:`check_memory` and the
estimators (:func:`gram_bytes`, :func:`full_batch_mlp_bytes`) are for stages to call before their compute;
:func:`check_disk` does the same for files (a Gram memory-mapped on disk, its tile cache).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

VECTOR_BITS = 512
"""The vector width XLA's CPU backend is asked to vectorize the kernels' loops for (``xla_cpu_prefer_vector_width``;
its default, 256, leaves half of an AVX-512 register unused). The elementwise layers of the recursions run
1.04-1.3x faster at 512 bits on the project's AVX-512 CPU (benchmarks/README); a CPU without 512-bit vectors keeps
its widest, and other backends do not read the option."""


def kernel_jit(fun=None, **jit_kwargs):
    """``jax.jit`` with the kernels' compiler options (:data:`VECTOR_BITS`): how every exact kernel compiles. Use
    as ``jax.jit`` (``kernel_jit(f)``, ``functools.partial(kernel_jit, static_argnames=...)``). JAX takes compiler
    options only at the top level: called on traced values (inside a caller's ``jit``, ``vmap``, ``grad``) the
    function is a plain ``jax.jit`` and compiles with the caller's options."""
    if fun is None:
        return functools.partial(kernel_jit, **jit_kwargs)
    top = jax.jit(fun, compiler_options={"xla_cpu_prefer_vector_width": VECTOR_BITS}, **jit_kwargs)
    nested = jax.jit(fun, **jit_kwargs)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))
        return (nested if traced else top)(*args, **kwargs)

    call.lower = top.lower
    return call


BLOCK_BYTES = 2**21  # one (b, b) tile array of :func:`blockwise`: ~2 MiB, so a tile's recursion stays in cache
SLAB_BYTES = 2**25   # at most one cross-Gram tile array of :func:`blockwise` (a row slab, :func:`column_grid`)


# ---------------------------------------------------------------- memory estimates


class MemoryEstimateError(ValueError, MemoryError):
    """A computation refused before it starts: its memory estimate exceeds the memory available."""


class DiskEstimateError(ValueError):
    """A computation refused before it starts: the files it would write exceed the free disk space."""


def _format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _cgroup_free_bytes() -> int | None:
    """Memory left under this process's cgroup limit (v2 memory.max, or v1), None if unlimited/unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for entry in lines:
        _, controllers, rel = entry.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            base = Path("/sys/fs/cgroup") / rel
            candidates = [(base / "memory.max", base / "memory.current")]
        elif "memory" in controllers.split(","):  # v1
            base = Path("/sys/fs/cgroup/memory") / rel
            candidates = [(base / "memory.limit_in_bytes", base / "memory.usage_in_bytes")]
        else:
            continue
        for limit_file, usage_file in candidates:
            try:
                limit = limit_file.read_text().strip()
                usage = int(usage_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
                return None
            return max(0, int(limit) - usage)
    return None


def available_memory_bytes(where: str = "host") -> int | None:
    """Bytes a new allocation can still get. ``where="host"``: MemAvailable (/proc/meminfo), capped by the
    cgroup limit (a SLURM job's --mem, a container); ``"device"``: JAX's default device (an accelerator's
    free memory; the host's for CPU). None when unknown (then nothing is refused)."""
    if where not in ("host", "device"):
        raise ValueError(f"where must be 'host' or 'device', got {where!r}")
    device = None
    if where == "device":
        try:
            device = jax.devices()[0]
        except RuntimeError:
            device = None
    if device is not None and device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # backends without memory statistics
            stats = {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    free = None
    try:
        for row in Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemAvailable:"):
                free = int(row.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        free = None
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = None
    limit = _cgroup_free_bytes()
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def check_memory(estimate: float, *, what: str, driver: str, available: int | None = None,
                 where: str = "host") -> None:
    """Refuse, before any allocation, a computation whose memory ``estimate`` (bytes) exceeds the memory
    available (``available``, else :func:`available_memory_bytes` of ``where``: "host" or "device").

    Args:
        estimate: bytes the computation needs at its peak.
        what: what is refused, e.g. "fc_kernels: the Gram of 10000000 x 10000000 inputs".
        driver: the parameter that drives the estimate and how, e.g. "data.n_train=10000000".
    Raises:
        MemoryEstimateError (a ValueError: stages report it in one line) naming both.
    """
    if available is None:
        available = available_memory_bytes(where)
    if available is not None and estimate > available:
        raise MemoryEstimateError(f"{what} needs about {_format_bytes(estimate)} of memory, more than the "
                                  f"{_format_bytes(available)} available; the size is driven by {driver}: "
                                  "reduce it (refused before any compute)")


def free_disk_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent folder)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(estimate: float, path: str | Path, *, what: str, driver: str, available: int | None = None) -> None:
    """Refuse, before any file is written, files of ``estimate`` bytes under ``path`` when they exceed the
    free space there (``available``, else :func:`free_disk_bytes`): :class:`DiskEstimateError` in one line."""
    if available is None:
        available = free_disk_bytes(path)
    if estimate > available:
        raise DiskEstimateError(f"{what} needs about {_format_bytes(estimate)} of disk under {path}, more than the "
                                f"{_format_bytes(available)} free; the size is driven by {driver}: reduce it or "
                                "point it to a larger disk (refused before any compute)")


def gram_bytes(n1: int, n2: int, *, arrays: int = 2, itemsize: int = 8, copies: int = 2) -> int:
    """Bytes of a Gram computation: ``arrays`` (n1, n2) matrices (e.g. nngp and ntk; x depths when all are
    returned) of ``itemsize`` bytes, ``copies`` of them alive at once (the blocks and the assembled matrix)."""
    return int(n1) * int(n2) * int(arrays) * int(itemsize) * int(copies)


def full_batch_mlp_bytes(n: int, *, d_in: int, width: int, depth: int, d_out: int = 1, itemsize: int = 8) -> int:
    """Bytes of one full-batch gradient step of a depth-``depth`` MLP of hidden width ``width`` on ``n``
    inputs: the inputs, every layer's pre-activation and activation kept for the backward pass, one
    layer's gradient and the outputs, per example (the parameters are ignored: they do not grow with n)."""
    per_example = d_in + 3 * width * max(depth - 1, 1) + 2 * d_out
    return int(n) * int(per_example) * int(itemsize)


def _check_gram(n1: int, n2: int, per_pair_bytes: int, *, copies: int, where: str, at_least: bool = False) -> None:
    inputs = f"x1: {n1} rows" + ("" if n2 == n1 else f", x2: {n2} rows")
    check_memory(n1 * n2 * per_pair_bytes * copies,
                 what=f"a Gram matrix of {n1} x {n2} inputs ({'at least ' if at_least else ''}"
                      f"{per_pair_bytes} bytes per pair, {copies} copies while it is assembled)",
                 driver=f"the number of inputs ({inputs}), quadratically", where=where)


def pad_rows(a, size: int):
    """``a`` (rows first, numpy or JAX) padded to ``size`` rows by repeating its last row."""
    missing = size - a.shape[0]
    if missing <= 0:
        return a
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.concatenate([a, xp.repeat(a[-1:], missing, axis=0)], axis=0)


def row_block(a, start: int, size: int) -> jax.Array:
    """Rows start:start+size of ``a`` as a JAX array, the last block padded to ``size`` rows (:func:`pad_rows`)."""
    return jnp.asarray(pad_rows(a[start:start + size], size))


# ---------------------------------------------------------------- inside one compiled call


def block_grid(n: int, itemsize: int) -> tuple[int, int]:
    """(number of blocks, block size) covering n rows in equal blocks of about BLOCK_BYTES per tile."""
    target = max(64, math.isqrt(BLOCK_BYTES // itemsize))
    count = -(-n // target)
    return count, -(-n // count)


def column_grid(n2: int, rows: int, itemsize: int) -> tuple[int, int]:
    """(number of blocks, block size) of a cross Gram's columns for row blocks of ``rows``: all n2 columns
    while a tile of rows x n2 stays within SLAB_BYTES per array, else equal blocks within it. A tile slices
    its rows and columns out of the inputs (a copy each, which XLA does not fold into the input Gram's matmul):
    per row slab instead of per square tile this is ~12% of an FC cross Gram (n = 4,000, d = 3,072, float64:
    1.82 -> 1.50 s wall on the 2-core CPU), and its layers run as fast on the wider tile."""
    count = -(-n2 * rows * itemsize // SLAB_BYTES)
    return count, -(-n2 // count)


def tile_index(count1: int, count2: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Block rows and columns of every tile, row by row (upper triangle j >= i when symmetric), as two
    integer arrays (no per-pair Python objects)."""
    if symmetric:
        return np.triu_indices(count1, 0, count2)
    rows, cols = np.divmod(np.arange(count1 * count2), count2)
    return rows, cols


def upper_position(i, j, count: int):
    """Position of upper block (i, j), j >= i, in :func:`tile_index`'s order of a symmetric count x count grid."""
    i, j = np.asarray(i), np.asarray(j)
    return i * count - i * (i - 1) // 2 + (j - i)


def blockwise(tile_fn, x1, x2):
    """Evaluate a kernel tile by tile and assemble it; call inside jit.

    ``tile_fn(xa, xb, same)`` maps row blocks (ba, d), (bb, d) to a pytree of (..., ba, bb) arrays;
    ``same`` (a traced bool) is true on the diagonal blocks of a Gram of one input set (x2 None).
    """
    symmetric = x2 is None
    xb_all = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb_all.shape[0]
    count1, size1 = block_grid(n1, x1.dtype.itemsize)
    count2, size2 = (count1, size1) if symmetric else column_grid(n2, size1, x1.dtype.itemsize)
    # the memory of the plan before any of it exists: one abstract tile gives the outputs' shapes
    out = jax.eval_shape(tile_fn, jax.ShapeDtypeStruct((size1, *x1.shape[1:]), x1.dtype),
                         jax.ShapeDtypeStruct((size2, *x1.shape[1:]), x1.dtype), jax.ShapeDtypeStruct((), bool))
    per_pair = sum(math.prod(leaf.shape[:-2]) * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(out))
    # symmetric: stacked tiles, gathered blocks, assembled Gram; cross: the Gram, tiles written in place
    _check_gram(n1, n2, per_pair, copies=3 if symmetric else 1, where="device")
    if not symmetric:
        return _cross_tiles(tile_fn, x1, x2, out, (count1, size1), (count2, size2))
    xa_all = pad_rows(x1, count1 * size1)
    index = jnp.asarray(np.stack(tile_index(count1, count1, symmetric=True), axis=1).astype(np.int32))

    def tile(ij):
        xa = lax.dynamic_slice_in_dim(xa_all, ij[0] * size1, size1)
        xb = lax.dynamic_slice_in_dim(xa_all, ij[1] * size1, size1)
        return tile_fn(xa, xb, ij[0] == ij[1])

    tiles = lax.map(tile, index)  # leaves (tiles, ..., size1, size2)
    i, j = np.minimum.outer(np.arange(count1), np.arange(count2)), np.maximum.outer(np.arange(count1),
                                                                                      np.arange(count2))
    order = upper_position(i, j, count1)  # block (i, j) is the mirror of upper block (min, max)
    lower = np.less.outer(np.arange(count1), np.arange(count2)).T  # block row > block column
    diagonal = np.eye(count1, dtype=bool)
    strict_lower = np.tril(np.ones((size1, size1), bool), -1)

    def assemble(leaf):
        blocks = leaf[order]  # (count1, count2, ..., size1, size2)
        mirror = lower[:, :, None, None] | (diagonal[:, :, None, None] & strict_lower)
        mirror = mirror.reshape(count1, count2, *(1,) * (leaf.ndim - 3), size1, size2)
        blocks = jnp.where(mirror, jnp.swapaxes(blocks, -1, -2), blocks)
        lead = leaf.shape[1:-2]
        blocks = jnp.moveaxis(blocks, (0, 1), (len(lead), len(lead) + 2))
        full = blocks.reshape(*lead, count1 * size1, count2 * size2)
        return full[..., :n1, :n2]

    return jax.tree_util.tree_map(assemble, tiles)


def _cross_tiles(tile_fn, x1, x2, out, grid1, grid2):
    """:func:`blockwise` of two input sets: each tile written in place into the (..., n1, n2) outputs, the last
    tile of a row or column moved back to end at n1 or n2 (overlapping its neighbour, whose entries it rewrites
    with the same values) instead of padded rows: no stacked tiles, no copy of the Gram to assemble or cut it
    (FC n = 4,000 float32 K(X, Y): 132 -> 31 MB of temporaries, the ~25,000 page faults a call of them cost)."""
    (count1, size1), (count2, size2) = grid1, grid2
    n1, n2 = x1.shape[0], x2.shape[0]
    rows, cols = tile_index(count1, count2, symmetric=False)
    starts1 = jnp.asarray(np.minimum(rows * size1, n1 - size1).astype(np.int32))
    starts2 = jnp.asarray(np.minimum(cols * size2, n2 - size2).astype(np.int32))
    gram = jax.tree_util.tree_map(lambda leaf: jnp.zeros((*leaf.shape[:-2], n1, n2), leaf.dtype), out)

    def write_tile(t, gram):
        r0, c0 = starts1[t], starts2[t]
        values = tile_fn(lax.dynamic_slice_in_dim(x1, r0, size1), lax.dynamic_slice_in_dim(x2, c0, size2),
                         jnp.asarray(False))
        return jax.tree_util.tree_map(
            lambda g, v: lax.dynamic_update_slice(g, v, (jnp.int32(0),) * (g.ndim - 2) + (r0, c0)), gram, values)

    return lax.fori_loop(0, count1 * count2, write_tile, gram)


# ---------------------------------------------------------------- one compiled call per block


def _swap_pair_axes(v: np.ndarray) -> np.ndarray:
    return np.swapaxes(v, 0, 1)


def blockwise_on_host(block_fn: Callable[[int, int], Sequence], n1: int, n2: int, b1: int, b2: int, *,
                      symmetric: bool, mirror: Callable[[np.ndarray], np.ndarray] = _swap_pair_axes
                      ) -> list[np.ndarray]:
    """Evaluate ``block_fn(r0, c0) -> (v, ...)``, each v (b1, b2, ...) for rows r0:r0+b1 and columns
    c0:c0+b2 (the caller cuts them with :func:`row_block`), over the (n1, n2) grid and assemble
    numpy arrays (n1, n2, ...). ``symmetric`` (needs n1 = n2, b1 = b2): upper blocks only, each mirrored
    with ``mirror`` (the transpose of a block: swaps the two pair axes, and any output axes with them).
    """
    if symmetric and (n1 != n2 or b1 != b2):
        raise ValueError(f"a symmetric Gram needs square blocks of a square grid, got {n1}x{n2}, {b1}x{b2}")
    _check_gram(n1, n2, 4, copies=1, where="host", at_least=True)  # one float32 per pair, before the first block
    results = None
    for r0 in range(0, n1, b1):
        nr = min(b1, n1 - r0)
        for c0 in range(r0 if symmetric else 0, n2, b2):
            nc = min(b2, n2 - c0)
            values = [np.asarray(v)[:nr, :nc] for v in block_fn(r0, c0)]
            if results is None:  # the exact size, from the first block, before the results are allocated
                _check_gram(n1, n2, sum(math.prod(v.shape[2:]) * v.dtype.itemsize for v in values), copies=1,
                            where="host")
                results = [np.zeros((n1, n2) + v.shape[2:], v.dtype) for v in values]
            for out, v in zip(results, values, strict=True):
                if symmetric and r0 == c0:  # K(x, y) and K(y, x) may differ in the last bit: keep the upper
                    upper = np.triu(np.ones((nr, nc), bool)).reshape(nr, nc, *(1,) * (v.ndim - 2))
                    out[r0:r0 + nr, c0:c0 + nc] = np.where(upper, v, mirror(v))
                else:
                    out[r0:r0 + nr, c0:c0 + nc] = v
                    if symmetric:
                        out[c0:c0 + nc, r0:r0 + nr] = mirror(v)
    return results


# ---------------------------------------------------------------- pair blocks (the convolutional kernels)

LANES = 16                     # float32 lanes of an AVX-512 vector: column counts of multi-block Grams
CHUNK_ENTRIES = 2**19          # entries per array in one lax.map step (2 MiB in float32; measured best)
MAX_PAIRS_PER_BLOCK = 4096
MEMORY_FRACTION = 0.25
CALL_ENTRIES = 2**17           # a block call's fixed cost (dispatch, host copies) in pair-array entries


def pair_block_bytes(pairs: int, entries_per_pair: int, *, itemsize: int, live_arrays: int) -> int:
    """Bytes a block of ``pairs`` pairs holds at once: ``live_arrays`` pair-sized arrays (inputs,
    temporaries, outputs of one layer) of ``entries_per_pair`` entries of ``itemsize`` bytes."""
    return int(pairs) * int(live_arrays) * int(entries_per_pair) * int(itemsize)


def auto_pairs_per_block(entries_per_pair: int, itemsize: int, *, live_arrays: int) -> int:
    """Pairs per block (module docstring): ``MEMORY_FRACTION`` of one device's free memory
    (:func:`available_memory_bytes`, "device") at :func:`pair_block_bytes` per pair, clipped to
    [1, ``MAX_PAIRS_PER_BLOCK``], times the device count."""
    free = available_memory_bytes("device")
    per_pair = pair_block_bytes(1, entries_per_pair, itemsize=itemsize, live_arrays=live_arrays)
    fit = MAX_PAIRS_PER_BLOCK if free is None else int(MEMORY_FRACTION * free // per_pair)
    return max(1, min(MAX_PAIRS_PER_BLOCK, fit)) * jax.device_count()


@dataclass(frozen=True)
class PairBlockPlan:
    """How a Gram of pairs is cut: blocks of b1 x b2 pairs, rows_per_step rows per ``lax.map`` step."""

    b1: int              # rows per block (a multiple of rows_per_step * devices)
    b2: int              # columns per block
    rows_per_step: int   # rows per lax.map step


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _largest_divisor(n: int, at_most: int) -> int:
    return max(r for r in range(1, min(at_most, n) + 1) if n % r == 0)


def plan_pair_blocks(n1: int, n2: int, *, pairs: int, entries_per_pair: int, symmetric: bool) -> PairBlockPlan:
    """Blocks of at most about ``pairs`` pairs for an (n1, n2) Gram, square when symmetric, that waste the
    least work: b2 (the minor axis of the pair arrays) is all columns if they fit, else a multiple of
    ``LANES`` between a quarter of and sqrt(pairs); rows split n1 evenly; among these the plan whose
    padded pairs (columns counted in whole vectors; for a symmetric Gram only the upper blocks) plus
    ``CALL_ENTRIES`` per block call is least. rows_per_step: the largest divisor of the rows per device
    that keeps a step within ``CHUNK_ENTRIES`` per array."""
    devices = jax.device_count()
    columns = n1 if symmetric else n2
    widest = max(1, min(columns, math.isqrt(pairs)))
    if widest == columns or widest < LANES:
        widths = [widest]
    else:
        widths = [w for w in range(widest - widest % LANES, LANES - 1, -LANES) if 4 * w >= widest]
    call_pairs = CALL_ENTRIES / entries_per_pair
    best = None
    for b2 in widths:  # widest first: ties keep fewer calls
        target = max(1, CHUNK_ENTRIES // (b2 * entries_per_pair))
        if symmetric:
            b1 = _round_up(b2, devices)
            count = -(-n1 // b1)
            calls = count * (count + 1) // 2
        else:
            most_rows = max(devices, pairs // b2 // devices * devices)
            row_blocks = -(-n1 // most_rows)
            b1 = _round_up(-(-n1 // row_blocks), devices)
            calls = row_blocks * -(-n2 // b2)
        cost = calls * (b1 * _round_up(b2, LANES) + call_pairs)
        if best is None or cost < best[0]:
            plan = PairBlockPlan(b1, b1 if symmetric else b2, _largest_divisor(b1 // devices, target))
            best = (cost, plan)
    return best[1]


def map_row_chunks(chunk_fn, rows_per_step: int, *row_arrays):
    """``lax.map`` of ``chunk_fn(*row_chunks) -> tuple of (r, b2)`` over chunks of ``rows_per_step`` rows
    of the row-first ``row_arrays`` (b1, ...) of a block; returns the tuple of (b1, b2) arrays."""
    b1 = row_arrays[0].shape[0]
    steps = b1 // rows_per_step
    chunks = tuple(a.reshape(steps, rows_per_step, *a.shape[1:]) for a in row_arrays)
    outs = lax.map(lambda args: chunk_fn(*args), chunks)
    return tuple(o.reshape(b1, *o.shape[2:]) for o in outs)


def over_devices(fn, row_arrays: tuple, replicated: tuple):
    """``fn(*row_arrays, *replicated)``, the rows (axis 0) of ``row_arrays`` split over the JAX devices."""
    devices = jax.devices()
    if len(devices) == 1:
        return fn(*row_arrays, *replicated)
    mesh = Mesh(np.array(devices), ("pairs",))
    in_specs = (PartitionSpec("pairs"),) * len(row_arrays) + (PartitionSpec(),) * len(replicated)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec("pairs"), check_vma=False)(
        *row_arrays, *replicated)
