"""Fully connected nets: Jacot's convention, and convergence of the empirical NTK / NNGP to the exact
kernels of ``ntkrepro.kernels.fc`` as the width grows (Jacot et al. 2018 Thm. 1; Arora et al. Thm. 3.1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from finite_width import kernel_errors_by_width, loglog_slope

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.empirical import monte_carlo_kernel
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.nets import fc


def test_jacot_convention_is_unit_weight_variance_and_beta_bias():
    """a~(l+1) = W(l) a(l) / sqrt(n_l) + beta b(l) (Jacot sec. 2) == fc(sigma_w2=1, sigma_b2=beta^2)."""
    beta, width = 0.1, 7
    net = fc(depth=3, width=width, sigma_w2=1.0, sigma_b2=beta**2)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (4, 2)))
    params = [{k: np.asarray(v) for k, v in layer.items()} for layer in
              net.init_fn(jax.random.PRNGKey(1), x.shape)]
    a = x
    for i, layer in enumerate(params):
        pre = a @ layer["w"] / math.sqrt(a.shape[1]) + beta * layer["b"]
        a = np.maximum(pre, 0.0) if i < len(params) - 1 else pre
    np.testing.assert_allclose(net.apply_fn(params, x), a, rtol=1e-12)


def test_empirical_kernels_approach_the_limit_like_one_over_sqrt_width():
    """RMS error of single draws vs width: log-log slope near -1/2 (8 draws per width), for the NTK and
    for the readout-features NNGP."""
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    exact = fc_kernels(x, depth=3, sigma_w2=2.0, sigma_b2=0.1)
    widths = (32, 128, 512)
    errors = kernel_errors_by_width(lambda width: fc(depth=3, width=width, sigma_w2=2.0, sigma_b2=0.1), x, exact,
                                    widths, n_samples=8)
    for kind_errors in errors.values():
        assert -0.8 < loglog_slope(widths, kind_errors) < -0.35, kind_errors
        assert kind_errors[-1] < 0.2


def test_smooth_activation_and_multiple_outputs_match_the_limit():
    """tanh (a JAX callable), 3 outputs: the mean over outputs and draws at width 512 is within a few
    percent of the exact NTK, and the off-diagonal output blocks (Theta (x) I_k) vanish."""
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    exact = np.asarray(fc_kernels(x, depth=2, activation=jnp.tanh, sigma_w2=1.5, sigma_b2=0.2).ntk)
    net = fc(depth=2, width=512, out_dim=3, activation=jnp.tanh, sigma_w2=1.5, sigma_b2=0.2)
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(3), x, n_samples=4, outputs="full")
    full = np.asarray(mc.mean)
    diagonal = np.einsum("ijkk->ij", full) / 3
    assert np.linalg.norm(diagonal - exact) / np.linalg.norm(exact) < 0.05
    off = full - np.einsum("ij,kl->ijkl", diagonal, np.eye(3))
    assert np.abs(off).max() < 0.1 * np.abs(exact).max()


def test_taps_enter_the_pre_activations_and_features_match_the_weight_gradients():
    """The structured-NTK hook: a tap on the readout's pre-activation moves the output by output_scale * tap;
    per example, the gradient of an output w.r.t. each leaf is outer(feature, d output / d tap)."""
    net = fc(depth=3, width=5, out_dim=2, sigma_b2=0.3, output_scale=0.7, parameterization="standard")
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 3))
    params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    taps = [jnp.zeros((1, 5)), jnp.zeros((1, 5)), jnp.array([[0.5, -2.0]])]
    out, features = net.taps_fn(params, x, taps)
    np.testing.assert_allclose(out, net.apply_fn(params, x) + 0.7 * taps[-1], rtol=1e-12)
    assert net.taps_fn(params, x, None)[1] == []
    grads = jax.grad(lambda p: net.apply_fn(p, x)[0, 1])(params)
    deltas = jax.grad(lambda t: net.taps_fn(params, x, t)[0][0, 1])(taps)
    for grad, feature, delta in zip(grads, features, deltas, strict=True):
        np.testing.assert_allclose(grad["w"], jnp.outer(feature["w"][0], delta[0]), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(grad["b"], feature["b"][0, 0] * delta[0], rtol=1e-10, atol=1e-14)
