"""Exact convolutional kernels: the CNTK (Arora et al. 2019 sec. 4) and the CDEQ-NTK (Feng & Kolter, App. B).

Images are batch-first (n, P, Q, C); filter q x q (q odd), stride 1, zero padding. The trace operator
(Arora eq. after (14); Feng & Kolter eq. 20) is
    [L(M)]_{ij,i'j'} = sum_{a,b = -(q-1)/2 .. (q-1)/2} M_{i+a, j+b, i'+a, j'+b}     (out of range: 0);
it keeps the offset (i - i', j - j') fixed.

CNTK (Arora sec. 4.1-4.2, with the authors' code's last layer), L = depth - 1 convolution layers,
c = c_sigma = 1 / E[phi(z)^2]:
    Sigma(0) = L(sum_alpha x_alpha (x) x'_alpha);
    Lambda(h) from the per-pixel diagonals Sigma(h-1)(x,x)_{ij,ij}, Sigma(h-1)(x',x')_{i'j',i'j'} and
    Sigma(h-1)(x,x')_{ij,i'j'};  K(h) = E[phi phi], Kdot(h) = E[phi' phi'] under Lambda(h) (eqs. 15-16);
    Sigma(h) = (c/q^2) L(K(h)),  Theta(h) = (c/q^2) L(Kdot(h) (.) Theta(h-1) + K(h))  for h < L;
    last layer, no trace operator (the readout is not a convolution):
    vanilla: nngp = (c/q^2) tr K(L),   ntk = (c/q^2) tr(Kdot(L) (.) Theta(L-1) + K(L));
    gap:     nngp = (c/q^2) mean K(L), ntk = (c/q^2) mean(Kdot(L) (.) Theta(L-1) + K(L)) over all (ij, i'j').
``fix_first_last`` (sec. 4.2; the code's ``--fix yes``): Theta(0) = 0 and the K(L) term of the ntk is
dropped (the first and the last layer are not trained).

The vanilla kernel only needs the P*Q offset-0 entries: L preserves offsets, so Sigma, Theta at offset 0
depend only on offset-0 entries and on the per-pixel diagonals (themselves the offset-0 entries of the
x-x kernel); every trace operator becomes a q x q box sum of a (P, Q) map: O(P Q L) per pair. GAP needs
every offset: (P, Q, P, Q) per pair, computed for blocks of pairs. Per-image diagonals are computed once
per image and reused for every pair.

CDEQ-NTK (Feng & Kolter Thm. 3, eqs. 15-21): see :func:`cdeq_ntk`. Its value tr(Theta*) also needs
only offset 0.

Batching (``batch_size`` = pairs per compiled call, None = automatic): a block of b1 x b2 pairs is one
call; by default the block holds as many pairs as fit in a quarter of the available memory (free device
memory on an accelerator, available RAM on CPU) at ``_LIVE_ARRAYS`` live arrays of P*Q (offset 0) or
(P*Q)^2 (GAP) entries per pair, capped at 4096 pairs. With several JAX devices every block's rows are
sharded over the devices.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ntkrepro.kernels.fc import Kernels, check_variances
from ntkrepro.kernels.gaussian import Activation, get_activation

READOUTS = ("vanilla", "gap")
_LIVE_ARRAYS = 12          # arrays of a pair's size alive at once in a layer (inputs, temporaries, outputs)
_MAX_PAIRS_PER_BATCH = 4096
_MEMORY_FRACTION = 0.25


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["nngp", "ntk", "sigma_iterations", "theta_iterations"], meta_fields=[])
@dataclass(frozen=True)
class CDEQKernels:
    """CDEQ-NTK Gram matrices (n1, n2) and, per pair, the iterations the two fixed points took."""

    nngp: jax.Array
    ntk: jax.Array
    sigma_iterations: jax.Array
    theta_iterations: jax.Array


# ---------------------------------------------------------------- input checks (before any compute)


def _check_dtype(dtype):
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return jnp.dtype(dtype)


def check_images(x1, x2=None, *, dtype=jnp.float32):
    """Validate batch-first images (n, P, Q, C): 4-D, non-empty, finite, same (P, Q, C) in both sets.

    Returns numpy arrays of ``dtype`` (x2 None stays None).
    """
    dtype = _check_dtype(dtype)
    arrays = []
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            arrays.append(None)
            continue
        shape = np.shape(x)
        if len(shape) != 4 or min(shape) == 0:
            raise ValueError(f"{name} must be a non-empty batch of images (n, P, Q, C), got shape {shape}")
        x = np.asarray(x)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or inf pixels")
        arrays.append(x.astype(dtype, copy=False))
    if x2 is not None and arrays[0].shape[1:] != arrays[1].shape[1:]:
        raise ValueError(f"image shapes differ: x1 has (P, Q, C) = {arrays[0].shape[1:]}, "
                         f"x2 has {arrays[1].shape[1:]}")
    return arrays[0], arrays[1]


def check_filter_size(filter_size) -> int:
    if isinstance(filter_size, bool) or not isinstance(filter_size, (int, np.integer)) or filter_size < 1:
        raise ValueError(f"filter_size must be a positive odd integer, got {filter_size!r}")
    if filter_size % 2 == 0:
        raise ValueError(f"filter_size must be odd (zero 'same' padding keeps P x Q), got {filter_size}")
    return int(filter_size)


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (pairs per call) or None, got {batch_size!r}")
    return int(batch_size)


# ---------------------------------------------------------------- trace operators


def box_sum(m, *, filter_size: int):
    """Offset-0 trace operator: the q x q window sum of maps (..., P, Q), zero padding (separable)."""
    r = filter_size // 2
    if r == 0:
        return m
    p_side, q_side = m.shape[-2:]
    padded = jnp.pad(m, [(0, 0)] * (m.ndim - 2) + [(r, r), (r, r)])
    rows = sum(padded[..., a:a + p_side, :] for a in range(filter_size))
    return sum(rows[..., b:b + q_side] for b in range(filter_size))


def trace_operator(m, *, filter_size: int):
    """The trace operator L on (..., P, Q, P, Q): shifted adds, separable (q + q instead of q^2 terms).

    Measured on the 2-core CPU of this project (32x32 images, blocks of 16 pairs, float32): separable
    shifted adds 2x faster than q^2 shifted adds and 6x faster than a 2-D convolution with a diagonal
    q x q kernel (``lax.conv_general_dilated``), see the module's benchmark notes in benchmarks/README.md.
    """
    r = filter_size // 2
    if r == 0:
        return m
    p_side, q_side = m.shape[-4], m.shape[-3]
    padded = jnp.pad(m, [(0, 0)] * (m.ndim - 4) + [(r, r)] * 4)
    rows = sum(padded[..., a:a + p_side, :, a:a + p_side, :] for a in range(filter_size))
    return sum(rows[..., b:b + q_side, :, b:b + q_side] for b in range(filter_size))


# ---------------------------------------------------------------- per-image diagonals


def c_sigma(activation: Activation) -> float:
    """c_sigma = 1 / E[phi(z)^2], z ~ N(0, 1) (Arora et al. eq. 6; 2 for ReLU)."""
    second = float(activation.expectations(np.float64(1.0), np.float64(1.0), np.float64(1.0))[0])
    if not (math.isfinite(second) and second > 0):
        raise ValueError(f"activation {activation.name}: E[phi(z)^2] = {second}, cannot normalize")
    return 1.0 / second


@functools.partial(jax.jit, static_argnames=("num_layers", "filter_size", "activation"))
def _cntk_diagonals(x, scale, *, num_layers, filter_size, activation):
    d = box_sum(jnp.sum(x * x, axis=-1), filter_size=filter_size)

    def layer(d, _):
        k = activation.expectations(d, d, d)[0]
        return scale * box_sum(k, filter_size=filter_size), d

    _, stacked = lax.scan(layer, d, None, length=num_layers)
    return stacked


def cntk_diagonals(x, *, depth: int, filter_size: int = 3, activation="relu", dtype=jnp.float32):
    """Per-pixel diagonals Sigma(h)(x, x)_{ij,ij}, h = 0..L-1, of each image: shape (L, n, P, Q)."""
    depth = _check_depth(depth)
    q = check_filter_size(filter_size)
    act = get_activation(activation)
    x, _ = check_images(x, dtype=dtype)
    scale = c_sigma(act) / q**2
    return _cntk_diagonals(jnp.asarray(x), jnp.asarray(scale, x.dtype), num_layers=depth - 1, filter_size=q,
                           activation=act)


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 2:
        raise ValueError(f"depth must be an integer >= 2 (convolution layers + 1), got {depth!r}")
    return int(depth)


# ---------------------------------------------------------------- CNTK pair blocks


def _pixel_products(x1, x2):
    """sum_c x1[a, i, j, c] x2[b, i, j, c]: (b1, b2, P, Q)."""
    return jnp.einsum("apqc,bpqc->abpq", x1, x2, precision=lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("filter_size", "activation", "fix_first_last"))
def _vanilla_block(x1, x2, d1, d2, scale, *, filter_size, activation, fix_first_last):
    """Offset-0 CNTK-V of a block: x1 (b1, P, Q, C), x2 (b2, ...), d1 (L, b1, P, Q) -> nngp, ntk (b1, b2)."""
    box = functools.partial(box_sum, filter_size=filter_size)
    sigma = box(_pixel_products(x1, x2))
    theta = jnp.zeros_like(sigma) if fix_first_last else sigma

    def expectations(sigma, e1, e2):
        return activation.expectations(e1[:, None], sigma, e2[None, :])

    def layer(carry, diagonals):
        sigma, theta = carry
        k, kdot = expectations(sigma, *diagonals)
        return (scale * box(k), scale * box(kdot * theta + k)), None

    (sigma, theta), _ = lax.scan(layer, (sigma, theta), (d1[:-1], d2[:-1]))
    k, kdot = expectations(sigma, d1[-1], d2[-1])
    last = kdot * theta if fix_first_last else kdot * theta + k
    return scale * jnp.sum(k, axis=(-2, -1)), scale * jnp.sum(last, axis=(-2, -1))


def _full_pair_kernels(x1, x2, d1, d2, scale, *, filter_size, activation, fix_first_last, readout):
    """CNTK of a block from the full (P, Q, P, Q) tensors of every pair: x1 (b1, P, Q, C), d1 (L, b1, P, Q)."""
    trace = functools.partial(trace_operator, filter_size=filter_size)
    k0 = jnp.einsum("aijc,bklc->abijkl", x1, x2, precision=lax.Precision.HIGHEST)
    sigma = trace(k0)
    theta = jnp.zeros_like(sigma) if fix_first_last else sigma

    def expectations(sigma, e1, e2):
        return activation.expectations(e1[:, None, :, :, None, None], sigma, e2[None, :, None, None, :, :])

    def layer(carry, diagonals):
        sigma, theta = carry
        k, kdot = expectations(sigma, *diagonals)
        return (scale * trace(k), scale * trace(kdot * theta + k)), None

    (sigma, theta), _ = lax.scan(layer, (sigma, theta), (d1[:-1], d2[:-1]))
    k, kdot = expectations(sigma, d1[-1], d2[-1])
    last = kdot * theta if fix_first_last else kdot * theta + k
    if readout == "gap":
        return scale * jnp.mean(k, axis=(-4, -3, -2, -1)), scale * jnp.mean(last, axis=(-4, -3, -2, -1))
    p_side, q_side = x1.shape[1:3]
    flat = (*k.shape[:2], p_side * q_side, p_side * q_side)
    return (scale * jnp.trace(k.reshape(flat), axis1=-2, axis2=-1),
            scale * jnp.trace(last.reshape(flat), axis1=-2, axis2=-1))


_full_block = jax.jit(_full_pair_kernels, static_argnames=("filter_size", "activation", "fix_first_last",
                                                            "readout"))


# ---------------------------------------------------------------- batching over blocks and devices


def available_memory_bytes(device=None) -> int:
    """Free memory of ``device`` (accelerator: bytes_limit - bytes_in_use; CPU: available RAM)."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**31


def auto_pairs_per_batch(entries_per_pair: int, itemsize: int) -> int:
    """Pairs per block: a quarter of the free memory at ``_LIVE_ARRAYS`` pair-sized arrays, in [1, 4096]."""
    per_pair = _LIVE_ARRAYS * entries_per_pair * itemsize
    fit = int(_MEMORY_FRACTION * available_memory_bytes() // per_pair)
    return max(1, min(_MAX_PAIRS_PER_BATCH, fit)) * jax.device_count()


def _block_sides(n1: int, n2: int, pairs: int, devices: int) -> tuple[int, int]:
    """Block (b1, b2) with b1 * b2 <= pairs (at least one pair per device), b1 a multiple of ``devices``."""
    b2 = max(1, min(n2, int(math.isqrt(max(pairs, 1)))))
    b1 = max(1, min(n1, pairs // b2))
    b1 = -(-b1 // devices) * devices
    return b1, b2


def _pad_rows(a, size: int, axis: int = 0):
    """Pad ``a`` along ``axis`` to ``size`` by repeating its first entry (keeps every input valid)."""
    missing = size - a.shape[axis]
    if missing <= 0:
        return a
    first = np.take(a, [0], axis=axis)
    return np.concatenate([a, np.repeat(first, missing, axis=axis)], axis=axis)


def _row_sharding(ndim: int, axis: int):
    devices = jax.devices()
    if len(devices) == 1:
        return None
    mesh = Mesh(np.array(devices), ("pairs",))
    spec = [None] * ndim
    spec[axis] = "pairs"
    return NamedSharding(mesh, P(*spec))


def _put(a, axis: int = 0):
    sharding = _row_sharding(a.ndim, axis)
    return jnp.asarray(a) if sharding is None else jax.device_put(a, sharding)


def _blockwise(block_fn, x1, x2, d1, d2, *, pairs_per_batch: int, symmetric: bool, outputs: int):
    """Evaluate ``block_fn(x1_block, x2_block, d1_block, d2_block) -> outputs arrays (b1, b2)`` over all
    blocks (upper-triangle blocks only when ``symmetric``) and assemble (n1, n2) numpy arrays."""
    n1, n2 = x1.shape[0], x2.shape[0]
    b1, b2 = _block_sides(n1, n2, pairs_per_batch, jax.device_count())
    if symmetric:
        b1 = b2 = max(b1, b2)
        b1 = -(-b1 // jax.device_count()) * jax.device_count()
        b2 = b1
    results = None
    for r0 in range(0, n1, b1):
        rows = slice(r0, min(n1, r0 + b1))
        xr = _put(_pad_rows(x1[rows], b1))
        dr = _put(_pad_rows(d1[:, rows], b1, axis=1), axis=1)
        for c0 in range(r0 if symmetric else 0, n2, b2):
            cols = slice(c0, min(n2, c0 + b2))
            xc = jnp.asarray(_pad_rows(x2[cols], b2))
            dc = jnp.asarray(_pad_rows(d2[:, cols], b2, axis=1))
            values = [np.asarray(v) for v in block_fn(xr, xc, dr, dc)]
            if results is None:
                results = [np.zeros((n1, n2), v.dtype) for v in values]
            nr, nc = rows.stop - rows.start, cols.stop - cols.start
            for out, v in zip(results, values, strict=True):
                out[rows, cols] = v[:nr, :nc]
                if symmetric:
                    out[cols, rows] = v[:nr, :nc].T
    assert results is not None and len(results) == outputs
    return results


# ---------------------------------------------------------------- public: CNTK


def cntk(x1, x2=None, *, depth: int, readout: str = "vanilla", fix_first_last: bool = False,
         filter_size: int = 3, activation="relu", dtype=jnp.float32, batch_size: int | None = None) -> Kernels:
    """Exact CNTK and CNN-GP kernel of Arora et al. 2019 (sec. 4.1 vanilla, 4.2 GAP; module docstring).

    Args:
        x1, x2: images (n1, P, Q, C), (n2, P, Q, C); x2 None = the Gram of x1 (upper triangle computed).
        depth: convolution layers + 1 (the depth of Arora et al.'s tables), >= 2.
        readout: ``"vanilla"`` (dense readout: trace, offset 0 only) or ``"gap"`` (global average pooling).
        fix_first_last: first and last layer not trained (sec. 4.2; Arora's CNTK-GAP uses True).
        filter_size: odd filter side q.
        activation: registered name, :class:`~ntkrepro.kernels.gaussian.Activation` or JAX callable.
        dtype: float32 (the authors' precision, default) or float64.
        batch_size: pairs per compiled call (None: from free memory, module docstring).
    Returns:
        :class:`~ntkrepro.kernels.fc.Kernels` with ``nngp`` and ``ntk`` of shape (n1, n2).
    """
    depth = _check_depth(depth)
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if fix_first_last and depth < 3:
        raise ValueError("fix_first_last needs depth >= 3: with one convolution layer and the first and last "
                         "layer fixed nothing is trained (the NTK is 0)")
    q = check_filter_size(filter_size)
    act = get_activation(activation)
    batch_size = _check_batch_size(batch_size)
    x1, x2 = check_images(x1, x2, dtype=dtype)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    scale_value = c_sigma(act) / q**2
    diagonals = [np.asarray(_cntk_diagonals(jnp.asarray(x), jnp.asarray(scale_value, x.dtype),
                                            num_layers=depth - 1, filter_size=q, activation=act))
                 for x in ((x1,) if symmetric else (x1, x2))]
    d1, d2 = diagonals[0], diagonals[-1]
    scale = jnp.asarray(scale_value, x1.dtype)
    p_side, q_side = x1.shape[1:3]
    if readout == "vanilla":
        entries = p_side * q_side

        def block_fn(xa, xb, da, db):
            return _vanilla_block(xa, xb, da, db, scale, filter_size=q, activation=act,
                                  fix_first_last=bool(fix_first_last))
    else:
        entries = (p_side * q_side) ** 2

        def block_fn(xa, xb, da, db):
            return _full_block(xa, xb, da, db, scale, filter_size=q, activation=act,
                               fix_first_last=bool(fix_first_last), readout="gap")

    pairs = batch_size or auto_pairs_per_batch(entries, x1.dtype.itemsize)
    nngp, ntk = _blockwise(block_fn, x1, x2, d1, d2, pairs_per_batch=pairs, symmetric=symmetric, outputs=2)
    return Kernels(jnp.asarray(nngp), jnp.asarray(ntk))
