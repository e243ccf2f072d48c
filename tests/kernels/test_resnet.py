"""ResNet NNGP/NTK: vs the empirical NTK of a wide explicit residual net, vs Lemma 3 written out,
Thm. 2's variance growth, invariants and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels.resnet import resnet_kernels


def _inputs(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


def _relu_np(s11, s12, s22):
    norm = np.sqrt(s11 * s22)
    lam = np.clip(s12 / norm, -1, 1)
    theta = np.arccos(lam)
    return norm * (np.sin(theta) + (np.pi - theta) * lam) / (2 * np.pi), (np.pi - theta) / (2 * np.pi)


def _resnet_ntk(x, *, depth, width, sigma_w2, sigma_b2, scaled, seed):
    """Empirical NTK of output coordinate 0 of y^L for y^l = y^{l-1} + a_l (sw/sqrt(n) W phi(y) + sb b)."""
    d = x.shape[1]
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * depth)
    params = [(jax.random.normal(keys[2 * i], (width, d if i == 0 else width), jnp.float32),
               jax.random.normal(keys[2 * i + 1], (width,), jnp.float32)) for i in range(depth)]
    flat, unravel = ravel_pytree(params)
    sw, sb = math.sqrt(sigma_w2), math.sqrt(sigma_b2)

    def f(flat_params):
        layers = unravel(flat_params)
        w, b = layers[0]
        y = sw / math.sqrt(d) * (w @ jnp.asarray(x, jnp.float32).T) + sb * b[:, None]
        for index, (w, b) in enumerate(layers[1:], start=2):
            scale = 1 / math.sqrt(index) if scaled else 1.0
            y = y + scale * (sw / math.sqrt(width) * (w @ jax.nn.relu(y)) + sb * b[:, None])
        return y[0]

    jac = jax.jacobian(f)(flat)
    return np.asarray(jac @ jac.T, np.float64)


@pytest.mark.parametrize("branch_scale", ["standard", "scaled"])
def test_analytic_ntk_matches_wide_residual_network(branch_scale):
    """Relative fluctuations O(depth / sqrt(width)): width 1024, 3 seeds averaged, tolerance 5% per layer."""
    x = _inputs(3, 4, 11)
    exact = resnet_kernels(x, depth=3, sigma_w2=1.5, sigma_b2=0.1, branch_scale=branch_scale, all_depths=True)
    for depth in (2, 3):
        emp = np.mean([_resnet_ntk(x, depth=depth, width=1024, sigma_w2=1.5, sigma_b2=0.1,
                                   scaled=branch_scale == "scaled", seed=s) for s in range(3)], axis=0)
        ref = np.asarray(exact.ntk[depth - 1])
        rel = np.abs(emp - ref) / np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        assert rel.max() < 0.05 * depth, (depth, rel.max())


@pytest.mark.parametrize("branch_scale", ["standard", "scaled"])
def test_matches_lemma_3_written_out(branch_scale):
    x1, x2 = _inputs(4, 3, 0), _inputs(3, 3, 1)
    sw2, sb2, depth = 0.8, 0.3, 6
    q12 = sb2 + sw2 * x1 @ x2.T / 3
    q1, q2 = sb2 + sw2 * np.sum(x1**2, 1) / 3, sb2 + sw2 * np.sum(x2**2, 1) / 3
    ntk = q12.copy()
    expected = [(q12.copy(), ntk.copy())]
    for layer in range(2, depth + 1):
        a2 = 1 / layer if branch_scale == "scaled" else 1.0
        k, kdot = _relu_np(q1[:, None], q12, q2[None, :])
        sigma = sb2 + sw2 * k
        ntk = ntk * (1 + a2 * sw2 * kdot) + a2 * sigma
        q12 = q12 + a2 * sigma
        q1 = q1 + a2 * (sb2 + sw2 * _relu_np(q1, q1, q1)[0])
        q2 = q2 + a2 * (sb2 + sw2 * _relu_np(q2, q2, q2)[0])
        expected.append((q12.copy(), ntk.copy()))
    got = resnet_kernels(x1, x2, depth=depth, sigma_w2=sw2, sigma_b2=sb2, branch_scale=branch_scale,
                         all_depths=True)
    for index, (nngp, ntk_l) in enumerate(expected):
        np.testing.assert_allclose(got.nngp[index], nngp, rtol=1e-12)
        np.testing.assert_allclose(got.ntk[index], ntk_l, rtol=1e-12)


def test_variance_growth_of_theorem_2_and_proposition_3():
    """ReLU, sigma_b = 0: Q_l(x, x) = (1 + sw2/2)^(l-1) Q_1 (standard), prod_{k=2}^{l} (1 + sw2/(2k)) Q_1 (scaled)."""
    x = _inputs(2, 5, 2)
    q_1 = 1.7 * np.sum(x**2, 1) / 5
    standard = resnet_kernels(x, depth=8, sigma_w2=1.7, all_depths=True)
    scaled = resnet_kernels(x, depth=8, sigma_w2=1.7, branch_scale="scaled", all_depths=True)
    for layer in range(1, 9):
        np.testing.assert_allclose(np.diag(standard.nngp[layer - 1]), (1 + 1.7 / 2) ** (layer - 1) * q_1,
                                   rtol=1e-13)
        growth = np.prod([1 + 1.7 / (2 * k) for k in range(2, layer + 1)])
        np.testing.assert_allclose(np.diag(scaled.nngp[layer - 1]), growth * q_1, rtol=1e-13)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), sigma_w2=st.floats(0.2, 3.0), branch_scale=st.sampled_from(["standard",
                                                                                                "scaled"]))
def test_symmetric_psd_and_depth_sweep(seed, sigma_w2, branch_scale):
    x = _inputs(5, 3, seed)
    sweep = resnet_kernels(x, depth=4, sigma_w2=sigma_w2, sigma_b2=0.1, branch_scale=branch_scale,
                           all_depths=True)
    single = resnet_kernels(x, x, depth=4, sigma_w2=sigma_w2, sigma_b2=0.1, branch_scale=branch_scale)
    # x2=None takes the symmetric (upper-block) path: rounding scales with the largest entry, not each entry.
    np.testing.assert_allclose(sweep.ntk[-1], single.ntk, rtol=1e-13, atol=1e-13 * np.abs(single.ntk).max())
    for m in np.asarray(sweep.ntk):
        np.testing.assert_array_equal(m, m.T)
        assert np.linalg.eigvalsh(m).min() >= -1e-10 * np.abs(m).max()


def test_bad_input():
    x = _inputs(3, 2, 0)
    with pytest.raises(ValueError, match="branch_scale"):
        resnet_kernels(x, depth=3, sigma_w2=1.0, branch_scale="sqrt")
    with pytest.raises(ValueError, match="sigma_w2"):
        resnet_kernels(x, depth=3, sigma_w2=-1.0)
    with pytest.raises(ValueError, match="feature dims"):
        resnet_kernels(x, _inputs(3, 4, 0), depth=3, sigma_w2=1.0)
    with pytest.raises(ValueError, match="depth"):
        resnet_kernels(x, depth=0, sigma_w2=1.0)
