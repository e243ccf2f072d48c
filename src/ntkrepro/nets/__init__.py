"""Finite-width networks (pure JAX, stax-like ``init_fn``/``apply_fn`` pairs) whose conventions match
the exact kernels in ``ntkrepro.kernels`` entry by entry (``depth`` = weight layers incl. the readout).
"""

from ntkrepro.nets.conv import cnn
from ntkrepro.nets.core import Network, combine, partition
from ntkrepro.nets.deq import deq_net, normalized_relu
from ntkrepro.nets.fc import fc
from ntkrepro.nets.resnet import resnet

__all__ = ["Network", "cnn", "combine", "deq_net", "fc", "normalized_relu", "partition", "resnet"]
