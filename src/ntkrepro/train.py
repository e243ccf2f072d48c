"""Training loops for any (init_fn, apply_fn) net: full-batch gradient descent and minibatch SGD.

Jacot et al. 2018: plain full-batch GD with learning rate 1.0 on the mean square loss
(1/2N) sum_i ||f(x_i) - y_i||^2, so that step t is time t of the kernel gradient flow with Theta / N.
Steps run inside ``jax.lax.scan`` chunks under ``jit``; between chunks the host checks the losses,
calls ``on_step`` and evaluates. No tracking library is imported here: the caller logs from ``on_step``.
Runs are seeded (minibatch order from ``key``) and bit-identical on CPU for the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkrepro.empirical import empirical_ntk, kernel_distance
from ntkrepro.nets.core import combine, partition

LOSSES = ("mse", "cross_entropy")
DEFAULT_CHUNK = 100


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``step``, ``history`` and ``evals`` hold what was recorded so far."""

    def __init__(self, step: int, history: dict[str, np.ndarray], evals: list[dict]):
        super().__init__(f"diverged: non-finite loss at step {step}")
        self.step = step
        self.history = history
        self.evals = evals


@dataclass(frozen=True)
class TrainResult:
    """Trained parameters, the per-step history and the evaluations.

    ``history``: numpy arrays ``step``, ``loss`` (the loss of the batch used at that step, before the
    update), ``learning_rate``; ``evals``: one dict per evaluation (``step`` plus the metrics), the last
    one after the final update (``step == steps``).
    """

    params: Any
    history: dict[str, np.ndarray]
    evals: list[dict] = field(default_factory=list)


def step_decay_schedule(learning_rate: float, *, boundaries: Sequence[int], factor: float = 0.1) -> Callable:
    """eta(t) = learning_rate * factor^(number of boundaries <= t) (Hayou et al. 2020 sec. 6.3: /10 twice)."""
    _check_learning_rate(learning_rate)
    bounds = np.asarray(boundaries, dtype=np.int64)
    if bounds.ndim != 1 or np.any(bounds < 1) or np.any(np.diff(bounds) <= 0):
        raise ValueError(f"boundaries must be increasing positive steps, got {list(boundaries)}")
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be finite and > 0, got {factor}")
    bounds_j = jnp.asarray(bounds)
    return lambda step: learning_rate * factor ** jnp.sum(step >= bounds_j)


def _check_learning_rate(learning_rate: float) -> None:
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate!r}")


def square_loss(f: jax.Array, y: jax.Array) -> jax.Array:
    """(1/2N) sum_i ||f_i - y_i||^2 (Jacot et al. 2018; mean over examples, sum over outputs)."""
    return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=-1))


def cross_entropy_loss(f: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; ``y`` integer labels (n,) or target distributions (n, k)."""
    logp = jax.nn.log_softmax(f, axis=-1)
    if y.ndim == 1:
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
    return -jnp.mean(jnp.sum(y * logp, axis=-1))


def accuracy(f: jax.Array, y: jax.Array) -> float:
    """Fraction correct: argmax for k > 1 (labels or argmax of the targets), sign agreement for k = 1."""
    f, y = jnp.asarray(f), jnp.asarray(y)
    if y.ndim == 1 and f.shape[-1] > 1:
        return float(jnp.mean(jnp.argmax(f, axis=-1) == y))
    if f.shape[-1] == 1:
        return float(jnp.mean(jnp.sign(f[:, 0]) == jnp.sign(y.reshape(-1))))
    return float(jnp.mean(jnp.argmax(f, axis=-1) == jnp.argmax(y, axis=-1)))


def _prepare_targets(y, k: int, loss: str, n: int, what: str) -> jax.Array:
    y = jnp.asarray(y)
    if y.shape[0] != n:
        raise ValueError(f"{what}: {y.shape[0]} targets for {n} inputs")
    if loss == "mse":
        if y.ndim == 1 and k == 1:
            y = y[:, None]
        if y.shape != (n, k):
            raise ValueError(f"{what}: square loss needs targets of shape ({n}, {k}), got {y.shape}")
        return y
    if k < 2:
        raise ValueError("cross_entropy needs at least 2 outputs")
    if y.ndim == 1:
        if not jnp.issubdtype(y.dtype, jnp.integer) or int(y.min()) < 0 or int(y.max()) >= k:
            raise ValueError(f"{what}: cross_entropy labels must be integers in [0, {k})")
        return y
    if y.shape != (n, k):
        raise ValueError(f"{what}: cross_entropy targets must be labels (n,) or distributions ({n}, {k})")
    return y


def _loss_fn(loss: str) -> Callable:
    return square_loss if loss == "mse" else cross_entropy_loss


@partial(jax.jit, static_argnames=("apply_fn", "loss"))
def _full_loss(theta, rest, xs, ys, *, apply_fn, loss):
    return _loss_fn(loss)(apply_fn(combine(theta, rest), xs), ys)


@partial(jax.jit, static_argnames=("apply_fn", "loss", "learning_rate", "batch_size"))
def _run_chunk(theta, rest, steps_chunk, xs, ys, key, *, apply_fn, loss, learning_rate, batch_size):
    """``len(steps_chunk)`` GD/SGD updates in one scan; returns (theta, (losses, learning rates)).

    Module-level and keyed on static hyperparameters, so repeated runs (seeds) reuse the compilation.
    """
    n = xs.shape[0]

    def batch_at(step):
        if batch_size is None:
            return xs, ys
        per_epoch = n // batch_size
        perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
        idx = jax.lax.dynamic_slice(perm, ((step % per_epoch) * batch_size,), (batch_size,))
        return xs[idx], ys[idx]

    def one_step(th, step):
        xb, yb = batch_at(step)
        value, grads = jax.value_and_grad(
            lambda t: _loss_fn(loss)(apply_fn(combine(t, rest), xb), yb))(th)
        eta = learning_rate(step) if callable(learning_rate) else jnp.asarray(learning_rate)
        th = jax.tree.map(lambda p, g: (p - eta * g).astype(p.dtype), th, grads)
        return th, (value, eta)

    return jax.lax.scan(one_step, theta, steps_chunk)


def train(
    apply_fn: Callable,
    params,
    x,
    y,
    *,
    steps: int,
    learning_rate: float | Callable = 1.0,
    loss: str = "mse",
    batch_size: int | None = None,
    key=None,
    trainable=None,
    on_step: Callable[[int, dict], None] | None = None,
    eval_every: int | None = None,
    x_test=None,
    y_test=None,
    kernel_inputs=None,
    chunk_size: int = DEFAULT_CHUNK,
) -> TrainResult:
    """Train ``params`` by gradient descent: full batch (``batch_size=None``) or minibatch SGD.

    Args:
        apply_fn: ``apply_fn(params, x) -> (n, k)``.
        params: initial parameters.
        x, y: training inputs (batch-first) and targets ((n, k), or (n,) for k = 1 / integer labels).
        steps: number of parameter updates.
        learning_rate: a positive float or a schedule ``step -> eta`` (see :func:`step_decay_schedule`).
        loss: ``"mse"`` (:func:`square_loss`) or ``"cross_entropy"``.
        batch_size: minibatch size for SGD; each epoch is a fresh permutation drawn from
            ``fold_in(key, epoch)``, the last incomplete batch is dropped.
        key: PRNG key for SGD (required when ``batch_size`` is set).
        trainable: bool mask pytree or ``params -> mask`` callable; frozen leaves are never updated.
        on_step: ``on_step(step, metrics)`` for every step in order, called on the host after each
            jitted chunk (``loss``, ``learning_rate``), plus the
            evaluation metrics at evaluation steps; at ``step == steps`` the final evaluation, with
            ``loss`` = the final full-batch training loss.
        eval_every: evaluate at steps 0, eval_every, 2 eval_every, ... and after the last update:
            ``train_loss`` (full batch), ``test_loss``, ``kernel_distance`` to the initial empirical NTK
            on ``kernel_inputs``, and ``train_accuracy`` / ``test_accuracy`` (:func:`accuracy`) for
            classification: cross-entropy, k > 1 outputs, or binary targets of one magnitude (+-1).
        x_test, y_test: optional test set for the evaluations.
        kernel_inputs: optional probe inputs for the kernel distance (survey eq. 148).
        chunk_size: steps per jitted scan when ``eval_every`` is None.

    Raises:
        TrainingDiverged: a NaN/inf loss, with the history up to and including that step.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    x = jnp.asarray(x)
    n = x.shape[0]
    out_shape = jax.eval_shape(apply_fn, params, x[:1]).shape
    k = int(out_shape[-1])
    y = _prepare_targets(y, k, loss, n, "train")
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test and y_test go together")
    if x_test is not None:
        x_test = jnp.asarray(x_test)
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"inconsistent input shapes: train {x.shape} vs test {x_test.shape}")
        y_test = _prepare_targets(y_test, k, loss, x_test.shape[0], "test")
    if batch_size is not None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an integer in [1, {n}], got {batch_size!r}")
        if key is None:
            raise ValueError("SGD (batch_size set) needs a PRNG key")
    for name, value in (("eval_every", eval_every), ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not callable(learning_rate):
        _check_learning_rate(learning_rate)
        learning_rate = float(learning_rate)
    mask = trainable(params) if callable(trainable) else trainable
    theta, rest = partition(params, mask)
    static = {"apply_fn": apply_fn, "loss": loss}
    chunk_static = {**static, "learning_rate": learning_rate, "batch_size": batch_size}

    def full_loss(th, xs, ys):
        return _full_loss(th, rest, xs, ys, **static)

    kernel0 = (None if kernel_inputs is None else
               empirical_ntk(apply_fn, params, kernel_inputs, trainable=mask))

    def evaluate(th, step) -> dict:
        p = combine(th, rest)
        metrics = {"train_loss": float(full_loss(th, x, y))}
        classification = loss == "cross_entropy" or k > 1 or bool(jnp.all(jnp.abs(y) == jnp.abs(y).max()))
        if classification:
            metrics["train_accuracy"] = accuracy(apply_fn(p, x), y)
        if x_test is not None:
            metrics["test_loss"] = float(full_loss(th, x_test, y_test))
            metrics["test_accuracy"] = accuracy(apply_fn(p, x_test), y_test)
        if kernel0 is not None:
            metrics["kernel_distance"] = float(kernel_distance(
                kernel0, empirical_ntk(apply_fn, p, kernel_inputs, trainable=mask)))
        return {"step": step, **metrics}

    history = {"step": [], "loss": [], "learning_rate": []}
    evals: list[dict] = []

    def frozen_history():
        return {name: np.asarray(values) for name, values in history.items()}

    chunk = eval_every or chunk_size
    start = 0
    while start < steps:
        stop = min(start + chunk, steps)
        eval_now = eval_every is not None and start % eval_every == 0
        if eval_now:
            evals.append(evaluate(theta, start))
        new_theta, (losses, etas) = _run_chunk(theta, rest, jnp.arange(start, stop), x, y, key,
                                               **chunk_static)
        losses, etas = np.asarray(losses), np.asarray(etas)
        bad = np.flatnonzero(~np.isfinite(losses))
        last = stop if bad.size == 0 else start + int(bad[0]) + 1
        for i, step in enumerate(range(start, last)):
            history["step"].append(step)
            history["loss"].append(float(losses[i]))
            history["learning_rate"].append(float(etas[i]))
            if on_step is not None:
                metrics = {"loss": float(losses[i]), "learning_rate": float(etas[i])}
                if eval_now and i == 0:
                    metrics.update({k_: v for k_, v in evals[-1].items() if k_ != "step"})
                on_step(step, metrics)
        if bad.size:
            raise TrainingDiverged(last - 1, frozen_history(), evals)
        theta, start = new_theta, stop

    final = evaluate(theta, steps)
    if not np.isfinite(final["train_loss"]):
        raise TrainingDiverged(steps, frozen_history(), evals)
    evals.append(final)
    if on_step is not None:
        on_step(steps, {"loss": final["train_loss"], **{k_: v for k_, v in final.items() if k_ != "step"}})
    return TrainResult(combine(theta, rest), frozen_history(), evals)
