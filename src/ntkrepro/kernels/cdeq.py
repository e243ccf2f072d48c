"""CDEQ-NTK: the NTK of convolutional deep equilibrium models (Feng & Kolter, Thm. 3, eqs. 15-21, App. B),
with the vanilla (trace) readout, on the offset-0 plane of :mod:`ntkrepro.kernels.conv` (its trace
operator, Gaussian expectations, input checks and pair blocks of :mod:`ntkrepro.blocks`).

Sigma is iterated to its fixed point Sigma* at every pixel pair, then Theta* = Kdot* (.) L(Theta*) + K*
(eq. 21) by fixed-point iteration; the value is tr Theta*, which needs only offset 0 (see :func:`cdeq_ntk`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntkrepro.blocks import blockwise_on_host, kernel_jit, map_row_chunks, over_devices, plan_pair_blocks, row_block
from ntkrepro.kernels.conv import (
    auto_pairs_per_batch,
    box_sum,
    check_batch_size,
    check_filter_size,
    check_images,
    expectations,
    pixel_products,
)
from ntkrepro.kernels.fc import check_variances
from ntkrepro.kernels.gaussian import get_activation


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


def normalization_squares(p_side: int, q_side: int, *, filter_size: int = 3) -> np.ndarray:
    """[S]_ij^2 = [1_q * Xtilde]_ij (Feng & Kolter, CDEQ-NTK initialization): the number of in-range
    pixels of the q x q window at (i, j) (9 inside, 6 on edges, 4 in corners for q = 3)."""
    ones = jnp.ones((p_side, q_side))
    return np.asarray(box_sum(ones, filter_size=filter_size))


def _cdeq_map(s, d1, d2, pix, s_sq, sigma_w2, sigma_u2, *, filter_size, activation, axes=(-2, -1)):
    """One step of eqs. 17-20 at offset 0: (K, Kdot, next Sigma); s, pix and s_sq with the pixels (P, Q) on
    ``axes``, d1 / d2 broadcastable to s."""
    k, kdot = expectations(activation, d1, s, d2)
    big_k = (sigma_w2 * k + sigma_u2 * pix) / s_sq
    return big_k, sigma_w2 * kdot / s_sq, box_sum(big_k, filter_size=filter_size, axes=axes)


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


def _until_converged(step, state, pairs_shape, max_iter):
    """Iterate ``step(state, it) -> (state, change per pair)`` until every pair's change <= 0 (the step
    folds its tolerance in) or ``max_iter`` steps; returns (state, per-pair iterations, 0 = not converged)."""

    def cond(carry):
        _, iters, it = carry
        return jnp.any(iters == 0) & (it < max_iter)

    def body(carry):
        state, iters, it = carry
        state, excess = step(state, it)
        return state, jnp.where((iters == 0) & (excess <= 0), it + 1, iters), it + 1

    state, iters, it = lax.while_loop(cond, body, (state, jnp.zeros(pairs_shape, jnp.int32), jnp.asarray(0)))
    return state, iters, it


def _cdeq_chunk(x1, h1, x2t, h2t, s_sq, sigma_w2, sigma_u2, tol, *, filter_size, activation, max_iter):
    """CDEQ-NTK of the pairs x1 (r, P, Q, C) x the columns x2t (P, Q, C, b), offset 0, with the diagonal
    iterates h1 (r, H, P, Q), h2t (H, P, Q, b) of :func:`_cdeq_history`: (nngp, ntk, sigma iterations, theta
    iterations), each (r, b). Pair arrays are (r, P, Q, b), the columns' pairs in the minor axis, as
    :func:`ntkrepro.kernels.conv._plane_chunk`'s: the box sums shift whole vectors and the expectations
    vectorize over pairs (2.4-2.9x the pairs per second of (r b, P, Q) on a 2-core CPU)."""
    pix = pixel_products(x1, x2t)
    s_sq = s_sq[..., None]
    pixels = (1, 2)
    pairs_shape = (x1.shape[0], x2t.shape[-1])

    def diagonal_change(it):
        c1 = jnp.max(jnp.abs(h1[:, it + 1] - h1[:, it]), axis=(1, 2))
        c2 = jnp.max(jnp.abs(h2t[it + 1] - h2t[it]), axis=(0, 1))
        return jnp.maximum(c1[:, None], c2[None])

    def mapping(sigma, it):
        return _cdeq_map(sigma, h1[:, it][..., None], h2t[it][None], pix, s_sq, sigma_w2, sigma_u2,
                         filter_size=filter_size, activation=activation, axes=pixels)

    def sigma_step(state, it):
        (sigma,) = state
        new = mapping(sigma, it)[2]
        change = jnp.maximum(jnp.max(jnp.abs(new - sigma), axis=pixels), diagonal_change(it))
        return (new,), change - tol

    sigma0 = box_sum(pix, filter_size=filter_size, axes=pixels) / s_sq
    (sigma,), sigma_iters, steps = _until_converged(sigma_step, (sigma0,), pairs_shape, max_iter)
    big_k, kdot, _ = mapping(sigma, steps)

    def theta_step(state, _):
        (theta,) = state
        new = kdot * box_sum(theta, filter_size=filter_size, axes=pixels) + big_k
        change = jnp.max(jnp.abs(new - theta), axis=pixels)
        return (new,), change - tol * jnp.maximum(1.0, jnp.max(jnp.abs(new), axis=pixels))

    (theta,), theta_iters, _ = _until_converged(theta_step, (big_k,), pairs_shape, max_iter)
    return jnp.sum(big_k, axis=pixels), jnp.sum(theta, axis=pixels), sigma_iters, theta_iters


@functools.partial(kernel_jit, static_argnames=("rows_per_step", "filter_size", "activation", "max_iter"))
def _cdeq_block(x1, x2, s_sq, sigma_w2, sigma_u2, tol, *, rows_per_step, filter_size, activation, max_iter):
    params = (s_sq, sigma_w2, sigma_u2)
    options = dict(filter_size=filter_size, activation=activation, max_iter=max_iter)

    def local(x1, x2, s_sq, sigma_w2, sigma_u2, tol):
        h1, h2 = (_cdeq_history(x, s_sq, sigma_w2, sigma_u2, **options) for x in (x1, x2))
        x2t, h2t = jnp.moveaxis(x2, 0, -1), jnp.moveaxis(h2, 0, -1)  # columns' pairs in the minor axis

        def chunk(xa, ha):
            return _cdeq_chunk(xa, ha, x2t, h2t, s_sq, sigma_w2, sigma_u2, tol, **options)

        return map_row_chunks(chunk, rows_per_step, x1, h1)

    return over_devices(local, (x1,), (x2, *params, tol))


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
    batch_size = check_batch_size(batch_size)
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
    plan = plan_pair_blocks(x1.shape[0], x2.shape[0], pairs=pairs, entries_per_pair=entries, symmetric=symmetric)
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
