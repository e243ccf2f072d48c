"""Monte Carlo draws of ``ntkrepro.empirical.monte_carlo_kernel``: one draw per call (``draws_per_call=1``, the
blocked loop) against chunks of draws in one compiled call (the automatic chunk size; draws one after another
in the call, and vmapped), same process, interleaved rounds. Writes benchmarks/results/<date>-mc.json with
machine info and the load average.

    .venv/bin/python benchmarks/mc_draws.py               # every case, 3 rounds
    .venv/bin/python benchmarks/mc_draws.py --only fc_structured --repeats 5
    .venv/bin/python benchmarks/mc_draws.py --modes auto --threads 1   # as the stages run (threads=1)

The cases are the stages' calls at quick scale (golikov2022/printed_formulas: FC width 1024 on 6 points,
structured NTK and output covariance; golikov2022/mc_vs_exact: FC and CNN on digits-shaped inputs, float32,
K(x, x_train), Jacobian contraction, samples kept; hayou2020/cnn_checks: a depth-3 CNN with 12 outputs,
"full" blocks, 2 inputs). "first call" is the time a stage sees: a freshly built net, compilation included;
"warm" is the median over rounds of the compiled call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ntkrepro import empirical, set_cpu_threads
from ntkrepro.empirical import monte_carlo_kernel
from ntkrepro.io import atomic_write_text
from ntkrepro.nets import cnn, fc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import machine  # noqa: E402  (benchmarks/run.py)

# mode -> (draws_per_call, VMAP_DRAWS_ON_CPU): one draw per call; the default chunks (draws one after another
# inside a call on the CPU, vmapped on accelerators); the default chunks vmapped on the CPU too
MODES = {"per_draw": (1, False), "auto": (None, False), "auto_vmapped": (None, True)}


def cases() -> dict[str, dict]:
    """name -> net factory, inputs and monte_carlo_kernel options (the stages' quick-scale calls)."""
    rng = np.random.RandomState(0)
    digits = rng.randn(200, 64).astype(np.float32)
    images = rng.randn(40, 8, 8, 1).astype(np.float32)
    points = rng.randn(6, 16)
    return {
        "fc_structured": {"net": lambda: fc(depth=3, width=1024), "x1": points, "x2": None,
                          "options": {"n_samples": 32}, "stage": "golikov2022/printed_formulas (fc, ntk)"},
        "fc_covariance": {"net": lambda: fc(depth=3, width=1024), "x1": points, "x2": None,
                          "options": {"n_samples": 32, "kind": "nngp"},
                          "stage": "golikov2022/printed_formulas (fc, nngp)"},
        "fc_jacobian_f32": {"net": lambda: fc(depth=3, width=16, out_dim=10, dtype=jnp.float32),
                            "x1": digits, "x2": digits[:100],
                            "options": {"n_samples": 48, "implementation": "jacobian", "keep_samples": True},
                            "stage": "golikov2022/mc_vs_exact (fc, width 16, quick)"},
        "cnn_jacobian_f32": {"net": lambda: cnn(depth=3, channels=4, out_dim=10, dtype=jnp.float32),
                             "x1": images, "x2": images[:20],
                             "options": {"n_samples": 16, "implementation": "jacobian", "keep_samples": True},
                             "stage": "golikov2022/mc_vs_exact (cnn, width 4, smoke)"},
        "cnn_full": {"net": lambda: cnn(depth=3, channels=128, out_dim=12), "x1": rng.randn(2, 6, 1, 2),
                     "x2": None, "options": {"n_samples": 64, "implementation": "jacobian", "outputs": "full",
                                             "keep_samples": True},
                     "stage": "hayou2020/cnn_checks (128 channels, 12 outputs, quick)"},
    }


def timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def study(names: list[str], modes: list[str], repeats: int) -> list[dict]:
    rows = []
    for name, case in cases().items():
        if names and name not in names:
            continue
        x1 = jnp.asarray(case["x1"])
        x2 = None if case["x2"] is None else jnp.asarray(case["x2"])
        key = jax.random.PRNGKey(1)

        def call(net, mode, case=case, x1=x1, x2=x2, key=key):
            def run():
                empirical.VMAP_DRAWS_ON_CPU = MODES[mode][1]
                return monte_carlo_kernel(net.init_fn, net.apply_fn, key, x1, x2, draws_per_call=MODES[mode][0],
                                          **case["options"]).mean
            return run

        nets = {mode: case["net"]() for mode in modes}  # one fresh net per mode: its first call compiles
        first = {mode: timed(call(nets[mode], mode)) for mode in modes}
        warm = {mode: [] for mode in modes}
        for _ in range(repeats):
            for mode in modes:
                warm[mode].append(timed(call(nets[mode], mode)))
        means = {mode: np.asarray(call(nets[mode], mode)()) for mode in modes}
        scale = float(np.max(np.abs(means["per_draw"])))
        median = {mode: statistics.median(times) for mode, times in warm.items()}
        rows.append({
            "case": name, "stage": case["stage"], "x1": list(x1.shape), "x2": None if x2 is None else list(x2.shape),
            **{k: v for k, v in case["options"].items()},
            "first_call_s": first, "warm_median_s": median, "warm_s": warm,
            "speedup_first_call": {mode: first["per_draw"] / first[mode] for mode in modes},
            "speedup_warm": {mode: median["per_draw"] / median[mode] for mode in modes},
            "max_rel_diff_of_mean_vs_per_draw": {mode: float(np.max(np.abs(means[mode] - means["per_draw"]))) / scale
                                                 for mode in modes},
        })
        speedups = " ".join(f"{m} {rows[-1]['speedup_warm'][m]:.2f}x / {rows[-1]['speedup_first_call'][m]:.2f}x"
                            for m in modes[1:])
        print(f"{name:18s} first call s {' '.join(f'{m}={t:.2f}' for m, t in first.items())} | warm median s "
              f"{' '.join(f'{m}={t:.3f}' for m, t in median.items())} | speedup warm / first call: {speedups}",
              flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=[], choices=list(cases()), help="cases to run (default all)")
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES),
                   help="modes to time besides per_draw (default all)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved warm rounds")
    p.add_argument("--threads", type=int, default=0, help="XLA CPU threads, as a stage's threads= (0: all cores)")
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    a = p.parse_args()
    set_cpu_threads(a.threads)
    modes = ["per_draw"] + [m for m in a.modes if m != "per_draw"]
    before = machine()
    rows = study(a.only, modes, a.repeats)
    after = machine()
    result = {"study": "mc", "threads": a.threads or "all",
              "modes": {m: {"draws_per_call": "auto" if MODES[m][0] is None else MODES[m][0],
                            "vmap_draws_on_cpu": MODES[m][1]} for m in modes},
              "machine": before, "loadavg_1m_after": after["loadavg_1m"], "rows": rows}
    out = a.results_dir / f"{datetime.now(timezone.utc):%Y%m%d-%H%M}-mc.json"
    atomic_write_text(out, json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out} (load {before['loadavg_1m']:.1f} -> {after['loadavg_1m']:.1f})")


if __name__ == "__main__":
    main()
