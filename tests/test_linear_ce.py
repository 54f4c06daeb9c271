"""Tests for softmax_jax.linear_ce: linear_cross_entropy against the dense cross_entropy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax.linear_ce import linear_cross_entropy
from tests.conftest import enable_x64

N, D, Q = 12, 6, 37  # 37 classes: prime, so no chunk size below it divides it


def _problem(seed=0, n=N, d=D, q=Q, soft=False, dtype=jnp.float32, scale=1.0):
  """x, W, b, labels, class weights (one of them 0) and a mask; NumPy's RNG (nothing to compile)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((n, d)), dtype)
  W = jnp.asarray(scale * rng.standard_normal((d, q)), dtype)
  b = jnp.asarray(scale * rng.standard_normal(q), dtype)
  if soft:
    z = 2 * rng.standard_normal((n, q))
    p = np.exp(z - z.max(1, keepdims=True))
    labels = jnp.asarray(p / p.sum(1, keepdims=True), jnp.float32)
  else:
    labels = jnp.asarray(rng.integers(0, q, n), jnp.int32)
  weights = jnp.asarray(rng.uniform(0.0, 2.0, q), jnp.float32).at[3].set(0.0)
  mask = jnp.asarray(np.arange(n) % 4 != 1)
  return x, W, b, labels, weights, mask


def _dense(x, W, b, labels, **kw):
  return sj.cross_entropy(x @ W + b[None, :], labels, **kw)


def _value_and_grads(loss_fn, x, W, b, ct=None):
  """Value and (dx, dW, db) of loss_fn, or of Σ ct·loss_fn for per-example losses."""
  def scalar(x, W, b):
    out = loss_fn(x, W, b)
    return out if ct is None else jnp.sum(ct * out)
  return jax.jit(jax.value_and_grad(scalar, argnums=(0, 1, 2)))(x, W, b)


def _assert_close(got, want, rtol=1e-5, atol=1e-5):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
    np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64),
                               rtol=rtol, atol=atol)


def _assert_matches_dense(soft, kw, reduction="mean", chunk_size=8, ct=None, **problem):
  x, W, b, labels, weights, mask = _problem(soft=soft, **problem)
  kw = dict(kw)
  if kw.pop("weights", False):
    kw["class_weights"] = weights
  if kw.pop("mask", False):
    kw["where"] = mask
  got = _value_and_grads(
      lambda x, W, b: linear_cross_entropy(x, W, b, labels, chunk_size=chunk_size,
                                           reduction=reduction, **kw), x, W, b, ct)
  want = _value_and_grads(
      lambda x, W, b: _dense(x, W, b, labels, reduction=reduction, **kw), x, W, b, ct)
  _assert_close(got, want)


KWARGS = {
    "plain": {},
    "smoothing": dict(label_smoothing=0.1),
    "weights": dict(weights=True),
    "all": dict(weights=True, mask=True, label_smoothing=0.2),  # the mask is in here
}
CASES = [(False, "plain"), (False, "smoothing"), (False, "weights"), (False, "all"),
         (True, "plain"), (True, "all")]


@pytest.mark.parametrize("soft,name", CASES, ids=[("probs-" if s else "ids-") + n for s, n in CASES])
def test_mean_and_grads_equal_dense(soft, name):
  _assert_matches_dense(soft, KWARGS[name])


@pytest.mark.parametrize("soft,reduction", [(False, "none"), (True, "none"), (False, "sum")],
                         ids=["ids-none", "probs-none", "ids-sum"])
def test_every_reduction_equals_dense(soft, reduction):
  # "none" is differentiated through Σ ct·l with a random cotangent per example.
  ct = jnp.asarray(np.random.default_rng(7).standard_normal(N), jnp.float32)
  ct = ct if reduction == "none" else None
  _assert_matches_dense(soft, KWARGS["all"], reduction=reduction, ct=ct)


@pytest.mark.parametrize("chunk_size", [1, 36, 64])
def test_chunk_sizes_ragged_and_wider_than_q(chunk_size):
  # 1: one class per block; 36: blocks [0, 36) and [1, 37), sharing 35 columns; 64 > q = 37.
  _assert_matches_dense(False, dict(weights=True, label_smoothing=0.1), chunk_size=chunk_size)


def test_blocks_that_divide_q():
  _assert_matches_dense(True, KWARGS["all"], chunk_size=8, q=32)


def test_labels_in_the_shared_columns_of_the_last_block():
  # q = 10, chunk 4: blocks [0, 4), [4, 8), [6, 10) with 6, 7 shared; the labels sit there.
  x, W, b, _, _, _ = _problem(q=10)
  labels = jnp.array([6, 7, 8, 9, 5, 4, 3, 0, 6, 7, 6, 7])
  got = _value_and_grads(
      lambda x, W, b: linear_cross_entropy(x, W, b, labels, chunk_size=4), x, W, b)
  want = _value_and_grads(lambda x, W, b: _dense(x, W, b, labels, reduction="mean"), x, W, b)
  _assert_close(got, want)


def test_no_bias_equals_zero_bias():
  x, W, _, labels, _, _ = _problem()
  got = jax.value_and_grad(
      lambda x, W: linear_cross_entropy(x, W, None, labels, chunk_size=8), argnums=(0, 1))(x, W)
  want = jax.value_and_grad(
      lambda x, W: linear_cross_entropy(x, W, jnp.zeros(Q), labels, chunk_size=8),
      argnums=(0, 1))(x, W)
  _assert_close(got, want)


def test_default_reduction_is_mean_and_eager_equals_jit():
  x, W, b, labels, _, _ = _problem()
  eager = linear_cross_entropy(x, W, b, labels)
  np.testing.assert_allclose(eager, _dense(x, W, b, labels, reduction="mean"), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(linear_cross_entropy)(x, W, b, labels), eager, rtol=1e-6)


def test_all_masked_mean_is_zero_with_zero_gradients():
  x, W, b, labels, _, _ = _problem()
  loss, grads = jax.value_and_grad(
      lambda x, W, b: linear_cross_entropy(x, W, b, labels, where=jnp.zeros(N, bool),
                                           chunk_size=8), argnums=(0, 1, 2))(x, W, b)
  assert loss == 0
  for g in grads:
    assert not np.any(g)


def test_masked_examples_may_hold_any_label():
  x, W, b, labels, _, mask = _problem()
  bad = jnp.where(mask, labels, -100)  # torch's ignore_index
  got = linear_cross_entropy(x, W, b, bad, where=mask, chunk_size=8, reduction="none")
  want = _dense(x, W, b, labels, where=mask)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_out_of_range_label_under_plain_jit_is_nan_not_clamped():
  x, W, b, labels, _, _ = _problem()
  f = jax.jit(functools.partial(linear_cross_entropy, chunk_size=8, reduction="none"))
  loss = f(x, W, b, labels.at[2].set(Q))
  assert np.isnan(loss[2]) and np.all(np.isfinite(np.delete(np.asarray(loss), 2)))
  err, _ = jax.jit(sj.checked(functools.partial(linear_cross_entropy, chunk_size=8)))(
      x, W, b, labels.at[2].set(Q))
  assert "class ids in [0, 37)" in str(err.get())


@pytest.mark.parametrize("filter_eps", [None, 1e30], ids=["exact", "filtered"])
@pytest.mark.parametrize("nan_in", ["x", "W"])
@pytest.mark.parametrize("q,chunk_size", [(16, 5), (8192, 3000)])
def test_a_nan_logit_makes_its_loss_and_gradients_nan(q, chunk_size, nan_in, filter_eps):
  # A NaN in x makes one row's logits NaN; one in a column of W, one logit of every row. At 8192
  # classes XLA:CPU's fused max drops a NaN, so neither the online log-sum-exp nor the gradient
  # filter may rely on it: at τ = 1e30 the filter skips every block of finite gradients, and a
  # block with a NaN gradient must not pass for one.
  x, W, b, labels, _, _ = _problem(seed=q, n=4, d=8, q=q, scale=0.3)
  x = x.at[1, 2].set(jnp.nan) if nan_in == "x" else x
  W = W.at[3, q // 2 + 1].set(jnp.nan) if nan_in == "W" else W

  def outputs(loss_fn):
    none = lambda x, W, b: loss_fn(x, W, b, reduction="none")  # noqa: E731
    return jax.jit(lambda x, W, b: (none(x, W, b), loss_fn(x, W, b, reduction="mean"),
                                    jax.grad(lambda *a: jnp.sum(none(*a)), (0, 1, 2))(x, W, b)))(
                                        x, W, b)

  got = outputs(functools.partial(linear_cross_entropy, labels=labels, chunk_size=chunk_size,
                                  filter_eps=filter_eps))
  want = outputs(lambda x, W, b, reduction: _dense(x, W, b, labels, reduction=reduction))
  rows = [1] if nan_in == "x" else [0, 1, 2, 3]
  assert np.all(np.isnan(np.asarray(want[0])[rows])) and np.isnan(want[1])
  _assert_close(got, want)  # NaN exactly where the dense loss has it; the rest equal


# ----------------------------------------------------------------------------------------------
# Memory: no n × q array anywhere
# ----------------------------------------------------------------------------------------------


def _sub_jaxprs(value):
  """The jaxprs in an equation's parameter (duck-typed: jax.core's helpers move between versions)."""
  if hasattr(value, "eqns"):
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # a ClosedJaxpr
    yield value.jaxpr
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def _avals(jaxpr):
  """Every abstract value in a jaxpr, sub-jaxprs (loops, custom rules) included."""
  for eqn in jaxpr.eqns:
    for var in (*eqn.invars, *eqn.outvars):
      if hasattr(var, "aval"):
        yield var.aval
    for param in eqn.params.values():
      for sub in _sub_jaxprs(param):
        yield from _avals(sub)


def test_no_n_by_q_array_in_the_jaxpr_or_the_compiled_temporaries():
  n, d, q, chunk = 64, 8, 1000, 96  # ragged: 1000 = 10·96 + 40
  x, W, b, labels, weights, _ = _problem(n=n, d=d, q=q)

  def chunked(x, W, b):
    return linear_cross_entropy(x, W, b, labels, chunk_size=chunk, label_smoothing=0.1,
                                class_weights=weights)

  def dense(x, W, b):
    return _dense(x, W, b, labels, label_smoothing=0.1, class_weights=weights, reduction="mean")

  def shapes(fn):
    jaxpr = jax.make_jaxpr(jax.value_and_grad(fn, argnums=(0, 1, 2)))(x, W, b).jaxpr
    return {aval.shape for aval in _avals(jaxpr) if hasattr(aval, "shape")}

  assert (n, q) in shapes(dense)  # the scan sees what it should
  assert not {(n, q), (q, n)} & shapes(chunked)

  def temp_bytes(fn):
    compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2))).lower(x, W, b).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(dense) >= n * q * 4
  assert temp_bytes(chunked) < n * q * 4 / 4


# ----------------------------------------------------------------------------------------------
# Precision, gradients and numerics
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True], ids=["ids", "probs"])
def test_check_grads_float64(soft):
  x, W, b, labels, weights, mask = _problem(soft=soft)  # made in float32, cast in float64
  with enable_x64():
    x, W, b = (a.astype(jnp.float64) for a in (x, W, b))
    if soft:  # renormalised: float32 probabilities sum to 1 only within float32's tolerance
      labels = labels.astype(jnp.float64)
      labels = labels / jnp.sum(labels, axis=1, keepdims=True)
    f = functools.partial(linear_cross_entropy, labels=labels, chunk_size=8,
                          label_smoothing=0.1, class_weights=weights, where=mask)
    check_grads(jax.jit(lambda x, W, b: f(x, W, b)), (x, W, b), order=1, modes=("rev",))
    assert f(x, W, b).dtype == jnp.float64


@pytest.mark.parametrize("soft", [False, True], ids=["ids", "probs"])
def test_bfloat16_loss_in_float32_grads_in_bfloat16(soft):
  x, W, b, labels, _, mask = _problem(soft=soft, dtype=jnp.bfloat16)
  kw = dict(label_smoothing=0.1, where=mask)
  loss, grads = _value_and_grads(
      lambda x, W, b: linear_cross_entropy(x, W, b, labels, chunk_size=8, **kw), x, W, b)
  assert loss.dtype == jnp.float32
  assert [g.dtype for g in grads] == [jnp.bfloat16] * 3
  # The arithmetic is float32 on the upcast inputs: it matches the dense float32 loss tightly,
  # and the gradients up to their rounding to bfloat16.
  up = [a.astype(jnp.float32) for a in (x, W, b)]
  want_loss, want_grads = _value_and_grads(
      lambda x, W, b: _dense(x, W, b, labels, reduction="mean", **kw), *up)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  for g, w in zip(grads, want_grads, strict=True):
    np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=1e-2, atol=1e-3)
  # The dense form on bfloat16 logits rounds the logits themselves: looser.
  dense_bf16 = _dense(x, W, b, labels, reduction="mean", **kw)
  np.testing.assert_allclose(loss, dense_bf16, rtol=2e-2)


@pytest.mark.parametrize("smooth_and_weigh", [False, True], ids=["plain", "smoothing-weights"])
def test_extreme_logits_finite_and_equal_dense(smooth_and_weigh):
  # x W + b with entries of size ±1e4 (|x| ~ 1, |W| ~ 3e3): the exp of an unshifted logit
  # would overflow; the loss is of size 1e4 and the softmax one-hot-like.
  x, W, b, labels, weights, _ = _problem(scale=3e3)
  labels = labels.at[0].set(jnp.argmax(x[0] @ W + b))  # a label holding the max: loss ≈ 0
  assert float(jnp.max(jnp.abs(x @ W + b[None, :]))) > 1e4
  kw = dict(label_smoothing=0.1, class_weights=weights) if smooth_and_weigh else {}
  got = _value_and_grads(functools.partial(
      linear_cross_entropy, labels=labels, chunk_size=8, reduction="none", **kw), x, W, b,
      ct=jnp.ones(N))
  want = _value_and_grads(functools.partial(_dense, labels=labels, reduction="none", **kw),
                          x, W, b, ct=jnp.ones(N))
  for leaf in jax.tree.leaves(got):
    assert np.all(np.isfinite(leaf))
  # Logits of size 1e4 carry float32 rounding of ~1e-3 (the matmul's summation order).
  _assert_close(got, want, rtol=1e-5, atol=1e-2)
  if not smooth_and_weigh:  # the label holding the max: the loss is log(1 + tiny) ≈ 0
    mine = linear_cross_entropy(x[:1], W, b, labels[:1], chunk_size=8, reduction="none")
    assert 0 <= float(mine[0]) < 1e-3 and float(_dense(x[:1], W, b, labels[:1])[0]) < 1e-3


# ----------------------------------------------------------------------------------------------
# Gradient filtering
# ----------------------------------------------------------------------------------------------


def test_gradient_filtering_zero_is_exact_and_the_bound_holds():
  # The labels and the softmax mass sit in the first block of 8: the other blocks' softmax
  # entries are about e^-20 ≈ 2e-9 and their G that small.
  x, W, _, _, _, _ = _problem(q=64)
  b = jnp.where(jnp.arange(64) < 8, 10.0, -10.0)
  labels = jnp.arange(N) % 8

  def grads(filter_eps):
    return jax.grad(lambda x, W, b: linear_cross_entropy(
        x, W, b, labels, chunk_size=8, reduction="sum", filter_eps=filter_eps),
        argnums=(0, 1, 2))(x, W, b)

  exact = grads(None)
  _assert_close(grads(0.0), exact, rtol=0, atol=0)
  # Each skipped block's entries of G are below τ (cotangent 1): dW moves by at most τ·Σ|x|.
  tau = 1e-3
  dx, dW, db = grads(tau)
  assert np.max(np.abs(dW - exact[1])) <= tau * float(jnp.max(jnp.sum(jnp.abs(x), axis=0)))
  assert np.max(np.abs(dx - exact[0])) <= tau * float(jnp.max(jnp.sum(jnp.abs(W), axis=1)))
  np.testing.assert_array_equal(db, exact[2])  # db is never filtered
  assert not np.array_equal(dW, exact[1])  # something was skipped
  # A threshold above every |G| skips every block: dx and dW are 0.
  dx, dW, _ = grads(1e30)
  assert not np.any(dx) and not np.any(dW)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


BAD_STATIC = [
    (dict(x=jnp.ones(D)), ValueError, r"x must have shape \(n, d\)"),
    (dict(W=jnp.ones((D + 1, Q))), ValueError, r"W must have shape \(d, q\) = \(6, q\).*\(7, 37\)"),
    (dict(b=jnp.ones(Q + 1)), ValueError, r"b must have shape \(37,\).*\(38,\)"),
    (dict(labels=jnp.zeros(N + 1, jnp.int32)), ValueError, r"labels of shape \(13,\) match neither"),
    (dict(labels=jnp.zeros(N)), TypeError, "class ids must be integers"),
    (dict(labels=jnp.zeros((N, Q), jnp.int32)), TypeError, "probabilities must be floating"),
    (dict(x=jnp.ones((N, D), jnp.int32)), TypeError, "x must be a floating-point array"),
    (dict(chunk_size=0), ValueError, "chunk_size must be a positive int; got 0"),
    (dict(chunk_size=-3), ValueError, "chunk_size must be a positive int; got -3"),
    (dict(chunk_size=8.0), TypeError, "chunk_size must be a positive int; got 8.0"),
    (dict(chunk_size=True), TypeError, "chunk_size must be a positive int; got True"),
    (dict(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
    (dict(class_weights=jnp.ones(Q - 1)), ValueError, r"class_weights must have shape \(37,\)"),
    (dict(where=jnp.ones(N)), TypeError, "where must be a boolean mask"),
    (dict(where=jnp.ones(N + 1, bool)), ValueError, r"where of shape \(13,\) does not broadcast"),
    (dict(filter_eps=-1.0), ValueError, "filter_eps must be finite and >= 0"),
]


@pytest.mark.parametrize("kw,exc,msg", BAD_STATIC, ids=[m[:30] for _, _, m in BAD_STATIC])
def test_bad_static_input(kw, exc, msg):
  x, W, b, labels, _, _ = _problem()
  args = dict(x=x, W=W, b=b, labels=labels) | kw
  with pytest.raises(exc, match=msg):
    linear_cross_entropy(**args)


@pytest.mark.parametrize("kw,msg", [
    (dict(labels=jnp.array([0] * (N - 1) + [Q])), r"class ids in \[0, 37\); got 37"),
    (dict(labels=jnp.full((N, Q), 0.5)), "must sum to 1"),
    (dict(class_weights=-jnp.ones(Q)), "class_weights must be finite and >= 0"),
    # A subnormal weight, which XLA would flush to 0 (the mean loss came out wrong).
    (dict(class_weights=jnp.ones(Q).at[3].set(1e-40)),
     r"class_weights must be 0 or normal numbers.*got 1e-40 at index \[3\]"),
])
def test_bad_values_raise_eagerly(kw, msg):
  x, W, b, labels, _, _ = _problem()
  args = dict(x=x, W=W, b=b, labels=labels) | kw
  with pytest.raises(ValueError, match=msg):
    linear_cross_entropy(**args)


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_logits_summing_or_spanning_beyond_the_float_range(chunk_size):
  """x = I, so the rows of W are the logits. The smoothing term accumulates W·(ε/q·w), scaled
  before it is summed, and the label term and soft labels are taken in halves: rows of W that
  sum or span beyond the float range give the finite losses that the dense cross-entropy gives
  (these were −inf and NaN). Hand-computed values as in test_losses and test_parallel."""
  W = jnp.array([[3e38, 3e38, -3e38], [3e38, 3e38, 0.0], [3e38, -3e38, 0.0], [1.0, 2.0, 3.0]])
  x, b = jnp.eye(4), jnp.zeros(3)
  lce = functools.partial(linear_cross_entropy, chunk_size=chunk_size, reduction="none")
  y = jnp.array([0, 0, 2, 0])
  np.testing.assert_allclose(lce(x, W, b, y, label_smoothing=0.3),
                             [6e37, 3e37, 3e38, 2.107606], rtol=1e-5)
  np.testing.assert_allclose(lce(jnp.eye(3), W[:3], b, y[:3], label_smoothing=0.8),
                             [1.6e38, 8e37, 3e38], rtol=1e-5)
  # A class weight of ½ on a label at −3e38 below the max: ½·6e38 = 3e38.
  np.testing.assert_allclose(
      lce(jnp.eye(1), W[:1], b, jnp.array([2]), class_weights=jnp.array([1.0, 1.0, 0.5])), [3e38],
      rtol=1e-5)
  # Probability labels: ½·(log 2 + 6e38) = 3e38, ½·(log 2 + 3e38) ≈ 1.5e38, ½·6e38 = 3e38.
  t = jnp.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(lce(jnp.eye(3), W[:3], b, t), [3e38, 1.5e38, 3e38], rtol=1e-5)
  # Each equals the dense loss.
  for labels, kw in [(y, dict(label_smoothing=0.3)), (t, {})]:
    rows = labels.shape[0]
    np.testing.assert_allclose(lce(jnp.eye(rows), W[:rows], b, labels, **kw),
                               sj.cross_entropy(W[:rows], labels, **kw), rtol=1e-5)


def test_label_term_of_zero_weight_at_a_minus_inf_logit_is_zero_not_nan():
  """A class weight of 0 (or ε = 1) on a label whose logit is −inf: its term is 0, not
  0·inf = NaN, as in the dense loss (found by review: NaN before)."""
  x, W = jnp.eye(2), jnp.array([[1.0, 2.0, 3.0], [0.5, 0.0, 1.0]])
  b = jnp.array([-jnp.inf, 0.0, 0.0])  # class 0 is impossible
  y = jnp.array([0, 2])
  w = jnp.array([0.0, 1.0, 1.0])
  got = linear_cross_entropy(x, W, b, y, class_weights=w, reduction="none")
  want = sj.cross_entropy(x @ W + b[None, :], y, class_weights=w, reduction="none")
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[0] == 0.0
  got = linear_cross_entropy(x, W, b, y, label_smoothing=1.0, reduction="none")
  np.testing.assert_array_equal(got, [np.inf, np.inf])  # the smoothing term sees the −inf


@pytest.mark.parametrize("bias", [[0.0, -np.inf, 1.0, 0.0], [3e38, -3e38, 0.0, 1e4],
                                  [1e4, -1e4, 0.0, 0.0]])
def test_minus_inf_and_float_max_biases_equal_dense(bias):
  """A -inf bias masks a class; ±3e38 logits overflow the loss to +inf, never to NaN."""
  x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  W = jnp.array([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 3.0, 1.0]])
  b = jnp.array(bias, jnp.float32)
  y = jnp.array([0, 2, 3])
  got = jax.value_and_grad(lambda x, W, b: linear_cross_entropy(x, W, b, y, chunk_size=2),
                           argnums=(0, 1, 2))(x, W, b)
  want = jax.value_and_grad(lambda x, W, b: sj.cross_entropy(x @ W + b[None, :], y,
                                                               reduction="mean"),
                            argnums=(0, 1, 2))(x, W, b)
  assert not np.isnan(float(got[0]))
  np.testing.assert_array_equal(got[0], want[0])
  for g, w in zip(got[1], want[1], strict=True):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, atol=1e-6)


@pytest.mark.parametrize("offset", [1e4, 1e7, 3e38])
def test_tied_large_logits_split_the_gradient_exactly(offset):
  """Two tied logits of ``offset``: the gradient is [−½, ½] at any size. The backward's softmax
  used ``exp(o − LSE)`` with ``LSE = m + log s`` stored as one number, which rounds ``log s``
  away once ``|m| ≫ log s``: [−0.50011, 0.49989] at 1e4, [0, 1] at 3e38 (review)."""
  x, W, y = jnp.ones((1, 1)), jnp.zeros((1, 2)), jnp.array([0])
  g = jax.grad(lambda b: linear_cross_entropy(x, W, b, y))(jnp.full((2,), offset, jnp.float32))
  np.testing.assert_array_equal(g, [-0.5, 0.5])


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6])
def test_label_smoothing_at_large_logits_equals_dense(offset):
  """The smoothing term was ``Σa·LSE − Σ a_j o_j``, two large numbers that cancel: 3e-5
  relative off at logits near 1e4, 1% near 1e6 (review). It is now summed shifted by the max, as
  the soft labels' is."""
  x = jnp.eye(2)
  W = jnp.array([[0.5, -1.3, 0.2, 2.0, 0.7], [1.1, 0.0, -0.4, 0.3, 1.5]])
  b = offset + jnp.array([0.3, -0.2, 0.1, 0.0, 0.4])
  y = jnp.array([3, 4])
  for w in (None, jnp.array([1.0, 0.5, 2.0, 1.0, 0.0])):
    for chunk in (2, 5):
      got = linear_cross_entropy(x, W, b, y, label_smoothing=0.1, class_weights=w,
                                 chunk_size=chunk, reduction="none")
      want = sj.cross_entropy(x @ W + b[None, :], y, label_smoothing=0.1, class_weights=w,
                              reduction="none")
      np.testing.assert_allclose(got, want, rtol=2e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 4])
def test_minus_inf_logits_with_zero_targets_and_a_masked_first_block(chunk_size):
  """Classes masked by a −inf bias, with zero target (soft labels) or zero weight (class ids
  with smoothing): their terms are 0, not 0·(−inf) = NaN; and a first block of −inf logits
  only (chunk ≤ 3) no longer gives exp(−inf − −inf) = NaN (review)."""
  x = jnp.array([[0.5, -1.0], [1.0, 2.0]])
  W = 0.3 * jnp.ones((2, 6))
  b = jnp.array([-jnp.inf, -jnp.inf, -jnp.inf, 0.0, 1.0, -2.0])
  y = jnp.array([4, 5])
  t = jnp.array([[0.0, 0.0, 0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.2, 0.0, 0.8]])
  w = jnp.array([0.0, 0.0, 0.0, 1.0, 2.0, 1.0])
  for labels, kw in ((y, {}), (t, {}), (y, dict(label_smoothing=0.1, class_weights=w)),
                     (t, dict(class_weights=w))):
    got = jax.value_and_grad(
        lambda x, W, b, labels=labels, kw=kw: linear_cross_entropy(
            x, W, b, labels, chunk_size=chunk_size, **kw),
        argnums=(0, 1, 2))(x, W, b)
    want = jax.value_and_grad(
        lambda x, W, b, labels=labels, kw=kw: sj.cross_entropy(
            x @ W + b[None, :], labels, reduction="mean", **kw),
        argnums=(0, 1, 2))(x, W, b)
    assert np.isfinite(float(got[0])), (kw, got[0])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, w_ in zip(got[1], want[1], strict=True):
      np.testing.assert_allclose(g, w_, rtol=1e-5, atol=1e-7)
  # Smoothing without weights puts mass on the −inf classes: +inf, as dense.
  assert linear_cross_entropy(x, W, b, y, label_smoothing=0.1, chunk_size=chunk_size) == np.inf


# Biases that put +inf and −inf logits in every row, for q = 7: the +inf in a late block (the
# running sum rescaled from a finite max to +inf), in two blocks (a max that stays +inf), in the
# first block, and a row of −inf only.
_INF_BIASES = {
    "plus-inf-late": [0.0, 1.0, -1.0, 0.5, 2.0, np.inf, 0.0],
    "plus-inf-twice": [0.0, np.inf, -1.0, -np.inf, 2.0, np.inf, 0.0],
    "plus-inf-first": [np.inf, 1.0, -1.0, 0.5, 2.0, 3e38, -3e38],
    "all-minus-inf": [-np.inf] * 7,
}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
@pytest.mark.parametrize("bias", list(_INF_BIASES), ids=list(_INF_BIASES))
def test_infinite_logits_equal_the_dense_limits(bias, chunk_size):
  """Rows whose max is +inf, and rows of −inf: the loss and gradients are the dense loss's
  limits (softmax uniform over the +inf logits; 0 in a row of −inf), a loss of +inf where the
  target has mass on a logit infinitely below the max. They were NaN (exp(inf − inf), log 0;
  review of session 9)."""
  x = jnp.array([[1.0, 0.5], [-0.5, 2.0], [0.3, -1.0]])
  W = jnp.array([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.3], [1.0, 0.2, -0.3, 0.7, 0.0, 1.5, -2.0]])
  b = jnp.array(_INF_BIASES[bias], jnp.float32)
  ids = jnp.array([5, 1, 0])  # at a +inf logit in some cases, below it in others
  probs = jnp.array([[0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0],  # mass on the two +inf of "twice"
                     [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                     [0.2, 0.0, 0.3, 0.0, 0.5, 0.0, 0.0]])
  weights = jnp.array([1.0, 2.0, 0.5, 0.0, 1.0, 1.5, 1.0])
  ct = jnp.array([1.0, 0.5, 2.0])
  cases = [(ids, {}), (ids, dict(label_smoothing=0.1)), (ids, dict(class_weights=weights)),
           (probs, {}), (probs, dict(label_smoothing=0.2, class_weights=weights))]
  for labels, kw in cases:
    got = _value_and_grads(functools.partial(
        linear_cross_entropy, labels=labels, chunk_size=chunk_size, reduction="none", **kw),
        x, W, b, ct=ct)
    want = _value_and_grads(functools.partial(_dense, labels=labels, reduction="none", **kw),
                            x, W, b, ct=ct)
    losses = linear_cross_entropy(x, W, b, labels, chunk_size=chunk_size, reduction="none", **kw)
    np.testing.assert_array_equal(
        losses, _dense(x, W, b, labels, reduction="none", **kw), err_msg=str(kw))
    for leaf in jax.tree.leaves(want):  # the limits are not NaN, so NaN cannot pass as equal
      assert not np.any(np.isnan(leaf)), (bias, kw)
    _assert_close(got, want, rtol=1e-6, atol=1e-6)
  # Spot checks by hand: a label at the +inf logit costs log(#+inf logits) and gets −1 + 1/#;
  # a label below it costs +inf; in a row of −inf every label costs +inf and gets −1.
  loss = linear_cross_entropy(x, W, b, ids, chunk_size=chunk_size, reduction="none")
  db = jax.grad(lambda b: linear_cross_entropy(x[:1], W, b, ids[:1], chunk_size=chunk_size,
                                               reduction="sum"))(b)
  if bias == "plus-inf-twice":
    np.testing.assert_allclose(loss, [np.log(2), np.log(2), np.inf], rtol=1e-6)
    np.testing.assert_allclose(db, [0, 0.5, 0, 0, 0, -0.5, 0], atol=1e-7)
  elif bias == "all-minus-inf":
    np.testing.assert_array_equal(loss, [np.inf] * 3)
    np.testing.assert_array_equal(db, [0, 0, 0, 0, 0, -1, 0])


def test_masked_rows_reach_no_gradient_even_when_not_finite():
  """A masked-out example whose features hold NaN or inf: the loss and every gradient are those
  of the kept rows (the dense form's ``dW`` is NaN there: ``xᵀG`` multiplies the NaN by 0). It
  made ``dx``'s row, ``dW`` and ``db`` NaN (review of session 9)."""
  x, W, b, labels, _, mask = _problem()
  bad = x.at[1].set(jnp.nan).at[5, 2].set(jnp.inf)
  assert not mask[1] and not mask[5]
  got = _value_and_grads(functools.partial(
      linear_cross_entropy, labels=labels, chunk_size=8, where=mask), bad, W, b)
  clean = jnp.where(mask[:, None], x, 0.0)
  want = _value_and_grads(functools.partial(_dense, labels=labels, where=mask, reduction="mean"),
                          clean, W, b)
  _assert_close(got, want)
  assert np.all(np.asarray(got[1][0])[~np.asarray(mask)] == 0)


def test_masked_rows_with_non_finite_weights_biases_or_targets():
  """A masked-out row adds exactly 0 to every gradient, and its own dx is 0, whatever is not
  finite around it (review): an infinite weight (the zeroed row's logits are 0·inf = NaN; dW and
  db were all NaN), a NaN bias (the row's dx was NaN), a NaN target row."""
  x = jnp.array([[1.0, 0.5], [0.5, 2.0], [0.3, -1.0]])
  W = jnp.array([[0.5, -1.0, 2.0, 0.0, 1.0, -jnp.inf, 0.3], [1.0, 0.2, -0.3, 0.7, 0.0, 1.5, -2.0]])
  b = jnp.zeros(7)
  ids, mask = jnp.array([4, 1, 0]), jnp.array([True, False, True])
  probs = jnp.array([[0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0], [np.nan] * 7,
                     [0.2, 0.0, 0.3, 0.0, 0.5, 0.0, 0.0]])
  finite_W = W.at[0, 5].set(-0.5)
  cases = [(W, b, ids), (finite_W, b.at[1].set(jnp.nan), ids), (finite_W, b, probs)]
  for W_, b_, labels in cases:
    for chunk_size in (3, 7):
      got = _value_and_grads(functools.partial(
          linear_cross_entropy, labels=labels, chunk_size=chunk_size, where=mask), x, W_, b_)
      want = _value_and_grads(functools.partial(_dense, labels=labels, where=mask,
                                                reduction="mean"), x, W_, b_)
      (_, (got_dx, got_dW, got_db)), (_, (want_dx, want_dW, want_db)) = got, want
      np.testing.assert_array_equal(got_dx[1], [0.0, 0.0])  # dense: NaN in some of these cases
      _assert_close((got[0], got_dx[::2], got_dW, got_db), (want[0], want_dx[::2], want_dW,
                                                             want_db))
      if not np.isnan(float(b_[1])):
        assert np.all(np.isfinite(got_dW)) and np.all(np.isfinite(got_db))


@pytest.mark.parametrize("chunk_size", [3, 6])
def test_infinite_weight_in_the_columns_the_last_block_shares(chunk_size):
  """q = 7 in blocks of 3 or 6 (column 5 is shared either way): the last block re-reads columns of the one before, where G is set
  to 0. With an infinite weight there, 0·inf made dx NaN where the dense form gives ±inf (review);
  those weights are zeroed for dx."""
  x = jnp.array([[1.0, 0.5], [0.5, 2.0], [0.3, -1.0]])
  W = jnp.array([[0.5, -1.0, 2.0, 0.0, 1.0, -jnp.inf, 0.3], [1.0, 0.2, -0.3, 0.7, 0.0, 1.5, -2.0]])
  b = jnp.zeros(7)
  probs = jnp.array([[0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                     [0.2, 0.0, 0.3, 0.0, 0.5, 0.0, 0.0]])
  got = jax.grad(lambda x: linear_cross_entropy(x, W, b, probs, chunk_size=chunk_size))(x)
  want = jax.grad(lambda x: _dense(x, W, b, probs, reduction="mean"))(x)
  assert np.isinf(want[0, 0])  # the mass on column 5 meets its −inf weight
  np.testing.assert_allclose(got, want, rtol=1e-6)  # the same infinities, NaNs and values
