"""neural-tangents 0.6.5 as a benchmark peer. Runs ONLY in its own venv (benchmarks/.venv-nt:
jax 0.4.23, numpy < 2); never imported by the project.

    benchmarks/.venv-nt/bin/python benchmarks/nt_peer.py serve [--x64]   # run.py table: cases timed on request
    benchmarks/.venv-nt/bin/python benchmarks/nt_peer.py empirical --arch fc --width 1024 --depth 4 --n 1000

``serve`` reads one JSON request per line on stdin and answers one JSON line on stdout:
``{"prepare": case}`` builds and compiles the case (benchmarks/cases.py) and runs it once;
``{"time": name}`` runs a prepared case once more and answers its wall and CPU seconds. So run.py interleaves the
peer's repeats with its own in the same minutes of the same machine. One server per dtype: ``--x64``
turns on JAX's float64 mode (float64 cases), without it float32 cases stay float32 throughout.
``empirical`` prints one JSON object.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from cases import case_inputs, case_name  # noqa: E402


def best_of(fn, repeats):
    fn()  # compile + warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def case_fn(case):
    """A no-argument callable computing the case's NTK with neural-tangents' analytic kernel_fn."""
    from neural_tangents import stax

    if case["kernel"] == "fc":
        w, b = case.get("sigma_w2", 2.0) ** 0.5, case.get("sigma_b2", 0.0) ** 0.5
        layers = [stax.Dense(1, W_std=w, b_std=b)]
        for _ in range(case["depth"] - 1):
            layers += [stax.Relu(), stax.Dense(1, W_std=w, b_std=b)]
    elif case["kernel"] == "cntk":
        layers = []
        for _ in range(case["depth"] - 1):
            layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()]
        readout = stax.Flatten() if case["readout"] == "vanilla" else stax.GlobalAvgPool()
        layers += [readout, stax.Dense(1, W_std=2**0.5)]
    else:
        raise ValueError(f"no neural-tangents peer for kernel {case['kernel']!r}")
    kernel_fn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
    x1, x2 = (None if x is None else jax.numpy.asarray(x) for x in case_inputs(case, case.get("seed", 0)))
    return lambda: kernel_fn(x1, x2, "ntk").block_until_ready()


def serve():
    prepared = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "prepare" in request:
                case = request["prepare"]
                fn = prepared[case_name(case)] = case_fn(case)
                t = time.perf_counter()
                fn()  # compile + first run
                answer = {"prepared": case_name(case), "first_call_s": time.perf_counter() - t}
            else:
                fn = prepared[request["time"]]
                t, cpu = time.perf_counter(), time.process_time()
                fn()
                answer = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu}
        except Exception as e:  # noqa: BLE001 — reported to run.py, which records it
            answer = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(json.dumps(answer), flush=True)


def bench_empirical(a):
    import neural_tangents as nt
    from neural_tangents import stax

    rng = np.random.RandomState(a.seed)
    if a.arch == "fc":
        layers = []
        for _ in range(a.depth - 1):
            layers += [stax.Dense(a.width, W_std=2**0.5), stax.Relu()]
        layers += [stax.Dense(1, W_std=2**0.5)]
        x = rng.randn(a.n, a.d).astype(np.float32)
    else:
        layers = []
        for _ in range(a.depth - 1):
            layers += [stax.Conv(a.width, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()]
        layers += [stax.Flatten(), stax.Dense(1, W_std=2**0.5)]
        x = rng.randn(a.n, a.side, a.side, 3).astype(np.float32)
    init_fn, apply_fn, _ = stax.serial(*layers)
    _, params = init_fn(jax.random.PRNGKey(a.seed), x.shape)
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                                     implementation=a.implementation))
    x = jax.numpy.asarray(x)
    seconds = best_of(lambda: fn(x, x, params).block_until_ready(), a.repeats)
    return {"seconds": seconds, "pairs": a.n * a.n, "pairs_per_s": a.n * a.n / seconds}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["serve", "empirical"])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--arch", default="fc")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--implementation", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x64", action="store_true", help="serve: float64 cases")
    a = p.parse_args()
    if a.what == "serve":
        jax.config.update("jax_enable_x64", a.x64)
        return serve()
    out = bench_empirical(a)
    out.update(peer="neural-tangents 0.6.5", jax=jax.__version__, args=vars(a))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
