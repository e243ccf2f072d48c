"""The deep-kernel recursions the Hayou et al. 2020 stages use; their home is the library
(``ntkrepro.kernels.deep``: the EOC near-one maps to depth 1e6+; ``ntkrepro.kernels.meanfield``: the
general recursion of one pair). This module only names them for the stages' helpers."""

from __future__ import annotations

import numpy as np

from ntkrepro.kernels import meanfield
from ntkrepro.kernels.deep import (  # noqa: F401  (re-exported for the stages)
    DeepRun,
    EOCPoint,
    SmoothMap,
    _fpp,
    eoc_point,
    ffnn_eoc,
    relu_like_rho,
    relu_resnet,
    smooth_map,
)
from ntkrepro.kernels.gaussian import get_activation  # noqa: F401


def general_recursion(
    activation: str, *, sigma_w2: float, sigma_b2: float, sigma1: tuple[float, float, float], depth: int
) -> dict[str, np.ndarray]:
    """``meanfield.ntk_recursion`` (Lemma 2, one pair, float64) as arrays over l = 1..depth keyed
    ``s11, s12, s22`` (Sigma^l) and ``k11, k12, k22`` (K^l)."""
    series = meanfield.ntk_recursion(sigma1, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, depth=depth)
    return dict(vars(series))
