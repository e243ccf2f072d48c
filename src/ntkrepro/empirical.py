"""Empirical (finite-width) kernels: the empirical NTK, readout/output NNGP, Monte Carlo averages, kernel
distance and velocity.

Empirical NTK (Golikov et al. 2022 eq. 3): Theta_hat_{jj'}(x, x') = grad_theta f_j(x) . grad_theta f_j'(x'),
over the trainable parameters only. Three implementations (survey sec. 5.2; Novak et al. 2022):
- ``"jacobian"``: per-example Jacobians (one reverse pass per output), then their contraction;
  cost O(m k [FP] + m^2 k^2 N) for the full k x k blocks (m^2 k N for their trace);
- ``"ntvp"``: NTK-vector products: for each pair of examples, VJPs of f(x') with the k unit cotangents
  pushed through a JVP of f(x), vmapped over the pairs; cost O(m^2 k [FP]);
- ``"structured"`` (structured derivatives): for nets whose ``apply_fn`` has the layer hook
  (``ntkrepro.nets.core.taps_of``; the FC nets), a weight used as pre = c h W contributes
  c^2 (h(x) . h(x')) (delta_j(x) . delta_j'(x')) with delta_j = d f_j / d pre, a bias c_b^2 times the
  second factor: two small Grams per layer, no per-example weight gradients;
  cost O(m k [FP] + m^2 sum_l (fan_in_l + k^2 fan_out_l)). Conv, residual and DEQ nets have no hook
  and use the generic two.
``"auto"`` picks ``"structured"`` when the hook exists, else the cheaper generic one from a flop count of
one forward pass ([FP], XLA's cost analysis) and the number of trainable parameters N. ``apply_fn`` must
treat examples independently (batch-first, no batch statistics). For k outputs the kernel has the limit
structure Theta (x) I_k: the default ``outputs="trace"`` returns the (n1, n2) matrix
(1/k) sum_j Theta_hat_jj; ``outputs="full"`` returns (n1, n2, k, k). An (n1 k) x (n2 k) matrix is never built.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkrepro.blocks import blockwise_on_host, row_block
from ntkrepro.nets.core import combine, partition, taps_of

IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")
OUTPUTS = ("trace", "full")
KINDS = ("ntk", "nngp")
BLOCK_BYTES = 2**28  # default budget for one block's Jacobian (structured factors) and output when batch_size is None
COLUMN_CACHE_BYTES = 2**31  # Jacobians of all column blocks are kept when they fit in this budget
# Memory-bound Jacobian contraction: measured on the 2-core CPU (FC width 1024, depth 4, 100 inputs,
# float32), the contraction ran at ~1/6 of the flop rate of the NTK-vector products.
CONTRACTION_WEIGHT = 6.0

# Monte Carlo draws of one compiled call are vmapped on accelerators and run one after another (lax.map) on the
# CPU, where vmapped draws ran at 0.07-0.64x the speed of one draw per call (batched weights turn GEMMs into
# batched GEMMs and convolutions into grouped ones; benchmarks/results/20261206-1750-mc.json). True vmaps them
# on the CPU too.
VMAP_DRAWS_ON_CPU = False

Mask = Any  # a pytree of bools matching params, or a callable params -> such a pytree


def _resolve_mask(mask: Mask | None, params) -> Any:
    mask = mask(params) if callable(mask) else mask
    if mask is None:
        return None
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ValueError("the trainable/readout mask must have the structure of params")
    if not any(bool(m) for m in jax.tree.leaves(mask)):
        raise ValueError("the mask selects no parameters")
    return mask


def _check_inputs(x1, x2) -> tuple[jax.Array, jax.Array | None]:
    x1 = jnp.asarray(x1)
    if x1.ndim < 2 or x1.shape[0] < 1:
        raise ValueError(f"x1 must be batch-first (n >= 1, features...), got {x1.shape}")
    if x2 is None:
        return x1, None
    x2 = jnp.asarray(x2)
    if x2.ndim != x1.ndim or x2.shape[1:] != x1.shape[1:] or x2.shape[0] < 1:
        raise ValueError(f"inconsistent input shapes: x1 {x1.shape} vs x2 {x2.shape} (trailing axes differ)")
    return x1, x2


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_count(name: str, value, *, optional: bool = True) -> None:
    """A positive integer (or None where ``optional``), else a one-line ValueError."""
    if value is None and optional:
        return
    if value is None or isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")


@partial(jax.jit, static_argnames=("apply_fn",))
def _jacobian(apply_fn, theta, rest, xb):
    """Per-example Jacobians: leaves of shape (b, k, *leaf_shape)."""

    def f_one(t, xi):
        return apply_fn(combine(t, rest), xi[None])[0]

    return jax.vmap(jax.jacrev(f_one), in_axes=(None, 0))(theta, xb)


@partial(jax.jit, static_argnames=("outputs",))
def _contract(j1, j2, outputs):
    """sum over parameters of J1 J2^T: (b1, b2) trace over outputs / k, or (b1, b2, k, k)."""
    leaves1, leaves2 = jax.tree.leaves(j1), jax.tree.leaves(j2)
    b1, k = leaves1[0].shape[:2]
    b2 = leaves2[0].shape[0]
    if outputs == "trace":
        out = sum(a.reshape(b1, -1) @ b.reshape(b2, -1).T for a, b in zip(leaves1, leaves2, strict=True))
        return out / k
    return sum(jnp.einsum("ika,jla->ijkl", a.reshape(b1, k, -1), b.reshape(b2, k, -1))
               for a, b in zip(leaves1, leaves2, strict=True))


@partial(jax.jit, static_argnames=("apply_fn", "outputs"))
def _ntvp(apply_fn, theta, rest, x1b, x2b, outputs):
    """Theta_hat(x1b, x2b) by NTK-vector products per pair of examples: for each x' a VJP of f(x') with
    each output's unit cotangent, pushed through a JVP of f(x) (Novak et al. 2022), vmapped over pairs."""

    def f_one(t, xi):
        return apply_fn(combine(t, rest), xi[None])[0]

    def pair(a, b):
        k = jax.eval_shape(f_one, theta, b).shape[0]
        _, vjp_b = jax.vjp(lambda t: f_one(t, b), theta)

        def column(cotangent):
            return jax.jvp(lambda t: f_one(t, a), (theta,), vjp_b(cotangent))[1]

        return jax.vmap(column, out_axes=1)(jnp.eye(k, dtype=x2b.dtype))  # (k1, k2)

    blocks = jax.vmap(jax.vmap(pair, in_axes=(0, None)), in_axes=(None, 0))(x1b, x2b)  # (b2, b1, k, k)
    if outputs == "trace":
        return jnp.einsum("jikk->ij", blocks) / blocks.shape[-1]
    return jnp.transpose(blocks, (1, 0, 2, 3))


def _layer_selection(params, mask) -> tuple[tuple[bool, ...], ...]:
    """Per layer of the list-of-layers params, which of its leaves (in ``jax.tree.leaves`` order) count."""
    layers = params if mask is None else mask
    return tuple(tuple(mask is None or bool(m) for m in jax.tree.leaves(layer)) for layer in layers)


def _structured_row_bytes(params, k: int) -> int:
    """Bytes per example of the structured factors: each leaf's features and the k derivatives per layer."""
    total = 0
    for layer in params:
        leaves = jax.tree.leaves(layer)
        fan_out = leaves[0].shape[-1]
        total += sum(leaf.size // fan_out for leaf in leaves) + k * fan_out
    return total * jnp.dtype(leaves[0].dtype).itemsize


@partial(jax.jit, static_argnames=("taps_fn", "selection"))
def _structured_factors(taps_fn, selection, params, xb):
    """Per layer with a selected leaf: its selected leaves' features side by side (b, a) and the derivatives
    of the k outputs w.r.t. its pre-activation per example (b, k, fan_out), from k reverse passes."""
    taps = [jnp.zeros((xb.shape[0], jax.tree.leaves(layer)[0].shape[-1]), jax.tree.leaves(layer)[0].dtype)
            for layer in params]
    out, pull, features = jax.vjp(lambda t: taps_fn(params, xb, t), taps, has_aux=True)
    eye = jnp.eye(out.shape[1], dtype=out.dtype)
    deltas = jax.vmap(lambda e: pull(jnp.broadcast_to(e, out.shape))[0], out_axes=1)(eye)
    factors = []
    for chosen, layer_features, delta in zip(selection, features, deltas, strict=True):
        kept = [g for g, keep in zip(jax.tree.leaves(layer_features), chosen, strict=True) if keep]
        if kept:
            factors.append((jnp.concatenate(kept, axis=1), delta))
    return factors


@partial(jax.jit, static_argnames=("outputs",))
def _structured_contract(factors1, factors2, outputs):
    """sum over layers of (feature Gram) x (derivative Gram): (b1, b2) trace over outputs / k, or
    (b1, b2, k, k)."""
    pairs = list(zip(factors1, factors2, strict=True))
    if outputs == "trace":
        k = pairs[0][0][1].shape[1]
        return sum((g1 @ g2.T) * (d1.reshape(d1.shape[0], -1) @ d2.reshape(d2.shape[0], -1).T)
                   for (g1, d1), (g2, d2) in pairs) / k
    return sum((g1 @ g2.T)[:, :, None, None] * jnp.einsum("ikf,jlf->ijkl", d1, d2)
               for (g1, d1), (g2, d2) in pairs)


def _spec(tree):
    """Hashable (structure, shapes, dtypes) of a pytree of arrays (None leaves drop out)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(leaf.shape), jnp.dtype(leaf.dtype)) for leaf in leaves)


@functools.lru_cache(maxsize=256)
def _forward_flops(apply_fn, theta_spec, rest_spec, x_shape, x_dtype) -> float | None:
    """XLA's flop count of one single-example forward pass (None where the backend gives none); cached
    per architecture and input shape (it costs a compilation)."""

    def unflatten(spec):
        treedef, leaves = spec
        return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaves])

    theta, rest = unflatten(theta_spec), unflatten(rest_spec)

    def f_one(t, r, xi):
        return apply_fn(combine(t, r), xi[None])

    try:
        analysis = jax.jit(f_one).lower(theta, rest, jax.ShapeDtypeStruct(x_shape, x_dtype)).compile()
        analysis = analysis.cost_analysis()
    except Exception:  # cost analysis is optional on some backends
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def estimate_costs(apply_fn, params, x1, x2=None, *, trainable: Mask | None = None,
                   outputs: str = "trace") -> dict[str, float]:
    """Flop estimates of the two implementations (Golikov et al. 2022 sec. 5.2).

    jacobian: (n1 + n2) k * 3 [FP] for the Jacobians + CONTRACTION_WEIGHT * 2 n1 n2 k_c N for the
    contraction, where k_c = k for the trace over outputs and k^2 for the full blocks; ntvp:
    n2 k * 3 [FP] for the VJPs + n1 n2 k * 3 [FP] for the JVPs. [FP] = XLA's flop count of one
    single-example forward pass (2 N if unavailable), N = number of trainable parameters. The
    contraction streams the Jacobians from memory, so its flops count CONTRACTION_WEIGHT times.
    """
    _check_choice("outputs", outputs, OUTPUTS)
    x1, x2 = _check_inputs(x1, x2)
    mask = _resolve_mask(trainable, params)
    theta, rest = partition(params, mask)
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(theta))
    k = int(jax.eval_shape(lambda p, x: apply_fn(p, x), params, x1[:1]).shape[-1])
    fp = (_forward_flops(apply_fn, _spec(theta), _spec(rest), tuple(x1.shape[1:]), jnp.dtype(x1.dtype))
          or 2.0 * n_params)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    k_c = k if outputs == "trace" else k * k
    return {
        "jacobian": (n1 + n2) * k * 3.0 * fp + CONTRACTION_WEIGHT * 2.0 * n1 * n2 * k_c * n_params,
        "ntvp": n2 * k * 3.0 * fp + n1 * n2 * k * 3.0 * fp,
        "forward_flops": fp,
        "n_params": float(n_params),
    }


def _choose_implementation(implementation: str, apply_fn, params, x1, x2, mask, outputs: str) -> str:
    """``"auto"`` resolved: ``"structured"`` when ``apply_fn`` has the layer hook, else the cheaper generic
    implementation by :func:`estimate_costs`; an explicit ``"structured"`` needs the hook."""
    has_taps = taps_of(apply_fn) is not None
    if implementation == "structured" and not has_taps:
        raise ValueError("implementation='structured' needs apply_fn.taps_fn (ntkrepro.nets.core.taps_of; the FC "
                         "nets have it); use 'jacobian', 'ntvp' or 'auto' for this net")
    if implementation != "auto":
        return implementation
    if has_taps:
        return "structured"
    costs = estimate_costs(apply_fn, params, x1, x2, trainable=mask, outputs=outputs)
    return "jacobian" if costs["jacobian"] <= costs["ntvp"] else "ntvp"


def _factors_and_contraction(apply_fn, params, mask, implementation: str) -> tuple[Callable, Callable]:
    """(``factors(xb)``, ``contract(f1, f2, outputs)``) of the Jacobian contraction or of the structured
    derivatives at ``params`` (traceable: also used inside the compiled Monte Carlo draws)."""
    if implementation == "structured":
        selection = _layer_selection(params, mask)
        return (lambda xb: _structured_factors(taps_of(apply_fn), selection, params, xb)), _structured_contract
    theta, rest = partition(params, mask)
    return (lambda xb: _jacobian(apply_fn, theta, rest, xb)), _contract


def _row_bytes(params, mask, implementation: str, k: int) -> int:
    """Bytes of one example's factors: its structured factors, or its Jacobian (also the sizing of "ntvp")."""
    if implementation == "structured":
        return _structured_row_bytes(params, k)
    theta, _ = partition(params, mask)
    return k * sum(int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(theta))


def _entry_bytes(k: int, outputs: str, dtype) -> int:
    """Bytes of one (x, x') entry of the kernel: one number for the trace over outputs, k x k for "full"."""
    return (1 if outputs == "trace" else k * k) * jnp.dtype(dtype).itemsize


def _auto_batch_size(row_bytes: int, entry_bytes: int) -> int:
    """Examples per block: one block's factors and one output block within BLOCK_BYTES each."""
    return max(1, min(BLOCK_BYTES // max(row_bytes, 1), math.isqrt(BLOCK_BYTES // entry_bytes)))


def _mirror(block):
    """The transpose of a kernel block: its pair axes, and its output axes for "full" (b1, b2, k, k)."""
    return block.transpose(1, 0, 3, 2) if block.ndim == 4 else block.T


def empirical_ntk(
    apply_fn: Callable,
    params,
    x1,
    x2=None,
    *,
    implementation: str = "auto",
    batch_size: int | None = None,
    trainable: Mask | None = None,
    outputs: str = "trace",
) -> jax.Array:
    """The empirical NTK Theta_hat(x1, x2) of ``apply_fn`` at ``params`` (survey eq. 3).

    Args:
        apply_fn: ``apply_fn(params, x) -> (n, k)``, examples independent.
        params: parameter pytree.
        x1, x2: batch-first inputs with equal trailing shapes; ``x2=None`` means x2 = x1 (only the
            upper block triangle is computed).
        implementation: ``"jacobian"``, ``"ntvp"``, ``"structured"`` (nets with the layer hook, see the
            module docstring) or ``"auto"`` (structured when possible, else the cheaper generic one by
            :func:`estimate_costs`).
        batch_size: examples per block (rows and columns); default: as many as keep one block's
            Jacobian (structured factors) and one output block under 256 MiB. The column blocks'
            Jacobians (factors) are kept between row blocks when all of them fit in 2 GiB, and recomputed
            otherwise.
        trainable: bool pytree (or ``params -> pytree`` callable, e.g. ``Network.trainable_mask``)
            selecting the parameters that count; default all.
        outputs: ``"trace"`` -> (n1, n2) = (1/k) sum_j Theta_hat_jj; ``"full"`` -> (n1, n2, k, k).

    Returns:
        The kernel matrix (float dtype of the parameters).
    """
    _check_choice("implementation", implementation, IMPLEMENTATIONS)
    _check_choice("outputs", outputs, OUTPUTS)
    _check_count("batch_size", batch_size)
    x1, x2 = _check_inputs(x1, x2)
    mask = _resolve_mask(trainable, params)
    out = jax.eval_shape(lambda p, x: apply_fn(p, x), params, x1[:1])
    if len(out.shape) != 2:
        raise ValueError(f"apply_fn must return (n, k) outputs, got shape {out.shape}")
    k = int(out.shape[1])
    implementation = _choose_implementation(implementation, apply_fn, params, x1, x2, mask, outputs)
    theta, rest = partition(params, mask)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    factors, contract = _factors_and_contraction(apply_fn, params, mask, implementation)
    row_bytes = _row_bytes(params, mask, implementation, k)
    if batch_size is None:
        batch_size = _auto_batch_size(row_bytes, _entry_bytes(k, outputs, out.dtype))
    b1, b2 = int(min(batch_size, n1)), int(min(batch_size, n2))
    # Jacobian contraction: column Jacobians (structured: factors) are computed once and kept when they fit in
    # COLUMN_CACHE_BYTES (otherwise recomputed per row block: for conv nets a Jacobian costs far more than its
    # contraction); a row block's are kept while its row of blocks is evaluated.
    keep_columns = -(-n2 // b2) * b2 * row_bytes <= COLUMN_CACHE_BYTES or b2 == n2
    column_cache: dict[int, Any] = {}
    row_cache: dict[int, Any] = {}

    def column_factors(c0):
        if c0 in column_cache:
            return column_cache[c0]
        fac = factors(row_block(x2, c0, b2))
        if keep_columns:
            column_cache[c0] = fac
        return fac

    def row_factors(r0):
        if r0 not in row_cache:
            row_cache.clear()
            row_cache[r0] = column_factors(r0) if symmetric else factors(row_block(x1, r0, b1))
        return row_cache[r0]

    def pair_block(r0, c0):
        if implementation == "ntvp":
            return (_ntvp(apply_fn, theta, rest, row_block(x1, r0, b1), row_block(x2, c0, b2), outputs),)
        f1 = row_factors(r0)
        return (contract(f1, f1 if symmetric and c0 == r0 else column_factors(c0), outputs),)

    (result,) = blockwise_on_host(pair_block, n1, n2, b1, b2, symmetric=symmetric, mirror=_mirror)
    return jnp.asarray(result)


def empirical_nngp(
    apply_fn: Callable,
    params,
    x1,
    x2=None,
    *,
    readout: Mask | None = None,
    batch_size: int | None = None,
    outputs: str = "trace",
) -> jax.Array:
    """A one-draw estimate of the NNGP kernel E[f(x1) f(x2)^T].

    With ``readout`` (mask of a readout layer whose weights are N(0, 1) in the NTK parameterization,
    e.g. ``Network.readout_mask``): the readout-features kernel, i.e. the gradient Gram of that layer
    = E over the readout weights of f f^T given the hidden layers (low variance). Without it: the
    output covariance f(x1) f(x2)^T of this draw (unbiased, rank one per output).
    ``outputs`` as in :func:`empirical_ntk`.
    """
    _check_choice("outputs", outputs, OUTPUTS)
    if readout is not None:
        return empirical_ntk(apply_fn, params, x1, x2, implementation=_readout_implementation(apply_fn),
                             batch_size=batch_size, trainable=readout, outputs=outputs)
    x1, x2 = _check_inputs(x1, x2)
    return _output_covariance(apply_fn, params, x1, x1 if x2 is None else x2, outputs)


@partial(jax.jit, static_argnames=("apply_fn", "outputs"))
def _output_covariance(apply_fn, params, x1, x2, outputs):
    f1, f2 = apply_fn(params, x1), apply_fn(params, x2)
    if outputs == "trace":
        return f1 @ f2.T / f1.shape[1]
    return jnp.einsum("ik,jl->ijkl", f1, f2)


@dataclass(frozen=True)
class MonteCarloKernel:
    """Mean and spread of M independent draws of an empirical kernel.

    ``mean``, ``std`` (sample std over draws, ddof = 1; zeros when M = 1) have the kernel's shape;
    ``samples`` (M, ...) is kept only when asked.
    """

    mean: jax.Array
    std: jax.Array
    n_samples: int
    samples: jax.Array | None = None

    @property
    def stderr(self) -> jax.Array:
        """Standard error of the mean over draws."""
        return self.std / math.sqrt(self.n_samples)


def monte_carlo_kernel(
    init_fn: Callable,
    apply_fn: Callable,
    key,
    x1,
    x2=None,
    *,
    n_samples: int,
    kind: str = "ntk",
    trainable: Callable | None = None,
    readout: Callable | None = None,
    implementation: str = "auto",
    batch_size: int | None = None,
    outputs: str = "trace",
    keep_samples: bool = False,
    draws_per_call: int | None = None,
) -> MonteCarloKernel:
    """Average of ``n_samples`` empirical kernels over independent initializations (survey sec. 4.3).

    Draw s uses ``jax.random.split(key, n_samples)[s]`` and ``init_fn(key_s, x1.shape)``, so the first m
    draws are the same for every n_samples >= m. ``kind="ntk"`` averages :func:`empirical_ntk`
    (``trainable``: a ``params -> mask`` callable such as ``Network.trainable_mask``); ``kind="nngp"``
    averages :func:`empirical_nngp` (``readout``: ``params -> mask`` callable such as
    ``Network.readout_mask``; None = output covariance). The implementation is chosen once, on draw 0.

    Draws are evaluated ``draws_per_call`` at a time: init and kernel of a chunk of draws in one compiled
    call (every implementation and kind; vmapped on accelerators, one after another on the CPU, see
    VMAP_DRAWS_ON_CPU), the chunk's mean and sum of squared deviations merged
    into the running ones (Chan et al.'s parallel form of Welford's update), so memory does not grow with
    n_samples unless ``keep_samples``. Default: as many draws as keep a call's parameters, factors
    (Jacobians or structured factors) and kernels within BLOCK_BYTES. The chunks are balanced (the last
    one padded with repeats of its last draw, which do not count). A draw whose kernel needs several
    blocks (``batch_size`` below the number of inputs, or one draw over BLOCK_BYTES), and
    ``draws_per_call=1``, go one draw at a time through :func:`empirical_ntk` / :func:`empirical_nngp`.
    """
    _check_choice("kind", kind, KINDS)
    _check_count("n_samples", n_samples, optional=False)
    _check_count("draws_per_call", draws_per_call)
    _check_count("batch_size", batch_size)
    x1, x2 = _check_inputs(x1, x2)
    _check_choice("implementation", implementation, IMPLEMENTATIONS)
    _check_choice("outputs", outputs, OUTPUTS)
    n_samples = int(n_samples)
    keys = jax.random.split(key, n_samples)
    params = init_fn(keys[0], x1.shape)  # draw 0: the implementation and the memory per draw
    if kind == "ntk":
        mask = _resolve_mask(trainable, params)
        implementation = _choose_implementation(implementation, apply_fn, params, x1, x2, mask, outputs)
    elif readout is not None:
        mask = _resolve_mask(readout, params)
        implementation = _readout_implementation(apply_fn)
    else:
        mask, implementation = None, "covariance"
    fit = _draws_per_call_that_fit(apply_fn, params, x1, x2, mask, implementation, outputs, batch_size)
    per_call = min(n_samples, fit if draws_per_call is None or fit <= 1 else int(draws_per_call))
    if per_call == 1:
        def chunk_stats(start, stop):  # one draw, blocked by empirical_ntk
            params_s = params if start == 0 else init_fn(keys[start], x1.shape)
            sample = _one_draw_blocked(apply_fn, params_s, x1, x2, mask, implementation, batch_size, outputs)
            return sample, np.zeros_like(sample), sample[None] if keep_samples else None
    else:
        per_call = -(-n_samples // -(-n_samples // per_call))  # balanced chunks
        vmapped = per_call if VMAP_DRAWS_ON_CPU or jax.default_backend() != "cpu" else 1
        plan = _DrawPlan(init_fn, apply_fn, _mask_spec(mask), implementation, outputs, keep_samples, vmapped)

        def chunk_stats(start, stop):
            chunk = keys[start:stop]
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[-1:], per_call - len(chunk), axis=0)])
            weights = jnp.arange(per_call) < stop - start
            mean_b, m2_b, samples = _draw_chunk(plan, chunk, weights, x1, x2)
            return (np.asarray(mean_b), np.asarray(m2_b),
                    np.asarray(samples)[:stop - start] if keep_samples else None)

    count, mean, m2, kept = 0, None, None, []
    for start in range(0, n_samples, per_call):
        stop = min(start + per_call, n_samples)
        mean_b, m2_b, samples = chunk_stats(start, stop)
        count, mean, m2 = _merge_moments(count, mean, m2, stop - start, mean_b, m2_b)
        if keep_samples:
            kept.append(samples)
    std = np.sqrt(m2 / (n_samples - 1)) if n_samples > 1 else np.zeros_like(mean)
    return MonteCarloKernel(jnp.asarray(mean), jnp.asarray(std), n_samples,
                            jnp.asarray(np.concatenate(kept)) if keep_samples else None)


def _merge_moments(count_a: int, mean_a, m2_a, count_b: int, mean_b, m2_b):
    """(count, mean, sum of squared deviations) of two groups of draws merged (Chan, Golub and LeVeque
    1979; Welford's update when group b is one draw): delta = mean_b - mean_a,
    mean = mean_a + delta n_b / n, M2 = M2_a + M2_b + delta^2 n_a n_b / n."""
    if count_a == 0:
        return count_b, mean_b.copy(), m2_b.copy()
    count = count_a + count_b
    delta = mean_b - mean_a
    return count, mean_a + delta * (count_b / count), m2_a + m2_b + delta**2 * (count_a * count_b / count)


def _readout_implementation(apply_fn) -> str:
    """The readout-features kernel's implementation: structured derivatives where the net has the hook."""
    return "structured" if taps_of(apply_fn) is not None else "jacobian"


def _draws_per_call_that_fit(apply_fn, params, x1, x2, mask, implementation, outputs, batch_size) -> int:
    """How many draws one compiled call holds within BLOCK_BYTES: per draw its parameters, its factors for
    x1 and x2 (or its outputs, for the output covariance) and its kernel; 1 when one draw's kernel is
    more than one block (``batch_size`` or the automatic block size below the number of inputs)."""
    out = jax.eval_shape(lambda p, x: apply_fn(p, x), params, x1[:1])
    k = int(out.shape[-1])
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    entry = _entry_bytes(k, outputs, out.dtype)
    if implementation == "covariance":
        row = k * jnp.dtype(out.dtype).itemsize
    else:
        row = _row_bytes(params, mask, implementation, k)
        blocks = _auto_batch_size(row, entry) if batch_size is None else int(batch_size)
        if blocks < max(n1, n2):
            return 1
    per_draw = (sum(leaf.nbytes for leaf in jax.tree.leaves(params)) + row * (n1 + (0 if x2 is None else n2))
                + entry * n1 * n2)
    return max(1, BLOCK_BYTES // per_draw)


def _one_draw_blocked(apply_fn, params, x1, x2, mask, implementation, batch_size, outputs) -> np.ndarray:
    """One draw's kernel through the blocked :func:`empirical_ntk` (or the output covariance)."""
    if implementation == "covariance":
        return np.asarray(empirical_nngp(apply_fn, params, x1, x2, outputs=outputs))
    return np.asarray(empirical_ntk(apply_fn, params, x1, x2, implementation=implementation,
                                    batch_size=batch_size, trainable=mask, outputs=outputs))


def _mask_spec(mask):
    """A mask as a hashable (treedef, leaves) for a static argument (None stays None)."""
    if mask is None:
        return None
    leaves, treedef = jax.tree.flatten(mask)
    return treedef, tuple(bool(m) for m in leaves)


@dataclass(frozen=True)
class _DrawPlan:
    """What a chunk of draws of :func:`monte_carlo_kernel` compiles for (hashable: a static argument)."""

    init_fn: Callable
    apply_fn: Callable
    mask_spec: Any  # (treedef, bools) or None
    implementation: str  # "jacobian", "ntvp", "structured" or "covariance" (the output covariance)
    outputs: str
    keep_samples: bool
    vmapped: int  # draws vmapped at once inside the call (lax.map's batch_size; 1: one after another)


@partial(jax.jit, static_argnames=("plan",))
def _draw_chunk(plan: _DrawPlan, keys, weights, x1, x2):
    """Kernels of a chunk of draws (one per key, ``plan.vmapped`` at a time): the mean and sum of squared
    deviations over the draws where ``weights`` (bool) is True (False: padding), and the kernels if
    ``plan.keep_samples``."""
    mask = None if plan.mask_spec is None else jax.tree.unflatten(*plan.mask_spec)

    def one(key):
        params = plan.init_fn(key, x1.shape)
        if plan.implementation == "covariance":
            return _output_covariance(plan.apply_fn, params, x1, x1 if x2 is None else x2, plan.outputs)
        return _one_block_ntk(plan.apply_fn, params, x1, x2, mask, plan.implementation, plan.outputs)

    samples = jax.lax.map(one, keys, batch_size=plan.vmapped)
    w = weights.astype(samples.dtype).reshape((-1,) + (1,) * (samples.ndim - 1))
    mean = jnp.sum(w * samples, axis=0) / jnp.sum(w)
    m2 = jnp.sum(w * (samples - mean) ** 2, axis=0)
    return mean, m2, samples if plan.keep_samples else None


def _one_block_ntk(apply_fn, params, x1, x2, mask, implementation: str, outputs: str):
    """Theta_hat(x1, x2) as one block (traceable); for x2 = None the upper triangle mirrored, as
    :func:`empirical_ntk` assembles its diagonal blocks."""
    x2_ = x1 if x2 is None else x2
    if implementation == "ntvp":
        theta, rest = partition(params, mask)
        block = _ntvp(apply_fn, theta, rest, x1, x2_, outputs)
    else:
        factors, contract = _factors_and_contraction(apply_fn, params, mask, implementation)
        f1 = factors(x1)
        block = contract(f1, f1 if x2 is None else factors(x2_), outputs)
    if x2 is not None:
        return block
    n = x1.shape[0]
    upper = jnp.triu(jnp.ones((n, n), bool)).reshape((n, n) + (1,) * (block.ndim - 2))
    return jnp.where(upper, block, _mirror(block))


def kernel_distance(h1, h2) -> jax.Array:
    """rho(H, H') = 1 - tr(H H'^T) / sqrt(tr(H H^T) tr(H' H'^T)) (survey eq. 148; 0 for equal directions)."""
    h1, h2 = jnp.asarray(h1), jnp.asarray(h2)
    if h1.shape != h2.shape:
        raise ValueError(f"kernel_distance: shapes differ, {h1.shape} vs {h2.shape}")
    n1, n2 = jnp.linalg.norm(h1.ravel()), jnp.linalg.norm(h2.ravel())
    if not (float(n1) > 0 and float(n2) > 0):
        raise ValueError("kernel_distance: a Gram matrix is zero (or not finite)")
    return 1.0 - jnp.vdot(h1.ravel(), h2.ravel()) / (n1 * n2)


def kernel_velocity(kernels, steps=None) -> jax.Array:
    """Kernel distance between consecutive Gram matrices per unit of time (survey sec. 7; Fort et al. 2020).

    Args:
        kernels: (T, ...) stack of Gram matrices along training, T >= 2.
        steps: (T,) increasing times of the kernels; default 0..T-1.

    Returns:
        (T - 1,) array rho(H_t, H_{t+1}) / (steps[t+1] - steps[t]).
    """
    kernels = jnp.asarray(kernels)
    if kernels.ndim < 2 or kernels.shape[0] < 2:
        raise ValueError(f"kernel_velocity needs a stack of at least two kernels, got shape {kernels.shape}")
    steps = jnp.arange(kernels.shape[0]) if steps is None else jnp.asarray(steps)
    if steps.shape != (kernels.shape[0],) or not bool(jnp.all(jnp.diff(steps) > 0)):
        raise ValueError("steps must be strictly increasing with one entry per kernel")
    dist = jnp.stack([kernel_distance(kernels[t], kernels[t + 1]) for t in range(kernels.shape[0] - 1)])
    return dist / jnp.diff(steps)
