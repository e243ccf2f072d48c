"""CDEQ-NTK (ntkrepro.kernels.cdeq) against a dense reference written from Feng & Kolter Thm. 3 / App. B
(full (P, Q, P, Q) tensors, eq. 21 as a linear solve), precisions and cross Grams, multi-device execution,
the former import path, and bad input."""

import jax.numpy as jnp
import numpy as np
import pytest
from test_conv import diag4, relu_expectations, run_on_two_devices, trace_op

from ntkrepro.kernels.cdeq import cdeq_ntk


def unit_pixels(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def cdeq_reference(x, y, sw2, su2, *, iters=400, q=3):
    """Feng & Kolter Thm. 3 on full (P, Q, P, Q) tensors: eqs. 15-20 iterated (diagonals from the same
    iterate, eq. 17), then eq. 21 solved as a dense linear system (I - diag(Kdot*) L) Theta = K*."""
    p, w = x.shape[:2]
    ones = np.ones((p, w, p, w))
    s = np.sqrt(diag4(trace_op(ones, q)))
    ss = s[:, :, None, None] * s[None, None]
    k0 = {n: np.einsum("ija,kla->ijkl", a, b) for n, (a, b) in {"xy": (x, y), "xx": (x, x), "yy": (y, y)}.items()}
    sig = {n: trace_op(v, q) / ss for n, v in k0.items()}

    def step(sig):
        dx, dy = diag4(sig["xx"]), diag4(sig["yy"])
        pairs = {"xy": (dx, dy), "xx": (dx, dx), "yy": (dy, dy)}
        out = {}
        for n, (a, b) in pairs.items():
            e, ed = relu_expectations(a[:, :, None, None], sig[n], b[None, None])  # normalized ReLU: x2
            out[n] = ((sw2 * 2 * e + su2 * k0[n]) / ss, sw2 * 2 * ed / ss)
        return out

    for _ in range(iters):
        sig = {n: trace_op(v[0], q) for n, v in step(sig).items()}
    kstar, kdstar = step(sig)["xy"]
    m = p * w * p * w
    lmat = np.zeros((m, m))
    for col in range(m):
        e = np.zeros(m)
        e[col] = 1.0
        lmat[:, col] = trace_op(e.reshape(p, w, p, w), q).ravel()
    theta = np.linalg.solve(np.eye(m) - kdstar.ravel()[:, None] * lmat, kstar.ravel()).reshape(p, w, p, w)
    return np.einsum("ijij->", kstar), np.einsum("ijij->", theta)


def test_cdeq_matches_dense_reference():
    x = unit_pixels(np.random.default_rng(1).standard_normal((3, 3, 3, 2)))
    got = cdeq_ntk(x, sigma_w2=0.65, sigma_u2=0.35, tol=1e-13, max_iter=400, dtype=jnp.float64)
    for a in range(3):
        for b in range(a, 3):
            nngp, ntk = cdeq_reference(x[a], x[b], 0.65, 0.35)
            np.testing.assert_allclose(got.ntk[a, b], ntk, rtol=1e-9)
            np.testing.assert_allclose(got.nngp[a, b], nngp, rtol=1e-9)
    assert np.all(np.asarray(got.sigma_iterations) > 1) and np.all(np.asarray(got.theta_iterations) > 1)


def test_cdeq_precisions_and_cross_gram_agree():
    x = unit_pixels(np.random.default_rng(2).standard_normal((4, 5, 4, 3)))
    k64 = cdeq_ntk(x, sigma_w2=0.6, sigma_u2=0.4, tol=1e-10, max_iter=200, dtype=jnp.float64)
    k32 = cdeq_ntk(x, sigma_w2=0.6, sigma_u2=0.4)
    np.testing.assert_allclose(k32.ntk, k64.ntk, rtol=2e-5)
    cross = cdeq_ntk(x[:2], x, sigma_w2=0.6, sigma_u2=0.4, tol=1e-10, max_iter=200, dtype=jnp.float64,
                     batch_size=3)  # other chunks: pairs iterate a different number of times past tol
    np.testing.assert_allclose(cross.ntk, k64.ntk[:2], rtol=1e-8)
    ntk = np.asarray(k64.ntk)
    assert np.linalg.eigvalsh(ntk).min() > 0
    assert np.all(ntk >= np.asarray(k64.nngp))  # Theta* = K* + (non-negative terms)


def test_cdeq_reports_non_convergence():
    x = unit_pixels(np.random.default_rng(2).standard_normal((2, 4, 4, 2)))
    with pytest.raises(RuntimeError, match="did not reach"):
        cdeq_ntk(x, sigma_w2=0.6, sigma_u2=0.4, max_iter=2)


@pytest.mark.parametrize("kwargs,msg", [
    ({"sigma_w2": 1.0, "sigma_u2": 0.0}, "< 1"),
    ({"sigma_w2": 0.5, "sigma_u2": 0.3}, "= 1"),
    ({"sigma_w2": -0.1, "sigma_u2": 1.1}, "variance"),
    ({"sigma_w2": 0.5, "sigma_u2": 0.5, "tol": 0.0}, "tol"),
    ({"sigma_w2": 0.5, "sigma_u2": 0.5, "max_iter": 0}, "max_iter"),
    ({"sigma_w2": 0.5, "sigma_u2": 0.5, "filter_size": 4}, "odd"),
])
def test_cdeq_bad_arguments(kwargs, msg):
    x = unit_pixels(np.ones((1, 3, 3, 2)))
    with pytest.raises(ValueError, match=msg):
        cdeq_ntk(x, **kwargs)


def test_cdeq_requires_unit_norm_pixels():
    with pytest.raises(ValueError, match="unit norm"):
        cdeq_ntk(np.ones((1, 3, 3, 2)), sigma_w2=0.5, sigma_u2=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        cdeq_ntk(np.full((1, 3, 3, 2), np.nan), sigma_w2=0.5, sigma_u2=0.5)


def test_multi_device_matches_single_device(tmp_path):
    """Pair blocks sharded over 2 forced host devices give the single-device values."""
    u = unit_pixels(np.random.default_rng(5).standard_normal((5, 4, 4, 2)))
    out = run_on_two_devices(tmp_path, {"u": u}, """
        {"c": cdeq_ntk(u, sigma_w2=0.6, sigma_u2=0.4, tol=1e-12, max_iter=300, dtype=jnp.float64, batch_size=4).ntk}
    """, imports="from ntkrepro.kernels.cdeq import cdeq_ntk")
    cdeq = cdeq_ntk(u, sigma_w2=0.6, sigma_u2=0.4, tol=1e-12, max_iter=300, dtype=jnp.float64)
    np.testing.assert_allclose(out["c"], cdeq.ntk, rtol=1e-9)
