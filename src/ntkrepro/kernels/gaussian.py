"""Gaussian expectations of activations under a 2x2 covariance, and the activation registry.

For (u, v) ~ N(0, [[s11, s12], [s12, s22]]) an activation provides, elementwise over arrays:
    k    = E[phi(u) phi(v)]
    kdot = E[phi'(u) phi'(v)]
(Jacot et al. 2018 eq. for Sigma/Sigmadot; Arora et al. 2019 eqs. 12-13; Cho & Saul 2009 for ReLU.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp


@dataclass(frozen=True)
class Activation:
    """An activation phi with its derivative and (optionally) closed-form Gaussian expectations.

    ``expectations(s11, s12, s22) -> (k, kdot)`` works elementwise on broadcastable arrays.
    """

    name: str
    fn: Callable
    deriv: Callable
    expectations: Callable


def _relu_expectations(s11, s12, s22):
    """Arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009; Arora et al. 2019 sec. 4)."""
    norm = jnp.sqrt(s11 * s22)
    safe = jnp.where(norm > 0, norm, 1.0)
    lam = jnp.clip(s12 / safe, -1.0, 1.0)
    theta = jnp.arccos(lam)
    k = norm * (lam * (jnp.pi - theta) + jnp.sqrt(1.0 - lam**2)) / (2.0 * jnp.pi)
    kdot = (jnp.pi - theta) / (2.0 * jnp.pi)
    return jnp.where(norm > 0, k, 0.0), kdot


RELU = Activation(
    name="relu",
    fn=lambda x: jnp.maximum(x, 0.0),
    deriv=lambda x: (x > 0).astype(x.dtype),
    expectations=_relu_expectations,
)

_REGISTRY: dict[str, Activation] = {"relu": RELU}


def get_activation(spec: str | Activation) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through)."""
    if isinstance(spec, Activation):
        return spec
    try:
        return _REGISTRY[spec]
    except KeyError:
        raise ValueError(
            f"unknown activation {spec!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
