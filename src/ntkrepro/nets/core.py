"""Shared pieces of the finite-width networks: the ``Network`` container, parameter masks, scaled weights.

Parameterizations (Jacot et al. 2018 sec. 2; Lee et al. 2019 appendix):
- ``"ntk"``: every weight is stored ~ N(0, 1) and multiplied in the forward pass by its layer scale
  (e.g. sqrt(sigma_w2 / fan_in)), so gradients carry the scale too;
- ``"standard"``: the weight is stored ~ N(0, scale^2) and used as is.
Both give the same function distribution at initialization; their gradients (hence NTKs) differ.

Arguments every net constructor takes (checked by :func:`check_net_args`):
    depth: weight layers including the readout (layers are numbered 1..depth);
    out_dim: number of outputs k;
    parameterization: ``"ntk"`` or ``"standard"`` (above);
    output_scale: multiplier kappa of the output (Arora et al. 2019 sec. 3.3);
    frozen_layers: 1-based layer numbers excluded from training and from the empirical NTK;
    dtype: parameter dtype; inputs are cast to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkrepro.kernels.gaussian import Activation, get_activation

PARAMETERIZATIONS = ("ntk", "standard")

Params = Any  # a pytree of arrays: here a list with one dict of arrays per weight layer


@dataclass(frozen=True)
class Network:
    """A finite-width network: pure functions plus the partition of its parameters.

    Attributes:
        init_fn: ``init_fn(key, input_shape) -> params``; ``input_shape`` is batch-first, the batch size
            is ignored. ``params`` is a list with one dict of arrays per weight layer, readout last.
        apply_fn: ``apply_fn(params, x) -> (n, out_dim)`` for batch-first ``x``; examples do not interact.
        trainable_mask: ``trainable_mask(params)`` -> pytree of bools of the same structure, False for
            frozen layers (excluded from gradients and from the empirical NTK).
        readout_mask: ``readout_mask(params)`` -> bools marking the readout layer, for a net whose output
            is linear in a readout layer with N(0, 1) weights (NTK parameterization), so that the
            gradient Gram of that layer is the readout-features (conditional NNGP) kernel; ``None`` when
            the output is not such a readout (the residual net).
        depth: number of weight layers including the readout.
        out_dim: number of outputs k.
    """

    init_fn: Callable[..., Params]
    apply_fn: Callable[[Params, jax.Array], jax.Array]
    trainable_mask: Callable[[Params], Params]
    readout_mask: Callable[[Params], Params] | None
    depth: int
    out_dim: int

    @property
    def taps_fn(self) -> Callable | None:
        """The layer-structure hook of ``apply_fn`` (:func:`taps_of`), None for nets without one."""
        return taps_of(self.apply_fn)


def taps_of(apply_fn: Callable) -> Callable | None:
    """``apply_fn.taps_fn``: the hook behind the structured empirical NTK, or None when ``apply_fn`` has none.

    ``taps_fn(params, x, taps) -> (outputs, features)``, for params a list of per-layer dicts whose layer i
    computes a pre-activation pre_i (n, fan_out_i) linearly in each of its leaves, fan_out_i being the last
    axis of every leaf of the layer:
    - ``taps``: one (n, fan_out_i) array per layer, added to pre_i (zeros leave the outputs of ``apply_fn``);
      ``taps=None`` adds nothing and returns no features;
    - ``features``: params' structure, an (n, a) array g per leaf of a * fan_out_i elements, such that the
      gradient of any output f_j(x) w.r.t. the leaf is outer(g(x), d f_j(x) / d pre_i(x)) in the leaf's shape
      (e.g. c * h for a weight used as pre = c * h @ W, c_b * ones((n, 1)) for a bias used as c_b * b).
    """
    return getattr(apply_fn, "taps_fn", None)


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer hyperparameter (width, depth, channels ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_nonnegative(name: str, value: float) -> float:
    """Validate a variance or scale."""
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def check_parameterization(parameterization: str) -> str:
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    return parameterization


def check_frozen_layers(frozen_layers: Sequence[int], depth: int) -> frozenset[int]:
    """Layers are numbered 1..depth (the readout is ``depth``); at least one must stay trainable."""
    frozen = frozenset(int(i) for i in frozen_layers)
    bad = sorted(i for i in frozen if not 1 <= i <= depth)
    if bad:
        raise ValueError(f"frozen_layers must lie in 1..{depth} (the depth), got {bad}")
    if len(frozen) == depth:
        raise ValueError("frozen_layers freezes every layer: nothing left to train")
    return frozen


def check_net_args(*, depth: int, width: int, out_dim: int, parameterization: str, frozen_layers: Sequence[int],
                   width_name: str = "width", min_depth: int = 1) -> tuple[int, int, int, frozenset[int]]:
    """The arguments every net shares (module docstring), checked before anything is built:
    (depth, width, out_dim, frozen layers)."""
    depth = check_positive_int("depth", depth, minimum=min_depth)
    width = check_positive_int(width_name, width)
    out_dim = check_positive_int("out_dim", out_dim)
    check_parameterization(parameterization)
    return depth, width, out_dim, check_frozen_layers(frozen_layers, depth)


def dense_input_dim(what: str, input_shape: Sequence[int]) -> int:
    """d of a dense net's batch-first ``input_shape`` (n, d), checked for ``init_fn``."""
    if len(input_shape) != 2:
        raise ValueError(f"{what}: input_shape must be (n, d), got {tuple(input_shape)}")
    return check_positive_int("input dimension", input_shape[-1])


def dense_specs(what: str, input_shape: Sequence[int], fan_outs: Sequence[int], *, sigma_w2: float,
                sigma_b2: float) -> list[dict]:
    """Specs (:func:`init_layers`) of a stack of dense layers on inputs ``input_shape`` (n, d): layer i maps
    fan_in_i -> ``fan_outs[i]`` (fan_in_0 = d, then the previous fan-out) with weight scale
    sqrt(sigma_w2 / fan_in) and, when sigma_b2 > 0, a bias of scale sqrt(sigma_b2)."""
    fan_ins = [dense_input_dim(what, input_shape), *fan_outs[:-1]]
    specs = []
    for fan_in, fan_out in zip(fan_ins, fan_outs, strict=True):
        layer = {"w": ((fan_in, fan_out), math.sqrt(sigma_w2 / fan_in))}
        if sigma_b2 > 0:
            layer["b"] = ((fan_out,), math.sqrt(sigma_b2))
        specs.append(layer)
    return specs


def network(init_fn: Callable, apply_fn: Callable, *, depth: int, out_dim: int, frozen: frozenset[int],
            has_readout: bool = True) -> Network:
    """The :class:`Network` of a constructor's functions, with its trainable mask and (``has_readout``: the
    output is linear in the N(0, 1) weights of layer ``depth``) its readout mask."""
    readout = readout_mask_fn(depth) if has_readout else None
    return Network(init_fn, apply_fn, trainable_mask_fn(depth, frozen), readout, depth, out_dim)


def resolve_activation(activation: str | Activation | Callable) -> Callable:
    """The elementwise function of a registered activation name, an ``Activation`` or a JAX callable."""
    if isinstance(activation, (str, Activation)):
        return get_activation(activation).fn
    if callable(activation):
        return activation
    raise ValueError(f"activation must be a registered name, an Activation or a callable, got {activation!r}")


def init_layers(key, specs: Sequence[dict[str, tuple[tuple[int, ...], float]]], parameterization: str,
                dtype) -> list[dict[str, jax.Array]]:
    """Parameters from per-layer specs ``{name: (shape, scale)}``: N(0, 1) entries (NTK parameterization)
    or N(0, scale^2) (standard), cut in spec order from one flat N(0, 1) draw whose length is rounded up
    to a power of two (so nets of similar size share one compiled draw). Traceable: ``init_fn`` can be
    jitted or vmapped over keys."""
    frozen_specs = tuple(tuple((name, tuple(int(s) for s in shape), float(scale))
                               for name, (shape, scale) in layer.items()) for layer in specs)
    total = sum(math.prod(shape) for layer in frozen_specs for _, shape, _ in layer)
    flat = _standard_normal(key, 1 << max(total - 1, 0).bit_length(), jnp.dtype(dtype))
    return _cut_layers(flat, frozen_specs, parameterization)


@partial(jax.jit, static_argnames=("size", "dtype"))
def _standard_normal(key, size: int, dtype) -> jax.Array:
    return jax.random.normal(key, (size,), dtype)


@partial(jax.jit, static_argnames=("specs", "parameterization"))
def _cut_layers(flat, specs, parameterization):
    params, offset = [], 0
    for layer in specs:
        params.append({})
        for name, shape, scale in layer:
            size = math.prod(shape)
            w = flat[offset:offset + size].reshape(shape)
            params[-1][name] = w if parameterization == "ntk" else scale * w
            offset += size
    return params


def effective_weight(w: jax.Array, scale: float, parameterization: str) -> jax.Array:
    """The weight as used in the forward pass: scale * w in the NTK parameterization, w otherwise."""
    return scale * w if parameterization == "ntk" else w


def layer_masks(num_layers: int, selected: frozenset[int], value_if_selected: bool) -> Callable:
    """A mask function over the list-of-layers params: ``value_if_selected`` on the selected layers."""

    def mask(params: Params) -> Params:
        if len(params) != num_layers:
            raise ValueError(f"expected params of {num_layers} layers, got {len(params)}")
        return [
            jax.tree.map(lambda _, i=i: (i + 1 in selected) == value_if_selected, layer)
            for i, layer in enumerate(params)
        ]

    return mask


def trainable_mask_fn(depth: int, frozen: frozenset[int]) -> Callable:
    """True for every leaf of a trainable layer, False for frozen layers (1-based numbering)."""
    return layer_masks(depth, frozen, value_if_selected=False)


def readout_mask_fn(depth: int) -> Callable:
    """True exactly on the leaves of the readout (last) layer."""
    return layer_masks(depth, frozenset({depth}), value_if_selected=True)


def partition(params: Params, mask: Params | None) -> tuple[Params, Params]:
    """Split ``params`` into (selected, rest) by a bool mask; the missing leaves become ``None``."""
    if mask is None:
        return params, jax.tree.map(lambda _: None, params)
    selected = jax.tree.map(lambda m, p: p if m else None, mask, params)
    rest = jax.tree.map(lambda m, p: None if m else p, mask, params)
    return selected, rest


def combine(selected: Params, rest: Params) -> Params:
    """Inverse of :func:`partition`."""
    return jax.tree.map(lambda a, b: b if a is None else a, selected, rest, is_leaf=lambda v: v is None)


def check_input(x: jax.Array, expected_trailing: tuple, what: str) -> None:
    """Raise a one-line ValueError when ``x`` is not batch-first with the expected trailing shape.

    ``None`` in ``expected_trailing`` matches any size.
    """
    shape = tuple(x.shape)
    ok = len(shape) == len(expected_trailing) + 1 and all(
        e is None or s == e for s, e in zip(shape[1:], expected_trailing, strict=True)
    )
    if not ok:
        want = "(n, " + ", ".join("*" if e is None else str(e) for e in expected_trailing) + ")"
        raise ValueError(f"{what}: input of shape {shape} does not match the expected {want}")
