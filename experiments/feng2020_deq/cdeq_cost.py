"""Feng & Kolter (DEQ-NTK), Sec. 5 after Table 1: "the training hour of CDEQ-NTK halves that of its
finite-depth CNTK counterpart, as we only need to calculate Sigma^(h), whereas the actual CNTK needs to
calculate both Sigma^(h) and Theta^(h)".

Measured: the CPU time of this project's CDEQ-NTK Gram (``cdeq_ntk``: Sigma iterated to its fixed point,
then Theta* = Kdot* (.) L(Theta*) + K* by fixed-point iteration, eq. 21) against the CNTK Gram (``cntk``,
vanilla readout as the CDEQ's, ``cntk_depth - 1`` convolution layers) of the same ``n_images`` images, the
Table 2 CDEQ row's preprocessing and variances, both with one block of n_images^2 pairs (the block of a
larger Gram: its cost per pair). Each repeat times both once, interleaved, after one untimed compile call
each, and gives one ratio; its uncertainty is the standard error over the repeats. Kernel regression is
left out: it is the same solve for both kernels (see README).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np
import pandas as pd
from deq_eval import check_initialization, load_with

from ntkrepro.checks import param, refuse_oversized
from ntkrepro.kernels.cdeq import cdeq_ntk
from ntkrepro.kernels.conv import cntk, pair_block_bytes
from ntkrepro.stage import StageResult, main
from ntkrepro.stats import mean_se

FLOAT32_BYTES = 4


def cpu_seconds(fn, *args, **kwargs) -> tuple[float, object]:
    """(process CPU time, result) of one call (results waited for)."""
    start = time.process_time()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return time.process_time() - start, out


def timed_kernels(x, p) -> dict:
    """The two timed Grams of images x, each one block of len(x)^2 pairs: the CDEQ-NTK with the params'
    variances and fixed-point tolerance, the vanilla CNTK of depth ``p.cntk_depth``."""
    pairs = len(x) ** 2
    return {
        "cdeq": lambda: cdeq_ntk(x, sigma_w2=float(p.sigma_w2), sigma_u2=float(p.sigma_u2), tol=float(p.tol),
                                 max_iter=int(p.max_iter), dtype=np.float32, batch_size=pairs),
        "cntk": lambda: cntk(x, depth=int(p.cntk_depth), readout="vanilla", dtype=np.float32, batch_size=pairs),
    }


def ratio_summary(timings: pd.DataFrame) -> tuple[dict, dict]:
    """Per repeat CDEQ / CNTK time; the mean ratio with its standard error over the repeats, and each
    kernel's mean time."""
    t = timings.pivot(index="repeat", columns="kernel", values="cpu_seconds")
    est = mean_se(t["cdeq"] / t["cntk"], over="repeats")
    metrics = {"cdeq_over_cntk_time": est.value, "cdeq_gram_cpu_seconds": float(t["cdeq"].mean()),
               "cntk_gram_cpu_seconds": float(t["cntk"].mean())}
    return metrics, {"cdeq_over_cntk_time": est.record()}


@dataclass
class Params:
    """``params`` of conf/experiment/feng2020_deq/cdeq_cost.yaml."""

    sigma_w2: float = param(ge=0, lt=1, doc="< 1: the fixed point exists (Thm. 3)")
    sigma_u2: float = param(ge=0)
    preprocess: Literal["pixel_unit_norm"] = param(doc="unit-norm pixel vectors: Thm. 3's inputs")
    tol: float = param(gt=0)
    max_iter: int = param(ge=1)
    cntk_depth: int = param(ge=2, doc="the counterpart CNTK: convolution layers + 1")
    n_images: int = param(ge=1, doc="images of the timed Gram (one block of n_images^2 pairs)")
    repeats: int = param(ge=2, doc="a ratio's standard error needs two repeats")

    def check(self):
        check_initialization("params", sigma_w2=self.sigma_w2, sigma_u2=self.sigma_u2)
        refuse_oversized([("params.n_images", self.n_images, pair_block_bytes(1, 32 * 32, itemsize=FLOAT32_BYTES), 2,
                           "one block's live pair arrays (n_images^2 pairs of 32 x 32 maps, float32)")])


def run(cfg) -> StageResult:
    p = cfg.params
    images = load_with(cfg, "train", preprocess=p.preprocess, n=p.n_images)
    x = np.asarray(images.x, dtype=np.float32)
    pairs = len(x) ** 2
    kernels = timed_kernels(x, p)
    outputs = {name: fn() for name, fn in kernels.items()}  # compile
    loadavg_start = os.getloadavg()[0]
    rows = []
    for r in range(p.repeats):
        for name, fn in kernels.items():
            seconds, outputs[name] = cpu_seconds(fn)
            rows.append({"repeat": r, "kernel": name, "cpu_seconds": seconds})
    timings = pd.DataFrame(rows)
    metrics, uncertainty = ratio_summary(timings)
    cdeq = outputs["cdeq"]
    metrics.update({"cdeq_sigma_iterations_max": int(np.max(cdeq.sigma_iterations)),
                    "cdeq_sigma_iterations_median": float(np.median(cdeq.sigma_iterations)),
                    "cdeq_theta_iterations_max": int(np.max(cdeq.theta_iterations)),
                    "cdeq_theta_iterations_median": float(np.median(cdeq.theta_iterations)),
                    "cntk_convolution_layers": int(p.cntk_depth) - 1})
    return StageResult(
        metrics=metrics,
        data=images.provenance,
        sizes={"n_images": len(x), "image_shape": list(x.shape[1:]), "pairs": pairs, "threads": cfg.threads,
               "backend": jax.default_backend(), "cores": os.cpu_count(), "loadavg_1m_start": loadavg_start,
               "loadavg_1m_end": os.getloadavg()[0]},
        seeds=[cfg.seed],
        tables={"timings": timings},
        uncertainty=uncertainty,
        notes=["process CPU time per Gram after one compile call; repeats interleaved (CDEQ, CNTK); ratio "
               "uncertainty: standard error over repeats; the machine may be shared (load averages in sizes)"],
    )


if __name__ == "__main__":
    main(run, params=Params)
