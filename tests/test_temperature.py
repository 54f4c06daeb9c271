"""Tests for softmax_jax.temperature: Q ∝ P^α as a temperature, and temperature scaling."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import temperature as tm

INF = np.inf


# --- power_to_temperature / temperature_to_power ------------------------------------------------


def test_power_to_temperature_hand_values():
  assert tm.power_to_temperature(0.5) == 2.0  # α = 1/2 doubles T
  assert tm.power_to_temperature(2.0) == 0.5  # α = 2 halves it
  assert tm.power_to_temperature(3.0, temperature=3.0) == 1.0
  assert tm.temperature_to_power(2.0) == 0.5
  assert tm.temperature_to_power(0.5) == 2.0
  assert tm.temperature_to_power(tm.power_to_temperature(0.7, temperature=1.3),
                                 temperature=1.3) == pytest.approx(0.7, rel=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, INF, math.nan])
def test_power_to_temperature_rejects_non_positive(bad):
  with pytest.raises(ValueError, match="alpha must be a positive finite number"):
    tm.power_to_temperature(bad)
  with pytest.raises(ValueError, match="temperature must be a positive finite number"):
    tm.power_to_temperature(1.0, temperature=bad)
  with pytest.raises(ValueError, match="new_temperature must be a positive finite number"):
    tm.temperature_to_power(bad)


def test_power_to_temperature_rejects_non_numbers():
  with pytest.raises(TypeError, match="alpha"):
    tm.power_to_temperature(True)
  with pytest.raises(TypeError, match="alpha"):
    tm.power_to_temperature("2")


# --- power_distribution -------------------------------------------------------------------------


def test_power_to_temperature_extremes():
  # Exact quotients at the float32 maximum and tiny powers; a quotient outside float64 (inf, or
  # 0, neither a temperature) raises instead of being returned.
  assert tm.power_to_temperature(3e38) == 1 / 3e38
  assert tm.power_to_temperature(1e-30, temperature=3e38) == 3e38 / 1e-30
  assert tm.temperature_to_power(3e38, temperature=3e38) == 1.0
  with pytest.raises(ValueError, match=r"temperature / new_temperature = 1\.0 / 5e-324 .* inf"):
    tm.temperature_to_power(5e-324)  # the smallest subnormal: T' is valid, T / T' overflows
  with pytest.raises(ValueError, match=r"temperature / alpha = 1e\+300 / 1e-300 .* inf"):
    tm.power_to_temperature(1e-300, temperature=1e300)
  with pytest.raises(ValueError, match=r"temperature / alpha = 1e-300 / 1e\+300 .* 0\.0"):
    tm.power_to_temperature(1e300, temperature=1e-300)
  with pytest.raises(ValueError, match=r"temperature / new_temperature .* 0\.0"):
    tm.temperature_to_power(1e300, temperature=1e-300)


def test_power_distribution_hand_values():
  power = jax.jit(functools.partial(tm.power_distribution, alpha=2.0))
  # [1/2, 1/4, 1/4]² = [1/4, 1/16, 1/16], which sums to 3/8.
  np.testing.assert_allclose(power(jnp.array([0.5, 0.25, 0.25])), [2 / 3, 1 / 6, 1 / 6],
                             rtol=1e-6)
  np.testing.assert_allclose(tm.power_distribution(jnp.array([0.5, 0.25, 0.25]), alpha=1.0),
                             [0.5, 0.25, 0.25], rtol=1e-6)
  # An impossible outcome stays impossible at every α.
  np.testing.assert_array_equal(tm.power_distribution(jnp.array([0.5, 0.5, 0.0]), alpha=3.0),
                                [0.5, 0.5, 0.0])


def test_power_is_a_change_of_temperature():
  o = jax.random.normal(jax.random.PRNGKey(0), (6, 5)) * 3
  for temperature in (0.3, 1.0, 4.0):
    p = sj.softmax(o, temperature=temperature)
    for alpha in (0.5, 2.0, 0.1, 3.7):
      q = tm.power_distribution(p, alpha=alpha)
      expected = sj.softmax(o, temperature=tm.power_to_temperature(alpha,
                                                                   temperature=temperature))
      np.testing.assert_allclose(q, expected, atol=1e-6, rtol=1e-5, err_msg=f"{temperature=}, "
                                 f"{alpha=}")


def test_power_distribution_limits_split_ties():
  p = jnp.array([0.4, 0.4, 0.15, 0.05, 0.0])
  np.testing.assert_allclose(tm.power_distribution(p, alpha=1e4), [0.5, 0.5, 0, 0, 0], atol=1e-7)
  # α → 0: uniform over the support (the impossible outcome keeps 0).
  np.testing.assert_allclose(tm.power_distribution(p, alpha=1e-7), [0.25] * 4 + [0.0], atol=1e-6)


def test_power_distribution_axis():
  p = sj.softmax(jax.random.normal(jax.random.PRNGKey(1), (3, 4, 5)), axis=1)
  out = tm.power_distribution(p, alpha=2.5, axis=1)
  moved = tm.power_distribution(jnp.moveaxis(p, 1, -1), alpha=2.5)
  np.testing.assert_allclose(out, jnp.moveaxis(moved, -1, 1), rtol=1e-6, atol=1e-7)


def test_power_distribution_extreme_inputs_no_nan():
  tiny = float(jnp.finfo(jnp.float32).tiny)
  p = jnp.array([1 - 2 * tiny, tiny, tiny, 0.0])
  for alpha in (1e-30, 1e-3, 1.0, 1e3, 3e38):
    q = tm.power_distribution(p, alpha=alpha)
    assert np.isfinite(q).all() and float(jnp.sum(q)) == pytest.approx(1.0, abs=1e-6)
  # The softmax of ±3e38 and −inf logits, raised to powers.
  p = sj.softmax(jnp.array([3e38, -3e38, -INF, 1e4]))
  np.testing.assert_array_equal(tm.power_distribution(p, alpha=0.01), [1.0, 0.0, 0.0, 0.0])
  g = jax.grad(lambda a: tm.power_distribution(jnp.array([0.7, 0.3, 0.0]), alpha=a)[0])(2.0)
  assert np.isfinite(g)


def test_power_distribution_nan_under_plain_jit_is_nan():
  # Unchecked, a NaN probability is not an impossible outcome: its row is NaN (it was
  # [0, .5, .5], a finite distribution).
  p = jnp.array([[np.nan, 0.5, 0.5], [0.0, 0.25, 0.75]])
  for alpha in (2.0, jnp.float32(0.5)):
    q = np.asarray(jax.jit(lambda p, a: tm.power_distribution(p, alpha=a))(p, alpha))
    assert np.all(np.isnan(q[0])), q
    np.testing.assert_allclose(q[1], np.array([0, 0.25, 0.75])**float(alpha)
                               / np.sum(np.array([0.25, 0.75])**float(alpha)), rtol=1e-6)


def test_power_distribution_grads():
  p = jnp.array([0.6, 0.3, 0.1])
  f = jax.jit(lambda a: tm.power_distribution(p, alpha=a))
  check_grads(f, (jnp.float32(1.7),), order=2, modes=("rev",), atol=1e-2, rtol=1e-2)
  # d Q / d α in closed form: Q ⊙ (log p − Σ Q log p).
  q = f(1.7)
  expected = q * (jnp.log(p) - jnp.sum(q * jnp.log(p)))
  np.testing.assert_allclose(jax.jacfwd(f)(jnp.float32(1.7)), expected, rtol=1e-5, atol=1e-7)
  g = jax.jit(lambda p: tm.power_distribution(p, alpha=2.0))
  check_grads(g, (p,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_power_distribution_jacobian_at_a_zero_entry(mode):
  # At α = 1, Q = P/ΣP is smooth at p_0 = 0: its column is δ_i0/S − Q_i/S = [1, −0.4, −0.6]
  # (it was 0, the masked entry being a constant). At α = 2 the slope of p² at 0 is 0, exactly;
  # at α = ½ it is +inf, and 0 is the documented convention.
  p = jnp.array([0.0, 0.4, 0.6])
  jac = jax.jacrev if mode == "rev" else jax.jacfwd
  for alpha in (1.0, jnp.float32(1.0)):
    got = jax.jit(jac(lambda p, a=alpha: tm.power_distribution(p, alpha=a)))(p)
    np.testing.assert_allclose(got, jac(lambda p: p / jnp.sum(p))(p), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[:, 0], [1.0, -0.4, -0.6], rtol=1e-6)
  for alpha in (2.0, 0.5):
    got = jac(lambda p, a=alpha: tm.power_distribution(p, alpha=a))(p)
    np.testing.assert_array_equal(got[:, 0], [0.0, 0.0, 0.0])
    assert np.isfinite(got).all()
  # The value is untouched: Q = P at α = 1 (to an ulp: jax 0.4.35 rounds one entry differently).
  np.testing.assert_allclose(tm.power_distribution(p, alpha=1.0), p, rtol=2e-7)


def test_power_distribution_bad_input():
  with pytest.raises(ValueError, match="alpha must be a positive finite number; got 0.0"):
    tm.power_distribution(jnp.array([0.5, 0.5]), alpha=0.0)
  with pytest.raises(ValueError, match="alpha must be a positive finite number"):
    tm.power_distribution(jnp.array([0.5, 0.5]), alpha=jnp.float32(-1.0))
  with pytest.raises(TypeError, match="alpha must be a positive float scalar"):
    tm.power_distribution(jnp.array([0.5, 0.5]), alpha=jnp.ones(2))
  with pytest.raises(ValueError, match="p must sum to 1"):
    tm.power_distribution(jnp.array([0.5, 0.6]), alpha=2.0)
  with pytest.raises(ValueError, match="p must be probabilities"):
    tm.power_distribution(jnp.array([1.5, -0.5]), alpha=2.0)
  with pytest.raises(TypeError, match="floating-point"):
    tm.power_distribution(jnp.array([1, 0]), alpha=2.0)
  with pytest.raises(ValueError, match="scalar"):
    tm.power_distribution(jnp.float32(1.0), alpha=2.0)


# --- temperature_nll ----------------------------------------------------------------------------


class TestTemperatureNLL:

  def setup_method(self):
    # optax's hand vectors: at T = 1 the losses are [9.00013, 3.0696733].
    self.logits = jnp.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]])
    self.labels = jnp.array([1, 0])

  def test_hand_values(self):
    nll = jax.jit(functools.partial(tm.temperature_nll, temperature=1.0))
    np.testing.assert_allclose(nll(self.logits, self.labels), (9.00013 + 3.0696733) / 2,
                               rtol=1e-5)
    o = np.asarray(self.logits, np.float64) / 2.0
    ref = np.mean(np.log(np.exp(o).sum(1)) - o[[0, 1], [1, 0]])
    np.testing.assert_allclose(tm.temperature_nll(self.logits, self.labels, temperature=2.0), ref,
                               rtol=1e-6)

  def test_grads(self):
    f = jax.jit(lambda t: tm.temperature_nll(self.logits, self.labels, temperature=t))
    check_grads(f, (jnp.float32(1.5),), order=2, modes=("rev",), atol=1e-2, rtol=1e-2)
    # d NLL / dT = −(1/T²) · mean(E_p[o] − o_y), p = softmax(o / T).
    t = 1.5
    p = sj.softmax(self.logits, temperature=t)
    d_beta = jnp.mean(jnp.sum(p * self.logits, 1) - self.logits[jnp.arange(2), self.labels])
    np.testing.assert_allclose(jax.grad(f)(jnp.float32(t)), -d_beta / t**2, rtol=1e-5)

  def test_small_spread_at_small_temperature_keeps_float32_accuracy(self):
    # Logits 1e-6 apart at T = 1e-6: NLL = log(1 + e^−1), dNLL/dT = (Δ/T²)·σ(−1) = 1e6·0.268941.
    # Shifting by the log-sum-exp first rounded the logits to 0.69's resolution (6e-8), which
    # 1/T magnified: 0.2968 and 205348.
    o = jnp.array([[0.0, 1e-6]], jnp.float32)
    f = jax.jit(lambda t: tm.temperature_nll(o, jnp.array([1]), temperature=t))
    np.testing.assert_allclose(f(jnp.float32(1e-6)), np.log1p(np.exp(-1.0)), rtol=1e-6)
    sigma = 1 / (1 + np.e)
    np.testing.assert_allclose(jax.grad(f)(jnp.float32(1e-6)), 1e6 * sigma, rtol=1e-5)

  @pytest.mark.parametrize("mode", ["rev", "fwd"])
  def test_gradient_at_extreme_temperatures(self, mode):
    # Float32 T = 1e-20: 1/T and its derivative −1/T² overflowed, and dNLL/dT was NaN. The label
    # at the max has NLL ≈ 0 at every small T (derivative 0); one 2 below it has NLL 2/T and the
    # derivative −2/T² = −2e40, −inf in float32. At T = 1e20 the derivative is below the range.
    o = jnp.array([[0.0, -1.0, 2.0]], jnp.float32)
    jac = jax.grad if mode == "rev" else jax.jacfwd
    for t, label, want in ((1e-20, 2, 0.0), (1e-20, 0, -np.inf), (1e20, 2, 0.0)):
      f = jax.jit(jac(lambda t, y=label: tm.temperature_nll(o, jnp.array([y]), temperature=t)))
      np.testing.assert_array_equal(f(jnp.float32(t)), want, err_msg=f"T = {t}, label {label}")

  def test_extreme_logits_no_nan(self):
    o = jnp.array([[3e38, -3e38, 0.0], [-INF, 1e4, -1e4], [1e4, -1e4, 0.0], [-3e38, -3e38, -INF]])
    y = jnp.array([0, 1, 2, 1])
    f = jax.value_and_grad(lambda t: tm.temperature_nll(o, y, temperature=t))
    for t in (1e-3, 0.5, 1.0, 1e3):
      value, grad = f(jnp.float32(t))
      assert not np.isnan(value) and not np.isnan(grad), (t, value, grad)
    # Row 2 alone: the loss is 1e4/T, finite and exact.
    np.testing.assert_allclose(tm.temperature_nll(o[2:3], y[2:3], temperature=2.0), 5e3, rtol=1e-6)
    # A true class of probability 0 gives +inf, not NaN.
    assert tm.temperature_nll(o[1:2], jnp.array([0]), temperature=1.0) == INF

  @pytest.mark.parametrize("t", [1e-3, 0.5, 1.0, 1e3])
  def test_extreme_logits_gradient_closed_form(self, t):
    # d NLL / dT = −(1/T²) · mean_i(E_p[z_i] − z_{i,y}), z = log_softmax(o) (exact in float64),
    # p = softmax(z / T); classes with p = 0 (z = −inf or far below) drop out.
    o = np.array([[3e38, -3e38, 0.0], [-INF, 1e4, -1e4], [1e4, -1e4, 0.0], [-3e38, -3e38, -INF],
                  [1e4, 1e4 - 2, 0.0]], np.float32)
    y = np.array([0, 1, 2, 1, 1])
    z = o.astype(np.float64) - np.max(o, 1, keepdims=True)
    z = z - np.log(np.sum(np.exp(z), 1, keepdims=True))
    zt = np.where(np.isfinite(z), z / t, -INF)
    p = np.exp(zt - np.max(zt, 1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean_z = np.sum(np.where(p > 0, p * np.where(np.isfinite(z), z, 0), 0), 1)
    want = -np.mean(mean_z - z[np.arange(5), y]) / t**2
    nll = -np.mean(np.take_along_axis(zt - np.log(np.sum(np.exp(zt - zt.max(1, keepdims=True)), 1,
                                                         keepdims=True)) - zt.max(1, keepdims=True),
                                      y[:, None], 1))
    value, grad = jax.jit(jax.value_and_grad(
        lambda t: tm.temperature_nll(jnp.asarray(o), jnp.asarray(y), temperature=t)))(
            jnp.float32(t))
    np.testing.assert_allclose(value, nll, rtol=1e-5)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)

  def test_nan_logits_under_plain_jit_give_nan(self):
    # Unchecked, a NaN logit's row used to be left out as if impossible, and the NLL was +inf.
    o = jnp.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]])
    f = jax.jit(lambda o, t: tm.temperature_nll(o, jnp.zeros(o.shape[0], int), temperature=t))
    assert np.isnan(f(o, 1.5))
    assert np.isnan(jax.grad(f, argnums=1)(o, jnp.float32(1.5)))
    assert np.isfinite(f(o[1:], 1.5))

  @pytest.mark.parametrize("t", [0.0, -1.0, INF])
  def test_bad_temperature(self, t):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
      tm.temperature_nll(self.logits, self.labels, temperature=t)

  @pytest.mark.parametrize("t", [1e-38, 1e39, jnp.float32(1e-40), jnp.float64(1e-40)])
  def test_temperature_outside_the_compute_dtype_range(self, t):
    # The NLL is computed in the logits' compute dtype (float32 here), T included: a T that
    # float32 flushes to 0 or rounds to inf gave a NaN NLL.
    with pytest.raises(ValueError, match="float32's normal range"):
      tm.temperature_nll(self.logits, self.labels, temperature=t)

  def test_bad_shapes_and_dtypes(self):
    with pytest.raises(ValueError, match=r"logits must have shape \[n, C\]"):
      tm.temperature_nll(self.logits[0], self.labels, temperature=1.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
      tm.temperature_nll(self.logits, self.labels[:1], temperature=1.0)
    with pytest.raises(TypeError, match="integer class ids"):
      tm.temperature_nll(self.logits, self.labels.astype(jnp.float32), temperature=1.0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
      tm.temperature_nll(self.logits, jnp.array([1, 3]), temperature=1.0)


# --- fit_temperature ----------------------------------------------------------------------------


def test_fit_temperature_hand_value():
  # Every row has logits [4, 0] and 3 of 4 labels are 0: the optimum has σ(4/T) = 3/4, so
  # T* = 4 / log 3.
  o = np.tile(np.array([[4.0, 0.0]], np.float32), (4, 1))
  fit = tm.fit_temperature(o, np.array([0, 0, 0, 1]))
  assert fit.temperature == pytest.approx(4 / math.log(3), rel=1e-12)
  assert fit.converged and not fit.at_bound and abs(fit.grad) <= 1e-10
  assert fit.nll == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-12)
  assert fit.nll_at_one == pytest.approx(0.75 * math.log1p(math.exp(-4)) +
                                         0.25 * math.log1p(math.exp(4)), rel=1e-12)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(true_t):
  key_o, key_y = jax.random.split(jax.random.PRNGKey(0))
  o = jax.random.normal(key_o, (8000, 5)) * 3
  y = jax.random.categorical(key_y, o / true_t)
  fit = tm.fit_temperature(o, y)
  # The MLE's relative standard error is about 1/sqrt(n·Var) ≈ 1.5% here: 8% is a 5-sigma bound.
  assert fit.temperature == pytest.approx(true_t, rel=0.08)
  assert fit.nll <= fit.nll_at_one
  # It is the minimum: a grid over log T finds nothing lower.
  grid = jnp.exp(jnp.linspace(np.log(fit.temperature) - 0.2, np.log(fit.temperature) + 0.2, 41))
  nlls = jax.jit(jax.vmap(lambda t: tm.temperature_nll(o, y, temperature=t)))(grid)
  assert fit.nll <= float(jnp.min(nlls)) + 1e-6


def test_fit_temperature_bounds():
  o = jnp.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
  # Every label the argmax: the NLL falls to 0 as T → 0, so T* is the lower bound.
  fit = tm.fit_temperature(o, jnp.array([0, 1]), min_temperature=0.05)
  assert fit.at_bound and fit.converged and fit.temperature == pytest.approx(0.05)
  # Every label the argmin: the NLL falls as T grows, so T* is the upper bound.
  fit = tm.fit_temperature(o, jnp.array([2, 0]), max_temperature=50.0)
  assert fit.at_bound and fit.temperature == pytest.approx(50.0)


def test_fit_temperature_extreme_logits():
  # float32 logits of ±3e38 are exact in float64; −inf entries are left out.
  o = np.array([[3e38, -3e38, 1e38], [-INF, 1e4, -1e4], [1.0, -INF, 0.0], [0.0, 1.0, -INF]],
               np.float32)
  y = np.array([2, 1, 0, 0])
  fit = tm.fit_temperature(o, y, max_temperature=1e40)
  assert np.isfinite([fit.temperature, fit.nll, fit.grad]).all() and fit.converged
  assert not fit.at_bound and fit.nll < fit.nll_at_one
  # At T = 1 row 0 costs its gap, 2e38 (exact in float64), and the others about 1e4 at most.
  assert fit.nll_at_one == pytest.approx(2e38 / 4, rel=1e-6)


def test_fit_temperature_bad_input():
  o = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  y = jnp.array([0, 1])
  with pytest.raises(ValueError, match="min_temperature must be a positive finite number"):
    tm.fit_temperature(o, y, min_temperature=0.0)
  with pytest.raises(ValueError, match="max_temperature must be a positive finite number"):
    tm.fit_temperature(o, y, max_temperature=INF)
  with pytest.raises(ValueError, match="min_temperature must be < max_temperature"):
    tm.fit_temperature(o, y, min_temperature=2.0, max_temperature=1.0)
  with pytest.raises(ValueError, match="tol must be a number >= 0"):
    tm.fit_temperature(o, y, tol=-1.0)
  with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
    tm.fit_temperature(o, y, max_iter=0)
  with pytest.raises(ValueError, match="row 1 holds a NaN"):
    tm.fit_temperature(jnp.array([[1.0, 0.0], [0.0, np.nan]]), y)
  with pytest.raises(ValueError, match="row 0: the true class 1 has probability 0"):
    tm.fit_temperature(jnp.array([[1.0, -INF], [0.0, 1.0]]), jnp.array([1, 1]))
  with pytest.raises(ValueError, match="row 0: the true class 1 has probability 0"):
    tm.fit_temperature(jnp.array([[INF, 0.0], [0.0, 1.0]]), jnp.array([1, 1]))
  with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
    tm.fit_temperature(o, jnp.array([0, 1, 1]))
  with pytest.raises(ValueError, match=r"logits must have shape \[n, C\]"):
    tm.fit_temperature(o[None], y)
  with pytest.raises(TypeError, match="floating-point"):
    tm.fit_temperature(jnp.array([[1, 0], [0, 1]]), y)
