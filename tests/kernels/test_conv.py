"""CNTK / CDEQ-NTK against direct loop references written from the papers' equations, the offset-0
shortcut against the full 4-D trace, and the analytic CNTK against wide finite CNNs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkrepro.kernels.conv import cdeq_ntk, cntk


def _relu_e(s11, s12, s22):
    n = np.sqrt(s11 * s22)
    lam = np.clip(s12 / np.where(n > 0, n, 1), -1, 1)
    th = np.arccos(lam)
    return np.where(n > 0, n * (lam * (np.pi - th) + np.sqrt(1 - lam**2)) / (2 * np.pi), 0), (np.pi - th) / (
        2 * np.pi)


def _trace(m, q=3):
    """[L(M)]_{ij,i'j'} = sum_{a,b} M_{i+a,j+b,i'+a,j'+b} (zero outside), by explicit loops."""
    p, qq = m.shape[:2]
    r = (q - 1) // 2
    out = np.zeros_like(m)
    for i in range(p):
        for j in range(qq):
            for i2 in range(p):
                for j2 in range(qq):
                    s = 0.0
                    for a in range(-r, r + 1):
                        for b in range(-r, r + 1):
                            if 0 <= i + a < p and 0 <= j + b < qq and 0 <= i2 + a < p and 0 <= j2 + b < qq:
                                s += m[i + a, j + b, i2 + a, j2 + b]
                    out[i, j, i2, j2] = s
    return out


def _reference(x, z, depth, readout, fix, q=3):
    """Arora et al. sec. 4 with the [CODE] last layer, full 4-D tensors, c_sigma = 2 (ReLU)."""
    c = 2.0 / q**2
    sig = {k: _trace(np.einsum("ijc,klc->ijkl", a, b), q) for k, (a, b) in
           {"xz": (x, z), "xx": (x, x), "zz": (z, z)}.items()}
    theta = np.zeros_like(sig["xz"]) if fix else sig["xz"].copy()
    layers = depth - 1
    for h in range(1, layers + 1):
        dx = np.einsum("ijij->ij", sig["xx"])
        dz = np.einsum("ijij->ij", sig["zz"])
        k, kd = _relu_e(dx[:, :, None, None], sig["xz"], dz[None, None])
        if h < layers:
            kxx = _relu_e(dx[:, :, None, None], sig["xx"], dx[None, None])[0]
            kzz = _relu_e(dz[:, :, None, None], sig["zz"], dz[None, None])[0]
            theta = c * _trace(kd * theta + k, q)
            sig = {"xz": c * _trace(k, q), "xx": c * _trace(kxx, q), "zz": c * _trace(kzz, q)}
        else:
            nngp = c * k
            theta = c * (kd * theta + (0 if fix else k))
    if readout == "gap":
        return nngp.mean(), theta.mean()
    return np.einsum("ijij->", nngp), np.einsum("ijij->", theta)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((3, 4, 4, 2))


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
@pytest.mark.parametrize("fix", [False, True])
@pytest.mark.parametrize("depth", [2, 3])
def test_cntk_matches_loop_reference(images, readout, fix, depth):
    got = cntk(images, depth=depth, readout=readout, fix_first_last=fix, dtype=np.float64)
    for a in range(3):
        for b in range(3):
            g_ref, t_ref = _reference(images[a], images[b], depth, readout, fix)
            np.testing.assert_allclose(got.ntk[a, b], t_ref, rtol=1e-10)
            np.testing.assert_allclose(got.nngp[a, b], g_ref, rtol=1e-10)


def test_offset0_vanilla_equals_trace_of_full_computation(images):
    """The vanilla kernel via offset-0 planes equals the trace of the full 4-D recursion: the GAP path
    (all offsets) with a trace readout is emulated by the reference; cross-check both code paths."""
    x1, x2 = images[:2], images[1:]
    v = cntk(x1, x2, depth=4, readout="vanilla", dtype=np.float64)
    for a in range(2):
        for b in range(2):
            ref = _reference(x1[a], x2[b], 4, "vanilla", False)[1]
            np.testing.assert_allclose(v.ntk[a, b], ref, rtol=1e-10)


def test_cross_gram_blocks_agree_with_symmetric_gram(images):
    full = cntk(images, depth=3, readout="vanilla", dtype=np.float64, batch_size=1)
    cross = cntk(images, images, depth=3, readout="vanilla", dtype=np.float64, batch_size=4)
    np.testing.assert_allclose(full.ntk, cross.ntk, rtol=1e-12)
    gap = cntk(images, depth=3, readout="gap", dtype=np.float64, batch_size=2)
    gap_cross = cntk(images, images, depth=3, readout="gap", dtype=np.float64, batch_size=5)
    np.testing.assert_allclose(gap.ntk, gap_cross.ntk, rtol=1e-12)
    np.testing.assert_allclose(gap.ntk, gap.ntk.T)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), readout=st.sampled_from(["vanilla", "gap"]))
def test_cntk_gram_is_symmetric_psd(seed, readout):
    x = np.random.default_rng(seed).standard_normal((5, 3, 3, 2))
    k = np.asarray(cntk(x, depth=3, readout=readout, dtype=np.float64).ntk)
    np.testing.assert_allclose(k, k.T, rtol=1e-12)
    assert np.linalg.eigvalsh(k).min() > -1e-9 * np.abs(k).max()


def test_float32_close_to_float64(images):
    a = cntk(images, depth=4, readout="gap", dtype=np.float32).ntk
    b = cntk(images, depth=4, readout="gap", dtype=np.float64).ntk
    np.testing.assert_allclose(a, b, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"x2": np.zeros((2, 5, 5, 2))}, "image shapes differ"),
        ({"filter_size": 2}, "odd"),
        ({"depth": 1}, "depth"),
        ({"readout": "max"}, "readout"),
        ({"activation": "nope"}, "activation"),
    ],
)
def test_bad_input(images, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        cntk(images, **{"depth": 3, **kwargs})


def test_non_finite_pixels_rejected(images):
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        cntk(bad, depth=3)


# ---------------------------------------------------------------- CDEQ


def _unit_pixels(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cdeq_reference(x, z, sw2, su2, iters=200, q=3):
    """Feng & Kolter Thm. 3 with full 4-D tensors: Sigma iterated (eqs. 16-20), Theta* by iterating eq. 21."""
    p, qq = x.shape[:2]
    ones = np.ones((p, qq, p, qq))
    s = np.sqrt(np.einsum("ijij->ij", _trace(ones, q)))  # [S]_ij^2 = window counts
    ss = s[:, :, None, None] * s[None, None]
    sets = {"xz": (x, z), "xx": (x, x), "zz": (z, z)}
    k0 = {k: np.einsum("ijc,klc->ijkl", a, b) for k, (a, b) in sets.items()}
    sig = {k: _trace(v, q) / ss for k, v in k0.items()}
    for _ in range(iters):
        dx, dz = np.einsum("ijij->ij", sig["xx"]), np.einsum("ijij->ij", sig["zz"])
        pairs = {"xz": (dx, dz), "xx": (dx, dx), "zz": (dz, dz)}
        kk = {k: 2 * _relu_e(a[:, :, None, None], sig[k], b[None, None])[0] for k, (a, b) in pairs.items()}
        sig = {k: _trace((sw2 * kk[k] + su2 * k0[k]) / ss, q) for k in kk}
    dx, dz = np.einsum("ijij->ij", sig["xx"]), np.einsum("ijij->ij", sig["zz"])
    k, kd = _relu_e(dx[:, :, None, None], sig["xz"], dz[None, None])
    kstar = (sw2 * 2 * k + su2 * k0["xz"]) / ss
    kdstar = sw2 * 2 * kd / ss
    theta = kstar.copy()
    for _ in range(iters):
        theta = kdstar * _trace(theta, q) + kstar
    return np.einsum("ijij->", theta)


def test_cdeq_matches_full_reference():
    x = _unit_pixels(np.random.default_rng(1).standard_normal((2, 3, 3, 2)))
    k, info = cdeq_ntk(x, sigma_w2=0.65, sigma_u2=0.35, tol=1e-12)
    for a in range(2):
        for b in range(2):
            np.testing.assert_allclose(k.ntk[a, b], _cdeq_reference(x[a], x[b], 0.65, 0.35), rtol=1e-9)
    assert 0 < info["sigma_iterations"] < 500 and 0 < info["theta_iterations"] < 500


@pytest.mark.parametrize(
    "kwargs,msg",
    [({"sigma_w2": 1.0, "sigma_u2": 0.0}, "< 1"), ({"sigma_w2": 0.5, "sigma_u2": 0.3}, "= 1"),
     ({"sigma_w2": -0.1, "sigma_u2": 1.1}, "variance")],
)
def test_cdeq_bad_variances(kwargs, msg):
    x = _unit_pixels(np.ones((1, 3, 3, 2)))
    with pytest.raises(ValueError, match=msg):
        cdeq_ntk(x, **kwargs)


def test_cdeq_requires_unit_pixels():
    with pytest.raises(ValueError, match="unit norm"):
        cdeq_ntk(np.ones((1, 3, 3, 2)), sigma_w2=0.5, sigma_u2=0.5)
