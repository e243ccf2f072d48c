"""Exact infinite-width kernels (pure JAX): Gaussian expectations and activations, fully connected,
residual and DEQ networks, mean-field tools; the convolutional kernels live in ``kernels.conv`` (CNTK)
and ``kernels.cdeq`` (CDEQ-NTK), imported on first use."""

from ntkrepro.kernels import meanfield
from ntkrepro.kernels.deq import DEQFixedPoint, deq_kernels, deq_ntk
from ntkrepro.kernels.fc import (
    Kernels,
    arora_fc_kernels,
    arora_to_fc,
    fc_kernels,
    jacot_fc_kernels,
    jacot_to_fc,
)
from ntkrepro.kernels.gaussian import Activation, from_callable, get_activation, relu_like
from ntkrepro.kernels.resnet import resnet_kernels

_CONV = {"cntk": "conv", "cdeq_ntk": "cdeq"}

__all__ = [
    "Activation", "DEQFixedPoint", "Kernels", "arora_fc_kernels", "arora_to_fc", "deq_kernels", "deq_ntk",
    "fc_kernels", "from_callable", "get_activation", "jacot_fc_kernels", "jacot_to_fc", "meanfield",
    "relu_like", "resnet_kernels", *_CONV,
]


def __getattr__(name):
    """``kernels.cntk`` / ``kernels.cdeq_ntk`` resolve lazily from ``kernels.conv`` / ``kernels.cdeq``."""
    if name in _CONV:
        import importlib

        return getattr(importlib.import_module(f"ntkrepro.kernels.{_CONV[name]}"), name)
    raise AttributeError(f"module 'ntkrepro.kernels' has no attribute {name!r}")
