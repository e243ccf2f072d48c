"""Conventions shared by every network: parameterizations, masks, initialization, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.empirical import empirical_ntk
from ntkrepro.nets import cnn, combine, deq_net, fc, partition, resnet

FACTORIES = {
    "fc": (lambda **kw: fc(depth=3, width=16, sigma_b2=0.1, **kw), (5, 4)),
    "cnn": (lambda **kw: cnn(depth=3, channels=4, **kw), (3, 5, 5, 2)),
    "resnet": (lambda **kw: resnet(depth=3, width=8, sigma_b2=0.1, **kw), (5, 4)),
    "deq": (lambda **kw: deq_net(depth=3, width=8, sigma_w2=0.5, sigma_u2=0.3, sigma_b2=0.2, **kw), (5, 4)),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_standard_parameterization_gives_the_same_function(name):
    """Same key -> the same function at init in both parameterizations (the scale moves from the forward
    pass into the initialization)."""
    make, shape = FACTORIES[name]
    ntk_net, sp_net = make(), make(parameterization="standard")
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    p_ntk, p_sp = ntk_net.init_fn(key, shape), sp_net.init_fn(key, shape)
    np.testing.assert_allclose(sp_net.apply_fn(p_sp, x), ntk_net.apply_fn(p_ntk, x), rtol=1e-12, atol=1e-12)


def test_standard_parameterization_rescales_each_layers_gradient():
    """Standard vs NTK parameterization, same function: layer l's gradient Gram is multiplied by 1/scale_l^2
    (d f / d w_std = (d f / d w_ntk) / scale), so the NTKs differ by that per-layer factor."""
    d, width, sigma_w2, sigma_b2 = 3, 16, 2.0, 0.1
    ntk_net = fc(depth=2, width=width, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    sp_net = fc(depth=2, width=width, sigma_w2=sigma_w2, sigma_b2=sigma_b2, parameterization="standard")
    key, x = jax.random.PRNGKey(0), jax.random.normal(jax.random.PRNGKey(1), (5, d))
    p_ntk, p_sp = ntk_net.init_fn(key, x.shape), sp_net.init_fn(key, x.shape)
    scales = [{"w": sigma_w2 / d, "b": sigma_b2}, {"w": sigma_w2 / width, "b": sigma_b2}]
    expected = 0.0
    for i, layer in enumerate(scales):
        for name, scale2 in layer.items():
            only = [{n: (j == i and n == name) for n in lay} for j, lay in enumerate(p_ntk)]
            expected = expected + empirical_ntk(ntk_net.apply_fn, p_ntk, x, trainable=only,
                                                implementation="jacobian") / scale2
    got = empirical_ntk(sp_net.apply_fn, p_sp, x, implementation="jacobian")
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_init_is_seeded_traceable_and_ntk_params_are_standard_normal(name):
    make, shape = FACTORIES[name]
    net = make()
    p1 = net.init_fn(jax.random.PRNGKey(3), shape)
    p2 = net.init_fn(jax.random.PRNGKey(3), shape)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_array_equal(a, b)
    batched = jax.vmap(lambda k: net.init_fn(k, shape))(jax.random.split(jax.random.PRNGKey(3), 2))
    assert jax.tree.leaves(batched)[0].shape[0] == 2
    big = fc(depth=2, width=512).init_fn(jax.random.PRNGKey(9), (1, 256))
    flat = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(big)])
    assert abs(flat.mean()) < 5 / math.sqrt(flat.size)
    assert abs(flat.var() - 1) < 5 * math.sqrt(2 / flat.size)


def test_masks_partition_and_combine():
    net = fc(depth=3, width=4, sigma_b2=0.1, frozen_layers=(2,))
    params = net.init_fn(jax.random.PRNGKey(0), (2, 3))
    mask = net.trainable_mask(params)
    assert [sorted(layer.items()) for layer in mask] == [
        [("b", True), ("w", True)], [("b", False), ("w", False)], [("b", True), ("w", True)]]
    assert [set(layer.values()) for layer in net.readout_mask(params)] == [{False}, {False}, {True}]
    selected, rest = partition(params, mask)
    assert selected[1]["w"] is None and rest[0]["w"] is None
    restored = combine(selected, rest)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert cnn(depth=4, channels=2, fix_first_last=True).trainable_mask(
        cnn(depth=4, channels=2).init_fn(jax.random.PRNGKey(0), (1, 3, 3, 1))) == [
            {"w": False}, {"w": True}, {"w": True}, {"w": False}]
    assert resnet(depth=2, width=3).readout_mask is None


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: fc(depth=2, width=0), "width must be an integer >= 1"),
        (lambda: fc(depth=0, width=3), "depth must be an integer >= 1"),
        (lambda: fc(depth=2, width=2.5), "width must be an integer >= 1"),
        (lambda: fc(depth=2, width=3, sigma_w2=-1.0), "sigma_w2 must be finite and >= 0"),
        (lambda: fc(depth=2, width=3, parameterization="mup"), "parameterization must be one of"),
        (lambda: fc(depth=2, width=3, activation="swishy"), "unknown activation"),
        (lambda: fc(depth=2, width=3, frozen_layers=(1, 2)), "nothing left to train"),
        (lambda: fc(depth=2, width=3, frozen_layers=(3,)), r"frozen_layers must lie in 1\.\.2"),
        (lambda: cnn(depth=1, channels=3), "depth must be an integer >= 2"),
        (lambda: cnn(depth=3, channels=0), "channels must be an integer >= 1"),
        (lambda: cnn(depth=3, channels=3, filter_size=2), "filter_size must be odd"),
        (lambda: cnn(depth=3, channels=3, readout="max"), "readout must be one of"),
        (lambda: cnn(depth=2, channels=3, fix_first_last=True), "nothing left to train"),
        (lambda: resnet(depth=2, width=2, out_dim=3), r"out_dim \(3\) must not exceed width \(2\)"),
        (lambda: resnet(depth=2, width=2, branch_scale="sqrt"), "branch_scale must be one of"),
        (lambda: deq_net(depth=2, width=0, sigma_w2=0.5, sigma_u2=0.5, sigma_b2=0.0), "width must be"),
        (lambda: deq_net(depth=2, width=3, sigma_w2=0.5, sigma_u2=-0.5, sigma_b2=0.0), "sigma_u2 must be"),
    ],
)
def test_bad_hyperparameters(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    ("name", "init_shape", "apply_shape", "message"),
    [
        ("fc", (2, 4), (2, 5), r"fc: input of shape \(2, 5\) does not match the expected \(n, 4\)"),
        ("fc", (2, 4), (2, 2, 2), "does not match"),
        ("fc", (2, 4, 1), None, r"input_shape must be \(n, d\)"),
        ("cnn", (3, 5, 5, 2), (3, 5, 6, 2), r"expected \(n, 5, 5, 2\)"),
        ("cnn", (3, 5, 5), None, r"input_shape must be \(n, P, Q, C0\)"),
        ("resnet", (5, 4), (5, 3), "does not match"),
        ("deq", (5, 4), (5, 3), "does not match"),
    ],
)
def test_inconsistent_input_shapes(name, init_shape, apply_shape, message):
    net = FACTORIES[name][0]()
    if apply_shape is None:
        with pytest.raises(ValueError, match=message):
            net.init_fn(jax.random.PRNGKey(0), init_shape)
        return
    params = net.init_fn(jax.random.PRNGKey(0), init_shape)
    with pytest.raises(ValueError, match=message):
        net.apply_fn(params, jnp.ones(apply_shape))


def test_gap_readout_accepts_any_image_size():
    net = cnn(depth=3, channels=3, readout="gap")
    params = net.init_fn(jax.random.PRNGKey(0), (2, 5, 5, 2))
    assert net.apply_fn(params, jnp.ones((4, 7, 3, 2))).shape == (4, 1)
    with pytest.raises(ValueError, match=r"expected \(n, \*, \*, 2\)"):
        net.apply_fn(params, jnp.ones((4, 7, 3, 1)))
