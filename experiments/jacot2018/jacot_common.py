"""Shared pieces of the Jacot et al. 2018 stages: the paper's network, seeded inits, a compiled
full-batch gradient-descent stepper and an NTK row. The limiting kernels are
``ntkrepro.kernels.fc.jacot_fc_kernels`` (the same convention, through ``jacot_to_fc``).

Jacot's convention (Sec. 2): a~(l+1) = W(l) a(l) / sqrt(n_l) + beta b(l), all W, b ~ N(0, 1), the
1/sqrt(n_l) in the forward pass (NTK parameterization). In the library's (Hayou/Lee) convention this is
sigma_w2 = 1 and sigma_b2 = beta^2 for every layer, the first included (Sigma(1) = x.x'/n_0 + beta^2).
The cost is the mean (1/2N) sum_i (f(x_i) - y_i)^2 (Sec. 5), so GD with learning rate 1.0 runs the
kernel gradient flow with Theta(X, X)/N, one unit of time per step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ntkrepro.kernels.fc import jacot_to_fc
from ntkrepro.nets import Network, fc
from ntkrepro.stats import Estimate, mean_se
from ntkrepro.train import square_loss


def jacot_net(*, depth: int, width: int, beta: float, dtype=jnp.float64) -> Network:
    """Jacot's fully connected ReLU net of ``depth`` weight layers, equal hidden widths, one output."""
    return fc(depth=depth, width=width, out_dim=1, activation="relu", parameterization="ntk", dtype=dtype,
              **jacot_to_fc(beta=beta))


def init_key(seed: int, *stream: int) -> jax.Array:
    """A PRNG key derived from the config seed and integer stream tags (e.g. width, init index)."""
    key = jax.random.PRNGKey(int(seed))
    for tag in stream:
        key = jax.random.fold_in(key, int(tag))
    return key


def gd_stepper(apply_fn: Callable, *, learning_rate: float, steps: int) -> Callable:
    """A jitted ``advance(params, x, y) -> params`` making ``steps`` full-batch GD updates on the mean
    square loss (``ntkrepro.train.square_loss``). Compiled once per shape and reused across inits, so a
    trajectory can be recorded by calling it repeatedly (``ntkrepro.train.train`` returns only the
    final parameters)."""
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    grad = jax.grad(lambda p, x, y: square_loss(apply_fn(p, x), y))

    @jax.jit
    def advance(params, x, y):
        def step(p, _):
            g = grad(p, x, y)
            return jax.tree.map(lambda a, b: a - learning_rate * b, p, g), None

        return jax.lax.scan(step, params, None, length=int(steps))[0]

    return advance


def ntk_row_fn(apply_fn: Callable) -> Callable:
    """A jitted ``row(params, x0, x) -> Theta(x0, x)`` (shape (n,)) of a one-output net: the gradient
    g0 = d f(x0)/d theta by one VJP, then Theta(x0, x_i) = <d f(x_i)/d theta, g0> for all x_i by one JVP
    of the batched forward pass along g0 (a few forward passes instead of n Jacobian rows)."""

    @jax.jit
    def row(params, x0, x):
        g0 = jax.grad(lambda p: apply_fn(p, x0)[0, 0])(params)
        return jax.jvp(lambda p: apply_fn(p, x)[:, 0], (params,), (g0,))[1]

    return row


def circle_points(angles) -> np.ndarray:
    """(cos g, sin g) for each angle g: (n, 2)."""
    g = np.asarray(angles, dtype=np.float64)
    return np.stack([np.cos(g), np.sin(g)], axis=1)


# ---- sizes that would exhaust memory (estimated from the config, never allocated) ---------------------

FLOAT32_BYTES = 4  # the typed params do not see `precision`: their estimates use the smallest float


def itemsize(precision: str) -> int:
    """Bytes of one float at the run's ``precision``."""
    return 4 if precision == "float32" else 8


def width_estimates(widths, *, depth: int) -> list:
    """What the widest width alone drives: a hidden-to-hidden weight matrix (width x width) when the net
    has one (depth >= 3), at float32 (a lower bound whatever the precision)."""
    if depth < 3:
        return []
    return [("params.widths", max(widths), FLOAT32_BYTES, 2,
             "a hidden weight matrix of the widest width (width x width, float32)")]


def activation_estimate(path: str, n: int, *, widths, depth: int, precision: str, batch: str) -> list:
    """Full-batch GD on ``n`` inputs keeps the activations of every hidden layer for the backward pass:
    (depth - 1) x n x widest width floats (none at depth 1)."""
    if depth < 2:
        return []
    return [(path, n, itemsize(precision) * max(widths) * (depth - 1), 1,
             f"the hidden activations kept for backpropagation ((depth - 1) x {batch} x widest width, "
             f"{precision})")]


def decreasing(values) -> bool | None:
    """Whether ``values`` (ordered by increasing width) strictly decrease; None (not measured) for
    fewer than two values: an ordering over one width compares nothing."""
    v = list(values)
    if len(v) < 2:
        return None
    return bool(all(a > b for a, b in zip(v, v[1:], strict=False)))


def jackknife(samples, statistic: Callable, *, over: str = "inits") -> Estimate:
    """``statistic(samples)`` with its delete-one jackknife standard error over the first axis of
    ``samples`` (the inits or trials): se^2 = (n-1)/n sum_i (theta_(-i) - mean theta_(-))^2, computed as
    the standard error of the mean of the pseudo-values n theta - (n-1) theta_(-i)
    (``ntkrepro.stats.mean_se``). For a statistic that is a plain mean it equals s / sqrt(n). The se is
    nan (not measured) where a leave-one-out value is undefined (a std of two inits)."""
    s = np.asarray(samples)
    n = s.shape[0]
    if n < 2:
        raise ValueError(f"a jackknife needs at least two {over}, got {n}")
    full = float(statistic(s))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "degrees of freedom <= 0"
        loo = np.array([float(statistic(np.delete(s, i, axis=0))) for i in range(n)])
    if not np.all(np.isfinite(loo)):  # e.g. a std over the n - 1 = 1 remaining: no spread measured
        return Estimate(full, float("nan"), n, over)
    se = mean_se(n * full - (n - 1) * loo, over=over).se
    return Estimate(full, se, n, over)
