"""Tests for `softmax_jax.info`: entropy, surprisal, cross-entropy and KL divergence."""

import math

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import info

# ------------------------------------------------------------------------------------------------
# float64 numpy references, with 0 · log 0 = 0 and +inf where q = 0 < p.
# ------------------------------------------------------------------------------------------------


def _np_xlogy(p, y):
  """p · log y elementwise, float64, 0 where p = 0 (whatever y is)."""
  p = np.asarray(p, np.float64)
  y = np.asarray(y, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    out = p * np.log(y)
  return np.where(p > 0, out, 0.0)


def np_entropy(p, axis=-1):
  return -np.sum(_np_xlogy(p, p), axis=axis)


def np_cross_entropy(p, q, axis=-1):
  return -np.sum(_np_xlogy(p, q), axis=axis)


def np_kl(p, q, axis=-1):
  return np_cross_entropy(p, q, axis) - np_entropy(p, axis)


def np_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  e = np.exp(x - m)
  return e / np.sum(e, axis=axis, keepdims=True)


def _random_distributions(seed, shape, axis=-1):
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.05, 1.0, size=shape)
  return (w / w.sum(axis=axis, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Hand-computed values.
# ------------------------------------------------------------------------------------------------


class TestHandValues:

  def test_entropy_of_uniform_over_three(self):
    p = jnp.full((3,), 1 / 3, jnp.float32)
    np.testing.assert_allclose(info.entropy(p), math.log(3), rtol=1e-6)
    np.testing.assert_allclose(info.entropy(p, base=2), math.log2(3), rtol=1e-6)
    np.testing.assert_allclose(info.entropy(p, base=2), 1.5849625, rtol=1e-6)

  def test_entropy_of_fair_coin_is_one_bit(self):
    np.testing.assert_allclose(info.entropy(jnp.array([0.5, 0.5]), base=2), 1.0, rtol=1e-7)

  def test_entropy_of_hand_vector(self):
    p = jnp.array([0.5, 0.25, 0.25])
    # H = 0.5 log 2 + 2 · 0.25 log 4 = 1.5 log 2 nats = 1.5 bits.
    np.testing.assert_allclose(info.entropy(p), 1.5 * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(info.entropy(p, base=2), 1.5, rtol=1e-6)

  def test_entropy_of_point_mass_is_exactly_zero(self):
    p = jnp.array([1.0, 0.0, 0.0])
    h = info.entropy(p)
    assert h == 0.0
    assert not jnp.isnan(h)

  def test_entropy_gradient_at_point_mass_is_finite(self):
    g = jax.jit(jax.grad(info.entropy))(jnp.array([1.0, 0.0, 0.0]))
    assert jnp.all(jnp.isfinite(g)), g
    # At p = 1 the derivative of −p log p is −(log 1 + 1) = −1.
    np.testing.assert_allclose(g[0], -1.0, rtol=1e-6)

  def test_entropy_gradient_at_point_mass_is_finite_forward_mode(self):
    g = jax.jit(jax.jacfwd(info.entropy))(jnp.array([0.0, 1.0, 0.0]))
    assert jnp.all(jnp.isfinite(g)), g

  def test_surprisal_hand_values(self):
    np.testing.assert_allclose(info.surprisal(0.5, base=2), 1.0, rtol=1e-7)
    np.testing.assert_allclose(info.surprisal(0.25, base=2), 2.0, rtol=1e-7)
    np.testing.assert_allclose(info.surprisal(jnp.array(math.exp(-3.0))), 3.0, rtol=1e-6)
    assert info.surprisal(1.0) == 0.0

  def test_surprisal_of_impossible_event_is_inf(self):
    s = info.surprisal(0.0)
    assert s == jnp.inf
    s = info.surprisal(jnp.array([0.0, 0.5, 1.0]), base=2)
    np.testing.assert_array_equal(s, [np.inf, 1.0, 0.0])

  def test_surprisal_gradient(self):
    p = jnp.array([0.1, 0.5, 0.8])
    g = jax.jit(jax.grad(lambda p: jnp.sum(info.surprisal(p))))(p)
    np.testing.assert_allclose(g, -1 / p, rtol=1e-6)

  def test_cross_entropy_hand_value(self):
    p = jnp.array([0.5, 0.5, 0.0])
    q = jnp.array([0.25, 0.5, 0.25])
    # H(P, Q) = −(0.5 log 0.25 + 0.5 log 0.5) = 1.5 log 2.
    np.testing.assert_allclose(info.cross_entropy(p, q), 1.5 * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(info.cross_entropy(p, q, base=2), 1.5, rtol=1e-6)
    # KL = H(P, Q) − H(P) = 1.5 log 2 − log 2 = 0.5 log 2.
    np.testing.assert_allclose(info.kl_divergence(p, q), 0.5 * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(info.kl_divergence(p, q, base=2), 0.5, rtol=1e-6)

  def test_infinite_where_q_is_zero_and_p_is_not(self):
    p = jnp.array([0.5, 0.5, 0.0])
    q = jnp.array([1.0, 0.0, 0.0])
    assert info.cross_entropy(p, q) == jnp.inf
    assert info.kl_divergence(p, q) == jnp.inf
    assert info.kl_divergence(p, q, base=2) == jnp.inf

  def test_zero_q_where_p_is_zero_is_finite(self):
    # Shared zeros contribute nothing (no −inf − (−inf) = NaN).
    p = jnp.array([0.5, 0.5, 0.0])
    q = jnp.array([0.25, 0.75, 0.0])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    np.testing.assert_allclose(info.kl_divergence(p, q), expected, rtol=1e-6)
    np.testing.assert_allclose(info.kl_divergence(p, p), 0.0, atol=1e-7)

  def test_kl_of_a_distribution_with_itself_is_zero(self):
    p = jnp.asarray(_random_distributions(0, (4, 3)))
    np.testing.assert_allclose(info.kl_divergence(p, p), np.zeros(4), atol=1e-6)

  def test_cross_entropy_is_entropy_plus_kl(self):
    p = jnp.asarray(_random_distributions(1, (4, 3)))
    q = jnp.asarray(_random_distributions(2, (4, 3)))
    np.testing.assert_allclose(
        info.cross_entropy(p, q), info.entropy(p) + info.kl_divergence(p, q), rtol=1e-5,
        atol=1e-6)
    np.testing.assert_allclose(info.cross_entropy(p, q), np_cross_entropy(p, q), rtol=1e-5)
    np.testing.assert_allclose(info.kl_divergence(p, q), np_kl(p, q), rtol=1e-4, atol=1e-6)

  def test_batched_shapes(self):
    p = jnp.asarray(_random_distributions(3, (2, 4, 3)))

    @jax.jit
    def fn(p):
      return info.entropy(p), info.cross_entropy(p, p), info.kl_divergence(p, p), info.surprisal(p)

    h, ce, kl, s = fn(p)
    assert h.shape == ce.shape == kl.shape == (2, 4)
    assert s.shape == (2, 4, 3)
    np.testing.assert_allclose(h, np_entropy(p), rtol=1e-5)
    np.testing.assert_allclose(ce, np_entropy(p), rtol=1e-5)
    np.testing.assert_allclose(kl, np.zeros((2, 4)), atol=1e-6)

  def test_under_jit(self):
    p = jnp.asarray(_random_distributions(4, (4, 3)))
    q = jnp.asarray(_random_distributions(5, (4, 3)))
    np.testing.assert_allclose(jax.jit(info.entropy)(p), np_entropy(p), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(info.kl_divergence)(p, q), np_kl(p, q), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(
        jax.jit(lambda p, q: info.cross_entropy(p, q, base=2))(p, q),
        np_cross_entropy(p, q) / math.log(2), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# The outcome axis.
# ------------------------------------------------------------------------------------------------


class TestAxis:

  @pytest.mark.parametrize("axis", [0, -2])
  def test_axis_equals_moveaxis(self, axis):
    p = _random_distributions(10, (3, 4), axis=axis)
    q = _random_distributions(11, (3, 4), axis=axis)
    pm, qm = np.moveaxis(p, axis, -1), np.moveaxis(q, axis, -1)
    np.testing.assert_allclose(info.entropy(p, axis=axis), info.entropy(pm), rtol=1e-6)
    np.testing.assert_allclose(info.cross_entropy(p, q, axis=axis), info.cross_entropy(pm, qm),
                               rtol=1e-6)
    np.testing.assert_allclose(info.kl_divergence(p, q, axis=axis), info.kl_divergence(pm, qm),
                               rtol=1e-5, atol=1e-7)

  def test_middle_axis_under_jit(self):
    p = _random_distributions(12, (2, 3, 4), axis=1)
    q = _random_distributions(13, (2, 3, 4), axis=1)
    pm, qm = np.moveaxis(p, 1, -1), np.moveaxis(q, 1, -1)

    @jax.jit
    def fn(p, q):
      return (info.entropy(p, axis=1), info.cross_entropy(p, q, axis=1),
              info.kl_divergence(p, q, axis=1))

    h, ce, kl = fn(p, q)
    assert h.shape == (2, 4)
    np.testing.assert_allclose(h, np_entropy(pm), rtol=1e-5)
    np.testing.assert_allclose(ce, np_cross_entropy(pm, qm), rtol=1e-5)
    np.testing.assert_allclose(kl, np_kl(pm, qm), rtol=1e-4, atol=1e-6)

  def test_axis_zero_hand_value(self):
    # Columns are the distributions: uniform over 2 and a point mass.
    p = jnp.array([[0.5, 1.0], [0.5, 0.0]])
    np.testing.assert_allclose(info.entropy(p, axis=0), [math.log(2), 0.0], rtol=1e-6)

  def test_axis_out_of_range(self):
    with pytest.raises(ValueError, match="axis"):
      info.entropy(jnp.array([0.5, 0.5]), axis=1)

  def test_sum_check_follows_axis(self):
    # Rows sum to 1 but columns do not: fine along -1, an error along 0.
    p = jnp.array([[0.5, 0.5], [0.9, 0.1]])
    info.entropy(p, axis=-1)
    with pytest.raises(ValueError, match="sum to 1"):
      info.entropy(p, axis=0)


# ------------------------------------------------------------------------------------------------
# Gradients.
# ------------------------------------------------------------------------------------------------


class TestGradients:

  def test_check_grads(self, x64):
    p = jnp.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], jnp.float64)
    q = jnp.array([[0.1, 0.6, 0.3], [0.25, 0.25, 0.5]], jnp.float64)

    def fn(p, q):
      return (info.entropy(p), info.cross_entropy(p, q), info.kl_divergence(p, q, base=2),
              info.surprisal(q))

    # Under jit p and q are tracers, so the sum-to-1 value check does not reject the
    # finite-difference perturbations.
    check_grads(jax.jit(fn), (p, q), order=2, modes=("fwd", "rev"))

  def test_entropy_gradient_closed_form(self, x64):
    p = jnp.array([0.1, 0.2, 0.3, 0.4], jnp.float64)
    g, g2 = jax.jit(lambda p: (jax.grad(info.entropy)(p),
                               jax.grad(lambda p: info.entropy(p, base=2))(p)))(p)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(g, -(np.log(np.asarray(p)) + 1), rtol=1e-12)
    np.testing.assert_allclose(g2, -(np.log(np.asarray(p)) + 1) / math.log(2), rtol=1e-12)

  def test_kl_gradients_closed_form(self, x64):
    p = jnp.array([0.1, 0.2, 0.7], jnp.float64)
    q = jnp.array([0.3, 0.3, 0.4], jnp.float64)
    gp, gq = jax.jit(jax.grad(info.kl_divergence, argnums=(0, 1)))(p, q)
    np.testing.assert_allclose(gp, np.log(np.asarray(p) / np.asarray(q)) + 1, rtol=1e-12)
    np.testing.assert_allclose(gq, -np.asarray(p) / np.asarray(q), rtol=1e-12)

  @pytest.mark.parametrize("fn", [info.cross_entropy, info.kl_divergence])
  def test_gradients_with_zeros_are_finite(self, fn):
    p = jnp.array([0.5, 0.5, 0.0])
    q = jnp.array([0.25, 0.75, 0.0])
    for grad in (jax.grad(fn, argnums=(0, 1)), jax.jacfwd(fn, argnums=(0, 1))):
      gp, gq = jax.jit(grad)(p, q)
      assert jnp.all(jnp.isfinite(gp)) and jnp.all(jnp.isfinite(gq)), (fn, gp, gq)
      np.testing.assert_allclose(gq[:2], [-2.0, -2 / 3], rtol=1e-6)

  @pytest.mark.parametrize("mode", ["rev", "fwd"])
  def test_derivative_in_a_zero_p_beside_a_positive_q_is_minus_log_q(self, x64, mode):
    # H(P, Q) = −Σ p log q is linear in p: its gradient in p is −log q everywhere, p = 0
    # included (it used to be 0 there, from the 0·log 0 select).
    p = jnp.array([1.0, 0.0, 0.0], jnp.float64)
    q = jnp.array([0.5, 0.25, 0.25], jnp.float64)
    jac = jax.grad if mode == "rev" else jax.jacfwd
    g_ce = jax.jit(jac(info.cross_entropy))(p, q)
    np.testing.assert_allclose(g_ce, [math.log(2), math.log(4), math.log(4)], rtol=1e-14)
    np.testing.assert_allclose(jax.jit(jac(lambda p, q: info.cross_entropy(p, q, base=2)))(p, q),
                               [1.0, 2.0, 2.0], rtol=1e-14)
    # With the convention that p log p has derivative 0 at p = 0 (entropy), KL = H(P, Q) − H(P)
    # holds for the gradients: 1 + log(1/0.5) at p = 1, −log q beside it.
    g_h = jax.jit(jac(info.entropy))(p)
    np.testing.assert_allclose(g_h, [-1.0, 0.0, 0.0], rtol=1e-14)
    g_kl = jax.jit(jac(info.kl_divergence))(p, q)
    np.testing.assert_allclose(g_kl, [1 + math.log(2), math.log(4), math.log(4)], rtol=1e-14)
    np.testing.assert_allclose(g_kl, g_ce - g_h, rtol=1e-14)

  def test_forward_mode_in_q_where_q_is_zero_below_a_positive_p_is_not_nan(self):
    # H and KL are +inf there; a constant p's zero tangent must not meet log q = −inf (0·inf =
    # NaN, found by review of the custom JVP); the derivative is taken as 0, as before it.
    p, q = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    for fn in (info.cross_entropy, info.kl_divergence):
      g = jax.jacfwd(fn, argnums=1)(p, q)
      np.testing.assert_array_equal(g, [0.0, 0.0])

  def test_second_derivatives_with_a_zero_p(self, x64):
    # ∂²/∂p∂q of −p log q is −1/q, at p = 0 too; ∂²/∂q² is p/q², 0 at p = 0. The KL's Hessian
    # in p is diag(1/p) where p > 0 and 0 (the convention) at p = 0.
    p = jnp.array([0.6, 0.4, 0.0], jnp.float64)
    q = jnp.array([0.5, 0.25, 0.25], jnp.float64)
    h = jax.jit(jax.hessian(info.cross_entropy, argnums=(0, 1)))(p, q)
    np.testing.assert_allclose(h[0][0], np.zeros((3, 3)), atol=0)
    np.testing.assert_allclose(h[0][1], -np.diag(1 / np.asarray(q)), rtol=1e-14)
    np.testing.assert_allclose(h[1][1], np.diag(np.asarray(p) / np.asarray(q) ** 2), rtol=1e-14)
    hk = jax.jit(jax.hessian(info.kl_divergence))(p, q)
    np.testing.assert_allclose(hk, np.diag([1 / 0.6, 1 / 0.4, 0.0]), rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# Stability: distributions made by softmax of extreme logits.
# ------------------------------------------------------------------------------------------------

_EXTREME_LOGITS = np.array([
    [1e4, -1e4, 0.0],
    [1e4, 1e4 - 1.0, -1e4],
    [3e38, -3e38, 0.0],
    [3e38, 3e38, -3e38],
    [-3e38, 0.0, 1.0],
    [-np.inf, 0.0, 1.0],
    [-np.inf, 2.0, -np.inf],
    [0.0, 0.0, 0.0],
], np.float32)


class TestStability:

  @pytest.mark.parametrize("block", [slice(0, 4), slice(4, 8)])
  def test_entropy_of_extreme_softmax(self, block):
    logits = _EXTREME_LOGITS[block]
    p = sj.softmax(jnp.asarray(logits))
    h = info.entropy(p)
    assert not jnp.any(jnp.isnan(h)), h
    assert jnp.all(jnp.isfinite(h)), h
    np.testing.assert_allclose(h, np_entropy(np_softmax(logits.astype(np.float64))), atol=1e-6,
                               rtol=1e-5)

  def test_kl_and_cross_entropy_of_extreme_softmax(self):
    # p: the first four rows, q: the last four reversed; several pairs have q = 0 < p (+inf),
    # none may be NaN.
    p_logits, q_logits = _EXTREME_LOGITS[:4], _EXTREME_LOGITS[:3:-1]
    p, q = sj.softmax(jnp.asarray(p_logits)), sj.softmax(jnp.asarray(q_logits))
    p64 = np_softmax(p_logits.astype(np.float64))
    q64 = np_softmax(q_logits.astype(np.float64))
    kl = info.kl_divergence(p, q)
    ce = info.cross_entropy(p, q)
    assert not jnp.any(jnp.isnan(kl)), kl
    assert not jnp.any(jnp.isnan(ce)), ce
    np.testing.assert_allclose(kl, np_kl(p64, q64), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ce, np_cross_entropy(p64, q64), atol=1e-5, rtol=1e-5)
    # With itself: KL is 0 and H(P, P) = H(P), all finite.
    np.testing.assert_allclose(info.kl_divergence(p, p), np.zeros(p.shape[:-1]), atol=1e-6)
    np.testing.assert_allclose(info.cross_entropy(p, p), np_entropy(p64), atol=1e-6, rtol=1e-5)

  @pytest.mark.parametrize("block", [slice(0, 4), slice(4, 8)])
  def test_kl_against_uniform_of_extreme_softmax_is_finite(self, block):
    logits = _EXTREME_LOGITS[block]
    p = sj.softmax(jnp.asarray(logits))
    u = jnp.full(p.shape, 1 / 3)
    kl = info.kl_divergence(p, u)
    assert jnp.all(jnp.isfinite(kl)), kl
    p64 = np_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(kl, math.log(3) - np_entropy(p64), atol=1e-5)

  def test_gradient_of_entropy_of_softmax_at_extreme_logits_is_finite(self):
    g = jax.jit(jax.grad(lambda x: jnp.sum(info.entropy(sj.softmax(x)))))(
        jnp.asarray(_EXTREME_LOGITS))
    assert not jnp.any(jnp.isnan(g)), g


  @pytest.mark.parametrize("name,bad", [
      (name, bad) for name in ("entropy", "surprisal", "cross_entropy_p", "cross_entropy_q",
                               "kl_divergence_p", "kl_divergence_q")
      for bad in (np.nan, -0.25) if (name, bad) != ("cross_entropy_p", -0.25)])  # no log of p
  def test_bad_entry_under_plain_jit_gives_nan(self, name, bad):
    # Unchecked (plain jit), a NaN probability, or a negative one whose log is taken, is not the
    # 0 of an impossible event: its row is NaN, never a finite number or ±inf (it was 0.69 for
    # entropy([nan, .5, .5]), +inf for surprisal(nan)). The other row is unaffected.
    bad_rows = jnp.array([[bad, 0.5, 0.75], [0.25, 0.25, 0.5]], jnp.float32)
    good = jnp.array([[0.2, 0.3, 0.5], [0.5, 0.25, 0.25]], jnp.float32)
    fn = {"entropy": info.entropy, "surprisal": lambda p: info.surprisal(p)[:, 0],
          "cross_entropy_p": lambda p: info.cross_entropy(p, good),
          "cross_entropy_q": lambda q: info.cross_entropy(good, q),
          "kl_divergence_p": lambda p: info.kl_divergence(p, good),
          "kl_divergence_q": lambda q: info.kl_divergence(good, q)}[name]
    out = np.asarray(jax.jit(fn)(bad_rows))
    assert np.isnan(out[0]), out
    assert np.isfinite(out[1]), out


# ------------------------------------------------------------------------------------------------
# Laws (hypothesis).
# ------------------------------------------------------------------------------------------------


@st.composite
def distributions(draw, num_classes, allow_zeros=True):
  lo = 0.0 if allow_zeros else 0.01
  w = np.asarray(draw(st.lists(st.floats(lo, 1.0), min_size=num_classes,
                               max_size=num_classes)), np.float64)
  hypothesis.assume(w.sum() > 0.01)
  d = (w / w.sum()).astype(np.float32)
  # No float32 subnormals: XLA:CPU flushes them to 0 in some versions (jax 0.4.35 does, 0.10.2
  # does not), and the float64 reference would then see another distribution (q = 5.9e-39:
  # KL 88.03 in NumPy, +inf from a flushed q).
  return np.where(d < np.finfo(np.float32).tiny, 0, d).astype(np.float32)


@st.composite
def distribution_pairs(draw, allow_zeros=True):
  c = draw(st.sampled_from([2, 3]))
  return draw(distributions(c, allow_zeros)), draw(distributions(c, allow_zeros))


_TOL = 1e-5


class TestLaws:

  @hypothesis.settings(max_examples=25)
  @hypothesis.given(distribution_pairs())
  def test_gibbs_inequality(self, pq):
    p, q = pq
    assert info.cross_entropy(p, q) >= info.entropy(p) - _TOL

  @hypothesis.settings(max_examples=25)
  @hypothesis.given(distribution_pairs())
  def test_kl_is_nonnegative_and_matches_reference(self, pq):
    p, q = pq
    kl = info.kl_divergence(p, q)
    assert not jnp.isnan(kl)
    assert kl >= -_TOL
    np.testing.assert_allclose(kl, np_kl(p, q), atol=1e-5, rtol=1e-4)

  @hypothesis.settings(max_examples=20)
  @hypothesis.given(st.sampled_from([2, 3]).flatmap(distributions))
  def test_kl_is_zero_for_equal_distributions(self, p):
    np.testing.assert_allclose(info.kl_divergence(p, p), 0.0, atol=_TOL)
    np.testing.assert_allclose(info.cross_entropy(p, p), info.entropy(p), atol=_TOL)

  @hypothesis.settings(max_examples=25)
  @hypothesis.given(distribution_pairs())
  def test_kl_is_positive_when_distributions_differ(self, pq):
    p, q = pq
    l1 = float(np.abs(p.astype(np.float64) - q).sum())
    hypothesis.assume(l1 > 0.05)
    kl = float(info.kl_divergence(p, q))
    assert kl > 0
    # Pinsker: KL ≥ ½ ‖P − Q‖₁², so a margin in L1 is a margin in KL.
    assert kl >= 0.5 * l1**2 - _TOL

  @hypothesis.settings(max_examples=20)
  @hypothesis.given(distribution_pairs(allow_zeros=False))
  def test_cross_entropy_is_entropy_plus_kl(self, pq):
    p, q = pq
    np.testing.assert_allclose(info.cross_entropy(p, q),
                               info.entropy(p) + info.kl_divergence(p, q), atol=_TOL, rtol=1e-5)

  @hypothesis.settings(max_examples=20)
  @hypothesis.given(distribution_pairs())
  def test_bits_are_nats_over_log_two(self, pq):
    p, q = pq
    ln2 = math.log(2)
    np.testing.assert_allclose(info.entropy(p, base=2), info.entropy(p) / ln2, rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(info.cross_entropy(p, q, base=2), info.cross_entropy(p, q) / ln2,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(info.kl_divergence(p, q, base=2), info.kl_divergence(p, q) / ln2,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(info.surprisal(p, base=2), info.surprisal(p) / ln2, rtol=1e-6)

  @hypothesis.settings(max_examples=20)
  @hypothesis.given(st.sampled_from([2, 3]).flatmap(distributions))
  def test_entropy_bounds(self, p):
    h = info.entropy(p)
    assert -_TOL <= h <= math.log(len(p)) + _TOL


# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------

_P = jnp.array([0.2, 0.3, 0.5])
_Q = jnp.array([0.3, 0.3, 0.4])


class TestBadInput:

  @pytest.mark.parametrize("base", [0, 1, -2, float("nan"), 1.0, float("inf")])
  def test_bad_base(self, base):
    with pytest.raises(ValueError, match="base"):
      info.entropy(_P, base=base)
    with pytest.raises(ValueError, match="base"):
      info.cross_entropy(_P, _Q, base=base)
    with pytest.raises(ValueError, match="base"):
      info.kl_divergence(_P, _Q, base=base)
    with pytest.raises(ValueError, match="base"):
      info.surprisal(_P, base=base)

  def test_negative_entry_names_the_value(self):
    bad = jnp.array([1.5, -0.5, 0.0])
    with pytest.raises(ValueError, match=r"-0\.5"):
      info.entropy(bad)
    with pytest.raises(ValueError, match=r"-0\.5"):
      info.cross_entropy(bad, _Q)
    with pytest.raises(ValueError, match=r"-0\.5"):
      info.kl_divergence(_P, bad)

  def test_not_summing_to_one(self):
    bad = jnp.array([0.5, 0.4, 0.0])
    with pytest.raises(ValueError, match="sum to 1"):
      info.entropy(bad)
    with pytest.raises(ValueError, match="sum to 1"):
      info.cross_entropy(_P, bad)
    with pytest.raises(ValueError, match="sum to 1"):
      info.kl_divergence(bad, _Q)

  def test_nan_entry(self):
    with pytest.raises(ValueError):
      info.entropy(jnp.array([0.5, jnp.nan, 0.5]))

  def test_shape_mismatch(self):
    with pytest.raises(ValueError, match="shape"):
      info.cross_entropy(_P, jnp.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="shape"):
      info.kl_divergence(jnp.stack([_P, _P]), _Q)

  def test_integer_input(self):
    with pytest.raises(TypeError):
      info.entropy(jnp.array([1, 0, 0]))
    with pytest.raises(TypeError):
      info.cross_entropy(jnp.array([1, 0, 0]), _Q)
    with pytest.raises(TypeError):
      info.kl_divergence(_P, jnp.array([0, 0, 1]))
    with pytest.raises(TypeError):
      info.surprisal(jnp.array([0, 1]))

  def test_scalar_distribution(self):
    with pytest.raises(ValueError):
      info.entropy(jnp.array(1.0))

  @pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
  def test_surprisal_out_of_range(self, p):
    with pytest.raises(ValueError, match="probabilities"):
      info.surprisal(p)

  def test_surprisal_out_of_range_names_the_value(self):
    with pytest.raises(ValueError, match=r"1\.5"):
      info.surprisal(jnp.array([0.5, 1.5]))


class TestCheckedUnderJit:

  def test_entropy(self):
    fn = jax.jit(sj.checked(lambda p: info.entropy(p)))
    err, out = fn(_P)
    assert err.get() is None
    np.testing.assert_allclose(out, np_entropy(_P), rtol=1e-6)
    err, _ = fn(jnp.array([1.5, -0.5, 0.0]))
    assert err.get() is not None
    assert "must be probabilities" in err.get()
    assert "-0.5" in err.get()
    err, _ = fn(jnp.array([0.5, 0.4, 0.0]))
    assert err.get() is not None
    assert "sum to 1" in err.get()
    with pytest.raises(ValueError, match="sum to 1"):
      err.throw()

  def test_cross_entropy_and_kl(self):
    bad = jnp.array([1.5, -0.5, 0.0])
    for fn in (info.cross_entropy, info.kl_divergence):
      checked = jax.jit(sj.checked(fn))
      err, _ = checked(_P, _Q)
      assert err.get() is None
      err, _ = checked(_P, bad)
      assert err.get() is not None and "-0.5" in err.get()
      err, _ = checked(bad, _Q)
      assert err.get() is not None and "-0.5" in err.get()

  def test_surprisal(self):
    checked = jax.jit(sj.checked(lambda p: info.surprisal(p, base=2)))
    err, out = checked(jnp.array([0.5, 0.25]))
    assert err.get() is None
    np.testing.assert_allclose(out, [1.0, 2.0], rtol=1e-6)
    err, _ = checked(jnp.array([0.5, 1.5]))
    assert err.get() is not None and "1.5" in err.get()

  def test_checked_gradient(self):
    fn = jax.jit(sj.checked(jax.grad(info.entropy)))
    err, g = fn(_P)
    assert err.get() is None
    np.testing.assert_allclose(g, -(np.log(np.asarray(_P)) + 1), rtol=1e-6)
    err, _ = fn(jnp.array([0.5, 0.4, 0.0]))
    assert err.get() is not None and "sum to 1" in err.get()

  def test_static_errors_raise_at_trace_time(self):
    with pytest.raises(TypeError):
      jax.jit(sj.checked(lambda p: info.entropy(p)))(jnp.array([1, 0, 0]))
    with pytest.raises(ValueError, match="base"):
      jax.jit(sj.checked(lambda p: info.entropy(p, base=1)))(_P)


# ------------------------------------------------------------------------------------------------
# dtypes.
# ------------------------------------------------------------------------------------------------


class TestDtypes:

  @pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
  def test_half_precision_gives_float32(self, dtype):
    p = jnp.array([0.25, 0.25, 0.5], dtype)
    q = jnp.array([0.5, 0.25, 0.25], dtype)
    h = info.entropy(p)
    assert h.dtype == jnp.float32
    np.testing.assert_allclose(h, 1.5 * math.log(2), rtol=1e-6)
    assert info.cross_entropy(p, q).dtype == jnp.float32
    assert info.kl_divergence(p, q).dtype == jnp.float32
    assert info.surprisal(p).dtype == jnp.float32
    np.testing.assert_allclose(info.kl_divergence(p, q), 0.25 * math.log(2), rtol=1e-6)

  def test_bfloat16_softmax_is_accepted(self):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.bfloat16)
    p = sj.softmax(x)
    assert p.dtype == jnp.bfloat16
    h = info.entropy(p)
    assert h.dtype == jnp.float32
    np.testing.assert_allclose(h, np_entropy(np.asarray(p, np.float64)), rtol=1e-5)

  def test_float32_stays_float32(self):
    assert info.entropy(_P).dtype == jnp.float32

  def test_float64_stays_float64(self, x64):
    p = jnp.array([0.2, 0.3, 0.5], jnp.float64)
    h = jax.jit(info.entropy)(p)
    assert h.dtype == jnp.float64
    np.testing.assert_allclose(h, np_entropy(p), rtol=1e-14)
