"""Tests for softmax_jax.minimize (the generic optax loop) and softmax_jax.calibration."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import softmax_jax as sj
from softmax_jax import calibration
from softmax_jax import minimize


def _quadratic(params, x, y):
  return jnp.mean((x @ params - y) ** 2)


def test_minimize_full_batch_reaches_least_squares():
  x = jax.random.normal(jax.random.key(0), (50, 3))
  w = jnp.array([1.0, -2.0, 0.5])
  params, hist = minimize.minimize(_quadratic, jnp.zeros(3), x, x @ w, optimizer=optax.sgd(0.1),
                                   num_steps=300)
  np.testing.assert_allclose(params, w, atol=1e-4)
  assert hist["loss"].shape == hist["grad_norm"].shape == (300,)
  assert hist["loss"][-1] < 1e-8 < hist["loss"][0]


def test_minimize_minibatches_train_softmax_regression():
  data = sj.data.load("digits")
  def loss_fn(params, x, y):
    return sj.train.objective(params, sj.train.Batch(x, y, jnp.ones(y.shape, bool)))
  params0 = sj.init_params(jax.random.key(0), 64, 10)
  params, hist = minimize.minimize(loss_fn, params0, data.x_train, data.y_train,
                                   optimizer=optax.sgd(0.5), num_steps=400, batch_size=64,
                                   key=jax.random.key(1))
  assert sj.train.evaluate(params, data.x_test, data.y_test)["accuracy"] > 0.9
  assert float(hist["loss"][-50:].mean()) < float(hist["loss"][:5].mean())


@pytest.mark.parametrize("kwargs, match", [
    ({"num_steps": -1}, "num_steps"),
    ({"num_steps": 2, "batch_size": 0}, r"batch_size must be an int in \[1, 4\].*0"),
    ({"num_steps": 2, "batch_size": 5}, "batch_size"),
    ({"num_steps": 2, "batch_size": 2}, "PRNG key"),
])
def test_minimize_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    minimize.minimize(_quadratic, jnp.zeros(3), jnp.ones((4, 3)), jnp.ones(4),
                      optimizer=optax.sgd(0.1), **kwargs)
  with pytest.raises(ValueError, match=r"\(4, 3\).*\(5,\)"):
    minimize.minimize(_quadratic, jnp.zeros(3), jnp.ones((4, 3)), jnp.ones(5),
                      optimizer=optax.sgd(0.1), num_steps=1)


def test_ece_hand_computed():
  # two bins: [0, .5) and [.5, 1]. Confidences .9 (right), .8 (wrong) -> bin 1: acc .5, conf .85;
  # .4 (right; the max of [.4, .3, .3]) -> bin 0: acc 1, conf .4.
  probs = jnp.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.4, 0.3, 0.3]])
  labels = jnp.array([0, 0, 0])
  bins = calibration.reliability_bins(probs, labels, num_bins=2)
  np.testing.assert_allclose(bins["count"], [1, 2])
  np.testing.assert_allclose(bins["accuracy"], [1.0, 0.5])
  np.testing.assert_allclose(bins["confidence"], [0.4, 0.85])
  ece = calibration.expected_calibration_error(probs, labels, num_bins=2)
  np.testing.assert_allclose(ece, (1 * 0.6 + 2 * 0.35) / 3, rtol=1e-6)


def test_ece_matches_train_evaluate():
  data = sj.data.load("digits")
  state, _ = sj.train.fit(data, epochs=3, batch_size=64, learning_rate=0.1, check_grad_every=0)
  probs = sj.predict_proba(state.params, data.x_test)
  ece = calibration.expected_calibration_error(probs, data.y_test)
  np.testing.assert_allclose(ece, sj.train.evaluate(state.params, data.x_test, data.y_test)["ece"],
                             rtol=1e-5, atol=1e-7)


def test_calibration_bad_input():
  with pytest.raises(ValueError, match="num_bins.*0"):
    calibration.expected_calibration_error(jnp.ones((2, 2)) / 2, jnp.zeros(2, int), num_bins=0)
  with pytest.raises(ValueError, match=r"\(2, 2\).*\(3,\)"):
    calibration.reliability_bins(jnp.ones((2, 2)) / 2, jnp.zeros(3, int))
  with pytest.raises(TypeError, match="float32"):
    calibration.reliability_bins(jnp.ones((2, 2)) / 2, jnp.zeros(2))


@pytest.mark.parametrize("num_classes", [3, 4096])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_ece_rejects_non_finite_probs(num_classes, bad):
  # Not a finite ECE: a NaN used to poison every bin, whose NaN the ECE then skipped (0.0); at 4096
  # classes XLA:CPU's fused max drops it (the ECE of the other entries, or 3.6e307).
  probs = np.full((3, num_classes), 1 / num_classes, np.float32)
  probs[1, -1] = bad
  with pytest.raises(ValueError, match=rf"probs must be finite; got {bad} at index \[\s*1 "):
    calibration.expected_calibration_error(probs, np.zeros(3, int))


@pytest.mark.parametrize("bad", [3e38, 1.5, -0.25, -3e38])
def test_ece_rejects_probabilities_outside_the_unit_interval(bad):
  # Not clipped into the first or last bin (3e38 gave an ECE of 3e38): an error naming the value.
  probs = np.array([[0.5, 0.5], [bad, 0.0], [0.25, 0.75]], np.float32)
  with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\]; got "
                                       + re.escape(str(np.float32(bad))) + r" at index \[1 0\]"):
    calibration.expected_calibration_error(probs, np.zeros(3, int))


def test_ece_at_the_extremes_of_the_unit_interval():
  # Confidences of exactly 1 (a one-hot softmax of ±3e38 logits) fall in the last bin, the edge
  # 0.5 in the upper of two, and 1 + a few ulps (exp of a normalised log-probability) is allowed.
  probs = sj.softmax(jnp.array([[3e38, -3e38], [1e4, -1e4], [0.0, 0.0], [-jnp.inf, 0.0]]))
  np.testing.assert_array_equal(probs, [[1, 0], [1, 0], [0.5, 0.5], [0, 1]])
  bins = calibration.reliability_bins(probs, jnp.array([0, 1, 0, 1]), num_bins=2)
  np.testing.assert_array_equal(bins["count"], [0, 4])
  np.testing.assert_allclose(bins["confidence"][1], 3.5 / 4)
  np.testing.assert_allclose(bins["accuracy"][1], 3 / 4)
  assert calibration.expected_calibration_error(probs, jnp.array([0, 1, 0, 1]),
                                                num_bins=2) == pytest.approx(0.125)
  near_one = np.array([[np.nextafter(np.float32(1), np.float32(2)), 0.0]], np.float32)
  assert calibration.expected_calibration_error(near_one, np.array([0])) < 1e-6


def test_bin_sums_keep_a_kept_nan_and_ignore_masked_rows():
  # NaN, not ±inf, in the bins of a kept bad row (so the ECE is NaN). −inf is what XLA:CPU's
  # fused max makes of a NaN row of probabilities.
  confidence = jnp.array([0.3, jnp.nan, -jnp.inf, 0.9])
  correct = jnp.array([True, False, True, False])
  f = jax.jit(lambda mask: calibration.bin_sums(confidence, correct, mask, num_bins=2))
  sums = f(jnp.array([True, False, False, True]))
  np.testing.assert_array_equal(sums["bin_count"], [1, 1])
  np.testing.assert_allclose(sums["bin_confidence"], [0.3, 0.9])
  np.testing.assert_array_equal(sums["bin_correct"], [1, 0])
  for kept in (1, 2):
    sums = f(jnp.arange(4) != 3 - kept)  # row `kept` counts, the other bad row is masked
    assert np.any(np.isnan(sums["bin_confidence"])) and not np.any(np.isinf(sums["bin_confidence"]))


@pytest.mark.parametrize("num_classes", [16, 4096])
def test_a_nan_logit_makes_evaluate_ece_nan(num_classes):
  # At 4096 classes the NaN row's confidence max_j p_j came out −inf and the ECE +inf.
  rng = np.random.default_rng(num_classes)
  x = rng.normal(size=(6, 8)).astype(np.float32)
  x[1, 2] = np.nan
  params = sj.Params(jnp.asarray(rng.normal(size=(8, num_classes)), jnp.float32),
                     jnp.zeros(num_classes))
  got = sj.train.evaluate(params, x, rng.integers(0, num_classes, 6), batch_size=4)
  assert np.isnan(got["ece"]) and np.isnan(got["loss"])
