"""Training loops: convergence, seeding, divergence, frozen layers, schedules, and the linearized regime."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.empirical import empirical_ntk
from ntkrepro.nets import cnn, fc
from ntkrepro.train import (
    TrainingDiverged,
    accuracy,
    cross_entropy_loss,
    square_loss,
    step_decay_schedule,
    train,
)


def circle_data(n, key):
    angles = jnp.sort(jax.random.uniform(key, (n,), minval=-math.pi, maxval=math.pi))
    x = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return x, jnp.sin(2 * angles)[:, None]


def test_full_batch_gd_fits_a_tiny_problem():
    x, y = circle_data(6, jax.random.PRNGKey(0))
    net = fc(depth=2, width=256, sigma_b2=0.1)
    params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    result = train(net.apply_fn, params, x, y, steps=2000, learning_rate=1.0, chunk_size=500)
    assert result.history["loss"].shape == (2000,)
    np.testing.assert_array_equal(result.history["step"], np.arange(2000))
    assert result.history["loss"][0] > 0.05
    assert result.evals[-1]["train_loss"] < 1e-6
    assert result.evals[-1]["step"] == 2000
    assert float(square_loss(net.apply_fn(result.params, x), y)) == pytest.approx(
        result.evals[-1]["train_loss"], rel=1e-12)


def test_loss_functions_match_their_definitions():
    f = jnp.array([[1.0, 2.0], [0.5, -1.0]])
    y = jnp.array([[0.0, 2.0], [1.0, 1.0]])
    assert float(square_loss(f, y)) == pytest.approx((1.0 + 0.25 + 4.0) / 4)  # (1/2N) sum ||f - y||^2
    labels = jnp.array([1, 1])
    expected = -np.mean([2.0 - np.log(np.exp(1) + np.exp(2)), -1.0 - np.log(np.exp(0.5) + np.exp(-1))])
    assert float(cross_entropy_loss(f, labels)) == pytest.approx(expected)
    assert float(cross_entropy_loss(f, jax.nn.one_hot(labels, 2))) == pytest.approx(expected)
    assert accuracy(f, labels) == 0.5
    assert accuracy(jnp.array([[0.3], [-2.0], [1.0]]), jnp.array([1.0, -1.0, -1.0])) == pytest.approx(2 / 3)


def test_sgd_is_seeded_bit_identical_and_cross_entropy_learns():
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(key, (40, 3))
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    net = fc(depth=3, width=64, out_dim=2, sigma_b2=0.05)
    params = net.init_fn(jax.random.PRNGKey(4), x.shape)
    schedule = step_decay_schedule(1.0, boundaries=[150, 250], factor=0.5)

    def run(seed):
        return train(net.apply_fn, params, x, labels, steps=300, learning_rate=schedule, loss="cross_entropy",
                     batch_size=8, key=jax.random.PRNGKey(seed), eval_every=100)

    first, again, other = run(0), run(0), run(1)
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.history["loss"], again.history["loss"])
    assert not np.array_equal(first.history["loss"], other.history["loss"])
    np.testing.assert_allclose(first.history["learning_rate"][[0, 149, 150, 249, 250, 299]],
                               [1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    assert [e["step"] for e in first.evals] == [0, 100, 200, 300]
    assert first.evals[-1]["train_accuracy"] == 1.0
    assert first.evals[-1]["train_loss"] < 0.5 * first.evals[0]["train_loss"]


def test_minibatches_cover_each_epoch_once():
    """With lr tiny the loss of step s is the loss at init on batch s: each epoch's batches partition the
    data (n divisible by the batch size), so their mean is the full-batch loss at init."""
    x, y = circle_data(12, jax.random.PRNGKey(0))
    net = fc(depth=2, width=16)
    params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    result = train(net.apply_fn, params, x, y, steps=6, learning_rate=1e-300, batch_size=4,
                   key=jax.random.PRNGKey(2))
    full = float(square_loss(net.apply_fn(params, x), y))
    losses = result.history["loss"]
    assert np.mean(losses[:3]) == pytest.approx(full, rel=1e-12)
    assert np.mean(losses[3:]) == pytest.approx(full, rel=1e-12)
    assert not np.allclose(losses[:3], losses[3:])  # a new permutation in epoch 2


def test_divergence_is_detected_with_the_step_and_history():
    x, y = circle_data(6, jax.random.PRNGKey(0))
    net = fc(depth=1, width=1, dtype=jnp.float32)  # linear regression: lr >> 2 / lambda_max blows up
    params = net.init_fn(jax.random.PRNGKey(1), x.shape)
    seen = []
    with pytest.raises(TrainingDiverged, match=r"^diverged: non-finite loss at step \d+$") as info:
        train(net.apply_fn, params, x, 100 * y, steps=500, learning_rate=50.0, chunk_size=7,
              on_step=lambda step, metrics: seen.append((step, metrics["loss"])))
    err = info.value
    losses = err.history["loss"]
    assert err.step == len(losses) - 1 == err.history["step"][-1]
    assert not np.isfinite(losses[-1]) and np.all(np.isfinite(losses[:-1]))
    assert err.step > 0 and str(err) == f"diverged: non-finite loss at step {err.step}"
    assert [s for s, _ in seen] == list(range(err.step + 1))


def test_frozen_layers_are_not_updated_and_kernel_distance_is_tracked():
    shape = (6, 4, 4, 1)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    y = jax.random.normal(jax.random.PRNGKey(1), (6, 1))
    net = cnn(depth=3, channels=8, readout="gap", fix_first_last=True)
    params = net.init_fn(jax.random.PRNGKey(2), shape)
    result = train(net.apply_fn, params, x, y, steps=20, learning_rate=0.5, trainable=net.trainable_mask,
                   eval_every=10, kernel_inputs=x[:3], x_test=x[3:], y_test=y[3:])
    np.testing.assert_array_equal(result.params[0]["w"], params[0]["w"])
    np.testing.assert_array_equal(result.params[2]["w"], params[2]["w"])
    assert not np.allclose(result.params[1]["w"], params[1]["w"])
    distances = [e["kernel_distance"] for e in result.evals]
    assert distances[0] == pytest.approx(0.0, abs=1e-12)
    assert distances[-1] > 0
    assert "test_loss" in result.evals[-1]


def linearized_gd(theta0, f0_train, f0_test, theta_test_train, y, *, lr, steps):
    """Exact GD on the model linearized at init with the mean loss: f_{s+1} = f_s - (lr/N) Theta (f_s - y)
    on the train set, and f_test = f0_test - (lr/N) Theta(test, train) sum_s (f_s - y)."""
    theta0, f, y = np.asarray(theta0), np.asarray(f0_train), np.asarray(y)
    n = y.shape[0]
    acc = np.zeros_like(f)
    for _ in range(steps):
        acc = acc + (f - y)
        f = f - lr / n * theta0 @ (f - y)
    return f, np.asarray(f0_test) - lr / n * np.asarray(theta_test_train) @ acc


def test_wide_nets_track_the_linearized_dynamics():
    """Jacot/Lee: the trained net stays close to its linearization; the gap shrinks with width
    (like 1/sqrt(width) in the NTK parameterization)."""
    x_all, y_all = circle_data(12, jax.random.PRNGKey(5))
    x, y, x_test = x_all[::2], y_all[::2], x_all[1::2]
    errors = []
    widths = (64, 256, 1024)
    for width in widths:
        net = fc(depth=3, width=width, sigma_b2=0.1)
        rel = []
        for seed in range(4):
            params = net.init_fn(jax.random.PRNGKey(seed), x.shape)
            result = train(net.apply_fn, params, x, y, steps=100, learning_rate=0.5, chunk_size=100)
            both = jnp.concatenate([x, x_test])
            theta = empirical_ntk(net.apply_fn, params, both)
            f0 = net.apply_fn(params, both)
            lin_train, lin_test = linearized_gd(theta[:6, :6], f0[:6], f0[6:], theta[6:, :6], y, lr=0.5,
                                                steps=100)
            lin = np.concatenate([lin_train, lin_test])
            net_out = np.asarray(net.apply_fn(result.params, both))
            rel.append(float(np.linalg.norm(net_out - lin) / np.linalg.norm(lin - np.asarray(f0))))
        errors.append(np.mean(rel))
    assert errors[0] > errors[1] > errors[2]
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.9 < slope < -0.3, (errors, slope)
    assert errors[-1] < 0.03


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate must be finite and > 0"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"batch_size": 3}, "needs a PRNG key"),
        ({"batch_size": 99, "key": jax.random.PRNGKey(0)}, r"batch_size must be an integer in \[1, 6\]"),
        ({"x_test": jnp.ones((2, 3)), "y_test": jnp.ones((2, 1))}, "inconsistent input shapes"),
        ({"x_test": jnp.ones((2, 2))}, "x_test and y_test go together"),
        ({"y": jnp.ones((5, 1))}, "5 targets for 6 inputs"),
        ({"y": jnp.ones((6, 2))}, r"square loss needs targets of shape \(6, 1\)"),
        ({"loss": "cross_entropy"}, "at least 2 outputs"),
        ({"eval_every": 0}, "eval_every must be a positive integer"),
    ],
)
def test_train_bad_input(kwargs, message):
    x, y = circle_data(6, jax.random.PRNGKey(0))
    net = fc(depth=2, width=4)
    params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    args = {"steps": 5, **kwargs}
    y = args.pop("y", y)
    with pytest.raises(ValueError, match=message):
        train(net.apply_fn, params, x, y, **args)


def test_cross_entropy_label_and_schedule_validation():
    x = jnp.ones((4, 2))
    net = fc(depth=2, width=4, out_dim=3)
    params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        train(net.apply_fn, params, x, jnp.array([0, 1, 3, 2]), steps=1, loss="cross_entropy")
    with pytest.raises(ValueError, match="boundaries must be increasing"):
        step_decay_schedule(0.1, boundaries=[10, 5])
