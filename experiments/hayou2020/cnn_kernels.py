"""The infinite-channel NTK of Hayou et al. 2020's CNN (eq. 11 / 19: periodic boundary, bias, NTK
parameterization, no readout: the kernel of the layer-L pre-activations y^L_{i,alpha}) and of its
residual version (eq. 12 with convolutional F), exactly as Prop. 1 and Lemma 4 state them, plus a
finite-channel network of the same form for Monte Carlo checks.

Positions alpha live on a periodic grid S (1-D: (M,); m-D: (M_1, ..., M_m)), the filter is [-k, k]^m and
the window mean is (A G)_{a, a'} = (2k+1)^-m sum_b G_{a+b, a'+b} (indices mod S). For inputs x, x'
(n0 channels on S):
    K^1 = q^1 = sigma_w2 / (n0 (2k+1)^m) [x, x']_{a,a'} + sigma_b2  (Prop. 1; [x,x'] = (2k+1)^m A(x (x) x')),
    Sigma^l_{g,g'} = sigma_b2 + sigma_w2 E[phi(u) phi(v)],  Sigmadot^l_{g,g'} = sigma_w2 E[phi'(u) phi'(v)],
        (u, v) ~ N(0, [[q^{l-1}_{gg}(x,x), q^{l-1}_{gg'}(x,x')], [., q^{l-1}_{g'g'}(x',x')]]),
    q^l = A Sigma^l  (the covariance of y^l; App. B.1),
    CNN (Prop. 1):    K^l = A(Sigmadot^l K^(l-1) + Sigma^l),
    ResNet (Lemma 4): q^l = q^(l-1) + A Sigma^l,  K^l = K^(l-1) + A(Sigmadot^l K^(l-1) + Sigma^l).
The conv. ResNet's covariance recursion is not printed in the paper: y^(l-1) and F(w^l, y^(l-1)) are
uncorrelated (w^l has mean 0), so the variances add.

Deep path (1-D, on the Edge of Chaos, depth 1e5-1e6): A keeps the offset a' - a, so it mixes the
pair's entries only along their diagonals, and every non-uniform mode of the per-position variances
decays geometrically (eigenvalues of A below 1 in modulus). Once every variance is uniform (relative
spread below ``q_tol``) the correlations obey c^l = A f(c^(l-1)) (ResNet: (c + a A f(c)) / (1 + a)) with
the FFNN's map f at that variance, and the state is gamma = 1 - c as in ``ntkrepro.kernels.deep``
(ReLU-like: closed forms in the angle; smooth phi: the Chebyshev interpolants of ``deep.smooth_map``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntkrepro.kernels.chebyshev import clenshaw
from ntkrepro.kernels.deep import angle_of_gamma, relu_like_rho, sin_minus_t_cos, smooth_map
from ntkrepro.kernels.gaussian import get_activation
from ntkrepro.nets import core

# ------------------------------------------------------------------ exact recursion (any phase, m-D)


def window_mean(g, shape: tuple[int, ...], k: int):
    """(A g)_{a,a'} = mean over b in [-k, k]^m of g_{a+b, a'+b}, periodic; g (..., N, N), N = prod(shape)."""
    m = len(shape)
    lead = g.shape[:-2]
    full = g.reshape(*lead, *shape, *shape)
    axes = tuple(range(len(lead), len(lead) + 2 * m))
    total = 0.0
    for b in itertools.product(range(-k, k + 1), repeat=m):
        total = total + jnp.roll(full, [-s for s in b] * 2, axis=axes)
    return (total / (2 * k + 1) ** m).reshape(g.shape)


def first_layer(x1, x2, *, shape: tuple[int, ...], k: int, sigma_w2: float, sigma_b2: float):
    """Prop. 1's K^1 = q^1 of inputs x1, x2 (n0, *shape): sigma_w2 / (n0 (2k+1)^m) [x, x'] + sigma_b2, (N, N)."""
    n0 = x1.shape[0]
    a = jnp.asarray(x1, jnp.float64).reshape(n0, -1)
    b = jnp.asarray(x2, jnp.float64).reshape(n0, -1)
    return sigma_w2 / n0 * window_mean(a.T @ b, shape, k) + sigma_b2


@dataclass(frozen=True)
class CNNKernels:
    """The recursion of a set of inputs: per layer l = 1..depth the covariance ``q`` and NTK ``ntk`` of
    every ordered input pair, (depth, n, n, N, N): entry [l-1, i, j, a, a'] = K^l_{a,a'}(x_i, x_j)."""

    q: np.ndarray
    ntk: np.ndarray


def _exact_layers(xs, *, k: int, activation: str, sigma_w2: float, sigma_b2: float, residual: bool):
    """Yield (q^l, K^l) of every ordered input pair, (n, n, N, N), for l = 1, 2, ... (float64)."""
    xs = jnp.asarray(xs, jnp.float64)
    shape = tuple(xs.shape[2:])
    n, n_pos = xs.shape[0], math.prod(shape)
    act = get_activation(activation)
    flat = xs.reshape(n, xs.shape[1], n_pos)
    q = jnp.stack([jnp.stack([first_layer(a, b, shape=shape, k=k, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
                              for b in flat]) for a in flat])

    @jax.jit
    def layer(q, ntk):
        var = jnp.diagonal(jnp.diagonal(q, axis1=0, axis2=1), axis1=0, axis2=1)  # (n, N): q_aa(x_i, x_i)
        e, edot = act.expectations(var[:, None, :, None], q, var[None, :, None, :])
        sigma, sigmadot = sigma_b2 + sigma_w2 * e, sigma_w2 * edot
        step_q, step_k = window_mean(sigma, shape, k), window_mean(sigmadot * ntk + sigma, shape, k)
        return (q + step_q, ntk + step_k) if residual else (step_q, step_k)

    ntk = q
    while True:
        yield q, ntk
        q, ntk = layer(q, ntk)


def cnn_kernels(xs, *, depth: int, k: int, activation: str, sigma_w2: float, sigma_b2: float,
                residual: bool = False) -> CNNKernels:
    """Prop. 1 (``residual=False``) or Lemma 4 (``residual=True``) for inputs xs (n, n0, *shape), float64."""
    layers = _exact_layers(xs, k=k, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, residual=residual)
    qs, ks = [], []
    for q, ntk in itertools.islice(layers, depth):
        qs.append(np.asarray(q))
        ks.append(np.asarray(ntk))
    return CNNKernels(np.stack(qs), np.stack(ks))


# ------------------------------------------------------------------ deep path on the EOC (1-D)


def _roll_mean(g, k: int):
    """window_mean on (B, M, M) arrays (1-D positions), inside jit."""
    return sum(jnp.roll(g, (-b, -b), axis=(1, 2)) for b in range(-k, k + 1)) / (2 * k + 1)


@partial(jax.jit, static_argnames=("kind", "k", "residual"))
def _deep_steps(kind, k, residual, params, state, start, stop):
    """Advance (gamma, K) of (B, M, M) blocks from layer ``start`` to ``stop`` (ResNet: K / P_l)."""
    qq, a, coeffs = params

    def step(_, st):
        gamma, kern = st
        if kind == "relu_like":
            rho = coeffs
            theta = angle_of_gamma(gamma)
            fprime = 1.0 - (1.0 - rho) * theta / jnp.pi
            one_minus_f = gamma - (1.0 - rho) * sin_minus_t_cos(theta) / jnp.pi
        else:
            r1, r2, sigma_max = coeffs
            x = 2.0 * jnp.sqrt(gamma) / sigma_max - 1.0
            fprime = 1.0 - gamma * clenshaw(r2, x)
            one_minus_f = gamma - gamma * gamma * clenshaw(r1, x)
        branch_k = _roll_mean(fprime * kern + qq * (1.0 - one_minus_f), k)
        if residual:
            return ((gamma + a * _roll_mean(one_minus_f, k)) / (1.0 + a), (kern + a * branch_k) / (1.0 + a))
        return _roll_mean(one_minus_f, k), branch_k

    return lax.fori_loop(start, stop, step, state)


@dataclass(frozen=True)
class DeepCNN:
    """A deep recursion sampled at ``depths``: gamma = 1 - c and K (ResNet: K / P_l, P_l = (1 + a)^(l-1)) of
    every block (B, M, M) per depth, the variance products ``qq`` (B,) of the blocks, and the layer where
    the uniform-variance map took over."""

    depths: np.ndarray
    gamma: np.ndarray
    ntk: np.ndarray
    qq: np.ndarray
    switch_depth: int


def deep_cnn(xs, *, depths, k: int, activation: str, sigma_w2: float, sigma_b2: float, q_star: float | None,
             residual: bool = False, q_tol: float = 1e-12, max_general_depth: int = 3000) -> DeepCNN:
    """K^l_{a,a'}(x_i, x_j) of every pair i <= j of 1-D inputs xs (n, n0, M) at ``depths``: the exact
    recursion (:func:`cnn_kernels`) until the variances are uniform, then the gamma map (module doc).

    ReLU-like phi needs sigma_b2 = 0 on the EOC (every uniform variance is a fixed point); smooth phi needs
    ``q_star``, the fixed-point variance its map is built at (the variances must reach it within q_tol).
    A ResNet (``residual``) is ReLU at sigma_b2 = 0 (Thm. 2)."""
    depths = np.asarray(sorted(set(int(d) for d in depths)))
    rho = relu_like_rho(activation)
    if rho is not None and sigma_b2 != 0:
        raise ValueError("the ReLU-like deep path needs sigma_b2 = 0 (its EOC)")
    if residual and rho is None:
        raise ValueError("the deep ResNet path is ReLU-like (Thm. 2)")
    n = xs.shape[0]
    blocks = [(i, j) for i in range(n) for j in range(i, n)]
    a = sigma_w2 / 2
    recorded: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # layer -> (gamma, K / P_l) of the blocks
    layers = _exact_layers(xs, k=k, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, residual=residual)
    for layer, (q, ntk) in enumerate(layers, start=1):
        q, ntk = np.asarray(q), np.asarray(ntk)
        var = np.stack([np.diagonal(q[i, i]) for i in range(n)])  # (n, M)
        mean = var.mean(axis=1)
        spread = np.max(np.abs(var / mean[:, None] - 1.0))
        if rho is None:
            spread = max(spread, float(np.max(np.abs(mean / q_star - 1.0))))
        growth = (1.0 + a) ** (layer - 1) if residual else 1.0
        gam = np.stack([1.0 - q[i, j] / np.sqrt(np.outer(var[i], var[j])) for i, j in blocks])
        kern = np.stack([ntk[i, j] for i, j in blocks]) / growth
        if layer in depths or spread < q_tol:
            recorded[layer] = (gam, kern)
        if spread < q_tol:
            break
        if layer >= max_general_depth:
            raise ValueError(f"{activation}: variances not uniform to {q_tol:g} after {max_general_depth} layers")
    switch = layer
    q_sw = mean / growth
    qq = np.array([math.sqrt(q_sw[i] * q_sw[j]) for i, j in blocks])
    g0, k0 = recorded[switch]
    gam_rows = [recorded[d][0] for d in depths if d <= switch]
    k_rows = [recorded[d][1] for d in depths if d <= switch]
    if rho is None:
        smap = smooth_map(activation, sigma_w2=sigma_w2, q=q_star)
        if g0.max() > smap.sigma_max**2:
            raise ValueError(f"{activation}: 1 - c = {g0.max():.3g} at the switch exceeds the smooth map's range")
        kind, coeffs = "smooth", (jnp.asarray(smap.r1), jnp.asarray(smap.r2), smap.sigma_max)
    else:
        kind, coeffs = "relu_like", rho
    params = (jnp.asarray(qq)[:, None, None], sigma_w2 / 2, coeffs)
    state = (jnp.asarray(g0), jnp.asarray(k0))
    start = switch
    for d in depths[depths > switch]:
        state = _deep_steps(kind, k, residual, params, state, start + 1, int(d) + 1)
        start = int(d)
        gam_rows.append(np.asarray(state[0]))
        k_rows.append(np.asarray(state[1]))
    return DeepCNN(depths, np.stack(gam_rows), np.stack(k_rows), qq, switch)


# ------------------------------------------------------------------ a finite CNN of eq. 11 (Monte Carlo)


def hayou_cnn(*, depth: int, channels: int, positions: int, k: int, activation: str, sigma_w2: float,
              sigma_b2: float, residual: bool = False, out_channels: int = 2) -> core.Network:
    """Eq. 11 (1-D, periodic, NTK parameterization, bias) with ``channels`` channels per layer; ``residual``:
    y^l = y^(l-1) + F(w^l, y^(l-1)) for l >= 2 (eq. 12). Inputs (n, positions, n0); outputs y^L_{i,alpha} of the
    first ``out_channels`` channels at every position, flattened (n, positions * out_channels) position-major."""
    phi = core.resolve_activation(activation)
    width = 2 * k + 1

    def init_fn(key, input_shape):
        n0 = int(input_shape[-1])
        specs = [{"w": ((width, n0 if layer == 0 else channels, channels), 1.0), "b": ((channels,), 1.0)}
                 for layer in range(depth)]
        return core.init_layers(key, specs, "ntk", jnp.float64)

    def conv(h, layer):
        patches = jnp.stack([jnp.roll(h, -b, axis=1) for b in range(-k, k + 1)], axis=2)  # h_{alpha+beta}
        fan_in = width * h.shape[-1]
        return (math.sqrt(sigma_w2 / fan_in) * jnp.einsum("nmbc,bcd->nmd", patches, layer["w"])
                + math.sqrt(sigma_b2) * layer["b"])

    def apply_fn(params, x):
        core.check_input(x, (positions, params[0]["w"].shape[1]), "hayou_cnn")
        y = conv(jnp.asarray(x, jnp.float64), params[0])
        for layer in params[1:]:
            y = y + conv(phi(y), layer) if residual else conv(phi(y), layer)
        return y[..., :out_channels].reshape(y.shape[0], -1)

    return core.network(init_fn, apply_fn, depth=depth, out_dim=positions * out_channels, frozen=frozenset(),
                        has_readout=False)
