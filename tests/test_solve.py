"""Tests for softmax_jax.solve: scikit-learn's optimum, the closed-form derivatives, the gauge,
validation, and a smoke run of experiments/solve.py."""

import fractions
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from softmax_jax import data
from softmax_jax import losses
from softmax_jax import solve
from softmax_jax.model import Params
from tests.conftest import enable_x64

C = 1.0


@pytest.fixture(scope="module")
def digits():
  return data.load_digits()


@pytest.fixture(scope="module")
def sklearn_fit(digits):
  """scikit-learn's multinomial LogisticRegression(C=1), fitted to its own tol = 1e-10."""
  model = LogisticRegression(C=C, tol=1e-10, max_iter=10000)
  return model.fit(digits.x_train.astype(np.float64), digits.y_train)


@pytest.fixture(scope="module")
def optimum(digits):
  """Our Newton solution for C = 1 to max|grad| <= 1e-10, and its info."""
  return solve.fit_exact(digits.x_train, digits.y_train, l2=1.0 / (C * len(digits.y_train)),
                         method="newton", tol=1e-10)


def _np_objective(W, b, x, y, l2):
  """J in NumPy float64: mean cross-entropy + l2/2·‖W‖²."""
  o = np.asarray(x, np.float64) @ W + b
  m = o.max(axis=1, keepdims=True)
  lse = np.log(np.exp(o - m).sum(axis=1)) + m[:, 0]
  return np.mean(lse - o[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(W**2)


def _max_abs(params):
  return max(float(np.max(np.abs(a))) for a in params)


# ----------------------------------------------------------------------------------------------
# (1) scikit-learn's optimum on the digits
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["newton", "lbfgs"])
def test_reaches_sklearn_optimum_on_digits(digits, sklearn_fit, method):
  x, y = digits.x_train.astype(np.float64), digits.y_train
  n = len(y)
  l2 = 1.0 / (C * n)
  params, info = solve.fit_exact(digits.x_train, y, l2=l2, method=method)
  assert info.method == method and info.converged and info.grad_norm <= 1e-6
  assert isinstance(params.W, np.ndarray) and params.W.dtype == np.float64
  assert params.W.shape == (64, 10) and params.b.shape == (10,)

  sk = Params(W=sklearn_fit.coef_.T, b=sklearn_fit.intercept_)
  with enable_x64():
    ours = float(jax.jit(functools.partial(solve.objective, l2=l2))(params, x, y))
    theirs = float(solve.objective(sk, x, y, l2=l2))
    grad = solve.gradient(params, x, y, l2=l2)
  assert ours <= theirs * (1 + 1e-6), (ours, theirs)
  assert abs(ours - theirs) <= 1e-6 * theirs
  np.testing.assert_allclose(ours, info.objective, rtol=1e-14)
  np.testing.assert_allclose(ours, _np_objective(params.W, params.b, x, y, l2), rtol=1e-12)
  assert _max_abs(grad) <= 1e-6
  # scikit-learn's documented objective, C·Σ l_i + ½‖W‖², is C·n times ours at λ = 1/(C·n).
  documented = C * n * _np_objective(sk.W, sk.b, x, y, 0.0) + 0.5 * np.sum(sk.W**2)
  np.testing.assert_allclose(documented, C * n * theirs, rtol=1e-12)
  # Both land on the same minimiser (to the accuracy tol = 1e-6 allows) and accuracy.
  np.testing.assert_allclose(params.W, sk.W, atol=2e-2)
  acc_ours = np.mean(np.argmax(digits.x_test @ params.W + params.b, 1) == digits.y_test)
  acc_sk = sklearn_fit.score(digits.x_test.astype(np.float64), digits.y_test)
  print(f"{method}: J = {ours:.12f} vs scikit-learn {theirs:.12f}; {info.iterations} steps, "
        f"max|grad| {info.grad_norm:.1e}; test accuracy {acc_ours:.4f} vs {acc_sk:.4f}")
  assert abs(acc_ours - acc_sk) <= 2 / len(digits.y_test)
  # The gauge is fixed: biases and each feature's weights sum to zero over the classes.
  assert abs(params.b.sum()) < 1e-12 and np.max(np.abs(params.W.sum(1))) < 1e-12


@pytest.mark.parametrize("method, dtype", [("newton", "float64"), ("lbfgs", "float64"),
                                           ("lbfgs", "float32")])
def test_compilation_is_cached_and_max_iter_reports_non_convergence(digits, method, dtype):
  l2 = 1.0 / len(digits.y_train)
  for _ in range(2):
    _, info = solve.fit_exact(digits.x_train, digits.y_train, l2=l2, method=method,
                              max_iter=2, product_dtype=dtype)
    assert info.iterations == 2 and not info.converged and info.grad_norm > 1e-6
  assert info.compile_seconds == 0.0 and info.solve_seconds > 0  # max_iter is not static


def test_lbfgs_direction_is_the_bfgs_inverse_hessian(x64):
  # Hand-rolled BFGS updates of H₀ = γI over the stored pairs, oldest first (Nocedal & Wright,
  # eq. 6.17); rows of zeros stand for pairs not yet stored.
  rng = np.random.default_rng(5)
  size, m, gamma = 12, 5, 0.37
  a = rng.normal(size=(size, size))
  hess = a @ a.T + size * np.eye(size)  # positive definite: every pair has s·y > 0
  s_pairs = rng.normal(size=(3, size))
  y_pairs = s_pairs @ hess
  grad = rng.normal(size=size)
  h = gamma * np.eye(size)
  for s_i, y_i in zip(s_pairs, y_pairs, strict=True):
    rho = 1 / (s_i @ y_i)
    left = np.eye(size) - rho * np.outer(s_i, y_i)
    h = left @ h @ left.T + rho * np.outer(s_i, s_i)
  s_MxP = np.concatenate([np.zeros((m - 3, size)), s_pairs])
  y_MxP = np.concatenate([np.zeros((m - 3, size)), y_pairs])
  got = solve._lbfgs_direction(jnp.asarray(grad), jnp.asarray(s_MxP), jnp.asarray(y_MxP), gamma)
  np.testing.assert_allclose(got, -h @ grad, rtol=1e-12, atol=1e-12)
  # With no pairs it is steepest descent scaled by γ.
  none = solve._lbfgs_direction(jnp.asarray(grad), jnp.zeros((m, size)), jnp.zeros((m, size)),
                                gamma)
  np.testing.assert_allclose(none, -gamma * grad, rtol=1e-15)


@pytest.mark.parametrize("scale", [1.0, 1e4, 3e38])
def test_solver_kernel_equals_the_library_cross_entropy(x64, scale):
  # The solvers' lean kernel against sj.cross_entropy and sj.cross_entropy_grad on finite
  # logits: ordinary ones, rows spanning ±1e4 and ±3e38 (finite in float64), and a −inf that is
  # not the label's (a trial step's overflow; the label's gives inf, rejected). A hand-computed
  # row too: [log 3, 0, 0], label 1: loss log 5, softmax [3/5, 1/5, 1/5].
  rng = np.random.default_rng(3)
  o = rng.normal(size=(7, 5)) * np.where(rng.random((7, 5)) < 0.4, scale, 1.0)
  o[0] = [scale, -scale, 0, scale, -scale]
  y = rng.integers(0, 5, size=7)
  y[0], y[1], o[1, 3] = 2, 0, -np.inf
  ce, p = jax.jit(solve._mean_ce_and_probs)(jnp.asarray(o), jnp.asarray(y, jnp.int32))
  np.testing.assert_allclose(ce, losses.cross_entropy(jnp.asarray(o), y, reduction="mean"), rtol=1e-15)
  np.testing.assert_allclose(p - np.eye(5)[y], losses.cross_entropy_grad(jnp.asarray(o), y),
                             rtol=1e-14, atol=1e-300)
  ce, p = solve._mean_ce_and_probs(jnp.log(jnp.array([[3.0, 1, 1]])), jnp.array([1]))
  np.testing.assert_allclose(ce, np.log(5), rtol=1e-15)
  np.testing.assert_allclose(p, [[0.6, 0.2, 0.2]], rtol=1e-15)


def test_prepare_augments_and_lays_out_the_transpose(x64):
  x = np.arange(6, dtype=np.float32).reshape(3, 2)
  xt, xt_t = solve._prepare(x)
  want = np.array([[0, 1, 1], [2, 3, 1], [4, 5, 1]], np.float64)
  assert xt.dtype == xt_t.dtype == jnp.float64
  np.testing.assert_array_equal(xt, want)
  np.testing.assert_array_equal(xt_t, want.T)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_narrow_inputs_solve_the_same_problem_in_float64(digits, dtype):
  # The digits' pixels (0..16) are exact in every float dtype: the problem, and so the optimum,
  # is the same; the solve itself runs in float64 whatever the input dtype.
  import ml_dtypes  # installed with jax
  x = digits.x_train.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
  l2 = 1.0 / len(digits.y_train)
  ref, ref_info = solve.fit_exact(digits.x_train.astype(np.float64), digits.y_train, l2=l2,
                                  method="lbfgs")
  params, info = solve.fit_exact(x, digits.y_train, l2=l2, method="lbfgs")
  assert info.converged and params.W.dtype == np.float64
  assert info.objective == pytest.approx(ref_info.objective, rel=1e-12)
  np.testing.assert_allclose(params.W, ref.W, atol=1e-12)


@pytest.mark.parametrize("method, dtype", [("newton", "float64"), ("lbfgs", "float64"),
                                           ("lbfgs", "float32")])
def test_max_iter_zero_reports_the_start(digits, method, dtype):
  # W = 0, b = 0: every class has probability 1/10, so J = log 10 and nothing moves.
  params, info = solve.fit_exact(digits.x_train, digits.y_train, l2=1e-3, method=method,
                                 max_iter=0, product_dtype=dtype)
  assert info.iterations == 0 and not info.converged
  assert info.objective == pytest.approx(np.log(10), rel=1e-14)
  np.testing.assert_array_equal(params.W, 0)


def test_prepare_lbfgs_centres_x_and_lays_out_its_transpose(x64):
  x = np.array([[0, 1e4], [2, 1e4 + 1], [4, 1e4 + 5], [6, 1e4 + 2]], np.float32)
  want = np.array([[-3, -2], [-1, -1], [1, 3], [3, 0]])  # minus the column means [3, 10002]
  for dtype in ("float32", "float64"):
    got, got_t, mu = solve._prepare_lbfgs(x, dtype=dtype)
    assert got.dtype == got_t.dtype == jnp.dtype(dtype) and mu.dtype == jnp.float64
    np.testing.assert_array_equal(mu, [3, 10002])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_t, want.T)


def test_prepare_lbfgs_makes_no_float64_copy_for_float32_products(x64):
  # The centring runs in the product dtype: XLA's temporary buffers hold at most one float32
  # copy of x (a float64 one, n·d·8 bytes, before).
  x = jax.ShapeDtypeStruct((600, 70), jnp.float32)
  memory = solve._prepare_lbfgs.lower(x, dtype="float32").compile().memory_analysis()
  assert memory.temp_size_in_bytes < 600 * 70 * 8  # 168,136 bytes; 336,000 + more before


def test_prepare_lbfgs_means_are_exact_for_many_rows(x64):
  # 200,000 float32 rows of mean 1e3: the means to an ulp of 1e3 (a float32 product Σx·(1/n),
  # summed in order, was 0.71 off, most of the features' spread of 1).
  rng = np.random.default_rng(4)
  x = (1e3 + rng.normal(size=(200_000, 2))).astype(np.float32)
  _, _, mu = solve._prepare_lbfgs(x, dtype="float32")
  np.testing.assert_allclose(mu, np.mean(x, axis=0, dtype=np.float64), rtol=0, atol=2e-4)


@pytest.mark.parametrize("offset", [100.0, 1000.0])
def test_float32_products_centre_float64_features_before_rounding(offset):
  # float64 x = N(0, 1) + offset: x − μ is taken in float64 and then rounded, so the rounding is
  # that of N(0, 1), and the reported gradient is the float64 one. (Rounding x to float32
  # first solved another problem: at offset 1000 the float64 gradient was 1.6e-4 while the
  # solver reported 9.6e-7 and converged=True.)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 5)) + offset
  y = rng.integers(0, 3, 2000)
  params, info = solve.fit_exact(x, y, l2=1e-3, method="lbfgs", product_dtype="float32")
  with enable_x64():
    grad = _max_abs(solve.gradient(params, x, y, l2=1e-3))
  assert info.converged and grad <= 1e-6 and abs(grad - info.grad_norm) <= 1e-7, (grad, info)


def test_lbfgs_centring_never_overflows():
  # Column 0's sum overflows float64 (its mean does not): the mean is taken as Σ x·(1/n); and where
  # x − μ itself would overflow (column 0 of the second x) the column is left uncentred. The
  # first gave NaN parameters; now both end finite, at the start's log 2 (no step can be taken
  # with logits that large).
  y = np.array([0, 1, 1])
  for x in (np.array([[1e308, 0], [1e308, 1], [0, 2]]),
            np.array([[1.7e308, 0], [-1.7e308, 1], [-1.7e308, 2]])):
    params, info = solve.fit_exact(x, y, l2=0.1, method="lbfgs")
    assert np.isfinite(params.W).all() and np.isfinite(params.b).all()
    assert info.objective == pytest.approx(np.log(2), rel=1e-15) and not info.converged
  with enable_x64():
    _, _, mu = solve._prepare_lbfgs(np.array([[1e308, 1.7e308], [1e308, -1.7e308],
                                              [0, -1.7e308]]), dtype="float64")
  np.testing.assert_allclose(mu, [1e308 / 3 * 2, 0], rtol=1e-15)


@pytest.mark.parametrize("x", [np.array([[1e150, 0], [1e150, 1], [0, 2]]),
                               np.array([[1e38, 0], [1e38, 1], [0, 2]], np.float32)])
def test_float32_products_refuse_features_they_would_overflow(x):
  with pytest.raises(ValueError, match=r"product_dtype='float32' needs max\|x\| <= 5.67e\+37 "
                     r"\(float32's largest value / 2n, n = 3\).*got 1e\+(150|38)"):
    solve.fit_exact(x, np.array([0, 1, 1]), l2=0.1, product_dtype="float32")


def test_lbfgs_logits_do_not_drift_at_large_feature_scales():
  # Features of scale 1e6: ∇_W J = xᵀG/n turns a drift of 1e-12 in the logits into 1e-6. With the
  # logits carried as O + tD over 265 steps the solve ended at max|∇J| = 1.4e-6, unconverged;
  # with D = O(Θ' + Δ) − O they are a fresh product after every full step.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(60, 2)) * 1e6
  y = rng.integers(0, 3, 60)
  params, info = solve.fit_exact(x, y, l2=0.01, method="lbfgs", max_iter=3000)
  assert info.converged and info.iterations < 200
  with enable_x64():
    assert _max_abs(solve.gradient(params, x, y, l2=0.01)) <= 1e-6


@pytest.mark.parametrize("dtype", ["float32", np.float32, jnp.float32, "f4"])
def test_float32_products_reach_the_float64_optimum(digits, optimum, dtype):
  # L-BFGS with float32 products (W, b and x rounded to float32 for each product, everything
  # else in float64) stops at a point whose float64 gradient is below tol, with the objective
  # of the float64 optimum; its reported objective and gradient are float32 products' own.
  x, y = digits.x_train, digits.y_train
  l2 = 1.0 / (C * len(y))
  ref, ref_info = optimum  # Newton, float64, max|∇J| <= 1e-10
  params, info = solve.fit_exact(x, y, l2=l2, product_dtype=dtype)  # auto: L-BFGS
  assert info.method == "lbfgs" and info.converged and info.grad_norm <= 1e-6
  assert params.W.dtype == np.float64
  with enable_x64():
    exact = float(solve.objective(params, x.astype(np.float64), y, l2=l2))
    grad = solve.gradient(params, x.astype(np.float64), y, l2=l2)
  assert _max_abs(grad) <= 1e-6
  assert abs(_max_abs(grad) - info.grad_norm) <= 1e-8  # what it reported is what it reached
  assert ref_info.objective <= exact <= ref_info.objective * (1 + 1e-7), (exact, ref_info)
  # Reported from float32 products: 1.1e-8 relative here (float64 products: 1e-15).
  assert abs(info.objective - exact) <= 1e-7 * exact
  assert abs(params.b.sum()) < 1e-12 and np.max(np.abs(params.W.sum(1))) < 1e-12


@pytest.mark.parametrize("offset, dtypes", [(0.0, ("float64", "float32")),
                                            (30.0, ("float64", "float32")),
                                            (1e4, ("float64",))])
def test_lbfgs_centres_the_features(offset, dtypes):
  # L-BFGS solves for (W, b + μW) on x − μ, μ the column means: the same objective (b is not
  # penalised) on better-conditioned products. Features with a mean of 30 or 1e4 are then solved
  # about as fast as centred ones (without centring: 688 steps at 30, no convergence in 3,000 at
  # 1e4), to the same optimum as Newton's on the raw features. (With float32 products and a
  # mean of 1e4 it takes ~120 steps: tol on ∇_W J = ∇_W J' + μ∇_b J' asks |∇_b J| <= 1e-10,
  # near the float32 rounding of G.)
  rng = np.random.default_rng(11)
  x = (offset + rng.normal(size=(500, 6))).astype(np.float32)
  y = rng.integers(0, 4, 500).astype(np.int32)
  l2 = 1e-2
  ref, ref_info = solve.fit_exact(x, y, l2=l2, method="newton", tol=1e-10)
  for dtype in dtypes:
    params, info = solve.fit_exact(x, y, l2=l2, method="lbfgs", product_dtype=dtype)
    assert info.converged and info.iterations <= 20, (dtype, info)
    with enable_x64():
      grad = _max_abs(solve.gradient(params, x.astype(np.float64), y, l2=l2))
      exact = float(solve.objective(params, x.astype(np.float64), y, l2=l2))
    assert grad <= 1e-6 and abs(grad - info.grad_norm) <= 1e-7, (dtype, grad, info)
    # Not above Newton's optimum. One-sided: on the raw features of mean 1e4 Newton itself may
    # stop short of tol = 1e-10 (jax 0.4.35: 100 steps, max|∇J| = 2.9e-9, J 1.4e-8 above
    # L-BFGS's), and no J can fall below the optimum but by rounding.
    assert exact - ref_info.objective <= 1e-10 * ref_info.objective
    assert ref_info.converged or offset == 1e4, ref_info
    # J is λ-strongly convex in W: ‖W − W*‖₂ <= ‖∇J‖₂/λ <= √P·max|∇J|/λ, for each solution (the
    # bound, 5.4e-4 here, was 1e-4, which held on jax 0.10.2 but not 0.4.35 at a mean of 1e4:
    # 1.2e-4). b moves with μW: compare b + μW.
    bound = np.sqrt(params.W.size + params.b.size) * (1e-6 + ref_info.grad_norm) / l2
    np.testing.assert_allclose(params.W, ref.W, atol=bound)
    mu = np.mean(x.astype(np.float64), axis=0)
    np.testing.assert_allclose(params.b + mu @ params.W, ref.b + mu @ ref.W, atol=bound)


def test_float32_products_cannot_resolve_tol_on_large_features():
  # Features of scale 1e3: the float32 rounding of ∇_W J's terms, ~6e-8·1e3·|G|, exceeds
  # tol = 1e-6. The solver says so (converged=False) rather than claiming the optimum, and
  # its reported gradient is the float64 one's order of magnitude; float64 products converge.
  rng = np.random.default_rng(11)
  x = (1e3 * rng.normal(size=(500, 6))).astype(np.float32)
  y = rng.integers(0, 4, 500).astype(np.int32)
  params, info = solve.fit_exact(x, y, l2=1e-2, method="lbfgs", product_dtype="float32",
                                 max_iter=300)
  with enable_x64():
    grad = _max_abs(solve.gradient(params, x.astype(np.float64), y, l2=1e-2))
  assert not info.converged and grad > 1e-6
  assert grad / 10 < info.grad_norm < grad * 10, (grad, info)
  _, info = solve.fit_exact(x, y, l2=1e-2, method="lbfgs", max_iter=300)
  assert info.converged


def test_default_method_by_problem_size():
  assert solve.default_method(1437, 64, 10) == "newton"  # the digits: P = 650
  assert solve.default_method(60000, 784, 10) == "lbfgs"  # MNIST: P = 7,850
  assert solve.default_method(100, 784, 10) == "lbfgs"  # P > 4,096
  assert solve.default_method(10**6, 64, 10) == "lbfgs"  # n·P² > 1e10


# ----------------------------------------------------------------------------------------------
# (2) closed-form derivatives against autodiff
# ----------------------------------------------------------------------------------------------


def _tiny(n=7, d=3, q=4, seed=0):
  rng = np.random.default_rng(seed)
  params = Params(W=rng.normal(size=(d, q)), b=rng.normal(size=q))
  return params, rng.normal(size=(n, d)), rng.integers(0, q, n).astype(np.int32)


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_hessian_equals_jax_hessian(x64, l2):
  params, x, y = _tiny()
  d, q = params.W.shape

  def f(theta):
    return solve.objective(Params(theta[:d * q].reshape(d, q), theta[d * q:]), x, y, l2=l2)

  theta = jnp.concatenate([jnp.ravel(params.W), params.b])
  want = jax.hessian(f)(theta)
  got = jax.jit(functools.partial(solve.hessian, l2=l2))(params, x)
  assert got.dtype == jnp.float64 and got.shape == ((d + 1) * q, (d + 1) * q)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
  # Singular along the bias gauge b → b + c·1 (and, with λ = 0, along W → W + a1ᵀ).
  bias_shift = np.concatenate([np.zeros(d * q), np.ones(q)])
  np.testing.assert_allclose(got @ bias_shift, 0, atol=1e-14)
  weight_shift = np.concatenate([np.kron([1.0, -2.0, 0.5], np.ones(q)), np.zeros(q)])
  np.testing.assert_allclose(got @ weight_shift, l2 * weight_shift, atol=1e-14)


def test_hessian_summed_in_chunks_equals_one_chunk(x64):
  # 11 examples in chunks of 4: two full chunks and one padded with zero rows.
  params, x, _ = _tiny(n=11, seed=2)
  theta = jnp.concatenate([params.W, params.b[None, :]], axis=0)
  xt = jnp.concatenate([x, jnp.ones((11, 1))], axis=1)
  whole = solve._hessian(theta, xt, 0.3, chunk=11)
  np.testing.assert_allclose(solve._hessian(theta, xt, 0.3, chunk=4), whole, rtol=1e-13,
                             atol=1e-15)
  np.testing.assert_allclose(whole, whole.T, rtol=1e-13, atol=1e-15)


def test_gradient_equals_jax_grad(x64):
  params, x, y = _tiny(n=11, seed=1)
  want = jax.grad(solve.objective)(params, x, y, l2=0.7)
  got = jax.jit(functools.partial(solve.gradient, l2=0.7))(params, x, y)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("big", [1e4, 3e38])
@pytest.mark.parametrize("route", ["W", "x"])
def test_objective_gradient_and_hessian_at_extreme_logits(big, route):
  # float32. Row 0's logits are [big, 0, −inf] (label 1: loss big, p − y = [1, −1, 0]); row 1's
  # [0, 0, −inf] (label 0: loss log 2, p − y = [−½, ½, 0]). The −inf is class 2's bias.
  # route "W": x = I and W[0, 0] = big; route "x": x[0, 0] = big and W[0, 0] = 1.
  x = np.eye(2, dtype=np.float32)
  W = np.zeros((2, 3), np.float32)
  W[0, 0], x[0, 0] = (big, 1) if route == "W" else (1, big)
  params = Params(jnp.asarray(W), jnp.array([0, 0, -np.inf], np.float32))
  y = np.array([1, 0])
  for l2 in (0.0, 0.5):
    penalty = 0.5 * l2 * np.float64(W[0, 0]) ** 2  # inf in float32 for l2 > 0 and W = 3e38
    want = np.float32((big + np.log(2)) / 2 + penalty) if penalty < 3e38 else np.inf
    np.testing.assert_allclose(solve.objective(params, x, y, l2=l2), want, rtol=1e-6)
    want_W = np.array([[big * 0.5 if route == "x" else 0.5, -x[0, 0] / 2, 0], [-0.25, 0.25, 0]])
    want_W[0, 0] += l2 * W[0, 0]
    want_b = [0.25, -0.25, 0]
    for got in (solve.gradient(params, x, y, l2=l2),
                jax.grad(solve.objective)(params, x, y, l2=l2)):  # autodiff: 0·inf was NaN
      np.testing.assert_allclose(got.W, want_W, rtol=1e-6)
      np.testing.assert_allclose(got.b, want_b, rtol=1e-6)
  # Row 0 saturated: S₀ = 0, so its x̃ = [x₀₀, 0, 1] adds nothing, even where x₀₀² overflows
  # (route "x" at 3e38 gave NaN: x²·1 − (x·1)² = inf − inf); row 1, x̃ = [0, 1, 1]:
  # S₁ = [[¼, −¼, 0], ...]/n.
  s1 = np.array([[0.25, -0.25, 0], [-0.25, 0.25, 0], [0, 0, 0]])
  want_h = 0.5 * np.kron(np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]]), s1)
  np.testing.assert_array_equal(solve.hessian(params, x, l2=0.0), want_h)


def test_hessian_columns_far_from_overflow_are_not_scaled():
  # x = [1e10, 1]: x² = 1e20 is far from float32's range, so nothing is scaled and the entry
  # x·1·p(1 − p) of row 1 (p ≈ e^-46) is kept. Scaling every column beyond 2^32 (a first
  # version) made it 1.16e-10²·p, below float32's smallest normal: 0 (review).
  params = Params(jnp.array([[0.0, 1e-7]], jnp.float32), jnp.array([0.0, -46.0], jnp.float32))
  x = jnp.array([[1e10], [1.0]], jnp.float32)
  with enable_x64():
    want = solve.hessian(Params(*(a.astype(jnp.float64) for a in params)),
                         x.astype(jnp.float64), l2=0.0)
  got = solve.hessian(params, x, l2=0.0)
  assert abs(float(want[0, 1])) > 1e-22
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hessian_entries_beyond_the_float_range_are_inf_not_nan(dtype):
  # W = 0, so every row has the same p = softmax(b) and H = (X̃ᵀX̃/n) ⊗ S + λ(I ⊕ 0) ⊗ I with
  # S = diag(p) − ppᵀ: hand-computed in float64 (Python ints for X̃ᵀX̃), then rounded, so
  # entries beyond the range are ±inf with the sign of S. Features of 1e20 (float32) or 1e160
  # (float64) square beyond the range; the block diagonal minus Z Zᵀ gave inf − inf = NaN.
  big = 10**20 if dtype == np.float32 else 10**160
  rows = [[big, 1], [2, -3 * big], [3, 4]]
  b = np.array([0.0, 1.0, -1.0])
  p = np.exp(b) / np.exp(b).sum()
  S = np.diag(p) - np.outer(p, p)
  xt = [r + [1] for r in rows]
  gram = [[sum(r[i] * r[j] for r in xt) for j in range(3)] for i in range(3)]  # exact ints

  def entry(g, s):  # g·s/3 rounded to dtype, ±inf beyond its range
    value = g * fractions.Fraction(s) / 3
    top = fractions.Fraction(float(np.finfo(dtype).max))
    return float(value) if abs(value) <= top else (math.inf if value > 0 else -math.inf)

  with enable_x64():
    got = np.asarray(solve.hessian(Params(jnp.zeros((2, 3), dtype), jnp.asarray(b, dtype)),
                                   jnp.asarray(np.array(rows, np.float64), dtype), l2=0.5))
  want = np.block([[np.array([[entry(gram[i][j], s) for s in row] for row in S])
                     + 0.5 * np.eye(3) * (i == j < 2) for j in range(3)] for i in range(3)])
  assert got.dtype == dtype and not np.isnan(got).any()
  assert np.isinf(want).sum() == (13 if dtype == np.float32 else 18)  # float32: 5 of 18 fit
  np.testing.assert_allclose(got, want.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-12)


# ----------------------------------------------------------------------------------------------
# (3) the gauge
# ----------------------------------------------------------------------------------------------


def test_bias_shift_leaves_objective_unchanged(x64):
  params, x, y = _tiny(n=20, seed=2)
  shifted = params._replace(b=params.b + 3.7)
  np.testing.assert_allclose(solve.objective(shifted, x, y, l2=0.5),
                             solve.objective(params, x, y, l2=0.5), rtol=1e-14)
  g = solve.gradient(params, x, y, l2=0.5)
  assert abs(float(jnp.sum(g.b))) < 1e-14  # the gradient has no gauge component


@pytest.mark.parametrize("method, dtype", [("newton", "float64"), ("lbfgs", "float64"),
                                           ("lbfgs", "float32")])
def test_a_gauge_shifted_optimum_is_still_the_optimum(digits, optimum, method, dtype):
  # Start from the optimum with every bias shifted by 100 and each feature's weights by its own
  # constant: the objective has not changed, and the solver returns the centred optimum at once.
  x, y = digits.x_train, digits.y_train
  l2 = 1.0 / (C * len(y))
  ref, ref_info = optimum
  shift_Dx1 = np.random.default_rng(0).normal(size=(64, 1))
  init = Params(W=ref.W + shift_Dx1, b=ref.b + 100.0)
  with enable_x64():
    np.testing.assert_allclose(solve.objective(init._replace(W=ref.W), x, y, l2=l2),
                               ref_info.objective, rtol=1e-14)
  params, info = solve.fit_exact(x, y, l2=l2, method=method, tol=1e-6, init=init,
                                 product_dtype=dtype)
  assert info.converged and info.iterations <= 1
  np.testing.assert_allclose(params.W, ref.W, atol=1e-8)
  np.testing.assert_allclose(params.b, ref.b, atol=1e-8)


def test_newton_from_a_random_start_reaches_the_same_optimum(digits, optimum):
  x, y = digits.x_train, digits.y_train
  l2 = 1.0 / (C * len(y))
  ref, ref_info = optimum
  rng = np.random.default_rng(1)
  init = Params(W=0.3 * rng.normal(size=(64, 10)), b=rng.normal(size=10) + 100.0)
  params, info = solve.fit_exact(x, y, l2=l2, method="newton", tol=1e-10, init=init)
  print(f"Newton from zero: {ref_info.iterations} steps; from a random start: {info.iterations}")
  assert info.converged and abs(params.b.sum()) < 1e-12
  np.testing.assert_allclose(params.W, ref.W, atol=1e-7)
  np.testing.assert_allclose(params.b, ref.b, atol=1e-7)


def test_no_penalty_with_a_dead_feature():
  # λ = 0 and a feature that is always 0: the Hessian is singular beyond the gauge, and the
  # ridge fallback still reaches the (non-separable) optimum.
  rng = np.random.default_rng(3)
  x = np.concatenate([rng.normal(size=(300, 2)), np.zeros((300, 1))], axis=1)
  y = rng.integers(0, 3, 300).astype(np.int32)
  params, info = solve.fit_exact(x, y, l2=0.0, method="newton", tol=1e-10)
  assert info.converged and info.iterations < 20
  np.testing.assert_array_equal(params.W[2], 0)
  with enable_x64():
    assert _max_abs(solve.gradient(params, x, y, l2=0.0)) <= 1e-10
  # L-BFGS reaches it too; the dead feature's gradient is exactly 0 all along.
  lbfgs, info = solve.fit_exact(x, y, l2=0.0, method="lbfgs", tol=1e-9)
  assert info.converged
  np.testing.assert_array_equal(lbfgs.W[2], 0)
  np.testing.assert_allclose(lbfgs.W, params.W, atol=1e-7)
  with enable_x64():
    assert _max_abs(solve.gradient(lbfgs, x, y, l2=0.0)) <= 1e-9


# ----------------------------------------------------------------------------------------------
# (4) bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    ({"x": np.ones((4, 2), np.int32)}, TypeError, "x must be a floating-point array"),
    ({"x": np.ones(4)}, ValueError, r"x must have shape \(n, d\)"),
    ({"x": np.array([[0.0, 1.0], [np.nan, 0.0], [0, 0], [0, 0]])}, ValueError,
     r"x must be finite; got nan at index \(1, 0\)"),
    ({"y": np.array([0.0, 1.0, 0.0, 1.0])}, TypeError, "y must be integer class ids"),
    ({"y": np.array([0, 1, 0])}, ValueError, r"y must have shape \(4,\)"),
    ({"y": np.array([0, 1, 3, 1]), "num_classes": 3}, ValueError,
     r"class ids in \[0, 3\); got 3 at index \[2\]"),
    ({"y": np.array([0, -1, 0, 1])}, ValueError, "y must be class ids >= 0; got -1"),
    ({"num_classes": 0}, ValueError, "num_classes must be a positive int; got 0"),
    ({"l2": -1.0}, ValueError, "l2 must be a finite number >= 0; got -1.0"),
    ({"l2": float("inf")}, ValueError, "l2 must be a finite number >= 0; got inf"),
    ({"tol": -1e-6}, ValueError, "tol must be"),
    ({"method": "sgd"}, ValueError, "method must be one of"),
    ({"max_iter": -1}, ValueError, "max_iter must be an int >= 0; got -1"),
    ({"init": Params(np.zeros((3, 2)), np.zeros(2))}, ValueError,
     r"init must hold W of shape \(2, 2\)"),
    ({"init": Params(np.full((2, 2), np.inf), np.zeros(2))}, ValueError, "init must be finite"),
    ({"product_dtype": "float16"}, ValueError,
     r"product_dtype must be one of \('float64', 'float32'\); got 'float16'"),
    ({"product_dtype": np.int32}, ValueError, "product_dtype must be one of .*int32"),
    ({"product_dtype": "single precision"}, ValueError, "got 'single precision'"),
    ({"method": "newton", "product_dtype": "float32"}, ValueError,
     "method='newton' computes in float64; got product_dtype='float32'"),
])
def test_bad_input(kwargs, error, match):
  args = {"x": np.ones((4, 2)), "y": np.array([0, 1, 0, 1]), "l2": 0.1, **kwargs}
  with pytest.raises(error, match=match):
    solve.fit_exact(args.pop("x"), args.pop("y"), **args)


def test_bad_l2_in_objective():
  params, x, y = _tiny()
  with pytest.raises(ValueError, match="l2 must be a finite number >= 0; got -0.5"):
    solve.objective(params, x, y, l2=-0.5)
  with pytest.raises(ValueError, match="C must be a finite number > 0"):
    solve.fit_and_evaluate(None, C=0.0)


# ----------------------------------------------------------------------------------------------
# (5) experiments/solve.py
# ----------------------------------------------------------------------------------------------


def test_experiment_smoke(tmp_path, digits, sklearn_fit):
  from absl.testing import flagsaver

  from experiments import solve as exp
  with flagsaver.flagsaver(workdir=str(tmp_path), C=C, tol=1e-6, method="auto"):
    exp.FLAGS.mark_as_parsed()
    exp.main([])
  rec = json.loads((tmp_path / "solve.json").read_text())
  for key in ("objective", "grad_norm", "iterations", "converged", "solve_seconds",
              "compile_seconds", "test_accuracy", "train_accuracy", "l2", "sklearn_objective"):
    assert key in rec
  n = len(digits.y_train)
  assert rec["dataset"] == "digits" and rec["method"] == "newton" and rec["converged"]
  assert rec["n_train"] == n and rec["l2"] == pytest.approx(1 / n, rel=1e-15)
  assert rec["grad_norm"] <= 1e-6 and rec["compile_seconds"] >= 0
  sk = Params(W=sklearn_fit.coef_.T, b=sklearn_fit.intercept_)
  theirs = _np_objective(sk.W, sk.b, digits.x_train, digits.y_train, 1 / n)
  assert rec["objective"] <= theirs * (1 + 1e-6)
  assert rec["sklearn_objective"] == pytest.approx(C * n * rec["objective"], rel=1e-12)
  assert rec["test_accuracy"] == pytest.approx(
      sklearn_fit.score(digits.x_test.astype(np.float64), digits.y_test),
      abs=2 / len(digits.y_test))
  assert rec["product_dtype"] == "float64"
  # --product_dtype=float32: L-BFGS (auto picks it) with float32 products, the same optimum.
  with flagsaver.flagsaver(workdir=str(tmp_path), C=C, tol=1e-6, method="auto",
                           product_dtype="float32"):
    exp.main([])
  rec32 = json.loads((tmp_path / "solve.json").read_text())
  assert rec32["method"] == "lbfgs" and rec32["product_dtype"] == "float32"
  assert rec32["converged"] and rec32["grad_norm"] <= 1e-6
  assert rec32["objective"] == pytest.approx(rec["objective"], rel=1e-7)
