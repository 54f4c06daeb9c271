"""Tests for softmax_jax.losses: cross_entropy, cross_entropy_grad, sigmoid_cross_entropy."""

import functools
import itertools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import losses
from tests.conftest import enable_x64

INF = np.inf


def ref_log_softmax(o):
  o = np.asarray(o, np.float64)
  m = o.max(-1, keepdims=True)
  return o - m - np.log(np.exp(o - m).sum(-1, keepdims=True))


def ref_cross_entropy(logits, labels, *, weight=None, mask=None, reduction="none", eps=0.0):
  """NumPy (float64) transcription of torch.nn.functional.cross_entropy's semantics.

  Classes on the last axis; ``mask=False`` plays ``ignore_index``. For class ids PyTorch computes
  ``(1−ε)·nll + ε/C·smooth`` where ``smooth = −Σ_c w_c ls_c`` and, for "mean", divides both by
  ``Σ_n w_{y_n}`` over kept examples; for probabilities it divides by the number of examples.
  """
  ls = ref_log_softmax(logits)
  num_classes = ls.shape[-1]
  w = np.ones(num_classes) if weight is None else np.asarray(weight, np.float64)
  labels = np.asarray(labels)
  keep = np.ones(ls.shape[:-1], bool) if mask is None else np.asarray(mask)
  if labels.ndim == ls.ndim - 1:
    y = np.where(keep, labels, 0)
    nll = np.where(keep, -w[y] * np.take_along_axis(ls, y[..., None], -1)[..., 0], 0)
    smooth = np.where(keep, -(ls * w).sum(-1), 0)
    if reduction == "none":
      return (1 - eps) * nll + eps / num_classes * smooth
    if reduction == "sum":
      return (1 - eps) * nll.sum() + eps / num_classes * smooth.sum()
    denom = np.where(keep, w[y], 0).sum()
    return ((1 - eps) * nll.sum() + eps / num_classes * smooth.sum()) / denom
  t = np.asarray(labels, np.float64) * (1 - eps) + eps / num_classes
  per = np.where(keep, -(ls * t * w).sum(-1), 0)
  if reduction == "none":
    return per
  if reduction == "sum":
    return per.sum()
  return per.sum() / keep.sum()


def ref_grad(logits, labels, *, weight=None, mask=None, eps=0.0):
  """Closed form per example: softmax(o)·Σ_j v_j − v, v = w ⊙ ((1−ε)y + ε/C)."""
  ls = ref_log_softmax(logits)
  p = np.exp(ls)
  num_classes = p.shape[-1]
  labels = np.asarray(labels)
  y = np.eye(num_classes)[labels] if labels.ndim == p.ndim - 1 else np.asarray(labels, np.float64)
  w = np.ones(num_classes) if weight is None else np.asarray(weight, np.float64)
  vv = w * ((1 - eps) * y + eps / num_classes)
  g = p * vv.sum(-1, keepdims=True) - vv
  return g if mask is None else np.where(np.asarray(mask)[..., None], g, 0)


def _problem(seed=0, n=6, c=5, soft=False, dtype=jnp.float32):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  logits = (jax.random.normal(k1, (n, c)) * 3).astype(dtype)
  if soft:
    labels = jax.nn.softmax(jax.random.normal(k2, (n, c)) * 2).astype(dtype)
  else:
    labels = jax.random.randint(k2, (n,), 0, c)
  return logits, labels


WEIGHTS = np.array([0.5, 2.0, 1.0, 0.0, 3.0])
MASK = np.array([True, False, True, True, False, True])
COMBOS = list(itertools.product([False, True], [None, WEIGHTS], [None, MASK],
                                ["none", "mean", "sum"], [0.0, 0.2]))


def _combo_id(combo):
  soft, w, m, red, eps = combo
  return (f"{'soft' if soft else 'hard'}-{'w' if w is not None else 'now'}-"
          f"{'mask' if m is not None else 'nomask'}-{red}-eps{eps}")


# ------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------


def test_optax_published_vectors():
  logits = jnp.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]])
  labels = jnp.array([1, 0])
  np.testing.assert_allclose(jax.jit(sj.cross_entropy)(logits, labels), [9.00013, 3.0696733],
                             rtol=1e-6)
  # The same as probability labels.
  np.testing.assert_allclose(sj.cross_entropy(logits, jax.nn.one_hot(labels, 3)),
                             [9.00013, 3.0696733], rtol=1e-6)


def test_d2l_y_hat_example():
  y_hat = jnp.array([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]])
  loss = sj.cross_entropy(jnp.log(y_hat), jnp.array([0, 2]), reduction="mean")
  np.testing.assert_allclose(loss, 1.4979, atol=5e-5)
  np.testing.assert_allclose(loss, -(np.log(0.1) + np.log(0.5)) / 2, rtol=1e-6)


def test_text_soft_label_example():
  """The text's soft label (0.1, 0.2, 0.7): the loss is −Σ y log softmax(o)."""
  o = jnp.array([1.0, 2.0, 3.0])
  y = jnp.array([0.1, 0.2, 0.7])
  np.testing.assert_allclose(sj.cross_entropy(o, y), -(np.asarray(y) * ref_log_softmax(o)).sum(),
                             rtol=1e-6)


@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_matches_torch_semantics_reference(combo):
  soft, w, m, red, eps = combo
  logits, labels = _problem(soft=soft)
  out = jax.jit(functools.partial(sj.cross_entropy, class_weights=w, where=m, reduction=red,
                                  label_smoothing=eps))(logits, labels)
  expected = ref_cross_entropy(logits, labels, weight=w, mask=m, reduction=red, eps=eps)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("combo", COMBOS[::3], ids=_combo_id)
def test_matches_torch(combo):
  torch = pytest.importorskip("torch")
  soft, w, m, red, eps = combo
  logits, labels = _problem(soft=soft, dtype=jnp.float32)
  t_labels = torch.tensor(np.asarray(labels).astype(np.float64 if soft else np.int64))
  if m is not None:
    if soft:
      pytest.skip("PyTorch has no ignore_index for probability targets")
    t_labels = torch.where(torch.tensor(m), t_labels, -100)
  expected = torch.nn.functional.cross_entropy(
      torch.tensor(np.asarray(logits), dtype=torch.float64), t_labels,
      weight=None if w is None else torch.tensor(w), reduction=red, label_smoothing=eps)
  out = sj.cross_entropy(logits, labels, class_weights=w, where=m, reduction=red,
                         label_smoothing=eps)
  np.testing.assert_allclose(out, expected.numpy(), rtol=2e-6, atol=1e-6)


def test_integer_path_equals_one_hot_path():
  logits, labels = _problem(seed=3)
  onehot = jax.nn.one_hot(labels, 5)
  for red, eps, m in itertools.product(["none", "sum", "mean"], [0.0, 0.3], [None, MASK]):
    kw = dict(reduction=red, label_smoothing=eps, where=m)
    np.testing.assert_allclose(sj.cross_entropy(logits, labels, **kw),
                               sj.cross_entropy(logits, onehot, **kw), rtol=1e-6, atol=1e-7)
  # With weights the per-example values agree; the "mean" normalisers differ by design (torch).
  for red in ("none", "sum"):
    np.testing.assert_allclose(
        sj.cross_entropy(logits, labels, class_weights=WEIGHTS, reduction=red),
        sj.cross_entropy(logits, onehot, class_weights=WEIGHTS, reduction=red), rtol=1e-6)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_axis_equals_moveaxis(soft, axis):
  key = jax.random.PRNGKey(4)
  logits = jax.random.normal(key, (3, 4, 5))
  labels = (jax.nn.softmax(logits * 0.3, axis=axis) if soft else
            jax.random.randint(key, logits.shape[:axis] + logits.shape[axis + 1:], 0,
                               logits.shape[axis]))
  out = sj.cross_entropy(logits, labels, axis=axis, label_smoothing=0.1)
  moved = sj.cross_entropy(jnp.moveaxis(logits, axis, -1),
                           jnp.moveaxis(labels, axis, -1) if soft else labels,
                           label_smoothing=0.1)
  np.testing.assert_allclose(out, moved, rtol=1e-6)
  g = sj.cross_entropy_grad(logits, labels, axis=axis)
  g_moved = sj.cross_entropy_grad(jnp.moveaxis(logits, axis, -1),
                                  jnp.moveaxis(labels, axis, -1) if soft else labels)
  np.testing.assert_allclose(g, jnp.moveaxis(g_moved, -1, axis), rtol=1e-6, atol=1e-7)


def test_per_example_vmap_equals_batched_reference_and_eager():
  logits, labels = _problem(seed=5, n=32, c=10)
  batched = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  out = sj.cross_entropy(logits, labels)
  np.testing.assert_allclose(out, batched, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(jax.jit(sj.cross_entropy)(logits, labels), out)
  one = jnp.stack([sj.cross_entropy(o, y) for o, y in zip(logits, labels, strict=True)])
  np.testing.assert_allclose(one, out, rtol=1e-6)


EXTREME_ROWS = np.array([
    [1e4, -1e4, 0.0, 5.0, 1e4],  # tied maxima far from 0
    [3e38, -3e38, 0.0, 1.0, 2.0],  # near the float range
    [-INF, 1.0, 2.0, -INF, 0.5],  # −inf classes
    [-INF, -INF, -INF, -INF, -INF],  # nothing possible: loss +inf, finite gradient
    [INF, 0.0, INF, -INF, 3.0],  # +inf entries share the mass
    [INF, np.finfo(np.float32).max, 0.0, 1.0, 2.0],  # the float maximum is not +inf
], np.float32)


def _per_example_reference(logits, labels, *, reduction, class_weights=None, where=None,
                           label_smoothing=0.0):
  """The per-example kernels, vmapped: the reference for the batch rules."""
  w = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
  m = None if where is None else jnp.asarray(where)
  hard = jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer)
  return losses._cross_entropy_per_example(logits, labels, w, m, hard=hard, axis=1,
                                           eps=float(label_smoothing), reduction=reduction)


@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
@pytest.mark.parametrize("extreme", [False, True])
def test_batch_rule_equals_the_per_example_rule(combo, extreme):
  """Class ids and probability labels take batch-level rules for every reduction (the fast
  path); the per-example kernels are their reference. The two must agree on values and on
  gradients for any cotangent (a different one per example for "none"), with respect to the
  logits, the probability labels and the class weights, limits included."""
  soft, w, m, red, eps = combo
  logits, labels = _problem(n=6, soft=soft)
  if extreme:
    logits = jnp.asarray(EXTREME_ROWS)
    if not soft:
      labels = jnp.array([0, 1, 4, 2, 0, 1])
  kw = dict(class_weights=w, where=m, label_smoothing=eps, reduction=red)
  f = jax.jit(lambda o, t: sj.cross_entropy(o, t, **kw))
  ref = jax.jit(lambda o, t: _per_example_reference(o, t, **kw))
  np.testing.assert_allclose(f(logits, labels), ref(logits, labels), rtol=1e-6)
  ct = jnp.asarray(np.random.default_rng(3).uniform(0.5, 2.0, (6,) if red == "none" else ()),
                   jnp.float32)
  argnums = (0, 1) if soft else (0,)
  g = jax.vjp(lambda *a: f(*a, *(() if soft else (labels,))), logits,
              *((labels,) if soft else ()))[1](ct)
  g_ref = jax.vjp(lambda *a: ref(*a, *(() if soft else (labels,))), logits,
                  *((labels,) if soft else ()))[1](ct)
  assert len(g) == len(argnums)
  for got, want in zip(g, g_ref, strict=True):
    got, want = np.asarray(got), np.asarray(want)
    # Near the float range the two multiply in different orders, and one may overflow to ±inf
    # where the other stays finite (w·ls·r against w·(r·ls)): such entries need only agree in
    # sign and be huge.
    huge = (np.abs(got) > 1e37) & (np.abs(want) > 1e37) & (np.sign(got) == np.sign(want))
    np.testing.assert_allclose(np.where(huge, 0, got), np.where(huge, 0, want), rtol=1e-5,
                               atol=1e-6)
  if not extreme:
    keep = np.ones(6, bool) if m is None else m
    norm = 1.0
    if red == "mean":
      norm = keep.sum() if soft or w is None else (np.asarray(w)[labels] * keep).sum()
    scale = np.asarray(ct)[:, None] if red == "none" else float(ct)
    np.testing.assert_allclose(g[0], ref_grad(logits, labels, weight=w, mask=m, eps=eps) * scale
                               / norm, rtol=1e-5, atol=1e-7)
  else:
    np.testing.assert_array_equal(np.isfinite(g[0]), True)
  if w is not None:  # the weights' gradient, through the same rule
    fw = lambda w_: sj.cross_entropy(logits, labels, **{**kw, "class_weights": w_})  # noqa: E731
    rw = lambda w_: _per_example_reference(logits, labels, **{**kw, "class_weights": w_})  # noqa: E731
    gw = jax.vjp(fw, jnp.asarray(w, jnp.float32))[1](ct)[0]
    gw_ref = jax.vjp(rw, jnp.asarray(w, jnp.float32))[1](ct)[0]
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("soft", [False, True], ids=["ids", "probs"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("extreme", [False, True])
def test_cross_entropy_grad_equals_the_per_example_kernel(soft, dtype, extreme):
  logits, labels = _problem(n=6, dtype=dtype, soft=soft)
  if extreme:
    logits = jnp.asarray(EXTREME_ROWS, dtype)
    if not soft:
      labels = jnp.array([0, 1, 4, 2, 0, 1])
  for kw in (dict(), dict(class_weights=WEIGHTS, where=MASK, label_smoothing=0.2)):
    got = sj.cross_entropy_grad(logits, labels, **kw)
    assert got.dtype == jnp.float32  # written in the compute dtype, never rounded to bfloat16
    w = kw.get("class_weights")
    m = kw.get("where")
    row = losses._soft_grad_row if soft else losses._hard_grad_row
    want = losses._per_example(row, kw.get("label_smoothing", 0.0), logits, labels, not soft, 1,
                               None if w is None else jnp.asarray(w, jnp.float32),
                               None if m is None else jnp.asarray(m))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("soft", [False, True], ids=["ids", "probs"])
@pytest.mark.parametrize("red", ["none", "sum", "mean"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_masked_examples_give_no_gradient_to_targets_or_weights(soft, red, eps):
  """A masked example's loss is 0 whatever its targets and the class weights, so its gradient
  with respect to them is 0 too (the per-example kernels once leaked −log s there)."""
  logits, labels = _problem(n=6, soft=soft)
  w = jnp.asarray(WEIGHTS, jnp.float32)

  def f(labels, w):
    loss = sj.cross_entropy(logits, labels, class_weights=w, where=MASK, label_smoothing=eps,
                            reduction=red)
    return loss if red == "none" else loss[None]

  jac_w = jax.jacrev(f, argnums=1)(labels, w)
  if red == "none":
    np.testing.assert_array_equal(jac_w[~MASK], 0.0)
  if soft:
    jac_t = jax.jacrev(f)(labels, w)  # [out, example, class]
    np.testing.assert_array_equal(jac_t[:, ~MASK], 0.0)
    assert np.abs(jac_t[:, MASK]).max() > 0
  # A masked example's targets and weights change nothing.
  other = labels.at[1].set(labels[2]) if soft else labels.at[1].set((labels[1] + 1) % 5)
  np.testing.assert_array_equal(f(other, w), f(labels, w))


def test_reduced_loss_of_nan_logits_is_nan_and_masked_nan_is_ignored():
  logits = jnp.array([[1.0, 2.0, 3.0], [jnp.nan, 0.0, 1.0]])
  labels = jnp.array([2, 1])
  for red in ("none", "mean", "sum"):
    assert np.isnan(np.asarray(sj.cross_entropy(logits, labels, reduction=red))).any()
  f = lambda o: sj.cross_entropy(o, labels, where=jnp.array([True, False]), reduction="mean")  # noqa: E731
  np.testing.assert_allclose(f(logits), -ref_log_softmax([1.0, 2.0, 3.0])[2], rtol=1e-6)
  np.testing.assert_array_equal(jax.grad(f)(logits)[1], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("soft", [False, True], ids=["ids", "probs"])
@pytest.mark.parametrize("loss_fn", [
    lambda o, y: sj.cross_entropy(o, y, reduction="mean"),
    lambda o, y: sj.cross_entropy(o, y).mean(),  # "none", reduced by the caller
], ids=["mean", "none-then-mean"])
def test_reduced_loss_folds_the_unit_cotangent_and_overwrites_donated_logits(loss_fn, soft):
  """jax.grad's cotangent 1 reaches the batch rule as a constant that XLA folds: the gradient is
  written once, and with donated logits it is written into their buffer (no copy of them)."""
  logits, labels = _problem(n=64, c=40, soft=soft)
  vg = jax.jit(jax.value_and_grad(loss_fn), donate_argnums=0)
  hlo = vg.lower(logits, labels).compile().as_text()
  full_size_copies = [line for line in hlo.splitlines() if "= f32[64,40]" in line and " copy(" in line]
  assert not full_size_copies
  loss, g = vg(jnp.array(logits, copy=True), labels)
  np.testing.assert_allclose(g, ref_grad(logits, labels) / 64, rtol=1e-5, atol=1e-7)


def test_all_masked_mean_is_zero_with_zero_gradient():
  logits, labels = _problem()
  mask = np.zeros(6, bool)
  f = lambda o: sj.cross_entropy(o, labels, where=mask, reduction="mean")  # noqa: E731
  assert f(logits) == 0.0
  np.testing.assert_array_equal(jax.grad(f)(logits), np.zeros((6, 5)))
  # Zero total weight: also 0, not NaN.
  w = np.zeros(5)
  assert sj.cross_entropy(logits, labels, class_weights=w, reduction="mean") == 0.0


def test_masked_examples_may_hold_garbage():
  """Masked logits may be NaN/inf and masked labels out of range (ignore_index=-100)."""
  logits = jnp.array([[1.0, 2.0, 3.0], [jnp.nan, INF, -INF]])
  labels = jnp.array([2, -100])
  mask = jnp.array([True, False])
  f = lambda o: sj.cross_entropy(o, labels, where=mask, reduction="mean")  # noqa: E731
  np.testing.assert_allclose(f(logits), -ref_log_softmax([1.0, 2.0, 3.0])[2], rtol=1e-6)
  g = jax.grad(f)(logits)
  np.testing.assert_array_equal(g[1], [0.0, 0.0, 0.0])
  assert np.all(np.isfinite(g))


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------


def _norm(labels, w, m, red, soft):
  if red != "mean":
    return 1.0
  keep = np.ones(np.shape(labels)[:1], bool) if m is None else m
  if soft or w is None:
    return keep.sum()
  return np.where(keep, w[np.asarray(labels)], 0).sum()


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.float64, 1e-12)])
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_grad_equals_closed_form(combo, dtype, tol):
  soft, w, m, red, eps = combo
  with enable_x64():
    logits, labels = _problem(soft=soft, dtype=dtype)
    kw = dict(class_weights=w, where=m, label_smoothing=eps)
    if red == "none":  # any cotangent: take one that is not all ones
      ct = jnp.arange(1.0, 7.0, dtype=dtype)
      f = lambda o: jnp.dot(sj.cross_entropy(o, labels, reduction="none", **kw), ct)  # noqa: E731
      scale = np.asarray(ct)[:, None]
    else:
      f = lambda o: sj.cross_entropy(o, labels, reduction=red, **kw)  # noqa: E731
      scale = 1.0 / _norm(labels, w, m, red, soft)
    g = jax.jit(jax.grad(f))(logits)
    assert g.dtype == dtype
    closed = sj.cross_entropy_grad(logits, labels, **kw)
    np.testing.assert_allclose(g, np.asarray(closed) * scale, rtol=tol, atol=tol)
    np.testing.assert_allclose(closed, ref_grad(logits, labels, weight=w, mask=m, eps=eps),
                               rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("combo", COMBOS[::2], ids=_combo_id)
def test_check_grads_order_2(combo, x64):
  soft, w, m, red, eps = combo
  logits, labels = _problem(soft=soft, dtype=jnp.float64)
  f = functools.partial(sj.cross_entropy, labels=labels, class_weights=w, where=m,
                        reduction=red, label_smoothing=eps)
  check_grads(lambda o: f(o), (logits,), order=2, modes=("fwd", "rev"))


def test_check_grads_soft_labels_and_weights(x64):
  logits, labels = _problem(soft=True, dtype=jnp.float64)
  # Finite differences step off the simplex: jit skips the eager value checks.
  check_grads(jax.jit(lambda y: sj.cross_entropy(logits, y, reduction="sum",
                                                 label_smoothing=0.1)),
              (labels,), order=2, modes=("fwd", "rev"))
  w = jnp.asarray(WEIGHTS) + 0.5
  for red in ("sum", "mean"):
    check_grads(lambda w, red=red: sj.cross_entropy(logits, labels, class_weights=w,
                                                    reduction=red), (w,), order=1,
                modes=("fwd", "rev"))
    check_grads(lambda w, red=red: sj.cross_entropy(logits, jnp.array([0, 1, 2, 3, 4, 0]), class_weights=w,
                                                    reduction=red, label_smoothing=0.1),
                (w,), order=1, modes=("fwd", "rev"))


def test_hessian_is_softmax_covariance(x64):
  o = jnp.array([2.0, -1.0, 0.5, 3.0], jnp.float64)
  for label in (jnp.array(1), jnp.array([0.1, 0.2, 0.3, 0.4], jnp.float64)):
    h = jax.hessian(lambda o, label=label: sj.cross_entropy(o, label))(o)
    np.testing.assert_allclose(h, sj.softmax_hessian(o), atol=1e-14)
  # With weights the Hessian scales by Σ v = w_y.
  w = jnp.array([1.0, 3.0, 1.0, 1.0], jnp.float64)
  h = jax.hessian(lambda o: sj.cross_entropy(o, jnp.array(1), class_weights=w))(o)
  np.testing.assert_allclose(h, 3.0 * sj.softmax_hessian(o), atol=1e-14)


def _ref_softmax_hessian(o):
  """diag(p) − ppᵀ per row, float64, with the limits of ``sj.softmax`` (±inf logits)."""
  p = np.asarray(sj.softmax(jnp.asarray(o)), np.float64)  # float64 for float64 logits
  return p[..., :, None] * (np.eye(p.shape[-1]) - p[..., None, :])


def _grad_fns(dtype):
  logits, ids = _problem(n=2, c=4, dtype=dtype)
  _, soft = _problem(n=2, c=4, soft=True, dtype=dtype)
  w = jnp.array([0.5, 2.0, 1.0, 3.0], dtype)
  # jit: finite differences step the probability labels off the simplex, unchecked there.
  hard = jax.jit(lambda o, w: sj.cross_entropy_grad(o, ids, class_weights=w, label_smoothing=0.2))
  prob = jax.jit(lambda o, t: sj.cross_entropy_grad(o, t, label_smoothing=0.2))
  return logits, ids, soft, w, hard, prob


@pytest.mark.parametrize("soft", [False, True], ids=["ids-weights", "probs"])
def test_cross_entropy_grad_check_grads(soft, x64):
  logits, _, labels, w, hard, prob = _grad_fns(jnp.float64)
  check_grads(prob if soft else hard, (logits, labels if soft else w), order=1,
              modes=("fwd", "rev"))


def test_cross_entropy_grad_derivative_is_the_hessian(x64):
  # The derivative of the closed-form gradient: the Hessian Σv·(diag(p) − ppᵀ) in the logits,
  # and (1−ε)(p 1ᵀ − I) in probability labels (∂G_i/∂t_j, G = p·Σv − v, v = (1−ε)t + ε/C).
  logits, ids, soft, w, hard, prob = _grad_fns(jnp.float64)
  total = 0.8 * np.asarray(w)[np.asarray(ids)] + 0.2 / 4 * float(jnp.sum(w))  # Σv per row
  plain = jax.jit(lambda o: sj.cross_entropy_grad(o, ids))
  for f, scale in ((plain, np.ones(2)), (lambda o: hard(o, w), total),
                   (lambda o: prob(o, soft), np.ones(2))):
    jac = jax.jit(jax.jacfwd(f))(logits)
    for n in range(2):
      np.testing.assert_allclose(jac[n, :, n], scale[n] * _ref_softmax_hessian(logits[n]),
                                 atol=1e-14)
      np.testing.assert_array_equal(np.delete(jac[n], n, axis=1), 0)  # rows are independent
  p = np.asarray(sj.softmax(logits))
  jac_t = jax.jit(jax.jacrev(prob, argnums=1))(logits, soft)
  for n in range(2):
    np.testing.assert_allclose(jac_t[n, :, n], 0.8 * (p[n][:, None] - np.eye(4)), atol=1e-14)


def _grad_jacobians_at(rows, eps):
  """∂G/∂o of cross_entropy_grad for each row and each label (rows × 3 examples), both modes."""
  o = jnp.repeat(jnp.array(rows, jnp.float32), 3, axis=0)
  labels = jnp.tile(jnp.arange(3), len(rows))
  f = lambda o: sj.cross_entropy_grad(o, labels, label_smoothing=eps)  # noqa: E731
  for jac in (jax.jacfwd, jax.jacrev):
    got = np.asarray(jax.jit(jac(f))(o))
    yield np.stack([got[n, :, n] for n in range(o.shape[0])]), o


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_grad_derivative_at_extremes(eps):
  # The Hessian of the loss at ±1e4, ±3e38, ±inf logits: finite and exact (0 where the softmax
  # is one-hot, ¼ at a tie of two), in both modes, for every label.
  rows = [[1e4, -1e4, 0.0], [3e38, -3e38, 0.0], [3e38, 3e38, -3e38], [-INF, 1.0, 2.0],
          [INF, 0.0, 1.0], [1e4, 1e4 - 1, -INF]]
  for got, o in _grad_jacobians_at(rows, eps):
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, _ref_softmax_hessian(o), atol=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_grad_derivative_at_tied_plus_inf_logits(eps):
  """Two tied +inf logits: the Hessian is the limit from finite logits, p = [½, ½, 0] and
  diag(p) − ppᵀ = [[¼, −¼, 0], [−¼, ¼, 0], [0, 0, 0]] (it was 0: the +inf entries were constants),
  for cross_entropy_grad in both modes and for jax.hessian of the loss, batch and per-example."""
  for got, o in _grad_jacobians_at([[INF, INF, -INF], [INF, INF, 0.0]], eps):
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _ref_softmax_hessian(o), atol=1e-7)
  want = [[0.25, -0.25, 0.0], [-0.25, 0.25, 0.0], [0.0, 0.0, 0.0]]
  o = jnp.array([INF, INF, -INF])
  for fn in (lambda o: sj.cross_entropy(o[None], jnp.array([1]), label_smoothing=eps,
                                        reduction="sum"),
             lambda o: _per_example_reference(o[None], jnp.array([1]), reduction="sum",
                                              label_smoothing=eps)):
    np.testing.assert_allclose(jax.hessian(fn)(o), want, atol=1e-7)


def test_backward_is_the_closed_form_where_autodiff_would_fail():
  """Plain autodiff of lse(o) − o_y gives NaN at a +inf logit; the closed form does not."""
  logits = jnp.array([[INF, 0.0, 1.0]])
  labels = jnp.array([0])
  naive = lambda o: (jax.nn.logsumexp(o, -1) - o[:, 0]).sum()  # noqa: E731
  assert np.isnan(jax.grad(naive)(logits)).any()
  g = jax.grad(lambda o: sj.cross_entropy(o, labels, reduction="sum"))(logits)
  np.testing.assert_array_equal(g, sj.cross_entropy_grad(logits, labels))
  np.testing.assert_array_equal(g, [[0.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------------------------
# Stability
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e4, 3e38])
def test_extreme_logits_finite_and_match_float64(scale):
  logits = np.array([[scale, -scale, 0.0], [-scale, 0.0, scale], [scale, scale, -scale],
                     [-scale, -scale, -scale], [0.0, -scale, scale]], np.float32)
  labels = np.array([0, 2, 1, 1, 2])  # every loss representable in float32
  out = jax.jit(sj.cross_entropy)(jnp.asarray(logits), jnp.asarray(labels))
  expected = ref_cross_entropy(logits, labels)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  g = jax.grad(lambda o: sj.cross_entropy(o, jnp.asarray(labels), reduction="sum"))(
      jnp.asarray(logits))
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(g, ref_grad(logits, labels), atol=1e-6)
  # Soft labels at the extremes.
  soft = np.array([[0.5, 0.0, 0.5]] * 5, np.float32)
  soft[3] = [1 / 3, 1 / 3, 1 / 3]
  ok = np.array([True, False, False, True, False])
  out = sj.cross_entropy(jnp.asarray(logits[ok]), jnp.asarray(soft[ok]))
  expected = ref_cross_entropy(logits[ok], soft[ok])
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e4, 3e38])
def test_cross_entropy_grad_at_extremes_matches_float64(scale):
  logits = np.array([[scale, -scale, 0.0], [-INF, scale, -scale], [-INF, -INF, 1.0]], np.float32)
  labels = np.array([1, 2, 2])
  g = sj.cross_entropy_grad(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=0.1)
  assert np.all(np.isfinite(g))
  p = np.exp(np.asarray(sj.log_softmax(jnp.asarray(logits)), np.float64))
  target = 0.9 * np.eye(3)[labels] + 0.1 / 3
  np.testing.assert_allclose(g, p - target, atol=1e-7)


def test_loss_beyond_float_range_is_inf_not_nan():
  logits = jnp.array([3e38, -3e38])
  out = sj.cross_entropy(logits, jnp.array(1))  # exact value 6e38 > float32 max
  assert out == INF
  g = jax.grad(sj.cross_entropy)(logits, jnp.array(1))
  np.testing.assert_array_equal(g, [1.0, -1.0])


@pytest.mark.parametrize("kernel", ["batch", "per_example"])
def test_smoothing_soft_labels_and_weights_when_a_row_spans_more_than_the_float_range(kernel):
  """A row spanning more than the float range: ``o − max`` overflows to −inf, but a loss that
  weighs it by ε/C, a soft label or a class weight below 1 is finite, and is computed finite.

  Hand-computed (ε = 0.3, C = 3, so ε/C = 0.1):
  - [3e38, 3e38, −3e38], label 0: 0.7·log 2 + 0.1·(6e38 + 3·log 2) ≈ 6e37;
  - [3e38, −3e38, 0], label 2: 0.7·3e38 + 0.1·(0 + 6e38 + 3e38) = 3e38 (log s ≈ 0).
  These were +inf before the sums were taken in halves.
  """
  fn = (sj.cross_entropy if kernel == "batch" else
        lambda o, t, **kw: _per_example_reference(o, t, reduction="none", **kw))
  o = jnp.array([[3e38, 3e38, -3e38], [3e38, -3e38, 0.0]])
  ids = jnp.array([0, 2])
  np.testing.assert_allclose(fn(o, ids, label_smoothing=0.3), [6e37, 3e38], rtol=1e-6)
  # Beside an ordinary row (whose loss keeps the plain sum), and under vmap.
  o3 = jnp.concatenate([o, jnp.array([[1.0, 2.0, 3.0]])])
  ids3 = jnp.array([0, 2, 1])
  want3 = [6e37, 3e38, ref_cross_entropy(np.array([[1.0, 2.0, 3.0]]), np.array([1]), eps=0.3)[0]]
  np.testing.assert_allclose(fn(o3, ids3, label_smoothing=0.3), want3, rtol=1e-6)
  per_row = jax.vmap(lambda o, y: fn(o[None], y[None], label_smoothing=0.3)[0])(o3, ids3)
  np.testing.assert_allclose(per_row, want3, rtol=1e-6)
  # ε = 0.8 (> ½): row 1 ≈ (0.8/3)·6e38 = 1.6e38; row 2: 0.2·3e38 + (0.8/3)·(0 + 6e38 + 3e38)
  # = 3e38, although its label's log-softmax, −3e38, alone times 0.2 is finite only in halves.
  np.testing.assert_allclose(fn(o, ids, label_smoothing=0.8), [0.8 / 3 * 6e38, 3e38], rtol=1e-6)
  # A class weight of ½ on the label: ½·6e38 = 3e38, finite (label 2 of row 1 holds −3e38).
  w = jnp.array([1.0, 1.0, 0.5])
  np.testing.assert_allclose(fn(o[:1], jnp.array([2]), class_weights=w), [3e38], rtol=1e-6)
  # Weights and smoothing: row 1, label 0, w = [1, ½, 2]: 0.7·log 2 + 0.1·2·6e38 = 1.2e38;
  # row 2, label 2: 0.7·2·3e38 = 4.2e38 exceeds the float range, so +inf (never NaN).
  got = fn(o, ids, label_smoothing=0.3, class_weights=jnp.array([1.0, 0.5, 2.0]))
  np.testing.assert_allclose(got[0], 1.2e38, rtol=1e-6)
  assert got[1] == INF
  # Probability labels: ½·(log 2 + 6e38) = 3e38 and ½·6e38 = 3e38.
  soft = jnp.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(fn(o, soft), [3e38, 3e38], rtol=1e-6)
  # The gradient (the closed form, unaffected) stays finite.
  g = jax.grad(lambda o: jnp.sum(fn(o, ids, label_smoothing=0.3)))(o)
  np.testing.assert_allclose(g, [[0.5 - 0.8, 0.5 - 0.1, -0.1], [1 - 0.1, -0.1, -0.8]],
                             atol=1e-6)


@pytest.mark.parametrize("kernel, reduction", [("batch", "none"), ("batch", "sum"),
                                               ("batch", "mean"), ("per_example", "none")])
def test_weight_and_target_gradients_when_a_row_spans_more_than_the_float_range(kernel, reduction):
  """The derivatives in the class weights and the probability labels are multiples of the
  log-softmax, ``−6e38`` at the −3e38 entry of ``[3e38, 3e38, −3e38]``, which overflows; times
  a coefficient below ½ they are finite, and are computed finite (inf before they were taken in
  halves). Forward and reverse mode agree. Hand-computed, ls ≈ [−log 2, −log 2, −6e38]:
  - label 0, ε = 0.3, w = [1, ½, 2]: ∂l/∂w = −(0.7·[c = 0] + 0.1)·ls = [0.8 log 2, 0.1 log 2,
    6e37]; for "mean" (norm = w_0 = 1) the first entry also has −l = −(0.85 log 2 + 1.2e38);
  - t = [½, 0, ½], ε = ½: ∂l/∂t = −½·ls = [½ log 2, ½ log 2, 3e38];
  - t = [½, 0, ½], w = [1, ½, ½]: ∂l/∂w = −t·ls = [½ log 2, 0, 3e38] and
    ∂l/∂t = −w·ls = [log 2, ½ log 2, 3e38].
  """
  fn = (functools.partial(sj.cross_entropy, reduction=reduction) if kernel == "batch" else
        lambda o, t, **kw: _per_example_reference(o, t, reduction="none", **kw))
  o = jnp.array([[3e38, 3e38, -3e38]])
  log2 = np.log(2)

  def check(f, arg, want):
    f1 = lambda a: jnp.sum(f(a))  # noqa: E731
    for got in (jax.grad(f1)(arg), jax.jacfwd(f1)(arg)):
      np.testing.assert_allclose(got, want, rtol=2e-6)

  w = jnp.array([1.0, 0.5, 2.0])
  want_w = np.array([0.8 * log2, 0.1 * log2, 6e37])
  if reduction == "mean":
    want_w[0] -= 0.85 * log2 + 1.2e38
  check(lambda w: fn(o, jnp.array([0]), class_weights=w, label_smoothing=0.3), w, want_w)
  t = jnp.array([[0.5, 0.0, 0.5]])
  check(lambda t: fn(o, t, label_smoothing=0.5), t, [[0.5 * log2, 0.5 * log2, 3e38]])
  w = jnp.array([1.0, 0.5, 0.5])
  check(lambda w: fn(o, t, class_weights=w), w, [0.5 * log2, 0.0, 3e38])
  check(lambda t: fn(o, t, class_weights=w), t, [[log2, 0.5 * log2, 3e38]])


@pytest.mark.parametrize("kernel", ["batch", "per_example"])
@pytest.mark.parametrize("soft", [False, True], ids=["ids", "probs"])
def test_mixed_second_derivatives_at_plus_inf_logits_are_the_finite_limit(kernel, soft):
  """The derivatives of the weight (and target) gradients in the logits, at a row with two tied
  +inf logits, equal those at [1e4, 1e4, 0], the limit from finite logits (the halved
  log-softmax once gave them tangent 0 there, and the soft rule's Hessian in (o, w) NaN). Found
  by review."""
  inf_rows = jnp.array([[INF, INF, 0.0], [0.3, -1.0, 2.0]])
  proxy = jnp.array([[1e4, 1e4, 0.0], [0.3, -1.0, 2.0]])
  w = jnp.array([1.0, 0.5, 2.0])
  labels = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]) if soft else jnp.array([0, 2])
  for eps, red in ((0.0, "none"), (0.2, "sum"), (0.2, "mean")):
    if kernel == "batch":
      def f(o, lab, w, eps=eps, red=red):
        return jnp.sum(sj.cross_entropy(o, lab, class_weights=w, label_smoothing=eps,
                                        reduction=red))
    else:
      if red != "none":
        continue
      def f(o, lab, w, eps=eps):
        return jnp.sum(_per_example_reference(o, lab, class_weights=w, label_smoothing=eps,
                                              reduction="none"))
    derivs = {"fwd(grad_w)": jax.jacfwd(jax.grad(f, 2), 0),
              "rev(grad_w)": jax.jacrev(jax.grad(f, 2), 0),
              "hessian(o, w)": lambda o, lab, w, f=f: jax.hessian(f, (0, 2))(o, lab, w)[0][1]}
    if soft:
      derivs["fwd(grad_t)"] = jax.jacfwd(jax.grad(f, 1), 0)
    for name, d in derivs.items():
      got, want = d(inf_rows, labels, w), d(proxy, labels, w)
      assert np.all(np.isfinite(got)), (name, eps, red, got)
      np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{name}, ε = {eps}, {red}")


@pytest.mark.parametrize("kernel,reduction", [("batch", "none"), ("batch", "sum"),
                                              ("batch", "mean"), ("per_example", "none")])
def test_weight_gradient_derivative_in_a_zero_target(kernel, reduction):
  """∂l/∂w_c = −t'_c·ls_c, so its derivative in t_c is −(1−ε)·ls_c, at a zero target too (it was
  0 there: `_times`' select zeroed the derivative of its first factor). Against a plain
  log_softmax reference whose second derivatives are autodiff's; the masked row holds NaN logits,
  which must stay out of every derivative."""
  o = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [jnp.nan, 0.0, 1.0]])
  t = jnp.array([[0.0, 1.0, 0.0], [0.25, 0.0, 0.75], [0.5, 0.5, 0.0]])
  w = jnp.array([1.0, 2.0, 3.0])
  keep = jnp.array([True, True, False])
  for eps in (0.0, 0.2):
    def f(w, t, eps=eps):
      kw = dict(class_weights=w, where=keep, label_smoothing=eps)
      if kernel == "batch":
        return jnp.sum(sj.cross_entropy(o, t, reduction=reduction, **kw))
      return jnp.sum(_per_example_reference(o, t, reduction="none", **kw))

    def ref(w, t, eps=eps):
      ls = jax.nn.log_softmax(jnp.where(keep[:, None], o, 0.0))
      t_s = (1 - eps) * t + eps / 3
      rows = jnp.where(keep, -jnp.sum(w[None, :] * t_s * ls, axis=1), 0.0)
      return jnp.sum(rows) / (2 if reduction == "mean" else 1)

    for mode, jac in (("rev", jax.jacrev), ("fwd", jax.jacfwd)):
      got = jac(jax.grad(f, 0), 1)(w, t)
      want = jac(jax.grad(ref, 0), 1)(w, t)
      assert np.all(np.isfinite(got)), (mode, eps, got)
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{mode}, ε = {eps}")
      # and the other order: the derivative in w of the target gradient
      got = jac(jax.grad(f, 1), 0)(w, t)
      want = jac(jax.grad(ref, 1), 0)(w, t)
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{mode}, ε = {eps}")
    ls_row0 = np.asarray(jax.nn.log_softmax(o[0]))
    d = jax.jacrev(jax.grad(f, 0), 1)(w, t)  # hand check: row 0, zero targets 0 and 2
    scale = 0.5 if reduction == "mean" else 1.0
    np.testing.assert_allclose([d[0, 0, 0], d[2, 0, 2]],
                               -(1 - eps) * scale * ls_row0[[0, 2]], rtol=1e-6)


@pytest.mark.parametrize("kernel,reduction", [("batch", "none"), ("batch", "sum"),
                                              ("batch", "mean"), ("per_example", "none")])
def test_full_smoothing_beside_a_minus_inf_logit(kernel, reduction):
  """ε = 1: the label does not enter the loss, so its term in the weight gradient is absent
  (it was 0·(−inf) = NaN where the label's logit is −inf), and the targets get a zero
  gradient (NaN before). Hand-computed at o = [−inf, 0, 1], ls = [−inf, −log(1+e), 1 − log(1+e)]:
  ∂l/∂w_c = −ls_c/3 = [inf, log(1+e)/3, (log(1+e) − 1)/3]."""
  o = jnp.array([[-jnp.inf, 0.0, 1.0]])
  w = jnp.array([1.0, 2.0, 3.0])
  t = jnp.array([[0.5, 0.5, 0.0]])

  def f(o, labels, **kw):
    if kernel == "batch":
      return jnp.sum(sj.cross_entropy(o, labels, label_smoothing=1.0, reduction=reduction, **kw))
    return jnp.sum(_per_example_reference(o, labels, label_smoothing=1.0, reduction="none", **kw))

  for fn in (jax.grad, jax.jacfwd):
    assert np.array_equal(fn(lambda t: f(o, t, class_weights=w))(t), np.zeros((1, 3))), fn
    assert np.array_equal(fn(lambda t: f(o, t))(t), np.zeros((1, 3))), fn
  if reduction == "mean":
    return  # L = T/w_y with T = +inf for every w: no derivative in w_y
  lse = np.log1p(np.e)
  g = jax.grad(lambda w: f(o, jnp.array([0]), class_weights=w))(w)
  np.testing.assert_allclose(g, [np.inf, lse / 3, (lse - 1) / 3], rtol=1e-6)


def test_halved_sums_keep_ordinary_losses_accurate():
  """Halving is an exact scaling, so ordinary losses keep float32 accuracy (float64 reference),
  for smoothed ids, probability labels and both together."""
  rng = np.random.default_rng(3)
  o = rng.normal(size=(64, 7)).astype(np.float32) * 30
  y = rng.integers(0, 7, 64)
  t = rng.dirichlet(np.ones(7), 64).astype(np.float32)
  for labels, eps in [(y, 0.2), (t, 0.0), (t, 0.1)]:
    want = ref_cross_entropy(o, labels, eps=eps)
    np.testing.assert_allclose(sj.cross_entropy(jnp.asarray(o), jnp.asarray(labels),
                                               label_smoothing=eps),
                               want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", ["batch", "per_example"])
def test_label_term_of_zero_weight_at_a_minus_inf_logit_is_zero_not_nan(kernel):
  """ε = 1 gives the label's term the coefficient 0: at a −inf label logit it is 0, not
  0·inf = NaN, and the loss is the smoothing term's +inf (found by review: NaN before)."""
  fn = (sj.cross_entropy if kernel == "batch" else
        lambda o, t, **kw: _per_example_reference(o, t, reduction="none", **kw))
  o = jnp.array([[-INF, 0.0, 1.0], [INF, 0.0, 1.0], [1.0, 2.0, 3.0]])
  y = jnp.array([0, 1, 2])
  got = fn(o, y, label_smoothing=1.0)
  assert got[0] == INF and got[1] == INF, got
  np.testing.assert_allclose(got[2], ref_cross_entropy(np.asarray(o[2:]), np.array([2]),
                                                       eps=1.0)[0], rtol=1e-6)


def test_minus_inf_masked_classes():
  logits = jnp.array([[-INF, 1.0, 2.0], [0.5, -INF, -INF]])
  labels = jnp.array([1, 0])
  out = sj.cross_entropy(logits, labels)
  np.testing.assert_allclose(out, [-ref_log_softmax([1.0, 2.0])[0], 0.0], rtol=1e-6, atol=1e-7)
  g = jax.grad(lambda o: sj.cross_entropy(o, labels, reduction="sum"))(logits)
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(g[0], [0.0, *(np.exp(ref_log_softmax([1.0, 2.0])) - [1, 0])],
                             atol=1e-7)
  # optax's NaN case: a zero soft label on a -inf logit contributes 0 (0·log 0 = 0).
  soft = jnp.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]])
  out = sj.cross_entropy(logits, soft)
  assert np.all(np.isfinite(out))
  g = jax.grad(lambda o: sj.cross_entropy(o, soft, reduction="mean"))(logits)
  assert np.all(np.isfinite(g))
  # The label on a -inf (impossible) class: the loss is +inf, the gradient finite.
  out = sj.cross_entropy(logits, jnp.array([0, 1]))
  np.testing.assert_array_equal(out, [INF, INF])
  assert np.all(np.isfinite(jax.grad(lambda o: sj.cross_entropy(o, jnp.array([0, 1])).sum())(
      logits)))


def test_plus_inf_logits_are_the_limit():
  logits = jnp.array([[INF, 0.0, 1.0], [INF, 0.0, 1.0], [INF, INF, 0.0]])
  labels = jnp.array([0, 1, 0])
  out = sj.cross_entropy(logits, labels)
  np.testing.assert_allclose(out, [0.0, INF, np.log(2)], rtol=1e-6)
  g = jax.grad(lambda o: sj.cross_entropy(o, labels).sum())(logits)
  np.testing.assert_allclose(g, [[0, 0, 0], [1, -1, 0], [-0.5, 0.5, 0]], atol=1e-7)


def test_out_of_range_label_under_plain_jit_is_nan_not_clamped():
  logits = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  out = jax.jit(sj.cross_entropy)(logits, jnp.array([2, 3]))
  assert np.isfinite(out[0]) and np.isnan(out[1])
  out = jax.jit(sj.cross_entropy)(logits, jnp.array([2, -1]))
  assert np.isnan(out[1])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_loss_is_float32_and_not_quantised(dtype):
  logits, labels = _problem(seed=8, n=64, c=10, dtype=dtype)
  out = sj.cross_entropy(logits, labels, reduction="none")
  assert out.dtype == jnp.float32
  expected = ref_cross_entropy(np.asarray(logits.astype(jnp.float32)), labels)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  # optax #1020: bf16 losses came out in steps of 0.25. Here they keep float32 resolution.
  mean = sj.cross_entropy(logits, labels, reduction="mean")
  assert mean.dtype == jnp.float32
  np.testing.assert_allclose(mean, expected.mean(), rtol=1e-6)
  g = jax.grad(lambda o: sj.cross_entropy(o, labels, reduction="mean"))(logits)
  assert g.dtype == dtype


def test_float64(x64):
  logits, labels = _problem(dtype=jnp.float64)
  out = sj.cross_entropy(logits, labels)
  assert out.dtype == jnp.float64
  np.testing.assert_allclose(out, ref_cross_entropy(logits, labels), rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# Bad input: eagerly and through sj.checked under jit
# ------------------------------------------------------------------------------------------------

LOGITS = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])

BAD_VALUES = [
    ("label 3 of 3 classes", dict(labels=jnp.array([0, 3])), "class ids in \\[0, 3\\); got 3"),
    ("negative label", dict(labels=jnp.array([-1, 0])), "got -1"),
    ("negative soft label", dict(labels=jnp.array([[1.2, -0.2, 0.0], [0.2, 0.3, 0.5]])),
     ">= 0, got -0.2"),
    ("soft labels not summing to 1", dict(labels=jnp.array([[0.5, 0.25, 0.0], [0.2, 0.3, 0.5]])),
     "sum to 1.*0.75 at batch index \\[0\\]"),
    ("NaN soft label", dict(labels=jnp.array([[jnp.nan, 0.5, 0.5], [0.2, 0.3, 0.5]])), "nan"),
    ("negative class weight", dict(labels=jnp.array([0, 1]), class_weights=jnp.array([1.0, -1.0, 1.0])),
     "class_weights"),
]


@pytest.mark.parametrize("name,kw,msg", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_raise_eagerly_and_under_checked_jit(name, kw, msg):
  with pytest.raises(ValueError, match=msg):
    sj.cross_entropy(LOGITS, **kw)
  with pytest.raises(ValueError, match=msg):
    sj.cross_entropy_grad(LOGITS, **kw)
  labels = kw.pop("labels")
  f = jax.jit(sj.checked(lambda o, y: sj.cross_entropy(o, y, reduction="mean", **kw)))
  err, _ = f(LOGITS, labels)
  assert err.get() is not None
  with pytest.raises(ValueError, match=msg):
    err.throw()
  # The check also fires inside grad and vmap, and stays silent for good input.
  g = jax.jit(sj.checked(jax.grad(lambda o, y: sj.cross_entropy(o, y, reduction="sum", **kw))))
  assert g(LOGITS, labels)[0].get() is not None
  good = jnp.array([0, 2]) if labels.ndim == 1 else jnp.full((2, 3), 1 / 3)
  good_kw = {k: jnp.abs(a) for k, a in kw.items()}
  err, _ = jax.jit(sj.checked(lambda o, y: sj.cross_entropy(o, y, **good_kw)))(LOGITS, good)
  assert err.get() is None


def test_class_weights_that_xla_would_flush_to_zero_are_an_error():
  # A float32 weight of 1e-40 is subnormal: XLA flushed it to 0, and the mean loss was 0 (the
  # weighted sum and the total weight both 0) where it should be the loss of that class.
  y = jnp.array([0, 2])
  for w in ([1e-40, 1.0, 0.0], np.array([1e-40, 1, 0], np.float32),
            jnp.array([1e-38, 0, 1], jnp.bfloat16)):  # bfloat16 shares float32's range
    with pytest.raises(ValueError, match=r"class_weights must be 0 or normal numbers: in "
                                         r"\[1.175e-38, 3.403e\+38\] for float32.*at index \[0\]"):
      sj.cross_entropy(LOGITS, y, class_weights=w, reduction="mean")
  err, _ = jax.jit(sj.checked(lambda o, w: sj.cross_entropy(o, y, class_weights=w)))(
      LOGITS, jnp.array([1.0, 1e-40, 1.0]))
  assert err.get() is not None and "normal numbers" in err.get()
  # At or above the smallest normal number, the mean loss is exact: it does not depend on the
  # scale of the weights.
  ref = sj.cross_entropy(LOGITS, y, class_weights=jnp.array([1.0, 5.0, 3.0]), reduction="mean")
  for scale in (1.2e-38 / 1.0, 1e-37, 1e37):
    w = jnp.array([1.0, 5.0, 3.0]) * scale
    np.testing.assert_allclose(sj.cross_entropy(LOGITS, y, class_weights=w, reduction="mean"),
                               ref, rtol=1e-6)
  # A float16 subnormal is a normal float32 (the weights are computed in float32): allowed.
  w16 = jnp.array([1e-6, 0, 1], jnp.float16)
  np.testing.assert_allclose(
      sj.cross_entropy(LOGITS, y, class_weights=w16, reduction="mean"),
      (float(w16[0]) * 2.4076059 + 1 * np.log(3)) / (float(w16[0]) + 1), rtol=1e-6)
  with enable_x64():  # float64 weights are computed in the logits' dtype
    with pytest.raises(ValueError, match=r"\[1.175e-38, 3.403e\+38\] for float32"):
      sj.cross_entropy(LOGITS, y, class_weights=np.array([1e-40, 1.0, 1.0]))
    # A float64 3e39 rounds to inf in float32 (the mean loss was NaN).
    with pytest.raises(ValueError, match=r"for float32.*got 3e\+39 at index \[0\]"):
      sj.cross_entropy(LOGITS, y, class_weights=np.array([3e39, 0.0, 1.0]), reduction="mean")
    with pytest.raises(ValueError, match=r"\[2.225e-308, 1.798e\+308\] for float64"):
      sj.cross_entropy(LOGITS.astype(jnp.float64), y, class_weights=np.array([1e-310, 1, 1.0]))
    # A float32 (or bfloat16) subnormal is flushed when it is converted to float64 too (the mean
    # loss was 0).
    for w in (jnp.array([1e-40, 1, 0], jnp.float32), jnp.array([1e-40, 1, 0], jnp.bfloat16)):
      with pytest.raises(ValueError, match=r"not subnormal in their own dtype"):
        sj.cross_entropy(LOGITS.astype(jnp.float64), y, class_weights=w, reduction="mean")
    np.testing.assert_allclose(
        sj.cross_entropy(LOGITS.astype(jnp.float64), y, class_weights=np.array([1e-40, 1, 1.0]),
                         reduction="mean"), np.log(3), rtol=1e-12)


@pytest.mark.parametrize("scale", [1e38, 1.7e38, 1e-37])
def test_mean_with_class_weights_near_the_float_limits(scale):
  # "mean" with class ids is Σ w_y l / Σ w_y, the same for w and s·w. Weights of 2e38 made both
  # sums inf and the loss NaN, with a zero gradient (review); they are now scaled by a power of
  # two first. Both kernels, and linear_cross_entropy.
  o = jnp.array([[1.0, 2.0, 0.0], [0.0, 3.0, 2.0], [1.0, 1.0, 5.0]])
  y = jnp.array([0, 1, 2])
  w = jnp.array([2.0, 1.5, 1.0])

  def mean(o, w):
    return sj.cross_entropy(o, y, class_weights=w, reduction="mean")

  want, want_do = mean(o, w), jax.grad(mean)(o, w)
  got, got_do = mean(o, w * scale), jax.grad(mean)(o, w * scale)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got_do, want_do, rtol=1e-5, atol=1e-7)
  # The gradient in the weights scales as 1/s (the mean is homogeneous of degree 0): about
  # 1e-39 at s = 1e38, below float32's normal range, so 0 there; never NaN.
  g_w = jax.grad(mean, 1)(o, w * scale)
  assert np.isfinite(g_w).all()
  if scale < 1:
    np.testing.assert_allclose(g_w * scale, jax.grad(mean, 1)(o, w), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      sj.linear_cross_entropy(o, jnp.eye(3), None, y, class_weights=w * scale), want, rtol=1e-6)
  # With label smoothing too (every term is linear in the weights).
  np.testing.assert_allclose(
      sj.cross_entropy(o, y, class_weights=w * scale, label_smoothing=0.2, reduction="mean"),
      sj.cross_entropy(o, y, class_weights=w, label_smoothing=0.2, reduction="mean"), rtol=1e-6)


def test_masked_bad_labels_are_allowed():
  out = sj.cross_entropy(LOGITS, jnp.array([0, 7]), where=jnp.array([True, False]))
  assert out[1] == 0
  err, _ = jax.jit(sj.checked(lambda o, y, m: sj.cross_entropy(o, y, where=m)))(
      LOGITS, jnp.array([0, 7]), jnp.array([True, False]))
  assert err.get() is None


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(labels=jnp.array([0.0, 1.0])), TypeError, "class ids.*float32"),
    (dict(labels=jnp.array([[1, 0, 0], [0, 1, 0]])), TypeError, "probability vectors.*int32"),
    (dict(labels=jnp.array([0, 1, 2])), ValueError, r"labels of shape \(3,\)"),
    (dict(labels=jnp.array([True, False])), TypeError, "bool"),
    (dict(labels=jnp.array([0, 1]), class_weights=jnp.ones(4)), ValueError,
     r"class_weights must have shape \(3,\).*\(4,\)"),
    (dict(labels=jnp.array([0, 1]), where=jnp.ones(3, bool)), ValueError, r"where of shape \(3,\)"),
    (dict(labels=jnp.array([0, 1]), where=jnp.ones(2)), TypeError, "boolean"),
    (dict(labels=jnp.array([0, 1]), label_smoothing=1.5), ValueError, "label_smoothing"),
    (dict(labels=jnp.array([0, 1]), label_smoothing=jnp.float32(0.1)), TypeError,
     "label_smoothing"),
    (dict(labels=jnp.array([0, 1]), reduction="avg"), ValueError, "reduction"),
    (dict(labels=jnp.array([0, 1]), axis=2), ValueError, "axis=2"),
])
def test_bad_static_input(kw, exc, msg):
  with pytest.raises(exc, match=msg):
    sj.cross_entropy(LOGITS, **kw)
  with pytest.raises(exc, match=msg):  # static checks fire under jit as well
    jax.jit(lambda o: sj.cross_entropy(o, **kw))(LOGITS)
  with pytest.raises(exc, match=msg):  # and through the checked path, at trace time
    jax.jit(sj.checked(lambda o: sj.cross_entropy(o, **kw)))(LOGITS)


def test_integer_logits_rejected():
  with pytest.raises(TypeError, match="logits must be a floating-point"):
    sj.cross_entropy(jnp.array([[1, 2]]), jnp.array([0]))


# ------------------------------------------------------------------------------------------------
# Sigmoid cross-entropy
# ------------------------------------------------------------------------------------------------


def ref_sigmoid_ce(o, y):
  o = np.asarray(o, np.float64)
  y = np.asarray(y, np.float64)
  return y * np.logaddexp(0, -o) + (1 - y) * np.logaddexp(0, o)


def test_sigmoid_ce_values_and_torch_semantics():
  key = jax.random.PRNGKey(9)
  o = jax.random.normal(key, (4, 5)) * 4
  y = (jax.random.uniform(jax.random.PRNGKey(10), (4, 5)) > 0.5).astype(jnp.float32)
  np.testing.assert_allclose(sj.sigmoid_cross_entropy(o, y), ref_sigmoid_ce(o, y), rtol=1e-6)
  np.testing.assert_allclose(sj.sigmoid_cross_entropy(o, y, reduction="mean"),
                             ref_sigmoid_ce(o, y).mean(), rtol=1e-6)
  np.testing.assert_allclose(sj.sigmoid_cross_entropy(o, y, reduction="sum"),
                             ref_sigmoid_ce(o, y).sum(), rtol=1e-6)
  m = np.arange(20).reshape(4, 5) % 3 != 0
  np.testing.assert_allclose(sj.sigmoid_cross_entropy(o, y, where=m, reduction="mean"),
                             ref_sigmoid_ce(o, y)[m].mean(), rtol=1e-6)
  # The text's per-example loss sums the labels' terms.
  np.testing.assert_allclose(sj.sigmoid_cross_entropy(o, y).sum(-1),
                             ref_sigmoid_ce(o, y).sum(-1), rtol=1e-6)


def test_sigmoid_ce_matches_torch():
  torch = pytest.importorskip("torch")
  o = jax.random.normal(jax.random.PRNGKey(9), (4, 5)) * 4
  y = jax.random.uniform(jax.random.PRNGKey(10), (4, 5))
  t = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.tensor(np.asarray(o), dtype=torch.float64), torch.tensor(np.asarray(y), dtype=torch.float64))
  np.testing.assert_allclose(sj.sigmoid_cross_entropy(o, y, reduction="mean"), t.numpy(), rtol=1e-6)


def test_sigmoid_ce_extremes_exact_and_finite():
  o = jnp.array([3e38, -3e38, 3e38, -3e38, 3e38, 1e4, -1e4, -INF, INF, 0.0])
  y = jnp.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 1.0, 0.5])
  out = jax.jit(sj.sigmoid_cross_entropy)(o, y)
  np.testing.assert_allclose(out, [0, 0, 3e38, 3e38, 1.5e38, 7500.0, 1e4, 0, 0, np.log(2)],
                             rtol=1e-6)
  g = jax.grad(lambda o: sj.sigmoid_cross_entropy(o, y, reduction="sum"))(o)
  np.testing.assert_allclose(g, np.asarray(jax.nn.sigmoid(o)) - np.asarray(y), atol=1e-7)
  assert np.all(np.isfinite(g))


def test_sigmoid_ce_gradients(x64):
  o = jax.random.normal(jax.random.PRNGKey(11), (3, 4), jnp.float64) * 3
  y = jax.random.uniform(jax.random.PRNGKey(12), (3, 4), jnp.float64)
  check_grads(lambda o, y: sj.sigmoid_cross_entropy(o, y, reduction="mean"), (o, y), order=2,
              modes=("fwd", "rev"))
  g = jax.grad(lambda o: sj.sigmoid_cross_entropy(o, y, reduction="sum"))(o)
  np.testing.assert_allclose(g, jax.nn.sigmoid(o) - y, atol=1e-14)
  m = jnp.array([True, False, True, True])
  g = jax.grad(lambda o: sj.sigmoid_cross_entropy(o, y, where=m, reduction="sum"))(o)
  np.testing.assert_allclose(g, jnp.where(m, jax.nn.sigmoid(o) - y, 0), atol=1e-14)


def test_sigmoid_ce_bad_input():
  o = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"in \[0, 1\]; got 1.5"):
    sj.sigmoid_cross_entropy(o, jnp.array([[0.0, 1.5, 0.0], [0.0, 0.0, 0.0]]))
  with pytest.raises(TypeError, match="floating"):
    sj.sigmoid_cross_entropy(o, jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="shape"):
    sj.sigmoid_cross_entropy(o, jnp.zeros((2, 4)))
  err, _ = jax.jit(sj.checked(sj.sigmoid_cross_entropy))(o, jnp.full((2, 3), -0.5))
  assert err.get() is not None and "[0, 1]" in err.get()


@hypothesis.given(st.integers(2, 6), st.integers(0, 2**31 - 1))
@hypothesis.settings(max_examples=20)
def test_law_loss_nonnegative_and_minimised_by_the_label(num_classes, seed):
  logits, labels = _problem(seed=seed, n=4, c=num_classes)
  loss = sj.cross_entropy(logits, labels)
  assert np.all(np.asarray(loss) >= 0)
  # Soft labels: CE(softmax(o), o) = H(softmax(o)) <= CE(q, o) for any other q (Gibbs).
  p = jax.nn.softmax(logits)
  q = jax.nn.softmax(logits[::-1])
  assert np.all(np.asarray(sj.cross_entropy(logits, p)) <=
                np.asarray(sj.cross_entropy(jnp.log(q), p)) + 1e-5)


def test_traced_calls_stage_no_checks_outside_checked():
  """Under plain jit the value checks emit nothing: a staged check would give the caller's jaxpr
  an error effect, and a jitted function with an effect leaves JAX's C++ dispatch fast path."""
  logits, labels = _problem()
  probs = jax.nn.softmax(logits)
  calls = [lambda o, y, p: sj.cross_entropy(o, y, reduction="mean"),
           lambda o, y, p: sj.cross_entropy(o, p, label_smoothing=0.1),
           lambda o, y, p: sj.softmax(o, temperature=jnp.sum(p)),
           lambda o, y, p: sj.one_hot(y, 5),
           lambda o, y, p: sj.info.entropy(p)]
  for call in calls:
    assert not jax.make_jaxpr(call)(logits, labels, probs).effects
  # Inside sj.checked the same checks are staged and fire.
  err, _ = jax.jit(sj.checked(calls[0]))(logits, labels.at[0].set(7), probs)
  with pytest.raises(Exception, match="labels must be class ids"):
    err.throw()


@pytest.mark.parametrize("num_classes", [1, 3, 12, 13, 40000])
def test_row_reduce_matches_max_and_sum(num_classes):
  # Rows of up to 12 entries are reduced as an unrolled chain of elementwise ops (so XLA fuses
  # them), rows beyond 32768 in pieces; ±inf as in NumPy, and NaN too where XLA:CPU keeps it (its
  # fused max drops a NaN in long rows; the losses do not rely on it).
  from softmax_jax.losses import _row_reduce
  rng = np.random.default_rng(num_classes)
  x = rng.normal(size=(5, num_classes)).astype(np.float32)
  x[1, -1] = np.nan
  x[2, 0] = np.inf
  x[3, :] = -np.inf
  x[4, 0] = -np.inf
  for reduce, want in ((jnp.max, np.max), (jnp.sum, np.sum)):
    got = np.asarray(jax.jit(functools.partial(_row_reduce, reduce))(jnp.asarray(x)))
    rows = [0, 2, 3, 4]
    np.testing.assert_allclose(got[rows], want(x[rows], axis=1), rtol=1e-5)
    if reduce is jnp.sum or num_classes <= 12:
      assert np.isnan(got[1])


@pytest.mark.parametrize("num_classes", [10, 4096])
@pytest.mark.parametrize("kind", ["ids", "probs"])
def test_a_nan_logit_makes_its_loss_and_gradient_nan(num_classes, kind):
  # Not +inf, nor a finite loss: XLA:CPU's fused max and min drop a NaN at 4096 classes, so the
  # batch rule must not rely on them to carry it.
  rng = np.random.default_rng(num_classes)
  o = rng.normal(size=(3, num_classes)).astype(np.float32)
  o[1, 3] = np.nan
  if kind == "ids":
    labels = jnp.array([0, 0, 1])
  else:
    labels = jax.nn.softmax(jnp.asarray(rng.normal(size=(3, num_classes)), jnp.float32))
  loss = np.asarray(jax.jit(lambda o: sj.cross_entropy(o, labels))(o))
  assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2]]))
  grad = np.asarray(jax.jit(jax.grad(lambda o: sj.cross_entropy(o, labels, reduction="sum")))(o))
  assert np.all(np.isnan(grad[1])) and np.all(np.isfinite(grad[[0, 2]]))


_WIDE_ID = 2**32 + 1  # wraps to 1 in int32


@pytest.mark.parametrize("call", [
    lambda y: sj.cross_entropy(jnp.zeros((2, 3)), y),
    lambda y: sj.cross_entropy(jnp.zeros((2, 3)), y, reduction="mean"),
    lambda y: sj.one_hot(y, 3),
    lambda y: sj.linear_cross_entropy(jnp.ones((2, 4)), jnp.zeros((4, 3)), None, y, chunk_size=2),
    lambda y: sj.probit.probit_loss(jnp.zeros(2), y),
    lambda y: sj.calibration.expected_calibration_error(np.full((2, 3), 1 / 3), y),
], ids=["ce", "ce_mean", "one_hot", "linear_ce", "probit", "ece"])
def test_host_int64_labels_beyond_int32_are_refused_not_wrapped(call):
  # Without jax_enable_x64 a NumPy int64 array becomes int32: 2³² + 1 wrapped to the valid class
  # 1 (and a 0/1 label 2³² to 0), with only a JAX warning, and the loss was silently wrong.
  y = np.array([0, _WIDE_ID], np.int64)
  with pytest.raises(ValueError, match=rf"must fit in int32.*got {_WIDE_ID} at index \[1\]"):
    call(y)
  call(np.array([0, 1], np.int64))  # in range: int64 host labels work as before
