"""ntkrepro.blocks: the host block loop against a one-shot Gram (brute force), padding, mirroring, the pair
block plan and its memory."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntkrepro import blocks
from ntkrepro.blocks import CHUNK_ENTRIES, LANES, blockwise_on_host, pad_rows, plan_pair_blocks


def _pair_values(a, b):
    """A symmetric pair function with an output axis: (len(a), len(b), 2)."""
    return np.stack([np.add.outer(a, b) ** 2, np.multiply.outer(a, b)], axis=-1)


@given(n1=st.integers(1, 13), n2=st.integers(1, 13), b1=st.integers(1, 6), b2=st.integers(1, 6),
       symmetric=st.booleans())
def test_blocks_assemble_to_the_one_shot_gram(n1, n2, b1, b2, symmetric):
    rng = np.random.default_rng(n1 * 100 + n2)
    x1 = rng.normal(size=n1)
    x2 = x1 if symmetric else rng.normal(size=n2)
    if symmetric:
        n2, b2 = n1, b1
    calls = []

    def block(r0, c0):
        calls.append((r0, c0))
        a, b = pad_rows(x1[r0:r0 + b1], b1), pad_rows(x2[c0:c0 + b2], b2)
        assert a.shape == (b1,) and b.shape == (b2,)  # every block has one shape
        return _pair_values(a, b), np.add.outer(a, 2 * b)  # the second is not symmetric

    full, asym = blockwise_on_host(block, n1, n2, b1, b2, symmetric=symmetric,
                                   mirror=lambda v: np.swapaxes(v, 0, 1))
    np.testing.assert_array_equal(full, _pair_values(x1, x2))
    if symmetric:  # upper blocks only; the lower triangle is the mirror of the upper, bit for bit
        assert all(c0 >= r0 for r0, c0 in calls)
        upper = np.triu(np.add.outer(x1, 2 * x1))
        np.testing.assert_array_equal(asym, upper + np.triu(upper, 1).T)
    else:
        assert len(calls) == -(-n1 // b1) * -(-n2 // b2)
        np.testing.assert_array_equal(asym, np.add.outer(x1, 2 * x2))


def test_pad_rows_repeats_the_last_row():
    a = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(pad_rows(a, 5), np.array([[0, 1], [2, 3], [4, 5], [4, 5], [4, 5.0]]))
    assert pad_rows(a, 2) is a


def test_symmetric_needs_square_blocks():
    with pytest.raises(ValueError, match="square blocks"):
        blockwise_on_host(lambda r0, c0: (), 4, 4, 2, 3, symmetric=True)


@given(n1=st.integers(1, 600), n2=st.integers(1, 600), pairs=st.integers(1, 8192),
       entries=st.sampled_from([16, 1024, 2**20]), symmetric=st.booleans())
def test_block_plan(n1, n2, pairs, entries, symmetric):
    plan = plan_pair_blocks(n1, n2, pairs=pairs, entries_per_pair=entries, symmetric=symmetric)
    columns = n1 if symmetric else n2
    assert plan.b1 % (plan.rows_per_step * jax.device_count()) == 0
    assert plan.b2 <= max(1, math.isqrt(pairs)) and plan.b2 <= columns
    assert plan.b2 == columns or plan.b2 < LANES or plan.b2 % LANES == 0  # whole vectors
    if symmetric:
        assert plan.b1 == plan.b2
    else:
        assert plan.b1 * plan.b2 <= pairs + plan.b2 * plan.rows_per_step
    step = plan.rows_per_step * plan.b2 * entries
    assert plan.rows_per_step == 1 or step <= CHUNK_ENTRIES


def test_auto_pairs_follow_free_memory(monkeypatch):
    entries, itemsize, live = 1024, 4, 12
    per_pair = blocks.pair_block_bytes(1, entries, itemsize=itemsize, live_arrays=live)
    assert per_pair == live * entries * itemsize
    assert blocks.pair_block_bytes(10, entries, itemsize=itemsize, live_arrays=live) == 10 * per_pair
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 40 * per_pair)
    assert blocks.auto_pairs_per_block(entries, itemsize, live_arrays=live) == 10 * jax.device_count()
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 0)
    assert blocks.auto_pairs_per_block(entries, itemsize, live_arrays=live) == jax.device_count()
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": None)
    assert blocks.auto_pairs_per_block(entries, itemsize, live_arrays=live) == \
        blocks.MAX_PAIRS_PER_BLOCK * jax.device_count()


@pytest.mark.parametrize("symmetric", [False, True])
def test_block_plan_pads_little(symmetric):
    """n = 200 images of 32 x 32 at 4096 pairs per block: a square 64 x 64 cut would compute 256^2 pairs of
    the cross Gram (1.64x the 200^2 needed) and 10 upper blocks of 64^2 of the symmetric one (2.04x its
    200 * 201 / 2); the plan stays within 1.1x the vector-rounded cross Gram and 1.5x the upper triangle."""
    plan = plan_pair_blocks(200, 200, pairs=4096, entries_per_pair=1024, symmetric=symmetric)
    rows, columns = -(-200 // plan.b1), -(-200 // plan.b2)
    if symmetric:
        assert rows * (rows + 1) // 2 * plan.b1 * plan.b2 <= 1.5 * 200 * 201 / 2
    else:
        assert rows * plan.b1 * columns * plan.b2 <= 1.1 * 200 * 208


def test_kernel_jit_top_level_calls_and_composes_under_transforms():
    """A kernel compiled by ``kernel_jit`` gives the same values called directly (with the 512-bit vector option:
    a misspelt option would fail the compile) and inside a caller's jit, vmap and grad (where JAX refuses
    compiler options on a nested jit), and keeps static arguments static."""
    @functools.partial(blocks.kernel_jit, static_argnames=("power",))
    def f(x, *, power):
        return jnp.sum(jnp.sqrt(x) ** power)

    x = jnp.linspace(0.5, 2.0, 37)
    direct = f(x, power=3)
    np.testing.assert_allclose(direct, np.sum(np.sqrt(np.linspace(0.5, 2.0, 37)) ** 3), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda x: f(x, power=3))(x), direct, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda x: f(x, power=3))(jnp.stack([x, x])), [direct, direct], rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x: f(x, power=2))(x), np.ones(37), rtol=1e-6)  # d/dx sum(x) = 1
    assert "sqrt" in f.lower(x, power=3).compile().as_text()
