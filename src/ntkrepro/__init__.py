"""ntkrepro: exact NTK/NNGP kernels, finite-width nets and a reproduction harness for the NTK papers.

Importing the package turns on JAX's float64 mode: kernels compute in float64 by default and take
``dtype=jnp.float32`` where single precision is wanted.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"


def set_cpu_threads(threads: int) -> None:
    """Cap XLA's CPU threads for this process (0: all cores); must run before its first JAX computation
    (a stage's ``threads``, a Gram tile job's ``--threads``)."""
    if threads > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        extra = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
        os.environ["XLA_FLAGS"] = f"{flags} {extra} intra_op_parallelism_threads={threads}".strip()
