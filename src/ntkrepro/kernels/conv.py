"""Exact convolutional kernels: the CNTK (Arora et al. 2019 sec. 4) and the CDEQ-NTK (Feng & Kolter, App. B).

Images are batch-first (n, P, Q, C); filter q x q (q odd), stride 1, zero padding. The trace operator
(Arora sec. 4, after eq. 14; Feng & Kolter eq. 20) is
    [L(M)]_{ij,i'j'} = sum_{a,b = -(q-1)/2 .. (q-1)/2} M_{i+a, j+b, i'+a, j'+b}     (out of range: 0);
it keeps the offset (i - i', j - j') fixed.

CNTK (Arora sec. 4.1-4.2 with the authors' code's last layer), L = depth - 1 convolution layers,
c = c_sigma = 1 / E[phi(z)^2]:
    Sigma(0) = L(sum_alpha x_alpha (x) x'_alpha);
    Lambda(h) from the per-pixel diagonals Sigma(h-1)(x,x)_{ij,ij}, Sigma(h-1)(x',x')_{i'j',i'j'} and
    Sigma(h-1)(x,x')_{ij,i'j'};  K(h) = E[phi phi], Kdot(h) = E[phi' phi'] under Lambda(h) (eqs. 15-16);
    Sigma(h) = (c/q^2) L(K(h)),  Theta(h) = (c/q^2) L(Kdot(h) (.) Theta(h-1) + K(h))  for h < L;
    last layer without trace operator (the readout is not a convolution):
    vanilla: nngp = (c/q^2) tr K(L),   ntk = (c/q^2) tr(Kdot(L) (.) Theta(L-1) + K(L));
    gap:     nngp = (c/q^2) mean K(L), ntk = (c/q^2) mean(Kdot(L) (.) Theta(L-1) + K(L)) over all (ij, i'j').
``fix_first_last`` (sec. 4.2; the code's ``--fix yes``): Theta(0) = 0 and no K(L) term in the ntk (the
first and the last layer are not trained).

The vanilla kernel needs only the P*Q offset-0 entries: L preserves offsets, so Sigma and Theta at
offset 0 depend only on offset-0 entries and on the per-pixel diagonals (the offset-0 entries of the x-x
kernel), and every trace operator becomes a q x q box sum of a (P, Q) map: O(P Q L) per pair. GAP needs
all (P Q)^2 entries, which split the same way into P*Q independent *cyclic offset planes*: plane (u, v)
holds M[i, j, (i + u) mod P, (j + v) mod Q] for all (i, j), i.e. the offset-0 map of x against x' rolled
by (u, v), so every entry appears exactly once. On a plane L is a q x q box sum that must not cross the
wrap point (i = P - u, j = Q - v: there the true neighbour is out of range, 0), a box sum with 0/1
neighbour weights (:func:`plane_masks`). GAP is then the vanilla computation over the P*Q planes in
turn, each in cache, with the mean of all entries as readout: O((P Q)^2 L) per pair with no (P, Q, P, Q)
tensor in memory (2-2.3x the dense 4-D computation on the project's CPU from 16 images on; about equal
for tiny Grams, whose few columns fill few vector lanes). Per-image diagonals are computed once per image
and reused for every pair.

CDEQ-NTK (Feng & Kolter Thm. 3, eqs. 15-21): see :func:`cdeq_ntk`; its value tr(Theta*) also needs only
offset 0.

Batching (``batch_size`` = pairs per compiled call; None = automatic): a call evaluates a block of
b1 x b2 pairs (b2 a multiple of the 16-lane vector width unless one block spans all columns: an odd
b2 wastes vector lanes, 0.4-0.7x the throughput); inside it ``lax.map`` walks over row chunks of
~``_CHUNK_ENTRIES`` entries per array so that a layer's temporaries stay in the CPU cache (XLA
materializes them between fusions). The automatic block holds as many pairs as fit in a quarter of the
free memory (free device memory on an accelerator, available RAM on CPU) at ``_LIVE_ARRAYS`` live
pair-sized arrays of P*Q entries (one plane), at most ``_MAX_PAIRS_PER_BATCH``. With several JAX devices
the rows of every block are sharded over the devices (one block = ``device_count`` times as many pairs).
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
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from ntkrepro.blocks import blockwise_on_host, row_block
from ntkrepro.checks import finite_kernel, real_array
from ntkrepro.kernels.fc import Kernels, check_dtype, check_each, check_variances
from ntkrepro.kernels.gaussian import Activation, arccos, c_sigma, get_activation

READOUTS = ("vanilla", "gap")
_LIVE_ARRAYS = 12              # pair-sized arrays alive at once in a layer (inputs, temporaries, outputs)
_MAX_PAIRS_PER_BATCH = 4096
_MEMORY_FRACTION = 0.25
_CHUNK_ENTRIES = 2**19         # entries per array in one lax.map step (2 MiB in float32; measured best)
_LANES = 16                    # float32 lanes of an AVX-512 vector: column counts of multi-block Grams


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["nngp", "ntk", "sigma_iterations", "theta_iterations"], meta_fields=[])
@dataclass(frozen=True)
class CDEQKernels:
    """CDEQ-NTK: ``nngp`` = tr K*, ``ntk`` = tr Theta* (n1, n2), and per pair the iterations of the Sigma
    fixed point and of the Theta* solve."""

    nngp: jax.Array
    ntk: jax.Array
    sigma_iterations: jax.Array
    theta_iterations: jax.Array


# ---------------------------------------------------------------- input checks (before any compute)


def check_images(x1, x2=None, *, dtype=jnp.float32):
    """Validate batch-first images (n, P, Q, C): 4-D, non-empty, finite, same (P, Q, C) in both sets.

    Returns numpy arrays of ``dtype`` (x2 None stays None).
    """
    dtype = check_dtype(dtype)

    def check_one(name, x):
        x = real_array(name, x)
        shape = np.shape(x)
        if len(shape) != 4 or min(shape) == 0:
            raise ValueError(f"{name} must be a non-empty batch of images (n, P, Q, C), got shape {shape}")
        x = np.asarray(x)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains non-finite pixels (NaN or inf)")
        return x.astype(dtype, copy=False)

    x1, x2 = check_each(x1, x2, check_one)
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"image shapes differ: x1 has (P, Q, C) = {x1.shape[1:]}, x2 has {x2.shape[1:]}")
    return x1, x2


def check_filter_size(filter_size) -> int:
    if isinstance(filter_size, bool) or not isinstance(filter_size, (int, np.integer)) or filter_size < 1:
        raise ValueError(f"filter_size must be a positive odd integer, got {filter_size!r}")
    if filter_size % 2 == 0:
        raise ValueError(f"filter_size must be odd (zero 'same' padding keeps P x Q), got {filter_size}")
    return int(filter_size)


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 2:
        raise ValueError(f"depth must be an integer >= 2 (convolution layers + 1), got {depth!r}")
    return int(depth)


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (pairs per call) or None, got {batch_size!r}")
    return int(batch_size)


# ---------------------------------------------------------------- trace operators


def box_sum(m, *, filter_size: int, axes: tuple[int, int] = (-2, -1)):
    """Offset-0 trace operator: q x q window sums of the (P, Q) maps on ``axes`` of ``m``, zero padding,
    separable.

    Separable (q + q shifted adds) beats q^2 shifted adds (100 vs 37 M entries/s, 32x32 maps, float32,
    2-core CPU) and ``lax.reduce_window`` (36 M entries/s).
    """
    r = filter_size // 2
    if r == 0:
        return m
    axes = tuple(a % m.ndim for a in axes)
    padded = jnp.pad(m, [(r, r) if a in axes else (0, 0) for a in range(m.ndim)])
    for axis in axes:
        size = m.shape[axis]
        padded = sum(lax.slice_in_dim(padded, a, a + size, axis=axis) for a in range(filter_size))
    return padded


def plane_masks(shift, size: int, *, filter_size: int, dtype=jnp.float32):
    """(q, size) 0/1 weights of the q neighbours i + a - (q-1)/2 of each position i in the cyclic offset
    plane of ``shift`` (module docstring): 1 where the neighbour is in range and on the same side of the
    wrap point size - shift as i (no wrap: shift 0 gives the plain zero-padded window)."""
    r = filter_size // 2
    i = jnp.arange(size)
    j = i[None, :] + jnp.arange(-r, r + 1)[:, None]
    cut = size - shift
    return ((j >= 0) & (j < size) & ((i[None, :] < cut) == (j < cut))).astype(dtype)


def plane_box_sum(m, ok_i, ok_j, *, filter_size: int):
    """The trace operator on cyclic offset planes (r, P, Q, b): q x q window sums over axes 1 and 2 with
    the neighbour weights ``ok_i`` (q, P) and ``ok_j`` (q, Q) of :func:`plane_masks`, separable."""
    r = filter_size // 2
    if r == 0:
        return m
    p_side, q_side = m.shape[1:3]
    padded = jnp.pad(m, [(0, 0), (r, r), (0, 0), (0, 0)])
    m = sum(lax.slice_in_dim(padded, a, a + p_side, axis=1) * ok_i[a][None, :, None, None]
            for a in range(filter_size))
    padded = jnp.pad(m, [(0, 0), (0, 0), (r, r), (0, 0)])
    return sum(lax.slice_in_dim(padded, b, b + q_side, axis=2) * ok_j[b][None, None, :, None]
               for b in range(filter_size))


# ---------------------------------------------------------------- Gaussian expectations

# phi = b max(0, x) -> b^2, for the ReLU-like activations the float32 fast path serves.
_RELU_GAINS = {"relu": 1.0, "normalized_relu": 2.0}


def expectations(activation: Activation, s11, s12, s22):
    """(E[phi(u)phi(v)], E[phi'(u)phi'(v)]) under [[s11, s12], [s12, s22]], elementwise (Arora eqs. 15-16).

    ``activation.expectations``, except for ReLU and the normalized ReLU in float32: there the arc-cosine
    closed forms (Arora eqs. 19-20) with one reciprocal square root and :func:`.gaussian.arccos`;
    |lambda| within 8 ulps of 1 is snapped to 1 as in ``gaussian._correlation``.
    """
    gain = _RELU_GAINS.get(activation.name)
    if gain is None or jnp.result_type(s12) != jnp.float32:
        return activation.expectations(s11, s12, s22)
    norm2 = s11 * s22
    positive = norm2 > 0
    inv_norm = lax.rsqrt(jnp.where(positive, norm2, 1.0))
    lam = jnp.clip(s12 * inv_norm, -1.0, 1.0)
    lam = jnp.where(1.0 - jnp.abs(lam) <= 8 * jnp.finfo(jnp.float32).eps, jnp.sign(lam), lam)
    lam = jnp.where(positive, lam, 0.0)
    angle = jnp.pi - arccos(lam)
    k = (gain / (2 * jnp.pi)) * (lam * angle + jnp.sqrt(1.0 - lam * lam)) * (norm2 * inv_norm)
    return jnp.where(positive, k, 0.0), (gain / (2 * jnp.pi)) * angle


# ---------------------------------------------------------------- per-image diagonals


@functools.partial(jax.jit, static_argnames=("num_layers", "filter_size", "activation"))
def _cntk_diagonals(x, scale, *, num_layers, filter_size, activation):
    d = box_sum(jnp.sum(x * x, axis=-1), filter_size=filter_size)

    def layer(d, _):
        k = expectations(activation, d, d, d)[0]
        return scale * box_sum(k, filter_size=filter_size), d

    _, stacked = lax.scan(layer, d, None, length=num_layers)
    return jnp.moveaxis(stacked, 0, 1)


def cntk_diagonals(x, *, depth: int, filter_size: int = 3, activation="relu", dtype=jnp.float32):
    """Per-pixel diagonals Sigma(h)(x, x)_{ij,ij}, h = 0..depth-2, of every image: (n, depth - 1, P, Q)."""
    depth = _check_depth(depth)
    q = check_filter_size(filter_size)
    act = get_activation(activation)
    x, _ = check_images(x, dtype=dtype)
    return _cntk_diagonals(jnp.asarray(x), jnp.asarray(c_sigma(act) / q**2, x.dtype), num_layers=depth - 1,
                           filter_size=q, activation=act)


# ---------------------------------------------------------------- CNTK of one chunk of pairs


def _pixel_products(x1, x2):
    """Offset-0 K(0): sum_c x1[a, i, j, c] x2[b, i, j, c], shape (b1, b2, P, Q).

    A fused multiply-reduce: XLA's batched dot over the P*Q pixels is ~10x slower for few channels.
    """
    return jnp.sum(x1[:, None] * x2[None], axis=-1)


def _plane_chunk(x1, x2t, d1, d2t, scale, masks, *, filter_size, activation, fix_first_last):
    """CNTK sums over one offset plane: x1 (r, P, Q, C), d1 (r, L, P, Q) against the columns x2t (P, Q, C, b),
    d2t (L, P, Q, b) rolled to the plane -> (sum K(L), sum last) (r, b), times c/q^2. ``masks`` None: offset
    0 (plain box sums), else (ok_i, ok_j) of :func:`plane_masks`. Pair arrays are (r, P, Q, b): the
    columns' pairs in the minor axis, so the box sums shift whole vectors and the expectations vectorize
    over pairs (3x the throughput of (r, b, P, Q)).
    """
    if masks is None:
        box = functools.partial(box_sum, filter_size=filter_size, axes=(1, 2))
    else:
        box = functools.partial(plane_box_sum, ok_i=masks[0], ok_j=masks[1], filter_size=filter_size)
    sigma = box(jnp.einsum("rijc,ijcb->rijb", x1, x2t, precision=lax.Precision.HIGHEST))
    theta = jnp.zeros_like(sigma) if fix_first_last else sigma

    def pair_expectations(sigma, e1, e2):
        return expectations(activation, e1[..., None], sigma, e2[None])

    def layer(carry, diagonals):
        sigma, theta = carry
        k, kdot = pair_expectations(sigma, *diagonals)
        return (scale * box(k), scale * box(kdot * theta + k)), None

    d1 = jnp.moveaxis(d1, 1, 0)
    (sigma, theta), _ = lax.scan(layer, (sigma, theta), (d1[:-1], d2t[:-1]))
    k, kdot = pair_expectations(sigma, d1[-1], d2t[-1])
    last = kdot * theta if fix_first_last else kdot * theta + k
    return scale * jnp.sum(k, axis=(1, 2)), scale * jnp.sum(last, axis=(1, 2))


# ---------------------------------------------------------------- blocks, chunks, devices


def _map_row_chunks(chunk_fn, rows_per_step: int, *row_arrays):
    """``lax.map`` of ``chunk_fn(*row_chunks) -> tuple of (r, b2)`` over chunks of ``rows_per_step`` rows
    of the row-first ``row_arrays`` (b1, ...) of a block; returns the tuple of (b1, b2) arrays."""
    b1 = row_arrays[0].shape[0]
    steps = b1 // rows_per_step
    chunks = tuple(a.reshape(steps, rows_per_step, *a.shape[1:]) for a in row_arrays)
    outs = lax.map(lambda args: chunk_fn(*args), chunks)
    return tuple(o.reshape(b1, *o.shape[2:]) for o in outs)


def _over_devices(fn, row_arrays: tuple, replicated: tuple):
    """``fn(*row_arrays, *replicated)``, the rows (axis 0) of ``row_arrays`` split over the devices."""
    devices = jax.devices()
    if len(devices) == 1:
        return fn(*row_arrays, *replicated)
    mesh = Mesh(np.array(devices), ("pairs",))
    in_specs = (P("pairs"),) * len(row_arrays) + (P(),) * len(replicated)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P("pairs"), check_vma=False)(
        *row_arrays, *replicated)


@functools.partial(jax.jit, static_argnames=("rows_per_step", "filter_size", "activation", "fix_first_last",
                                             "readout"))
def _cntk_block(x1, x2, d1, d2, scale, *, rows_per_step, filter_size, activation, fix_first_last, readout):
    """CNTK (nngp, ntk) of a block x1 (b1, ...) x x2 (b2, ...): (b1, b2) each. Vanilla: the offset-0 plane;
    GAP: the sum over all P*Q cyclic offset planes (columns rolled by (u, v)) / (P Q)^2."""
    chunk = functools.partial(_plane_chunk, filter_size=filter_size, activation=activation,
                              fix_first_last=fix_first_last)
    x2, d2 = jnp.moveaxis(x2, 0, -1), jnp.moveaxis(d2, 0, -1)  # columns' pairs in the minor axis
    p_side, q_side = x2.shape[:2]

    def plane(x1, d1, x2, d2, scale, masks):
        return _map_row_chunks(lambda xa, da: chunk(xa, x2, da, d2, scale, masks), rows_per_step, x1, d1)

    def local(x1, d1, x2, d2, scale):
        if readout == "vanilla":
            return plane(x1, d1, x2, d2, scale, None)

        def add_plane(sums, uv):
            u, v = uv // q_side, uv % q_side
            masks = (plane_masks(u, p_side, filter_size=filter_size, dtype=x1.dtype),
                     plane_masks(v, q_side, filter_size=filter_size, dtype=x1.dtype))
            rolled = plane(x1, d1, jnp.roll(x2, (-u, -v), axis=(0, 1)), jnp.roll(d2, (-u, -v), axis=(1, 2)),
                           scale, masks)
            return tuple(a + b for a, b in zip(sums, rolled, strict=True)), None

        zeros = jnp.zeros((x1.shape[0], x2.shape[-1]), x1.dtype)
        sums, _ = lax.scan(add_plane, (zeros, zeros), jnp.arange(p_side * q_side))
        return tuple(a / (p_side * q_side) ** 2 for a in sums)

    return _over_devices(local, (x1, d1), (x2, d2, scale))


def available_memory_bytes(device=None) -> int:
    """Free memory of ``device``: bytes_limit - bytes_in_use on an accelerator, available RAM on CPU."""
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
    """Pairs per block (the module docstring's rule): a quarter of one device's free memory at
    ``_LIVE_ARRAYS`` pair-sized arrays, clipped to [1, ``_MAX_PAIRS_PER_BATCH``], times the device count."""
    per_pair = _LIVE_ARRAYS * entries_per_pair * itemsize
    fit = int(_MEMORY_FRACTION * available_memory_bytes() // per_pair)
    return max(1, min(_MAX_PAIRS_PER_BATCH, fit)) * jax.device_count()


@dataclass(frozen=True)
class _BlockPlan:
    b1: int              # rows per block (a multiple of rows_per_step * devices)
    b2: int              # columns per block
    rows_per_step: int   # rows per lax.map step


def _plan_blocks(n1: int, n2: int, *, pairs: int, entries_per_pair: int, symmetric: bool) -> _BlockPlan:
    """Blocks of about ``pairs`` pairs, square when symmetric. b2 (the vanilla chunk's minor axis) is all
    columns or a multiple of ``_LANES``; rows_per_step keeps a step near ``_CHUNK_ENTRIES`` per array for
    the final b2; b1 is a multiple of rows_per_step * devices."""
    devices = jax.device_count()
    columns = n1 if symmetric else n2
    b2 = max(1, min(columns, math.isqrt(pairs)))
    if _LANES <= b2 < columns:
        b2 -= b2 % _LANES
    if symmetric:
        b = -(-b2 // devices) * devices
        per_device = b // devices
        target = max(1, _CHUNK_ENTRIES // (b * entries_per_pair))
        rows_per_step = max(r for r in range(1, min(target, per_device) + 1) if per_device % r == 0)
        return _BlockPlan(b, b, rows_per_step)
    rows_per_step = max(1, min(_CHUNK_ENTRIES // (b2 * entries_per_pair), n1))
    unit = rows_per_step * devices
    return _BlockPlan(max(unit, min(pairs // b2, n1) // unit * unit), b2, rows_per_step)


# ---------------------------------------------------------------- public: CNTK


def cntk(x1, x2=None, *, depth: int, readout: str = "vanilla", fix_first_last: bool = False,
         filter_size: int = 3, activation="relu", dtype=jnp.float32, batch_size: int | None = None) -> Kernels:
    """Exact CNTK and CNN-GP kernel of Arora et al. 2019 (sec. 4.1 vanilla, 4.2 GAP; module docstring).

    Args:
        x1, x2: images (n1, P, Q, C), (n2, P, Q, C); x2 None = the Gram of x1 (upper triangle computed).
        depth: convolution layers + 1 (the depth of Arora et al.'s tables), >= 2 (>= 3 with
            ``fix_first_last``).
        readout: ``"vanilla"`` (dense readout: trace, offset 0 only) or ``"gap"`` (global average pooling).
        fix_first_last: first and last layer not trained (sec. 4.2; Arora's CNTK-GAP uses True).
        filter_size: odd filter side q.
        activation: registered name, :class:`~ntkrepro.kernels.gaussian.Activation` or JAX callable.
        dtype: float32 (the authors' precision, default) or float64.
        batch_size: pairs per compiled call (None: from free memory, module docstring).
    Returns:
        :class:`~ntkrepro.kernels.fc.Kernels` with ``nngp`` (the CNN-GP kernel) and ``ntk``, (n1, n2).
    """
    depth = _check_depth(depth)
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if fix_first_last and depth < 3:
        raise ValueError("fix_first_last needs depth >= 3: with one convolution layer and both the first "
                         "and the last layer fixed nothing is trained (the NTK is 0)")
    q = check_filter_size(filter_size)
    act = get_activation(activation)
    batch_size = _check_batch_size(batch_size)
    x1, x2 = check_images(x1, x2, dtype=dtype)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    scale = c_sigma(act) / q**2
    d1, d2 = (np.asarray(_cntk_diagonals(jnp.asarray(x), jnp.asarray(scale, x.dtype), num_layers=depth - 1,
                                         filter_size=q, activation=act)) for x in (x1, x2))
    p_side, q_side = x1.shape[1:3]
    entries = p_side * q_side  # per pair and array, both readouts (GAP walks the offset planes in turn)
    pairs = batch_size or auto_pairs_per_batch(entries, x1.dtype.itemsize)
    plan = _plan_blocks(x1.shape[0], x2.shape[0], pairs=pairs, entries_per_pair=entries, symmetric=symmetric)
    block = functools.partial(_cntk_block, rows_per_step=plan.rows_per_step, filter_size=q, activation=act,
                              fix_first_last=bool(fix_first_last), readout=readout)
    scale_array = jnp.asarray(scale, x1.dtype)

    def pair_block(r0, c0):
        a, da = (row_block(v, r0, plan.b1) for v in (x1, d1))
        b, db = (row_block(v, c0, plan.b2) for v in (x2, d2))
        return block(a, b, da, db, scale_array)

    nngp, ntk = blockwise_on_host(pair_block, x1.shape[0], x2.shape[0], plan.b1, plan.b2, symmetric=symmetric)
    finite_kernel("the CNTK", ntk, x1, None if symmetric else x2)
    return Kernels(jnp.asarray(nngp), jnp.asarray(ntk))


# ---------------------------------------------------------------- CDEQ-NTK


def normalization_squares(p_side: int, q_side: int, *, filter_size: int = 3) -> np.ndarray:
    """[S]_ij^2 = [1_q * Xtilde]_ij (Feng & Kolter, CDEQ-NTK initialization): the number of in-range
    pixels of the q x q window at (i, j) (9 inside, 6 on edges, 4 in corners for q = 3)."""
    ones = jnp.ones((p_side, q_side))
    return np.asarray(box_sum(ones, filter_size=filter_size))


def _cdeq_map(s, d1, d2, pix, s_sq, sigma_w2, sigma_u2, *, filter_size, activation):
    """One step of eqs. 17-20 at offset 0: (K, Kdot, next Sigma); s (..., P, Q), d1 / d2 broadcastable."""
    k, kdot = expectations(activation, d1, s, d2)
    big_k = (sigma_w2 * k + sigma_u2 * pix) / s_sq
    return big_k, sigma_w2 * kdot / s_sq, box_sum(big_k, filter_size=filter_size)


def _cdeq_history(x, s_sq, sigma_w2, sigma_u2, *, filter_size, activation, max_iter):
    """Diagonal iterates Sigma(h)(x, x)_{ij,ij}, h = 0..max_iter, of images x (n, P, Q, C): (n, h, P, Q)."""
    pix = jnp.sum(x * x, axis=-1)

    def step(d, _):
        new = _cdeq_map(d, d, d, pix, s_sq, sigma_w2, sigma_u2, filter_size=filter_size,
                        activation=activation)[2]
        return new, new

    d0 = box_sum(pix, filter_size=filter_size) / s_sq
    _, later = lax.scan(step, d0, None, length=max_iter)
    return jnp.concatenate([d0[:, None], jnp.moveaxis(later, 0, 1)], axis=1)


def _until_converged(step, state, max_iter):
    """Iterate ``step(state, it) -> (state, change per pair)`` until every pair's change <= 0 (the step
    folds its tolerance in) or ``max_iter`` steps; returns (state, per-pair iterations, 0 = not converged)."""
    pairs = state[0].shape[0]

    def cond(carry):
        _, iters, it = carry
        return jnp.any(iters == 0) & (it < max_iter)

    def body(carry):
        state, iters, it = carry
        state, excess = step(state, it)
        return state, jnp.where((iters == 0) & (excess <= 0), it + 1, iters), it + 1

    state, iters, it = lax.while_loop(cond, body, (state, jnp.zeros(pairs, jnp.int32), jnp.asarray(0)))
    return state, iters, it


def _cdeq_chunk(x1, h1, x2, h2, s_sq, sigma_w2, sigma_u2, tol, *, filter_size, activation, max_iter):
    """CDEQ-NTK of the pairs x1 (r, ...) x x2 (b, ...), offset 0, with the diagonal iterates h1 (r, H, P, Q),
    h2 (b, H, P, Q) of :func:`_cdeq_history`: (nngp, ntk, sigma iterations, theta iterations), each (r, b)."""
    r, b = x1.shape[0], x2.shape[0]
    shape = (r * b, *x1.shape[1:3])
    pix = _pixel_products(x1, x2).reshape(shape)

    def diagonals(it):
        e1 = jnp.broadcast_to(h1[:, None, it], (r, b, *shape[1:])).reshape(shape)
        e2 = jnp.broadcast_to(h2[None, :, it], (r, b, *shape[1:])).reshape(shape)
        return e1, e2

    def diagonal_change(h, it):
        return jnp.max(jnp.abs(h[:, it + 1] - h[:, it]), axis=(1, 2))

    def mapping(sigma, it):
        e1, e2 = diagonals(it)
        return _cdeq_map(sigma, e1, e2, pix, s_sq, sigma_w2, sigma_u2, filter_size=filter_size,
                         activation=activation)

    def sigma_step(state, it):
        (sigma,) = state
        new = mapping(sigma, it)[2]
        change = jnp.maximum(jnp.max(jnp.abs(new - sigma), axis=(1, 2)),
                             jnp.maximum(diagonal_change(h1, it)[:, None], diagonal_change(h2, it)[None]).ravel())
        return (new,), change - tol

    sigma0 = box_sum(pix, filter_size=filter_size) / s_sq
    (sigma,), sigma_iters, steps = _until_converged(sigma_step, (sigma0,), max_iter)
    big_k, kdot, _ = mapping(sigma, steps)

    def theta_step(state, _):
        (theta,) = state
        new = kdot * box_sum(theta, filter_size=filter_size) + big_k
        change = jnp.max(jnp.abs(new - theta), axis=(1, 2))
        return (new,), change - tol * jnp.maximum(1.0, jnp.max(jnp.abs(new), axis=(1, 2)))

    (theta,), theta_iters, _ = _until_converged(theta_step, (big_k,), max_iter)
    return tuple(v.reshape(r, b) for v in (jnp.sum(big_k, axis=(1, 2)), jnp.sum(theta, axis=(1, 2)),
                                           sigma_iters, theta_iters))


@functools.partial(jax.jit, static_argnames=("rows_per_step", "filter_size", "activation", "max_iter"))
def _cdeq_block(x1, x2, s_sq, sigma_w2, sigma_u2, tol, *, rows_per_step, filter_size, activation, max_iter):
    params = (s_sq, sigma_w2, sigma_u2)
    options = dict(filter_size=filter_size, activation=activation, max_iter=max_iter)

    def local(x1, x2, s_sq, sigma_w2, sigma_u2, tol):
        h1, h2 = (_cdeq_history(x, s_sq, sigma_w2, sigma_u2, **options) for x in (x1, x2))

        def chunk(xa, ha):
            return _cdeq_chunk(xa, ha, x2, h2, s_sq, sigma_w2, sigma_u2, tol, **options)

        return _map_row_chunks(chunk, rows_per_step, x1, h1)

    return _over_devices(local, (x1,), (x2, *params, tol))


def cdeq_ntk(x1, x2=None, *, sigma_w2: float, sigma_u2: float, tol: float = 1e-6, max_iter: int = 50,
             filter_size: int = 3, activation="normalized_relu", norm_tol: float = 1e-4, sum_tol: float = 1e-9,
             dtype=jnp.float32, batch_size: int | None = None) -> CDEQKernels:
    """CDEQ-NTK of Feng & Kolter (Thm. 3, eqs. 15-21, App. B) with the vanilla (trace) readout.

    As the theorem writes it, S enters K and Kdot at their own pixels, inside the next trace operator:
        K(h)_{ij,i'j'} = (sW2 E[s(u)s(v)] + sU2 x_ij.y_i'j') / (S_ij S_i'j'),
        Kdot(h)_{ij,i'j'} = sW2 E[s'(u)s'(v)] / (S_ij S_i'j'),   Sigma(h) = L(K(h)),
    (u, v) ~ N(0, Lambda(h)) built from Sigma(h-1) with the per-pixel diagonals (eq. 17), S_ij^2 = window
    pixel counts (:func:`normalization_squares`). Sigma is iterated to its fixed point Sigma*
    (max |change| <= ``tol``); then Theta* = Kdot* (.) L(Theta*) + K* (eq. 21) by fixed-point iteration
    (a contraction: |Kdot* (.) L(.)|_inf <= sW2 < 1, App. B) to max |change| <= tol * max(1, |Theta*|);
    the value is tr(Theta*). L preserves offsets, so both run on the P*Q offset-0 entries only.
    Note (App. B claims the diagonals of Sigma stay 1): with S inside L they do only away from the
    border; the per-pixel diagonals are used as they are (eq. 17), computed once per image by the same
    fixed-point iteration.

    Args:
        x1, x2: images (n, P, Q, C) whose pixel vectors have unit norm (within ``norm_tol``).
        sigma_w2, sigma_u2: CDEQ-NTK initialization: sum 1 (within ``sum_tol``), sigma_w2 < 1.
        tol: l-inf tolerance of both fixed points; ``max_iter``: iterations at most, else RuntimeError.
        filter_size: odd q; activation: the normalized ReLU sqrt(2) max(0, x) of the paper by default.
        dtype: float32 (default) or float64; batch_size: pairs per call (None: automatic).
    Returns:
        :class:`CDEQKernels`: nngp = tr K*, ntk = tr Theta* (n1, n2), per-pair iteration counts.
    """
    check_variances(sigma_w2=sigma_w2, sigma_u2=sigma_u2)
    if not float(sigma_w2) < 1.0:
        raise ValueError(f"the CDEQ-NTK fixed point needs sigma_w2 < 1 (Thm. 3), got {sigma_w2}")
    if abs(float(sigma_w2) + float(sigma_u2) - 1.0) > sum_tol:
        raise ValueError(f"CDEQ-NTK initialization needs sigma_w2 + sigma_u2 = 1, got "
                         f"{float(sigma_w2) + float(sigma_u2)!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    q = check_filter_size(filter_size)
    act = get_activation(activation)
    batch_size = _check_batch_size(batch_size)
    x1, x2 = check_images(x1, x2, dtype=dtype)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None:
            dev = float(np.max(np.abs(np.linalg.norm(x.astype(np.float64), axis=-1) - 1.0)))
            if dev > norm_tol:
                raise ValueError(f"Thm. 3 needs pixel vectors of unit norm: {name} deviates by up to {dev:.2e} "
                                 f"> norm_tol={norm_tol:g}; divide every pixel vector x_ij by |x_ij| first")
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    dt = x1.dtype
    s_sq = jnp.asarray(normalization_squares(*x1.shape[1:3], filter_size=q), dt)
    params = (s_sq, jnp.asarray(sigma_w2, dt), jnp.asarray(sigma_u2, dt), jnp.asarray(tol, dt))
    entries = x1.shape[1] * x1.shape[2]
    pairs = batch_size or auto_pairs_per_batch(entries, dt.itemsize)
    plan = _plan_blocks(x1.shape[0], x2.shape[0], pairs=pairs, entries_per_pair=entries, symmetric=symmetric)
    block = functools.partial(_cdeq_block, rows_per_step=plan.rows_per_step, filter_size=q, activation=act,
                              max_iter=int(max_iter))

    def pair_block(r0, c0):
        return block(row_block(x1, r0, plan.b1), row_block(x2, c0, plan.b2), *params)

    nngp, ntk, sigma_iters, theta_iters = blockwise_on_host(pair_block, x1.shape[0], x2.shape[0], plan.b1,
                                                            plan.b2, symmetric=symmetric)
    if np.any(sigma_iters == 0) or np.any(theta_iters == 0):
        raise RuntimeError(f"CDEQ-NTK: {int(np.sum(sigma_iters == 0))} Sigma and {int(np.sum(theta_iters == 0))} "
                           f"Theta fixed points did not reach tol={tol:g} in max_iter={max_iter} iterations")
    return CDEQKernels(jnp.asarray(nngp), jnp.asarray(ntk), jnp.asarray(sigma_iters), jnp.asarray(theta_iters))
