"""ntkrepro: exact NTK/NNGP kernels, finite-width nets and a reproduction harness for the NTK papers.

Importing the package turns on JAX's float64 mode: kernels compute in float64 by default and take
``dtype=jnp.float32`` where single precision is wanted.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
