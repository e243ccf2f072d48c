"""Input-injected net (finite-depth DEQ iteration, Feng & Kolter Thm. 1): forward pass against an explicit
implementation, and the empirical NTK against Thm. 1's kernel as the width grows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.empirical import monte_carlo_kernel
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
    ntk_errors, nngp_errors = [], []
    for width in widths:
        net = deq_net(depth=4, width=width, **variances)
        key = jax.random.PRNGKey(width)
        ntk = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=6, keep_samples=True,
                                 implementation="jacobian")
        nngp = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=6, keep_samples=True,
                                  kind="nngp", readout=net.readout_mask)
        ntk_errors.append(rms_relative_error(ntk.samples, exact.ntk))
        nngp_errors.append(rms_relative_error(nngp.samples, exact.nngp))
    for errors in (ntk_errors, nngp_errors):
        slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
        assert -0.8 < slope < -0.3, (errors, slope)
        assert errors[-1] < 0.2, errors


def rms_relative_error(samples, exact):
    """sqrt(mean over draws of ||K_hat - K||_F^2) / ||K||_F."""
    samples, exact = np.asarray(samples), np.asarray(exact)
    return math.sqrt(np.mean(np.sum((samples - exact) ** 2, axis=(1, 2))) / np.sum(exact**2))
