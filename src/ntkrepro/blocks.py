"""Gram matrices evaluated block by block: the one place that splits, pads and mirrors blocks.

Two levels, for two reasons to split:
- :func:`blockwise` runs *inside* one compiled call: the fully connected, ResNet and DEQ recursions are
  memory-bound elementwise work, so each cache-sized tile (``BLOCK_BYTES``) runs its whole layer
  recursion before the next (``lax.map`` over tiles).
- :func:`blockwise_on_host` is a Python loop of compiled calls, one per block: for kernels whose block
  is sized by device memory (the convolutional kernels, the empirical NTK, the DEQ-NTK root solve) and
  whose blocks have their own per-block results.
Both compute only the upper blocks of a Gram of one input set (x2 None / ``symmetric``), mirror them,
and make the diagonal blocks symmetric bit for bit. Rows are padded by repeating a row (a valid input),
so every block has one shape and compiles once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BLOCK_BYTES = 2**21  # one (b, b) tile array of :func:`blockwise`: ~2 MiB, so a tile's recursion stays in cache


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


def blockwise(tile_fn, x1, x2):
    """Evaluate a kernel tile by tile and assemble it; call inside jit.

    ``tile_fn(xa, xb, same)`` maps row blocks (ba, d), (bb, d) to a pytree of (..., ba, bb) arrays;
    ``same`` (a traced bool) is true on the diagonal blocks of a Gram of one input set (x2 None).
    """
    symmetric = x2 is None
    xb_all = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb_all.shape[0]
    count1, size1 = block_grid(n1, x1.dtype.itemsize)
    count2, size2 = (count1, size1) if symmetric else block_grid(n2, x1.dtype.itemsize)
    xa_all, xb_all = pad_rows(x1, count1 * size1), pad_rows(xb_all, count2 * size2)
    grid = [(i, j) for i in range(count1) for j in range(i if symmetric else 0, count2)]
    index = jnp.asarray(np.array(grid, np.int32))

    def tile(ij):
        xa = lax.dynamic_slice_in_dim(xa_all, ij[0] * size1, size1)
        xb = lax.dynamic_slice_in_dim(xb_all, ij[1] * size2, size2)
        return tile_fn(xa, xb, symmetric & (ij[0] == ij[1]))

    tiles = lax.map(tile, index)  # leaves (tiles, ..., size1, size2)
    if symmetric:
        position = {ij: k for k, ij in enumerate(grid)}
        order = np.array([[position[min(i, j), max(i, j)] for j in range(count2)] for i in range(count1)])
        lower = np.less.outer(np.arange(count1), np.arange(count2)).T  # block row > block column
        diagonal = np.eye(count1, dtype=bool)
        strict_lower = np.tril(np.ones((size1, size1), bool), -1)
    else:
        order = np.arange(count1 * count2).reshape(count1, count2)

    def assemble(leaf):
        blocks = leaf[order]  # (count1, count2, ..., size1, size2)
        if symmetric:
            mirror = lower[:, :, None, None] | (diagonal[:, :, None, None] & strict_lower)
            mirror = mirror.reshape(count1, count2, *(1,) * (leaf.ndim - 3), size1, size2)
            blocks = jnp.where(mirror, jnp.swapaxes(blocks, -1, -2), blocks)
        lead = leaf.shape[1:-2]
        blocks = jnp.moveaxis(blocks, (0, 1), (len(lead), len(lead) + 2))
        full = blocks.reshape(*lead, count1 * size1, count2 * size2)
        return full[..., :n1, :n2]

    return jax.tree_util.tree_map(assemble, tiles)


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
    results = None
    for r0 in range(0, n1, b1):
        nr = min(b1, n1 - r0)
        for c0 in range(r0 if symmetric else 0, n2, b2):
            nc = min(b2, n2 - c0)
            values = [np.asarray(v)[:nr, :nc] for v in block_fn(r0, c0)]
            if results is None:
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
