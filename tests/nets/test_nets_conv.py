"""CNN in Arora et al. 2019's conventions: the forward pass against an explicit loop implementation of
eq. 14 and sec. 4.1/4.2, and the empirical NTK against the exact CNTK as the width grows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from finite_width import kernel_errors_by_width, loglog_slope

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.kernels.conv import cntk
from ntkrepro.nets import cnn


def loop_conv(x, w):
    """[w * x]_ij = sum_{a,b} w[a + (q-1)/2, b + (q-1)/2] x[i + a, j + b], zero outside (eq. 14), summed over
    input channels. x: (P, Q, C_in), w: (q, q, C_in, C_out)."""
    p_side, q_side, _ = x.shape
    q = w.shape[0]
    r = (q - 1) // 2
    out = np.zeros((p_side, q_side, w.shape[3]))
    for i in range(p_side):
        for j in range(q_side):
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    if 0 <= i + a < p_side and 0 <= j + b < q_side:
                        out[i, j] += x[i + a, j + b] @ w[a + r, b + r]
    return out


def loop_cnn(params, x, *, readout, c_sigma, q, activation=lambda u: np.maximum(u, 0.0)):
    outs = []
    for image in np.asarray(x):
        h = loop_conv(image, np.asarray(params[0]["w"]))
        for layer in params[1:]:
            channels = h.shape[-1]
            g = math.sqrt(c_sigma / (channels * q * q)) * activation(h)
            if layer is params[-1]:
                w = np.asarray(layer["w"])
                outs.append(np.einsum("pqc,pqck->k", g, w) if readout == "vanilla" else g.mean((0, 1)) @ w)
            else:
                h = loop_conv(g, np.asarray(layer["w"]))
    return np.stack(outs)


@pytest.mark.parametrize(("readout", "q", "shape"), [("vanilla", 3, (2, 4, 5, 2)), ("gap", 5, (2, 5, 4, 3))])
def test_forward_matches_the_papers_definition(readout, q, shape):
    net = cnn(depth=4, channels=3, out_dim=2, readout=readout, filter_size=q)
    params = net.init_fn(jax.random.PRNGKey(0), shape)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    expected = loop_cnn(params, x, readout=readout, c_sigma=2.0, q=q)
    np.testing.assert_allclose(net.apply_fn(params, x), expected, rtol=1e-10, atol=1e-12)


def test_output_scale_and_c_sigma():
    shape = (2, 4, 4, 1)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    base = cnn(depth=3, channels=2)
    params = base.init_fn(jax.random.PRNGKey(0), shape)
    scaled = cnn(depth=3, channels=2, output_scale=0.25, c_sigma=8.0)
    # c_sigma enters as sqrt(c_sigma) once per post-activation (2 of them here): (8 / 2) ** (2 / 2) = 4
    np.testing.assert_allclose(scaled.apply_fn(params, x), base.apply_fn(params, x), rtol=1e-12)
    with pytest.raises(ValueError, match="c_sigma must be finite and > 0"):
        cnn(depth=3, channels=2, c_sigma=0.0)


@pytest.mark.parametrize(("readout", "fix_first_last", "widths"),
                         [("vanilla", False, (8, 32, 128)), ("gap", True, (32, 128))])
def test_empirical_ntk_approaches_the_cntk(readout, fix_first_last, widths):
    """Arora et al. Thm. 3.1 for the CNN: single-draw RMS error of the empirical NTK (6 draws per width)
    falls with the channel count, like width^-1/2 for the vanilla net; the NNGP (readout features) too.
    The GAP net with frozen first/last layer is far from the limit at few channels (its NTK involves one
    layer only), so only the decrease and the error at 128 channels are checked there."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2))
    exact = cntk(x, depth=3, readout=readout, fix_first_last=fix_first_last, dtype=jnp.float64)
    errors = kernel_errors_by_width(
        lambda width: cnn(depth=3, channels=width, readout=readout, fix_first_last=fix_first_last), x, exact,
        widths, n_samples=6, implementation="jacobian")
    for kind_errors in errors.values():
        assert all(a > b for a, b in zip(kind_errors, kind_errors[1:], strict=False)), kind_errors
        assert kind_errors[-1] < 0.2, kind_errors
    if readout == "vanilla":
        assert -0.8 < loglog_slope(widths, errors["ntk"]) < -0.3, errors["ntk"]
