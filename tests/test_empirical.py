"""Empirical kernels: brute-force gradient dot products, implementation agreement, Monte Carlo, distances."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import ntkrepro  # noqa: F401  (x64)
from ntkrepro import empirical
from ntkrepro.empirical import (
    empirical_nngp,
    empirical_ntk,
    estimate_costs,
    kernel_distance,
    kernel_velocity,
    monte_carlo_kernel,
)
from ntkrepro.nets import cnn, deq_net, fc, resnet

NETS = {
    "fc_standard_tanh": (lambda: fc(depth=3, width=12, out_dim=3, sigma_b2=0.2, activation=jnp.tanh,
                                    parameterization="standard"), (6, 4)),
    "cnn_vanilla": (lambda: cnn(depth=3, channels=3, out_dim=2), (4, 3, 4, 2)),
    "cnn_gap_fixed": (lambda: cnn(depth=4, channels=3, readout="gap", fix_first_last=True), (4, 4, 3, 1)),
    "resnet_scaled": (lambda: resnet(depth=4, width=8, out_dim=2, sigma_b2=0.1, branch_scale="scaled"),
                      (5, 3)),
    "deq": (lambda: deq_net(depth=3, width=9, sigma_w2=0.5, sigma_u2=0.3, sigma_b2=0.2, out_dim=2), (5, 4)),
}


def brute_force_ntk(apply_fn, params, x, mask):
    """(n, n, k, k) dot products of flattened parameter gradients, frozen leaves zeroed."""
    flat, unravel = ravel_pytree(params)
    keep, _ = ravel_pytree(jax.tree.map(lambda m, p: jnp.full(p.shape, float(m)), mask, params))
    jac = jax.jit(jax.jacrev(lambda v: apply_fn(unravel(v), x)))(flat) * keep
    return jnp.einsum("ika,jla->ijkl", jac, jac)


@pytest.mark.parametrize("name", sorted(NETS))
def test_empirical_ntk_equals_brute_force(name):
    make, shape = NETS[name]
    net = make()
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(7), 3)
    params = net.init_fn(key1, shape)
    x1 = jax.random.normal(key2, shape)
    x2 = jax.random.normal(key3, (3,) + shape[1:])
    mask = net.trainable_mask(params)
    brute = brute_force_ntk(net.apply_fn, params, jnp.concatenate([x1, x2]), mask)
    n1, k = shape[0], brute.shape[-1]
    cross, sym = brute[:n1, n1:], brute[:n1, :n1]
    tol = {"atol": 1e-12 * float(jnp.abs(brute).max()), "rtol": 1e-10}
    # batch_size=2: uneven blocks (padding) and mirrored symmetric blocks; the trainable mask given as a
    # pytree or as the network's callable.
    for implementation in ("jacobian", "ntvp"):
        got = empirical_ntk(net.apply_fn, params, x1, x2, implementation=implementation, batch_size=2,
                            trainable=mask, outputs="full")
        np.testing.assert_allclose(got, cross, **tol)
    got = empirical_ntk(net.apply_fn, params, x1, implementation="jacobian", trainable=net.trainable_mask)
    np.testing.assert_allclose(got, jnp.einsum("ijkk->ij", sym) / k, **tol)
    for implementation in ("jacobian", "ntvp"):
        got = empirical_ntk(net.apply_fn, params, x1, implementation=implementation, batch_size=2, trainable=mask,
                            outputs="full")
        np.testing.assert_allclose(got, sym, **tol)


def test_recomputed_column_jacobians_give_the_same_kernel(monkeypatch):
    """Above the column-cache budget the column Jacobians are recomputed per row block (and the NTK-vector
    product trace path agrees)."""
    net = cnn(depth=3, channels=3)
    shape = (5, 3, 3, 1)
    params = net.init_fn(jax.random.PRNGKey(0), shape)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    cached = empirical_ntk(net.apply_fn, params, x, implementation="jacobian", batch_size=2)
    monkeypatch.setattr(empirical, "COLUMN_CACHE_BYTES", 0)
    for implementation in ("jacobian", "ntvp"):
        recomputed = empirical_ntk(net.apply_fn, params, x, implementation=implementation, batch_size=2)
        np.testing.assert_allclose(recomputed, cached, rtol=1e-10, atol=1e-12 * float(jnp.abs(cached).max()))


def test_frozen_layers_change_the_kernel_by_their_gradient_gram():
    """NTK(all) - NTK(frozen first layer) = gradient Gram of the first layer alone."""
    net = fc(depth=3, width=16, sigma_b2=0.3)
    frozen = fc(depth=3, width=16, sigma_b2=0.3, frozen_layers=(1,))
    params = net.init_fn(jax.random.PRNGKey(0), (5, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    first_only = [jax.tree.map(lambda _, first=(i == 0): first, layer) for i, layer in enumerate(params)]
    full = empirical_ntk(net.apply_fn, params, x, trainable=net.trainable_mask)
    rest = empirical_ntk(frozen.apply_fn, params, x, trainable=frozen.trainable_mask)
    first = empirical_ntk(net.apply_fn, params, x, trainable=first_only)
    np.testing.assert_allclose(full - rest, first, rtol=1e-10, atol=1e-12)


def test_auto_picks_the_cheaper_implementation():
    """Conv nets reuse weights across pixels ([FP] >> N): Jacobian contraction; many outputs with the full
    k x k blocks: NTK-vector products (survey sec. 5.2)."""
    conv = cnn(depth=3, channels=8)
    shape = (4, 8, 8, 2)
    params = conv.init_fn(jax.random.PRNGKey(0), shape)
    x = jnp.ones(shape)
    costs = estimate_costs(conv.apply_fn, params, x)
    assert costs["n_params"] == 3 * 3 * 2 * 8 + 3 * 3 * 8 * 8 + 8 * 8 * 8
    assert costs["forward_flops"] > 10 * costs["n_params"]
    assert costs["jacobian"] < costs["ntvp"]
    wide_out = fc(depth=2, width=32, out_dim=20)
    params = wide_out.init_fn(jax.random.PRNGKey(0), (6, 5))
    costs = estimate_costs(wide_out.apply_fn, params, jnp.ones((6, 5)), outputs="full")
    assert costs["ntvp"] < costs["jacobian"]
    without_hook = lambda p, x: wide_out.apply_fn(p, x)  # noqa: E731  (hides the structured hook)
    auto = empirical_ntk(without_hook, params, jnp.ones((6, 5)), outputs="full")
    np.testing.assert_allclose(
        auto, empirical_ntk(wide_out.apply_fn, params, jnp.ones((6, 5)), outputs="full",
                            implementation="jacobian"), rtol=1e-10)


STRUCTURED_NETS = {
    "linear": (dict(depth=1, width=1), 1),
    "depth2_bias_standard_k3_scaled": (dict(depth=2, width=6, out_dim=3, sigma_b2=0.3, parameterization="standard",
                                            output_scale=0.5), 3),
    "depth3_tanh_bias_frozen_first": (dict(depth=3, width=5, out_dim=2, sigma_b2=0.2, activation=jnp.tanh,
                                           frozen_layers=(1,)), 2),
    "depth4_standard_frozen_middle_and_readout": (dict(depth=4, width=4, out_dim=3, sigma_w2=1.3,
                                                       parameterization="standard", frozen_layers=(2, 4)), 4),
}


@pytest.mark.parametrize("name", sorted(STRUCTURED_NETS))
def test_structured_ntk_equals_brute_force_and_jacobian(name):
    """Structured derivatives (feature Gram x derivative Gram per layer) give the gradient dot products:
    weights and biases, both parameterizations, output scale, k outputs (full and trace), frozen layers,
    x2 given (uneven blocks) and x2 = None (mirrored blocks)."""
    kwargs, d = STRUCTURED_NETS[name]
    net = fc(**kwargs)
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(11), 3)
    x1, x2 = jax.random.normal(key1, (5, d)), jax.random.normal(key2, (3, d))
    params = net.init_fn(key3, x1.shape)
    mask = net.trainable_mask(params)
    brute = brute_force_ntk(net.apply_fn, params, jnp.concatenate([x1, x2]), mask)
    cross, sym, k = brute[:5, 5:], brute[:5, :5], brute.shape[-1]
    tol = {"atol": 1e-12 * float(jnp.abs(brute).max()), "rtol": 1e-10}
    got = empirical_ntk(net.apply_fn, params, x1, x2, implementation="structured", batch_size=2,
                        trainable=net.trainable_mask, outputs="full")
    np.testing.assert_allclose(got, cross, **tol)
    np.testing.assert_allclose(got, empirical_ntk(net.apply_fn, params, x1, x2, implementation="jacobian",
                                                  trainable=mask, outputs="full"), **tol)
    got = empirical_ntk(net.apply_fn, params, x1, x2, implementation="structured", trainable=mask)
    np.testing.assert_allclose(got, jnp.einsum("ijkk->ij", cross) / k, **tol)
    got = empirical_ntk(net.apply_fn, params, x1, implementation="structured", batch_size=2, trainable=mask,
                        outputs="full")
    np.testing.assert_allclose(got, sym, **tol)
    got = empirical_ntk(net.apply_fn, params, x1, implementation="structured", trainable=mask)
    np.testing.assert_allclose(got, jnp.einsum("ijkk->ij", sym) / k, **tol)


def test_structured_ntk_counts_only_the_selected_leaves():
    """A mask that keeps some leaves of a layer (the biases, and the readout weight) matches brute force."""
    net = fc(depth=3, width=5, out_dim=2, sigma_b2=0.4)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    mask = [{"w": False, "b": True}, {"w": False, "b": True}, {"w": True, "b": False}]
    brute = brute_force_ntk(net.apply_fn, params, x, mask)
    got = empirical_ntk(net.apply_fn, params, x, implementation="structured", trainable=mask, outputs="full")
    np.testing.assert_allclose(got, brute, rtol=1e-10, atol=1e-12 * float(jnp.abs(brute).max()))


def test_auto_uses_structured_derivatives_where_the_net_has_the_hook(monkeypatch):
    """FC nets carry the layer hook: "auto" (also in monte_carlo_kernel) needs neither generic implementation;
    nets without it refuse an explicit "structured"."""
    net = fc(depth=3, width=6, out_dim=2, sigma_b2=0.1)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    expected = empirical_ntk(net.apply_fn, params, x, implementation="jacobian")
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(2), x, n_samples=2,
                            implementation="jacobian")

    def unused(*args, **kwargs):
        raise AssertionError("a generic implementation was used")

    monkeypatch.setattr(empirical, "_jacobian", unused)
    monkeypatch.setattr(empirical, "_ntvp", unused)
    np.testing.assert_allclose(empirical_ntk(net.apply_fn, params, x), expected, rtol=1e-10)
    again = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(2), x, n_samples=2)
    np.testing.assert_allclose(again.mean, mc.mean, rtol=1e-10)
    assert net.taps_fn is net.apply_fn.taps_fn
    conv = cnn(depth=2, channels=2)
    assert conv.taps_fn is None
    with pytest.raises(ValueError, match="needs apply_fn.taps_fn"):
        empirical_ntk(conv.apply_fn, conv.init_fn(jax.random.PRNGKey(0), (2, 3, 3, 1)), jnp.ones((2, 3, 3, 1)),
                      implementation="structured")


def test_readout_nngp_is_the_feature_kernel():
    """Depth 2: the readout-features kernel is sigma_w2/n phi(h1).phi(h1') + sigma_b2, computed by hand."""
    sigma_w2, sigma_b2, width = 1.7, 0.2, 11
    net = fc(depth=2, width=width, sigma_w2=sigma_w2, sigma_b2=sigma_b2, activation=jnp.tanh)
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
    params = net.init_fn(jax.random.PRNGKey(4), x.shape)
    h1 = math.sqrt(sigma_w2 / 3) * x @ params[0]["w"] + math.sqrt(sigma_b2) * params[0]["b"]
    features = jnp.tanh(h1)
    expected = sigma_w2 / width * features @ features.T + sigma_b2
    got = empirical_nngp(net.apply_fn, params, x, readout=net.readout_mask)  # structured derivatives
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    without_hook = lambda p, x: net.apply_fn(p, x)  # noqa: E731  (the Jacobian contraction)
    np.testing.assert_allclose(empirical_nngp(without_hook, params, x, readout=net.readout_mask), expected,
                               rtol=1e-12)
    out = net.apply_fn(params, x)
    np.testing.assert_allclose(empirical_nngp(net.apply_fn, params, x), out @ out.T, rtol=1e-12)


def test_monte_carlo_statistics_and_prefix_property():
    net = fc(depth=2, width=8, sigma_b2=0.1)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    key = jax.random.PRNGKey(5)
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=5, keep_samples=True)
    samples = np.asarray(mc.samples)
    assert samples.shape == (5, 4, 4)
    np.testing.assert_allclose(mc.mean, samples.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mc.std, samples.std(0, ddof=1), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(mc.stderr, samples.std(0, ddof=1) / math.sqrt(5), rtol=1e-9, atol=1e-14)
    first = empirical_ntk(net.apply_fn, net.init_fn(jax.random.split(key, 5)[0], x.shape), x)
    np.testing.assert_allclose(samples[0], first, rtol=1e-12)
    shorter = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=3, keep_samples=True)
    np.testing.assert_allclose(shorter.samples, samples[:3], rtol=1e-12)


MC_CASES = {  # (net, inputs, options): every implementation and kind of monte_carlo_kernel's chunks
    "structured": (lambda: fc(depth=3, width=7, out_dim=2, sigma_b2=0.1), (5, 3), {}),
    "jacobian_full": (lambda: fc(depth=2, width=6, out_dim=2), (4, 3),
                      {"implementation": "jacobian", "outputs": "full"}),
    "ntvp": (lambda: fc(depth=2, width=5, out_dim=2), (4, 3), {"implementation": "ntvp"}),
    "cnn_jacobian": (lambda: cnn(depth=2, channels=2, out_dim=2), (3, 3, 3, 1), {"implementation": "jacobian"}),
    "readout_nngp": (lambda: fc(depth=3, width=6, sigma_b2=0.2), (4, 3), {"kind": "nngp", "readout": "mask"}),
    "output_covariance": (lambda: fc(depth=2, width=6, out_dim=2), (4, 3), {"kind": "nngp", "outputs": "full"}),
}


@pytest.mark.parametrize("vmapped", [False, True], ids=["sequential", "vmapped"])
@pytest.mark.parametrize("case", list(MC_CASES))
def test_monte_carlo_chunks_equal_one_draw_at_a_time(case, vmapped, monkeypatch):
    """Chunks of draws in one call (one after another, and vmapped) give the draws of the one-draw loop and
    their brute-force mean and std, for K(x, x) and K(x, y) and a draw count that is no multiple of the chunk."""
    monkeypatch.setattr(empirical, "VMAP_DRAWS_ON_CPU", vmapped)
    make_net, shape, options = MC_CASES[case]
    net = make_net()
    if options.get("readout") == "mask":
        options = {**options, "readout": net.readout_mask}
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    key = jax.random.PRNGKey(3)
    for x2 in (None, x[:2] + 0.5):
        one = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, x2, n_samples=7, keep_samples=True,
                                 draws_per_call=1, **options)
        chunked = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, x2, n_samples=7, keep_samples=True,
                                     draws_per_call=3, **options)
        samples = np.asarray(one.samples)
        scale = float(np.abs(samples).max())
        np.testing.assert_allclose(chunked.samples, samples, rtol=1e-12, atol=1e-13 * scale)
        np.testing.assert_allclose(chunked.mean, samples.mean(0), rtol=1e-12, atol=1e-13 * scale)
        np.testing.assert_allclose(chunked.std, samples.std(0, ddof=1), rtol=1e-9, atol=1e-13 * scale)
        np.testing.assert_allclose(one.std, samples.std(0, ddof=1), rtol=1e-9, atol=1e-13 * scale)
        if options.get("kind") == "nngp":
            continue
        if x2 is None:  # the upper triangle mirrored, as the blocked kernel: exactly symmetric
            axes = (0, 2, 1) if samples.ndim == 3 else (0, 2, 1, 4, 3)
            np.testing.assert_array_equal(chunked.samples, np.transpose(chunked.samples, axes))
        params = net.init_fn(jax.random.split(key, 7)[0], x.shape)
        np.testing.assert_allclose(chunked.samples[0], empirical_ntk(net.apply_fn, params, x, x2, **options),
                                   rtol=1e-12, atol=1e-13 * scale)


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.booleans())
def test_monte_carlo_chunked_moments_equal_one_by_one(n_samples, per_call, keep):
    """Chan's merge of chunk moments equals Welford's one-draw updates for any chunk size (the draws are the
    same: the first m of n_samples draws do not depend on n_samples)."""
    net = PSD_NET
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 3))
    one = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(7), x, n_samples=n_samples,
                             draws_per_call=1, keep_samples=keep)
    chunked = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(7), x, n_samples=n_samples,
                                 draws_per_call=per_call, keep_samples=keep)
    scale = float(jnp.abs(one.mean).max())
    np.testing.assert_allclose(chunked.mean, one.mean, rtol=1e-12, atol=1e-13 * scale)
    np.testing.assert_allclose(chunked.std, one.std, rtol=1e-9, atol=1e-12 * scale)
    assert chunked.n_samples == n_samples and (chunked.samples is None) == (not keep)
    if keep:
        np.testing.assert_allclose(chunked.samples, one.samples, rtol=1e-12, atol=1e-13 * scale)


def test_monte_carlo_kernel_that_needs_blocks_goes_draw_by_draw(monkeypatch):
    """A batch_size below the number of inputs keeps the blocked one-draw path whatever draws_per_call."""
    net = fc(depth=2, width=5)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))

    def unused(*args, **kwargs):
        raise AssertionError("a chunk of draws was compiled")

    monkeypatch.setattr(empirical, "_draw_chunk", unused)
    blocked = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(1), x, n_samples=3, batch_size=2,
                                 draws_per_call=3, keep_samples=True)
    params = net.init_fn(jax.random.split(jax.random.PRNGKey(1), 3)[2], x.shape)
    np.testing.assert_allclose(blocked.samples[2], empirical_ntk(net.apply_fn, params, x), rtol=1e-12)


def test_monte_carlo_output_covariance_converges_to_the_linear_nngp():
    """Depth 1: f = sqrt(sw2/d) W x + sqrt(sb2) b, so E[f f'] = sw2 x.x'/d + sb2 exactly (no width bias);
    the Monte Carlo mean must be within 5 standard errors of it."""
    sigma_w2, sigma_b2 = 1.5, 0.4
    net = fc(depth=1, width=1, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 2))
    mc = monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(2), x, n_samples=200, kind="nngp")
    exact = sigma_w2 * x @ x.T / 2 + sigma_b2
    assert np.all(np.abs(np.asarray(mc.mean - exact)) <= 5 * np.asarray(mc.stderr) + 1e-12)
    assert float(jnp.max(mc.stderr)) < 0.3


def test_kernel_distance_closed_cases():
    h = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    assert float(kernel_distance(h, 4.0 * h)) == pytest.approx(0.0, abs=1e-15)
    assert float(kernel_distance(h, -h)) == pytest.approx(2.0)
    assert float(kernel_distance(jnp.eye(2), jnp.array([[0.0, 1.0], [1.0, 0.0]]))) == pytest.approx(1.0)
    # 1 - cos of the angle between vec(H) and vec(H'): (1,0,0,1) vs (1,0,0,0) -> 1 - 1/sqrt(2)
    assert float(kernel_distance(jnp.eye(2), jnp.diag(jnp.array([1.0, 0.0])))) == pytest.approx(
        1 - 1 / math.sqrt(2))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=4, max_size=4), st.lists(st.floats(-3, 3), min_size=4, max_size=4),
       st.floats(0.1, 10.0))
def test_kernel_distance_invariants(a, b, c):
    h1, h2 = jnp.array(a).reshape(2, 2), jnp.array(b).reshape(2, 2)
    if float(jnp.linalg.norm(h1)) < 1e-3 or float(jnp.linalg.norm(h2)) < 1e-3:
        return
    d = float(kernel_distance(h1, h2))
    assert -1e-12 <= d <= 2 + 1e-12
    assert d == pytest.approx(float(kernel_distance(h2, h1)), abs=1e-12)
    assert d == pytest.approx(float(kernel_distance(c * h1, h2)), abs=1e-12)


def test_kernel_velocity_divides_by_time():
    h0 = jnp.eye(2)
    h1 = jnp.diag(jnp.array([1.0, 0.0]))
    v = kernel_velocity(jnp.stack([h0, h0, h1]), steps=jnp.array([0, 2, 6]))
    np.testing.assert_allclose(v, [0.0, (1 - 1 / math.sqrt(2)) / 4], atol=1e-15)


PSD_NET = fc(depth=3, width=8, activation=jax.scipy.special.erf, sigma_b2=0.1)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_empirical_ntk_is_symmetric_psd_and_permutation_equivariant(seed):
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(key1, (4, 3))
    params = PSD_NET.init_fn(key2, x.shape)
    theta = np.asarray(empirical_ntk(PSD_NET.apply_fn, params, x, implementation="jacobian"))
    np.testing.assert_allclose(theta, theta.T, rtol=1e-12, atol=1e-12)
    assert np.linalg.eigvalsh(theta).min() >= -1e-10 * np.abs(theta).max()
    perm = np.asarray(jax.random.permutation(key3, 4))
    permuted = np.asarray(empirical_ntk(PSD_NET.apply_fn, params, x[perm], implementation="jacobian"))
    np.testing.assert_allclose(permuted, theta[np.ix_(perm, perm)], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"implementation": "magic"}, "implementation must be one of"),
        ({"outputs": "diag"}, "outputs must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"x2": jnp.ones((3, 4))}, "inconsistent input shapes"),
        ({"trainable": [{"w": False}, {"w": False}]}, "selects no parameters"),
        ({"trainable": [{"w": True}]}, "structure of params"),
    ],
)
def test_empirical_ntk_bad_input(kwargs, message):
    net = fc(depth=2, width=4)
    params = net.init_fn(jax.random.PRNGKey(0), (2, 3))
    x2 = kwargs.pop("x2", None)
    with pytest.raises(ValueError, match=message):
        empirical_ntk(net.apply_fn, params, jnp.ones((2, 3)), x2, **kwargs)


def test_monte_carlo_and_distance_bad_input():
    net = fc(depth=2, width=4)
    with pytest.raises(ValueError, match="n_samples"):
        monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), jnp.ones((2, 3)), n_samples=0)
    with pytest.raises(ValueError, match="kind"):
        monte_carlo_kernel(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), jnp.ones((2, 3)), n_samples=1,
                           kind="cntk")

    def unused(*args, **kwargs):
        raise AssertionError("a draw was made")

    for bad_chunk in (0, 2.5, True, -1):
        with pytest.raises(ValueError, match="draws_per_call must be a positive integer or None"):
            monte_carlo_kernel(unused, net.apply_fn, jax.random.PRNGKey(0), jnp.ones((2, 3)), n_samples=2,
                               draws_per_call=bad_chunk)
    with pytest.raises(ValueError, match="shapes differ"):
        kernel_distance(jnp.eye(2), jnp.eye(3))
    with pytest.raises(ValueError, match="zero"):
        kernel_distance(jnp.eye(2), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="strictly increasing"):
        kernel_velocity(jnp.stack([jnp.eye(2)] * 3), steps=jnp.array([0, 0, 1]))
