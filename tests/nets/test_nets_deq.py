"""Input-injected net (finite-depth DEQ iteration, Feng & Kolter Thm. 1): forward pass against an explicit
implementation, and the empirical NTK against Thm. 1's kernel as the width grows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from finite_width import kernel_errors_by_width, loglog_slope

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels.deq import deq_kernels
from ntkrepro.nets import deq_net, normalized_relu


def test_forward_matches_the_documented_definition():
    sw2, su2, sb2, width = 0.6, 0.3, 0.1, 7
    net = deq_net(depth=4, width=width, sigma_w2=sw2, sigma_u2=su2, sigma_b2=sb2, out_dim=2)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 5)))
    params = [{k: np.asarray(v) for k, v in layer.items()} for layer in
              net.init_fn(jax.random.PRNGKey(0), x.shape)]
    f = x @ params[0]["w"]
    for layer in params[1:]:
        g = math.sqrt(2.0) * np.maximum(f, 0.0)
        f = (math.sqrt(sw2 / width) * g @ layer["w"] + math.sqrt(su2) * x @ layer["u"]
             + math.sqrt(sb2) * layer["b"])
    np.testing.assert_allclose(net.apply_fn(params, x), f, rtol=1e-12)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (200000,)))
    # E[sigma(z)^2] = 1 (Def. 3.1); Monte Carlo std of the mean ~ 0.004 at 2e5 draws
    assert np.mean(np.asarray(normalized_relu(z)) ** 2) == pytest.approx(1.0, abs=0.02)


def test_empirical_kernels_approach_thm1():
    """The untied input-injected net's empirical NTK (and readout NNGP) converge to Thm. 1's Theta(L)
    (Sigma(L)) with depth = L + 1 weight layers: RMS error of single draws falls like width^-1/2."""
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    variances = {"sigma_w2": 0.6, "sigma_u2": 0.3, "sigma_b2": 0.1}
    exact = deq_kernels(x, depth=4, **variances)
    widths = (32, 128, 512)
    errors = kernel_errors_by_width(lambda width: deq_net(depth=4, width=width, **variances), x, exact, widths,
                                    n_samples=6, implementation="jacobian")
    for kind_errors in errors.values():
        assert -0.8 < loglog_slope(widths, kind_errors) < -0.3, kind_errors
        assert kind_errors[-1] < 0.2, kind_errors
