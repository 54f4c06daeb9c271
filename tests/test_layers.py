"""Tests for softmax_jax.layers: dense, low-rank, PHM and Fastfood output layers, and the FWHT."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import layers

HYPER = {"dense": {}, "low_rank": {"rank": 2}, "phm": {"n": 2}, "fastfood": {}}


def _init(name, d, q, key=0, **kw):
  layer = layers.LAYERS[name]
  return layer.init(jax.random.key(key), d, q, **(kw or HYPER[name]))


def _x(shape, seed=0, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# --- FWHT ----------------------------------------------------------------------------------------


def test_fwht_hand_computed():
  # H_4 rows: (1,1,1,1), (1,-1,1,-1), (1,1,-1,-1), (1,-1,-1,1).
  np.testing.assert_array_equal(jax.jit(layers.fwht)(jnp.array([1.0, 2.0, 3.0, 4.0])),
                                [10.0, -2.0, -4.0, 0.0])
  np.testing.assert_array_equal(layers.fwht(jnp.array([5.0])), [5.0])  # H_1 = [1]


@pytest.mark.parametrize("n", [1, 2, 16, 1024])
def test_fwht_equals_hadamard_matmul(n):
  x = _x((3, 2, n), seed=n)
  H = scipy.linalg.hadamard(n).astype(np.float64)
  np.testing.assert_allclose(layers.fwht(x), x.astype(np.float64) @ H,
                             rtol=1e-5, atol=1e-4 * np.sqrt(n))
  # H H = n I: applying it twice scales by n.
  np.testing.assert_allclose(layers.fwht(layers.fwht(x)), n * x, rtol=1e-5, atol=1e-4 * n)


def test_fwht_grad():
  x = _x((2, 16), scale=3.0)  # max|x| > 1: the rescaling is active
  check_grads(layers.fwht, (x,), order=1, modes=("fwd", "rev"), eps=1e-2)


def test_fwht_extreme_inputs():
  x = jnp.array([[1e4, -1e4, 1e4, 1e4], [-1e4, -1e4, -1e4, -1e4]])
  np.testing.assert_array_equal(layers.fwht(x), np.asarray(x) @ scipy.linalg.hadamard(4))
  big = jnp.array([[3e38, 3e38, -3e38, 3e38], [3e38, -3e38, 3e38, -3e38], [3e38, 0, 0, 0]])
  out = np.asarray(jax.jit(layers.fwht)(big))
  assert not np.isnan(out).any()  # a plain butterfly gives inf - inf = NaN here
  np.testing.assert_array_equal(out[0], [np.inf, -np.inf, np.inf, np.inf])  # true: ±6e38
  np.testing.assert_array_equal(out[1], [0.0, np.inf, 0.0, 0.0])  # exact zeros survive
  np.testing.assert_allclose(out[2], [3e38] * 4)


def test_fwht_bad_input():
  with pytest.raises(ValueError, match=r"power of two.*\(3, 12\)"):
    layers.fwht(np.zeros((3, 12), np.float32))
  with pytest.raises(ValueError, match=r"shape \(\)"):
    layers.fwht(np.float32(1.0))
  with pytest.raises(TypeError, match="int32"):
    layers.fwht(np.ones(4, np.int32))


# --- shapes, counts, formulas --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(layers.LAYERS))
def test_shapes_per_example_and_batched(name):
  d, q = 12, 6
  params = _init(name, d, q)
  apply = jax.jit(layers.LAYERS[name].apply)
  x = _x((2, 3, d))
  assert apply(params, x[0, 0]).shape == (q,)
  assert apply(params, x[0]).shape == (3, q)
  out = apply(params, x)
  assert out.shape == (2, 3, q) and out.dtype == jnp.float32
  # The batch is the per-example function mapped: row by row gives the same numbers.
  rows = np.stack([apply(params, x[i, j]) for i in range(2) for j in range(3)]).reshape(2, 3, q)
  np.testing.assert_allclose(out, rows, rtol=1e-5, atol=1e-6)
  vmapped = jax.vmap(layers.LAYERS[name].apply, in_axes=(None, 0))(params, x[0])
  np.testing.assert_allclose(vmapped, out[0], rtol=1e-5, atol=1e-6)


CASES = [
    ("dense", 64, 10, {}), ("dense", 1, 1, {}),
    ("low_rank", 64, 10, {"rank": 1}), ("low_rank", 64, 10, {"rank": 10}),
    ("low_rank", 7, 30, {"rank": 7}),
    ("phm", 64, 10, {"n": 2}), ("phm", 6, 9, {"n": 3}), ("phm", 5, 5, {"n": 1}),
    ("fastfood", 12, 6, {}), ("fastfood", 784, 10, {}), ("fastfood", 5, 20, {}),
]


@pytest.mark.parametrize("name,d,q,kw", CASES)
def test_num_params_matches_formula(name, d, q, kw):
  layer = layers.LAYERS[name]
  init = functools.partial(layer.init, d=d, q=q, **kw)
  # Shapes suffice for the count; Fastfood's init needs concrete values (its permutations).
  params = init(jax.random.key(0)) if name == "fastfood" else jax.eval_shape(
      init, jax.random.key(0))
  assert layers.num_params(params) == layer.param_count(d, q, **kw)


def test_formulas_hand_computed():
  # Parameters (bias included).
  assert layers.dense_num_params(64, 10) == 650
  assert layers.low_rank_num_params(64, 10, rank=2) == 2 * 74 + 10
  assert layers.phm_num_params(64, 10, n=2) == 8 + 320 + 10
  assert layers.fastfood_num_params(64, 10) == 2 * 64 + 20
  assert layers.fastfood_num_params(784, 10) == 2 * 1024 + 20  # d' = 1024, one block
  assert layers.fastfood_num_params(5, 20) == 2 * 3 * 8 + 40  # d' = 8, k = 3 blocks
  # FLOPs per example.
  assert layers.dense_flops(64, 10) == 1290
  assert layers.low_rank_flops(64, 10, rank=2) == 306
  assert layers.phm_flops(64, 10, n=2) == 2 * (640 + 4 * 10) + 10
  assert layers.fastfood_flops(64, 10) == 2 * 64 * 6 + 2 * 64 + 20
  assert layers.fastfood_flops(4096, 4096) == 2 * 4096 * 12 + 2 * 4096 + 2 * 4096
  assert layers.next_pow2(1) == 1 and layers.next_pow2(784) == 1024
  assert layers.next_pow2(64) == 64


def test_fastfood_permutation_is_static_and_untrained():
  params = _init("fastfood", 5, 20)
  leaves = jax.tree.leaves(params)
  assert len(leaves) == 4 and all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves)
  assert len(params.perm) == 3 and all(sorted(p) == list(range(8)) for p in params.perm)
  grads = jax.grad(lambda p: jnp.sum(layers.fastfood_logits(p, _x((4, 5))) ** 2))(params)
  assert isinstance(grads, layers.FastfoodParams) and grads.perm == params.perm
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert "3 fixed permutations" in repr(params)
  # Different keys draw different permutations (and different structures).
  assert _init("fastfood", 5, 20, key=1).perm != params.perm


# --- hand-checked values -------------------------------------------------------------------------


def test_dense_equals_softmax_regression_logits():
  params = _init("dense", 12, 6)
  params = params._replace(b=jnp.arange(6.0))
  x = _x((5, 12))
  np.testing.assert_allclose(jax.jit(layers.dense_logits)(params, x), sj.logits(params, x),
                             rtol=1e-6, atol=1e-6)
  W, b = (np.asarray(a, np.float64) for a in params)
  np.testing.assert_allclose(layers.dense_logits(params, x), x @ W + b, rtol=1e-5, atol=1e-6)


def test_low_rank_equals_x_U_V_plus_b():
  params = layers.LowRankParams(U=jnp.array([[1.0], [2.0], [0.0]]), V=jnp.array([[1.0, -1.0]]),
                                b=jnp.array([0.5, 0.0]))
  # x U = 1·1 + 1·2 = 3, times V = (3, -3), plus b.
  np.testing.assert_allclose(layers.low_rank_logits(params, jnp.array([1.0, 1.0, 7.0])),
                             [3.5, -3.0])
  params = _init("low_rank", 12, 6)._replace(b=jnp.arange(6.0))
  x = _x((5, 12))
  U, V, b = (np.asarray(a, np.float64) for a in params)
  np.testing.assert_allclose(layers.low_rank_logits(params, x), x @ U @ V + b,
                             rtol=1e-5, atol=1e-6)


def test_phm_hand_computed():
  # A₁ = I, S₁ = [2]; A₂ = [[0,1],[1,0]], S₂ = [3]: W = [[2,3],[3,2]].
  params = layers.PHMParams(A=jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]),
                            S=jnp.array([[[2.0]], [[3.0]]]), b=jnp.zeros(2))
  np.testing.assert_array_equal(layers.phm_logits(params, jnp.array([1.0, 0.0])), [2.0, 3.0])
  np.testing.assert_array_equal(layers.phm_logits(params, jnp.array([1.0, 1.0])), [5.0, 5.0])


@pytest.mark.parametrize("d,q,n", [(12, 8, 4), (8, 12, 4)])
def test_phm_equals_kron_sum(d, q, n):
  # Both contraction orders (q/n <= d/n and q/n > d/n) against the materialised W.
  params = _init("phm", d, q, n=n)._replace(b=jnp.arange(float(q)))
  A, S, b = (np.asarray(a, np.float64) for a in params)
  W = sum(np.kron(A[i], S[i]) for i in range(n))
  assert W.shape == (d, q)
  x = _x((5, d))
  np.testing.assert_allclose(layers.phm_logits(params, x), x @ W + b, rtol=1e-5,
                             atol=1e-6)


def _fastfood_matrix(params):
  """The explicit [q, d'] matrix of stacked S H G Π H B / d' blocks (column convention)."""
  k, dp = params.G.shape
  H = scipy.linalg.hadamard(dp).astype(np.float64)
  S = np.zeros(k * dp)
  S[:len(params.S)] = params.S
  blocks = []
  for j in range(k):
    P = np.eye(dp)[list(params.perm[j])]  # (P z)_i = z[perm_i]
    blocks.append(np.diag(S[j * dp:(j + 1) * dp]) @ H @ np.diag(np.asarray(params.G[j]))
                  @ P @ H @ np.diag(np.asarray(params.B[j])) / dp)
  return np.concatenate(blocks)[:len(params.b)]


def test_fastfood_hand_computed():
  # d = d' = 2, H = [[1,1],[1,-1]], B = (1,-1), G = (1,2), Π swaps, S = 1:
  # x = e₁: Bx = (1,0) → H (1,1) → Π (1,1) → G (1,2) → H (3,-1) → /2 (1.5,-0.5).
  params = layers.FastfoodParams(S=jnp.ones(2), G=jnp.array([[1.0, 2.0]]),
                                 B=jnp.array([[1.0, -1.0]]), b=jnp.array([0.0, 1.0]),
                                 perm=((1, 0),), d=2)
  np.testing.assert_allclose(layers.fastfood_logits(params, jnp.array([1.0, 0.0])), [1.5, 0.5])
  np.testing.assert_allclose(layers.fastfood_logits(params, jnp.array([0.0, 1.0])), [-0.5, 2.5])
  np.testing.assert_allclose(_fastfood_matrix(params), [[1.5, -0.5], [-0.5, 1.5]])


@pytest.mark.parametrize("d,q", [(12, 6), (5, 20), (784, 10)])
def test_fastfood_equals_explicit_matrix(d, q):
  params = _init("fastfood", d, q)
  key = jax.random.key(1)  # non-trivial S and b
  params = layers.FastfoodParams(S=jax.random.normal(key, params.S.shape), G=params.G,
                                 B=params.B, b=jnp.arange(float(q)), perm=params.perm, d=d)
  V = _fastfood_matrix(params)
  dp = layers.next_pow2(d)
  assert V.shape == (q, dp)
  x = _x((4, d))
  x_pad = np.pad(x.astype(np.float64), ((0, 0), (0, dp - d)))
  np.testing.assert_allclose(layers.fastfood_logits(params, x),
                             x_pad @ V.T + np.arange(q), rtol=1e-4, atol=1e-4)


def test_fastfood_rows_have_dense_like_scale_at_init():
  # S = scale·√d' makes each effective weight column's norm about scale·√d'.
  params = _init("fastfood", 256, 8, scale=0.1)
  norms = np.linalg.norm(_fastfood_matrix(params), axis=1)
  np.testing.assert_allclose(norms, 0.1 * 16, rtol=0.2)


# --- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(layers.LAYERS))
def test_check_grads(name):
  # Gradients in x and in every parameter, float32 (the maps are at most trilinear, so central
  # differences are accurate). Parameters moved off init's zeros and constants first.
  layer = layers.LAYERS[name]
  params = _init(name, 12, 6)
  params = jax.tree.map(lambda a: a + 0.3 * jnp.cos(jnp.arange(a.size).reshape(a.shape)), params)
  x = _x((3, 12), scale=2.0)  # max|x| > 1: the overflow guard's rescaling is active
  check_grads(layer.apply, (params, x), order=1, modes=("fwd", "rev"), eps=1e-2)


@pytest.mark.parametrize("name", list(layers.LAYERS))
def test_derivatives_are_those_of_the_unscaled_map(name):
  """The overflow guard scales ``x`` by ``2^-t`` for the value. The maps are linear in ``x``, so
  the Jacobian in ``x`` at inputs near 3e38 is the one at ordinary inputs (it was 0 in forward
  mode, tangents times 2^-127 being flushed, and inf in reverse mode, cotangents times 2^127
  overflowing). The parameter gradients keep the scaled chain, whose sums over ``x`` cannot
  overflow: at inputs all near 1e35 they are 1e30 times those at ``x·1e-30`` (the unscaled
  ``x·U`` of a low-rank layer overflowed to inf, found by review)."""
  layer = layers.LAYERS[name]
  params = _init(name, 12, 6)
  params = jax.tree.map(lambda a: a + 0.3 * jnp.cos(jnp.arange(a.size).reshape(a.shape)), params)
  x = _x((2, 12))
  big = x.copy()
  big[:, 3] = [3e38, -2e38]
  for jac in (jax.jacfwd, jax.jacrev):
    want = jac(layer.apply, 1)(params, jnp.asarray(x))
    got = jac(layer.apply, 1)(params, jnp.asarray(big))
    assert np.isfinite(got).all(), (jac, got)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

  def grads(params, x):
    return jax.grad(lambda p: jnp.sum(jnp.sin(jnp.arange(6.0))[None, :] * layer.apply(p, x)))(
        params)

  huge = np.sign(x) * (1e35 + 1e34 * np.abs(x))  # every entry near 1e35: t = 116
  got = jax.tree.leaves(grads(params, jnp.asarray(huge, jnp.float32)))
  want = jax.tree.leaves(grads(params, jnp.asarray(huge * 1e-30, jnp.float32)))
  scales = [1e30] * (len(want) - 1) + [1.0]  # the bias (the last leaf) does not see x
  for g, w, scale in zip(got, want, scales, strict=True):
    assert np.isfinite(g).all(), (name, g)
    w = scale * np.asarray(w, np.float64)
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * np.abs(w).max())


def test_low_rank_weight_gradient_at_inputs_summing_beyond_the_float_range():
  # x·U = 3e38 (3e38 + 3e38 − 3e38 in the scaled chain, exact): grad V = (x·U)ᵀ·1 = 3e38.
  x = jnp.array([3e38, 3e38, -3e38, 0.0])
  p = layers.LowRankParams(U=jnp.ones((4, 1)), V=jnp.full((1, 2), 1e-3), b=jnp.zeros(2))
  np.testing.assert_allclose(jax.grad(lambda p: layers.low_rank_logits(p, x).sum())(p).V,
                             [[3e38, 3e38]], rtol=1e-6)


def test_fwht_derivatives_near_the_float_max():
  x = jnp.array([3e38, 0.0])
  np.testing.assert_array_equal(layers.fwht(x), [x[0], x[0]])
  np.testing.assert_array_equal(jax.jacfwd(layers.fwht)(x), [[1.0, 1.0], [1.0, -1.0]])
  np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(layers.fwht(x)))(x), [2.0, 0.0])


# --- extreme inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(layers.LAYERS))
def test_extreme_inputs(name):
  apply = jax.jit(layers.LAYERS[name].apply)
  params = _init(name, 12, 6)
  x = _x((4, 12))
  signs = np.where(x > 0, 1.0, -1.0).astype(np.float32)
  base = np.asarray(apply(params, signs)) - np.asarray(params.b)
  # ±1e4: finite, and 1e4 times the logits of ±1 (linear, zero bias at init).
  out = np.asarray(apply(params, 1e4 * signs))
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out, 1e4 * base, rtol=1e-5, atol=1e-3)
  # ±3e38: the rescaling keeps the sums finite; these weights are small, so no overflow at all.
  out = np.asarray(apply(params, 3e38 * signs))
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out, 3e38 * base, rtol=1e-4, atol=1e30)


@pytest.mark.parametrize("name", ["dense", "low_rank"])
def test_small_inputs_next_to_huge_ones_keep_their_share(name):
  # x = [3e38, 1.5, …] where the huge entry's weights are 0 (row 0 of W, or of U): the logits
  # are those of [0, 1.5, …]. The guard scaled x to [1, 2), where 1.5·2^-127 is subnormal and
  # was flushed to 0, so the logits came out as the bias alone; it now scales to [2^64, 2^65).
  # (PHM and Fastfood share the guard, `_guarded`; their weights on one entry cannot be zeroed
  # as simply.)
  layer = layers.LAYERS[name]
  params = _init(name, 8, 4)
  params = jax.tree.map(lambda a: a + 0.3 * jnp.cos(jnp.arange(a.size).reshape(a.shape)), params)
  params = params._replace(**{"W" if name == "dense" else "U": (
      params.W if name == "dense" else params.U).at[0].set(0.0)})
  small = _x((3, 8), scale=2.0)
  small = small / np.abs(small).max()  # |x| <= 1
  small[:, 0] = 0
  want = np.asarray(layer.apply(params, jnp.asarray(small)))
  assert np.abs(want - np.asarray(params.b)).min() > 1e-5  # the small entries do matter
  huge = small.copy()
  huge[:, 0] = [3e38, -3e38, 1e30]
  np.testing.assert_allclose(layer.apply(params, jnp.asarray(huge)), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(layers.dense_logits(layers.DenseParams(
      W=jnp.array([[0.0], [1.0]]), b=jnp.zeros(1)), jnp.array([3e38, 1.5])), [1.5])
  # The gradient in the small entries' own weights is theirs too (it was 0).
  g = jax.grad(lambda p: layer.apply(p, jnp.asarray(huge)).sum())(params)
  g0 = jax.grad(lambda p: layer.apply(p, jnp.asarray(small)).sum())(params)
  rows = (g.W, g0.W) if name == "dense" else (g.V, g0.V)
  if name == "dense":
    np.testing.assert_allclose(rows[0][1:], rows[1][1:], rtol=1e-6)
  else:  # V's gradient is (x·U)ᵀ·1: x·U has no share of the huge entry either
    np.testing.assert_allclose(rows[0], rows[1], rtol=1e-6, atol=1e-6)


def test_float16_inputs_keep_the_narrow_scaling():
  # float16 has no room for headroom: 256 weights of ±1 at inputs of 300 sum to ±76,800 beyond
  # its range; scaled to [1, 2) they do not (a headroom of 8 gave NaN and inf here; review).
  d, dt = 256, jnp.float16
  x = jnp.full((d,), 300.0, dt)
  u = jnp.stack([jnp.ones(d), -jnp.ones(d)], 1).astype(dt)
  p = layers.LowRankParams(U=u, V=jnp.full((2, 1), 1e-3, dt), b=jnp.zeros(1, dt))
  np.testing.assert_array_equal(layers.low_rank_logits(p, x), [0.0])
  p = layers.LowRankParams(U=jnp.ones((d, 1), dt), V=jnp.full((1, 1), 1e-3, dt),
                           b=jnp.zeros(1, dt))
  np.testing.assert_allclose(np.float32(layers.low_rank_logits(p, x)[0]), 76.8, rtol=2e-3)


def test_overflow_gives_inf_or_exact_cancellation_never_nan():
  # W = 1: the true logits are sums of ±3e38 entries; they overflow to ±inf or cancel exactly.
  params = sj.Params(W=jnp.ones((4, 3)), b=jnp.zeros(3))
  x = jnp.array([[3e38, 3e38, -3e38, -3e38], [3e38, 3e38, 3e38, -3e38],
                 [-3e38, -3e38, -3e38, 0.0]])
  out = np.asarray(jax.jit(layers.dense_logits)(params, x))
  np.testing.assert_array_equal(out[0], [0.0] * 3)  # a plain x @ W gives inf or nan here
  np.testing.assert_array_equal(out[1:], [[np.inf] * 3, [-np.inf] * 3])
  phm = layers.PHMParams(A=jnp.ones((2, 2, 2)), S=jnp.ones((2, 2, 1)), b=jnp.zeros(2))
  assert not np.isnan(np.asarray(layers.phm_logits(phm, x))).any()


def test_pow2_exponent_and_times_pow2_at_extremes():
  # pow2_exponent: t >= 0 with max|x|/2^t in [1, 2), 0 when max|x| <= 1 or is not finite. A
  # non-finite max gave t = −1, which doubled the other entries: inf − 3e38 became inf − inf.
  x = np.array([[3e38], [-3e38], [1e4], [2.0], [1.5], [1.0], [0.0], [np.inf], [-np.inf],
                [np.nan]], np.float32)
  t = np.asarray(jax.jit(layers.pow2_exponent)(x))[:, 0]
  np.testing.assert_array_equal(t, [127, 127, 13, 1, 0, 0, 0, 0, 0, 0])
  # With headroom h, max|x|/2^t lands in [2^h, 2^(h+1)); the layers' guard uses h = 32.
  assert [layers.guard_headroom(d) for d in (jnp.float32, jnp.bfloat16, jnp.float64,
                                             jnp.float16)] == [32, 32, 480, 0]
  t = np.asarray(jax.jit(functools.partial(layers.pow2_exponent, headroom=32))(x))[:, 0]
  np.testing.assert_array_equal(t, [95, 95, 0, 0, 0, 0, 0, 0, 0, 0])
  # times_pow2 is exact, also where one factor 2^t alone would be subnormal or overflow.
  xs = jnp.array([3e38, 3e38, 2.5e-38, 1.5, -1.0, 3e38], jnp.float32)
  ts = jnp.array([-127, -128, 126, 127, -126, 1])
  want = np.float32([3e38 / 2.0**127, 3e38 / 2.0**128, 2.5e-38 * 2.0**126, 1.5 * 2.0**127,
                     -(2.0**-126), np.inf])  # 6e38: an honest overflow
  np.testing.assert_array_equal(jax.jit(layers.times_pow2)(xs, ts), want)
  # Its derivative in x is the constant 2^t (t is not differentiated).
  tg = jnp.array([-126, -64, 126, 127])  # 2^t normal: XLA:CPU flushes subnormals to 0
  g = jax.jit(jax.grad(lambda x: jnp.sum(layers.times_pow2(x, tg))))(xs[:4])
  np.testing.assert_array_equal(g, np.float32([2.0**-126, 2.0**-64, 2.0**126, 2.0**127]))
  check_grads(lambda x: layers.times_pow2(x, jnp.array([3, -2])), (jnp.array([1.5, -3.0]),),
              order=2, modes=("fwd", "rev"))


def test_infinite_inputs_give_the_infinite_limit():
  # An infinite input with finite ±3e38 entries beside it: the exact ±inf, not NaN (the guard
  # used to double the finite entries to inf, so that inf − inf met in a sum).
  assert not np.isnan(np.asarray(layers.fwht(jnp.array([np.inf, 3e38])))).any()
  np.testing.assert_array_equal(layers.fwht(jnp.array([[np.inf, 3e38], [-np.inf, 3e38]])),
                                [[np.inf, np.inf], [-np.inf, -np.inf]])
  params = sj.Params(W=jnp.array([[1.0, -2.0], [-1.0, 1.0]]), b=jnp.zeros(2))
  np.testing.assert_array_equal(layers.dense_logits(params, jnp.array([np.inf, 3e38])),
                                [np.inf, -np.inf])  # inf − 3e38 and −2·inf + 3e38


# --- bad input -----------------------------------------------------------------------------------


def test_bad_hyperparameters_name_the_values():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"d=64, q=10, n=4"):
    layers.init_phm(key, 64, 10, n=4)
  with pytest.raises(ValueError, match=r"d=784, q=10, n=3"):
    layers.phm_num_params(784, 10, n=3)
  with pytest.raises(ValueError, match=r"n=0"):
    layers.init_phm(key, 4, 4, n=0)
  with pytest.raises(ValueError, match=r"\[1, 10\].*d=64, q=10.*rank=0"):
    layers.init_low_rank(key, 64, 10, rank=0)
  with pytest.raises(ValueError, match=r"\[1, 6\].*d=12, q=6.*rank=7"):
    layers.low_rank_flops(12, 6, rank=7)
  with pytest.raises(ValueError, match=r"rank=2.5"):
    layers.init_low_rank(key, 12, 6, rank=2.5)
  with pytest.raises(ValueError, match=r"d must be a positive int; got 0"):
    layers.init_dense(key, 0, 3)
  with pytest.raises(ValueError, match=r"q must be a positive int; got -1"):
    layers.fastfood_num_params(8, -1)
  with pytest.raises(ValueError, match=r"scale.*-1"):
    layers.init_fastfood(key, 8, 3, scale=-1.0)
  with pytest.raises(TypeError, match="dtype"):
    layers.init_phm(key, 4, 4, n=2, dtype=jnp.int32)


@pytest.mark.parametrize("name", list(layers.LAYERS))
def test_wrong_x_shape_and_dtype(name):
  params = _init(name, 12, 6)
  apply = layers.LAYERS[name].apply
  with pytest.raises(ValueError, match=rf"d = 12 \(the {name} layer.*got \(3, 11\)"):
    apply(params, np.zeros((3, 11), np.float32))
  with pytest.raises(ValueError, match=r"got \(\)"):
    apply(params, np.float32(1.0))
  with pytest.raises(TypeError, match=r"floating.*int32"):
    apply(params, np.zeros((3, 12), np.int32))


def test_inconsistent_params_are_rejected():
  x = np.zeros((2, 12), np.float32)
  dense = _init("dense", 12, 6)
  with pytest.raises(ValueError, match=r"dense params.*W \(12, 6\), b \(5,\)"):
    layers.dense_logits(dense._replace(b=jnp.zeros(5)), x)
  lr = _init("low_rank", 12, 6)
  with pytest.raises(ValueError, match=r"low_rank params.*V \(3, 6\)"):
    layers.low_rank_logits(lr._replace(V=jnp.zeros((3, 6))), x)
  phm = _init("phm", 12, 6)
  with pytest.raises(ValueError, match=r"phm params.*A \(2, 2, 3\)"):
    layers.phm_logits(phm._replace(A=jnp.zeros((2, 2, 3))), x)
  ff = _init("fastfood", 12, 6)
  bad = layers.FastfoodParams(S=ff.S, G=ff.G, B=ff.B, b=ff.b, perm=((0,) * 16,), d=12)
  with pytest.raises(ValueError, match=r"fastfood params.*permutations"):
    layers.fastfood_logits(bad, x)
  with pytest.raises(TypeError, match="FastfoodParams"):
    layers.fastfood_logits(dense, x)


def test_registry():
  assert set(layers.LAYERS) == {"dense", "low_rank", "phm", "fastfood"}
  assert [layers.LAYERS[k].hyperparameter for k in ("dense", "low_rank", "phm", "fastfood")] == [
      None, "rank", "n", None]
  assert layers.LAYERS["dense"].apply is layers.dense_logits
