"""ntkrepro.blocks: the block plan is arithmetic (checked against the brute-force list of block pairs), and
a Gram larger than the memory available is refused before any compute or allocation — with the estimate
and the sizes that drive it — through the public kernel and Gram API (fc_kernels, the host block loop,
compute_gram)."""

import numpy as np
import pytest

from ntkrepro import blocks, gram
from ntkrepro.blocks import MemoryEstimateError
from ntkrepro.kernels.fc import fc_kernels


@pytest.mark.parametrize("count1", range(1, 8))
@pytest.mark.parametrize("count2", range(1, 8))
def test_tile_index_is_the_list_of_block_pairs(count1, count2):
    rows, cols = blocks.tile_index(count1, count2, symmetric=False)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(i, j) for i in range(count1)
                                                                    for j in range(count2)]
    if count1 == count2:
        rows, cols = blocks.tile_index(count1, count2, symmetric=True)
        pairs = [(i, j) for i in range(count1) for j in range(i, count1)]
        assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == pairs
        for k, (i, j) in enumerate(pairs):
            assert blocks.upper_position(i, j, count1) == k


def test_a_gram_beyond_memory_is_refused_before_any_compute():
    """The issue's example: 10^7 inputs used to build 1.9e8 tuples of block pairs, then fail allocating."""
    x = np.ones((10**7, 3))
    with pytest.raises(MemoryEstimateError) as err:
        fc_kernels(x, depth=3)
    message = str(err.value)
    assert "10000000 x 10000000 inputs" in message and "x1: 10000000 rows" in message
    assert "PB" in message and "refused before any compute" in message and "\n" not in message
    assert isinstance(err.value, ValueError)  # stages report it in one line


def test_refusal_follows_the_memory_available(monkeypatch):
    """fc Gram: 2 float64 arrays per pair, 3 copies while assembled = 48 bytes per pair."""
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 48 * 37 * 37)
    x = np.random.default_rng(0).standard_normal((37, 3))
    fc_kernels(x, depth=2)  # exactly fits
    with pytest.raises(MemoryEstimateError, match="38 x 38 inputs"):
        fc_kernels(np.random.default_rng(0).standard_normal((38, 3)), depth=2)
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": None)  # unknown: not refused
    fc_kernels(np.random.default_rng(0).standard_normal((39, 3)), depth=2)


def test_host_block_loop_checks_before_the_first_block_and_before_allocating(monkeypatch):
    calls = []

    def block(r0, c0):
        calls.append((r0, c0))
        return (np.ones((10, 10, 3)),)  # 3 float64 per pair = 24 bytes

    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 10**9)
    with pytest.raises(MemoryEstimateError, match="at least 4 bytes per pair"):
        blocks.blockwise_on_host(block, 10**5, 10**5, 10, 10, symmetric=True)  # >= 4e10 bytes
    assert calls == []
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 100 * 100 * 10)  # 10 bytes/pair
    with pytest.raises(MemoryEstimateError, match="24 bytes per pair"):
        blocks.blockwise_on_host(block, 100, 100, 10, 10, symmetric=True)
    assert calls == [(0, 0)]  # one block, no (100, 100, 3) result allocated
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 100 * 100 * 24)
    (full,) = blocks.blockwise_on_host(block, 100, 100, 10, 10, symmetric=True)
    assert full.shape == (100, 100, 3)


def test_compute_gram_is_refused_before_writing_or_computing(monkeypatch, tmp_path):
    x = np.random.default_rng(1).standard_normal((50, 3))
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 50 * 50 * 4 - 1)
    with pytest.raises(MemoryEstimateError, match="rows of x1: 50"):
        gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path, tile=16, progress=False)
    assert not (tmp_path / "gram").exists()
    # fits the lower bound (4 bytes per pair) but not the exact size (2 float64 arrays = 16 bytes per pair):
    # refused after its tiles, before the Gram is assembled
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 50 * 50 * 8)
    with pytest.raises(MemoryEstimateError, match="16 bytes per pair"):
        gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path, tile=16, progress=False)
    monkeypatch.setattr(blocks, "available_memory_bytes", lambda where="host": 50 * 50 * 16)
    g = gram.compute_gram(x, kernel="fc", kernel_kwargs={"depth": 2}, cache_root=tmp_path, tile=16, progress=False)
    assert g.computed_tiles == 0 and g.ntk.shape == (50, 50)  # the tiles were kept


def test_check_memory_names_the_estimate_and_its_driver():
    with pytest.raises(MemoryEstimateError) as err:
        blocks.check_memory(blocks.full_batch_mlp_bytes(10**7, d_in=2, width=1000, depth=4),
                            what="jacot2018/fig1: full-batch gradient descent", driver="data.n_train=10000000",
                            available=8 * 10**9)
    message = str(err.value)
    assert "data.n_train=10000000" in message and "jacot2018/fig1" in message and "8.0 GB available" in message
    blocks.check_memory(10**6, what="x", driver="y", available=10**6)  # equal: allowed


def test_estimators_scale_with_their_sizes():
    one = blocks.full_batch_mlp_bytes(1, d_in=2, width=100, depth=4)
    assert blocks.full_batch_mlp_bytes(1000, d_in=2, width=100, depth=4) == 1000 * one
    assert blocks.full_batch_mlp_bytes(1, d_in=2, width=100, depth=4, itemsize=4) * 2 == one
    # at least every layer's activations of every example are kept for the backward pass
    assert one >= 8 * 100 * 3
    assert blocks.gram_bytes(10, 20, arrays=2, itemsize=8, copies=1) == np.zeros((2, 10, 20)).nbytes


def test_available_memory_is_positive_here():
    host = blocks.available_memory_bytes("host")
    assert host is None or host > 0
    with pytest.raises(ValueError, match="host"):
        blocks.available_memory_bytes("disk")
