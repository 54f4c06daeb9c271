"""Tests for softmax_jax.mlp: the one-hidden-layer perceptron (the distillation teacher)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import minimize
from softmax_jax import mlp


def _hand_params():
  # d = 2 features, H = 2 hidden units, C = 3 classes.
  return mlp.MLPParams(W1=jnp.array([[1.0, -1.0], [0.0, 2.0]]), b1=jnp.array([0.0, -1.0]),
                       W2=jnp.array([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0]]),
                       b2=jnp.array([0.5, 0.0, 0.0]))


def test_init_shapes_and_scale():
  p = mlp.init_mlp(jax.random.key(0), 400, 300, 7)
  assert [a.shape for a in p] == [(400, 300), (300,), (300, 7), (7,)]
  assert all(a.dtype == jnp.float32 for a in p)
  np.testing.assert_allclose(jnp.std(p.W1), np.sqrt(2 / 400), rtol=0.02)
  np.testing.assert_allclose(jnp.std(p.W2), np.sqrt(1 / 300), rtol=0.1)
  assert not jnp.any(p.b1) and not jnp.any(p.b2)
  p64 = mlp.init_mlp(jax.random.key(0), 3, 4, 2, dtype=jnp.bfloat16)
  assert all(a.dtype == jnp.bfloat16 for a in p64)


def test_logits_hand_computed():
  p = _hand_params()
  f = jax.jit(mlp.mlp_logits, static_argnames="activation")
  # x = (1, 2): pre-activation (1, 3) + (0, −1) = (1, 2); relu keeps it;
  # (1, 2) W2 = (1 − 2, 2, 2) = (−1, 2, 2); + b2 = (−0.5, 2, 2).
  np.testing.assert_allclose(f(p, jnp.array([1.0, 2.0])), [-0.5, 2.0, 2.0], rtol=1e-6)
  # x = (−1, 0): pre-activation (−1, 0): relu gives 0, the logits are b2.
  np.testing.assert_allclose(f(p, jnp.array([-1.0, 0.0])), [0.5, 0.0, 0.0])
  t1, t2 = np.tanh(1.0), np.tanh(2.0)
  np.testing.assert_allclose(f(p, jnp.array([1.0, 2.0]), activation="tanh"),
                             [t1 - t2 + 0.5, t2, 2 * t1], rtol=1e-6)


def test_batched_matches_per_example():
  p = mlp.init_mlp(jax.random.key(1), 5, 8, 3)
  x = jax.random.normal(jax.random.key(2), (2, 4, 5))
  out = jax.jit(mlp.mlp_logits)(p, x)
  assert out.shape == (2, 4, 3)
  for i in range(2):
    for j in range(4):
      np.testing.assert_allclose(out[i, j], mlp.mlp_logits(p, x[i, j]), rtol=1e-5, atol=1e-6)


def test_grads_match_finite_differences():
  p = mlp.init_mlp(jax.random.key(3), 4, 6, 3)
  p = p._replace(b1=0.1 * jnp.arange(6.0))
  x = jax.random.normal(jax.random.key(4), (5, 4))
  w = jax.random.normal(jax.random.key(5), (5, 3))  # a random cotangent for the logits

  def f(p, x, activation):
    return jnp.sum(w * mlp.mlp_logits(p, x, activation=activation))

  check_grads(functools.partial(f, activation="tanh"), (p, x), order=2, modes=("fwd", "rev"),
              atol=1e-2, rtol=1e-2)
  # ReLU is piecewise linear: first order, at points away from its kink (checked below).
  assert jnp.min(jnp.abs(x @ p.W1 + p.b1[None, :])) > 1e-2
  check_grads(functools.partial(f, activation="relu"), (p, x), order=1, modes=("fwd", "rev"),
              atol=1e-2, rtol=1e-2)


def _loss(p, x, y, activation="relu"):
  return sj.cross_entropy(mlp.mlp_logits(p, x, activation=activation), y, reduction="mean")


def test_extreme_inputs_stay_finite():
  p = mlp.init_mlp(jax.random.key(5), 4, 6, 3)
  y = jnp.array([0, 2])
  for activation, big in (("relu", 1e4), ("tanh", 1e4), ("tanh", 3e38)):
    x = jnp.array([[big, -big, big, -big], [-big, -big, big, big]])
    o = mlp.mlp_logits(p, x, activation=activation)
    assert jnp.all(jnp.isfinite(o)), (activation, big, o)
    g = jax.grad(_loss)(p, x, y, activation)
    assert all(jnp.all(jnp.isfinite(a)) for a in g), (activation, big)
  # tanh saturates: the hidden layer is ±1, so ±3e38 gives the same logits as ±1e4.
  x = jnp.array([3e38, -3e38, 3e38, -3e38])
  np.testing.assert_allclose(mlp.mlp_logits(p, x, activation="tanh"),
                             mlp.mlp_logits(p, x / 3e34, activation="tanh"), rtol=1e-6)


def test_learns_xor_which_softmax_regression_cannot():
  x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
  y = jnp.array([0, 1, 1, 0])

  def linear_loss(p, x, y):
    return sj.cross_entropy(sj.logits(p, x), y, reduction="mean")

  p, _ = minimize.minimize(_loss, mlp.init_mlp(jax.random.key(0), 2, 16, 2), x, y,
                           optimizer=optax.adam(0.05), num_steps=300)
  assert jnp.all(jnp.argmax(mlp.mlp_logits(p, x), -1) == y)
  assert float(_loss(p, x, y)) < 0.05
  q, _ = minimize.minimize(linear_loss, sj.init_params(jax.random.key(0), 2, 2), x, y,
                           optimizer=optax.adam(0.05), num_steps=300)
  assert float(linear_loss(q, x, y)) > 0.69  # log 2: a linear map cannot separate XOR


def test_bad_input():
  p = _hand_params()
  with pytest.raises(ValueError, match="activation.*'gelu'"):
    mlp.mlp_logits(p, jnp.ones(2), activation="gelu")
  with pytest.raises(ValueError, match=r"d = 2.*\(3,\)"):
    mlp.mlp_logits(p, jnp.ones(3))
  with pytest.raises(ValueError, match=r"d = 2.*\(\)"):
    mlp.mlp_logits(p, jnp.float32(1.0))
  with pytest.raises(TypeError, match="floating.*int32"):
    mlp.mlp_logits(p, jnp.ones(2, jnp.int32))
  with pytest.raises(ValueError, match=r"W2 \(3, 3\)"):
    mlp.mlp_logits(p._replace(W2=jnp.ones((3, 3))), jnp.ones(2))
  with pytest.raises(ValueError, match=r"b2 \(2,\)"):
    mlp.mlp_logits(p._replace(b2=jnp.ones(2)), jnp.ones(2))
  with pytest.raises(TypeError, match="MLPParams"):
    mlp.mlp_logits(sj.Params(jnp.ones((2, 3)), jnp.ones(3)), jnp.ones(2))
  with pytest.raises(ValueError, match="num_hidden must be a positive int; got 0"):
    mlp.init_mlp(jax.random.key(0), 2, 0, 3)
  with pytest.raises(ValueError, match="num_classes.*True"):
    mlp.init_mlp(jax.random.key(0), 2, 3, True)
  with pytest.raises(TypeError, match="dtype"):
    mlp.init_mlp(jax.random.key(0), 2, 3, 4, dtype=jnp.int32)


def test_derivatives_near_the_float_max_are_those_of_the_plain_product():
  """The first product's overflow guard scales x by 2^-127 at 2e38; its derivatives were taken
  through the scaling: jacfwd 0 (tangents flushed) and grad [nan, inf] (cotangents overflowed).
  Here W1's column for the 2e38 feature is 0, so the exact values are those at x = [0, 3]:
  d/dx_1 tanh(3)·1000 = 1000·(1 − tanh²3) = 9.8661 (review)."""
  params = mlp.MLPParams(jnp.array([[0.0], [1.0]]), jnp.zeros(1), jnp.full((1, 1), 1000.0),
                         jnp.zeros(1))

  def g(x):
    return mlp.mlp_logits(params, x, activation="tanh")[0]

  # A small feature next to a huge one keeps its value: at [3e38, 1.0] the guard's old scaling
  # to [1, 2) made 1.0·2^-127 subnormal, flushed to 0, and the logit 0 instead of 1000·tanh(1).
  for small, huge in ((3.0, 2e38), (1.0, 3e38), (1e-8, 3e38)):  # the limit: 2^-30 at 3e38
    want = [0.0, 1000 * (1 - np.tanh(small) ** 2)]
    for x in (jnp.array([0.0, small]), jnp.array([huge, small])):
      np.testing.assert_allclose(g(x), 1000 * np.tanh(small), rtol=1e-6)
      for jac in (jax.grad, jax.jacfwd):
        np.testing.assert_allclose(jac(g)(x), want, rtol=1e-5, atol=1e-30)
