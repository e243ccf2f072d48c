"""The benchmark cases of ``run.py table``, shared by both sides: numpy only, so that the project (run.py)
and the peer (nt_peer.py, in its own venv with numpy < 2) build the very same inputs.

A case is a JSON-able dict: ``kernel`` ("fc", "cntk", "deq"), ``path`` ("sym": K(X, X) with x2 None;
"cross": K(X, Y) with a different Y of the same size), ``n`` (rows of X and of Y), ``dtype`` and the
kernel's shape parameters (fc: d, depth; cntk: readout, depth, side; deq: d). Inputs come from numpy's
legacy ``RandomState(seed)`` (bit-stable across numpy versions): X is the first draw, Y the second.
"""

import numpy as np


def case_name(case: dict) -> str:
    """A short label, e.g. ``fc-float64-cross`` or ``cntk-gap-float32-sym``."""
    kind = case["kernel"] + (f"-{case['readout']}" if case["kernel"] == "cntk" else "")
    return f"{kind}-{case['dtype']}-{case['path']}"


def case_inputs(case: dict, seed: int = 0):
    """(X, Y) for the case, Y None on the symmetric path; rows on the unit sphere for DEQ (its preprocessing)."""
    rng = np.random.RandomState(seed)
    shape = (case["side"], case["side"], 3) if case["kernel"] == "cntk" else (case["d"],)
    draws = [rng.randn(case["n"], *shape).astype(case["dtype"]) for _ in range(1 + (case["path"] == "cross"))]
    if case["kernel"] == "deq":
        draws = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in draws]
    return draws[0], (draws[1] if len(draws) > 1 else None)


def pairs(case: dict) -> int:
    """Kernel entries the case returns (n^2 on both paths: the symmetric one returns the whole Gram)."""
    return case["n"] ** 2
