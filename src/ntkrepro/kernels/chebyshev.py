"""Chebyshev series evaluated inside JAX code (the coefficients are numpy constants of the caller)."""

from __future__ import annotations

import jax.numpy as jnp


def clenshaw(coeffs, x):
    """sum_k coeffs[k] T_k(x) by Clenshaw's recurrence, elementwise in ``x`` (traceable; ``coeffs`` a
    sequence of floats or a 1-D array with at least one entry)."""
    b1 = jnp.zeros_like(x)
    b2 = jnp.zeros_like(x)
    for c in coeffs[:0:-1]:
        b1, b2 = 2.0 * x * b1 - b2 + c, b1
    return x * b1 - b2 + coeffs[0]
