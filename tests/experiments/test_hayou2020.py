"""Hayou et al. 2020 stages: the deep recursions against independent references (the library's float64
recursion, mpmath, closed forms, a finite-width ResNet), the asymptotic constants derived for the report,
the rate diagnostics, the EOC solver, and the pieces of the training tables (nets, CIFAR-100 parser)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ntkrepro  # noqa: F401  (x64)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "hayou2020"))

import hayou_common as hc  # noqa: E402
from cifar_resnet import cifar_resnet  # noqa: E402

from ntkrepro.empirical import empirical_ntk  # noqa: E402
from ntkrepro.kernels import deep as dk  # noqa: E402
from ntkrepro.kernels import meanfield  # noqa: E402
from ntkrepro.kernels.gaussian import get_activation  # noqa: E402
from ntkrepro.nets import fc, resnet  # noqa: E402
from ntkrepro.stage import stage_module  # noqa: E402

PAIR = {"norm2": [1.0, 1.0], "cos": 0.5}


def hayou_table1():
    """experiments/hayou2020/table1.py (a unique module name: other papers have a table1 too)."""
    return stage_module("hayou2020/table1")


# ---------------------------------------------------------------- deep recursions vs references


@pytest.mark.parametrize("activation,sigma_b2", [("relu", 0.0), ("tanh", 0.04), ("elu", 0.04)])
def test_deep_ffnn_matches_library_recursion(activation, sigma_b2):
    """Below ~300 layers plain float64 is accurate: the near-one maps must agree with fc_kernels."""
    point = dk.eoc_point(activation, sigma_b2=sigma_b2)
    sigma1 = (1.3, 0.4, 0.9) if activation == "relu" else (1.0, 0.3, 1.5)
    depths = [1, 2, 10, 100, 300]
    deep = dk.ffnn_eoc(activation, point=point, sigma1=sigma1, depths=depths, max_general_depth=300)
    ref = vars(meanfield.ntk_recursion(sigma1, activation, sigma_w2=point.sigma_w2, sigma_b2=point.sigma_b2, depth=300))
    idx = np.asarray(depths) - 1
    np.testing.assert_allclose(deep.k12, ref["k12"][idx], rtol=1e-8)
    np.testing.assert_allclose(deep.k11, ref["k11"][idx], rtol=1e-8)
    np.testing.assert_allclose(
        deep.gamma, 1 - ref["s12"][idx] / np.sqrt(ref["s11"][idx] * ref["s22"][idx]), rtol=1e-6, atol=1e-12
    )


def _relu_mp(c0: float, depth: int) -> tuple[mpmath.mpf, mpmath.mpf]:
    """ReLU on the EOC (q = 1) with 60-digit arithmetic: (K^depth(x,x'), 1 - c^depth)."""
    with mpmath.workdps(60):
        c = mpmath.mpf(c0)
        k = c
        for _ in range(depth - 1):
            theta = mpmath.acos(c)
            f = (mpmath.sqrt(1 - c * c) + (mpmath.pi - theta) * c) / mpmath.pi
            k = k * (1 - theta / mpmath.pi) + f
            c = f
        return k, 1 - c


def test_deep_relu_matches_mpmath_where_float64_fails():
    """At depth 3000 the naive float64 recursion has lost ~1e-6 of K/L - 1/4; the angle form keeps ~1e-10."""
    depth = 3000
    k_mp, gamma_mp = _relu_mp(0.5, depth)
    deep = dk.ffnn_eoc("relu", point=dk.eoc_point("relu", sigma_b2=0.0), sigma1=(1.0, 0.5, 1.0), depths=[depth])
    err_mp = float(k_mp / depth - mpmath.mpf(1) / 4)
    assert abs(deep.k12[0] / depth - 0.25 - err_mp) < 1e-9 * abs(err_mp)
    assert deep.gamma[0] == pytest.approx(float(gamma_mp), rel=1e-9)


def test_relu_resnet_diagonal_closed_forms():
    """sigma_b = 0: standard K^L(x,x) = r^(L-1) q (1 + (L-1)(r-1)/r), r = 1 + sigma_w2/2; scaled: K^L/P_L =
    q (1 + alpha sum_{l=2}^L 1/(l + alpha)), alpha = sigma_w2/2 (Lemma 3 summed by hand)."""
    depths = np.array([1, 2, 7, 50, 1000])
    for sw2 in (0.5, 2.0):
        r, alpha, q = 1 + sw2 / 2, sw2 / 2, 1.7
        std = dk.relu_resnet(sigma_w2=sw2, branch_scale="standard", sigma1=(q, 0.2, 1.1), depths=depths)
        np.testing.assert_allclose(std.k11, q * (1 + (depths - 1) * (r - 1) / r), rtol=1e-12)
        np.testing.assert_allclose(std.log_p, (depths - 1) * math.log(r), rtol=1e-12)
        scaled = dk.relu_resnet(sigma_w2=sw2, branch_scale="scaled", sigma1=(q, 0.2, 1.1), depths=depths)
        sums = np.array([sum(alpha / (k + alpha) for k in range(2, d + 1)) for d in depths])
        np.testing.assert_allclose(scaled.k11, q * (1 + sums), rtol=1e-12)


def _lemma3_direct(sigma1, depth, sigma_w2, scaled):
    """Lemma 3 with a_l^2 on the branch terms, straight from the library's arc-cosine expectations."""
    relu = get_activation("relu")
    q11, q12, q22 = sigma1
    k = q12
    for layer in range(2, depth + 1):
        a2 = 1.0 / layer if scaled else 1.0
        e12, d12 = (float(v) for v in relu.expectations(q11, q12, q22))
        e11 = float(relu.expectations(q11, q11, q11)[0])
        e22 = float(relu.expectations(q22, q22, q22)[0])
        k = k * (1 + a2 * sigma_w2 * d12) + a2 * sigma_w2 * e12
        q11, q12, q22 = q11 + a2 * sigma_w2 * e11, q12 + a2 * sigma_w2 * e12, q22 + a2 * sigma_w2 * e22
    return k


@pytest.mark.parametrize("scaled", [False, True])
def test_relu_resnet_offdiagonal_matches_direct_lemma3(scaled):
    sigma1 = (1.2, 0.3, 0.8)
    run = dk.relu_resnet(
        sigma_w2=1.5, branch_scale="scaled" if scaled else "standard", sigma1=sigma1, depths=[2, 5, 12]
    )
    direct = [_lemma3_direct(sigma1, d, 1.5, scaled) for d in (2, 5, 12)]
    np.testing.assert_allclose(run.k12 * np.exp(run.log_p), direct, rtol=1e-10)


@pytest.mark.parametrize("branch_scale", ["standard", "scaled"])
def test_relu_resnet_matches_library_resnet_kernels(branch_scale):
    from ntkrepro.kernels.resnet import resnet_kernels

    x = jnp.asarray([[1.0, 0.0], [0.6, 0.8]]) * jnp.asarray([[1.2], [0.7]])
    depths = [1, 3, 40]
    ref = resnet_kernels(x, depth=40, sigma_w2=1.5, branch_scale=branch_scale, all_depths=True).ntk
    s11, s22 = 1.5 * 1.44 / 2, 1.5 * 0.49 / 2
    run = dk.relu_resnet(
        sigma_w2=1.5, branch_scale=branch_scale, sigma1=(s11, 1.5 * 0.6 * 1.2 * 0.7 / 2, s22), depths=depths
    )
    scale = np.exp(run.log_p)
    np.testing.assert_allclose(run.k12 * scale, np.asarray(ref)[np.asarray(depths) - 1, 0, 1], rtol=1e-10)
    np.testing.assert_allclose(run.k11 * scale, np.asarray(ref)[np.asarray(depths) - 1, 0, 0], rtol=1e-10)


def test_scaled_resnet_recursion_is_the_finite_width_ntk():
    """Monte Carlo: the empirical NTK of ntkrepro.nets.resnet (branch / sqrt(l)) at width 768 matches the
    recursion with a_l^2 = 1/l on the branch terms (the normalization behind the Prop. 3 claim)."""
    depth, width, sw2 = 4, 768, 2.0
    x = jnp.asarray([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]) * math.sqrt(3.0)
    net = resnet(depth=depth, width=width, out_dim=1, sigma_w2=sw2, branch_scale="scaled")
    draws = [empirical_ntk(net.apply_fn, net.init_fn(jax.random.PRNGKey(s), x.shape), x) for s in range(3)]
    measured = np.mean(np.asarray(draws), axis=0)
    sigma1 = (sw2, sw2 * 0.6, sw2)
    run = dk.relu_resnet(sigma_w2=sw2, branch_scale="scaled", sigma1=sigma1, depths=[depth])
    exact = np.array([[run.k11[0], run.k12[0]], [run.k12[0], run.k22[0]]]) * math.exp(run.log_p[0])
    np.testing.assert_allclose(measured, exact, rtol=0.08)


# ---------------------------------------------------------------- near-one maps and EOC points


def test_smooth_map_matches_direct_expectations():
    """gamma - gamma^2 R1 = 1 - f(c) and 1 - gamma R2 = f'(c), f from the library's quadrature, at c = 0.7."""
    for activation in ("tanh", "elu"):
        point = dk.eoc_point(activation, sigma_b2=0.04)
        smap = dk.smooth_map(activation, sigma_w2=point.sigma_w2, q=point.q)
        act = get_activation(activation)
        c = 0.7
        e, edot = (float(v) for v in act.expectations(point.q, point.q * c, point.q))
        x = 2 * math.sqrt(1 - c) / smap.sigma_max - 1
        r1 = float(np.polynomial.chebyshev.chebval(x, smap.r1))
        r2 = float(np.polynomial.chebyshev.chebval(x, smap.r2))
        gamma = 1 - c
        assert gamma - gamma**2 * r1 == pytest.approx(1 - (point.sigma_b2 + point.sigma_w2 * e) / point.q, abs=1e-12)
        assert 1 - gamma * r2 == pytest.approx(point.sigma_w2 * edot, abs=1e-12)


def test_elu_fpp_matches_owens_t_closed_form():
    """ELU: E[phi''(u) phi''(v)] = e^{q(1+s)} Phi2(-sqrt(q)(1+s), -sqrt(q)(1+s); s) (Owen's T)."""
    from scipy import special

    q, sigma_w2 = 1.1, 1.5
    for s in (0.0, 0.6, 0.999999):
        h = -math.sqrt(q) * (1 + s)
        closed = math.exp(q * (1 + s)) * (special.ndtr(h) - 2 * special.owens_t(h, math.sqrt((1 - s) / (1 + s))))
        assert float(dk._fpp(get_activation("elu"), sigma_w2, q, s)) == pytest.approx(
            sigma_w2 * q * closed, rel=1e-12
        )


@settings(max_examples=8, deadline=None)
@given(st.floats(0.01, 1.0), st.sampled_from(["tanh", "elu"]))
def test_eoc_point_has_chi1_one(sigma_b2, activation):
    point = dk.eoc_point(activation, sigma_b2=sigma_b2)
    from ntkrepro.kernels import meanfield

    chi = meanfield.chi1(activation, sigma_w2=point.sigma_w2, sigma_b2=point.sigma_b2, q=point.q)
    assert chi == pytest.approx(1.0, abs=1e-12)
    q_map = meanfield.variance_map(point.q, activation, sigma_w2=point.sigma_w2, sigma_b2=point.sigma_b2)
    assert q_map == pytest.approx(point.q, rel=1e-12)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.25])
def test_relu_like_eoc_closed_form(slope):
    point = dk.eoc_point(f"leaky_relu:{slope}", sigma_b2=0.0)
    assert point.sigma_w2 == pytest.approx(2 / (1 + slope**2), rel=1e-15)
    with pytest.raises(ValueError, match="only EOC point"):
        dk.eoc_point("relu", sigma_b2=0.1)


# ---------------------------------------------------------------- asymptotic constants derived for the report


def test_relu_offdiagonal_error_has_the_derived_log_coefficient():
    """ReLU on the EOC: L (K/L - q/4) = (3/8) q ln L + O(1) (the gamma^(1/2) term the proof drops)."""
    depths = hc.depth_grid(100_000, 5)
    case = hc.eoc_case("relu", sigma_b2=0.0, pairs=[PAIR], depths=depths)
    run = case["runs"][0]
    diag = hc.rate_diagnostics(depths, run["off_err"], ref=run["q_off"])
    assert diag["log_coefficient"] / run["q_off"] == pytest.approx(3 / 8, rel=5e-3)  # O(log(L)/L) corrections
    assert diag["increment_ratio"] == pytest.approx(1.0, abs=0.03) and diag["drift"] > 0.1  # log law, L <= 1e5


def test_tanh_offdiagonal_log_coefficient_matches_derivation():
    """Smooth phi: L (K/L - q/3) ~ (q/3) (1 - 2 f'''(1) / (3 f''(1)^2)) ln L; f'', f''' by Gauss-Hermite."""
    point = dk.eoc_point("tanh", sigma_b2=0.04)
    z, w = np.polynomial.hermite_e.hermegauss(150)
    w = w / math.sqrt(2 * math.pi)
    t = np.tanh(math.sqrt(point.q) * z)
    d2, d3 = -2 * t * (1 - t * t), -2 * (1 - t * t) * (1 - 3 * t * t)
    f2 = point.sigma_w2 * point.q * np.sum(w * d2**2)
    f3 = point.sigma_w2 * point.q**2 * np.sum(w * d3**2)
    depths = hc.depth_grid(100_000, 5)
    run = hc.eoc_case("tanh", sigma_b2=0.04, pairs=[PAIR], depths=depths)["runs"][0]
    diag = hc.rate_diagnostics(depths, run["off_err"], ref=run["q_off"])
    assert diag["log_coefficient"] / point.q == pytest.approx((1 - 2 * f3 / (3 * f2**2)) / 3, rel=2e-3)


def test_elu_offdiagonal_error_decays_like_inverse_sqrt():
    """ELU's f'' has a sqrt(1 - c) term: f'(c_l) = 1 - 2/l + C l^(-3/2), so the error decays like L^-1/2."""
    depths = hc.depth_grid(1_000_000, 5)
    run = hc.eoc_case("elu", sigma_b2=0.04, pairs=[PAIR], depths=depths)["runs"][0]
    diag = hc.rate_diagnostics(depths, run["off_err"], ref=run["q_off"])
    assert diag["slope"] == pytest.approx(-0.5, abs=0.05)
    assert diag["increment_ratio"] == pytest.approx(math.sqrt(10), rel=0.02)  # L e ~ sqrt(L): neither law


# ---------------------------------------------------------------- rate diagnostics on known curves


@settings(max_examples=20, deadline=None)
@given(st.floats(0.1, 5.0), st.floats(-5.0, 5.0), st.sampled_from([1, -1]))
def test_rate_diagnostics_classify_known_laws(a, b, sign):
    depths = hc.depth_grid(1_000_000, 5).astype(float)
    inv = sign * (a + b / depths) / depths
    log = sign * (a * np.log(depths) + b) / depths
    root = sign * a / np.sqrt(depths) * (1 + b / depths)
    d_inv = hc.rate_diagnostics(depths.astype(int), inv, ref=1.0)
    d_log = hc.rate_diagnostics(depths.astype(int), log, ref=1.0)
    d_root = hc.rate_diagnostics(depths.astype(int), root, ref=1.0)
    # L e = a + b/L: drift |b| (1/L1 - 1/L2) / |a + b/L2|, increments shrink tenfold per decade
    l1, l2 = 100_000, 1_000_000
    assert d_inv["drift"] == pytest.approx(abs(b) * (1 / l1 - 1 / l2) / abs(a + b / l2), rel=1e-6, abs=1e-15)
    if abs(b) >= 0.1:  # smaller b: increments at round-off
        assert d_inv["increment_ratio"] == pytest.approx(0.1, rel=1e-4)
    # L e = a ln L + b: the same increment a ln 10 every decade, drift a ln 10 / |a ln L2 + b|
    assert d_log["increment_ratio"] == pytest.approx(1.0, rel=1e-9)
    assert d_log["drift"] == pytest.approx(a * math.log(10) / abs(a * math.log(l2) + b), rel=1e-9)
    assert d_log["log_coefficient"] == pytest.approx(sign * a, rel=1e-6)
    assert d_root["slope"] == pytest.approx(-0.5, abs=1e-4)
    assert d_root["increment_ratio"] == pytest.approx(math.sqrt(10), rel=1e-3)
    assert d_root["slope_n"] == 6 and d_root["slope_se"] < 1e-4  # the last decade at 5 points per decade + 1
    assert d_inv["peak"] == pytest.approx(np.max(np.abs(inv)), rel=1e-12) and not d_inv["vanishes"]


def test_rate_diagnostics_of_a_vanishing_error():
    """Zero to round-off: settled at 0 (drift 0), no growth (increment ratio 0), peak below 1e-12."""
    depths = hc.depth_grid(1_000_000, 5)
    tiny = 1e-14 * np.sin(depths.astype(float))
    d = hc.rate_diagnostics(depths, tiny, ref=2.0)
    assert d["vanishes"] and d["drift"] == 0.0 and d["increment_ratio"] == 0.0 and d["peak"] <= 1e-14
    assert hc.rate_text(d) == "0 (exact at every depth)"


@pytest.mark.parametrize(
    ("law", "expected"),
    [(lambda L: 1 / np.log(L), 0.0),                              # Theta(1/log L), e ln L constant
     (lambda L: (1 + 1 / np.log(L)) / np.log(L), None),           # Theta(1/log L) with its correction
     (lambda L: 1 / L, (100 * math.log(1e4) - math.log(1e6)) / math.log(1e6)),  # 1/L: ~66
     (lambda L: np.cos(np.log10(L) * np.pi / 2) / np.log(L), None)],  # changes sign
)
def test_e_log_l_spread_against_direct_values(law, expected):
    depths = hc.depth_grid(1_000_000, 5)
    spread = stage_module("hayou2020/theorem_checks")._e_log_l_spread(depths, law(depths.astype(float)))
    s = np.array([law(float(d)) * math.log(d) for d in (10_000, 100_000, 1_000_000)])
    direct = (s.max() - s.min()) / np.min(np.abs(s))
    assert spread == pytest.approx(direct, rel=1e-9, abs=1e-12)
    if expected is not None:
        assert spread == pytest.approx(expected, rel=0.02, abs=1e-9)


def test_depth_grid_contains_the_decades():
    grid = hc.depth_grid(100_000, 7)
    assert {1, 10, 100, 1000, 10_000, 100_000} <= set(grid.tolist())
    assert np.all(np.diff(grid) > 0)
    with pytest.raises(ValueError):
        hc.rate_diagnostics(np.arange(1, 51), np.ones(50), ref=1.0)


# ---------------------------------------------------------------- Table 1 / Table 2 pieces


def test_prelu_net_with_zero_slope_is_the_relu_net():
    x = jax.random.normal(jax.random.PRNGKey(3), (5, 7))
    ours = hayou_table1().prelu_fc(depth=4, width=16, out_dim=3, sigma_w2=2.0, sigma_b2=0.1, init_slope=0.0)
    ref = fc(depth=4, width=16, out_dim=3, activation="relu", sigma_w2=2.0, sigma_b2=0.1)
    params = ours.init_fn(jax.random.PRNGKey(0), x.shape)
    assert all("a" in layer for layer in params[1:]) and "a" not in params[0]
    np.testing.assert_allclose(
        ours.apply_fn(params, x), ref.apply_fn(ref.init_fn(jax.random.PRNGKey(0), x.shape), x), rtol=1e-12
    )
    grads = jax.grad(lambda p: jnp.sum(ours.apply_fn(p, x) ** 2))(params)
    assert all(np.isfinite(float(g["a"])) for g in grads[1:])


def test_init_variances_eoc_and_dataset_override():
    from omegaconf import OmegaConf

    prelu = OmegaConf.create(
        {"name": "prelu", "activation": "prelu", "init_slope": 0.25, "sigma_b": 0.0, "sigma_w": None}
    )
    assert hayou_table1().init_variances(prelu, "mnist") == pytest.approx((2 / 1.0625, 0.0))
    soft = OmegaConf.create(
        {
            "name": "softplus",
            "activation": "softplus",
            "sigma_b": 0.0,
            "sigma_w": 2**0.5,
            "by_dataset": {"cifar10": {"sigma_w": 1.0}},
        }
    )
    assert hayou_table1().init_variances(soft, "mnist") == pytest.approx((2.0, 0.0))
    assert hayou_table1().init_variances(soft, "cifar10") == pytest.approx((1.0, 0.0))


def test_cifar_resnet_scaled_branches_and_shapes():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    nets = {
        v: cifar_resnet(depth=8, num_classes=5, branch_scale=v, batch_norm=False, dtype=jnp.float64)
        for v in ("standard", "scaled")
    }
    params = nets["standard"].init_fn(jax.random.PRNGKey(0), x.shape)
    out = {v: nets[v].apply_fn(params, x) for v in nets}
    assert out["standard"].shape == (4, 5)
    assert not np.allclose(out["standard"], out["scaled"])
    zeroed = [params[0]] + [{**layer, "w2": 0 * layer["w2"]} for layer in params[1:-1]] + [params[-1]]
    np.testing.assert_allclose(nets["standard"].apply_fn(zeroed, x), nets["scaled"].apply_fn(zeroed, x), rtol=1e-12)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        cifar_resnet(depth=10, num_classes=5)


# ---------------------------------------------------------------- issue 14: degenerate sweeps, diverged runs, premise

REGISTRY = Path(__file__).resolve().parents[2] / "experiments" / "hayou2020" / "claims.yaml"


def _stage_cfg(artifact: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    from ntkrepro.stage import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment=hayou2020/{artifact}", "scale=smoke",
                                                        "tracking.enabled=false", "progress=false", *overrides])


def _claim(cid: str):
    from ntkrepro.claims import load_registry

    return next(c for c in load_registry(REGISTRY) if c.id == cid)


def _record(artifact: str, metrics: dict, *, uncertainty=None, overrides=()):
    """A metrics.json record at the paper's registered config, with ``overrides`` applied to ``config``."""
    from ntkrepro.config import premise_config, registered_config

    paper = registered_config(f"hayou2020/{artifact}", "paper")
    config = dict(paper)
    changed = {}
    for key, value in overrides:
        changed[key] = {"registered": config[key], "run": value}
        config[key] = value
    return {"paper": "hayou2020", "artifact": artifact, "scale": "paper", "metrics": metrics, "config": config,
            "paper_config": premise_config(paper), "overrides": changed, "uncertainty": uncertainty or {},
            "data": None, "splits": []}


def test_fig1_one_sigma_w_gives_no_spread():
    """Panel (c) with one sigma_w: the spread over sigma_w is None (fig1.py used to report 0 -> 'reproduced')."""
    fig1 = stage_module("hayou2020/fig1")

    cfg = _stage_cfg("fig1", "params.resnet_sigma_w2=[1.0]", "params.eoc=[{activation: relu, sigma_b2: 0.0}]",
                     "params.ordered=[{activation: relu, sigma_w2: 1.5, sigma_b2: 0.1}]")
    result = fig1.run(cfg)
    assert result.metrics["fig1c_resnet_slope_spread"] is None
    assert result.metrics["n_resnet_sigma_w2"] == 1
    slope = result.metrics["fig1c_resnet_sw2_1_slope"]
    depths, err = result.arrays["depths"], result.arrays["c_sw2_1"]
    keep = (depths >= 10) & (depths <= 1000)
    assert slope == pytest.approx(np.polyfit(np.log(depths[keep]), np.log(err[keep]), 1)[0], rel=1e-10)
    assert result.uncertainty["fig1c_resnet_sw2_1_slope"]["n"] == int(keep.sum())
    # twice the same value would be one sigma_w as well: refused before compute (tests/.../test_bad_input_hayou2020)


def test_fig1_local_slopes_and_sign_changes_over_the_whole_grid():
    """Issue 17 item 11: panel (a) reports its local slope per decade over the whole grid and the depths where
    the signed error changes sign (ELU near L = 224), checked against the recursion's own error curve."""
    fig1 = stage_module("hayou2020/fig1")
    cfg = _stage_cfg("fig1", "params.eoc=[{activation: elu, sigma_b2: 0.04}]", "params.resnet_sigma_w2=[1.0]",
                     "params.ordered=[{activation: relu, sigma_w2: 1.5, sigma_b2: 0.1}]")
    result = fig1.run(cfg)
    depths = result.arrays["depths"]
    point = hc.eoc_points(cfg.params.eoc, "params.eoc")[0]
    signed = hc.eoc_case("elu", sigma_b2=0.04, pairs=[dict(cfg.params.pair)], depths=depths, point=point)["runs"][0]
    err = np.abs(signed["off_err"]) / signed["q_off"]
    at = {d: err[np.flatnonzero(depths == d)[0]] for d in (1, 10, 100, 1000)}
    expected = [math.log10(at[b] / at[a]) for a, b in ((1, 10), (10, 100), (100, 1000))]
    assert result.metrics["fig1a_elu_local_by_decade"] == pytest.approx(expected, rel=1e-12)
    flips = result.metrics["fig1a_elu_sign_change_depths"]
    assert len(flips) == 1 and 150 <= flips[0] <= 300  # the crossing the claim's fit range stays clear of
    i = int(np.flatnonzero(depths == flips[0])[0])
    assert np.sign(signed["off_err"][i]) != np.sign(signed["off_err"][i - 1])
    assert "fig1_local_slopes" in result.figures


def test_fig1_default_fit_range_is_the_last_two_decades_of_the_grid():
    """fit_range null (registered): [max_depth / 100, max_depth], so a sweep over max_depth (README) needs no
    fit range; quick and paper keep [1e4, 1e6], smoke [10, 1e3]."""
    fig1 = stage_module("hayou2020/fig1")

    for overrides, expected in (((), (10, 1000)), (("params.max_depth=10000",), (100, 10_000)),
                                (("scale=quick",), (10_000, 1_000_000)), (("params.max_depth=5000",), (50, 5000))):
        p = _stage_cfg("fig1", *overrides).params
        assert fig1.fit_bounds(p, hc.depth_grid(p.max_depth, p.per_decade)) == expected
    p = _stage_cfg("fig1", "params.max_depth=1234").params  # not a multiple of 100: the first grid depth above 12.34
    depths = hc.depth_grid(1234, p.per_decade)
    lo, hi = fig1.fit_bounds(p, depths)
    assert hi == 1234 and lo in depths and lo >= 12.34 and depths[np.searchsorted(depths, lo) - 1] < 12.34


def test_eoc_curves_and_fig1_refuse_before_any_recursion(monkeypatch):
    """What only a mean-field solve can tell (an ordered case not in the ordered phase, a smooth EOC case with no
    EOC point) is refused by the stage with the case's path, before its first recursion."""
    fig1 = stage_module("hayou2020/fig1")

    from ntkrepro.checks import ConfigError

    def no_compute(*args, **kwargs):
        raise AssertionError("computed before refusing the case")

    for name in ("eoc_case", "phase_case", "resnet_case"):
        monkeypatch.setattr(fig1, name, no_compute)
    relu = "params.eoc=[{activation: relu, sigma_b2: 0.0}]"
    cases = [
        ("params.ordered=[{activation: relu, sigma_w2: 1.5, sigma_b2: 0.1}, {activation: tanh, sigma_w2: 4.0, "
         "sigma_b2: 0.04}]", "error: params.ordered[1]: must be in the ordered phase (chi_1 < 1); here chi_1 = 1.34"),
        ("params.ordered=[{activation: relu, sigma_w2: 2.5, sigma_b2: 0.1}]",
         "error: params.ordered[0]: has no finite fixed-point variance q*"),
    ]
    for ordered, message in cases:
        with pytest.raises(ConfigError) as err:
            fig1.run(_stage_cfg("fig1", relu, ordered))
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match=r"^error: params\.eoc\[1\]: no usable EOC point: no EOC point with "):
        fig1.run(_stage_cfg("fig1", "params.eoc=[{activation: relu, sigma_b2: 0.0}, {activation: softplus, "
                            "sigma_b2: 0.04}]"))
    theorem_checks = stage_module("hayou2020/theorem_checks")

    for name in ("eoc_case", "phase_case", "resnet_case"):
        monkeypatch.setattr(theorem_checks, name, no_compute)
    with pytest.raises(ConfigError, match=r"^error: params\.chaotic\[0\]: must be in the chaotic phase \(chi_1 > 1\); "
                       r"here chi_1 = 0\.7"):
        theorem_checks.run(_stage_cfg("theorem_checks", "params.eoc=[]", "params.ordered=[]",
                                      "params.chaotic=[{activation: elu, sigma_w2: 1.0, sigma_b2: 0.04}]"))


def test_one_sigma_w_or_a_perturbed_slope_is_never_reproduced():
    from ntkrepro.claims import evaluate

    spread = _claim("fig1c_rate_independent_of_sigma_w")
    se = {"fig1c_resnet_slope_spread": {"se": 3e-4, "n": 41, "over": "fit points"}}
    ev = {"fig1c_resnet_sigma_w2": [0.5, 1.0, 2.0], "fig1c_resnet_slopes": [-0.97, -0.96, -0.95],
          "n_resnet_sigma_w2": 3}
    good = _record("fig1", {"fig1c_resnet_slope_spread": 0.02, **ev}, uncertainty=se)
    assert evaluate(spread, good).status == "reproduced"  # the positive control
    ev1 = {"fig1c_resnet_sigma_w2": [1.0], "fig1c_resnet_slopes": [-0.96], "n_resnet_sigma_w2": 1}
    one = _record("fig1", {"fig1c_resnet_slope_spread": 0.0, **ev1}, overrides=[("params.resnet_sigma_w2", [1.0])])
    assert evaluate(spread, one).status == "not comparable"
    unmeasured = _record("fig1", {"fig1c_resnet_slope_spread": None, **ev1})
    assert evaluate(spread, unmeasured).status != "reproduced"
    # Fig. 1a: a log(L)/L law (slope -0.93 with se 5e-4) passed the old +-0.1 band; the literal claim does not
    slope = _claim("fig1a_relu_about_inv_L")
    metrics = {"fig1a_relu_slope": -0.93, "fig1a_relu_slope_local": [-0.926, -0.937], "fit_lo": 10_000,
               "fit_hi": 1_000_000}
    rec = _record("fig1", metrics, uncertainty={"fig1a_relu_slope": {"se": 5e-4, "n": 41, "over": "fit points"}})
    assert evaluate(slope, rec).status == "contradicted"
    rec["metrics"]["fig1a_relu_slope"] = -1.0005
    assert evaluate(slope, rec).status == "reproduced"


def test_eoc_relu_point_is_a_consistency_check():
    from ntkrepro.claims import evaluate

    claim = _claim("eoc_relu_point")
    assert claim.consistency
    assert evaluate(claim, _record("eoc_curves", {"chi1_relu": 1.0})).status == "check holds"


def test_diverged_runs_are_counted_not_scored_at_chance():
    """A learning rate of 1e100 makes the loss of a ReLU net non-finite within two steps: every run is NaN
    (left out), the cell None with 2 of 2 runs diverged, never 100/classes; at 1e30 the runs last past the
    early evaluation (kept) and diverge before the late one (left out): divergence is counted per cell."""
    key = jax.random.PRNGKey(0)
    x = np.asarray(jax.random.normal(key, (64, 8)))
    y = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (64,), 0, 4), dtype=np.int32)
    net = fc(depth=3, width=16, out_dim=4, activation="relu", sigma_w2=2.0, sigma_b2=0.0)
    kw = dict(seed=0, n_seeds=2, epochs=(1, 2), batch_size=32, label="cell")
    notes: list[str] = []
    early, late = hc.accuracies_at_epochs(net, (x, y, x, y), learning_rate=1e100, notes=notes, **kw)
    assert np.all(np.isnan(early)) and np.all(np.isnan(late))
    assert len(notes) == 2 and "seed 0" in notes[0] and "seed 1" in notes[1] and "diverged" in notes[0]
    for values in (early, late):
        cell = hc.cell_summary(values)
        assert cell["mean"] is None and cell["estimate"] is None and (cell["diverged"], cell["runs"]) == (2, 2)
    notes = []
    early, late = hc.accuracies_at_epochs(net, (x, y, x, y), learning_rate=1e30, notes=notes, **kw)
    assert np.all(np.isfinite(early)) and np.all(np.isnan(late)) and len(notes) == 2
    assert hc.cell_summary(early)["diverged"] == 0 and hc.cell_summary(late)["diverged"] == 2
    notes = []  # a finite learning rate on the same data: no divergence, accuracies in [0, 100]
    early, late = hc.accuracies_at_epochs(net, (x, y, x, y), learning_rate=1e-2, notes=notes, **kw)
    assert np.all(np.isfinite(late)) and np.all((late >= 0) & (late <= 100)) and not notes


def test_cell_summary_leaves_diverged_runs_out():
    cell = hc.cell_summary([50.0, np.nan, 60.0])
    assert cell["mean"] == pytest.approx(55.0)
    assert cell["estimate"].se == pytest.approx(np.std([50.0, 60.0], ddof=1) / math.sqrt(2))
    assert (cell["diverged"], cell["runs"]) == (1, 3)
    assert cell["estimate"].record() == {"se": pytest.approx(5.0), "n": 2, "over": "seeds"}
    one = hc.cell_summary([np.nan, 42.0])
    assert one["mean"] == 42.0 and one["std"] is None and one["diverged"] == 1


def test_table1_orderings_skip_cells_with_no_runs_and_report_the_distance_to_chance():
    _orderings = hayou_table1()._orderings

    names = ["relu", "lrelu_0p01", "prelu", "elu", "tanh", "softplus", "sigmoid"]
    values = dict(zip(names, [40.0, 41.0, 42.0, 70.0, 65.0, 10.5, 8.0], strict=True))
    metrics = {f"acc_mnist_{n}_early": v for n, v in values.items()}
    uncertainty = {f"acc_mnist_{n}_early": {"se": 0.5, "n": 5, "over": "seeds"} for n in names}
    diverged = {f"acc_mnist_{n}_early": {"diverged": 0, "runs": 5} for n in names}
    out = _orderings(metrics, uncertainty, diverged, "mnist", "early", chance=10.0)
    assert out["mnist_early_classS_beats_relu_like"] is True and out["mnist_early_prelu_ge_relu"] is True
    assert out["mnist_early_softplus_sigmoid_from_chance"] == pytest.approx(2.0)  # sigmoid, 2 points below
    assert uncertainty["mnist_early_softplus_sigmoid_from_chance"]["se"] == 0.5
    metrics["acc_mnist_prelu_early"] = None  # every PReLU run diverged
    out = _orderings(metrics, uncertainty, diverged, "mnist", "early", chance=10.0)
    assert out["mnist_early_classS_beats_relu_like"] is None and out["mnist_early_prelu_ge_relu"] is None


def test_registry_premises():
    """Table 2 at the reduced scales trains fully connected ResNets of depth 4/8/16: not the paper's claim."""
    from ntkrepro.config import checkable

    rows = {cid: ok for cid, _, ok, _ in checkable("hayou2020", REGISTRY.parents[1])}
    assert all(ok == ["paper"] for cid, ok in rows.items() if cid.startswith(("t1_", "t2_")))
    assert rows["fig1c_rate_independent_of_sigma_w"] == ["quick", "paper"]
    assert rows["thm1_relu_offdiag_rate"] == ["quick", "paper"]
    assert rows["eoc_elu_point"] == ["smoke", "quick", "paper"]


def test_sigmoid_eoc_start_by_root_finding_matches_mpmath():
    """Sigmoid's EOC curve begins (sigma_b = 0) where q = E[phi^2] / E[phi'^2] (issue 17 item 10): the stage's
    brentq on its quadrature agrees with an mpmath root of the same equation, whatever the q grid."""
    eoc_curves = stage_module("hayou2020/eoc_curves")

    def moments(q):
        sig = lambda x: 1 / (1 + mpmath.exp(-x))  # noqa: E731
        density = lambda z: mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731
        line = [-mpmath.inf, 0, mpmath.inf]
        second = mpmath.quad(lambda z: sig(mpmath.sqrt(q) * z) ** 2 * density(z), line)
        deriv = mpmath.quad(lambda z: (sig(mpmath.sqrt(q) * z) * (1 - sig(mpmath.sqrt(q) * z))) ** 2 * density(z), line)
        return second, deriv

    with mpmath.workdps(30):
        q_ref = mpmath.findroot(lambda q: q - moments(q)[0] / moments(q)[1], 45.0)
        sigma_w_ref = float(1 / mpmath.sqrt(moments(q_ref)[1]))
    for grid in (np.logspace(-2, 3, 40), np.logspace(0, 2, 7)):
        q, sigma_w = eoc_curves.curve_start("sigmoid", grid)
        assert q == pytest.approx(float(q_ref), rel=1e-9)
        assert sigma_w == pytest.approx(sigma_w_ref, rel=1e-9)
    assert eoc_curves.curve_start("tanh", np.logspace(0, 2, 7)) is None  # kept from q_min on: no end on the grid


# ---------------------------------------------------------------- CNN results (issue 17 item 2: cnn_checks)


def _cnn_inputs(n=2, n0=2, shape=(5,), seed=0):
    return np.random.default_rng(seed).normal(size=(n, n0, *shape))


def test_window_mean_and_first_layer_against_brute_force():
    """A and [x, x'] of Prop. 1 by explicit loops over positions and the filter (periodic, 1-D and 2-D)."""
    import cnn_kernels as ck

    for shape, k in (((5,), 1), ((4, 3), 1), ((6,), 2)):
        xs = _cnn_inputs(shape=shape, seed=len(shape))
        positions = list(np.ndindex(*shape))
        offsets = list(np.ndindex(*(2 * k + 1,) * len(shape)))
        brute = np.zeros((len(positions), len(positions)))
        for i, a in enumerate(positions):
            for j, a2 in enumerate(positions):
                for off in offsets:
                    b = np.asarray(off) - k
                    pa = tuple((np.asarray(a) + b) % shape)
                    pb = tuple((np.asarray(a2) + b) % shape)
                    brute[i, j] += np.sum(xs[0][(slice(None), *pa)] * xs[1][(slice(None), *pb)])
        want = 1.7 / (2 * (2 * k + 1) ** len(shape)) * brute + 0.3
        got = ck.first_layer(xs[0], xs[1], shape=shape, k=k, sigma_w2=1.7, sigma_b2=0.3)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("activation,sigma_w2,sigma_b2", [("relu", 2.0, 0.0), ("tanh", 1.5, 0.1)])
def test_cnn_recursion_with_one_position_is_the_ffnn_recursion(activation, sigma_w2, sigma_b2):
    """M = 1: every window wraps onto the one position, [x, x'] = (2k+1) x.x', so Prop. 1 is Lemma 2 with d = n0
    (ntkrepro.kernels.fc.fc_kernels) and Lemma 4 is Lemma 3 (ntkrepro.kernels.resnet.resnet_kernels)."""
    import cnn_kernels as ck

    from ntkrepro.kernels.fc import fc_kernels
    from ntkrepro.kernels.resnet import resnet_kernels

    xs = _cnn_inputs(n=3, n0=5, shape=(1,))
    flat = jnp.asarray(xs[:, :, 0])
    for residual, ref_fn in ((False, fc_kernels), (True, resnet_kernels)):
        got = ck.cnn_kernels(xs, depth=6, k=1, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                             residual=residual)
        ref = ref_fn(flat, depth=6, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, all_depths=True)
        np.testing.assert_allclose(got.ntk[..., 0, 0], np.asarray(ref.ntk), rtol=1e-10)
        np.testing.assert_allclose(got.q[..., 0, 0], np.asarray(ref.nngp), rtol=1e-10)


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
def test_cnn_recursion_matches_arora_cntk_where_the_settings_coincide(readout):
    """2-D, ReLU, sigma_b = 0, images zero outside a 2 x 2 patch with a margin wider than the receptive field:
    periodic (Hayou) and zero padding (Arora, ntkrepro.kernels.conv) agree, and conv.cntk's readouts are sums of
    Prop. 1's kernel: vanilla = (1/q^2) sum_a K^D_{aa}, GAP = (1/q^2) mean_{a,a'} K^D_{aa'} (x scaled by
    sqrt(sigma_w2 / (n0 q^2)): conv's first layer has no normalization)."""
    import cnn_kernels as ck

    from ntkrepro.kernels.conv import cntk

    depth, n0, side = 3, 2, 10
    xs = np.zeros((2, n0, side, side))
    xs[:, :, 4:6, 4:6] = np.random.default_rng(3).normal(size=(2, n0, 2, 2))
    ours = ck.cnn_kernels(xs, depth=depth, k=1, activation="relu", sigma_w2=2.0, sigma_b2=0.0).ntk[-1, 0, 1]
    images = np.moveaxis(xs, 1, -1) * math.sqrt(2.0 / (n0 * 9))
    theirs = float(cntk(images[:1], images[1:], depth=depth, readout=readout, dtype=jnp.float64).ntk[0, 0])
    want = np.trace(ours) / 9 if readout == "vanilla" else ours.mean() / 9
    assert theirs == pytest.approx(want, rel=1e-10)


def test_relu_cnn_diagonal_is_a_geometric_average_not_theta_inv_l():
    """ReLU CNN on the EOC: Sigmadot = 1 and Sigma^l_{gg} = q^(l-1)_g on the diagonal, so K^L_{aa}(x,x) =
    L (A^(L-1) q^1)_a exactly (closed form, A the circulant window mean): its error to L mean(q^1) decays
    geometrically, and the stage's lower-bound metric falls to round-off."""
    import cnn_kernels as ck

    xs = _cnn_inputs(n=1, shape=(6,))
    depth = 40
    got = ck.cnn_kernels(xs, depth=depth, k=1, activation="relu", sigma_w2=2.0, sigma_b2=0.0).ntk[:, 0, 0]
    a_mat = np.zeros((6, 6))
    for i in range(6):
        for b in (-1, 0, 1):
            a_mat[i, (i + b) % 6] = 1 / 3
    q1 = np.diag(np.asarray(ck.first_layer(xs[0], xs[0], shape=(6,), k=1, sigma_w2=2.0, sigma_b2=0.0)))
    for layer in (1, 2, 7, depth):
        np.testing.assert_allclose(np.diag(got[layer - 1]), layer * np.linalg.matrix_power(a_mat, layer - 1) @ q1,
                                   rtol=1e-12)
    err = np.abs(np.diag(got[-1]) / depth - q1.mean())
    assert err.max() < 1e-6 * q1.mean()  # 40 layers: (second eigenvalue 2/3)^39 ~ 1e-7


def test_relu_conv_resnet_diagonal_closed_form():
    """Conv. ReLU ResNet, sigma_b = 0: q^l = B q^(l-1), B = I + aA (a = sigma_w2/2), and K^L_{aa} =
    B^(L-2) (B + (L-1) a A) q^1 (derived by induction); K/alpha_L -> a/(1+a) mean(q^1), not mean(q^1)."""
    import cnn_kernels as ck

    xs = _cnn_inputs(n=1, shape=(5,), seed=4)
    sw2, depth = 0.5, 30
    a = sw2 / 2
    got = ck.cnn_kernels(xs, depth=depth, k=1, activation="relu", sigma_w2=sw2, sigma_b2=0.0, residual=True)
    a_mat = np.zeros((5, 5))
    for i in range(5):
        for b in (-1, 0, 1):
            a_mat[i, (i + b) % 5] = 1 / 3
    b_mat = np.eye(5) + a * a_mat
    q1 = np.diag(np.asarray(ck.first_layer(xs[0], xs[0], shape=(5,), k=1, sigma_w2=sw2, sigma_b2=0.0)))
    for layer in (2, 3, 10, depth):
        want = np.linalg.matrix_power(b_mat, layer - 2) @ (b_mat + (layer - 1) * a * a_mat) @ q1
        np.testing.assert_allclose(np.diag(got.ntk[layer - 1, 0, 0]), want, rtol=1e-12)


@pytest.mark.parametrize("activation,residual", [("relu", False), ("tanh", False), ("relu", True)])
def test_deep_cnn_path_matches_the_exact_recursion(activation, residual):
    """Below ~400 layers the exact float64 recursion is accurate: the uniform-variance gamma map that takes over
    at the switch must agree with it (K, and 1 - c from the covariances)."""
    import cnn_kernels as ck

    xs = _cnn_inputs(n=2, shape=(4,), seed=5)
    sw2, sb2, q_star = (2.0 if not residual else 0.5), 0.0, None
    if activation == "tanh":
        point = dk.eoc_point("tanh", sigma_b2=0.04)
        sw2, sb2, q_star = point.sigma_w2, 0.04, point.q
    depths = [1, 3, 50, 200, 400]
    deep = ck.deep_cnn(xs, depths=depths, k=1, activation=activation, sigma_w2=sw2, sigma_b2=sb2, q_star=q_star,
                       residual=residual)
    assert deep.switch_depth < 400
    exact = ck.cnn_kernels(xs, depth=400, k=1, activation=activation, sigma_w2=sw2, sigma_b2=sb2, residual=residual)
    growth = (1 + sw2 / 2) ** (np.asarray(depths) - 1) if residual else np.ones(len(depths))
    for row, layer in enumerate(depths):
        np.testing.assert_allclose(deep.ntk[row, 1], exact.ntk[layer - 1, 0, 1] / growth[row], rtol=1e-8)
        var0, var1 = (np.diag(exact.q[layer - 1, i, i]) for i in (0, 1))
        gamma = 1 - exact.q[layer - 1, 0, 1] / np.sqrt(np.outer(var0, var1))
        np.testing.assert_allclose(deep.gamma[row, 1], gamma, rtol=1e-6, atol=1e-12)


def test_cnn_recursion_is_the_limit_of_finite_cnns_and_a_misprint_is_not():
    """Monte Carlo of the finite CNN of eq. 11 (cnn_kernels.hayou_cnn, ntkrepro.empirical), 128 channels, 32 draws:
    Prop. 1 and Lemma 4 are not significantly outside the registry's band (squared relative excess 0.05^2), the
    misreadings are significantly outside it: Prop. 1 against the finite ResNet, and Prop. 1 with the window mean
    dropped from the derivative term (the FFNN recursion per position)."""
    import cnn_kernels as ck
    from omegaconf import OmegaConf

    cnn_checks = stage_module("hayou2020/cnn_checks")
    xs = _cnn_inputs(n=2, shape=(4,), seed=6)
    p = OmegaConf.create({"mc_depth": 3, "mc_channels": 128, "mc_samples": 32, "half_width": 1, "input_seed": 1})
    band = 0.05**2
    right = {r: ck.cnn_kernels(xs, depth=3, k=1, activation="tanh", sigma_w2=1.5, sigma_b2=0.1, residual=r).ntk[-1]
             for r in (False, True)}
    layers = ck._exact_layers(xs, k=1, activation="tanh", sigma_w2=1.5, sigma_b2=0.1, residual=False)
    q, ntk = next(layers)
    act = get_activation("tanh")
    for _ in range(2):  # the misreading: K^(l-1)_{a,a'} outside the window mean
        var = np.stack([np.diag(q[i, i]) for i in range(2)])
        e, edot = act.expectations(var[:, None, :, None], q, var[None, :, None, :])
        sigma = 0.1 + 1.5 * np.asarray(e)
        q, ntk = ck.window_mean(sigma, (4,), 1), 1.5 * np.asarray(edot) * ntk + ck.window_mean(sigma, (4,), 1)
    misread = np.asarray(ntk)
    for residual in (False, True):
        case = OmegaConf.create({"activation": "tanh", "sigma_w2": 1.5, "sigma_b2": 0.1, "residual": residual})
        draws = cnn_checks.mc_samples(case, xs, p)[..., 0::2, 0::2]
        r, se = cnn_checks.sq_excess(draws, right[residual], seed=0)
        assert r - 2 * se < band, (residual, r, se)
        if not residual:
            for wrong in (right[True], misread):
                r_wrong, se_wrong = cnn_checks.sq_excess(draws, wrong, seed=0)
                assert r_wrong - 2 * se_wrong > band, (r_wrong, se_wrong)


def test_cnn_min_tail_separates_inverse_l_from_geometric_decay():
    """The lower-bound metric of the CNN diagonal claims: min over the last two decades of L |e| / ref is the
    constant of a C/L + D/L^2 error, and round-off small for a geometric one (or one that vanishes)."""
    cnn_checks = stage_module("hayou2020/cnn_checks")
    depths = hc.depth_grid(10**5, 10)
    shape = (len(depths), 1, 2, 2)
    inverse = np.broadcast_to((0.7 / depths + 3.0 / depths**2)[:, None, None, None], shape)
    geometric = np.broadcast_to((0.9 ** depths.astype(float))[:, None, None, None], shape)
    ref = np.array([2.0])
    assert cnn_checks._min_tail(depths, inverse, ref) == pytest.approx(0.35, rel=1e-3)
    assert cnn_checks._min_tail(depths, geometric, ref) < 1e-30
    assert cnn_checks._min_tail(depths, np.zeros(shape), ref) == 0.0


def test_cnn_claims_are_checkable_at_quick():
    from ntkrepro.config import checkable

    rows = {cid: ok for cid, _, ok, _ in checkable("hayou2020", REGISTRY.parents[1])}
    cnn = {cid: ok for cid, ok in rows.items() if cid.startswith(("cnn_",))}
    assert len(cnn) == 20
    assert all(ok[-2:] == ["quick", "paper"] for ok in cnn.values())
