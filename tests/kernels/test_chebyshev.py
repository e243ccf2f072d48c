"""Clenshaw's recurrence against numpy's Chebyshev evaluation, traced under jit and on a constant."""

import jax
import jax.numpy as jnp
import numpy as np

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels.chebyshev import clenshaw


def test_clenshaw_matches_numpy_chebval():
    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, 41)
    for degree in (0, 1, 2, 7, 40):
        coeffs = rng.standard_normal(degree + 1) / (1.0 + np.arange(degree + 1)) ** 2
        expected = np.polynomial.chebyshev.chebval(x, coeffs)
        np.testing.assert_allclose(np.asarray(clenshaw(coeffs, jnp.asarray(x))), expected, rtol=1e-13, atol=1e-15)
        traced = jax.jit(lambda t, c=coeffs: clenshaw(c, t))(jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(traced), expected, rtol=1e-13, atol=1e-15)


def test_clenshaw_of_t_k_is_cos_k_theta():
    theta = np.linspace(0.0, np.pi, 17)
    coeffs = np.zeros(6)
    coeffs[5] = 1.0
    np.testing.assert_allclose(np.asarray(clenshaw(coeffs, jnp.cos(theta))), np.cos(5 * theta), atol=1e-14)
