"""Paper-specific math of the Jacot et al. 2018 stages, each against an independent reference: the
paper's network and kernel convention (a hand-written forward pass and recursion), the GD stepper
(``ntkrepro.train.train`` and the exact linear-model dynamics), the NTK row (``empirical_ntk``), the
limiting Gaussian (matrix exponential of the block ODE), kernel PCA and the Fig. 1-3 metrics; Prop. 2's
check (``ntk_pd``) against a Monte Carlo empirical NTK of wide nets and the dimension count of polynomials
on the sphere (the ranks of the polynomial and depth-1 kernels)."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg, stats

from ntkrepro.stage import stage_module  # noqa: E402

STAGES = Path(__file__).resolve().parents[2] / "experiments" / "jacot2018"


def _load(name):
    """A module of experiments/jacot2018/ (the stage's folder importable for its sibling helpers)."""
    return stage_module(f"jacot2018/{name}")


common = _load("jacot_common")
fig1 = _load("fig1")
fig2 = _load("fig2")
fig3 = _load("fig3")
ntk_pd = _load("ntk_pd")

from ntkrepro.empirical import empirical_ntk  # noqa: E402
from ntkrepro.kernels.fc import jacot_fc_kernels, jacot_to_fc  # noqa: E402
from ntkrepro.nets import fc as fc_net  # noqa: E402
from ntkrepro.train import train  # noqa: E402

BETA = 0.1


def jacot_forward(params, x, *, beta):
    """Sec. 2 read literally: a~(l+1) = W(l) a(l) / sqrt(n_l) + beta b(l), ReLU between layers."""
    a = np.asarray(x, dtype=np.float64)
    for i, layer in enumerate(params):
        if i > 0:
            a = np.maximum(a, 0.0)
        w = np.asarray(layer["w"])
        a = a @ w / math.sqrt(w.shape[0]) + beta * np.asarray(layer["b"])
    return a


def jacot_recursion(x1, x2, *, depth, beta):
    """Sec. 3-4 recursions with the ReLU arc-cosine formulas (Cho & Saul 2009), in numpy."""
    n0 = x1.shape[1]
    s12 = x1 @ x2.T / n0 + beta**2
    s11 = np.sum(x1 * x1, axis=1) / n0 + beta**2
    s22 = np.sum(x2 * x2, axis=1) / n0 + beta**2
    theta = s12.copy()
    for _ in range(depth - 1):
        norm = np.sqrt(np.outer(s11, s22))
        c = np.clip(s12 / norm, -1.0, 1.0)
        angle = np.arccos(c)
        sigma = norm * (np.sin(angle) + (np.pi - angle) * c) / (2 * np.pi) + beta**2
        sigma_dot = (np.pi - angle) / (2 * np.pi)
        theta = theta * sigma_dot + sigma
        s12, s11, s22 = sigma, s11 / 2 + beta**2, s22 / 2 + beta**2
    return s12, theta


def test_net_is_jacots_parameterization():
    net = common.jacot_net(depth=3, width=7, beta=BETA)
    x = np.random.default_rng(0).standard_normal((5, 4))
    params = net.init_fn(common.init_key(0, 1), x.shape)
    np.testing.assert_allclose(np.asarray(net.apply_fn(params, x)), jacot_forward(params, x, beta=BETA),
                               rtol=1e-12, atol=1e-12)


def test_limit_kernels_follow_the_papers_recursion():
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    for depth in (1, 2, 4):
        sigma, theta = jacot_recursion(x1, x2, depth=depth, beta=BETA)
        k = jacot_fc_kernels(x1, x2, depth=depth, beta=BETA)
        np.testing.assert_allclose(np.asarray(k.nngp), sigma, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(k.ntk), theta, rtol=1e-10)


def test_ntk_row_equals_the_empirical_ntk():
    net = common.jacot_net(depth=4, width=16, beta=BETA)
    x0 = np.array([[1.0, 0.0]])
    grid = common.circle_points(np.linspace(-np.pi, np.pi, 9))
    params = net.init_fn(common.init_key(3, 16, 0), x0.shape)
    row = common.ntk_row_fn(net.apply_fn)(params, x0, grid)
    reference = empirical_ntk(net.apply_fn, params, x0, grid, implementation="jacobian")[0]
    np.testing.assert_allclose(np.asarray(row), np.asarray(reference), rtol=1e-10)


def test_gd_stepper_matches_the_library_training_loop():
    net = common.jacot_net(depth=3, width=12, beta=BETA)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 2)), rng.standard_normal((8, 1))
    params = net.init_fn(common.init_key(4), x.shape)
    mine = common.gd_stepper(net.apply_fn, learning_rate=1.0, steps=25)(params, x, y)
    reference = train(net.apply_fn, params, x, y, steps=25, learning_rate=1.0).params
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_gd_on_the_mean_loss_runs_the_flow_of_theta_over_n():
    """Depth 1 (a linear model) is exactly its kernel dynamics: r_t = (I - Theta/N)^t r_0 at lr 1."""
    net = common.jacot_net(depth=1, width=1, beta=BETA)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))
    params = net.init_fn(common.init_key(5), x.shape)
    theta = x @ x.T / 3 + BETA**2
    r0 = np.asarray(net.apply_fn(params, x)) - y
    trained = common.gd_stepper(net.apply_fn, learning_rate=1.0, steps=7)(params, x, y)
    expected = np.linalg.matrix_power(np.eye(6) - theta / 6, 7) @ r0
    np.testing.assert_allclose(np.asarray(net.apply_fn(trained, x)) - y, expected, rtol=1e-10, atol=1e-12)


def test_gd_stepper_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        common.gd_stepper(lambda p, x: x, learning_rate=1.0, steps=0)
    with pytest.raises(ValueError, match="learning_rate"):
        common.gd_stepper(lambda p, x: x, learning_rate=-1.0, steps=3)


def _block_ode_gaussian(theta_all, sigma_all, n_test, y, t):
    """Independent reference: f = [f(x); f(X)] obeys df/dt = -(1/N) Theta[:, X] (f(X) - y), solved by the
    matrix exponential of the augmented linear system; f_0 ~ N(0, Sigma)."""
    m = theta_all.shape[0]
    n = m - n_test
    a = np.zeros((m + 1, m + 1))
    a[:m, n_test:m] = -theta_all[:, n_test:] / n
    a[:m, m] = theta_all[:, n_test:] @ y / n
    flow = linalg.expm(t * a)
    linear, offset = flow[:m, :m], flow[:m, m]
    cov = linear @ sigma_all @ linear.T
    return offset[:n_test], np.diag(cov)[:n_test]


@pytest.mark.parametrize("t", [3.0, 40.0])
def test_limiting_gaussian_matches_the_block_ode(t):
    x_train = common.circle_points([-2.0, -0.4, 1.1])
    x_test = common.circle_points(np.linspace(-3.0, 3.0, 5))
    y = x_train[:, 0] * x_train[:, 1]
    k = jacot_fc_kernels(np.concatenate([x_test, x_train]), depth=3, beta=BETA)
    theta, sigma = np.asarray(k.ntk), np.asarray(k.nngp)
    nt = len(x_test)
    mean, var = fig2.limiting_gaussian(theta[:nt, nt:], theta[nt:, nt:], np.diag(sigma)[:nt],
                                       sigma[:nt, nt:], sigma[nt:, nt:], y, t=t)
    ref_mean, ref_var = _block_ode_gaussian(theta, sigma, nt, y, t)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(var, ref_var, rtol=1e-8, atol=1e-12)


def test_converged_limit_interpolates_the_training_points():
    x_train = common.circle_points([-2.0, 0.3, 2.2])
    y = np.array([0.3, -0.2, 0.5])
    k = jacot_fc_kernels(x_train, depth=4, beta=BETA)
    mean, var = fig2.limiting_gaussian(k.ntk, k.ntk, np.diag(np.asarray(k.nngp)), k.nngp, k.nngp, y, t=np.inf)
    np.testing.assert_allclose(mean, y, atol=1e-9)
    np.testing.assert_allclose(var, 0.0, atol=1e-9)


def test_limiting_gaussian_rejects_repeated_training_points():
    x = common.circle_points([0.5, 0.5])
    k = jacot_fc_kernels(x, depth=2, beta=BETA)
    with pytest.raises(ValueError, match="positive definite"):
        fig2.limiting_gaussian(k.ntk, k.ntk, np.diag(np.asarray(k.nngp)), k.nngp, k.nngp, np.zeros(2), t=5.0)


def test_percentiles_and_fraction_inside_by_monte_carlo():
    mean, var = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.25, 4.0])
    q10, q50, q90 = fig2.gaussian_percentiles(mean, var)
    np.testing.assert_allclose(q10, stats.norm.ppf(0.1, mean, np.sqrt(var)))
    np.testing.assert_allclose(q50, mean)
    samples = np.random.default_rng(6).normal(mean, np.sqrt(var), size=(20000, 3))
    assert fig2.fraction_inside(samples, q10, q90) == pytest.approx(0.8, abs=0.01)


def test_kernel_pca_recovers_a_known_spectrum():
    n = 6
    q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((n, n)))
    lam = np.array([0.5, 0.2, 0.1, 0.05, 0.01, 0.001])
    gram = n * (q * lam) @ q.T
    values, comps = fig3.kernel_pca(gram, k=3)
    np.testing.assert_allclose(values, lam[:3], rtol=1e-12)
    for c, v in zip(comps, q[:, :3].T, strict=True):
        np.testing.assert_allclose(np.abs(c), np.sqrt(n) * np.abs(v), rtol=1e-10)
        assert c[np.argmax(np.abs(c))] > 0
    with pytest.raises(ValueError, match="k must"):
        fig3.kernel_pca(gram, k=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=3, max_value=12), st.integers(min_value=0, max_value=2**31 - 1))
def test_kernel_pca_components_are_orthonormal_in_the_empirical_norm(n, seed):
    a = np.random.default_rng(seed).standard_normal((n, n + 2))
    values, comps = fig3.kernel_pca(a @ a.T, k=n)
    np.testing.assert_allclose(comps @ comps.T / n, np.eye(n), atol=1e-8)
    assert np.all(np.diff(values) <= 1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=20), st.integers(min_value=0, max_value=2**31 - 1),
       st.floats(min_value=-3, max_value=3, allow_nan=False))
def test_residual_decomposition(n, seed, c):
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(n)
    direction *= math.sqrt(n) / np.linalg.norm(direction)  # unit empirical norm
    r = rng.standard_normal((3, n))
    g, h = fig3.decompose_residual(r, direction)
    np.testing.assert_allclose(g**2 + h**2, np.sum(r * r, axis=1) / n, rtol=1e-10)  # Pythagoras
    g_pure, h_pure = fig3.decompose_residual(c * direction, direction)
    np.testing.assert_allclose(g_pure, [abs(c)], atol=1e-12)
    np.testing.assert_allclose(h_pure, [0.0], atol=1e-12)


def test_straight_line_metrics_on_an_exact_exponential():
    t = np.arange(0, 1001, 50)
    pred = 0.5 * np.exp(-0.003 * t)
    assert fig3.fitted_rate(t, pred) == pytest.approx(0.003, rel=1e-10)
    assert fig3.log_deviation(pred, pred) == pytest.approx(0.0, abs=1e-12)
    assert fig3.log_deviation(2 * pred, pred) == pytest.approx(math.log(2))


def test_fig1_metrics_on_known_samples():
    limit = np.array([1.0, 2.0, 3.0])
    samples = np.array([[1.1, 2.0, 3.0], [0.9, 2.0, 3.0]])
    assert fig1.relative_spread(samples, limit) == pytest.approx(np.std([1.1, 0.9], ddof=1) / 3 / 2)
    assert fig1.mean_relative_error(samples, limit) == pytest.approx(0.0, abs=1e-15)
    assert fig1.inflation(samples, samples + 0.2, limit) == pytest.approx(0.1)
    assert fig1.mean_relative_error(samples + 1.0, limit) == pytest.approx(math.sqrt(3) / math.sqrt(14))


def test_init_keys_are_distinct_and_reproducible():
    keys = [tuple(np.asarray(jax.random.key_data(common.init_key(0, w, i))).tolist())
            for w in (50, 1000) for i in range(3)]
    assert len(set(keys)) == len(keys)
    assert np.array_equal(jax.random.key_data(common.init_key(0, 50, 1)),
                          jax.random.key_data(common.init_key(0, 50, 1)))
    assert jnp.asarray(jax.random.key_data(common.init_key(1, 50, 1))).tolist() != list(keys[1])


def _compose(artifact, *overrides):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=[f"experiment=jacot2018/{artifact}", "scale=smoke", *overrides])


@pytest.mark.parametrize("n", [2, 5, 10])
def test_jackknife_of_a_mean_is_the_standard_error_of_the_mean(n):
    x = np.random.default_rng(n).standard_normal((n, 3))
    est = common.jackknife(x, lambda s: s.mean())
    assert est.value == pytest.approx(x.mean())
    assert est.se == pytest.approx(np.std(x.mean(axis=1), ddof=1) / math.sqrt(n), rel=1e-10)
    assert (est.n, est.over) == (n, "inits")


def test_jackknife_of_a_nonlinear_statistic_follows_the_textbook_formula():
    x = np.random.default_rng(8).standard_normal((7, 4)) + 2.0
    stat = lambda s: float(np.linalg.norm(s.mean(axis=0)) / s.std(ddof=1))  # noqa: E731
    loo = np.array([stat(np.concatenate([x[:i], x[i + 1:]])) for i in range(7)])
    expected = math.sqrt(6 / 7 * np.sum((loo - loo.mean()) ** 2))  # Efron & Tibshirani (11.5)
    est = common.jackknife(x, stat, over="trials")
    assert est.value == pytest.approx(stat(x))
    assert est.se == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="two"):
        common.jackknife(x[:1], stat)
    two = common.jackknife(x[:2], lambda s: s.std(axis=0, ddof=1).mean())  # one init left: no std
    assert two.value == pytest.approx(x[:2].std(axis=0, ddof=1).mean()) and math.isnan(two.se)


def test_orderings_over_fewer_than_two_widths_are_not_measured():
    assert common.decreasing([]) is None
    assert common.decreasing([0.3]) is None
    assert common.decreasing([3.0, 2.0, 1.0]) is True
    assert common.decreasing([3.0, 1.0, 2.0]) is False
    assert common.decreasing([1.0, 1.0]) is False


def test_pooled_rate_fit_is_the_mean_of_the_trial_fits_with_the_pooled_standard_error():
    t = np.arange(0, 201, 20, dtype=float)
    rng = np.random.default_rng(9)
    g = 0.5 * np.exp(-np.array([[0.010], [0.014]]) * t) * np.exp(0.05 * rng.standard_normal((2, t.size)))
    fit = fig3.rate_fit(t, g)
    per_trial = [fig3.fitted_rate(t, gi) for gi in g]
    assert -fit.slope == pytest.approx(np.mean(per_trial), rel=1e-10)
    reference = stats.linregress(np.tile(t, 2), np.log(g).ravel())
    assert fit.slope == pytest.approx(reference.slope, rel=1e-10)
    assert fit.slope_se == pytest.approx(reference.stderr, rel=1e-10)
    assert fit.n == 2 * t.size


def _fig3_on_digits(widths):
    cfg = _compose("fig3", "data=digits", "data.n_train=24", f"params.widths={widths}", "params.steps=40",
                   "params.record_every=20", "params.n_trials=2", "params.max_depth_table=4", "progress=false")
    return fig3.run(cfg)


def test_fig3_with_one_width_measures_no_ordering():
    result = _fig3_on_digits("[16]")
    assert result.metrics["g_dev_decreases_with_width"] is None
    assert result.metrics["h_decreases_with_width"] is None
    # the rate is still measured, with the fit's standard error over 2 trials x 3 recorded times
    u = result.uncertainty["g_rate_over_lambda2_largest_width"]
    assert (u["n"], u["over"]) == (6, "fit points") and u["se"] >= 0
    assert result.uncertainty["g_log_dev_w16"]["n"] == 2


def test_fig3_orderings_compare_the_widths_measured():
    result = _fig3_on_digits("[8,32]")
    rows = result.tables["fig3_summary"]
    assert result.metrics["g_dev_decreases_with_width"] is bool(rows.g_log_dev.iloc[0] > rows.g_log_dev.iloc[1])
    assert result.metrics["h_decreases_with_width"] is bool(rows.h_max_rel.iloc[0] > rows.h_max_rel.iloc[1])


def test_every_claim_metric_and_evidence_is_produced_by_its_stage():
    """The registry names metrics the stages write (a typo would only surface in the report)."""
    from ntkrepro.claims import load_registry

    claims = load_registry(STAGES / "claims.yaml")
    runs = {"fig1": lambda: fig1.run(_compose("fig1", "params.widths=[4,8]", "params.n_inits=2", "params.steps=2",
                                              "params.n_grid=5", "data.n_train=4", "progress=false")),
            "fig2": lambda: fig2.run(_compose("fig2", "params.widths=[4,8]", "params.n_inits=2", "params.steps=2",
                                              "params.n_grid=5", "progress=false")),
            "fig3": lambda: _fig3_on_digits("[8,16]"),
            "ntk_pd": lambda: ntk_pd.run(_compose("ntk_pd", "params.n_points=[4,6]", "params.max_depth=2",
                                                  "progress=false"))}
    assert {c.artifact for c in claims} == set(runs)
    for artifact, run in runs.items():
        result = run()
        for c in (c for c in claims if c.artifact == artifact):
            assert c.metric in result.metrics, c.id
            assert set(c.evidence) <= set(result.metrics), c.id


# ---- Prop. 2: positive-definiteness of the limiting NTK on the sphere (ntk_pd) -----------------------

EPS = float(np.finfo(np.float64).eps)


def _numerical_rank(gram, *, depth, quadrature):
    ev = np.linalg.eigvalsh(gram)
    return int(np.sum(ev > ntk_pd.eigen_floor(gram, depth=depth, eps=EPS, quadrature=quadrature)))


def _sphere_polynomial_dimension(n0, degree):
    """Dimension of the polynomials of degree <= D restricted to S^(n0-1): harmonics of degree D and D - 1
    (x.x = 1 folds the rest onto them), C(n0 + D - 1, D) + C(n0 + D - 2, D - 1)."""
    return math.comb(n0 + degree - 1, degree) + (math.comb(n0 + degree - 2, degree - 1) if degree else 0)


def test_polynomial_kernels_have_the_rank_of_the_polynomials_on_the_sphere():
    """Independent reference: a polynomial activation of degree p gives Theta(L), a polynomial of degree
    p^(L-1) in x.x' with positive coefficients (beta > 0), so its Gram on n points of S^2 has the rank of
    the polynomials of that degree on S^2, (D + 1)^2, whatever n above it. The identity (p = 1) and
    depth 1 give n_0 + 1 = 4; x^2 (through the library's quadrature) gives 4, 9, 25 at L = 1, 2, 3."""
    n0, n = 3, 40
    x = ntk_pd.sphere_points(n, n0, 1)
    identity = np.asarray(jacot_fc_kernels(x, depth=3, beta=BETA, activation="identity", all_depths=True).ntk)
    square = np.asarray(jacot_fc_kernels(x, depth=3, beta=BETA, activation=lambda z: z * z, all_depths=True).ntk)
    for depth in (1, 2, 3):
        assert _numerical_rank(identity[depth - 1] / n, depth=depth, quadrature=False) == \
            _sphere_polynomial_dimension(n0, 1) == n0 + 1
        assert _numerical_rank(square[depth - 1] / n, depth=depth, quadrature=True) == \
            _sphere_polynomial_dimension(n0, 2 ** (depth - 1)) == (2 ** (depth - 1) + 1) ** 2


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_smallest_eigenvalue_matches_a_monte_carlo_empirical_ntk_of_wide_nets(activation):
    """Independent reference: the empirical NTK (parameter gradients) of width-4096 nets in the paper's
    parameterization, averaged over 4 inits, on 6 points of S^2 at depth 2: its Gram and smallest
    eigenvalue agree with the exact kernel's within the Monte Carlo error (measured over the inits)."""
    x = ntk_pd.sphere_points(6, 3, 2)
    exact = np.asarray(jacot_fc_kernels(x, depth=2, beta=BETA, activation=activation).ntk)
    net = fc_net(depth=2, width=4096, activation=activation, parameterization="ntk", **jacot_to_fc(beta=BETA))
    kernels = [np.asarray(empirical_ntk(net.apply_fn, net.init_fn(jax.random.PRNGKey(i), x.shape), x))
               for i in range(4)]
    lam = np.array([np.linalg.eigvalsh(k / 6)[0] for k in kernels])
    lam_exact = np.linalg.eigvalsh(exact / 6)[0]
    se = lam.std(ddof=1) / 2
    assert lam_exact > 0 and np.all(lam > 0)
    assert abs(lam.mean() - lam_exact) <= 4 * se and abs(lam.mean() - lam_exact) <= 0.2 * lam_exact
    mean = np.mean(kernels, axis=0)
    assert np.linalg.norm(mean - exact) / np.linalg.norm(exact) < 0.05


def test_tanh_quadrature_is_far_inside_its_documented_accuracy():
    """The floor of a quadrature kernel uses the documented 1e-10 per expectation; the library's tanh
    rule agrees with a doubled rule to ~1e-15 on the stage's points, so that term is conservative."""
    from ntkrepro.kernels.gaussian import from_callable

    x = ntk_pd.sphere_points(12, 3, 0)
    fine = from_callable(jnp.tanh, name="tanh_fine", deriv=lambda z: 1.0 - jnp.tanh(z) ** 2,
                         radial_nodes=80, angular_nodes=64)
    a = np.asarray(jacot_fc_kernels(x, depth=4, beta=BETA, activation="tanh").ntk)
    b = np.asarray(jacot_fc_kernels(x, depth=4, beta=BETA, activation=fine).ntk)
    assert np.max(np.abs(a - b)) < 1e-2 * ntk_pd.QUADRATURE_ACCURACY * np.max(np.abs(a))


def test_without_bias_relu_at_depth_two_is_singular_on_antipodal_pairs():
    """The check is sensitive to a failure of positive-definiteness: with beta = 0 the depth-2 ReLU NTK has
    only even spherical harmonics and degree 1 (arc-cosine kernels of degree 1 and 0), so on m > n_0
    antipodal pairs {x, -x} its odd part has rank n_0 and the Gram is singular; beta = 0.1 (the paper's)
    or one more layer makes it positive definite."""
    half = ntk_pd.sphere_points(8, 3, 0)
    x = np.vstack([half, -half])
    for beta, singular in ((0.0, True), (BETA, False)):
        theta = np.asarray(jacot_fc_kernels(x, depth=3, beta=beta, activation="relu", all_depths=True).ntk) / 16
        rows = ntk_pd.spectrum_rows("relu", theta * 16, [16], eps=EPS, polynomial=False)
        assert rows[1]["singular"] is singular and rows[1]["resolved_pd"] is not singular
        assert rows[2]["resolved_pd"]  # L = 3


def test_floor_and_selection_on_known_matrices():
    g = np.diag([1.0, 0.5, 1e-9])
    assert ntk_pd.eigen_floor(g, depth=2, eps=EPS, quadrature=False) == pytest.approx(3 * 3 * EPS * 1.0)
    assert ntk_pd.eigen_floor(g, depth=2, eps=EPS, quadrature=True) == pytest.approx(
        3 * 3 * EPS + 3 * 2 * ntk_pd.QUADRATURE_ACCURACY)
    rows = [{"lambda_min_over_floor": v, "id": i} for i, v in enumerate([5.0, -0.5, 1e6, 0.1])]
    assert ntk_pd.worst_resolved(rows)["id"] == 1
    assert ntk_pd.least_singular(rows)["id"] == 2
    assert ntk_pd.log_slope([2, 4, 8], [1.0, 0.25, 1 / 16]) == pytest.approx(-2.0)
    assert ntk_pd.log_slope([2, 4], [1.0, -1.0]) is None
    assert ntk_pd.metric_key("leaky_relu:0.1") == "leaky_relu_0_1"


@pytest.mark.parametrize(("name", "polynomial"), [
    ("identity", True), ("relu_like:0.5,0.5", True), ("leaky_relu:1", True),
    ("relu", False), ("leaky_relu:0.1", False), ("erf", False), ("tanh", False), ("sigmoid", False),
    ("softplus", False), ("elu", False), ("gelu", False), ("silu", False), ("normalized_relu", False)])
def test_polynomial_activations_are_told_apart(name, polynomial):
    assert ntk_pd.is_polynomial(name) is polynomial


def test_ntk_pd_stage_reads_pd_and_singular_where_the_theory_says():
    """The stage on a small config: every non-polynomial Gram at depth >= 2 resolved positive definite,
    every control (identity at any depth, every activation at depth 1) singular once n > n_0 + 1 = 4, and
    on nested point sets lambda_min(Theta) never grows with n (Cauchy interlacing)."""
    result = ntk_pd.run(_compose("ntk_pd", "params.n_points=[3,6,12]", "params.max_depth=3",
                                 "params.activations=[relu,erf]", "progress=false"))
    m, table = result.metrics, result.tables["ntk_pd_eigenvalues"]
    assert len(table) == 3 * 3 * 3  # (relu, erf, identity) x depths x sizes
    assert m["all_nonpolynomial_resolved_pd"] and m["all_controls_singular"]
    assert m["lambda_min_relu"] > m["lambda_min_relu_floor"] > 0
    assert abs(m["control_lambda_identity"]) <= m["control_lambda_identity_floor"]
    assert m["control_lambda_identity_depth"] >= 2 and m["control_lambda_identity_n"] > 4
    assert m["depth1_lambda_n"] > 4 and abs(m["depth1_lambda"]) <= m["depth1_lambda_floor"]
    assert result.uncertainty["lambda_min_relu"]["se"] == pytest.approx(m["lambda_min_relu_floor"] / 2)
    for (_, _), sub in table[~table.polynomial & (table.depth >= 2)].groupby(["activation", "depth"]):
        unnormalized = (sub.sort_values("n").lambda_min * sub.sort_values("n").n).to_numpy()
        assert np.all(np.diff(unnormalized) <= 1e-15)
    # depth 1 on n = 3 <= n_0 + 1 points is full rank: the controls need more points than the rank
    small = table[(table.depth == 1) & (table.n == 3)]
    assert small.resolved_pd.all()
