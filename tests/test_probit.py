"""Tests for softmax_jax.probit: log Φ, the binary probit loss and the multinomial probit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads
from scipy.stats import norm

import softmax_jax as sj
from softmax_jax import probit
from tests.conftest import enable_x64

_EXTREMES = [-jnp.inf, -3e38, -1e4, -40.0, -8.5, -8.0, -7.5, -1.0, 0.0, 2.0, 40.0, 1e4, 3e38,
             jnp.inf]


# --- log Φ ------------------------------------------------------------------------------------


def test_log_normal_cdf_matches_scipy(x64):
  x = np.array([-1e4, -300.0, -40.0, -8.01, -8.0, -7.99, -3.0, -1.0, 0.0, 0.5, 3.0, 8.0])
  np.testing.assert_allclose(probit.log_normal_cdf(x), norm.logcdf(x), rtol=1e-12, atol=1e-15)
  grad = jax.jit(jax.vmap(jax.grad(probit.log_normal_cdf)))(x)
  lam = np.exp(norm.logpdf(x) - norm.logcdf(x))  # exact in float64 for |x| <= 300
  np.testing.assert_allclose(grad[1:], lam[1:], rtol=1e-10)
  np.testing.assert_allclose(grad[0], 1e4 + 1e-4, rtol=1e-12)  # λ(x) = -x - 1/x + O(x^-3)
  hess = jax.jit(jax.vmap(jax.grad(jax.grad(probit.log_normal_cdf))))(x)
  np.testing.assert_allclose(hess[1:], -lam[1:] * (x[1:] + lam[1:]), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(hess[0], -1.0, atol=1e-7)


def test_log_normal_cdf_hand_values():
  # log Φ(0) = -log 2; log Φ(-1) = -1.8410216; d/dx log Φ(0) = φ(0)/Φ(0) = √(2/π) = 0.7978846.
  np.testing.assert_allclose(probit.log_normal_cdf(jnp.array([0.0, -1.0])),
                             [-0.6931472, -1.8410216], rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(probit.log_normal_cdf))(0.0), 0.7978846, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(jax.grad(probit.log_normal_cdf)))(0.0), -2 / np.pi,
                             rtol=1e-6)


def test_log_normal_cdf_check_grads(x64):
  x = jnp.array([-30.0, -8.2, -7.8, -2.0, 0.3, 4.0], jnp.float64)  # both sides of the switch
  check_grads(jax.jit(probit.log_normal_cdf), (x,), order=2, modes=("fwd", "rev"))


def test_log_normal_cdf_extremes_no_nan():
  x = jnp.array(_EXTREMES, jnp.float32)
  value = jax.jit(probit.log_normal_cdf)(x)
  grad = jax.jit(jax.vmap(jax.grad(probit.log_normal_cdf)))(x)
  hess = jax.jit(jax.vmap(jax.grad(jax.grad(probit.log_normal_cdf))))(x)
  for a in (value, grad, hess):
    assert not jnp.any(jnp.isnan(a))
  assert value[0] == value[1] == -jnp.inf  # -4.5e76 rounds to -inf in float32: the exact limit
  np.testing.assert_allclose(value[2], -5.0000010e7, rtol=1e-6)
  assert jnp.all(value[-4:] == 0) and jnp.all(grad[-3:] == 0)
  np.testing.assert_allclose(grad[1:3], [3e38, 1e4], rtol=1e-6)
  assert grad[0] == jnp.finfo(jnp.float32).max  # λ(-∞) = ∞, returned as the largest float
  assert jnp.all((hess >= -1) & (hess <= 0))  # log Φ is concave, with curvature at most 1


def test_log_normal_cdf_third_and_fourth_derivatives_at_infinity():
  # log Φ's derivatives of order 3 and 4 vanish at ±∞ (log Φ ~ -x²/2 − log(−x) below, ~0 above).
  # Reverse mode gave NaN there (0·∞ in the autodiff of λ(x + λ)); forward mode gave 0. At
  # finite points, as before: at 0 it is 2λ³ − λ with λ = √(2/π), 0.2180136; at −30, 7.30999e-5
  # (mpmath, 50 digits; the leading term 2/30³ is 7.41e-5).
  f = probit.log_normal_cdf
  x = jnp.array([-jnp.inf, -30.0, 0.0, jnp.inf], jnp.float32)
  for d3 in (jax.grad(jax.grad(jax.grad(f))), jax.jacfwd(jax.jacfwd(jax.jacfwd(f))),
             jax.jacrev(jax.jacfwd(jax.grad(f)))):
    got = jax.vmap(d3)(x)
    np.testing.assert_allclose(got, [0, 7.30999e-5, 0.2180136, 0], rtol=2e-4, atol=0)
  d4 = jax.vmap(jax.grad(jax.grad(jax.grad(jax.grad(f)))))(x)
  assert d4[0] == 0 and d4[-1] == 0 and not jnp.isnan(d4).any()
  nan = jnp.float32(jnp.nan)  # NaN stays NaN, in every mode (forward mode gave -1 at first)
  fwd = jax.jacfwd
  for d in (jax.grad(jax.grad(jax.grad(f))), fwd(fwd(fwd(f))), fwd(jax.grad(jax.grad(f))),
            fwd(fwd(fwd(fwd(f)))), fwd(fwd(f))):
    assert jnp.isnan(d(nan))


def test_log_normal_cdf_bad_dtype():
  with pytest.raises(TypeError, match="floating-point.*int32"):
    probit.log_normal_cdf(jnp.array([1, 2]))


# --- the binary probit --------------------------------------------------------------------------


class TestProbitLoss:

  def setup_method(self):
    self.logits = jnp.array([[0.0, -1.0, 2.0], [3.0, -0.5, 1.5]])
    self.labels = jnp.array([[1, 1, 0], [0, 1, 1]])
    # -log Φ((2y - 1) o), by hand from the normal table: log 2, -log Φ(-1), -log Φ(-2), ...
    self.expected = np.array([[0.6931472, 1.8410216, 3.7831843],
                              [6.6077262, 1.1759118, 0.0691435]])

  def test_hand_values_and_scipy(self):
    loss = jax.jit(probit.probit_loss)(self.logits, self.labels)
    np.testing.assert_allclose(loss, self.expected, rtol=1e-6)
    signs = 2 * np.asarray(self.labels) - 1
    np.testing.assert_allclose(loss, -norm.logcdf(signs * np.asarray(self.logits)), rtol=1e-6)
    np.testing.assert_allclose(probit.probit_log_likelihood(self.logits, self.labels), -loss)

  def test_label_dtypes_and_reductions(self):
    for labels in (self.labels.astype(bool), self.labels.astype(jnp.float32),
                   self.labels.astype(jnp.uint8)):
      np.testing.assert_allclose(probit.probit_loss(self.logits, labels), self.expected,
                                 rtol=1e-6)
    np.testing.assert_allclose(probit.probit_loss(self.logits, self.labels, reduction="sum"),
                               self.expected.sum(), rtol=1e-6)
    mask = jnp.array([[True, False, True], [False, False, True]])
    np.testing.assert_allclose(
        probit.probit_loss(self.logits, self.labels, where=mask, reduction="mean"),
        self.expected[np.asarray(mask)].mean(), rtol=1e-6)
    masked = probit.probit_loss(self.logits, self.labels, where=mask)
    assert jnp.all(masked[~mask] == 0)

  def test_gradient_closed_form_and_check_grads(self, x64):
    logits = self.logits.astype(jnp.float64)
    grad = jax.jit(jax.grad(lambda o: probit.probit_loss(o, self.labels, reduction="sum")))(logits)
    s = 2 * np.asarray(self.labels) - 1
    so = s * np.asarray(logits)
    np.testing.assert_allclose(grad, -s * np.exp(norm.logpdf(so) - norm.logcdf(so)), rtol=1e-10)
    check_grads(jax.jit(lambda o: probit.probit_loss(o, self.labels, reduction="mean")), (logits,),
                order=2, modes=("fwd", "rev"))

  @pytest.mark.parametrize("sign", [1, -1], ids=["probit_loss", "probit_log_likelihood"])
  def test_extremes(self, sign):
    # probit_loss = −probit_log_likelihood: o²/2 + log(o√(2π)) = 5e7 at ∓1e4, ∞ only beyond the
    # float range, 0 when right; the gradient ±o where the loss is finite and large.
    fn = probit.probit_loss if sign == 1 else probit.probit_log_likelihood
    o = jnp.array([1e4, -1e4, 3e38, -3e38, jnp.inf, -jnp.inf, 1e4, 3e38, jnp.inf], jnp.float32)
    y = jnp.array([0, 1, 0, 1, 0, 1, 1, 1, 1])
    loss = sign * jax.jit(fn)(o, y)
    grad = sign * jax.jit(jax.grad(lambda o: fn(o, y, reduction="sum")))(o)
    assert not jnp.any(jnp.isnan(loss)) and not jnp.any(jnp.isnan(grad))
    np.testing.assert_allclose(loss[:2], 5.000001e7, rtol=1e-6)  # o²/2 + log(o√(2π)): finite
    assert jnp.all(loss[2:6] == jnp.inf)  # exact values 4.5e76 and ∞: beyond the float range
    assert jnp.all(loss[6:] == 0)
    np.testing.assert_allclose(grad[:4], [1e4, -1e4, 3e38, -3e38], rtol=1e-6)
    assert jnp.all(grad[6:] == 0)

  def test_log_likelihood_gradients(self, x64):
    # probit_log_likelihood on its own: check_grads and the closed form (2y−1)·λ((2y−1)o).
    logits = self.logits.astype(jnp.float64)
    ll = jax.jit(lambda o: probit.probit_log_likelihood(o, self.labels, reduction="sum"))
    check_grads(ll, (logits,), order=1, modes=("fwd", "rev"))
    s = 2 * np.asarray(self.labels) - 1
    so = s * np.asarray(logits)
    np.testing.assert_allclose(jax.jit(jax.grad(ll))(logits),
                               s * np.exp(norm.logpdf(so) - norm.logcdf(so)), rtol=1e-10)

  def test_probit_and_logistic_agree_in_shape(self):
    # Φ(o) ≈ σ(1.702 o) (Bowling et al. 2009): the links differ by a rescaling of o; the losses
    # differ in the tail, quadratic for the probit (o²/2) and linear for the logistic.
    o = jnp.concatenate([jnp.linspace(-3, 3, 13), jnp.array([-30.0])])
    probit_loss = probit.probit_loss(o, jnp.ones(14))
    logistic = sj.sigmoid_cross_entropy(1.702 * o, jnp.ones(14))
    np.testing.assert_allclose(jnp.exp(-probit_loss[:13]), jnp.exp(-logistic[:13]), atol=0.01)
    np.testing.assert_allclose(probit_loss[4:13], logistic[4:13], atol=0.06)
    np.testing.assert_allclose(probit_loss[13], 454.3212, rtol=1e-6)  # 450 + log(30√(2π)) + …
    assert logistic[13] < 52

  @pytest.mark.parametrize("kwargs, error, match", [
      ({"labels": jnp.array([[1, 2, 0], [0, 1, 1]])}, ValueError, "0 or 1; got 2 at index"),
      ({"labels": jnp.array([[1, 1], [0, 1]])}, ValueError, r"shape \(2, 2\).*\(2, 3\)"),
      ({"logits": jnp.array([[0, 1, 2], [0, 1, 2]])}, TypeError, "floating-point"),
      ({"reduction": "avg"}, ValueError, "reduction"),
      ({"where": jnp.array([1, 0, 1])}, TypeError, "boolean"),
  ])
  def test_bad_input(self, kwargs, error, match):
    args = {"logits": self.logits, "labels": self.labels} | kwargs
    with pytest.raises(error, match=match):
      probit.probit_loss(**args)

  def test_bad_label_under_jit_is_caught_by_checked(self):
    err, _ = jax.jit(sj.checked(probit.probit_loss))(self.logits, self.labels.at[0, 0].set(3))
    with pytest.raises(ValueError, match="0 or 1"):
      err.throw()


# --- the multinomial probit ---------------------------------------------------------------------


def test_two_classes_is_exact():
  # q = 2: P(0) = Φ((o_0 - o_1)/√2), far into the tail.
  o = jnp.array([[0.0, 0.0], [1.0, -2.0], [0.0, -10.0], [0.0, -100.0], [3.0, -1e4]])
  log_p = probit.multinomial_probit_log_probs(o, normalize=False)
  diff = (np.asarray(o)[:, 0] - np.asarray(o)[:, 1]) / np.sqrt(2)
  np.testing.assert_allclose(log_p[:, 1], norm.logcdf(-diff), rtol=1e-6)
  np.testing.assert_allclose(log_p[:, 0], norm.logcdf(diff), atol=1e-6)
  # Gaussian noise has thinner tails than the softmax's Gumbel: a class far behind loses faster.
  assert jnp.all(log_p[2:, 1] < sj.log_softmax(o)[2:, 1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_classes_beyond_a_gap_of_a_million(dtype):
  # −log P(0) = −log Φ(−g/√2) and its derivative in o_1, λ(−g/√2)/√2 ≈ g/2, for gaps g past
  # the 1e6 at which the quadrature's centring used to be clipped (4.5e13 for 2.5e13 at 1e7).
  with enable_x64():
    for gap in (1.1e6, 1e7, 1e10, 1e19):
      o = jnp.array([0.0, gap], dtype)
      loss, grad = jax.value_and_grad(
          lambda o: probit.multinomial_probit_loss(o, jnp.array(0)))(o)
      t = gap / np.sqrt(2)
      np.testing.assert_allclose(loss, -norm.logcdf(-t), rtol=1e-6, err_msg=str(gap))
      np.testing.assert_allclose(grad, [-(t + 1 / t) / np.sqrt(2), (t + 1 / t) / np.sqrt(2)],
                                 rtol=1e-6, err_msg=str(gap))
      # A third class between them: the far gap dominates (the middle one adds O(log g)).
      o3 = jnp.array([0.0, gap, gap / 2], dtype)
      np.testing.assert_allclose(probit.multinomial_probit_log_probs(o3)[0],
                                 norm.logcdf(-t), rtol=1e-5, err_msg=str(gap))


@pytest.mark.parametrize("q", [3, 50])
def test_equal_logits_give_uniform(q):
  p = jnp.exp(probit.multinomial_probit_log_probs(jnp.full((2, q), 0.7), normalize=False))
  np.testing.assert_allclose(p, 1 / q, rtol=5e-5)  # 12 nodes; exact as the nodes grow


class TestMultinomial:

  def setup_method(self):
    self.logits = jax.random.normal(jax.random.key(0), (6, 5)) * jnp.array(
        [0.3, 1, 2, 3, 5, 8])[:, None]
    self.labels = jnp.array([0, 1, 2, 3, 4, 0])

  def test_sums_to_one_matches_monte_carlo_and_is_shift_invariant(self):
    raw = jnp.exp(probit.multinomial_probit_log_probs(self.logits, normalize=False))
    np.testing.assert_allclose(raw.sum(-1), 1, atol=2e-5)  # the quadrature alone
    log_p = probit.multinomial_probit_log_probs(self.logits)
    p = jnp.exp(log_p)
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-6)
    mc = probit.multinomial_probit_monte_carlo(jax.random.key(1), self.logits,
                                               num_samples=200_000)
    np.testing.assert_allclose(p, mc, atol=5e-3)  # 4.5 standard errors of 0.5/√2e5
    assert jnp.all(jnp.argmax(p, -1) == jnp.argmax(self.logits, -1))
    np.testing.assert_allclose(probit.multinomial_probit_log_probs(self.logits + 5.0), log_p,
                               atol=2e-5)
    np.testing.assert_allclose(probit.multinomial_probit_log_probs(self.logits.T, axis=0),
                               log_p.T, atol=1e-6)

  def test_loss_normalized_and_label_only_agree(self):
    full = probit.multinomial_probit_loss(self.logits, self.labels, normalize=True)
    np.testing.assert_allclose(probit.multinomial_probit_loss(self.logits, self.labels), full,
                               atol=3e-5)
    log_p = probit.multinomial_probit_log_probs(self.logits)
    np.testing.assert_allclose(full, -log_p[jnp.arange(6), self.labels], rtol=1e-6)
    mask = jnp.arange(6) < 4
    np.testing.assert_allclose(
        probit.multinomial_probit_loss(self.logits, self.labels, where=mask, reduction="mean"),
        full[:4].mean(), rtol=1e-4)


_LOG_PROBS_RAW = jax.jit(lambda o: probit.multinomial_probit_log_probs(o, normalize=False))


@given(hnp.arrays(np.float32, (3, 4), elements=st.floats(-20, 20, width=32)))
def test_multinomial_laws(logits):
  p = np.exp(np.asarray(_LOG_PROBS_RAW(logits), np.float64))
  np.testing.assert_allclose(p.sum(-1), 1, atol=1e-4)  # a distribution, up to the quadrature
  # Monotone: a larger logit never gets a smaller probability (beyond the quadrature error).
  bigger = logits[:, :, None] > logits[:, None, :]
  assert np.all(~bigger | (p[:, :, None] >= p[:, None, :] - 1e-5))


def test_multinomial_gradients(x64):
  logits = jnp.array([[0.5, -1.0, 2.0], [3.0, 0.0, -4.0]], jnp.float64)
  labels = jnp.array([0, 2])
  loss = jax.jit(lambda o: probit.multinomial_probit_loss(o, labels, num_nodes=40,
                                                          reduction="sum"))
  check_grads(loss, (logits,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
  # q = 2: l = -log Φ(s), s = (o_y - o_other)/√2, so ∂²l/∂o_y² = λ(s)(s + λ(s))/2 (closed form).
  o2 = jnp.array([[0.5, -1.0], [3.0, 0.0]], jnp.float64)
  hess = jax.jit(jax.hessian(lambda o: probit.multinomial_probit_loss(
      o, jnp.array([0, 1]), reduction="sum")))(o2)
  s = np.array([1.5, -3.0]) / np.sqrt(2)
  lam = np.exp(norm.logpdf(s) - norm.logcdf(s))
  np.testing.assert_allclose([hess[0, 0, 0, 0], hess[1, 1, 1, 1]], lam * (s + lam) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(hess[0, 0, 0, 1], -hess[0, 0, 0, 0], rtol=1e-9)


@pytest.mark.parametrize("normalize,mode", [(False, "rev"), (True, "fwd")])
def test_multinomial_log_probs_gradients(normalize, mode, x64):
  # The log-probabilities themselves (every class, either normalisation), not only the loss.
  logits = jnp.array([[0.5, -1.0, 2.0], [3.0, 0.0, -4.0]], jnp.float64)
  f = jax.jit(lambda o: probit.multinomial_probit_log_probs(o, normalize=normalize))
  check_grads(f, (logits,), order=1, modes=(mode,), atol=1e-6, rtol=1e-6)
  # Normalised log-probabilities sum to 1 in probability: Σ_k p_k ∂log p_k/∂o = 0.
  if normalize:
    jac = jax.jacfwd(f)(logits)
    p = np.exp(np.asarray(f(logits)))
    for n in range(2):
      np.testing.assert_allclose(p[n] @ jac[n, :, n], 0, atol=1e-12)


def test_multinomial_log_probs_gradients_at_extremes():
  # q = 2: log P(k) = log Φ((o_k − o_j)/√2), so ∂/∂o_k = λ(s)/√2 = −∂/∂o_j. At a gap of 1e4
  # the loser's is 1e4/2 (λ(s) ≈ −s), the winner's 0; ±3e38 and ±inf rows are one-hot or a tie
  # (constant: 0); −inf log-probabilities are constants too (0), as in sj.log_softmax.
  o = jnp.array([[1e4, 0.0], [0.0, 1e4], [3e38, -3e38], [0.0, -jnp.inf], [jnp.inf, 0.0],
                 [jnp.inf, jnp.inf], [1.0, -2.0]], jnp.float32)
  s = 3 / np.sqrt(2)
  lam = np.exp(norm.logpdf([s, -s]) - norm.logcdf([s, -s])) / np.sqrt(2)  # the last row
  d = np.zeros((7, 2))  # ∂ log P(k) / ∂ o_k; ∂/∂o_j is its negative
  d[0, 1] = d[1, 0] = 5000.0
  d[6] = lam
  for normalize, jac in ((False, jax.jacfwd), (True, jax.jacrev)):  # each path, each mode once
    f = functools.partial(probit.multinomial_probit_log_probs, normalize=normalize)
    got = np.asarray(jax.jit(jac(f))(o))
    got = np.stack([got[n, :, n] for n in range(7)])  # [n, k, j] = ∂ log P(k | o_n) / ∂ o_nj
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got[:, [0, 1], [0, 1]], d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, [0, 1], [1, 0]], -d, rtol=1e-5, atol=1e-5)
  log_p = probit.multinomial_probit_log_probs(o)
  np.testing.assert_array_equal(log_p[2:5, 1], -jnp.inf)
  np.testing.assert_allclose(log_p[5], [-np.log(2)] * 2, rtol=1e-6)


def test_multinomial_monte_carlo_extremes():
  # Ties near ±3e38 and at +inf split the mass (unit noise added to 3e38 is below its ulp, and
  # every sample went to the first class); −inf classes and logits 6e38 behind never win; a row
  # of −inf has no mass; a NaN logit makes its row NaN (argmax picked the NaN as the winner).
  o = jnp.array([[3e38, 3e38, 0.0], [jnp.inf, jnp.inf, 0.0], [1e4, 1e4, -1e4], [3e38, -3e38, 0.0],
                 [-jnp.inf, 0.0, 1.0], [-jnp.inf] * 3, [jnp.nan, 0.0, 1.0]], jnp.float32)
  p = np.asarray(probit.multinomial_probit_monte_carlo(jax.random.key(2), o, num_samples=4000))
  exact = np.exp(np.asarray(probit.multinomial_probit_log_probs(o[:6]), np.float64))
  exact = np.where(np.isnan(exact), 0, exact)
  np.testing.assert_allclose(p[:6], exact, atol=0.04)  # 5.5 standard errors of 0.5/√4000
  np.testing.assert_array_equal(p[[0, 1, 2], 2], 0)
  np.testing.assert_array_equal(p[3], [1, 0, 0])
  np.testing.assert_array_equal(p[5], [0, 0, 0])
  np.testing.assert_allclose(p[:5].sum(-1), 1, rtol=1e-6)
  assert np.all(np.isnan(p[6]))


def test_multinomial_extremes_no_nan():
  logits = jnp.array([[1e4, 0.0, -1e4], [3e38, -3e38, 0.0], [-3e38, 3e38, jnp.inf],
                      [-jnp.inf, 1.0, 2.0], [jnp.inf, jnp.inf, 0.0], [-jnp.inf, -jnp.inf, -jnp.inf]])
  log_p = probit.multinomial_probit_log_probs(logits)
  assert not jnp.any(jnp.isnan(log_p))
  np.testing.assert_allclose(log_p[0], [0.0, -2.500001e7, -1.0000002e8], rtol=1e-6)
  np.testing.assert_array_equal(log_p[1], [0.0, -jnp.inf, -jnp.inf])
  np.testing.assert_array_equal(log_p[2], [-jnp.inf, -jnp.inf, 0.0])
  # A -inf class drops out: the other two are the q = 2 model, Φ(±1/√2).
  np.testing.assert_allclose(jnp.exp(log_p[3]), [0.0, norm.cdf(-1 / np.sqrt(2)),
                                                 norm.cdf(1 / np.sqrt(2))], atol=1e-6)
  np.testing.assert_allclose(jnp.exp(log_p[4]), [0.5, 0.5, 0.0], atol=1e-6)
  assert jnp.all(log_p[5] == -jnp.inf)
  grad_fn = jax.jit(jax.grad(lambda o, y: probit.multinomial_probit_loss(o, y, reduction="sum")))
  for labels in (jnp.array([0, 0, 2, 1, 0, 0]), jnp.array([2, 1, 0, 0, 2, 1])):
    loss = probit.multinomial_probit_loss(logits, labels)
    grad = grad_fn(logits, labels)
    assert not jnp.any(jnp.isnan(loss)) and not jnp.any(jnp.isnan(grad))
    assert jnp.all(loss >= -1e-6)


def test_multinomial_a_nan_logit_makes_its_row_nan():
  """Values and gradients of a row holding a NaN are NaN, as in softmax_jax.log_softmax and the
  Monte-Carlo reference; the other rows are untouched. A NaN logit was a dead class (a finite
  row, as if the class were absent: [-1.43, -inf, -0.27] for [0, NaN, 1])."""
  logits = jnp.array([[0.0, jnp.nan, 1.0], [jnp.inf, jnp.nan, 0.0], [0.0, -jnp.inf, 1.0]])
  want_last = probit.multinomial_probit_log_probs(logits[2])
  for normalize in (True, False):
    log_p = probit.multinomial_probit_log_probs(logits, normalize=normalize)
    assert np.all(np.isnan(log_p[:2]))
    np.testing.assert_allclose(log_p[2], want_last, rtol=1e-6)
  labels = jnp.array([0, 0, 2])
  for normalize in (True, False):
    loss = probit.multinomial_probit_loss(logits, labels, normalize=normalize)
    grad = jax.grad(lambda o, n=normalize: probit.multinomial_probit_loss(
        o, labels, normalize=n, reduction="sum"))(logits)
    assert np.all(np.isnan(loss[:2])) and np.isfinite(loss[2])
    assert np.all(np.isnan(grad[:2])) and np.all(np.isfinite(grad[2]))
  # Masked, the row contributes nothing (the mask is applied to the loss, not the logits).
  masked = probit.multinomial_probit_loss(logits, labels, where=jnp.array([False, False, True]),
                                          reduction="sum")
  np.testing.assert_allclose(masked, probit.multinomial_probit_loss(logits[2:], labels[2:],
                                                                    reduction="sum"), rtol=1e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda: probit.multinomial_probit_log_probs(jnp.zeros(3), num_nodes=0), ValueError,
     r"num_nodes must be an int in \[1, 100\]; got 0"),
    (lambda: probit.multinomial_probit_log_probs(jnp.zeros(3), num_nodes=True), ValueError,
     "num_nodes"),
    (lambda: probit.multinomial_probit_log_probs(jnp.zeros(3), num_nodes=101), ValueError,
     "101"),
    (lambda: probit.multinomial_probit_log_probs(jnp.zeros(3), axis=1), ValueError, "axis=1"),
    (lambda: probit.multinomial_probit_log_probs(jnp.float32(1.0)), ValueError, "scalar"),
    (lambda: probit.multinomial_probit_log_probs(jnp.zeros((2, 0))), ValueError, "no classes"),
    (lambda: probit.multinomial_probit_loss(jnp.zeros((2, 3)), jnp.array([0, 3])), ValueError,
     r"\[0, 3\); got 3"),
    (lambda: probit.multinomial_probit_loss(jnp.zeros((2, 3)), jnp.array([0.0, 1.0])),
     TypeError, "integer"),
    (lambda: probit.multinomial_probit_loss(jnp.zeros((2, 3)), jnp.array([0, 1, 2])),
     ValueError, r"\(3,\).*\(2, 3\)"),
    (lambda: probit.multinomial_probit_monte_carlo(jax.random.key(0), jnp.zeros(3),
                                                   num_samples=0), ValueError, "num_samples"),
])
def test_multinomial_bad_input(call, error, match):
  with pytest.raises(error, match=match):
    call()
