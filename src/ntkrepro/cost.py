"""What a stage costs at a given scale, from the rates the benchmarks measured (``benchmarks/results/*.json``):
the cost model, knowing no paper. The table of every stage (and the memory of its cluster job) is
``scripts/cost_table.py``, which loads the papers' workloads:

    python scripts/cost_table.py --scale paper                      # every stage: CPU-h, GPU-h, peak memory
    python scripts/cost_table.py --scale paper --stage arora2019/table1 --detail

A stage's cost is the sum of its *workloads*: a Gram matrix of a kernel (:func:`fc_gram`, :func:`cntk_gram`,
:func:`deq_gram`, :func:`cdeq_gram`), the all-depths kernel iteration (:func:`depth_iteration`), empirical NTKs of
finite nets (:func:`empirical_ntk`), gradient steps (:func:`train`), a dense solve (:func:`solve`), matrix-vector
products (:func:`matvec`), a whole stage timed at smaller settings (:func:`stage_run`), or work no benchmark rates
(:func:`unrated`). Each paper says which workloads its artifacts imply in ``experiments/<paper>/cost.py``:
``WORKLOADS = {artifact: fn}`` with ``fn(cfg) -> list[Workload]`` (``cfg``: the stage's resolved config as a dict,
:func:`stage_config`).

A workload is one or more *terms*, each an amount of work over a measured rate (seconds = amount / rate, the
amount relative to the benchmark's own configuration ``ref``):

- ``fc_gram``: distinct entries x (input share x d / d_ref + (1 - input share) x depth / depth_ref), at the FC
  Gram's rate of the same dtype and path; the input share is the benchmark's measured input GEMM time over its
  Gram time (``run.py table``), :data:`FC_INPUT_SHARE` for the older ``fc`` study that did not time it.
- ``cntk``: distinct pairs x conv layers / the benchmark's (depth - 1) x (P Q / P_ref Q_ref) for vanilla,
  x (P Q / P_ref Q_ref)^2 for GAP (all P Q offsets), at the CNTK rate of the same readout and path; a Gram
  in fixed small blocks (``batch_size``) adds its block calls (:func:`block_calls`) at the measured cost of
  one more call (``benchmarks/rates.py``: the benchmark Grams ran the default blocks; CNTK-V only: CNTK-GAP's
  small blocks measured no slower). A CNTK-GAP Gram of at least :data:`LARGE_GRAM_PAIRS` distinct pairs is
  rated by one block of the plan a large Gram runs (``benchmarks/rates.py``'s ``cntk_block``: 64 x 64 for the
  symmetric path, 250 x 16 for the cross one, its deepest row) where a file has it: the table's 4-image Grams
  spend most of their time on per-plane work that a large Gram's blocks spread over 64-250 rows.
- ``deq_gram``: distinct pairs, at the DEQ Gram's rate of the path (float64; the fixed point per pair
  dominates, d is ignored: an input dimension below the benchmark's 3,072 makes the estimate an upper bound).
- ``cdeq_gram``: distinct pairs x (P Q / P_ref Q_ref), at the CDEQ-NTK Gram's rate of the path
  (``benchmarks/rates.py``): its fixed points' iterations per pair are those of the benchmark's inputs
  (~20 Sigma and ~13 Theta iterations; the stage's max_iter only caps them). (Modelled before as a CNTK-V of
  max_iter + 1 layers, it came out 2.3x below the rehearsal's measured Gram of the code of that time.)
- ``depth_iteration``: entries x depth at the all-depths iteration's rate (``benchmarks/rates.py``: every
  depth kept, ~3-4x the FC Gram's cost per entry-layer, which keeps only the last).
- ``empirical_ntk``: pairs x forward multiply-adds per example / the benchmark net's, rated by the empirical
  study's row of the same architecture (fc: the structured path; cnn: "auto").
- ``train``: per gradient step, the forward and backward multiply-adds (3 x forward, 2 FLOPs each) of the
  examples at the machine's measured GEMM rate (fc; cnn: the empirical study's time per example, its
  autodiff path), plus :data:`PARAM_PASSES` passes over the parameters at the measured copy bandwidth
  (read W forward and backward, write dW, the update reads W and dW and writes W): a small batch of a wide
  net moves its weights more than it multiplies them (Jacot Fig. 1: width 10,000, 50 points).
- ``matvec``: the bytes of the matrix read per product, at the measured copy bandwidth (memory-bound).
- ``stage_run``: a whole stage whose time no kernel benchmark rates: compilation and the per-step overhead of
  sequential scalar recursions (Hayou et al.'s curves to depth 10^6-10^7: 10^5 -> 10^6 layers cost 0.21 -> 0.41
  CPU s), small Monte Carlo and quadratures (the survey's printed formulas): CPU seconds = fixed + sum_k slope_k x
  units_k, the units declared by the paper's cost model (recursion steps, Monte Carlo multiply-adds), the line fitted
  (non-negative least squares, :func:`fit_stage_runs`) to timed runs of the stage itself at smaller settings
  (``benchmarks/stages.py``, each run's units computed from its own config by the same cost model).
- ``solve``: a Cholesky of K (n^3/3) and the triangular solves (n^2 targets + n_test n targets) in
  multiply-adds; a Gram above ``ntkrepro.gram.LARGE_GRAM_BYTES`` (float64) is factored in place, at the rate of
  ``run.py large``'s factor and solve of the same dtype (else the measured GEMM rate of the dtype), a smaller
  one on ``kernel_regression``'s JAX path at ``benchmarks/rates.py``'s rate (~10x below GEMM at n = 1,000).

The GEMM and copy rates are the table study's measured peaks (``run.py table``: GEMM n = 2,048 of numpy and
JAX, the best; numpy's copy of 512 MiB), in multiply-adds and bytes per second.

Every count is of distinct pairs (:func:`distinct_pairs`: n (n + 1) / 2 for a symmetric Gram, n1 n2 for a
cross one), and so is every rate: a benchmark's distinct pairs per second on the symmetric path (K(X, X),
x2 None), its n^2 per second on the cross path (K(X, Y)), as benchmarks/run.py extrapolates. A cross Gram is
rated by the cross path, a symmetric one by the symmetric path (the symmetric path at the benchmark's size
wastes part of its diagonal blocks, so the rate is conservative by up to that share at paper size); a folder
without a cross record rates a cross Gram by the symmetric path.

The calibration row of each kind is the newest record that has it (file names start with the UTC time) among
those measured on a quiet machine (:func:`loaded`: a record at a 1-minute load average above 1.5 x its cores,
e.g. run.py table at load 9-16 on 2 cores with GEMM at a fifth of its idle rate, calibrates only a kind no
quiet record has), the largest size among a file's rows, each row at its fastest round (``run.py table``
records every interleaved round: the same Gram took 0.21 or 0.48-0.54 s from round to round on the idle
benchmark machine, and its median can be the slow mode's; the other studies record the best of their
repeats, and so do the measured checks of ``tests/test_cost.py``); CPU and GPU records apart (a file's
``machine.backend``: a GPU run of ``run.py table`` rates the GPU column). Hours are wall hours on the
benchmark's machine (its cores are named; core-hours = hours x cores; ``benchmarks/rates.py``'s rates are per
CPU second of mostly one-core calls). A stage's memory is not modelled here: it is what the stage's own checks
estimate before allocating (:func:`memory_need` of the estimates ``checks.refuse_oversized`` sees), the one estimate
that both the cost table's peak and the stage's cluster job (:func:`job_mem_mb`) use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ntkrepro.blocks import MAX_PAIRS_PER_BLOCK, plan_pair_blocks
from ntkrepro.checks import array_bytes

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks" / "results"
FC_INPUT_SHARE = 0.5  # the old fc study's x x^T share of its Gram (README: ~0.45 s of 0.82 s; layers ~0.4 s)
PARAM_PASSES = 6  # passes over the weights per gradient step: read forward, read backward, write dW, update (3)
ITEMSIZE = {"float32": 4, "float64": 8}


class CostError(ValueError):
    """A workload or a stage that cannot be estimated (bad sizes, no cost model, no benchmark)."""


# ---------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One kind of work a stage does ``count`` times: ``size`` holds the kind's parameters (see the module
    docstring), ``what`` a label for people. Memory is not a workload's: a stage's memory is what its own
    checks estimate (:func:`memory_need`)."""

    kind: str
    what: str
    size: Mapping[str, Any]
    count: int = 1


def _positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise CostError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _precision(value: str) -> str:
    if value not in ITEMSIZE:
        raise CostError(f"precision must be one of {tuple(ITEMSIZE)}, got {value!r}")
    return value


def _path(n2: int | None) -> str:
    """The benchmark path that rates a Gram: "sym" for K(X, X) (x2 None), "cross" for K(X, Y)."""
    return "sym" if n2 is None else "cross"


def distinct_pairs(n1: int, n2: int | None = None) -> int:
    """Kernel evaluations of a Gram: the upper triangle with the diagonal of a symmetric one (``n2`` None),
    every entry of K(x1, x2)."""
    return n1 * (n1 + 1) // 2 if n2 is None else n1 * n2


def fc_gram(n1: int, n2: int | None = None, *, d: int, depth: int, precision: str = "float64", count: int = 1,
            what: str = "") -> Workload:
    """The exact FC NNGP/NTK Gram of ``n1`` (x ``n2``; None = symmetric) inputs of dimension ``d``."""
    n1, d, depth = _positive_int("n1", n1), _positive_int("d", d), _positive_int("depth", depth)
    n2 = None if n2 is None else _positive_int("n2", n2)
    return Workload("fc_gram", what or f"FC Gram {n1} x {n2 or n1}, d={d}, depth {depth}",
                    {"pairs": distinct_pairs(n1, n2), "path": _path(n2), "d": d, "depth": depth,
                     "precision": _precision(precision)},
                    _positive_int("count", count))


def cntk_gram(n1: int, n2: int | None = None, *, side: int, depth: int, readout: str, batch_size: int | None = None,
              count: int = 1, what: str = "") -> Workload:
    """The exact CNTK Gram (vanilla or GAP readout) of ``side`` x ``side`` images, ``depth`` layers
    (depth - 1 convolutions), in blocks of ``batch_size`` pairs per call (None: the kernel's default,
    ``ntkrepro.blocks.MAX_PAIRS_PER_BLOCK`` where memory is ample)."""
    n1, side, depth = _positive_int("n1", n1), _positive_int("side", side), _positive_int("depth", depth, minimum=2)
    n2 = None if n2 is None else _positive_int("n2", n2)
    if readout not in ("vanilla", "gap"):
        raise CostError(f"readout must be 'vanilla' or 'gap', got {readout!r}")
    batch = f", {batch_size} pairs per call" if batch_size else ""
    return Workload("cntk", what or f"CNTK-{'V' if readout == 'vanilla' else 'GAP'} Gram {n1} x {n2 or n1}, "
                    f"{side}x{side}, depth {depth}{batch}",
                    {"pairs": distinct_pairs(n1, n2), "path": _path(n2), "side": side, "depth": depth,
                     "readout": readout,
                     "calls": block_calls(n1, n2, side=side, batch_size=batch_size)
                     if batch_size and readout == "vanilla" else 0},
                    _positive_int("count", count))


def block_calls(n1: int, n2: int | None, *, side: int, batch_size: int | None = None) -> int:
    """Block calls of a CNTK Gram as ``ntkrepro.blocks.plan_pair_blocks`` cuts it (``batch_size`` pairs per
    block; None: ``MAX_PAIRS_PER_BLOCK``, the default where memory is ample)."""
    symmetric = n2 is None
    plan = plan_pair_blocks(n1, n1 if symmetric else n2, pairs=batch_size or MAX_PAIRS_PER_BLOCK,
                            entries_per_pair=side * side, symmetric=symmetric)
    rows = -(-n1 // plan.b1)
    return rows * (rows + 1) // 2 if symmetric else rows * -(-n2 // plan.b2)


def deq_gram(n1: int, n2: int | None = None, *, count: int = 1, what: str = "") -> Workload:
    """The DEQ-NTK Gram (fixed point per pair) of ``n1`` (x ``n2``) inputs."""
    n1 = _positive_int("n1", n1)
    n2 = None if n2 is None else _positive_int("n2", n2)
    return Workload("deq_gram", what or f"DEQ-NTK Gram {n1} x {n2 or n1}",
                    {"pairs": distinct_pairs(n1, n2), "path": _path(n2)}, _positive_int("count", count))


def cdeq_gram(n1: int, n2: int | None = None, *, side: int, count: int = 1, what: str = "") -> Workload:
    """The convolutional DEQ-NTK Gram (both fixed points per pair) of ``side`` x ``side`` images."""
    n1 = _positive_int("n1", n1)
    n2 = None if n2 is None else _positive_int("n2", n2)
    return Workload("cdeq_gram", what or f"CDEQ-NTK Gram {n1} x {n2 or n1}, {side}x{side}",
                    {"pairs": distinct_pairs(n1, n2), "side": _positive_int("side", side), "path": _path(n2)},
                    _positive_int("count", count))


def fc_macs(*, d: int, width: int, depth: int, out: int = 1) -> int:
    """Forward multiply-adds per example of a depth-``depth`` MLP (``depth`` weight layers)."""
    return d * width + max(depth - 2, 0) * width * width + width * out


def cnn_macs(*, side: int, channels: int, depth: int, c_in: int = 3, out: int = 1, readout: str = "vanilla",
             filter_size: int = 3) -> int:
    """Forward multiply-adds per example of a CNN of ``depth - 1`` same-padded convolutions and a readout
    (dense over every pixel for vanilla, after global average pooling for GAP)."""
    pixels, q2 = side * side, filter_size * filter_size
    convs = q2 * c_in * channels * pixels + max(depth - 2, 0) * q2 * channels * channels * pixels
    return convs + channels * out * (pixels if readout == "vanilla" else 1)


def cnn_params(*, channels: int, depth: int, side: int = 1, c_in: int = 3, out: int = 1, readout: str = "vanilla",
               filter_size: int = 3) -> int:
    """Weights of :func:`cnn_macs`' CNN: its multiply-adds with each convolution counted once, not per pixel
    (``side``: the vanilla readout's input side)."""
    q2 = filter_size * filter_size
    convs = q2 * c_in * channels + max(depth - 2, 0) * q2 * channels * channels
    return convs + channels * out * (side * side if readout == "vanilla" else 1)


def empirical_ntk(n1: int, n2: int | None = None, *, arch: str, macs: int, count: int = 1,
                  what: str = "") -> Workload:
    """Empirical NTKs of a finite net (``macs`` forward multiply-adds per example; :func:`fc_macs`,
    :func:`cnn_macs`) on ``n1`` (x ``n2``) inputs, ``count`` draws."""
    n1 = _positive_int("n1", n1)
    n2 = None if n2 is None else _positive_int("n2", n2)
    _arch(arch)
    return Workload("empirical_ntk", what or f"empirical NTK ({arch}) {n1} x {n2 or n1}",
                    {"pairs": distinct_pairs(n1, n2), "arch": arch, "macs": _positive_int("macs", macs)},
                    _positive_int("count", count))


def train(examples: int, *, arch: str, macs: int, params: int, batch: int, precision: str = "float64",
          count: int = 1, what: str = "") -> Workload:
    """Training by gradient steps: ``examples`` examples processed in all (epochs x training set, or steps x
    batch) in batches of ``batch`` (full batch: the training set), a net of ``macs`` forward multiply-adds per
    example and ``params`` weights; ``count`` runs (seeds, grid points)."""
    _arch(arch)
    examples, batch = _positive_int("examples", examples), _positive_int("batch", batch)
    return Workload("train", what or f"training ({arch}) on {examples} examples",
                    {"examples": examples, "steps": -(-examples // batch), "arch": arch,
                     "macs": _positive_int("macs", macs), "params": _positive_int("params", params),
                     "precision": _precision(precision)},
                    _positive_int("count", count))


def depth_iteration(n1: int, n2: int, *, depth: int, precision: str = "float64", count: int = 1,
                    what: str = "") -> Workload:
    """The finite-depth kernel iteration of ``n1`` x ``n2`` entries to ``depth`` with every depth kept
    (``ntkrepro.kernels.deq.deq_kernels(..., all_depths=True)``)."""
    n1, n2, depth = _positive_int("n1", n1), _positive_int("n2", n2), _positive_int("depth", depth)
    return Workload("depth_iteration", what or f"all-depths iteration {n1} x {n2} to depth {depth}",
                    {"entry_layers": n1 * n2 * depth, "precision": _precision(precision)},
                    _positive_int("count", count))


def solve(n: int, *, targets: int, n_test: int = 0, precision: str = "float64", count: int = 1,
          what: str = "") -> Workload:
    """Kernel regression: Cholesky of the n x n training Gram, solve for ``targets`` columns, predict
    ``n_test`` points; in place when its float64 Gram exceeds ``ntkrepro.gram.LARGE_GRAM_BYTES`` (the regression
    pairs' rule), else on ``kernel_regression``'s default JAX path."""
    from ntkrepro.gram import LARGE_GRAM_BYTES

    n, targets = _positive_int("n", n), _positive_int("targets", targets)
    n_test = _positive_int("n_test", n_test, minimum=0)
    return Workload("solve", what or f"kernel regression n={n}, {n_test} test points",
                    {"macs": n**3 / 3 + n * n * targets + n_test * n * targets, "precision": _precision(precision),
                     "in_place": 8 * n * n > LARGE_GRAM_BYTES},
                    _positive_int("count", count))


def matvec(n: int, *, steps: int, precision: str = "float64", count: int = 1, what: str = "") -> Workload:
    """``steps`` products of an n x n matrix with a vector (e.g. explicit Euler steps of kernel gradient
    descent): each reads the whole matrix once, memory-bound."""
    n, steps = _positive_int("n", n), _positive_int("steps", steps)
    return Workload("matvec", what or f"{steps} matrix-vector products with an {n:,} x {n:,} matrix",
                    {"bytes": steps * n * n * ITEMSIZE[_precision(precision)]}, _positive_int("count", count))


def stage_run(stage: str, units: Mapping[str, float], *, what: str) -> Workload:
    """A whole stage whose time no kernel benchmark rates (compilation, sequential scalar recursions, small Monte
    Carlo), estimated from timed runs of the stage itself at smaller settings (``benchmarks/stages.py``): CPU
    seconds = fixed + sum_k slope_k x ``units[k]``, the line fitted to those runs (each run's units computed by this
    same function from its config)."""
    if not units:
        raise CostError(f"{stage}: a stage_run needs at least one unit")
    clean = {}
    for name, value in units.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise CostError(f"{stage}: unit {name} must be a number >= 0, got {value!r}")
        clean[name] = float(value)
    return Workload("stage_run", what, {"stage": stage, "units": clean})


def fit_stage_runs(runs: list[Mapping]) -> dict | None:
    """The line ``cpu_seconds = fixed + sum_k slope_k units_k`` through a stage's timed runs (``[{"units":
    {k: v}, "cpu_seconds": s}, ...]``), non-negative least squares; None when the runs cannot determine it
    (fewer runs than unknowns, or a unit that never varies)."""
    from scipy.optimize import nnls

    names = sorted(runs[0]["units"]) if runs else []
    if not names or any(sorted(r["units"]) != names for r in runs) or len(runs) < len(names) + 1:
        return None
    a = np.array([[1.0] + [float(r["units"][k]) for k in names] for r in runs])
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)  # columns of comparable size for the rank and the fit
    if np.linalg.matrix_rank(a / scale) < a.shape[1]:
        return None
    b = np.array([float(r["cpu_seconds"]) for r in runs])
    coef = nnls(a / scale, b)[0] / scale
    fitted = a @ coef
    return {"fixed_s": float(coef[0]), "slopes": dict(zip(names, map(float, coef[1:]), strict=True)),
            "runs": len(runs), "max_ratio": float(np.max(np.maximum(fitted / b, b / fitted)))}


def unrated(what: str, *, count: int = 1) -> Workload:
    """Work no benchmark rates (e.g. a sequential scalar recursion): listed, never given hours."""
    return Workload("unrated", what, {}, _positive_int("count", count))


def _arch(arch: str) -> None:
    if arch not in ("fc", "cnn"):
        raise CostError(f"arch must be 'fc' or 'cnn', got {arch!r}")


# ---------------------------------------------------------------- rates


@dataclass(frozen=True)
class Rate:
    """Evaluations per second of one workload kind at the benchmark's reference configuration ``ref``."""

    kind: str
    per_s: float
    ref: Mapping[str, Any]
    source: str  # the benchmark file and row
    machine: str


def _machine(m: Mapping) -> str:
    devices = ", ".join(sorted(set(m.get("devices") or []))) or m.get("backend", "?")
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" if m.get("backend") == "cpu" else devices


def _backend(record: Mapping) -> str:
    return "cpu" if (record.get("machine") or {}).get("backend", "cpu") == "cpu" else "gpu"


def _gram_key(kind: str, path: str) -> str:
    """A Gram rate's key: ``fc_gram:float64`` (the symmetric path), ``fc_gram:float64:cross``."""
    return kind if path == "sym" else f"{kind}:cross"


def _sym_rate(n: int, seconds: float, path: str) -> float:
    """Distinct pairs per second of a benchmark Gram of n inputs on ``path`` (n (n + 1) / 2 or n^2 pairs)."""
    return distinct_pairs(n, None if path == "sym" else n) / seconds


def fastest_round(record: Mapping, row: Mapping, timer: str = "ours") -> float:
    """Seconds of a ``run.py table`` row's fastest round of ``timer`` ("ours", or "gemm": the FC's input GEMM);
    a record without the rounds: the row's median."""
    median = row["ours_s"] if timer == "ours" else row["input_gemm_s"]
    return min(record.get("timings_s", {}).get(f"{timer}:{row['case']}") or [median])


def _table_rows(record: Mapping) -> Iterable[tuple[str, float, dict, str, int]]:
    """``run.py table``: both paths of FC, CNTK-V, CNTK-GAP and DEQ, and the machine's GEMM and copy peaks."""
    peak = record["peak"]
    for dtype in ITEMSIZE:
        if f"gemm_peak_{dtype}_gflops" in peak:
            yield f"gemm:{dtype}", peak[f"gemm_peak_{dtype}_gflops"] * 1e9 / 2, {}, f"GEMM peak {dtype}", 0
    if "copy_gbs" in peak:
        yield "copy", peak["copy_gbs"] * 1e9, {}, "copy bandwidth", 0
    for row in record["rows"]:
        n, path, label = row["n"], row["path"], row["case"]
        ours = fastest_round(record, row)
        per_s = _sym_rate(n, ours, path)
        if row["kernel"] == "fc":
            share = min(1.0, fastest_round(record, row, "gemm") / ours) if row.get("input_gemm_s") else FC_INPUT_SHARE
            ref = {"d": row["d"], "depth": row["depth"], "n": n, "input_share": share}
            yield _gram_key(f"fc_gram:{row['dtype']}", path), per_s, ref, label, n
        elif row["kernel"] == "cntk":
            ref = {"side": row["side"], "depth": row["depth"], "n": n}
            yield _gram_key(f"cntk:{row['readout']}", path), per_s, ref, label, n
        elif row["kernel"] == "deq":
            yield _gram_key("deq_gram", path), per_s, {"n": n}, label, n


def _rows(record: Mapping) -> Iterable[tuple[str, float, dict, str, int]]:
    """(rate key, work per second, reference config, row label, size) of every usable row of a benchmark file."""
    study = record.get("study")
    if study == "table":
        yield from _table_rows(record)
    elif study == "fc":  # the older per-study files: K(X, X) only
        n = record["n"]
        for row in record["rows"]:
            ref = {"d": record["d"], "depth": record["depth"], "n": n, "input_share": FC_INPUT_SHARE}
            yield f"fc_gram:{row['dtype']}", _sym_rate(n, row["ours_s"], "sym"), ref, row["dtype"], n
    elif study == "cntk":
        for row in record["rows"]:
            n = row["n"]  # ours_pairs_per_s counts n^2 pairs
            ref = {"side": record["image"][0], "depth": record["depth"], "n": n}
            yield f"cntk:{row['readout']}", _sym_rate(n, n * n / row["ours_pairs_per_s"], "sym"), ref, row["readout"], n
    elif study == "deq":
        n = record["n"]
        yield "deq_gram", _sym_rate(n, record["ours_s"], "sym"), {"n": n}, "", n
    elif study == "large":  # the in-place factor and solve of the n_train Gram (10 classes)
        n = record["n_train"]
        phase = next((ph for ph in record.get("phases", []) if ph["phase"] == "factor_solve"), None)
        if phase:
            yield f"solve_in_place:{record['dtype']}", (n**3 / 3 + n * n * 10) / phase["seconds"], {}, "factor_solve", n
    elif study == "rates":  # benchmarks/rates.py
        for row in record["rows"]:
            if row["kind"] == "depth_iteration":
                yield (f"depth_iteration:{row['dtype']}", row["entry_layers_per_cpu_s"], {},
                       f"{row['rows']} x {row['cols']} depth {row['depth']}", row["depth"])
            elif row["kind"] == "cntk_call":  # calls per CPU second of the extra block calls
                yield (f"cntk_call:{row['readout']}", 1 / row["call_cpu_seconds"], {},
                       f"batch_size {row['batch_size']}", row["n"])
            elif row["kind"] == "cntk_block":  # the deepest row: the per-plane work spread over more layers
                ref = {"side": row["side"], "depth": row["depth"], "n": row["n1"]}
                yield (_gram_key(f"cntk_block:{row['readout']}", row["path"]), row["pairs_per_cpu_s"], ref,
                       f"{row['n1']} x {row['n2']} block depth {row['depth']}", row["depth"])
            elif row["kind"] == "cdeq":
                yield (_gram_key("cdeq_gram", row["path"]), row["pairs_per_cpu_s"], {"side": row["side"]},
                       f"CDEQ-NTK {row['path']} n = {row['n']} side {row['side']}", row["n"])
            elif row["kind"] == "solve":
                yield f"solve:{row['dtype']}", row["macs_per_cpu_s"], {}, f"kernel_regression n = {row['n']}", row["n"]
    elif study == "stages":  # benchmarks/stages.py: timed runs of whole stages, fitted per stage
        by_stage: dict[str, list] = {}
        for row in record["rows"]:
            by_stage.setdefault(row["stage"], []).append(row)
        for stage, runs in by_stage.items():
            fit = fit_stage_runs(runs)
            if fit:
                yield f"stage_run:{stage}", 1.0, fit, f"{stage}, {len(runs)} runs", len(runs)
    elif study == "empirical":
        for row in record["rows"]:
            n, arch = row["n"], row["arch"]
            by_impl = row.get("ours_pairs_per_s_by_implementation") or {}
            pairs_per_s = by_impl.get("structured") or row["ours_pairs_per_s"]
            if arch == "fc":
                macs = fc_macs(d=row["d"], width=row["width"], depth=row["depth"])
            else:
                macs = cnn_macs(side=row["side"], channels=row["width"], depth=row["depth"])
            ref = {"macs": macs, "n": n}
            yield f"empirical_ntk:{arch}", pairs_per_s, ref, arch, n
            if arch == "cnn":  # examples per second: n examples in n^2 / pps s (its autodiff path)
                yield f"train:{arch}", row["ours_pairs_per_s"] / n, ref, arch, n


LARGE_GRAM_PAIRS = MAX_PAIRS_PER_BLOCK  # a CNTK-GAP Gram of at least one default block: the block's rate

LOADED = 1.5  # a record whose 1-minute load average exceeds LOADED x its cores was measured on a busy machine


def loaded(record: Mapping) -> bool:
    """Whether a benchmark record was measured on a busy machine (its ``machine.loadavg_1m`` above
    :data:`LOADED` x its cores: other work took a share of the cores and of the memory bandwidth)."""
    m = record.get("machine") or {}
    return (m.get("loadavg_1m") or 0) > LOADED * (m.get("cores") or 1)


def load_rates(folder: Path | str = BENCHMARKS) -> dict[str, dict[str, Rate]]:
    """``{"cpu": {rate key: Rate}, "gpu": {...}}`` from the benchmark files in ``folder``: per key, the newest
    file that has it (names start with the UTC time) among those measured on a quiet machine (:func:`loaded`;
    a busy machine's record only where no quiet one has the key), its row at the largest size. Raises
    CostError when the folder has no file."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise CostError(f"no benchmark results in {folder} (run benchmarks/run.py; see benchmarks/README.md)")
    best: dict[tuple[str, str], tuple[tuple, Rate]] = {}
    for path in files:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CostError(f"{path}: unreadable benchmark file ({err})") from None
        backend = _backend(record)
        for key, per_s, ref, label, size in _rows(record):
            rank = (not loaded(record), path.name, size)
            rate = Rate(key, float(per_s), ref, f"{path.name}" + (f" ({label})" if label else ""),
                        _machine(record.get("machine") or {}))
            if (backend, key) not in best or rank > best[(backend, key)][0]:
                best[(backend, key)] = (rank, rate)
    out: dict[str, dict[str, Rate]] = {"cpu": {}, "gpu": {}}
    for (backend, key), (_, rate) in best.items():
        out[backend][key] = rate
    return out


def _terms(w: Workload) -> list[tuple[tuple[str, ...], Any]]:
    """The workload's terms: (rate keys, the first one a folder has rates it; amount(ref) in the rate's unit)."""
    s = w.size
    if w.kind == "fc_gram":
        def fc(ref):
            share = ref["input_share"]
            return s["pairs"] * (share * s["d"] / ref["d"] + (1 - share) * s["depth"] / ref["depth"])
        return [(_gram_keys(f"fc_gram:{s['precision']}", s["path"]), fc)]
    if w.kind == "cdeq_gram":
        return [(_gram_keys("cdeq_gram", s["path"]), lambda ref: s["pairs"] * (s["side"] / ref["side"]) ** 2)]
    if w.kind == "cntk":
        def conv(ref):
            spatial = (s["side"] / ref["side"]) ** (2 if s["readout"] == "vanilla" else 4)
            return s["pairs"] * (s["depth"] - 1) / (ref["depth"] - 1) * spatial
        keys = _gram_keys(f"cntk:{s['readout']}", s["path"])
        if s["readout"] == "gap" and s["pairs"] >= LARGE_GRAM_PAIRS:
            keys = _gram_keys("cntk_block:gap", s["path"]) + keys
        pairs = [(keys, conv)]
        return pairs + ([((f"cntk_call:{s['readout']}",), lambda ref: s["calls"])] if s.get("calls") else [])
    if w.kind == "deq_gram":
        return [(_gram_keys("deq_gram", s["path"]), lambda ref: s["pairs"])]
    if w.kind == "depth_iteration":
        return [((f"depth_iteration:{s['precision']}",), lambda ref: s["entry_layers"])]
    if w.kind == "empirical_ntk":
        return [((f"empirical_ntk:{s['arch']}",), lambda ref: s["pairs"] * s["macs"] / ref["macs"])]
    if w.kind == "train":
        weights = ((("copy",), lambda ref: s["steps"] * PARAM_PASSES * s["params"] * ITEMSIZE[s["precision"]]))
        if s["arch"] == "fc":
            return [((f"gemm:{s['precision']}",), lambda ref: 3 * s["examples"] * s["macs"]), weights]
        return [(("train:cnn",), lambda ref: s["examples"] * s["macs"] / ref["macs"]), weights]
    if w.kind == "matvec":
        return [(("copy",), lambda ref: s["bytes"])]
    if w.kind == "stage_run":
        def fitted(ref):
            if set(ref["slopes"]) != set(s["units"]):
                raise CostError(f"{s['stage']}: its runs were timed with units {sorted(ref['slopes'])}, the "
                                f"workload has {sorted(s['units'])} (rerun benchmarks/stages.py)")
            return ref["fixed_s"] + sum(ref["slopes"][k] * v for k, v in s["units"].items())
        return [((f"stage_run:{s['stage']}",), fitted)]
    if w.kind == "solve":
        keys = (f"solve_in_place:{s['precision']}", f"gemm:{s['precision']}") if s["in_place"] else \
            (f"solve:{s['precision']}",)
        return [(keys, lambda ref: s["macs"])]
    raise CostError(f"unknown workload kind {w.kind!r}")


def _gram_keys(kind: str, path: str) -> tuple[str, ...]:
    """A cross Gram's rate is the cross path's, else (no cross record) the symmetric path's."""
    return (kind,) if path == "sym" else (_gram_key(kind, path), kind)


def _rates_used(w: Workload, rates: Mapping[str, Rate]) -> list[Rate] | None:
    """The rate of each of the workload's terms (None when some term has none)."""
    if w.kind == "unrated":
        return None
    used = [next((rates[k] for k in keys if k in rates), None) for keys, _ in _terms(w)]
    return None if any(r is None for r in used) else used


def seconds(w: Workload, rates: Mapping[str, Rate]) -> float | None:
    """Seconds of all ``w.count`` runs of ``w`` at ``rates`` (one backend); None when nothing rates it."""
    used = _rates_used(w, rates)
    if used is None:
        return None
    return w.count * sum(amount(r.ref) / r.per_s for (_, amount), r in zip(_terms(w), used, strict=True))


# ---------------------------------------------------------------- stages


@dataclass
class StageCost:
    """A stage's estimate: hours per backend (None: no rate for some workload), its workloads, and
    ``peak_bytes``: the memory its own checks estimate (:func:`memory_need`; 0 when they estimate none)."""

    stage: str
    workloads: list[Workload]
    cpu_hours: float | None
    gpu_hours: float | None
    peak_bytes: float
    unrated: list[str] = field(default_factory=list)
    cores: int | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def mem_mb(self) -> int:
        """The memory (MiB) its cluster job asks for (:func:`job_mem_mb` of ``peak_bytes``)."""
        return job_mem_mb(self.peak_bytes)

    def summary(self) -> str:
        """One line: ``needs ≈ 82,000 CPU-h on the benchmark's 2-core CPU (no GPU rate measured), peak ≈ 6.4 GB``."""
        if self.cpu_hours is None and self.gpu_hours is None and self.unrated:
            return f"not estimated: {'; '.join(self.unrated)}"
        cpu = "no CPU rate measured" if self.cpu_hours is None else _approx(duration(self.cpu_hours, "CPU"))
        gpu = "no GPU rate measured" if self.gpu_hours is None else _approx(duration(self.gpu_hours, "GPU"))
        cores = f" on the benchmark's {self.cores}-core CPU" if self.cores and self.cpu_hours is not None else ""
        peak = "peak memory not estimated" if self.peak_bytes <= 0 else f"peak {_approx(gigabytes(self.peak_bytes))}"
        extra = f"; not estimated: {'; '.join(self.unrated)}" if self.unrated else ""
        return f"needs {cpu}{cores} ({gpu}), {peak}{extra}"


def _approx(text: str) -> str:
    return text if text.startswith("<") else f"≈ {text}"


def hours(h: float) -> str:
    """Hours to two significant figures with thousands separators (``82,000``, ``16``, ``0.31``)."""
    if h <= 0:
        return "0"
    digits = max(0, 1 - int(math.floor(math.log10(h))))
    return f"{float(f'{h:.2g}'):,.{digits}f}"


def duration(h: float, device: str = "") -> str:
    """A duration for people: ``82,000 h``, ``25 min``, ``3 s``, ``< 1 s``; with ``device`` ("CPU"):
    ``82,000 CPU-h``, ``25 CPU-min``."""
    s, unit = h * 3600, (lambda u: f"{device}-{u}" if device else u)
    if s < 1:
        return f"< 1 {unit('s')}"
    if s < 60:
        return f"{s:.0f} {unit('s')}"
    if s < 3600:
        return f"{s / 60:.0f} {unit('min')}"
    return f"{hours(h)} {unit('h')}"


def gigabytes(b: float) -> str:
    """``150 GB``, ``4.2 GB``, ``45 MB``, ``< 1 MB``; ``—`` when nothing was estimated (0)."""
    if b <= 0:
        return "—"
    if b < 1e6:
        return "< 1 MB"
    value, unit = (b / 1e9, "GB") if b >= 1e8 else (b / 1e6, "MB")
    return f"{value:,.0f} {unit}" if value >= 10 else f"{value:.2g} {unit}"


def memory_need(estimates: Iterable[tuple]) -> float:
    """Bytes a stage needs: the arrays its checks estimate before allocating (``checks.refuse_oversized``'s
    ``(path, value, unit_bytes, power, what)``, recorded with ``checks.recording_estimates``), all counted
    alive at once (their sum)."""
    return sum(array_bytes(value, unit, power) for _, value, unit, power, _ in estimates)


# A stage's cluster job asks for MEM_BASE_MB + MEM_SAFETY x its memory need (:func:`job_mem_mb`)
MEM_BASE_MB = 2000  # interpreter, JAX, libraries and data (~0.6 GB peak at smoke): also the floor
MEM_SAFETY = 1.5    # temporaries beside the estimated arrays (the estimates count the largest arrays only)


def job_mem_mb(need: float, attempt: int = 1) -> int:
    """Memory (MiB) of the cluster job of a stage that needs ``need`` bytes (:func:`memory_need`):
    ``MEM_BASE_MB + MEM_SAFETY x need``, times ``attempt`` (a retry after running out of memory asks for more)."""
    return math.ceil(MEM_BASE_MB + MEM_SAFETY * need / 2**20) * attempt


def stage_cost(stage: str, workloads: list[Workload], rates: Mapping[str, Mapping[str, Rate]],
               peak_bytes: float = 0.0) -> StageCost:
    """Sum a stage's workloads per backend; ``peak_bytes``: its :func:`memory_need`."""
    def total(backend: str) -> float | None:
        parts = [seconds(w, rates.get(backend, {})) for w in workloads if w.kind != "unrated"]
        return None if not parts or any(p is None for p in parts) else sum(parts) / 3600
    used = [r for w in workloads for r in (_rates_used(w, rates.get("cpu", {})) or [])]
    cores = {r.machine for r in used}
    return StageCost(stage, workloads, total("cpu"), total("gpu"), peak_bytes,
                     [w.what for w in workloads if w.kind == "unrated"],
                     _cores(next(iter(cores))) if len(cores) == 1 else None,
                     sorted({f"{r.kind}: {r.source}" for r in used}))


def _cores(machine: str) -> int | None:
    try:
        return int(machine.rsplit(",", 1)[1].split()[0])
    except (IndexError, ValueError):
        return None


def stage_config(stage: str, scale: str, overrides: Iterable[str] = ()) -> dict:
    """The registered config of ``<paper>/<artifact>`` at ``scale`` (and Hydra ``overrides``), resolved, as a
    plain dict."""
    from omegaconf import OmegaConf

    from ntkrepro.config import SCALES, compose

    if scale not in SCALES:
        raise CostError(f"scale must be one of {SCALES}, got {scale!r}")
    return OmegaConf.to_container(compose(stage, [f"scale={scale}", *overrides]), resolve=True)


def split_size(data: Mapping, split: str) -> int:
    """``data.n_<split>``, or (null) the whole split of ``data.name`` as the data registry sizes it."""
    from ntkrepro.data.registry import get_spec

    n = data.get(f"n_{split}")
    if n is not None:
        return int(n)
    sizes = get_spec(data["name"]).sizes
    if not sizes or split not in sizes:
        raise CostError(f"data.n_{split} is null and the registry has no size for {data['name']}/{split}")
    return int(sizes[split])


def image_side(data: Mapping, downsample: int = 1) -> tuple[int, int]:
    """(side after ``downsample``, channels) of ``data.name``'s images."""
    from ntkrepro.data.registry import get_spec

    h, _, c = get_spec(data["name"]).image_shape
    return h // int(downsample), c
