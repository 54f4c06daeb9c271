"""Tests for softmax_jax.train: batches, steps, epochs, evaluation, fit, a smoke run."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import data
from softmax_jax import train


def _toy(n=50, d=4, q=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((n, d), dtype=np.float32)
  y = rng.integers(0, q, n).astype(np.int32)
  return x, y


def test_make_batches_keeps_and_masks_the_short_batch():
  x, y = _toy(n=10)
  b = train.make_batches(jnp.asarray(x), jnp.asarray(y), 4)
  assert b.x.shape == (3, 4, 4) and b.y.shape == (3, 4) and b.mask.shape == (3, 4)
  np.testing.assert_array_equal(b.mask.reshape(-1), [True] * 10 + [False] * 2)
  np.testing.assert_array_equal(b.x.reshape(-1, 4)[:10], x)
  with pytest.raises(ValueError, match="batch_size"):
    train.make_batches(jnp.asarray(x), jnp.asarray(y), 0)


def test_short_batch_gradient_is_the_mean_over_its_real_examples():
  x, y = _toy(n=3)
  params = sj.init_params(jax.random.PRNGKey(0), 4, 3, scale=1.0)
  padded = train.make_batches(jnp.asarray(x), jnp.asarray(y), 5)
  batch = jax.tree.map(lambda a: a[0], padded)
  g = jax.grad(train.objective)(params, batch)
  exact = train.Batch(jnp.asarray(x), jnp.asarray(y), jnp.ones(3, bool))
  g_exact = jax.grad(train.objective)(params, exact)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), g, g_exact)


@pytest.mark.parametrize("l2,eps", [(0.0, 0.0), (0.1, 0.2)])
def test_autodiff_gradient_equals_closed_form(l2, eps):
  x, y = _toy(n=17)
  params = sj.init_params(jax.random.PRNGKey(1), 4, 3, scale=1.0)
  batch = train.make_batches(jnp.asarray(x), jnp.asarray(y), 32)
  batch = jax.tree.map(lambda a: a[0], batch)
  g = jax.grad(functools.partial(train.objective, l2=l2, label_smoothing=eps))(params, batch)
  closed = train.closed_form_grad(params, batch, l2=l2, label_smoothing=eps)
  # And the text's formula by hand: Xᵀ(softmax(O) − Y)/n + λW, mean(softmax(O) − Y).
  o = x @ np.asarray(params.W) + np.asarray(params.b)
  p = np.exp(o - o.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  target = (1 - eps) * np.eye(3)[y] + eps / 3
  dW = x.T @ (p - target) / len(y) + l2 * np.asarray(params.W)
  db = (p - target).mean(0)
  np.testing.assert_allclose(g.W, dW, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g.b, db, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(closed.W, dW, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(closed.b, db, rtol=1e-5, atol=1e-6)


def test_add_l2_value_gradient_and_extremes():
  W = jnp.array([[1.0, -2.0], [3.0, 0.5]])
  np.testing.assert_allclose(train.add_l2(1.0, W, l2=0.1), 1.0 + 0.05 * 14.25, rtol=1e-7)
  assert train.add_l2(1.0, W, l2=0.0) == 1.0
  g = jax.jit(jax.grad(lambda W: train.add_l2(0.0, W, l2=0.1)))(W)
  np.testing.assert_allclose(g, 0.1 * W, rtol=1e-6)  # ∂/∂W = λW
  check_grads(lambda W: train.add_l2(0.0, W, l2=0.1), (W,), order=1, modes=("fwd", "rev"))
  check_grads(lambda l2: train.add_l2(0.0, W, l2=l2), (jnp.float32(0.1),), order=1,
              modes=("fwd", "rev"), eps=1e-2)  # a traced λ: ∂/∂λ = ‖W‖²/2
  # |W| = 3e38: the penalty's exact value (4.5e75) is beyond the float range, its gradient λW
  # is not (autodiff of W² gave 2W = inf). |W| = 1e20: W² overflowed, the penalty (2e37) does not.
  big = jnp.array([[3e38, -3e38], [1.0, 0.0]])
  assert train.add_l2(0.0, big, l2=0.1) == jnp.inf
  grad = jax.grad(lambda W: train.add_l2(0.0, W, l2=0.1))
  for g in (grad(big), jax.jit(grad)(big)):  # eager: 2·3e38 = inf (jit folded 2·0.05 first)
    np.testing.assert_allclose(g, 0.1 * np.asarray(big, np.float64), rtol=1e-6)
  np.testing.assert_allclose(train.add_l2(0.0, jnp.full((2, 2), 1e20), l2=1e-3), 2e37, rtol=1e-6)
  for bad in (-0.1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
      train.add_l2(0.0, W, l2=bad)


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_objective_and_closed_form_grad_at_extreme_logits(l2):
  # One-hot rows of x pick rows of W: logits ±1e4, ±3e38 and a −inf bias (a class switched off).
  W = jnp.array([[1e4, -1e4, 0.0], [3e38, -3e38, 0.0], [0.0, 1.0, 0.0]])
  params = sj.Params(W=W, b=jnp.array([0.0, 0.0, -jnp.inf]))
  x = jnp.concatenate([jnp.eye(3), jnp.zeros((1, 3))])
  batch = train.Batch(x, jnp.array([1, 0, 0, 1]), jnp.ones(4, bool))
  f = functools.partial(train.objective, l2=l2)
  loss, g = jax.jit(jax.value_and_grad(f))(params, batch)
  closed = jax.jit(functools.partial(train.closed_form_grad, l2=l2))(params, batch)
  ce = (2e4 + 0.0 + np.log1p(np.e) + np.log(2)) / 4  # row 0's label is 2e4 below the max
  np.testing.assert_allclose(loss, ce if l2 == 0 else np.inf, rtol=1e-6)  # 0.05·9e76: inf
  p = np.array([[1, 0, 0], [1, 0, 0], [1 / (1 + np.e), np.e / (1 + np.e), 0], [0.5, 0.5, 0]])
  delta = p - np.eye(3)[[1, 0, 0, 1]]
  want_W = np.asarray(x).T @ delta / 4 + l2 * np.asarray(W, np.float64)
  for got in (g, closed):
    assert all(np.all(np.isfinite(a)) for a in got)
    np.testing.assert_allclose(got.W, want_W, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.b, delta.mean(0), rtol=1e-6, atol=1e-7)


def test_train_step_is_pure_and_reports_gradient_check():
  x, y = _toy(n=8)
  opt = optax.sgd(0.1)
  state = train.create_train_state(jax.random.PRNGKey(2), 4, 3, opt)
  batch = train.Batch(jnp.asarray(x), jnp.asarray(y), jnp.ones(8, bool))
  step = jax.jit(functools.partial(train.train_step, optimizer=opt, check_grad_every=1))
  s1, m1 = step(state, batch)
  s2, m2 = step(state, batch)
  jax.tree.map(np.testing.assert_array_equal, s1, s2)
  assert int(s1.step) == 1
  assert float(m1["grad_max_rel_diff"]) < 1e-5
  # The update is SGD on the closed-form gradient.
  closed = train.closed_form_grad(state.params, batch)
  np.testing.assert_allclose(s1.params.W, state.params.W - 0.1 * closed.W, rtol=1e-5, atol=1e-7)


def test_epoch_scan_equals_python_loop_of_steps():
  x, y = _toy(n=30)
  opt = optax.sgd(0.5)
  state = train.create_train_state(jax.random.PRNGKey(3), 4, 3, opt)
  xs, ys = jnp.asarray(x), jnp.asarray(y)
  perm = train.shuffle(jax.random.fold_in(state.key, 0), 30)
  batches = train.make_batches(xs, ys, 8, perm)
  looped = state
  for i in range(batches.x.shape[0]):
    looped, _ = train.train_step(looped, jax.tree.map(lambda a, i=i: a[i], batches), optimizer=opt)
  scanned, metrics = train.train_epoch(state, xs, ys, jnp.int32(0), batch_size=8, optimizer=opt)
  assert metrics["loss"].shape == (4,)
  np.testing.assert_allclose(scanned.params.W, looped.params.W, rtol=1e-5, atol=1e-7)


def test_evaluate_is_exact_with_a_short_last_batch():
  x, y = _toy(n=37)
  params = sj.init_params(jax.random.PRNGKey(4), 4, 3, scale=2.0)
  out = train.evaluate(params, jnp.asarray(x), jnp.asarray(y), batch_size=8)
  o = x @ np.asarray(params.W) + np.asarray(params.b)
  ls = o - o.max(1, keepdims=True)
  ls = ls - np.log(np.exp(ls).sum(1, keepdims=True))
  np.testing.assert_allclose(out["loss"], -ls[np.arange(37), y].mean(), rtol=1e-5)
  assert out["accuracy"] == np.mean(o.argmax(1) == y)
  assert out["n"] == 37


def test_evaluate_under_x64_equals_evaluate(x64):
  """With jax_enable_x64 on, the scan's sums (a count of bools is int64 then, the zeros
  float64) raised a TypeError (found by review); now the same metrics as without x64."""
  x, y = _toy(n=37)
  params = sj.init_params(jax.random.PRNGKey(4), 4, 3, scale=2.0)
  params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
  out = train.evaluate(params, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32),
                       batch_size=8)
  with jax.enable_x64(False) if hasattr(jax, "enable_x64") and callable(jax.enable_x64) else (
      jax.experimental.disable_x64()):
    want = train.evaluate(params, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32),
                          batch_size=8)
  np.testing.assert_allclose(out["loss"], want["loss"], rtol=1e-6)
  np.testing.assert_allclose(out["ece"], want["ece"], rtol=1e-6)
  assert out["accuracy"] == want["accuracy"] and out["n"] == want["n"] == 37
  assert out["per_class_accuracy"] == want["per_class_accuracy"]


def test_make_optimizer():
  assert isinstance(train.make_optimizer("adam", 1e-3), optax.GradientTransformation)
  train.make_optimizer("momentum", 0.1, weight_decay=1e-4)
  with pytest.raises(ValueError, match="optimizer must be one of"):
    train.make_optimizer("lbfgs", 0.1)
  with pytest.raises(ValueError, match="learning_rate"):
    train.make_optimizer("sgd", 0.0)
  with pytest.raises(ValueError, match="weight_decay"):
    train.make_optimizer("sgd", 0.1, weight_decay=-1.0)


def _tiny_digits():
  ds = data.load_digits()
  return ds._replace(x_train=ds.x_train[:300], y_train=ds.y_train[:300])


def test_fit_learns_and_is_deterministic():
  ds = _tiny_digits()
  _, hist = train.fit(ds, epochs=3, batch_size=64, learning_rate=0.5, seed=0)
  assert [r["epoch"] for r in hist] == [1, 2, 3]
  assert hist[-1]["train_loss"] < hist[0]["train_loss"]
  assert hist[-1]["test_accuracy"] > 0.5
  assert hist[-1]["grad_check_max_rel_diff"] < 1e-5
  _, hist2 = train.fit(ds, epochs=3, batch_size=64, learning_rate=0.5, seed=0)
  assert [r["test_loss"] for r in hist] == [r["test_loss"] for r in hist2]


def test_fit_stops_when_the_gradient_check_fails():
  with pytest.raises(train.GradientCheckError, match="closed form"):
    train.fit(_tiny_digits(), epochs=1, batch_size=64, grad_rtol=-1.0)


def test_experiment_smoke(tmp_path):
  from absl.testing import flagsaver

  from experiments import train as exp
  with flagsaver.flagsaver(epochs=2, batch_size=128, workdir=str(tmp_path)):
    exp.FLAGS.mark_as_parsed()
    exp.main([])
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2
  rec = json.loads(lines[-1])
  for key in ("epoch", "train_loss", "test_loss", "test_accuracy", "examples_per_sec",
              "wall_time", "grad_check_max_abs_diff"):
    assert key in rec
  assert rec["epoch"] == 2 and 0 < rec["test_accuracy"] <= 1
  assert rec["grad_check_max_rel_diff"] < 1e-5


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 255, 256, 257, 4097, 60000])
def test_shuffle_is_a_permutation_fixed_by_its_key(n):
  p = np.asarray(train.shuffle(jax.random.PRNGKey(n), n))
  assert p.dtype == np.int32
  np.testing.assert_array_equal(np.sort(p), np.arange(n))
  np.testing.assert_array_equal(p, np.asarray(jax.jit(train.shuffle, static_argnums=1)(
      jax.random.PRNGKey(n), n)))
  if n >= 5:
    assert not np.array_equal(p, np.asarray(train.shuffle(jax.random.PRNGKey(n + 1), n)))


def test_shuffle_looks_uniform():
  """Over 400 keys: ~1 fixed point per permutation (as for a uniform one), each pair of indices
  in either order about half the time, and where index 0 lands spread over all positions."""
  n, keys = 200, 400
  ps = np.stack([np.asarray(train.shuffle(jax.random.PRNGKey(k), n)) for k in range(keys)])
  fixed = (ps == np.arange(n)).sum(1).mean()
  assert 0.8 < fixed < 1.2, fixed
  before = (ps[:, :100] < ps[:, 100:]).mean()  # is i sent before i + 100?
  assert abs(before - 0.5) < 0.02, before
  counts = np.bincount(ps[:, 0] // 20, minlength=10)  # expected 40 per decile
  assert counts.min() > 20 and counts.max() < 62, counts


def test_shuffle_rejects_bad_sizes():
  for n in (0, -3, 2**31):
    with pytest.raises(ValueError, match=r"n must be in \[1, 2\^31\)"):
      train.shuffle(jax.random.PRNGKey(0), n)
