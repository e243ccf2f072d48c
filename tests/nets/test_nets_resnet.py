"""FC ResNet in Hayou et al. 2020's conventions (eqs. 18, 24, 25): forward pass against an explicit
implementation, and the empirical NTK against Lemma 3's recursion as the width grows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from finite_width import kernel_errors_by_width, loglog_slope

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.empirical import monte_carlo_kernel
from ntkrepro.kernels.resnet import resnet_kernels
from ntkrepro.nets import resnet


@pytest.mark.parametrize("branch_scale", ["standard", "scaled"])
def test_forward_matches_the_papers_definition(branch_scale):
    sigma_w2, sigma_b2, width, depth = 1.3, 0.2, 6, 4
    net = resnet(depth=depth, width=width, out_dim=2, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                 activation=jnp.tanh, branch_scale=branch_scale)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 5)))
    params = [{k: np.asarray(v) for k, v in layer.items()} for layer in
              net.init_fn(jax.random.PRNGKey(0), x.shape)]
    y = math.sqrt(sigma_w2 / 5) * x @ params[0]["w"] + math.sqrt(sigma_b2) * params[0]["b"]
    for layer_no in range(2, depth + 1):
        layer = params[layer_no - 1]
        branch = math.sqrt(sigma_w2 / width) * np.tanh(y) @ layer["w"] + math.sqrt(sigma_b2) * layer["b"]
        y = y + (1.0 if branch_scale == "standard" else 1.0 / math.sqrt(layer_no)) * branch
    np.testing.assert_allclose(net.apply_fn(params, x), y[:, :2], rtol=1e-12)


@pytest.mark.parametrize("branch_scale", ["standard", "scaled"])
def test_empirical_ntk_approaches_lemma3(branch_scale):
    """Hayou Lemma 3 / Prop. 3 kernels (``resnet_kernels``, depth = L): the empirical NTK of one output
    unit of y^L converges like width^-1/2 (RMS over 6 draws per width)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    exact = resnet_kernels(x, depth=4, sigma_w2=2.0, sigma_b2=0.1, branch_scale=branch_scale)
    widths = (32, 128, 512)
    errors = kernel_errors_by_width(
        lambda width: resnet(depth=4, width=width, sigma_w2=2.0, sigma_b2=0.1, branch_scale=branch_scale), x, exact,
        widths, n_samples=6, nngp=False, implementation="jacobian")["ntk"]
    assert -0.8 < loglog_slope(widths, errors) < -0.3, errors
    assert errors[-1] < 0.2, errors


def test_output_covariance_approaches_the_nngp():
    """Q_L, the covariance of y^L (no linear readout: the Monte Carlo output covariance), at width 128
    over 200 draws: within the Monte Carlo error (5 standard errors) plus a 5% finite-width allowance."""
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    exact = np.asarray(resnet_kernels(x, depth=3, sigma_w2=1.0, sigma_b2=0.1).nngp)
    net = resnet(depth=3, width=128, sigma_w2=1.0, sigma_b2=0.1)
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(2), x, n_samples=200, kind="nngp")
    bound = 5 * np.asarray(mc.stderr) + 0.05 * np.abs(exact).max()
    assert np.all(np.abs(np.asarray(mc.mean) - exact) <= bound)
