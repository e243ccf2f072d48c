"""Exact convolutional kernels: the CNTK and CNN-GP kernel (Arora et al. 2019 sec. 4) as a composition of
pure layer transforms of a kernel state; the CDEQ-NTK (Feng & Kolter) is in :mod:`ntkrepro.kernels.cdeq`.

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

As in Neural Tangents' ``stax``, the recursion is a kernel state (:class:`PlaneKernel`: nngp, ntk)
threaded through pure layer transforms: :func:`conv_input` (Sigma(0), Theta(0)), :func:`activation_layer`
((Sigma, Theta) -> (K, Kdot (.) Theta) under the layer's per-pixel diagonals), :func:`conv_layer`
((K, Kdot (.) Theta) -> ((c/q^2) L(K), (c/q^2) L(Kdot (.) Theta + K))) and :func:`dense_readout`;
:func:`cntk_plane` composes them. ``get=("nngp",)`` threads no ntk: the NNGP alone. The per-pixel
diagonals are the same composition on the x-x kernel's offset-0 map (:func:`cntk_diagonals`).

The vanilla kernel needs only the P*Q offset-0 entries: L preserves offsets, so Sigma and Theta at offset 0
depend only on offset-0 entries and on the per-pixel diagonals (the offset-0 entries of the x-x kernel), and
every trace operator becomes a q x q box sum of a (P, Q) map: O(P Q L) per pair. GAP needs all (P Q)^2
entries, which split the same way into P*Q independent *cyclic offset planes*: plane (u, v) holds M[i, j,
(i+u) mod P, (j+v) mod Q] for all (i, j), i.e. the offset-0 map of x against x' rolled by (u, v), so every
entry appears exactly once. On a plane L is a q x q box sum that must not cross the wrap point (i = P - u, j =
Q - v: there the true neighbour is out of range, 0), a box sum with 0/1 neighbour weights
(:func:`plane_masks`), one pass per layer after the activation (:func:`plane_box_sum`). GAP is then the
vanilla computation over the P*Q planes in groups, each in cache (several planes side by side in the minor
axis, which the elementwise layers need long: :func:`plane_group`, :func:`gap_rows_per_step`; the columns
rolled to a group's planes are windows of the doubled column arrays, :func:`group_planes`), with the mean of
all entries as readout: O((P Q)^2 L) per pair with no (P, Q, P, Q) tensor in memory (2-2.3x the dense 4-D
computation on the project's CPU from 16 images on). Per-image diagonals are computed once per image and
reused for every pair.

Scheduling lives in :mod:`ntkrepro.blocks` (``batch_size`` = pairs per compiled call; None = automatic):
a call evaluates a block of b1 x b2 pairs (:func:`~ntkrepro.blocks.plan_pair_blocks`), ``lax.map`` walks
over its row chunks, the rows are split over the JAX devices; a block holds ``LIVE_ARRAYS`` pair-sized
arrays of P*Q entries (one plane) per pair (:func:`pair_block_bytes`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntkrepro.blocks import (
    CHUNK_ENTRIES,
    LANES,
    auto_pairs_per_block,
    blockwise_on_host,
    kernel_jit,
    map_row_chunks,
    over_devices,
    plan_pair_blocks,
    row_block,
)
from ntkrepro.blocks import pair_block_bytes as _pair_block_bytes
from ntkrepro.checks import finite_kernel, real_array
from ntkrepro.kernels.fc import Kernels, check_dtype, check_each
from ntkrepro.kernels.gaussian import (
    Activation,
    broadcast_expectations,
    c_sigma,
    factored_expectations,
    get_activation,
    variance_factors,
)

READOUTS = ("vanilla", "gap")
OUTPUTS = ("nngp", "ntk")
LIVE_ARRAYS = 12  # pair-sized arrays alive at once in a layer (inputs, temporaries, outputs)
GROUP_LANES = 16 * LANES  # GAP: the widest minor axis of a group of offset planes side by side (plane_group)


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


def check_batch_size(batch_size):
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
    """The trace operator on cyclic offset planes: ``m`` (r, P, Q, b), real or a complex :func:`packed` state
    (each part weighted alike) -> q x q window sums over axes 1 and 2 with the neighbour weights ``ok_i``
    (q, P) and ``ok_j`` (q, Q) of :func:`plane_masks`; weights (q, P, b) and (q, Q, b) give every minor
    position its own plane (planes side by side).

    One zero pad of the input, then nine masked slices of it: a layer is two passes (the optimized HLO), the
    activation fused with that pad and the box sum. XLA does not fuse the pad into the slices that read it;
    without it the activation was fused into the nine slices, nine evaluations per entry (14x slower).
    Separate passes for the padded copy and each axis took 1.4x the time per CNTK-GAP layer (A/B on the
    project's CPU, benchmarks/README)."""
    r = filter_size // 2
    if r == 0:
        return m
    p_side, q_side = m.shape[1:3]
    m = jnp.pad(m, [(0, 0), (r, r), (r, r), (0, 0)])

    def weighted(part, ok, a, shape):  # the centre (a = r) is always in range: weight 1, no multiply
        if a == r:
            return part
        w = ok[a].reshape(shape)
        return lax.complex(jnp.real(part) * w, jnp.imag(part) * w) if jnp.iscomplexobj(part) else part * w

    m = sum(weighted(lax.slice_in_dim(m, a, a + p_side, axis=1), ok_i, a, (1, p_side, 1, -1))
            for a in range(filter_size))
    return sum(weighted(lax.slice_in_dim(m, b, b + q_side, axis=2), ok_j, b, (1, 1, q_side, -1))
               for b in range(filter_size))


# ---------------------------------------------------------------- Gaussian expectations

def expectations(activation: Activation, s11, s12, s22):
    """(E[phi(u)phi(v)], E[phi'(u)phi'(v)]) under [[s11, s12], [s12, s22]], elementwise (Arora eqs. 15-16),
    the per-pixel variances s11, s22 broadcast against the pairs s12: :func:`.gaussian.broadcast_expectations`
    (for ReLU-like activations one square root per pair entry, Arora eqs. 19-20)."""
    return broadcast_expectations(activation, s11, s12, s22)


# ---------------------------------------------------------------- the kernel state and the layers


@functools.partial(jax.tree_util.register_dataclass, data_fields=["nngp", "ntk"], meta_fields=[])
@dataclass(frozen=True)
class PlaneKernel:
    """The kernel state on one plane of pairs (the offset-0 plane or a cyclic offset plane, module
    docstring): ``nngp`` = Sigma, ``ntk`` = Theta (after :func:`activation_layer`: K and Kdot (.) Theta),
    arrays of the plane's entries with any batch axes; ``ntk`` None: the NNGP alone."""

    nngp: jax.Array
    ntk: jax.Array | None = None

    def replace(self, **changes) -> PlaneKernel:
        return dataclasses.replace(self, **changes)


def packed(kernel: PlaneKernel):
    """The state as one array, nngp + i ntk (nngp alone without ntk), so that linear maps (trace, readout
    sums) take one pass for both parts and XLA fuses the activation's closed form into that pass once: with
    two real outputs (the parts stacked on an axis) its CPU backend emits a loop per part, each evaluating the
    closed form (a CNTK-GAP layer 1.2x slower; benchmarks/README)."""
    return kernel.nngp if kernel.ntk is None else lax.complex(kernel.nngp, kernel.ntk)


def unpacked(state) -> PlaneKernel:
    """The inverse of :func:`packed`."""
    return PlaneKernel(jnp.real(state), jnp.imag(state)) if jnp.iscomplexobj(state) else PlaneKernel(state)


def conv_input(products, *, trace, trained: bool, ntk: bool = True) -> PlaneKernel:
    """The first convolution, on the inputs: Sigma(0) = L(sum_c x_c x'_c) (``products``: the sums per
    pixel pair; ``trace``: the plane's trace operator), Theta(0) = Sigma(0) if the layer is trained, else 0
    (Arora sec. 4.1-4.2). ``ntk`` False: no Theta."""
    sigma = trace(products)
    if not ntk:
        return PlaneKernel(sigma)
    return PlaneKernel(sigma, sigma if trained else jnp.zeros_like(sigma))


def activation_layer(kernel: PlaneKernel, factors1, factors2, *, activation: Activation) -> PlaneKernel:
    """phi (Arora eqs. 15-16): Sigma -> K = E[phi(u) phi(v)], Theta -> Kdot (.) Theta, Kdot = E[phi'(u) phi'(v)],
    (u, v) ~ N(0, [[cov1, Sigma], [Sigma, cov2]]) with the per-pixel diagonals cov1, cov2 of the layer's input
    given as their :func:`~ntkrepro.kernels.gaussian.variance_factors` ``factors1``, ``factors2`` (broadcast
    against Sigma)."""
    k, kdot = factored_expectations(activation, factors1, kernel.nngp, factors2)
    return kernel.replace(nngp=k, ntk=None if kernel.ntk is None else kdot * kernel.ntk)


def conv_layer(kernel: PlaneKernel, *, trace, scale) -> PlaneKernel:
    """A trained convolution after an activation (Arora sec. 4.1): K -> Sigma = (c/q^2) L(K),
    Kdot (.) Theta -> Theta = (c/q^2) L(Kdot (.) Theta + K); ``scale`` = c/q^2. L runs once on the
    :func:`packed` state."""
    ntk = None if kernel.ntk is None else scale * (kernel.ntk + kernel.nngp)
    return unpacked(trace(packed(PlaneKernel(scale * kernel.nngp, ntk))))


def dense_readout(kernel: PlaneKernel, *, scale, trained: bool, axes) -> PlaneKernel:
    """The last layer after an activation, without trace operator (the authors' code): nngp = (c/q^2) sum K,
    ntk = (c/q^2) sum(Kdot (.) Theta + K), without the K term if the readout is not trained, summed over the
    plane's pixel ``axes`` (one sum of the :func:`packed` state).

    With an axis not summed (a block's rows), one zero entry is appended on it and cut from the sums: XLA then
    evaluates the activation into that padded copy in one vectorized pass (as in :func:`plane_box_sum`) and
    sums the copy; fused into the tree of sums, its CPU backend emitted scalar code for the complex state
    (CNTK-GAP depth 6 1.6x slower, the vanilla CNTK 1.7x; benchmarks/README)."""
    ntk = None if kernel.ntk is None else scale * (kernel.ntk + kernel.nngp if trained else kernel.ntk)
    state = packed(PlaneKernel(scale * kernel.nngp, ntk))
    summed = {a % state.ndim for a in axes}
    kept = [a for a in range(state.ndim) if a not in summed]
    if not kept:
        return unpacked(plane_sum(state, axes=axes))
    state = jnp.pad(state, [(0, 1) if a == kept[0] else (0, 0) for a in range(state.ndim)])
    return unpacked(lax.slice_in_dim(plane_sum(state, axes=axes), 0, state.shape[kept[0]] - 1, axis=0))


def plane_sum(m, *, axes):
    """Sum of ``m`` over ``axes`` as a tree of halves (an odd one out carried to the next round).

    Elementwise adds of slices, which XLA's CPU backend fuses into vectorized loops with the activation
    before them; ``jnp.sum`` evaluates that activation inside a reduction loop instead: the readout took ~40%
    of a CNTK-V Gram (n = 200, depth 6, 32 x 32; 0.42 -> 0.29 s wall with the tree on the 2-core CPU).
    """
    axes = tuple(a % m.ndim for a in axes)
    for axis in axes:
        while m.shape[axis] > 1:
            half = m.shape[axis] // 2
            head = lax.slice_in_dim(m, 0, half, axis=axis) + lax.slice_in_dim(m, half, 2 * half, axis=axis)
            if m.shape[axis] % 2:
                head = jnp.concatenate([head, lax.slice_in_dim(m, 2 * half, 2 * half + 1, axis=axis)], axis=axis)
            m = head
    return jnp.squeeze(m, axis=axes)


def cntk_plane(products, layer_factors, num_layers: int, scale, *, trace, activation: Activation,
               fix_first_last: bool, ntk: bool = True, axes=(1, 2)) -> PlaneKernel:
    """The CNTK sums of one plane as the composition conv_input -> (activation_layer -> conv_layer) x (L - 1)
    -> activation_layer -> dense_readout (module docstring; the hidden layers in one loop).

    Args:
        products: the plane's pixel products sum_c x_c x'_c; trace: the plane's trace operator.
        layer_factors: h -> the :func:`~ntkrepro.kernels.gaussian.variance_factors` (factors1, factors2) of
            the per-pixel diagonals Sigma(h)(x, x) and Sigma(h)(x', x') of layer h's input, broadcastable
            against ``products``, for h = 0..``num_layers`` - 1 (an integer or a traced index).
        scale: c/q^2; fix_first_last: first and last layer not trained; ntk: False for the NNGP alone.
    Returns:
        :class:`PlaneKernel` of the readout sums over ``axes``.
    """
    kernel = conv_input(products, trace=trace, trained=not fix_first_last, ntk=ntk)

    def hidden(h, state):  # the state carried :func:`packed`: one buffer, one fused pass per layer
        kernel = activation_layer(unpacked(state), *layer_factors(h), activation=activation)
        return packed(conv_layer(kernel, trace=trace, scale=scale))

    # The loop indexes the factors itself: as a scan's xs they were copied (twice) for every row chunk of a
    # block. One hidden layer (depth 3): XLA inlines a loop of one trip and fuses it with its neighbours into
    # code 2-3x slower than the loop body; a trip count behind an optimization barrier is not read at compile
    # time, so the loop stays a loop.
    hidden_layers = num_layers - 1
    trips = lax.optimization_barrier(jnp.int32(1)) if hidden_layers == 1 else hidden_layers
    state = lax.fori_loop(0, trips, hidden, packed(kernel))
    kernel = activation_layer(unpacked(state), *layer_factors(hidden_layers), activation=activation)
    return dense_readout(kernel, scale=scale, trained=not fix_first_last, axes=axes)


# ---------------------------------------------------------------- per-image diagonals


@functools.partial(kernel_jit, static_argnames=("num_layers", "filter_size", "activation"))
def _cntk_diagonals(x, scale, *, num_layers, filter_size, activation):
    """The layers on the x-x kernel's offset-0 map, its own diagonal: (n, num_layers, P, Q)."""
    trace = functools.partial(box_sum, filter_size=filter_size)
    d = conv_input(jnp.sum(x * x, axis=-1), trace=trace, trained=True, ntk=False).nngp

    def layer(d, _):
        factors = variance_factors(activation, d)
        kernel = activation_layer(PlaneKernel(d), factors, factors, activation=activation)
        return conv_layer(kernel, trace=trace, scale=scale).nngp, d

    _, stacked = lax.scan(layer, d, None, length=num_layers)
    return jnp.moveaxis(stacked, 0, 1)


def cntk_diagonals(x, *, depth: int, filter_size: int = 3, activation="relu", dtype=jnp.float32):
    """Per-pixel diagonals Sigma(h)(x, x)_{ij,ij}, h = 0..depth-2, of every image: (n, depth - 1, P, Q)."""
    depth = _check_depth(depth)
    q = check_filter_size(filter_size)
    act = get_activation(activation)
    x, _ = check_images(x, dtype=dtype)
    return _cntk_diagonals(jnp.asarray(x), jnp.asarray(layer_scale(act, q), x.dtype), num_layers=depth - 1,
                           filter_size=q, activation=act)


# ---------------------------------------------------------------- one block of pairs


def pixel_products(x1, x2t):
    """Offset-0 K(0) with the columns' pairs in the minor axis: sum_c x1[a, i, j, c] x2t[i, j, c, b] for rows
    x1 (r, P, Q, C) and columns x2t (P, Q, C, b), shape (r, P, Q, b).

    A dot batched over the P*Q pixels. A fused multiply-reduce (2x an einsum's speed on older XLA) ran as scalar
    code inside the row map: it read the rows through the map's dynamic slice, reloading and clamping the index
    per element; the dot takes 1/3 of its time there (a 16 x 16 GAP block at depth 6 12% faster, CNTK-V alike).
    Full precision: a GPU's default float32 dot rounds its inputs to TF32.
    """
    return jnp.einsum("rijc,ijcb->rijb", x1, x2t, precision=lax.Precision.HIGHEST)


def _plane_chunk(x1, x2t, f1, f2t, scale, masks, *, filter_size, activation, fix_first_last, outputs):
    """CNTK sums over one offset plane: x1 (r, P, Q, C) with the :func:`~ntkrepro.kernels.gaussian.variance_factors`
    ``f1`` of its per-pixel diagonals (each (r, L, P, Q)) against the columns x2t (P, Q, C, b) with theirs,
    ``f2t`` (each (L, P, Q, b)), rolled to the plane -> the ``outputs`` (nngp[, ntk]) sums (r, b), times c/q^2.
    ``masks`` None: offset 0 (plain box sums), else (ok_i, ok_j) of :func:`plane_masks`. Pair arrays are
    (r, P, Q, b): the columns' pairs in the minor axis, so the box sums shift whole vectors and the
    expectations vectorize over pairs (3x the throughput of (r, b, P, Q)).
    """
    products = pixel_products(x1, x2t)

    def layer_factors(h):  # rows' (r, P, Q, 1) and columns' (1, P, Q, b), indexed in place (no transposed copy)
        return tuple(f[:, h, ..., None] for f in f1), tuple(f[None, h] for f in f2t)

    if masks is None:
        trace = functools.partial(box_sum, filter_size=filter_size, axes=(1, 2))
    else:
        trace = functools.partial(plane_box_sum, ok_i=masks[0], ok_j=masks[1], filter_size=filter_size)
    kernel = cntk_plane(products, layer_factors, f2t[0].shape[0], scale, trace=trace, activation=activation,
                        fix_first_last=fix_first_last, ntk="ntk" in outputs)
    return tuple(getattr(kernel, name) for name in outputs)


def plane_group(p_side: int, q_side: int, columns: int, *, rows: int) -> int:
    """Offset planes a GAP block evaluates at once, side by side in the minor axis: the largest divisor of
    P*Q (the planes, also the entries of one plane) that divides Q or is a multiple of it (a group is then a
    run of whole plane rows or part of one, :func:`group_planes`) with group * columns <= ``GROUP_LANES``
    and a step's ``rows`` x P*Q x group x columns entries within ``CHUNK_ENTRIES``; 1 if none.

    A long minor axis is what the elementwise layers need on the CPU: 16 x 16 images of 32 x 32 at depth 6,
    one plane (16 lanes) per step took 5.6 s, 8 planes side by side 3.5 s, 16 planes 3.2 s; 32 (512 lanes,
    out of cache) 4.3 s."""
    planes = p_side * q_side
    most = min(GROUP_LANES // columns, CHUNK_ENTRIES // (rows * planes * columns))
    return max([g for g in range(1, min(planes, most) + 1)
                if planes % g == 0 and (q_side % g == 0 or g % q_side == 0)], default=1)


def gap_rows_per_step(p_side: int, q_side: int, columns: int, rows: int) -> int:
    """Rows per ``lax.map`` step of a GAP block with ``rows`` rows per device: among the divisors of
    ``rows`` whose steps stay within ``CHUNK_ENTRIES`` per array, the one with the widest minor axis
    (:func:`plane_group` x columns), then the most rows; one row per step only if no other divisor fits (a
    step of one row ran 3x slower)."""
    def width(r):
        return plane_group(p_side, q_side, columns, rows=r) * columns

    fits = [r for r in range(1, rows + 1) if rows % r == 0 and r * p_side * q_side * width(r) <= CHUNK_ENTRIES]
    candidates = [r for r in fits if r > 1] or [1]
    return max(candidates, key=lambda r: (width(r), r))


def block_rows_per_step(plan, *, readout: str, p_side: int, q_side: int) -> int:
    """Rows per ``lax.map`` step of the blocks of a :class:`~ntkrepro.blocks.PairBlockPlan` (what :func:`cntk`
    passes to :func:`cntk_block`): the plan's for the vanilla readout, :func:`gap_rows_per_step` for GAP."""
    if readout == "vanilla":
        return plan.rows_per_step
    return gap_rows_per_step(p_side, q_side, plan.b2, plan.b1 // jax.device_count())


def group_planes(a, axes, first, group: int, p_side: int, q_side: int):
    """The columns' arrays ``a`` (..., b), doubled along ``axes`` (2P, 2Q), rolled to the offset planes
    first .. first + group - 1 (plane u * Q + v rolls by (u, v)) and set side by side: (..., group b) with
    P, Q on ``axes``. A group is a run of plane rows (group a multiple of Q) or part of one, so one dynamic
    window of the doubled array holds every plane, and one gather with static indices (i + u, j + v) takes
    them all (a gather of rolls cost ~8% of a small GAP Gram; static slices stacked, 4x this gather's time:
    XLA materialized each slice, then their concatenation)."""
    rows, cols = max(1, group // q_side), min(group, q_side)
    window = lax.dynamic_slice_in_dim(a, first // q_side, p_side + rows - 1, axis=axes[0])
    window = lax.dynamic_slice_in_dim(window, first % q_side, q_side + cols - 1, axis=axes[1])
    i = np.arange(p_side)[:, None, None, None] + np.arange(rows)[None, None, :, None]
    j = np.arange(q_side)[None, :, None, None] + np.arange(cols)[None, None, None, :]
    planes = window[(slice(None),) * axes[0] + (i, j)]  # (..., P, Q, rows, cols, ..., b)
    planes = jnp.moveaxis(planes, (axes[0] + 2, axes[0] + 3), (-3, -2))
    return planes.reshape(*planes.shape[:-3], group * a.shape[-1])


@functools.partial(kernel_jit, static_argnames=("rows_per_step", "filter_size", "activation", "fix_first_last",
                                             "readout", "outputs"))
def _cntk_block(x1, x2, d1, d2, scale, *, rows_per_step, filter_size, activation, fix_first_last, readout,
                outputs=OUTPUTS):
    """CNTK ``outputs`` of a block x1 (b1, ...) x x2 (b2, ...): (b1, b2) each. Vanilla: the offset-0 plane;
    GAP: the sum over all P*Q cyclic offset planes (columns rolled by (u, v)) / (P Q)^2."""
    chunk = functools.partial(_plane_chunk, filter_size=filter_size, activation=activation,
                              fix_first_last=fix_first_last, outputs=outputs)
    x2, d2 = jnp.moveaxis(x2, 0, -1), jnp.moveaxis(d2, 0, -1)  # columns' pairs in the minor axis
    p_side, q_side = x2.shape[:2]

    def plane(x1, f1, x2, f2, scale, masks):
        return map_row_chunks(lambda xa, *fa: chunk(xa, x2, fa, f2, scale, masks), rows_per_step, x1, *f1)

    def local(x1, d1, x2, d2, scale):
        # the diagonals' roots (ReLU-like activations), once per block: the layers only multiply by them
        f1, f2 = variance_factors(activation, d1), variance_factors(activation, d2)
        if readout == "vanilla":
            return plane(x1, f1, x2, f2, scale, None)
        columns = x2.shape[-1]
        group = plane_group(p_side, q_side, columns, rows=rows_per_step)
        x2d = jnp.tile(x2, (2, 2, 1, 1))  # every cyclic roll is a window
        f2d = tuple(jnp.tile(f, (1, 2, 2, 1)) for f in f2)
        firsts = np.arange(0, p_side * q_side, group)
        # each group's neighbour weights (q, P, group b), (q, Q, group b) (one plane: (q, P, 1)), computed once
        # for all groups, so that no layer evaluates them inside its fusions
        uv = firsts[:, None] + np.arange(group)

        def group_masks(shifts, size):  # (groups, group) shifts -> (groups, q, size, group b or 1)
            masks = functools.partial(plane_masks, size=size, filter_size=filter_size, dtype=x1.dtype)
            ok = jnp.moveaxis(jax.vmap(jax.vmap(masks))(shifts), 1, -1)
            return jnp.repeat(ok, columns if group > 1 else 1, axis=-1)

        ok_i, ok_j = group_masks(uv // q_side, p_side), group_masks(uv % q_side, q_side)

        def add_planes(sums, group_args):
            first, masks_i, masks_j = group_args
            found = plane(x1, f1, group_planes(x2d, (0, 1), first, group, p_side, q_side),
                          tuple(group_planes(f, (1, 2), first, group, p_side, q_side) for f in f2d), scale,
                          (masks_i, masks_j))
            return tuple(a + f.reshape(-1, group, columns).sum(axis=1) for a, f in zip(sums, found, strict=True)), None

        zeros = (jnp.zeros((x1.shape[0], columns), x1.dtype),) * len(outputs)
        sums, _ = lax.scan(add_planes, zeros, (jnp.asarray(firsts), ok_i, ok_j))
        return tuple(a / (p_side * q_side) ** 2 for a in sums)

    return over_devices(local, (x1, d1), (x2, d2, scale))


@functools.lru_cache(maxsize=64)
def layer_scale(activation: Activation, filter_size: int) -> float:
    """c_sigma / q^2: the weight variance of a convolution layer (Arora eq. 6) over its q^2 taps (a number,
    also when first asked for inside a trace: :func:`cntk_block` under ``jit``)."""
    with jax.ensure_compile_time_eval():
        return c_sigma(activation) / filter_size**2


def cntk_block(x1, x2, d1, d2, *, readout: str = "vanilla", fix_first_last: bool = False, filter_size: int = 3,
               activation="relu", get=OUTPUTS, rows_per_step: int = 1) -> tuple:
    """One block of pairs, the unit :func:`cntk` evaluates a Gram with (its block plan:
    :func:`~ntkrepro.blocks.plan_pair_blocks` gives b1, b2 and ``rows_per_step``).

    Args:
        x1, x2: images (b1, P, Q, C), (b2, P, Q, C), checked upstream (:func:`check_images`).
        d1, d2: their per-pixel diagonals (b1, L, P, Q), (b2, L, P, Q) (:func:`cntk_diagonals`; L = depth - 1).
        rows_per_step: rows per ``lax.map`` step, a divisor of b1 / device count.
        readout, fix_first_last, filter_size, activation, get: as :func:`cntk`.
    Returns:
        a tuple of (b1, b2) arrays: (nngp, ntk), or (nngp,) for ``get="nngp"``.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    act = get_activation(activation)
    q = check_filter_size(filter_size)
    rows = x1.shape[0] // jax.device_count()
    if isinstance(rows_per_step, bool) or not isinstance(rows_per_step, int) or rows_per_step < 1 or \
            x1.shape[0] % jax.device_count() or rows % rows_per_step:
        raise ValueError(f"rows_per_step must divide the block's rows per device ({x1.shape[0]} rows, "
                         f"{jax.device_count()} devices), got {rows_per_step!r}")
    return _cntk_block(x1, x2, d1, d2, jnp.asarray(layer_scale(act, q), x1.dtype), rows_per_step=rows_per_step,
                       filter_size=q, activation=act, fix_first_last=bool(fix_first_last), readout=readout,
                       outputs=check_outputs(get))


def pair_block_bytes(pairs: int, entries_per_pair: int, *, itemsize: int = 4) -> int:
    """Bytes a block of ``pairs`` image pairs of the convolutional kernels (CNTK, CDEQ-NTK) holds at once:
    ``LIVE_ARRAYS`` arrays of ``entries_per_pair`` = P*Q entries (one plane) per pair."""
    return _pair_block_bytes(pairs, entries_per_pair, itemsize=itemsize, live_arrays=LIVE_ARRAYS)


def auto_pairs_per_batch(entries_per_pair: int, itemsize: int) -> int:
    """Pairs per block from free memory at :func:`pair_block_bytes` per pair (:mod:`ntkrepro.blocks`)."""
    return auto_pairs_per_block(entries_per_pair, itemsize, live_arrays=LIVE_ARRAYS)


def check_outputs(get) -> tuple[str, ...]:
    """``get`` ("nngp", "ntk", or a tuple of them) as the tuple of outputs to compute, in OUTPUTS order."""
    names = (get,) if isinstance(get, str) else tuple(get) if isinstance(get, (tuple, list)) else None
    if not names or any(name not in OUTPUTS for name in names):
        raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
    return ("nngp", "ntk") if "ntk" in names else ("nngp",)  # the NTK recursion needs the NNGP's


# ---------------------------------------------------------------- public: CNTK


def cntk(x1, x2=None, *, depth: int, readout: str = "vanilla", fix_first_last: bool = False,
         filter_size: int = 3, activation="relu", dtype=jnp.float32, batch_size: int | None = None,
         get=OUTPUTS) -> Kernels:
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
        batch_size: pairs per compiled call (None: from free memory, :mod:`ntkrepro.blocks`).
        get: ``"nngp"`` / ``("nngp",)``: the NNGP alone (no Theta recursion, ``ntk`` None); default both.
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
    batch_size = check_batch_size(batch_size)
    outputs = check_outputs(get)
    x1, x2 = check_images(x1, x2, dtype=dtype)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    scale = jnp.asarray(layer_scale(act, q), x1.dtype)
    d1, d2 = (np.asarray(_cntk_diagonals(jnp.asarray(x), scale, num_layers=depth - 1, filter_size=q, activation=act))
              for x in (x1, x2))
    p_side, q_side = x1.shape[1:3]
    entries = p_side * q_side  # per pair and array, both readouts (GAP walks the offset planes in turn)
    pairs = batch_size or auto_pairs_per_batch(entries, x1.dtype.itemsize)
    plan = plan_pair_blocks(x1.shape[0], x2.shape[0], pairs=pairs, entries_per_pair=entries, symmetric=symmetric)
    block = functools.partial(cntk_block, readout=readout, fix_first_last=fix_first_last, filter_size=q,
                              activation=act, get=outputs,
                              rows_per_step=block_rows_per_step(plan, readout=readout, p_side=p_side, q_side=q_side))

    def pair_block(r0, c0):
        a, da = (row_block(v, r0, plan.b1) for v in (x1, d1))
        b, db = (row_block(v, c0, plan.b2) for v in (x2, d2))
        return block(a, b, da, db)

    values = blockwise_on_host(pair_block, x1.shape[0], x2.shape[0], plan.b1, plan.b2, symmetric=symmetric)
    finite_kernel("the CNTK", values[-1], x1, None if symmetric else x2)
    kernels = dict(zip(outputs, (jnp.asarray(v) for v in values), strict=True))
    return Kernels(kernels["nngp"], kernels.get("ntk"))
