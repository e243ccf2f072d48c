"""CNTK (ntkrepro.kernels.conv) against loop references written from the paper's equations (Arora et al.
2019 sec. 4 with the authors' last layer), the offset-0 shortcut against the full 4-D computation, the
analytic CNTK against wide finite CNNs, the layers composed by hand, the NNGP-only path, invariants,
multi-device execution, and bad input."""

import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkrepro import blocks
from ntkrepro.kernels import conv
from ntkrepro.kernels.conv import cntk
from ntkrepro.kernels.gaussian import variance_factors

# ---------------------------------------------------------------- references (plain numpy, explicit loops)


def relu_expectations(s11, s12, s22):
    """Arc-cosine kernels (Arora eqs. 17-20) written out: E[relu relu], E[relu' relu']."""
    norm = np.sqrt(s11 * s22)
    lam = np.clip(s12 / np.where(norm > 0, norm, 1.0), -1.0, 1.0)
    angle = np.pi - np.arccos(lam)
    return norm * (lam * angle + np.sqrt(1.0 - lam**2)) / (2 * np.pi), angle / (2 * np.pi)


def erf_expectations(s11, s12, s22):
    """Williams (1997): E erf erf and E erf' erf'."""
    denom = (1 + 2 * s11) * (1 + 2 * s22)
    return (2 / np.pi) * np.arcsin(2 * s12 / np.sqrt(denom)), (4 / np.pi) / np.sqrt(denom - 4 * s12**2)


def trace_op(m, q=3):
    """[L(M)]_{ij,i'j'} = sum_{a,b} M_{i+a, j+b, i'+a, j'+b}, out-of-range terms 0: one loop per shift
    (a, b) over the index ranges where both i + a, i' + a (and j + b, j' + b) are in range."""
    p, w = m.shape[:2]
    r = q // 2
    out = np.zeros_like(m)
    for a in range(-r, r + 1):
        for b in range(-r, r + 1):
            i = slice(max(0, -a), min(p, p - a))
            j = slice(max(0, -b), min(w, w - b))
            si = slice(max(0, a), min(p, p + a))
            sj = slice(max(0, b), min(w, w + b))
            out[i, j, i, j] += m[si, sj, si, sj]
    return out


def diag4(t):
    return np.einsum("ijij->ij", t)


def cntk_reference(x, y, *, depth, readout, fix, expect=relu_expectations, c_sigma=2.0, q=3):
    """Arora et al. sec. 4.1 / 4.2, full (P, Q, P, Q) tensors; last layer without trace operator [CODE]."""
    scale = c_sigma / q**2
    sig = {k: trace_op(np.einsum("ija,kla->ijkl", a, b), q) for k, (a, b) in
           {"xy": (x, y), "xx": (x, x), "yy": (y, y)}.items()}
    theta = np.zeros_like(sig["xy"]) if fix else sig["xy"].copy()
    for h in range(1, depth):
        dx, dy = diag4(sig["xx"]), diag4(sig["yy"])
        pairs = {"xy": (dx, dy), "xx": (dx, dx), "yy": (dy, dy)}
        k = {n: expect(a[:, :, None, None], sig[n], b[None, None]) for n, (a, b) in pairs.items()}
        kk, kd = k["xy"]
        if h < depth - 1:
            theta = scale * trace_op(kd * theta + kk, q)
            sig = {n: scale * trace_op(k[n][0], q) for n in k}
        else:
            nngp, ntk = scale * kk, scale * (kd * theta + (0 if fix else kk))
    if readout == "gap":
        return nngp.mean(), ntk.mean()
    return np.trace(nngp.reshape(x.shape[0] * x.shape[1], -1)), np.trace(ntk.reshape(x.shape[0] * x.shape[1], -1))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((3, 4, 4, 2))


def reference_gram(x, **kw):
    n = len(x)
    out = np.zeros((2, n, n))
    for a in range(n):
        for b in range(n):
            out[:, a, b] = cntk_reference(x[a], x[b], **kw)
    return out


CASES = [(2, "vanilla", False), (2, "gap", False), (3, "vanilla", False), (3, "vanilla", True),
         (3, "gap", False), (3, "gap", True), (4, "gap", True)]


@pytest.fixture(scope="module")
def references(images):
    return {c: reference_gram(images, depth=c[0], readout=c[1], fix=c[2]) for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"d{d}-{r}-{'fixed' if f else 'trained'}" for d, r, f in CASES])
def test_cntk_matches_loop_reference(images, references, case):
    depth, readout, fix = case
    nngp, ntk = references[case]
    got = cntk(images, depth=depth, readout=readout, fix_first_last=fix, dtype=jnp.float64)
    np.testing.assert_allclose(got.nngp, nngp, rtol=1e-11)
    np.testing.assert_allclose(got.ntk, ntk, rtol=1e-11)
    fast = cntk(images, depth=depth, readout=readout, fix_first_last=fix)  # float32: polynomial arccos
    assert fast.ntk.dtype == jnp.float32
    np.testing.assert_allclose(fast.ntk, ntk, rtol=2e-5)
    np.testing.assert_allclose(fast.nngp, nngp, rtol=2e-5)


def test_cntk_other_activation_uses_its_c_sigma(images):
    c_sigma = 1.0 / ((2 / np.pi) * np.arcsin(2 / 3))  # 1 / E[erf(z)^2]
    got = cntk(images, depth=3, activation="erf", dtype=jnp.float64)
    ref = reference_gram(images, depth=3, readout="vanilla", fix=False, expect=erf_expectations,
                         c_sigma=c_sigma)
    np.testing.assert_allclose(got.ntk, ref[1], rtol=1e-10)
    np.testing.assert_allclose(got.nngp, ref[0], rtol=1e-10)


def full_4d_cntk(x1, x2, *, depth, fix):
    """A second algorithm: the dense (P, Q, P, Q) recursion of every pair with the trace operator as q^2 = 9
    shifted adds of the zero-padded tensor, ReLU, float64 -> (vanilla (nngp, ntk), gap (nngp, ntk))."""
    relu = conv.get_activation("relu")
    p_side, q_side = x1.shape[1:3]

    def trace(m):
        padded = jnp.pad(m, [(0, 0), (0, 0)] + [(1, 1)] * 4)
        return sum(padded[..., a:a + p_side, b:b + q_side, a:a + p_side, b:b + q_side]
                   for a in range(3) for b in range(3))

    d1 = np.moveaxis(np.asarray(conv.cntk_diagonals(x1, depth=depth, dtype=jnp.float64)), 1, 0)
    d2 = np.moveaxis(np.asarray(conv.cntk_diagonals(x2, depth=depth, dtype=jnp.float64)), 1, 0)
    sigma = trace(jnp.einsum("aijc,bklc->abijkl", x1, x2))
    theta = jnp.zeros_like(sigma) if fix else sigma
    for h in range(depth - 1):
        k, kdot = relu.expectations(d1[h][:, None, :, :, None, None], sigma, d2[h][None, :, None, None, :, :])
        if h == depth - 2:
            break
        sigma, theta = 2 / 9 * trace(k), 2 / 9 * trace(kdot * theta + k)
    last = kdot * theta if fix else kdot * theta + k
    vanilla = tuple(2 / 9 * np.einsum("abijij->ab", a) for a in (k, last))
    return vanilla, tuple(2 / 9 * np.mean(a, axis=(2, 3, 4, 5)) for a in (k, last))


@pytest.mark.parametrize("fix", [False, True])
def test_offset0_vanilla_and_offset_planes_gap_equal_the_full_4d_computation(fix):
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((2, 5, 6, 3)), rng.standard_normal((3, 5, 6, 3))
    vanilla, gap = full_4d_cntk(x1, x2, depth=5, fix=fix)
    offset0 = cntk(x1, x2, depth=5, fix_first_last=fix, dtype=jnp.float64)
    np.testing.assert_allclose(offset0.ntk, vanilla[1], rtol=1e-12)
    np.testing.assert_allclose(offset0.nngp, vanilla[0], rtol=1e-12)
    planes = cntk(x1, x2, depth=5, readout="gap", fix_first_last=fix, dtype=jnp.float64)
    np.testing.assert_allclose(planes.ntk, gap[1], rtol=1e-12)
    np.testing.assert_allclose(planes.nngp, gap[0], rtol=1e-12)


@pytest.mark.parametrize("shift", [0, 1, 3, 4])
def test_plane_masks_cut_the_window_at_the_wrap_point(shift):
    ok = np.asarray(conv.plane_masks(shift, 5, filter_size=3))  # rows: neighbour offset -1, 0, +1
    for i in range(5):
        for a, offset in enumerate((-1, 0, 1)):
            j = i + offset
            same_side = (i < 5 - shift) == (j < 5 - shift)
            assert ok[a, i] == (0 <= j < 5 and same_side), (shift, i, offset)


@pytest.mark.parametrize("with_ntk", [False, True])
def test_packed_state_unpacks_to_itself_and_its_trace_is_the_trace_of_each_part(with_ntk):
    """A packed kernel state unpacks to the same parts, and the offset-plane trace operator on it (complex with
    the NTK) equals the trace of each part alone (the layers apply L once to the packed state)."""
    rng = np.random.default_rng(4)
    nngp, ntk = (rng.standard_normal((2, 5, 6, 8)) for _ in range(2))
    kernel = conv.PlaneKernel(nngp, ntk if with_ntk else None)
    state = conv.packed(kernel)
    back = conv.unpacked(state)
    np.testing.assert_array_equal(back.nngp, nngp)
    assert (back.ntk is None) == (not with_ntk)
    if with_ntk:
        np.testing.assert_array_equal(back.ntk, ntk)
    shifts = np.arange(8) % 5
    ok_i = jnp.moveaxis(jax.vmap(lambda u: conv.plane_masks(u, 5, filter_size=3, dtype=jnp.float64))(shifts), 0, -1)
    ok_j = jnp.moveaxis(jax.vmap(lambda v: conv.plane_masks(v, 6, filter_size=3, dtype=jnp.float64))(shifts), 0, -1)
    traced = conv.unpacked(conv.plane_box_sum(state, ok_i, ok_j, filter_size=3))
    for part, ref in ((traced.nngp, nngp), (traced.ntk, ntk if with_ntk else None)):
        if ref is not None:
            alone = conv.plane_box_sum(ref, ok_i, ok_j, filter_size=3)
            np.testing.assert_allclose(part, alone, rtol=1e-14)


def test_plane_box_sum_is_the_cyclic_window_sum():
    """The trace on cyclic offset planes against brute force: plane (u, v) of a (P, Q, P, Q) tensor M
    (plane[i, j] = M[i, j, (i + u) % P, (j + v) % Q]) traced is the same plane of L(M), L summed term by
    term over in-range windows (Arora eq. 7): no window crosses a plane's wrap point."""
    rng = np.random.default_rng(5)
    p_side, q_side = 4, 5
    m = rng.standard_normal((p_side, q_side, p_side, q_side))
    traced = np.zeros_like(m)
    for i, j, i2, j2 in np.ndindex(m.shape):
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                if 0 <= i + a < p_side and 0 <= i2 + a < p_side and 0 <= j + b < q_side and 0 <= j2 + b < q_side:
                    traced[i, j, i2, j2] += m[i + a, j + b, i2 + a, j2 + b]
    uv = np.array([(u, v) for u in range(p_side) for v in range(q_side)])
    ii, jj = np.arange(p_side)[:, None], np.arange(q_side)[None, :]

    def planes(t):  # (P, Q, P, Q) -> (1, P, Q, planes)
        return np.stack([t[ii, jj, (ii + u) % p_side, (jj + v) % q_side] for u, v in uv], axis=-1)[None]

    ok_i = jnp.moveaxis(jax.vmap(lambda u: conv.plane_masks(u, p_side, filter_size=3, dtype=jnp.float64))(uv[:, 0]),
                        0, -1)
    ok_j = jnp.moveaxis(jax.vmap(lambda v: conv.plane_masks(v, q_side, filter_size=3, dtype=jnp.float64))(uv[:, 1]),
                        0, -1)
    out = np.asarray(conv.plane_box_sum(jnp.asarray(planes(m)), ok_i, ok_j, filter_size=3))
    np.testing.assert_allclose(out, planes(traced), rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- analytic vs a wide finite CNN


def _conv2d(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _cnn_apply(params, x, *, readout, channels):
    """Arora sec. 4.1 / 4.2 CNN in NTK parameterization: N(0, 1) weights, sqrt(c_sigma / (C q^2)) after
    every ReLU; vanilla: dense readout over all (i, j, channel); GAP: dense readout of the pixel mean."""
    post = math.sqrt(2.0 / (channels * 9))
    h = _conv2d(x, params["w"][0])
    for w in params["w"][1:]:
        h = _conv2d(post * jax.nn.relu(h), w)
    a = post * jax.nn.relu(h)
    if readout == "vanilla":
        return jnp.einsum("npqc,pqc->n", a, params["out"])
    return jnp.mean(a, axis=(1, 2)) @ params["out"]


def _empirical_ntk(x, *, depth, readout, fix, channels, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), depth)
    shapes = [(3, 3, x.shape[-1], channels)] + [(3, 3, channels, channels)] * (depth - 2)
    out_shape = (*x.shape[1:3], channels) if readout == "vanilla" else (channels,)
    params = {"w": [jax.random.normal(k, s, x.dtype) for k, s in zip(keys, shapes, strict=False)],
              "out": jax.random.normal(keys[-1], out_shape, x.dtype)}
    jac = jax.jacrev(lambda p: _cnn_apply(p, x, readout=readout, channels=channels))(params)
    leaves = jac["w"][1:] if fix else [*jac["w"], jac["out"]]  # fixed: first conv and readout untrained
    flat = [j.reshape(x.shape[0], -1) for j in leaves]
    return sum(f @ f.T for f in flat)


@pytest.mark.parametrize("readout,fix,seeds,tol", [("vanilla", False, 3, 0.05), ("gap", True, 6, 0.08)])
def test_cntk_matches_wide_cnn_empirical_ntk(readout, fix, seeds, tol):
    """Arora et al. Thm. 3.1: the empirical NTK of a CNN with C channels scatters around the CNTK with
    relative deviations ~ a / sqrt(C). C = 512; mean over seeds. Measured single-seed errors: vanilla
    ~2-3%; GAP with fixed first / last layer 3-19% (std ~7% ~ sqrt(2 / C): only one layer is trained and
    its gradient is weighted by the fixed readout's chi-square W_out^2). Tolerances: about 3 standard
    errors of the seed mean (vanilla 5%, GAP 8% with 6 seeds)."""
    x = np.random.default_rng(7).standard_normal((3, 4, 4, 2)).astype(np.float32)
    emp = np.mean([_empirical_ntk(jnp.asarray(x), depth=3, readout=readout, fix=fix, channels=512, seed=s)
                   for s in range(seeds)], axis=0)
    exact = np.asarray(cntk(x, depth=3, readout=readout, fix_first_last=fix).ntk)
    rel = np.linalg.norm(emp - exact) / np.linalg.norm(exact)
    assert rel < tol, rel


# ---------------------------------------------------------------- the layers and the NNGP-only path


def test_layers_composed_by_hand_give_cntk_and_its_diagonals(images):
    """The public layers applied one by one (a Python loop, no scan) to the offset-0 maps of every pair:
    the x-x states' Sigma are cntk_diagonals, the readout is the vanilla cntk."""
    x = images.astype(np.float64)
    depth, act = 4, conv.get_activation("relu")
    trace = lambda m: conv.box_sum(m, filter_size=3)  # noqa: E731
    diagonals = np.asarray(conv.cntk_diagonals(x, depth=depth, dtype=jnp.float64))
    ref = cntk(x, depth=depth, fix_first_last=True, dtype=jnp.float64)
    for a in range(len(x)):
        for b in range(len(x)):
            products = np.sum(x[a] * x[b], axis=-1)
            kernel = conv.conv_input(products, trace=trace, trained=False)
            for h in range(depth - 1):
                if a == b:
                    np.testing.assert_allclose(kernel.nngp, diagonals[a, h], rtol=1e-13)
                factors = (variance_factors(act, diagonals[a, h]), variance_factors(act, diagonals[b, h]))
                kernel = conv.activation_layer(kernel, *factors, activation=act)
                if h < depth - 2:
                    kernel = conv.conv_layer(kernel, trace=trace, scale=2.0 / 9)
            out = conv.dense_readout(kernel, scale=2.0 / 9, trained=False, axes=(0, 1))
            np.testing.assert_allclose(out.nngp, ref.nngp[a, b], rtol=1e-12)
            np.testing.assert_allclose(out.ntk, ref.ntk[a, b], rtol=1e-12)


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
def test_nngp_only_is_the_nngp_of_both(images, readout):
    both = cntk(images, images[:2], depth=3, readout=readout, dtype=jnp.float64)
    for get in ("nngp", ("nngp",)):
        only = cntk(images, images[:2], depth=3, readout=readout, dtype=jnp.float64, get=get)
        assert only.ntk is None
        np.testing.assert_allclose(only.nngp, both.nngp, rtol=1e-14)  # XLA may fuse the NNGP differently
    sym = cntk(images, depth=3, readout=readout, get="nngp", batch_size=4)
    np.testing.assert_allclose(sym.nngp, cntk(images, depth=3, readout=readout).nngp, rtol=1e-6)
    np.testing.assert_array_equal(sym.nngp, sym.nngp.T)
    ntk_asked = cntk(images, depth=3, readout=readout, dtype=jnp.float64, get="ntk")
    np.testing.assert_array_equal(ntk_asked.ntk, cntk(images, depth=3, readout=readout, dtype=jnp.float64).ntk)


def test_cntk_block_is_a_block_of_the_gram(images):
    """The public block (what cntk evaluates its Gram with) on a row and a column subset: that block of the
    Gram, and for get="nngp" its NNGP alone; a row step that does not divide the rows is refused."""
    x = images.astype(np.float64)
    d = conv.cntk_diagonals(x, depth=3, dtype=jnp.float64)
    gram = cntk(x, depth=3, readout="gap", dtype=jnp.float64)
    nngp, ntk = conv.cntk_block(x[:2], x[1:], d[:2], d[1:], readout="gap", rows_per_step=2 // jax.device_count())
    np.testing.assert_allclose(ntk, gram.ntk[:2, 1:], rtol=1e-13)
    np.testing.assert_allclose(nngp, gram.nngp[:2, 1:], rtol=1e-13)
    (only,) = conv.cntk_block(x[:2], x[1:], d[:2], d[1:], readout="gap", get="nngp")
    np.testing.assert_allclose(only, gram.nngp[:2, 1:], rtol=1e-13)
    conv.layer_scale.cache_clear()  # the layer scale first computed inside a trace
    (jitted,) = jax.jit(lambda *a: conv.cntk_block(*a, readout="gap", get="nngp"))(x[:2], x[1:], d[:2], d[1:])
    np.testing.assert_allclose(jitted, gram.nngp[:2, 1:], rtol=1e-13)
    with pytest.raises(ValueError, match="rows_per_step"):
        conv.cntk_block(x[:3], x, d[:3], d, rows_per_step=2)
    with pytest.raises(ValueError, match="readout"):
        conv.cntk_block(x, x, d, d, readout="max")


def test_gap_planes_side_by_side_equal_planes_in_turn(monkeypatch):
    """Offset planes one by one (a minor axis of 16 lanes: GROUP_LANES = 16), several side by side (the
    default), and a block of 5 columns: the same GAP kernel."""
    x = np.random.default_rng(4).standard_normal((16, 4, 4, 2))
    grouped = cntk(x, depth=3, readout="gap", fix_first_last=True, dtype=jnp.float64)
    few = cntk(x, x[:5], depth=3, readout="gap", fix_first_last=True, dtype=jnp.float64)
    assert conv.plane_group(4, 4, 16, rows=2) == 16 and conv.plane_group(4, 4, 5, rows=2) > 1
    monkeypatch.setattr(conv, "GROUP_LANES", 16)
    jax.clear_caches()  # the jitted block reads GROUP_LANES when traced
    assert conv.plane_group(4, 4, 16, rows=2) == 1
    one_by_one = cntk(x, depth=3, readout="gap", fix_first_last=True, dtype=jnp.float64)
    jax.clear_caches()
    np.testing.assert_allclose(grouped.ntk, one_by_one.ntk, rtol=1e-13)
    np.testing.assert_allclose(grouped.nngp, one_by_one.nngp, rtol=1e-13)
    np.testing.assert_allclose(few.ntk, one_by_one.ntk[:, :5], rtol=1e-13)
    np.testing.assert_allclose(few.nngp, one_by_one.nngp[:, :5], rtol=1e-13)


def test_gap_rows_per_step_widest_minor_axis_within_a_chunk():
    """Two rows per step with 16 planes of 16 columns side by side (256 lanes, 2^19 entries); a Gram too
    wide for planes side by side keeps its steps within CHUNK_ENTRIES; one row only if nothing else fits."""
    assert conv.gap_rows_per_step(32, 32, 16, 16) == 2
    assert conv.plane_group(32, 32, 16, rows=2) == 16
    r = conv.gap_rows_per_step(32, 32, 200, 200)
    assert r == 2 and r * 32 * 32 * 200 * conv.plane_group(32, 32, 200, rows=r) <= conv.CHUNK_ENTRIES
    assert conv.gap_rows_per_step(32, 32, 1024, 8) == 1
    assert conv.plane_group(28, 28, 10, rows=2) == 14  # divides Q = 28: one dynamic window per group


# ---------------------------------------------------------------- invariants, batching, devices


def test_blocks_chunks_and_padding_do_not_change_values(images):
    x = np.concatenate([images, images[::-1] * 0.5])  # 6 images
    ref = cntk(x, depth=3, readout="vanilla", dtype=jnp.float64, batch_size=4096)
    for bs in (1, 4, 7):
        np.testing.assert_allclose(cntk(x, depth=3, dtype=jnp.float64, batch_size=bs).ntk, ref.ntk, rtol=1e-13)
    cross = cntk(x, x[:5], depth=3, dtype=jnp.float64, batch_size=3)
    np.testing.assert_allclose(cross.ntk, ref.ntk[:, :5], rtol=1e-13)
    gap = cntk(x, depth=3, readout="gap", dtype=jnp.float64, batch_size=2)
    gap_cross = cntk(x, x, depth=3, readout="gap", dtype=jnp.float64, batch_size=5)
    np.testing.assert_allclose(gap.ntk, gap_cross.ntk, rtol=1e-13)
    np.testing.assert_array_equal(gap.ntk, gap.ntk.T)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), readout=st.sampled_from(["vanilla", "gap"]), fix=st.booleans(),
       scale=st.floats(0.1, 10.0))
def test_cntk_gram_symmetric_psd_and_degree_two_homogeneous(seed, readout, fix, scale):
    x = np.random.default_rng(seed).standard_normal((5, 3, 4, 2))
    k = cntk(x, depth=3, readout=readout, fix_first_last=fix, dtype=jnp.float64)
    ntk = np.asarray(k.ntk)
    np.testing.assert_array_equal(ntk, ntk.T)
    assert np.linalg.eigvalsh(ntk).min() > -1e-10 * np.abs(ntk).max()
    scaled = cntk(scale * x, depth=3, readout=readout, fix_first_last=fix, dtype=jnp.float64)
    np.testing.assert_allclose(scaled.ntk, scale**2 * ntk, rtol=1e-10)  # ReLU: positively homogeneous


def test_multi_device_matches_single_device(tmp_path):
    """Pair blocks sharded over 2 forced host devices give the single-device values."""
    x = np.random.default_rng(5).standard_normal((5, 4, 4, 2))
    out = run_on_two_devices(tmp_path, {"x": x}, """
        {"v": cntk(x, depth=3, dtype=jnp.float64, batch_size=4).ntk,
         "g": cntk(x, x[:3], depth=3, readout="gap", dtype=jnp.float64, batch_size=2).ntk}
    """, imports="from ntkrepro.kernels.conv import cntk")
    np.testing.assert_allclose(out["v"], cntk(x, depth=3, dtype=jnp.float64).ntk, rtol=1e-13)
    np.testing.assert_allclose(out["g"], cntk(x, x[:3], depth=3, readout="gap", dtype=jnp.float64).ntk,
                               rtol=1e-13)


def run_on_two_devices(tmp_path, arrays: dict, expression: str, *, imports: str) -> dict:
    """Evaluate ``expression`` (a dict of arrays, over the saved ``arrays`` by name) in a fresh Python with
    2 forced host devices; returns the dict as lists."""
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    loads = "; ".join(f"{name} = np.load({str(tmp_path / (name + '.npy'))!r})" for name in arrays)
    script = "\n".join(["import json, numpy as np, jax, jax.numpy as jnp", imports, loads,
                        f"out = {textwrap.dedent(expression).strip()}",
                        "print(json.dumps({'devices': jax.device_count(), "
                        "**{k: np.asarray(v).tolist() for k, v in out.items()}}))"])
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 2
    return out


def test_auto_batch_rule_and_block_memory():
    assert conv.auto_pairs_per_batch(1024, 4) >= 1
    assert conv.auto_pairs_per_batch(1, 4) == blocks.MAX_PAIRS_PER_BLOCK * jax.device_count()
    assert conv.pair_block_bytes(256, 32 * 32) == 256 * conv.LIVE_ARRAYS * 32 * 32 * 4
    assert conv.pair_block_bytes(1, 8 * 8, itemsize=8) == conv.LIVE_ARRAYS * 8 * 8 * 8


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,msg", [
    ({"x2": np.zeros((2, 5, 4, 2))}, "image shapes differ"),
    ({"x2": np.zeros((2, 4, 4, 3))}, "image shapes differ"),
    ({"filter_size": 2}, "odd"),
    ({"filter_size": 0}, "filter_size"),
    ({"depth": 1}, "depth"),
    ({"depth": 2, "fix_first_last": True}, "depth >= 3"),
    ({"readout": "max"}, "readout"),
    ({"activation": "nope"}, "activation"),
    ({"dtype": jnp.int32}, "dtype"),
    ({"batch_size": 0}, "batch_size"),
    ({"get": "kernel"}, "get must be"),
    ({"get": ()}, "get must be"),
])
def test_cntk_bad_input(images, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        cntk(images, **{"depth": 3, **kwargs})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cntk_non_finite_pixels(images, bad):
    x = images.copy()
    x[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        cntk(x, depth=3)
    with pytest.raises(ValueError, match="non-finite"):
        cntk(images, x, depth=3)


def test_cntk_rejects_non_image_arrays():
    with pytest.raises(ValueError, match=r"\(n, P, Q, C\)"):
        cntk(np.ones((3, 4, 4)), depth=3)


@settings(max_examples=20, deadline=None)
@given(p_side=st.integers(1, 5), q_side=st.integers(1, 5), seed=st.integers(0, 10_000), data=st.data())
def test_group_planes_are_the_rolled_columns(p_side, q_side, seed, data):
    """A group of offset planes side by side is each plane's columns rolled by (u, v) (np.roll, the definition
    of plane u * Q + v), for every admissible group size (a run of plane rows or part of one) and start."""
    planes = p_side * q_side
    groups = [g for g in range(1, planes + 1) if planes % g == 0 and (q_side % g == 0 or g % q_side == 0)]
    group = data.draw(st.sampled_from(groups))
    first = data.draw(st.sampled_from(range(0, planes, group)))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, p_side, q_side, 3)).astype(np.float32)  # (..., P, Q, b): axes (1, 2)
    got = np.asarray(conv.group_planes(jnp.asarray(np.tile(a, (1, 2, 2, 1))), (1, 2), jnp.int32(first), group,
                                       p_side, q_side))
    want = np.concatenate([np.roll(a, (-(k // q_side), -(k % q_side)), axis=(1, 2))
                           for k in range(first, first + group)], axis=-1)
    np.testing.assert_array_equal(got, want)
