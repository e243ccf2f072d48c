"""Rates the cost model (``ntkrepro.cost``) needs that benchmarks/run.py's studies do not measure:

- ``depth_iteration``: the finite-depth DEQ/FC kernel iteration with every depth kept
  (``ntkrepro.kernels.deq.deq_kernels(..., all_depths=True)``, Feng & Kolter Fig. 1's kernels), in entry-layers
  per second (rows x cols x depth / seconds). It is not the FC Gram's rate: that recursion keeps only the last
  depth, fused per tile; keeping every depth runs ~3-4x slower per entry-layer on this machine.
- ``solve``: ``ntkrepro.regression.kernel_regression`` on its default path (JAX's Cholesky of K + ridge I, a
  Gram below ``ntkrepro.gram.LARGE_GRAM_BYTES``), in multiply-adds per second (n^3 / 3 + n^2 targets +
  n_test n targets): at n = 1,000-2,000 it runs ~10x below the GEMM rate, and ``run.py large`` rates only the
  in-place factorization of a large Gram.
- ``cntk_call``: the cost of one more block call of the CNTK-V (``ntkrepro.kernels.conv.cntk``), from the same
  Gram in the default blocks and in small fixed ones (``batch_size``, as golikov2022/gram_cost sets it):
  (t_small - t_default) / (calls_small - calls_default), the calls counted by ``ntkrepro.cost.block_calls``.
  (Not for CNTK-GAP: its 64-pair blocks ran faster than one block of the whole Gram, cache effects.)
- ``cntk_block``: the CNTK-GAP in the blocks a large Gram is cut into (``ntkrepro.blocks.plan_pair_blocks`` at
  ``MAX_PAIRS_PER_BLOCK``: 64 x 64 pairs for a symmetric Gram of thousands of images, whose off-diagonal blocks
  are cross blocks; 250 x 16 for a cross Gram of 10,000 test against 50,000 training images), one such block per
  call, 32 x 32 x 3 images, float32, at two depths: pairs per CPU second. The table study's 4-image GAP Grams
  rate small Grams, whose per-plane work is mostly fixed (products, plane groups, readout); a block of a large
  Gram spreads that work over 64 or 250 rows (the 4-image rate overstated a 50,000^2 Gram's cost ~2x).
- ``cdeq``: the CDEQ-NTK Gram (``ntkrepro.kernels.cdeq.cdeq_ntk``, Feng & Kolter Table 2's CDEQ-NTK row), in
  distinct pairs per CPU second on both paths, with the mean Sigma and Theta iterations per pair of its inputs
  (Gaussian images with unit pixel vectors: ~20 and ~13). Its cost per pair is that of ~33 fixed-point
  iterations of per-pixel work, and scales with the pixels (side^2: measured 4.1x from side 16 to 32).

    nice -n 10 .venv/bin/python benchmarks/rates.py            # writes results/<YYYYMMDD-HHMM>-rates.json

Best of ``--repeats`` calls after one warm-up (compile) call, wall and process CPU seconds, with the machine
(benchmarks/run.py's ``machine()``) and the load average; at two depths, so that the per-layer rate is seen
to be constant (the cost model scales it linearly in depth), and at two sizes of the solve. The rates the
cost model reads are per CPU second: this machine is shared (load 8-14 while these were measured, wall
times 2-3x the CPU times), and these calls run mostly on one core, so an idle machine's wall time is about
their CPU time (a call that uses both cores is rated conservatively, by up to 2x).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import machine, write_record  # noqa: E402  (benchmarks/run.py: the machine record, the record file)

VARIANCES = {"sigma_w2": 0.5, "sigma_u2": 0.4, "sigma_b2": 0.1}  # a Fig. 1 DEQ panel (0.5, 0.5)


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeats`` calls after one warm-up call."""
    jax.block_until_ready(fn())
    best = (np.inf, np.inf)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def depth_iteration_rows(rows: int, cols: int, d: int, depths: list[int], dtypes: list[str], repeats: int,
                         seed: int) -> list[dict]:
    from ntkrepro.kernels.deq import deq_kernels

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows + cols, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for dtype in dtypes:
        x1, x2 = x[:rows].astype(dtype), x[rows:].astype(dtype)
        for depth in depths:
            wall, cpu = best_of(lambda x1=x1, x2=x2, depth=depth: deq_kernels(
                x1, x2, depth=depth, all_depths=True, dtype=x1.dtype, **VARIANCES).ntk, repeats)
            work = rows * cols * depth
            out.append({"kind": "depth_iteration", "dtype": dtype, "rows": rows, "cols": cols, "d": d,
                        "depth": depth, "seconds": wall, "cpu_seconds": cpu, "entry_layers_per_s": work / wall,
                        "entry_layers_per_cpu_s": work / cpu})
            print(f"[rates] depth_iteration {dtype} {rows} x {cols} depth {depth}: {wall:.3f} s "
                  f"({cpu:.3f} CPU s)", file=sys.stderr, flush=True)
    return out


def solve_rows(sizes: list[int], dtypes: list[str], targets: int, repeats: int, seed: int) -> list[dict]:
    from ntkrepro.regression import kernel_regression

    rng = np.random.default_rng(seed)
    out = []
    for dtype in dtypes:
        for n in sizes:
            a = rng.standard_normal((n, n + 64))
            k = (a @ a.T / n).astype(dtype)  # a Wishart matrix: positive definite, its Cholesky succeeds
            k_test = k[: n // 10]
            y = rng.standard_normal((n, targets)).astype(dtype)
            wall, cpu = best_of(lambda k=k, y=y, k_test=k_test: kernel_regression(k, y, k_test), repeats)
            macs = n**3 / 3 + n * n * targets + len(k_test) * n * targets
            out.append({"kind": "solve", "dtype": dtype, "n": n, "targets": targets, "n_test": len(k_test),
                        "seconds": wall, "cpu_seconds": cpu, "macs": macs, "macs_per_s": macs / wall,
                        "macs_per_cpu_s": macs / cpu})
            print(f"[rates] solve {dtype} n = {n}: {wall:.3f} s ({cpu:.3f} CPU s)", file=sys.stderr, flush=True)
    return out


def cntk_call_rows(cases: list[tuple[str, int, int, int]], repeats: int, seed: int) -> list[dict]:
    """(readout, n, side, small batch_size) per case: depth 3, float32, the symmetric Gram."""
    from ntkrepro.cost import block_calls
    from ntkrepro.kernels.conv import cntk

    rng = np.random.default_rng(seed)
    out = []
    for readout, n, side, batch in cases:
        x = rng.standard_normal((n, side, side, 3)).astype("float32")
        timed = {b: best_of(lambda b=b, x=x, readout=readout: cntk(x, depth=3, readout=readout, batch_size=b).ntk,
                            repeats) for b in (None, batch)}
        calls = {b: block_calls(n, None, side=side, batch_size=b) for b in (None, batch)}
        extra = (timed[batch][1] - timed[None][1]) / (calls[batch] - calls[None])
        out.append({"kind": "cntk_call", "readout": readout, "n": n, "side": side, "depth": 3, "batch_size": batch,
                    "seconds_default": timed[None][0], "seconds_small": timed[batch][0],
                    "cpu_seconds_default": timed[None][1], "cpu_seconds_small": timed[batch][1],
                    "calls_default": calls[None], "calls_small": calls[batch], "call_cpu_seconds": extra})
        print(f"[rates] cntk_call {readout} n = {n} side {side}: {timed[None][1]:.3f} CPU s in {calls[None]} calls, "
              f"{timed[batch][1]:.3f} in {calls[batch]}: {1e3 * extra:.2f} CPU ms per call", file=sys.stderr,
              flush=True)
    return out


def cntk_block_rows(cases: list[tuple[str, int, int]], depths: list[int], repeats: int, seed: int) -> list[dict]:
    """(path rated, rows, columns) per case: one cross call of the GAP CNTK on that block (``fix_first_last``,
    Arora et al.'s setting), float32, 32 x 32 x 3 standard-normal images, at each depth."""
    from ntkrepro.blocks import MAX_PAIRS_PER_BLOCK, plan_pair_blocks
    from ntkrepro.kernels.conv import block_rows_per_step, cntk, plane_group

    rng = np.random.default_rng(seed)
    out = []
    for path, n1, n2 in cases:
        x1, x2 = (rng.standard_normal((n, 32, 32, 3)).astype("float32") for n in (n1, n2))
        plan = plan_pair_blocks(n1, n2, pairs=MAX_PAIRS_PER_BLOCK, entries_per_pair=32 * 32, symmetric=False)
        if (plan.b1, plan.b2) != (n1, n2):
            raise SystemExit(f"cntk_block {n1} x {n2}: the plan cuts it into {plan.b1} x {plan.b2} blocks, not one")
        rows = block_rows_per_step(plan, readout="gap", p_side=32, q_side=32)
        for depth in depths:
            wall, cpu = best_of(lambda x1=x1, x2=x2, depth=depth: cntk(x1, x2, depth=depth, readout="gap",
                                                                      fix_first_last=True).ntk, repeats)
            pairs = n1 * n2
            out.append({"kind": "cntk_block", "readout": "gap", "path": path, "n1": n1, "n2": n2, "side": 32,
                        "depth": depth, "pairs": pairs, "rows_per_step": rows,
                        "planes_per_group": plane_group(32, 32, n2, rows=rows), "seconds": wall,
                        "cpu_seconds": cpu, "pairs_per_cpu_s": pairs / cpu})
            print(f"[rates] cntk_block gap {n1} x {n2} depth {depth}: {wall:.1f} s ({cpu:.1f} CPU s), "
                  f"{1e3 * cpu / pairs:.2f} CPU ms per pair", file=sys.stderr, flush=True)
    return out


def cdeq_rows(cases: list[tuple[str, int, int]], repeats: int, seed: int) -> list[dict]:
    """(path, n, side) per case: the CDEQ-NTK of n images (sym) or n x n images (cross), float32, Table 2's
    variances (0.65, 0.35), tol 1e-6."""
    from ntkrepro.kernels.cdeq import cdeq_ntk

    rng = np.random.default_rng(seed)
    out = []
    for path, n, side in cases:
        x = rng.standard_normal((2 * n, side, side, 3)).astype("float32")
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        args = (x[:n],) if path == "sym" else (x[:n], x[n:])
        result = {}

        def gram(args=args, result=result):
            result["k"] = cdeq_ntk(*args, sigma_w2=0.65, sigma_u2=0.35)
            return result["k"].ntk

        wall, cpu = best_of(gram, repeats)
        pairs = n * (n + 1) // 2 if path == "sym" else n * n
        k = result["k"]
        out.append({"kind": "cdeq", "path": path, "n": n, "side": side, "pairs": pairs, "seconds": wall,
                    "cpu_seconds": cpu, "pairs_per_cpu_s": pairs / cpu,
                    "sigma_iterations_mean": float(np.mean(k.sigma_iterations)),
                    "theta_iterations_mean": float(np.mean(k.theta_iterations))})
        print(f"[rates] cdeq {path} n = {n} side {side}: {wall:.3f} s ({cpu:.3f} CPU s), "
              f"{1e6 * cpu / pairs:.1f} CPU us per pair", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64, help="rows per call (Fig. 1's row_chunk is 32-64)")
    p.add_argument("--cols", type=int, default=1000, help="columns (Fig. 1: its 1,000 train points)")
    p.add_argument("--d", type=int, default=3072, help="input dimension (CIFAR-10: 3,072)")
    p.add_argument("--depths", default="50,200")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--solve-sizes", default="1000,2000", help="n of the solves (10 targets, n / 10 test rows)")
    p.add_argument("--block-depths", default="6,21", help="depths of the cntk_block rows (Arora et al.: 21 deepest)")
    p.add_argument("--only", default="depth_iteration,cntk_call,cntk_block,solve,cdeq",
                   help="kinds to measure (comma-separated)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    load = [os.getloadavg()]
    kinds = {
        "depth_iteration": lambda: depth_iteration_rows(a.rows, a.cols, a.d, [int(v) for v in a.depths.split(",")],
                                                        a.dtypes.split(","), a.repeats, a.seed),
        "cntk_call": lambda: cntk_call_rows([("vanilla", 512, 16, 1024)], a.repeats, a.seed),
        "cntk_block": lambda: cntk_block_rows([("sym", 64, 64), ("cross", 250, 16)],
                                              [int(v) for v in a.block_depths.split(",")], a.repeats, a.seed),
        "cdeq": lambda: cdeq_rows([("sym", 256, 16), ("cross", 128, 16)], a.repeats, a.seed),
        "solve": lambda: solve_rows([int(v) for v in a.solve_sizes.split(",")], a.dtypes.split(","), 10, a.repeats,
                                    a.seed),
    }
    unknown = set(a.only.split(",")) - set(kinds)
    if unknown:
        p.error(f"--only: unknown kinds {sorted(unknown)} (kinds: {', '.join(kinds)})")
    rows = [row for kind, measure in kinds.items() if kind in a.only.split(",") for row in measure()]
    load.append(os.getloadavg())
    result = {"study": "rates", "rows": rows, "loadavg_start_end": load, "machine": machine(), "args": vars(a),
              "note": "best of repeats after a warm-up call; entry_layers_per_s = rows x cols x depth / wall seconds "
                      "(all cores JAX uses), *_per_cpu_s per CPU second (what the cost model reads: the module "
                      "docstring); the cost model takes the deepest / largest row of each kind"}
    print(write_record(a.results_dir, "rates", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
