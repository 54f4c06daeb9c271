"""Tests for softmax_jax.softmax: logsumexp, softmax, log_softmax, softmax_hessian."""

import functools

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import temperature
from tests.conftest import enable_x64

INF = np.inf


def ref_log_softmax(x, axis=-1):
  """float64 NumPy reference, with the module's limits for all -inf and +inf rows."""
  x = np.asarray(x, np.float64)
  x = np.moveaxis(x, axis, -1)
  m = x.max(-1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    z = np.where(np.isfinite(m), x - np.where(np.isfinite(m), m, 0),
                 np.where(x == INF, 0.0, -INF))
    s = np.exp(z).sum(-1, keepdims=True)
    out = z - np.where(s > 0, np.log(np.where(s > 0, s, 1)), 0)
  return np.moveaxis(out, -1, axis)


def ref_logsumexp(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    s = np.exp(np.where(np.isfinite(m), x - np.where(np.isfinite(m), m, 0),
                        np.where(x == INF, 0.0, -INF))).sum(axis, keepdims=True)
    out = np.where(np.isfinite(m), m + np.log(s), m)
  return np.squeeze(out, axis)


def ref_softmax(x, axis=-1):
  return np.exp(ref_log_softmax(x, axis))


def test_hand_vectors():
  x = jnp.array([1.0, 2.0, 3.0])
  e = np.exp([1.0, 2.0, 3.0])
  np.testing.assert_allclose(jax.jit(sj.softmax)(x), e / e.sum(), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(sj.logsumexp)(x), np.log(e.sum()), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(sj.log_softmax)(x), np.log(e / e.sum()), rtol=1e-6)
  # The text's toy logits (§4.1.1.3): softmax keeps the order of the logits.
  o = jnp.array([0.1, 2.0, -1.0])
  assert int(jnp.argmax(sj.softmax(o))) == 1


@pytest.mark.parametrize("fn,ref", [(sj.softmax, ref_softmax), (sj.log_softmax, ref_log_softmax),
                                    (sj.logsumexp, ref_logsumexp)])
def test_matches_reference_and_jax_nn(fn, ref):
  x = jax.random.normal(jax.random.PRNGKey(0), (7, 5)) * 5
  np.testing.assert_allclose(jax.jit(fn)(x), ref(x), rtol=2e-6, atol=2e-6)
  jax_fn = {sj.softmax: jax.nn.softmax, sj.log_softmax: jax.nn.log_softmax,
            sj.logsumexp: jax.nn.logsumexp}[fn]
  np.testing.assert_allclose(fn(x), jax_fn(x, axis=-1), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("fn", [sj.softmax, sj.log_softmax, sj.logsumexp])
@pytest.mark.parametrize("axis", [0, 1, -2])
def test_axis_equals_moveaxis(fn, axis):
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 5))
  out = jax.jit(functools.partial(fn, axis=axis))(x)
  moved = fn(jnp.moveaxis(x, axis, -1), axis=-1)
  if fn is sj.logsumexp:
    np.testing.assert_allclose(out, moved, rtol=1e-6)
  else:
    np.testing.assert_allclose(out, jnp.moveaxis(moved, -1, axis), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", [sj.softmax, sj.log_softmax, sj.logsumexp])
def test_jit_equals_eager_and_per_example(fn):
  x = jax.random.normal(jax.random.PRNGKey(2), (6, 4)) * 3
  batched = fn(x)
  np.testing.assert_array_equal(jax.jit(fn)(x), batched)
  rows = jnp.stack([fn(r) for r in x])
  np.testing.assert_allclose(rows, batched, rtol=1e-6, atol=1e-7)


def test_where_masks_entries_exactly():
  x = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  mask = jnp.array([[True, False, True], [True, True, True]])
  p = sj.softmax(x, where=mask)
  assert p[0, 1] == 0.0
  e = np.exp([1.0, 3.0])
  np.testing.assert_allclose(p[0, [0, 2]], e / e.sum(), rtol=1e-6)
  np.testing.assert_allclose(sj.logsumexp(x, where=mask)[0], np.log(e.sum()), rtol=1e-6)
  assert sj.log_softmax(x, where=mask)[0, 1] == -INF
  # A mask broadcast from a row.
  p_row = sj.softmax(x, where=jnp.array([True, False, True]))
  np.testing.assert_array_equal(p_row[1], p[0])


@pytest.mark.parametrize("row,mask", [
    ([-INF, -INF, -INF], None),
    ([1.0, 2.0, 3.0], [False, False, False]),
    ([-INF, 5.0, -INF], [True, False, True]),
])
def test_empty_rows_give_minus_inf_and_no_nan(row, mask):
  x = jnp.array([row, [0.0, 1.0, 2.0]])
  where = None if mask is None else jnp.array([mask, [True, True, True]])
  lse = sj.logsumexp(x, where=where)
  assert lse[0] == -INF and np.isfinite(lse[1])
  np.testing.assert_array_equal(sj.softmax(x, where=where)[0], [0.0, 0.0, 0.0])
  np.testing.assert_array_equal(sj.log_softmax(x, where=where)[0], [-INF] * 3)
  for fn in (sj.logsumexp, sj.softmax, sj.log_softmax):
    def total(x, fn=fn):
      out = fn(x, where=where)
      return jnp.sum(jnp.where(jnp.isfinite(out), out, 0))
    g = jax.grad(total)(x)
    assert np.all(np.isfinite(g)), (fn.__name__, g)
    np.testing.assert_array_equal(g[0], [0.0, 0.0, 0.0])
    # Forward mode and second order too.
    _, t = jax.jvp(total, (x,), (jnp.ones_like(x),))
    assert np.isfinite(t)
    h = jax.hessian(total)(x)
    assert np.all(np.isfinite(h))


def test_plus_inf_is_the_limit():
  """+inf logits: the +inf entries share the mass equally (the limit x_i -> inf)."""
  x = jnp.array([[INF, 0.0, -1.0], [INF, INF, 3.0], [INF, -INF, 1e30]])
  np.testing.assert_array_equal(sj.softmax(x), [[1, 0, 0], [0.5, 0.5, 0], [1, 0, 0]])
  np.testing.assert_array_equal(sj.logsumexp(x), [INF, INF, INF])
  ls = sj.log_softmax(x)
  np.testing.assert_allclose(ls[1, :2], [np.log(0.5)] * 2, rtol=1e-6)
  assert ls[0, 0] == 0.0 and ls[0, 1] == -INF
  g = jax.grad(lambda x: jnp.sum(sj.softmax(x) * jnp.arange(x.size).reshape(x.shape)))(x)
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(jax.grad(lambda x: sj.logsumexp(x).sum())(x), sj.softmax(x))


@pytest.mark.parametrize("scale", [1e4, 3e38])
def test_extreme_logits_match_float64_reference(scale):
  x = np.array([[scale, -scale, 0.0], [-scale, -scale, -scale], [scale, scale, -scale],
                [-INF, scale, -scale], [-INF, -scale, 1.0]], np.float32)
  for fn, ref in ((sj.softmax, ref_softmax), (sj.log_softmax, ref_log_softmax),
                  (sj.logsumexp, ref_logsumexp)):
    out = np.asarray(jax.jit(fn)(jnp.asarray(x)), np.float64)
    with np.errstate(over="ignore"):
      expected = ref(x).astype(np.float32)  # -6e38 rounds to -inf in float32
    assert not np.any(np.isnan(out)), fn.__name__
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6, err_msg=fn.__name__)
  # Gradients: logsumexp's is the softmax, finite.
  g = jax.grad(lambda x: jnp.sum(sj.logsumexp(x)))(jnp.asarray(x))
  np.testing.assert_allclose(g, ref_softmax(x), atol=1e-6)
  g = jax.grad(lambda x: jnp.sum(sj.softmax(x)[:, 0]))(jnp.asarray(x))
  assert np.all(np.isfinite(g))


def test_log_softmax_derivative_where_its_value_overflows():
  # log_softmax([3e38, −3e38]) = [0, −6e38], which rounds to −inf; the logit is finite, so the
  # Jacobian is still I − 1pᵀ with p = [1, 0]: row 1 is [−1, 1] (it was [0, 0], as if the class
  # were masked). Masked entries, −inf logits and the finite entries of a +inf row stay constant.
  x = jnp.array([3e38, -3e38])
  want = np.array([[0.0, 0.0], [-1.0, 1.0]])
  for jac in (jax.jacrev, jax.jacfwd):
    np.testing.assert_array_equal(jac(sj.log_softmax)(x), want)
    np.testing.assert_array_equal(jac(jax.vmap(sj.log_softmax))(x[None])[0, :, 0], want)
  x4 = jnp.array([3e38, -3e38, -INF, 1.0])
  got = jax.jacrev(lambda x: sj.log_softmax(x, where=jnp.array([True, True, True, False])))(x4)
  np.testing.assert_array_equal(got, np.pad(want, ((0, 2), (0, 2))))
  np.testing.assert_array_equal(jax.jacrev(sj.log_softmax)(jnp.array([INF, -3e38])), 0)
  # Its Hessian is −(diag(p) − ppᵀ) = 0 at p = [1, 0].
  np.testing.assert_array_equal(jax.hessian(lambda x: sj.log_softmax(x)[1])(x), 0)
  # With a temperature the row is divided first, and the entry is −inf before the row's rule
  # sees it: the Jacobian row is [−1/T, 1/T] (it was 0 for any T but the Python float 1.0).
  for t, scale in ((jnp.float32(1.0), 1.0), (0.5, 2.0), (jnp.float32(4.0), 0.25)):
    for jac in (jax.jacrev, jax.jacfwd):
      np.testing.assert_array_equal(jac(lambda x, t=t: sj.log_softmax(x, temperature=t))(x),
                                    scale * want)


def test_d2l_naive_softmax_overflows_but_ours_does_not():
  x = jnp.array([100.0, 0.0, -100.0])
  naive = jnp.exp(x) / jnp.sum(jnp.exp(x))  # D2L §4.4's from-scratch softmax
  assert np.isnan(naive[0])
  np.testing.assert_allclose(sj.softmax(x), ref_softmax(np.array([100.0, 0.0, -100.0])),
                             rtol=1e-6, atol=1e-38)


@pytest.mark.parametrize("fn", [sj.logsumexp, sj.log_softmax, sj.softmax])
def test_check_grads_order_2(fn, x64):
  x = jax.random.normal(jax.random.PRNGKey(3), (3, 4), jnp.float64) * 2
  check_grads(fn, (x,), order=2, modes=("fwd", "rev"))
  mask = jnp.array([True, False, True, True])
  check_grads(lambda x: fn(x, where=mask), (x,), order=2, modes=("fwd", "rev"))
  if fn is not sj.logsumexp:
    check_grads(lambda x: fn(x, temperature=0.7), (x,), order=2, modes=("fwd", "rev"))


def test_gradients_match_closed_form(x64):
  x = jax.random.normal(jax.random.PRNGKey(4), (5,), jnp.float64)
  p = sj.softmax(x)
  np.testing.assert_allclose(jax.grad(sj.logsumexp)(x), p, rtol=1e-12)
  np.testing.assert_allclose(jax.jacrev(sj.softmax)(x), jnp.diag(p) - jnp.outer(p, p),
                             atol=1e-14)
  np.testing.assert_allclose(jax.jacfwd(sj.log_softmax)(x),
                             jnp.eye(5) - jnp.broadcast_to(p, (5, 5)), atol=1e-14)


def test_hessian_of_logsumexp_is_softmax_hessian(x64):
  x = jax.random.normal(jax.random.PRNGKey(5), (6,), jnp.float64) * 3
  np.testing.assert_allclose(jax.hessian(sj.logsumexp)(x), sj.softmax_hessian(x), atol=1e-14)
  xs = jax.random.normal(jax.random.PRNGKey(6), (2, 3, 4), jnp.float64)
  hs = sj.softmax_hessian(xs)
  assert hs.shape == (2, 3, 4, 4)
  np.testing.assert_allclose(hs[1, 2], jax.hessian(sj.logsumexp)(xs[1, 2]), atol=1e-14)
  # Covariance of a one-hot draw: PSD with the all-ones vector in its null space.
  eig = np.linalg.eigvalsh(np.asarray(hs[0, 0]))
  assert eig.min() > -1e-15
  np.testing.assert_allclose(hs[0, 0] @ jnp.ones(4), 0, atol=1e-15)


@pytest.mark.parametrize("scale", [1e4, 3e38])
def test_softmax_hessian_at_extremes(scale):
  x = jnp.array([[scale, -scale, 0.0], [scale, scale, -INF], [-INF, -INF, -INF]])
  h = sj.softmax_hessian(x)
  assert np.all(np.isfinite(h))
  np.testing.assert_allclose(h[0], np.zeros((3, 3)), atol=1e-30)  # a one-hot has no variance
  np.testing.assert_allclose(h[1], [[0.25, -0.25, 0], [-0.25, 0.25, 0], [0, 0, 0]], atol=1e-7)
  np.testing.assert_array_equal(h[2], np.zeros((3, 3)))


def test_softmax_hessian_float32_is_accurate_near_one_hot():
  x32 = jnp.array([10.0, 1.0, -2.0])
  with enable_x64():
    ref = np.asarray(sj.softmax_hessian(x32.astype(jnp.float64)))
  np.testing.assert_allclose(sj.softmax_hessian(x32), ref, rtol=1e-5, atol=1e-12)


def test_temperature_limits_and_gradient():
  x = jnp.array([1.0, 3.0, 2.0])
  np.testing.assert_allclose(sj.softmax(x, temperature=1e-3), [0, 1, 0], atol=1e-12)
  np.testing.assert_allclose(sj.softmax(x, temperature=1e6), [1 / 3] * 3, rtol=1e-5)
  np.testing.assert_allclose(sj.softmax(x, temperature=2.0), sj.softmax(x / 2.0), rtol=1e-6)
  # Tied maxima stay exactly tied at a small T (o − max is divided, not o then shifted), and
  # the shift is exact where o − max overflows.
  ties = sj.softmax(jnp.array([3.0, 3.0, 1.0, 0.0, -2.0]), temperature=1e-3)
  np.testing.assert_array_equal(ties, [0.5, 0.5, 0, 0, 0])
  np.testing.assert_array_equal(sj.log_softmax(jnp.array([2.0, 2.0]), temperature=1e-30),
                                [-np.log(np.float32(2))] * 2)
  np.testing.assert_allclose(sj.softmax(jnp.array([-3e38, 3e38, 1.0]), temperature=3e38),
                             np.exp([-2, 0, -1]) / np.exp([-2, 0, -1]).sum(), rtol=1e-5)
  # Temperature as a traced scalar, differentiable (calibration fits T by gradient).
  t = jnp.float32(2.0)
  g = jax.grad(lambda t: sj.log_softmax(x, temperature=t)[1])(t)
  p = sj.softmax(x / t)
  expected = -(x[1] - jnp.dot(p, x)) / t**2
  np.testing.assert_allclose(g, expected, rtol=1e-5)


@pytest.mark.parametrize("t", [0.0, -1.0, np.nan, np.inf])
def test_bad_temperature(t):
  x = jnp.ones(3)
  with pytest.raises(ValueError, match="temperature"):
    sj.softmax(x, temperature=t)
  with pytest.raises(ValueError, match="temperature"):
    sj.log_softmax(x, temperature=jnp.float32(t))
  err, _ = jax.jit(sj.checked(lambda x, t: sj.softmax(x, temperature=t)))(x, jnp.float32(t))
  assert err.get() is not None and "temperature" in err.get()
  err, _ = jax.jit(sj.checked(lambda x, t: sj.softmax(x, temperature=t)))(x, jnp.float32(1.5))
  assert err.get() is None


@pytest.mark.parametrize("t", [1e-38, 1e-45, 1e39, np.float32(1e-40)])
def test_temperature_outside_the_float32_normal_range_is_an_error(t):
  # float32 logits compute in float32: XLA flushed a subnormal T to 0 and a T above the largest
  # float32 rounded to inf, and every probability was NaN. Now an error naming T and the range.
  x = jnp.array([1.0, 2.0, 3.0])
  for fn in (sj.softmax, sj.log_softmax):
    with pytest.raises(ValueError, match=r"float32's normal range \[1.175e-38, 3.403e\+38\].*got"):
      fn(x, temperature=t)
  # The same T as a float32 array (1e39 rounds to inf), eagerly and under jit.
  t32 = jnp.float32(t)
  with pytest.raises(ValueError, match="float32's normal range"):
    sj.softmax(x, temperature=t32)
  err, _ = jax.jit(sj.checked(lambda x, t: sj.log_softmax(x, temperature=t)))(x, t32)
  assert err.get() is not None and "normal range" in err.get()


def test_temperature_at_the_edges_of_the_range():
  x = jnp.array([1.0, 2.0, 3.0])
  tiny, big = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
  np.testing.assert_array_equal(sj.softmax(x, temperature=tiny), [0, 0, 1])
  np.testing.assert_allclose(sj.softmax(x, temperature=big), [1 / 3] * 3, rtol=1e-6)
  with enable_x64():  # float64 logits, or a float64 T, compute in float64: 1e-40 is normal there
    np.testing.assert_array_equal(
        sj.softmax(x.astype(jnp.float64), temperature=1e-40), [0, 0, 1])
    np.testing.assert_array_equal(sj.softmax(x, temperature=jnp.float64(1e-40)), [0, 0, 1])
    with pytest.raises(ValueError, match="float32's normal range"):
      sj.softmax(x, temperature=1e-40)  # a Python float takes the logits' dtype


def test_bad_inputs():
  with pytest.raises(TypeError, match="floating"):
    sj.softmax(jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match="class axis"):
    sj.logsumexp(jnp.float32(1.0))
  with pytest.raises(ValueError, match="axis=2"):
    sj.log_softmax(jnp.ones((2, 3)), axis=2)
  with pytest.raises(TypeError, match="boolean"):
    sj.softmax(jnp.ones((2, 3)), where=jnp.ones((2, 3)))
  with pytest.raises(ValueError, match=r"\(2, 2\)"):
    sj.softmax(jnp.ones((2, 3)), where=jnp.ones((2, 2), bool))
  with pytest.raises(ValueError, match="no classes"):
    sj.softmax(jnp.ones((2, 0)))
  with pytest.raises(TypeError, match="temperature"):
    sj.softmax(jnp.ones(3), temperature=jnp.ones(2))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
  x = (jax.random.normal(jax.random.PRNGKey(7), (4, 300)) * 4).astype(dtype)
  x32 = x.astype(jnp.float32)
  for fn in (sj.softmax, sj.log_softmax, sj.logsumexp):
    out = fn(x)
    assert out.dtype == dtype
    # Correctly rounded from the float32 computation: within one ulp of the half dtype.
    np.testing.assert_allclose(out.astype(jnp.float32), fn(x32).astype(dtype).astype(jnp.float32),
                               rtol=float(jnp.finfo(dtype).eps), atol=1e-6)
  np.testing.assert_allclose(jnp.sum(sj.softmax(x).astype(jnp.float32), -1), 1,
                             atol=4 * float(jnp.finfo(dtype).eps))


def test_float64(x64):
  x = jnp.array([1.0, 2.0, 1e-12], jnp.float64)
  assert sj.softmax(x).dtype == jnp.float64
  np.testing.assert_allclose(sj.logsumexp(x), ref_logsumexp(np.asarray(x)), rtol=1e-15)


_BIG = float(np.float32(1e30))
finite = st.floats(-_BIG, _BIG, allow_nan=False, width=32)
rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 8)), elements=finite)


@hypothesis.given(rows)
def test_law_sums_to_one_and_keeps_argmax(x):
  p = np.asarray(sj.softmax(jnp.asarray(x)), np.float64)
  np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
  assert np.all(p >= 0)
  # Order is preserved: x_i >= x_j implies p_i >= p_j (strict order may round to a tie), so the
  # argmax of the logits is an argmax of the probabilities.
  for xr, pr in zip(x, p, strict=True):
    order = np.argsort(xr, kind="stable")
    assert np.all(np.diff(pr[order]) >= 0)
    assert pr[np.argmax(xr)] == pr.max()


@hypothesis.given(rows, st.floats(-1000.0, 1000.0, allow_nan=False, width=32))
def test_law_shift_invariance(x, c):
  hypothesis.assume(np.all(np.abs(x) < 1e6))
  np.testing.assert_allclose(sj.softmax(jnp.asarray(x) + c), sj.softmax(jnp.asarray(x)),
                             atol=1e-5)


@hypothesis.given(rows)
def test_law_logsumexp_bounds(x):
  lse = np.asarray(sj.logsumexp(jnp.asarray(x)), np.float64)
  m = x.astype(np.float64).max(-1)
  tol = 1e-6 * np.maximum(1, np.abs(m))
  assert np.all(m - tol <= lse) and np.all(lse <= m + np.log(x.shape[-1]) + tol)


@hypothesis.given(hnp.arrays(np.float32, st.integers(2, 6),
                             elements=st.floats(-10, 10, allow_nan=False, width=32)))
def test_law_temperature_limits(x):
  top2 = np.sort(x)[-2:]
  hypothesis.assume(top2[1] - top2[0] > 1e-2)
  cold = np.asarray(sj.softmax(jnp.asarray(x), temperature=1e-6))
  assert cold[np.argmax(x)] > 0.999
  hot = np.asarray(sj.softmax(jnp.asarray(x), temperature=1e7))
  np.testing.assert_allclose(hot, 1 / x.size, rtol=1e-4)


@pytest.mark.parametrize("num_classes", [3, 4096])
def test_a_nan_logit_makes_its_row_nan(num_classes):
  # NaN in, NaN out, as in jax.nn and PyTorch: never a silent 0 or −inf. At 4096 classes XLA:CPU's
  # fused max drops the NaN (it returns the max of the rest, or −inf), so this also checks that the
  # row's NaN does not depend on the max carrying it.
  x = np.random.default_rng(num_classes).normal(size=(3, num_classes)).astype(np.float32)
  x[1, 1] = np.nan
  for fn in (sj.softmax, sj.log_softmax, sj.logsumexp):
    out = np.asarray(jax.jit(fn)(x))
    assert np.all(np.isnan(out[1])), fn.__name__
    assert np.all(np.isfinite(out[[0, 2]])), fn.__name__
  for fn in (sj.logsumexp, lambda v: sj.softmax(v)[..., 0], lambda v: sj.log_softmax(v)[..., 0]):
    g = np.asarray(jax.jit(jax.grad(lambda v, fn=fn: jnp.sum(fn(v))))(x))
    assert np.all(np.isnan(g[1])) and np.all(np.isfinite(g[[0, 2]]))
  # A masked NaN is not part of the row.
  where = np.ones_like(x, bool)
  where[1, 1] = False
  np.testing.assert_allclose(np.asarray(jax.jit(sj.softmax)(x, where=where))[1].sum(), 1,
                             rtol=1e-5)


def _ref_softmax_hessian_grad(x):
  """∂H_ij/∂x_k of H = diag(p) − ppᵀ, float64: δ_ij p'_ik − p'_ik p_j − p_i p'_jk, p'_ik = ∂p_i/∂x_k."""
  p = ref_softmax(x)
  eye = np.eye(p.size)
  dp = p[:, None] * (eye - p[None, :])
  return (eye[:, :, None] * dp[:, None, :] - dp[:, None, :] * p[None, :, None]
          - p[:, None, None] * dp[None, :, :])


def test_softmax_hessian_gradient(x64):
  # The third derivative of logsumexp, against check_grads and its closed form.
  x = jax.random.normal(jax.random.PRNGKey(8), (2, 4), jnp.float64) * 2
  check_grads(jax.jit(sj.softmax_hessian), (x,), order=1, modes=("fwd", "rev"))
  for jac in (jax.jacfwd, jax.jacrev):
    np.testing.assert_allclose(jax.jit(jac(sj.softmax_hessian))(x[1]),
                               _ref_softmax_hessian_grad(np.asarray(x[1])), atol=1e-14)


@pytest.mark.parametrize("row", [[1e4, -1e4, 0.0], [3e38, -3e38, 0.0], [3e38, 3e38, -INF],
                                 [1e4, 1e4 - 1, -3e38], [INF, 0.0, 1.0], [INF, INF, -INF]])
def test_softmax_hessian_gradient_at_extremes(row):
  # A one-hot softmax is constant to every order (zero gradient); a tie is not.
  x = jnp.array(row, jnp.float32)
  want = _ref_softmax_hessian_grad(np.array(row))
  for jac in (jax.jacfwd, jax.jacrev):
    got = np.asarray(jax.jit(jac(sj.softmax_hessian))(x))
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("fn", [sj.softmax, sj.log_softmax])
def test_check_grads_in_temperature(fn, x64):
  # A traced T (as calibration learns it); x's derivatives at T = 0.7 are test_check_grads_order_2.
  x = jax.random.normal(jax.random.PRNGKey(9), (3, 4), jnp.float64) * 2
  # Forward mode: test_temperature_gradient_at_extreme_logits, against the closed form.
  check_grads(jax.jit(lambda t: fn(x, temperature=t)), (jnp.float64(0.7),), order=2,
              modes=("rev",))


def _ref_temperature_jacobian(x, t):
  """d softmax(x/T)/dT and d log_softmax(x/T)/dT, float64, each (N, C).

  A log-probability beyond the float32 range is −inf there, a constant: its derivative is 0.
  """
  x = np.asarray(x, np.float64)
  ls = ref_log_softmax(x / t)
  p = np.exp(ls)
  with np.errstate(invalid="ignore"):
    dz = -(x - x.max(-1, keepdims=True)) / t**2  # d((x_i − max)/T)/dT; +inf for x_i = −inf
    d_ls = dz - np.sum(np.where(p > 0, p * dz, 0), -1, keepdims=True)
  d_ls = np.where(np.abs(ls) <= np.finfo(np.float32).max, d_ls, 0)
  return p * d_ls, d_ls


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_temperature_gradient_at_extreme_logits(t):
  # A traced temperature, differentiated at ±1e4, ±3e38 and −inf logits: the exact derivative, not
  # the 0·inf = NaN of differentiating (x − max)/T where x − max overflows. Classes of
  # probability 0 are constant in T (their log-probability −inf, or finite, still has the
  # derivative of the limit they are in: 0).
  x = np.array([[3e38, -3e38, 0.0], [1e4, -1e4, 0.0], [-INF, 1.0, 2.0], [3e38, 3e38, -3e38],
                [1e4, 1e4 - 3, 0.0]], np.float32)
  want_p, want_ls = _ref_temperature_jacobian(x, t)
  for fn, want in ((sj.softmax, want_p), (sj.log_softmax, want_ls)):
    got = np.asarray(jax.jit(jax.jacrev(lambda t, fn=fn: fn(jnp.asarray(x), temperature=t)))(
        jnp.float32(t)))
    assert not np.any(np.isnan(got)), (fn.__name__, got)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=fn.__name__)
    fwd = np.asarray(jax.jacfwd(lambda t, fn=fn: fn(jnp.asarray(x), temperature=t))(
        jnp.float32(t)))
    np.testing.assert_allclose(fwd, want, rtol=1e-5, atol=1e-6, err_msg=fn.__name__)


@pytest.mark.parametrize("t", [1e-20, 1e-30, 1e20, 1e30])
def test_temperature_gradient_at_extreme_temperatures(t):
  """Float32 ``T`` beyond 1e±19: the derivative in ``T`` was NaN (small ``T``: ``T²`` flushed to
  0, then 0·inf) or lost (large ``T``). Exactly: at ``x = [0, −1, 2]`` the softmax is one-hot (or
  uniform) to float precision, with derivatives below the float range, so 0; the log-softmax of
  a losing class is −Δ/T, with the derivative Δ/T², +inf beyond the range at small ``T``."""
  x = jnp.array([0.0, -1.0, 2.0], jnp.float32)
  for jac in (jax.jacfwd, jax.jacrev):
    d_p = jax.jit(jac(lambda t: sj.softmax(x, temperature=t)))(jnp.float32(t))
    np.testing.assert_array_equal(d_p, [0.0, 0.0, 0.0])
    d_ls = jax.jit(jac(lambda t: sj.log_softmax(x, temperature=t)))(jnp.float32(t))
    if t < 1:
      np.testing.assert_array_equal(d_ls, [np.inf, np.inf, 0.0])
    else:
      assert np.isfinite(d_ls).all() and np.all(np.abs(d_ls) < 1e-30), d_ls
  # The second derivative at T = 1e-10 (T³ = 1e-30 is still normal, 1/T² = 1e20).
  h = jax.jit(jax.hessian(lambda t: sj.softmax(x, temperature=t)[2]))(jnp.float32(1e-10))
  assert h == 0.0, h


def test_a_masked_nan_logit_does_not_reach_the_temperature_derivative():
  # A NaN entry keeps its row's derivative in T NaN, unless it is masked (review: a first
  # version of the tiny-T fix made the masked one NaN in reverse mode too).
  x = jnp.array([0.0, -1.0, np.nan])
  t = jnp.float32(0.5)
  p = np.exp([0.0, -2.0]) / np.exp([0.0, -2.0]).sum()
  want = -p[1] * (-2.0 - p @ np.array([0.0, -2.0])) / 0.5  # d softmax_1 / dT at z = x/T
  for d in (jax.grad, jax.jacfwd):
    got = d(lambda t: sj.softmax(x, temperature=t, where=jnp.array([True, True, False]))[1])(t)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isnan(d(lambda t: sj.softmax(x, temperature=t)[1])(t))


@pytest.mark.parametrize("t", [1e-25, 1e-37])
def test_second_and_third_derivatives_in_tiny_temperatures(t):
  """At x = [1, 2, 3] and float32 T ≤ 1e-19 the softmax is one-hot to float precision, so its
  derivatives in T of every order are 0; the log-softmax of class 1 is −1/T (to float precision),
  with derivatives 1/T², −2/T³ and 6/T⁴: beyond the range, so +inf, −inf and +inf. Every mode
  gave NaN here: autodiff formed T², a zero cotangent met the overflowed derivative of T₀/T, and
  the masked dot p·dx was zeroed after its product (review of session 9's list)."""
  x = jnp.array([1.0, 2.0, 3.0])
  t = jnp.float32(t)

  def p2(t):
    return sj.softmax(x, temperature=t)[2]

  def ls1(t):
    return sj.log_softmax(x, temperature=t)[1]

  def nll(t):
    return temperature.temperature_nll(x[None], jnp.array([1]), temperature=t)

  second = (lambda f: jax.grad(jax.grad(f)), lambda f: jax.jacfwd(jax.jacfwd(f)), jax.hessian,
            lambda f: jax.jacfwd(jax.grad(f)))
  for d2 in second:
    assert d2(p2)(t) == 0
    assert d2(ls1)(t) == -np.inf
    assert d2(nll)(t) == np.inf
  np.testing.assert_array_equal(jax.hessian(lambda t: sj.softmax(x, temperature=t))(t), 0)
  third = jax.grad(jax.grad(jax.grad(ls1)))(t)
  assert third == np.inf and jax.jacfwd(jax.jacfwd(jax.grad(p2)))(t) == 0
  # The argmax's log-softmax is 0, constant in T: 0 by grad(grad) and jacfwd(jacfwd). Known
  # limit: forward over reverse (jax.hessian) is still NaN there (documented in _divide_shifted).
  for d2 in second[:2]:
    assert d2(lambda t: sj.log_softmax(x, temperature=t)[2])(t) == 0
  # Entries whose exp(z) is below the smallest normal float32 (flushed to 0 on XLA:CPU) are
  # constant in T: z = -95 and -88 gave NaN when only exp(z) < smallest subnormal counted.
  # Masked entries and the finite entries of a +inf row are constant in T as well (NaN).
  for row, where in (([0.0, -1.0, 5.0], [True, True, False]), ([np.inf, 1.0, -1.0], None)):
    row = jnp.array(row)
    where = None if where is None else jnp.array(where)
    np.testing.assert_array_equal(
        jax.hessian(lambda t, row=row, where=where: sj.softmax(row, temperature=t, where=where))(
            t), 0)
  for z in (-88.0, -95.0, -110.0):
    xz = jnp.array([0.0, z * float(t)])
    np.testing.assert_array_equal(
        jax.hessian(lambda t, xz=xz: sj.softmax(xz, temperature=t))(t), 0)


def test_temperature_gradient_at_a_float64_temperature_of_1e160():
  # x/T = [0, −1, 0.5]: d softmax_2 / d log T = −p_2·(y_2 − Σ p y), y = x/T, at T² = 1e320.
  with enable_x64():
    x = jnp.array([0.0, -1.0, 0.5]) * 1e160
    got = jax.grad(lambda s: sj.softmax(x, temperature=jnp.exp(s))[2])(jnp.log(1e160))
    y = np.array([0.0, -1.0, 0.5])
    p = np.exp(y) / np.exp(y).sum()
    np.testing.assert_allclose(got, -p[2] * (y[2] - p @ y), rtol=1e-10)
