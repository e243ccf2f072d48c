"""FC NNGP/NTK: vs the empirical NTK of a wide explicit network, vs direct implementations of each
paper's recursion (Hayou, Jacot, Arora), invariants (hypothesis) and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree
from scipy import special

import ntkrepro  # noqa: F401  (x64)
from ntkrepro import blocks
from ntkrepro.kernels.fc import Kernels, arora_fc_kernels, arora_to_fc, fc_kernels, jacot_fc_kernels, jacot_to_fc
from ntkrepro.kernels.gaussian import from_callable


def _relu_np(s11, s12, s22):
    """Arc-cosine kernels in numpy: (E relu relu, E relu' relu')."""
    norm = np.sqrt(s11 * s22)
    lam = np.clip(s12 / norm, -1, 1)
    theta = np.arccos(lam)
    return norm * (np.sin(theta) + (np.pi - theta) * lam) / (2 * np.pi), (np.pi - theta) / (2 * np.pi)


def _erf_np(s11, s12, s22):
    denom = (1 + 2 * s11) * (1 + 2 * s22)
    return 2 / np.pi * np.arcsin(2 * s12 / np.sqrt(denom)), 4 / np.pi / np.sqrt(denom - 4 * s12**2)


EXPECT_NP = {"relu": _relu_np, "erf": _erf_np}


def _hayou_reference(x1, x2, depth, name, sigma_w2, sigma_b2):
    """Hayou Lemma 2, entry by entry in numpy (list over depths 1..depth of (nngp, ntk))."""
    f = EXPECT_NP[name]
    d = x1.shape[1]
    out = []
    sig = sigma_b2 + sigma_w2 * x1 @ x2.T / d
    q1 = sigma_b2 + sigma_w2 * np.sum(x1 * x1, 1) / d
    q2 = sigma_b2 + sigma_w2 * np.sum(x2 * x2, 1) / d
    ntk = sig.copy()
    out.append((sig, ntk))
    for _ in range(depth - 1):
        k, kdot = f(q1[:, None], sig, q2[None, :])
        sig_next = sigma_b2 + sigma_w2 * k
        ntk = sigma_w2 * kdot * ntk + sig_next
        q1 = sigma_b2 + sigma_w2 * f(q1, q1, q1)[0]
        q2 = sigma_b2 + sigma_w2 * f(q2, q2, q2)[0]
        sig = sig_next
        out.append((sig, ntk))
    return out


def _inputs(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


# ------------------------------------------------------------------ finite-width check


def _mlp_ntk(x, *, depth, width, phi, sigma_w2, sigma_b2, seed):
    """Empirical NTK of an explicit NTK-parameterized MLP (Hayou eq. 10): jacobian of the flattened
    parameters, contracted over parameters. float32 (ample at the 1/sqrt(width) tolerance)."""
    d = x.shape[1]
    widths = [d] + [width] * (depth - 1) + [1]
    keys = jax.random.split(jax.random.PRNGKey(seed), depth)
    params = [(jax.random.normal(k, (m, n), jnp.float32), jnp.zeros(m, jnp.float32))
              for k, n, m in zip(keys, widths[:-1], widths[1:], strict=True)]
    params = [(w, jax.random.normal(jax.random.fold_in(k, 1), b.shape, jnp.float32))
              for k, (w, b) in zip(keys, params, strict=True)]
    flat, unravel = ravel_pytree(params)
    sw, sb = math.sqrt(sigma_w2), math.sqrt(sigma_b2)

    def f(flat_params):
        h = jnp.asarray(x, jnp.float32).T
        for i, (w, b) in enumerate(unravel(flat_params)):
            pre = sw / math.sqrt(w.shape[1]) * (w @ h) + sb * b[:, None]
            h = phi(pre) if i < depth - 1 else pre
        return h[0]

    jac = jax.jacobian(f)(flat)
    return np.asarray(jac @ jac.T, np.float64)


@pytest.mark.parametrize("name,phi,sigma_w2,sigma_b2", [
    ("relu", jax.nn.relu, 2.0, 0.1),
    ("erf", jax.scipy.special.erf, 1.5, 0.2),
    ("tanh", jnp.tanh, 1.8, 0.05),
])
def test_analytic_ntk_matches_wide_network(name, phi, sigma_w2, sigma_b2):
    """Empirical NTKs fluctuate around the limit with relative size O(depth / sqrt(width)) (Jacot Thm. 1,
    Hanin & Nica 2019); width 2048 and 3 seeds averaged give ~ depth * 1.3%: tolerance 4% per depth."""
    x = _inputs(3, 4, seed=7)
    width, seeds = 2048, 3
    exact = fc_kernels(x, depth=4, activation=name, sigma_w2=sigma_w2, sigma_b2=sigma_b2, all_depths=True).ntk
    for depth in (1, 2, 3, 4):
        emp = np.mean([_mlp_ntk(x, depth=depth, width=width, phi=phi, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                                seed=s) for s in range(seeds)], axis=0)
        ref = np.asarray(exact[depth - 1])
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        rel = np.abs(emp - ref) / scale
        assert rel.max() < 0.04 * depth + 1e-5, (depth, rel.max())


# ------------------------------------------------------------------ the recursion itself


@pytest.mark.parametrize("name", ["relu", "erf"])
def test_matches_direct_hayou_recursion_at_every_depth(name):
    x1, x2 = _inputs(5, 3, 0), _inputs(4, 3, 1)
    ref = _hayou_reference(x1, x2, 6, name, 1.7, 0.3)
    got = fc_kernels(x1, x2, depth=6, activation=name, sigma_w2=1.7, sigma_b2=0.3, all_depths=True)
    assert got.nngp.shape == got.ntk.shape == (6, 5, 4)
    for depth, (nngp, ntk) in enumerate(ref, start=1):
        np.testing.assert_allclose(got.nngp[depth - 1], nngp, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.ntk[depth - 1], ntk, rtol=1e-12, atol=1e-14)
        single = fc_kernels(x1, x2, depth=depth, activation=name, sigma_w2=1.7, sigma_b2=0.3)
        np.testing.assert_allclose(single.ntk, ntk, rtol=1e-12, atol=1e-14)


def test_depth_one_is_the_linear_kernel():
    x = _inputs(4, 6, 2)
    k = fc_kernels(x, depth=1, sigma_w2=3.0, sigma_b2=0.5)
    np.testing.assert_allclose(k.ntk, 0.5 + 3.0 * x @ x.T / 6, rtol=1e-14)
    np.testing.assert_allclose(k.nngp, k.ntk, rtol=0)


def test_jacot_convention_against_jacot_recursion():
    """Jacot et al. 2018: Sigma(1) = x.x'/n0 + beta^2; Sigma(l+1) = E[s(u)s(v)] + beta^2;
    Theta(l+1) = Theta(l) Sigmadot(l+1) + Sigma(l+1), written here without any Hayou parameters."""
    beta, depth = 0.1, 4
    x = _inputs(5, 2, 3)
    sig = x @ x.T / 2 + beta**2
    theta = sig.copy()
    for _ in range(depth - 1):
        q = np.diag(sig)
        k, kdot = _relu_np(q[:, None], sig, q[None, :])
        sig = k + beta**2
        theta = theta * kdot + sig
    got = jacot_fc_kernels(x, depth=depth, beta=beta)
    np.testing.assert_allclose(got.ntk, theta, rtol=1e-12)
    np.testing.assert_allclose(got.nngp, sig, rtol=1e-12)
    assert jacot_to_fc(beta=0.1) == {"sigma_w2": 1.0, "sigma_b2": pytest.approx(0.01)}


@pytest.mark.parametrize("name,c_sigma", [("relu", 2.0), ("erf", 1.0 / (2 / np.pi * np.arcsin(2 / 3)))])
def test_arora_convention_against_arora_recursion(name, c_sigma):
    """Arora et al. 2019 eqs. 6-7: Sigma(0) = x.x' (no 1/d), Sigma(h) = c E[s s], Sigmadot(h) = c E[s' s'],
    Theta(0) = Sigma(0), Theta(h) = Theta(h-1) Sigmadot(h) + Sigma(h); L hidden layers, depth L + 1."""
    f = EXPECT_NP[name]
    x1, x2 = _inputs(4, 5, 4), _inputs(3, 5, 5)
    num_hidden = 3
    s12, q1, q2 = x1 @ x2.T, np.sum(x1 * x1, 1), np.sum(x2 * x2, 1)
    theta = s12.copy()
    for _ in range(num_hidden):
        k, kdot = f(q1[:, None], s12, q2[None, :])
        s12 = c_sigma * k
        theta = theta * c_sigma * kdot + s12
        q1, q2 = c_sigma * f(q1, q1, q1)[0], c_sigma * f(q2, q2, q2)[0]
    got = arora_fc_kernels(x1, x2, depth=num_hidden + 1, activation=name)
    np.testing.assert_allclose(got.ntk, theta, rtol=1e-11)
    np.testing.assert_allclose(got.nngp, s12, rtol=1e-11)
    _, params = arora_to_fc(x1, activation=name)
    assert params["sigma_w2"] == pytest.approx(c_sigma, rel=1e-12) and params["sigma_b2"] == 0.0


def test_numerical_activation_path_matches_closed_form_path():
    """tanh-style quadrature path (a callable) vs the closed form for the same function (erf)."""
    x1, x2 = _inputs(4, 3, 6), _inputs(3, 3, 7)
    closed = fc_kernels(x1, x2, depth=3, activation="erf", sigma_w2=1.3, sigma_b2=0.1)
    numeric = fc_kernels(x1, x2, depth=3, activation=from_callable(jax.scipy.special.erf, name="erf_q"),
                         sigma_w2=1.3, sigma_b2=0.1)
    np.testing.assert_allclose(numeric.ntk, closed.ntk, rtol=1e-11)
    np.testing.assert_allclose(numeric.nngp, closed.nngp, rtol=1e-11)


# ------------------------------------------------------------------ properties


# one shape (jit compiles once per shape and depth); values vary by seed, scale and a duplicated row
inputs_strategy = st.builds(
    lambda seed, scale, dup: _inputs(5, 3, seed)[[0, 1, 2, 3, 0 if dup else 4]] * scale,
    st.integers(0, 10_000), st.floats(0.1, 3.0), st.booleans())


@settings(max_examples=15, deadline=None)
@given(x=inputs_strategy, depth=st.sampled_from([1, 3, 6]), sigma_w2=st.floats(0.5, 3.0),
       sigma_b2=st.floats(0.0, 1.0),
       name=st.sampled_from(["relu", "erf", "leaky_relu:0.2"]))
def test_gram_is_symmetric_psd_and_the_triangle_path_equals_the_full_path(x, depth, sigma_w2, sigma_b2, name):
    tri = fc_kernels(x, depth=depth, activation=name, sigma_w2=sigma_w2, sigma_b2=sigma_b2, all_depths=True)
    full = fc_kernels(x, x, depth=depth, activation=name, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                      all_depths=True)
    for a in (tri.nngp, tri.ntk):
        a = np.asarray(a)
        np.testing.assert_array_equal(a, np.swapaxes(a, -1, -2))
        for m in a:
            assert np.linalg.eigvalsh(m).min() >= -1e-10 * np.abs(m).max()
    # Same recursion, different summation order: rounding scales with the largest entry, not each entry.
    np.testing.assert_allclose(tri.ntk, full.ntk, rtol=1e-13, atol=1e-13 * np.abs(full.ntk).max())
    np.testing.assert_allclose(tri.nngp, full.nngp, rtol=1e-13, atol=1e-13 * np.abs(full.nngp).max())


@settings(max_examples=10, deadline=None)
@given(x=inputs_strategy, depth=st.sampled_from([1, 4]), name=st.sampled_from(["relu", "erf"]))
def test_depth_sweep_equals_single_depth_calls(x, depth, name):
    sweep = fc_kernels(x, depth=depth, activation=name, sigma_w2=1.5, sigma_b2=0.2, all_depths=True)
    for depth_l in range(1, depth + 1):
        single = fc_kernels(x, depth=depth_l, activation=name, sigma_w2=1.5, sigma_b2=0.2)
        np.testing.assert_allclose(sweep.ntk[depth_l - 1], single.ntk, rtol=1e-13,
                                   atol=1e-13 * np.abs(single.ntk).max())
        np.testing.assert_allclose(sweep.nngp[depth_l - 1], single.nngp, rtol=1e-13,
                                   atol=1e-13 * np.abs(single.nngp).max())


@settings(max_examples=10, deadline=None)
@given(x=inputs_strategy, depth=st.sampled_from([2, 6]))
def test_float32_agrees_with_float64(x, depth):
    k64 = fc_kernels(x, depth=depth)
    k32 = fc_kernels(x, depth=depth, dtype=jnp.float32)
    assert k32.ntk.dtype == jnp.float32 and k64.ntk.dtype == jnp.float64
    scale = np.abs(np.asarray(k64.ntk)).max()
    np.testing.assert_allclose(k32.ntk, k64.ntk, atol=2e-5 * depth * scale)


def test_result_is_a_pytree_and_works_under_jit():
    x = _inputs(3, 2, 8)
    k = jax.jit(lambda a: fc_kernels(a, depth=3))(x)
    assert isinstance(k, Kernels)
    leaves = jax.tree_util.tree_leaves(k)
    assert len(leaves) == 2
    np.testing.assert_allclose(k.ntk, fc_kernels(x, depth=3).ntk, rtol=1e-14)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x1=np.ones((3, 2)), x2=np.ones((3, 4))), "feature dims"),
    (dict(x1=np.array([[1.0, np.nan]])), "NaN or inf"),
    (dict(x1=np.array([[1.0, np.inf]])), "NaN or inf"),
    (dict(x1=np.ones(3)), r"\(n, d\)"),
    (dict(x1=np.ones((3, 2)), sigma_w2=-1.0), "sigma_w2"),
    (dict(x1=np.ones((3, 2)), sigma_b2=float("nan")), "sigma_b2"),
    (dict(x1=np.ones((3, 2)), activation="swish_typo"), "unknown activation"),
    (dict(x1=np.ones((3, 2)), depth=0), "depth"),
    (dict(x1=np.ones((3, 2)), dtype=jnp.int32), "dtype"),
])
def test_bad_input_raises_before_compute(kwargs, match):
    kwargs.setdefault("depth", 2)
    x1 = kwargs.pop("x1")
    with pytest.raises(ValueError, match=match):
        fc_kernels(x1, **kwargs)


def test_special_function_reference_sanity():
    """The erf reference used above is itself right: E erf(u)^2 at s = 1 equals (2/pi) arcsin(2/3)."""
    z = np.random.default_rng(0).standard_normal(400_000)
    assert np.mean(special.erf(z) ** 2) == pytest.approx(2 / np.pi * np.arcsin(2 / 3), abs=3e-3)


@pytest.mark.parametrize("symmetric", [True, False])
def test_many_blocks_assemble_to_the_one_block_gram(monkeypatch, symmetric):
    x = _inputs(150, 4, seed=3)
    x2 = None if symmetric else _inputs(97, 4, seed=4)
    jax.clear_caches()
    one = fc_kernels(x, x2, depth=3, sigma_b2=0.1, all_depths=True)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 1)  # 64-row blocks: 3 x 3 (or 3 x 2) tiles, padded rows
    assert blocks.block_grid(150, 8) == (3, 50)
    jax.clear_caches()
    many = fc_kernels(x, x2, depth=3, sigma_b2=0.1, all_depths=True)
    jax.clear_caches()
    np.testing.assert_allclose(many.ntk, one.ntk, rtol=1e-13)
    np.testing.assert_allclose(many.nngp, one.nngp, rtol=1e-13)
    if symmetric:
        np.testing.assert_array_equal(many.ntk, np.swapaxes(many.ntk, -1, -2))


def test_layer_variances_are_the_diagonals_of_the_nngp_at_every_depth():
    """The per-input variances the tiles use (computed on vectors) equal the Gram's diagonal entries (computed
    on pairs), for a closed form and for a quadrature activation."""
    from ntkrepro.kernels.fc import layer_variances
    from ntkrepro.kernels.gaussian import get_activation

    x = _inputs(5, 7, seed=8)
    for name in ("relu", "tanh"):
        gram = fc_kernels(x, depth=4, activation=name, sigma_w2=1.6, sigma_b2=0.3, all_depths=True).nngp
        var = layer_variances(jnp.sum(jnp.asarray(x) ** 2, axis=-1), 7, 1.6, 0.3, depth=4,
                              activation=get_activation(name))
        assert var.shape == (3, 5)
        np.testing.assert_allclose(var, np.diagonal(np.asarray(gram[:3]), axis1=1, axis2=2), rtol=1e-13)
