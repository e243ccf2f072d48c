"""ntkrepro.blocks: the host block loop against a one-shot Gram (brute force), padding, mirroring."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntkrepro.blocks import blockwise_on_host, pad_rows


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
