"""neural-tangents 0.6.5 as a benchmark peer. Runs ONLY in its own venv (benchmarks/.venv-nt:
jax 0.4.23, numpy < 2); never imported by the project. Prints one JSON object of timings.

    benchmarks/.venv-nt/bin/python benchmarks/nt_peer.py fc --n 4000 --d 3072 --depth 10 --dtype float32
    benchmarks/.venv-nt/bin/python benchmarks/nt_peer.py cntk --readout vanilla --depth 6 --n 64
    benchmarks/.venv-nt/bin/python benchmarks/nt_peer.py empirical --arch fc --width 1024 --depth 4 --n 1000

Inputs come from numpy's legacy RandomState(seed) (bit-stable across numpy versions), so the project
side (benchmarks/run.py) builds the very same arrays.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402


def inputs(kind, n, d=None, side=32, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    if kind == "vectors":
        return rng.randn(n, d)
    return rng.randn(n, side, side, channels)


def best_of(fn, repeats):
    fn()  # compile + warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_fc(a):
    from neural_tangents import stax

    if a.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    layers = []
    for _ in range(a.depth - 1):
        layers += [stax.Dense(1, W_std=a.sigma_w2**0.5, b_std=a.sigma_b2**0.5), stax.Relu()]
    layers += [stax.Dense(1, W_std=a.sigma_w2**0.5, b_std=a.sigma_b2**0.5)]
    kernel_fn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
    x = jax.numpy.asarray(inputs("vectors", a.n, a.d, seed=a.seed).astype(a.dtype))
    seconds = best_of(lambda: kernel_fn(x, x, "ntk").block_until_ready(), a.repeats)
    return {"seconds": seconds, "entries": a.n * a.n}


def bench_cntk(a):
    from neural_tangents import stax

    layers = []
    for _ in range(a.depth - 1):
        layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()]
    readout = stax.Flatten() if a.readout == "vanilla" else stax.GlobalAvgPool()
    layers += [readout, stax.Dense(1, W_std=2**0.5)]
    kernel_fn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
    x = jax.numpy.asarray(inputs("images", a.n, side=a.side, seed=a.seed).astype(np.float32))
    seconds = best_of(lambda: kernel_fn(x, x, "ntk").block_until_ready(), a.repeats)
    return {"seconds": seconds, "pairs": a.n * a.n, "pairs_per_s": a.n * a.n / seconds}


def bench_empirical(a):
    import neural_tangents as nt
    from neural_tangents import stax

    if a.arch == "fc":
        layers = []
        for _ in range(a.depth - 1):
            layers += [stax.Dense(a.width, W_std=2**0.5), stax.Relu()]
        layers += [stax.Dense(1, W_std=2**0.5)]
        x = inputs("vectors", a.n, a.d, seed=a.seed).astype(np.float32)
    else:
        layers = []
        for _ in range(a.depth - 1):
            layers += [stax.Conv(a.width, (3, 3), padding="SAME", W_std=2**0.5), stax.Relu()]
        layers += [stax.Flatten(), stax.Dense(1, W_std=2**0.5)]
        x = inputs("images", a.n, side=a.side, seed=a.seed).astype(np.float32)
    init_fn, apply_fn, _ = stax.serial(*layers)
    _, params = init_fn(jax.random.PRNGKey(a.seed), x.shape)
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                                     implementation=a.implementation))
    x = jax.numpy.asarray(x)
    seconds = best_of(lambda: fn(x, x, params).block_until_ready(), a.repeats)
    return {"seconds": seconds, "pairs": a.n * a.n, "pairs_per_s": a.n * a.n / seconds}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["fc", "cntk", "empirical"])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--sigma-w2", dest="sigma_w2", type=float, default=2.0)
    p.add_argument("--sigma-b2", dest="sigma_b2", type=float, default=0.0)
    p.add_argument("--readout", default="vanilla")
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--arch", default="fc")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--implementation", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = {"fc": bench_fc, "cntk": bench_cntk, "empirical": bench_empirical}[a.what](a)
    out.update(peer="neural-tangents 0.6.5", jax=jax.__version__, args=vars(a))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
