"""What the finite-width net tests share: Monte Carlo kernels of nets of growing width against the exact
infinite-width kernels."""

import math

import jax
import numpy as np

from ntkrepro.empirical import monte_carlo_kernel


def rms_relative_error(samples, exact):
    """sqrt(mean over draws of ||K_hat - K||_F^2) / ||K||_F: the fluctuation of one draw around the limit."""
    samples, exact = np.asarray(samples), np.asarray(exact)
    return math.sqrt(np.mean(np.sum((samples - exact) ** 2, axis=(1, 2))) / np.sum(exact**2))


def kernel_errors_by_width(make_net, x, exact, widths, *, n_samples, nngp=True, **ntk_options):
    """:func:`rms_relative_error` of ``n_samples`` draws (keyed by the width) of the empirical NTK of
    ``make_net(width)`` (its trainable layers) and, with ``nngp``, of its readout-features NNGP:
    ``{"ntk": [...], "nngp": [...]}`` over ``widths``."""
    errors = {"ntk": [], "nngp": []} if nngp else {"ntk": []}
    for width in widths:
        net = make_net(width)
        key = jax.random.PRNGKey(width)
        ntk = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=n_samples, keep_samples=True,
                                 trainable=net.trainable_mask, **ntk_options)
        errors["ntk"].append(rms_relative_error(ntk.samples, exact.ntk))
        if nngp:
            features = monte_carlo_kernel(net.init_fn, net.apply_fn, key, x, n_samples=n_samples,
                                          keep_samples=True, kind="nngp", readout=net.readout_mask)
            errors["nngp"].append(rms_relative_error(features.samples, exact.nngp))
    return errors


def loglog_slope(widths, errors) -> float:
    """Least-squares slope of log error against log width."""
    return float(np.polyfit(np.log(widths), np.log(errors), 1)[0])
