"""NNGP and NTK of fully connected networks at infinite width, every depth in one pass.

Convention (Hayou et al. 2020 eq. 10 and Lemma 2; Lee et al. 2018), NTK parameterization,
``depth`` = number of weight layers including the readout:
    Sigma_1 = sigma_b2 + sigma_w2 x.x'/d,          K_1 = Sigma_1,
    Sigma_l = sigma_b2 + sigma_w2 E[phi(u)phi(v)],  Sigmadot_l = sigma_w2 E[phi'(u)phi'(v)],
    K_l = Sigmadot_l K_{l-1} + Sigma_l,             (u, v) ~ N(0, Sigma_{l-1} on {x, x'}).
``nngp`` is Sigma_depth (the covariance of the output), ``ntk`` is K_depth.

Converters to the other conventions of the papers live here: :func:`jacot_to_fc` (Jacot et al.
2018, beta) and :func:`arora_to_fc` (Arora et al. 2019 eqs. 6-7, c_sigma).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntkrepro.blocks import blockwise, kernel_jit
from ntkrepro.checks import finite_kernel, real_array
from ntkrepro.kernels.gaussian import Activation, broadcast_expectations, c_sigma, get_activation


@functools.partial(jax.tree_util.register_dataclass, data_fields=["nngp", "ntk"], meta_fields=[])
@dataclass(frozen=True)
class Kernels:
    """NNGP and NTK Gram matrices, shape (n1, n2), or (depth, n1, n2) for all depths 1..depth."""

    nngp: jax.Array
    ntk: jax.Array


# ---------------------------------------------------------------- input checks (before any compute)


def _is_traced(a) -> bool:
    return isinstance(a, jax.core.Tracer)


def default_dtype():
    """float64 when JAX's x64 mode is on (ntkrepro turns it on at import), else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def check_dtype(dtype):
    """``dtype`` as a numpy dtype, float32 or float64 (the dtypes the kernels compute in)."""
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return jnp.dtype(dtype)


def check_each(x1, x2, check_one):
    """``(check_one("x1", x1), check_one("x2", x2))``, x2 None staying None: one validation for both sets."""
    return check_one("x1", x1), None if x2 is None else check_one("x2", x2)


def check_inputs(x1, x2=None, *, dtype=None):
    """Validate (n, d) inputs: 2-D, non-empty, same feature dim, finite. Returns them as arrays of dtype."""
    dtype = check_dtype(dtype or default_dtype())

    def check_one(name, x):
        x = real_array(name, x)
        shape = jnp.shape(x)
        if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {shape}")
        if not _is_traced(x) and not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"{name} contains NaN or inf")
        return jnp.asarray(x, dtype)

    x1, x2 = check_each(x1, x2, check_one)
    if x2 is not None and x1.shape[1] != x2.shape[1]:
        raise ValueError(f"feature dims differ: x1 has {x1.shape[1]}, x2 has {x2.shape[1]}")
    return x1, x2


def check_variances(**variances) -> None:
    """Every variance must be a finite number >= 0."""
    for name, v in variances.items():
        if _is_traced(v):
            continue
        value = float(v)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite variance >= 0, got {v}")


def check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    return int(depth)


def tile_gram(xa, xb, same):
    """(xa.xa, xb.xb, xa.xb^T) in full float precision; on a diagonal block (``same``) the diagonal of
    the cross term is xa.xa bit for bit (an input paired with itself has correlation exactly 1)."""
    gram = jnp.matmul(xa, xb.T, precision=lax.Precision.HIGHEST)
    da, db = jnp.sum(xa * xa, axis=-1), jnp.sum(xb * xb, axis=-1)
    eye = jnp.eye(gram.shape[0], gram.shape[1], dtype=bool)
    return da, db, jnp.where(same & eye, da[:, None], gram)


def layer_sweep(layer, init, *, all_depths: bool, length: int | None = None, xs=None) -> Kernels:
    """``lax.scan`` of ``layer(carry, x) -> carry`` over the layers of a tile, the carry ending with
    (nngp, ntk): the last layer's Kernels, or every depth's along a leading axis (``init``'s as depth 1)."""

    def step(carry, x):
        carry = layer(carry, x)
        return carry, carry[-2:] if all_depths else None

    last, stacked = lax.scan(step, init, xs, length=length)
    if not all_depths:
        return Kernels(*last[-2:])
    return Kernels(*(jnp.concatenate([first[None], rest]) for first, rest in zip(init[-2:], stacked, strict=True)))


def gaussian_layer(activation: Activation, d1, d2, cross):
    """One nonlinearity on a tile: (E phi phi on the two diagonals, E phi phi and E phi' phi' on the pairs)."""
    k, kdot = broadcast_expectations(activation, d1[:, None], cross, d2[None, :])
    k1 = activation.expectations(d1, d1, d1)[0]
    k2 = activation.expectations(d2, d2, d2)[0]
    return k1, k2, k, kdot


# ---------------------------------------------------------------- the FC recursion as a composition of layers
# A tile's kernel state is a :class:`Kernels` (nngp, ntk) threaded through pure layer transforms, as
# neural-tangents' stax: input -> dense -> (nonlinearity -> dense) x (depth - 1). The variances of a tile's
# inputs (the diagonals) go through the same transforms once per tile, on vectors (:func:`layer_variances`);
# the scheduling (tiles, the input Gram of each) is :func:`ntkrepro.blocks.blockwise`'s.


def dense(state: Kernels, sigma_w2, sigma_b2) -> Kernels:
    """A weight layer: Sigma <- sigma_b2 + sigma_w2 Sigma, K <- sigma_w2 K + Sigma (Hayou Lemma 2)."""
    nngp = sigma_b2 + sigma_w2 * state.nngp
    return Kernels(nngp, sigma_w2 * state.ntk + nngp)


def nonlinearity(state: Kernels, var1, var2, activation: Activation) -> Kernels:
    """phi on pre-activations of variances var1 (rows), var2 (columns): Sigma <- E phi phi, K <- K E phi' phi'."""
    k, kdot = broadcast_expectations(activation, var1[:, None], state.nngp, var2[None, :])
    return Kernels(k, kdot * state.ntk)


def layer_variances(sq_norms, dim: int, sigma_w2, sigma_b2, *, depth: int, activation: Activation):
    """The pre-activation variances Sigma_l(x, x), l = 1..depth - 1, of inputs with squared norms ``sq_norms``:
    (depth - 1, n), each input's diagonal through the dense and nonlinearity maps."""
    def step(var, _):
        return sigma_b2 + sigma_w2 * activation.expectations(var, var, var)[0], var

    return lax.scan(step, sigma_b2 + sigma_w2 * sq_norms / dim, length=depth - 1)[1]


def _packed(state: Kernels):
    return lax.complex(state.nngp, state.ntk)


def _unpacked(packed) -> Kernels:
    return Kernels(jnp.real(packed), jnp.imag(packed))


def fc_layers(gram, var1, var2, dim: int, sigma_w2, sigma_b2, *, activation: Activation, all_depths: bool):
    """The composition on one tile: input Gram (b1, b2) -> Kernels of the last depth, or of every depth
    stacked; var1, var2: :func:`layer_variances` of the tile's rows and columns. One ``lax.scan`` step per
    hidden layer, fused by XLA into one elementwise pass over the cache-sized tile: the step carries
    (nngp, ntk) as one complex array, since XLA's CPU backend fuses a step with two outputs into two loops,
    each evaluating the closed form both need (1.3x the time per layer, float64, measured)."""

    def layer(packed, variances):
        packed = _packed(dense(nonlinearity(_unpacked(packed), *variances, activation), sigma_w2, sigma_b2))
        return packed, packed if all_depths else None

    first = dense(Kernels(gram / dim, jnp.zeros_like(gram)), sigma_w2, sigma_b2)
    last, stacked = lax.scan(layer, _packed(first), (var1, var2))
    if not all_depths:
        return _unpacked(last)
    return jax.tree_util.tree_map(lambda a, rest: jnp.concatenate([a[None], rest]), first, _unpacked(stacked))


@functools.partial(kernel_jit, static_argnames=("depth", "activation", "all_depths"))
def _fc(x1, x2, sigma_w2, sigma_b2, *, depth, activation, all_depths):
    dim = x1.shape[1]
    variances = functools.partial(layer_variances, dim=dim, sigma_w2=sigma_w2, sigma_b2=sigma_b2, depth=depth,
                                  activation=activation)

    def tile(xa, xb, same):
        sq1, sq2, gram = tile_gram(xa, xb, same)
        return fc_layers(gram, variances(sq1), variances(sq2), dim, sigma_w2, sigma_b2, activation=activation,
                         all_depths=all_depths)

    return blockwise(tile, x1, x2)


def fc_kernels(x1, x2=None, *, depth: int, activation="relu", sigma_w2: float = 2.0,
               sigma_b2: float = 0.0, all_depths: bool = False, dtype=None) -> Kernels:
    """NNGP and NTK of a depth-``depth`` fully connected net (Hayou Lemma 2; module docstring).

    Args:
        x1, x2: inputs (n1, d), (n2, d); x2 None means the Gram of x1 (upper triangle computed).
        depth: weight layers including the readout (>= 1).
        activation: a name, an :class:`~ntkrepro.kernels.gaussian.Activation`, or a JAX callable.
        sigma_w2, sigma_b2: weight and bias variances.
        all_depths: return arrays with a leading axis over depths 1..depth (one recursion).
        dtype: float64 (default) or float32.
    Returns:
        :class:`Kernels` with ``nngp`` and ``ntk`` of shape (n1, n2) or (depth, n1, n2).
    """
    depth = check_depth(depth)
    act = get_activation(activation)
    check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    x1, x2 = check_inputs(x1, x2, dtype=dtype)
    out = _fc(x1, x2, jnp.asarray(sigma_w2, x1.dtype), jnp.asarray(sigma_b2, x1.dtype),
              depth=depth, activation=act, all_depths=bool(all_depths))
    finite_kernel("the FC NTK", out.ntk, x1, x2)
    return out


# ---------------------------------------------------------------- other papers' conventions


def jacot_to_fc(*, beta: float) -> dict:
    """Jacot et al. 2018: Sigma(1) = x.x'/n0 + beta^2, Sigma(l+1) = E[sigma sigma] + beta^2,
    Theta(l+1) = Theta(l) Sigmadot(l+1) + Sigma(l+1), Theta(L) for L weight layers.

    This is the Hayou recursion with sigma_w2 = 1, sigma_b2 = beta^2 and the same depth L, with no
    rescaling of either kernel (the gradient w.r.t. b carries the factor beta, giving beta^2).
    """
    check_variances(beta_squared=float(beta) ** 2)
    return {"sigma_w2": 1.0, "sigma_b2": float(beta) ** 2}


def arora_to_fc(x, *, activation="relu"):
    """Arora et al. 2019 eqs. 6-7: Sigma(0) = x.x' (no 1/d, no bias), Sigma(h) = c_sigma E[sigma sigma],
    Sigmadot(h) = c_sigma E[sigma' sigma'], Theta(h) = Theta(h-1) Sigmadot(h) + Sigma(h), with
    c_sigma = 1 / E[sigma(z)^2], L hidden layers and readout L+1 (design depth = L + 1).

    Equals the Hayou recursion with sigma_w2 = c_sigma, sigma_b2 = 0 on the inputs rescaled by
    sqrt(d / c_sigma) (so that Sigma_1 = x.x'): then Sigma_{h+1} = Sigma(h) and K_{L+1} = Theta(L)
    exactly, for any activation. Returns (rescaled x, hyperparameters for :func:`fc_kernels`).
    """
    c = c_sigma(activation)
    x = jnp.asarray(x)
    return x * jnp.sqrt(x.shape[-1] / c), {"sigma_w2": c, "sigma_b2": 0.0}


def jacot_fc_kernels(x1, x2=None, *, depth: int, beta: float, activation="relu",
                     all_depths: bool = False, dtype=None) -> Kernels:
    """NNGP Sigma(L) and NTK Theta(L) in Jacot et al.'s convention (:func:`jacot_to_fc`), L = depth."""
    return fc_kernels(x1, x2, depth=depth, activation=activation, all_depths=all_depths, dtype=dtype,
                      **jacot_to_fc(beta=beta))


def arora_fc_kernels(x1, x2=None, *, depth: int, activation="relu", all_depths: bool = False,
                     dtype=None) -> Kernels:
    """NNGP Sigma(L) and NTK Theta(L) in Arora et al.'s convention (:func:`arora_to_fc`), L = depth - 1."""
    check_inputs(x1, x2, dtype=dtype)
    x1_scaled, params = arora_to_fc(x1, activation=activation)
    x2_scaled = None if x2 is None else arora_to_fc(x2, activation=activation)[0]
    return fc_kernels(x1_scaled, x2_scaled, depth=depth, activation=activation, all_depths=all_depths,
                      dtype=dtype, **params)
