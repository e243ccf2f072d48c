"""Golikov et al. 2022, sec. 9 (Fig. 5): which stage of NTK regression costs most at m = 10^4 training
points, and whether the NNGP costs the same as the NTK, for this project's kernels on this machine.

Survey: "already for relatively small datasets (m = 10^4), the most time-demanding stage is construction of
the Gram matrix [...] but not integration" (numerical, T = 10^4 steps) and "the time to compute the NNGP
kernel is almost the same as the one for NTK, since both are computed analytically".

Gram side: one block of ``block`` x ``block`` image pairs of the CNTK (``ntkrepro.kernels.conv.cntk_block``,
the block computation that ``cntk(..., batch_size=block**2)`` evaluates the m x m Gram with), times the
number of blocks of the symmetric Gram (upper blocks, diagonal ones included), plus the per-image diagonals
(``cntk_diagonals``) times m.
FC: the whole Gram of ``fc_m`` points times (m / fc_m)^2. Integration side: ``timed_steps`` Euler steps of
kernel gradient descent on the BCE loss (one m x m matrix-vector product each) on a real
``integration_m`` x ``integration_m`` matrix, times steps / timed_steps and (m / integration_m)^2.
NNGP vs NTK: the same block for the NNGP alone (``get="nngp"``: no Theta recursion; the FC kernel jitted
for its NNGP output, XLA then drops the NTK recursion) against both outputs. Each repeat times every
computation once, interleaved, and gives one ratio; a ratio's uncertainty is its standard error over the
repeats (the run-to-run noise of the machine). Times are the process CPU time after one untimed compile
call.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax

from ntkrepro.blocks import LANES, kernel_jit, plan_pair_blocks
from ntkrepro.checks import bad, param, refuse_oversized
from ntkrepro.kernels import conv
from ntkrepro.kernels.fc import fc_kernels
from ntkrepro.plotting import figure
from ntkrepro.progress import progress
from ntkrepro.stage import StageResult, main
from ntkrepro.stats import mean_se

READOUTS = ("gap", "vanilla")
FILTER = 3
FLOAT32_BYTES = 4


# ---------------------------------------------------------------- the timed computations


def cntk_block_fn(*, side: int, depth: int, readout: str, block: int, nngp_only: bool) -> Callable:
    """(x1, x2, d1, d2) -> the CNTK of one block of ``block`` x ``block`` image pairs of side ``side``,
    exactly as ``cntk(x, depth=depth, readout=readout, batch_size=block**2)`` computes a block of the Gram
    of many images (its block plan); ``nngp_only``: the NNGP alone, else (nngp, ntk)."""
    plan = plan_pair_blocks(10 * block, 10 * block, pairs=block**2, entries_per_pair=side * side, symmetric=True)
    if plan.b1 != block:
        raise ValueError(f"params.block = {block}: cntk's blocks of {block}^2 pairs are {plan.b1} images wide "
                         f"(use a multiple of {LANES})")
    compute = functools.partial(conv.cntk_block, readout=readout, filter_size=FILTER, activation="relu",
                                get="nngp" if nngp_only else ("nngp", "ntk"),
                                rows_per_step=conv.block_rows_per_step(plan, readout=readout, p_side=side, q_side=side))
    if nngp_only:
        return kernel_jit(lambda x1, x2, d1, d2: compute(x1, x2, d1, d2)[0])
    return kernel_jit(compute)


def fc_fn(*, depth: int, nngp_only: bool) -> Callable:
    """x -> the FC NNGP Gram alone, or both Grams (float32)."""
    if nngp_only:
        return kernel_jit(lambda x: fc_kernels(x, depth=depth, dtype=jnp.float32).nngp)
    return kernel_jit(lambda x: fc_kernels(x, depth=depth, dtype=jnp.float32))


@functools.partial(jax.jit, static_argnames="steps")
def integrate_bce(theta, f0, y, lr, *, steps: int):
    """``steps`` explicit Euler steps of kernel gradient descent on the binary cross-entropy,
    f <- f - lr Theta (sigmoid(f) - y): the survey's numerical integration of the training dynamics."""
    return lax.fori_loop(0, steps, lambda _, f: f - lr * (theta @ (jax.nn.sigmoid(f) - y)), f0)


def cpu_seconds(fn: Callable, *args) -> float:
    """Process CPU time of one call ``fn(*args)`` (results waited for)."""
    start = time.process_time()
    jax.block_until_ready(fn(*args))
    return time.process_time() - start


# ---------------------------------------------------------------- the counting


def symmetric_blocks(m: int, block: int) -> int:
    """Blocks a symmetric m x m Gram evaluates in ``block`` x ``block`` blocks: the upper ones, diagonal
    included (``ntkrepro.blocks.blockwise_on_host``): nb (nb + 1) / 2 with nb = ceil(m / block)."""
    nb = -(-m // block)
    return nb * (nb + 1) // 2


def gram_seconds(block_s: float, diag_s: float, *, m: int, block: int) -> float:
    """CNTK Gram time at m images from one block's time and the diagonals' time of ``block`` images."""
    return block_s * symmetric_blocks(m, block) + diag_s * m / block


def integration_seconds(timed_s: float, *, timed_steps: int, steps: int, measured_m: int, m: int) -> float:
    """Integration time of ``steps`` steps at m points from ``timed_steps`` steps at ``measured_m``: linear
    in the steps (identical steps), quadratic in m (one m x m matrix-vector product per step)."""
    return timed_s * (steps / timed_steps) * (m / measured_m) ** 2


def machine_info() -> dict:
    """What the timings were measured on (with the 1-min load average: the machine may be shared)."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "backend": jax.default_backend(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


# ---------------------------------------------------------------- params


@dataclass
class Params:
    """``params`` of conf/experiment/golikov2022/training_costs.yaml."""

    m: int = param(ge=1, doc="training points the survey's comparison is at (10^4)")
    steps: int = param(ge=1, doc="Euler steps of the numerical integration (the survey's T = 10^4)")
    integration_m: int = param(ge=1, doc="side of the Gram the integration steps are timed on")
    timed_steps: int = param(ge=1)
    depth: int = param(ge=2, doc="CNTK: convolution layers + 1; FC: weight layers")
    side: int = param(ge=1, doc="image side of the CNTK (CIFAR: 32)")
    channels: int = param(ge=1)
    block: int = param(ge=1, doc="images per side of a CNTK Gram block (batch_size = block^2 pairs)")
    fc_m: int = param(ge=2)
    fc_input_dim: int = param(ge=1)
    repeats: int = param(ge=2, doc="a ratio's standard error needs two repeats")

    def check(self):
        if self.block % LANES:
            raise bad("params.block", f"must be a multiple of {LANES} (cntk's column blocks are whole "
                      "vector widths: another block is not how the Gram is evaluated)", self.block)
        refuse_oversized([
            ("params.integration_m", self.integration_m, FLOAT32_BYTES * 4, 2,
             "the integrated Gram (float32; up to 4 copies while it is built)"),
            ("params.fc_m", self.fc_m, FLOAT32_BYTES * 3, 2, "the FC Grams (nngp, ntk and a temporary, float32)"),
            ("params.side", self.side, conv.pair_block_bytes(self.block**2, 1, itemsize=FLOAT32_BYTES), 2,
             "a CNTK block's live pair arrays (float32)"),
        ])


# ---------------------------------------------------------------- the stage


def run(cfg) -> StageResult:
    p = cfg.params
    rng = np.random.default_rng(cfg.seed)
    machine_start = machine_info()
    images = rng.standard_normal((p.block, p.side, p.side, p.channels)).astype(np.float32)
    diag = functools.partial(conv.cntk_diagonals, depth=p.depth, filter_size=FILTER, dtype=jnp.float32)
    d = diag(images)
    block_args = (jnp.asarray(images), jnp.asarray(images), d, d)
    x_fc = jnp.asarray(rng.standard_normal((p.fc_m, p.fc_input_dim)), jnp.float32)
    theta = jnp.asarray(rng.standard_normal((p.integration_m, p.integration_m), dtype=np.float32))
    theta = (theta + theta.T) / 2  # a symmetric stand-in Gram: the cost does not depend on the values
    f0 = jnp.zeros(p.integration_m, jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, p.integration_m), jnp.float32)
    lr = jnp.asarray(1.0 / p.integration_m, jnp.float32)

    timed = {"diagonals": (diag, (images,)),
             "fc_nngp": (fc_fn(depth=p.depth, nngp_only=True), (x_fc,)),
             "fc_both": (fc_fn(depth=p.depth, nngp_only=False), (x_fc,)),
             "integration": (functools.partial(integrate_bce, steps=p.timed_steps), (theta, f0, y, lr))}
    for readout in READOUTS:
        for nngp_only in (True, False):
            fn = cntk_block_fn(side=p.side, depth=p.depth, readout=readout, block=p.block, nngp_only=nngp_only)
            timed[f"cntk_{readout}_{'nngp' if nngp_only else 'both'}"] = (fn, block_args)
    for fn, args in timed.values():  # compile
        jax.block_until_ready(fn(*args))
    rows = []
    for r in progress(range(p.repeats), desc="repeats", enabled=cfg.progress):
        rows += [{"repeat": r, "computation": name, "cpu_seconds": cpu_seconds(fn, *args)}
                 for name, (fn, args) in timed.items()]
    timings = pd.DataFrame(rows)
    metrics, uncertainty, per_repeat = summarize(timings, p)
    machine_end = machine_info()
    return StageResult(
        metrics=metrics,
        data={"name": "gaussian (synthetic timing inputs)", "source": "synthetic", "sha256": None,
              "substituted_for": None},
        sizes={"machine": machine_start, "loadavg_1m_end": machine_end["loadavg_1m"], "threads": cfg.threads,
               "repeats": p.repeats, "cntk_block_pairs": p.block**2,
               "cntk_blocks_at_m": symmetric_blocks(p.m, p.block)},
        seeds=[cfg.seed],
        tables={"timings": timings, "per_repeat": per_repeat},
        figures={"training_costs": _figure(per_repeat, p)},
        uncertainty=uncertainty,
        notes=["process CPU time per call after one compile call; each repeat times every computation once, "
               "interleaved; ratio uncertainty: standard error over repeats",
               f"machine at start: {machine_start}; 1-min load average at end: {machine_end['loadavg_1m']}"],
    )


def summarize(timings: pd.DataFrame, p) -> tuple[dict, dict, pd.DataFrame]:
    """Per repeat: the extrapolated times at m and the ratios; metrics = their means, uncertainty = the
    ratios' standard errors over repeats."""
    t = timings.pivot(index="repeat", columns="computation", values="cpu_seconds")
    integ = integration_seconds(t["integration"], timed_steps=p.timed_steps, steps=p.steps,
                                measured_m=p.integration_m, m=p.m)
    per = pd.DataFrame({"integration_seconds_at_m": integ})
    for readout in READOUTS:
        per[f"cntk_{readout}_gram_seconds_at_m"] = gram_seconds(t[f"cntk_{readout}_both"], t["diagonals"],
                                                                 m=p.m, block=p.block)
        per[f"cntk_{readout}_gram_over_integration"] = per[f"cntk_{readout}_gram_seconds_at_m"] / integ
        per[f"cntk_{readout}_nngp_over_ntk_time"] = t[f"cntk_{readout}_nngp"] / t[f"cntk_{readout}_both"]
    per["fc_gram_seconds_at_m"] = t["fc_both"] * (p.m / p.fc_m) ** 2
    per["fc_gram_over_integration"] = per["fc_gram_seconds_at_m"] / integ
    per["fc_nngp_over_ntk_time"] = t["fc_nngp"] / t["fc_both"]
    metrics, uncertainty = {}, {}
    for column in per.columns:
        est = mean_se(per[column], over="repeats")
        metrics[column] = est.value
        if "_over_" in column:
            uncertainty[column] = est.record()
    metrics["integration_step_seconds"] = float(t["integration"].mean() / p.timed_steps)
    return metrics, uncertainty, per.reset_index()


def _figure(per: pd.DataFrame, p):
    fig, ax = figure(width=4.5)
    labels = ["integration"] + [f"Gram {k}" for k in ("cntk_gap", "cntk_vanilla", "fc")]
    columns = ["integration_seconds_at_m"] + [f"{k}_gram_seconds_at_m" for k in ("cntk_gap", "cntk_vanilla", "fc")]
    means = [per[c].mean() for c in columns]
    ax.bar(range(len(labels)), means, log=True)
    for i, c in enumerate(columns):
        ax.plot([i] * len(per), per[c], "k.", markersize=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=6)
    ax.set_ylabel(f"CPU seconds at m = {p.m} (extrapolated)")
    ax.set_title(f"Gram construction vs {p.steps} integration steps", fontsize=7)
    return fig


if __name__ == "__main__":
    main(run, params=Params)
