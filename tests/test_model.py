"""Tests for the softmax regression model: Params, init_params, logits, predict, predict_proba."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

# A hand-made model with 4 features and 3 classes whose logits are exact in float32.
_W = np.array([[1.0, 0.0, -1.0],
               [2.0, 1.0, 0.0],
               [0.0, 0.0, 1.0],
               [1.0, -1.0, 2.0]], np.float32)
_B = np.array([0.5, -0.5, 0.0], np.float32)
_PARAMS = sj.Params(W=jnp.asarray(_W), b=jnp.asarray(_B))


def _batch(seed, shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _np_softmax(o):
  o = np.asarray(o, np.float64)
  e = np.exp(o - o.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# init_params
# ------------------------------------------------------------------------------------------------


class TestInitParams:

  def test_text_toy_shapes_and_count(self):
    # 2×2 greyscale images (4 features), 3 classes: 12 weights and 3 biases.
    params = sj.init_params(jax.random.key(0), 4, 3)
    assert isinstance(params, sj.Params)
    assert params.W.shape == (4, 3)
    assert params.b.shape == (3,)
    assert params.W.dtype == jnp.float32 and params.b.dtype == jnp.float32
    assert params.num_features == 4 and params.num_classes == 3
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 2
    assert [leaf.size for leaf in leaves] == [12, 3]
    assert sum(leaf.size for leaf in leaves) == 15

  def test_bias_is_zero(self):
    params = sj.init_params(jax.random.key(1), 4, 3)
    np.testing.assert_array_equal(params.b, np.zeros(3))
    assert jnp.any(params.W != 0)

  def test_weight_scale(self):
    scale = 0.01
    W = np.asarray(sj.init_params(jax.random.key(2), 1000, 100, scale=scale).W, np.float64)
    np.testing.assert_allclose(W.std(), scale, rtol=0.05)
    assert abs(W.mean()) < 0.05 * scale
    W = np.asarray(sj.init_params(jax.random.key(2), 1000, 100, scale=0.5).W, np.float64)
    np.testing.assert_allclose(W.std(), 0.5, rtol=0.05)

  def test_zero_scale_gives_zero_weights(self):
    params = sj.init_params(jax.random.key(3), 4, 3, scale=0.0)
    np.testing.assert_array_equal(params.W, np.zeros((4, 3)))

  def test_deterministic_for_a_key(self):
    a = sj.init_params(jax.random.key(4), 4, 3)
    b = sj.init_params(jax.random.key(4), 4, 3)
    c = sj.init_params(jax.random.key(5), 4, 3)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    assert not np.array_equal(np.asarray(a.W), np.asarray(c.W))

  def test_legacy_uint32_key(self):
    params = sj.init_params(jax.random.PRNGKey(0), 4, 3)
    assert params.W.shape == (4, 3)

  def test_dtype(self):
    params = sj.init_params(jax.random.key(6), 4, 3, dtype=jnp.bfloat16)
    assert params.W.dtype == jnp.bfloat16 and params.b.dtype == jnp.bfloat16

  @pytest.mark.parametrize("num_features,num_classes", [(0, 3), (4, 0), (-1, 3), (4.0, 3),
                                                        (True, 3)])
  def test_bad_sizes(self, num_features, num_classes):
    with pytest.raises(ValueError, match="positive int"):
      sj.init_params(jax.random.key(0), num_features, num_classes)

  @pytest.mark.parametrize("scale", [-0.01, -1, float("nan")])
  def test_bad_scale(self, scale):
    with pytest.raises(ValueError, match="scale"):
      sj.init_params(jax.random.key(0), 4, 3, scale=scale)

  def test_numpy_integer_sizes(self):
    # e.g. init_params(key, X.shape[1], y.max() + 1) with numpy labels y: np.int64 is a positive
    # int (one_hot accepts it as num_classes).
    y = np.array([0, 2, 1, 2])
    params = sj.init_params(jax.random.key(0), np.int64(4), y.max() + 1)
    assert params.W.shape == (4, 3) and params.b.shape == (3,)

  def test_numpy_float_scale(self):
    params = sj.init_params(jax.random.key(0), 4, 3, scale=np.float32(0.5))
    np.testing.assert_allclose(params.W, 0.5 * sj.init_params(jax.random.key(0), 4, 3,
                                                              scale=1.0).W, rtol=1e-6)

  @pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
  def test_non_float_dtype(self, dtype):
    with pytest.raises(TypeError, match="dtype"):
      sj.init_params(jax.random.key(0), 4, 3, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# logits
# ------------------------------------------------------------------------------------------------


class TestLogits:

  def test_single_example_hand_value(self):
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    # xW = [1 + 4 + 0 + 4, 0 + 2 + 0 - 4, -1 + 0 + 3 + 8] = [9, -2, 10]; + b.
    o = sj.logits(_PARAMS, x)
    assert o.shape == (3,)
    np.testing.assert_array_equal(o, [9.5, -2.5, 10.0])
    np.testing.assert_array_equal(o, x @ _PARAMS.W + _PARAMS.b)

  def test_batch_equals_matrix_product(self):
    x = _batch(0, (6, 4))
    o = sj.logits(_PARAMS, x)
    assert o.shape == (6, 3)
    np.testing.assert_allclose(o, x.astype(np.float64) @ _W + _B, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(o, jnp.asarray(x) @ _PARAMS.W + _PARAMS.b[None, :], rtol=1e-6,
                               atol=1e-6)

  def test_batch_equals_stacked_examples(self):
    x = _batch(1, (5, 4))
    stacked = jnp.stack([sj.logits(_PARAMS, x[i]) for i in range(len(x))])
    np.testing.assert_allclose(sj.logits(_PARAMS, x), stacked, rtol=1e-6, atol=1e-6)

  def test_leading_dims(self):
    x = _batch(2, (2, 5, 4))
    o = sj.logits(_PARAMS, x)
    assert o.shape == (2, 5, 3)
    np.testing.assert_allclose(o, x.astype(np.float64) @ _W + _B, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(o[1], sj.logits(_PARAMS, x[1]), rtol=1e-6, atol=1e-6)

  def test_params_is_a_pytree(self):
    doubled = jax.tree.map(lambda a: 2 * a, _PARAMS)
    assert isinstance(doubled, sj.Params)
    np.testing.assert_array_equal(doubled.W, 2 * _W)
    np.testing.assert_array_equal(doubled.b, 2 * _B)
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(sj.logits(doubled, x), [19.0, -5.0, 20.0])
    leaves, treedef = jax.tree.flatten(_PARAMS)
    assert jax.tree.unflatten(treedef, leaves) == _PARAMS

  def test_jit_over_params(self):
    x = _batch(3, (6, 4))
    jitted = jax.jit(sj.logits)(_PARAMS, x)
    np.testing.assert_allclose(jitted, sj.logits(_PARAMS, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(jax.jit(sj.predict)(_PARAMS, x), sj.predict(_PARAMS, x))

  def test_vmap_over_params(self):
    stacked = jax.tree.map(lambda a: jnp.stack([a, -a]), _PARAMS)
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    o = jax.vmap(sj.logits, in_axes=(0, None))(stacked, x)
    np.testing.assert_array_equal(o, [[9.5, -2.5, 10.0], [-9.5, 2.5, -10.0]])

  def test_check_grads(self, x64):
    params = sj.Params(W=jnp.asarray(_W, jnp.float64), b=jnp.asarray(_B, jnp.float64))
    x = jnp.asarray(_batch(4, (3, 4)), jnp.float64)
    check_grads(jax.jit(sj.logits), (params, x), order=2, modes=("fwd", "rev"))
    assert sj.logits(params, x).dtype == jnp.float64

  def test_jacobians_closed_form(self):
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    # do_j / dx_i = W_ij, do_j / dW_ij' = x_i [j = j'], do_j / db_j' = [j = j'].
    jx = jax.jit(jax.jacfwd(sj.logits, argnums=1))(_PARAMS, x)
    np.testing.assert_array_equal(jx, _W.T)
    jp = jax.jit(jax.jacrev(sj.logits))(_PARAMS, x)
    np.testing.assert_array_equal(jp.b, np.eye(3))
    np.testing.assert_array_equal(jp.W, np.einsum("i,jk->jik", np.asarray(x), np.eye(3)))

  def test_batch_jacobians_closed_form(self):
    # A batch goes through its own derivative rule: do_nj/dx_ni = W_ij, do_nj/dW_ij' = x_ni·[j = j'].
    x = jnp.asarray(_batch(5, (2, 4)))
    jp = jax.jit(jax.jacrev(sj.logits))(_PARAMS, x)
    np.testing.assert_array_equal(jp.b, np.broadcast_to(np.eye(3), (2, 3, 3)))
    np.testing.assert_array_equal(jp.W, np.einsum("ni,jk->njik", np.asarray(x), np.eye(3)))
    jx = jax.jit(jax.jacfwd(sj.logits, argnums=1))(_PARAMS, x)
    np.testing.assert_array_equal(jx, np.einsum("nm,ij->njmi", np.eye(2), _W))

  @pytest.mark.parametrize("x_dtype,w_dtype", [("float32", "float32"), ("bfloat16", "float32"),
                                               ("float32", "bfloat16")])
  @pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4), (0, 4)])
  def test_batch_rule_equals_per_example_autodiff(self, x_dtype, w_dtype, shape):
    # The batch's rule against plain autodiff of the vmapped per-example map, in reverse mode
    # (the weight gradient xᵀG), forward mode and second order.
    params = sj.Params(W=jnp.asarray(_W, w_dtype), b=jnp.asarray(_B, w_dtype))
    x = jnp.asarray(_batch(6, shape), x_dtype)
    y = jnp.asarray(np.arange(int(np.prod(shape[:-1]))).reshape(shape[:-1]) % 3)

    def plain(p, x):
      fn = sj.model._logits_one
      for _ in range(x.ndim - 1):
        fn = jax.vmap(fn, in_axes=(None, 0))
      return fn(p, x)

    def loss(logits_fn):
      return lambda p, x: sj.cross_entropy(logits_fn(p, x).astype(jnp.float32), y,
                                           reduction="sum")

    def close(a, b):  # bfloat16 results may round differently: 2⁻⁶ of the largest entry
      a, b = np.float32(a), np.float32(b)
      atol = 1e-6 if "bfloat16" not in (x_dtype, w_dtype) else 2**-6 * np.abs(b).max(initial=0)
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=atol)

    np.testing.assert_array_equal(sj.logits(params, x), plain(params, x))
    got = jax.jit(jax.grad(loss(sj.logits), argnums=(0, 1)))(params, x)
    want = jax.jit(jax.grad(loss(plain), argnums=(0, 1)))(params, x)
    jax.tree.map(close, got, want)
    tangents = (jax.tree.map(jnp.ones_like, params), jnp.ones_like(x))
    _, t_got = jax.jvp(sj.logits, (params, x), tangents)
    _, t_want = jax.jvp(plain, (params, x), tangents)
    close(t_got, t_want)
    jax.tree.map(close, jax.hessian(loss(sj.logits))(params, x),
                 jax.hessian(loss(plain))(params, x))

  def test_batch_weight_gradient_is_rows_by_columns_on_cpu(self):
    # On a CPU the weight gradient is Gᵀ·x behind optimisation barriers (see model.py); JAX
    # versions that cannot transpose a barrier keep plain autodiff.
    if not sj.model._barrier_transposes():
      pytest.skip("this JAX cannot transpose lax.optimization_barrier")
    x = jnp.asarray(_batch(7, (5, 4)))
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(sj.logits(p, x) ** 2)))(_PARAMS)
    assert "optimization_barrier" in str(jaxpr)
    hlo = jax.jit(jax.grad(lambda p: jnp.sum(sj.logits(p, x) ** 2))).lower(_PARAMS).as_text()
    assert "optimization_barrier" in hlo or jax.default_backend() != "cpu"


# ------------------------------------------------------------------------------------------------
# predict and predict_proba
# ------------------------------------------------------------------------------------------------


class TestPredict:

  def test_hand_value(self):
    x = jnp.array([[1.0, 2.0, 3.0, 4.0],   # logits [9.5, -2.5, 10]: class 2
                   [1.0, 0.0, 0.0, 0.0],   # [1.5, -0.5, -1]: class 0
                   [0.0, 1.0, 0.0, -1.0]])  # [1.5, 1.5, -2]: a tie, the first wins
    pred = sj.predict(_PARAMS, x)
    assert pred.dtype == jnp.int32
    np.testing.assert_array_equal(pred, [2, 0, 0])
    assert sj.predict(_PARAMS, x[0]).shape == ()
    assert sj.predict(_PARAMS, x[0]) == 2

  def test_predict_is_argmax_of_logits_and_of_proba(self):
    x = _batch(5, (2, 5, 4))
    pred = sj.predict(_PARAMS, x)
    assert pred.shape == (2, 5)
    assert pred.dtype == jnp.int32
    np.testing.assert_array_equal(pred, jnp.argmax(sj.logits(_PARAMS, x), axis=-1))
    np.testing.assert_array_equal(pred, jnp.argmax(sj.predict_proba(_PARAMS, x), axis=-1))

  def test_predict_proba(self):
    x = _batch(6, (2, 5, 4))
    p = sj.predict_proba(_PARAMS, x)
    assert p.shape == (2, 5, 3)
    assert p.dtype == jnp.float32
    np.testing.assert_allclose(jnp.sum(p, axis=-1), np.ones((2, 5)), rtol=1e-6)
    assert jnp.all(p >= 0)
    np.testing.assert_allclose(p, _np_softmax(x.astype(np.float64) @ _W + _B), rtol=1e-5,
                               atol=1e-7)

  def test_predict_proba_hand_value(self):
    # Logits [1.5, 1.5, -2]: probabilities [e^3.5, e^3.5, 1] / (2 e^3.5 + 1).
    p = sj.predict_proba(_PARAMS, jnp.array([0.0, 1.0, 0.0, -1.0]))
    z = 2 * np.exp(3.5) + 1
    np.testing.assert_allclose(p, [np.exp(3.5) / z, np.exp(3.5) / z, 1 / z], rtol=1e-6)

  def test_extreme_logits_are_stable(self):
    W = jnp.array([[1e4, -1e4, 0.0],
                   [-1e4, 0.0, 1e4],
                   [0.0, 0.0, 0.0],
                   [0.0, 0.0, 0.0]])
    params = sj.Params(W=W, b=jnp.zeros(3))
    x = jnp.array([[1.0, 0.0, 0.0, 0.0],    # logits [1e4, -1e4, 0]
                   [0.0, 1.0, 0.0, 0.0],    # [-1e4, 0, 1e4]
                   [-1.0, 0.0, 0.0, 0.0]])  # [-1e4, 1e4, 0]
    np.testing.assert_array_equal(sj.logits(params, x), [[1e4, -1e4, 0], [-1e4, 0, 1e4],
                                                         [-1e4, 1e4, 0]])
    p = sj.predict_proba(params, x)
    assert jnp.all(jnp.isfinite(p)), p
    np.testing.assert_array_equal(p, np.eye(3)[[0, 2, 1]])
    np.testing.assert_array_equal(sj.predict(params, x), [0, 2, 1])
    np.testing.assert_array_equal(jnp.argmax(p, axis=-1), [0, 2, 1])


  def test_predict_proba_gradients(self, x64):
    params = sj.Params(W=jnp.asarray(_W, jnp.float64), b=jnp.asarray(_B, jnp.float64))
    x = jnp.asarray(_batch(10, (3, 4)), jnp.float64)
    check_grads(jax.jit(sj.predict_proba), (params, x), order=2, modes=("rev",))
    # Closed form (forward mode), one example: dp/db = diag(p) − ppᵀ = H, dp/dx = H Wᵀ, dp_j/dW_ik = x_i H_jk.
    p = np.asarray(sj.predict_proba(params, x[0]))
    h = np.diag(p) - np.outer(p, p)
    jp, jx = jax.jit(jax.jacfwd(sj.predict_proba, argnums=(0, 1)))(params, x[0])
    np.testing.assert_allclose(jp.b, h, atol=1e-14)
    np.testing.assert_allclose(jx, h @ _W.T, atol=1e-14)
    np.testing.assert_allclose(jp.W, np.einsum("i,jk->jik", np.asarray(x[0]), h), atol=1e-14)

  def test_predict_proba_at_extreme_logits(self):
    # One-hot x picks a row of W: logits ±1e4, ±3e38 (a tie among them) and a −inf bias (a class
    # switched off), exact; probabilities and their derivatives are those of the limit, finite.
    W = jnp.array([[1e4, -1e4, 0.0], [3e38, -3e38, 0.0], [3e38, 3e38, 0.0], [-3e38, 0.0, 1.0]])
    b = jnp.array([0.0, 0.0, -jnp.inf])
    params = sj.Params(W=W, b=b)
    x = jnp.eye(4)
    o = sj.logits(params, x)
    np.testing.assert_array_equal(o, np.asarray(W) + np.asarray(b))
    p = jax.jit(sj.predict_proba)(params, x)
    np.testing.assert_array_equal(p, [[1, 0, 0], [1, 0, 0], [0.5, 0.5, 0], [0, 1, 0]])
    np.testing.assert_array_equal(sj.predict(params, x), [0, 0, 0, 1])
    h = np.asarray(p)[:, :, None] * (np.eye(3) - np.asarray(p)[:, None, :])  # diag(p) − ppᵀ
    for jac in (jax.jacfwd, jax.jacrev):
      jp = jax.jit(jac(sj.predict_proba))(params, x)  # d p_nj / d b_k, d p_nj / d W_ik
      for g in jax.tree.leaves(jp):
        assert np.all(np.isfinite(g))
      np.testing.assert_allclose(jp.b, h, atol=1e-7)
      np.testing.assert_allclose(jp.W, np.einsum("ni,njk->njik", np.eye(4), h), atol=1e-7)

  def test_a_nan_feature_makes_its_probabilities_nan(self):
    x = jnp.array([[1.0, 2.0, jnp.nan, 0.0], [1.0, 0.0, 0.0, 0.0]])
    p = np.asarray(jax.jit(sj.predict_proba)(_PARAMS, x))
    assert np.all(np.isnan(p[0])) and np.all(np.isfinite(p[1]))


@pytest.mark.xfail(strict=True, reason=(
    "known, left alone: sj.logits sums x·W in plain float32, so partial sums of ±3e38 features "
    "overflow (layers.dense_logits scales x by a power of two first); the hot training path"))
def test_logits_of_features_near_the_float_max():
  params = sj.Params(W=jnp.ones((4, 2)).at[:, 1].set(0.0), b=jnp.zeros(2))
  x = jnp.array([3e38, 3e38, -3e38, -3e38])  # x·W = [0, 0] exactly; got [inf, 0]
  np.testing.assert_array_equal(sj.logits(params, x), [0.0, 0.0])
  np.testing.assert_array_equal(sj.predict_proba(params, x), [0.5, 0.5])


# ------------------------------------------------------------------------------------------------
# Training gradient: the closed form of §4.1.3.
# ------------------------------------------------------------------------------------------------


class TestLossGradient:

  def test_grad_of_mean_cross_entropy(self):
    x = jnp.asarray(_batch(7, (8, 4)))
    y = jnp.array([0, 1, 2, 2, 1, 0, 0, 2])
    params = sj.Params(W=jnp.asarray(_batch(8, (4, 3))), b=jnp.asarray(_batch(9, (3,))))

    def loss(params):
      return sj.cross_entropy(sj.logits(params, x), y, reduction="mean")

    grads = jax.jit(jax.grad(loss))(params)
    assert isinstance(grads, sj.Params)
    # Closed form: dW = Xᵀ(softmax(O) − Y)/n, db = mean(softmax(O) − Y), Y one-hot.
    x64 = np.asarray(x, np.float64)
    o = x64 @ np.asarray(params.W, np.float64) + np.asarray(params.b, np.float64)
    delta = _np_softmax(o) - np.eye(3)[np.asarray(y)]
    np.testing.assert_allclose(grads.W, x64.T @ delta / len(x), atol=1e-6)
    np.testing.assert_allclose(grads.b, delta.mean(axis=0), atol=1e-6)
    # The same, computed with sj.softmax and sj.one_hot in float32.
    delta32 = sj.softmax(sj.logits(params, x)) - sj.one_hot(y, 3)
    np.testing.assert_allclose(grads.W, x.T @ delta32 / len(x), atol=1e-6)
    np.testing.assert_allclose(grads.b, jnp.mean(delta32, axis=0), atol=1e-6)



# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------


class TestBadInput:

  def test_wrong_feature_count_names_both_shapes(self):
    with pytest.raises(ValueError) as excinfo:
      sj.logits(_PARAMS, jnp.ones((2, 5)))
    assert "(2, 5)" in str(excinfo.value)
    assert "(4, 3)" in str(excinfo.value)
    with pytest.raises(ValueError, match=r"\(5,\)"):
      sj.predict(_PARAMS, jnp.ones(5))
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
      sj.predict_proba(_PARAMS, jnp.ones((3, 2)))

  def test_scalar_x(self):
    with pytest.raises(ValueError):
      sj.logits(_PARAMS, jnp.array(1.0))

  def test_one_dimensional_weights(self):
    with pytest.raises(ValueError, match="W"):
      sj.logits(sj.Params(W=jnp.ones(4), b=jnp.zeros(())), jnp.ones(4))
    with pytest.raises(ValueError, match="W"):
      sj.logits(sj.Params(W=jnp.ones(4), b=jnp.zeros(4)), jnp.ones(4))

  def test_bias_of_wrong_length(self):
    with pytest.raises(ValueError, match=r"\(4,\)"):
      sj.logits(sj.Params(W=_PARAMS.W, b=jnp.zeros(4)), jnp.ones(4))
    with pytest.raises(ValueError, match="b"):
      sj.logits(sj.Params(W=_PARAMS.W, b=jnp.zeros((1, 3))), jnp.ones(4))

  def test_integer_x(self):
    with pytest.raises(TypeError, match="floating"):
      sj.logits(_PARAMS, jnp.array([1, 2, 3, 4]))
    with pytest.raises(TypeError):
      sj.predict(_PARAMS, np.ones((2, 4), np.int32))

  def test_errors_under_jit(self):
    with pytest.raises(ValueError):
      jax.jit(sj.logits)(_PARAMS, jnp.ones((2, 5)))
    with pytest.raises(TypeError):
      jax.jit(sj.predict_proba)(_PARAMS, jnp.ones((2, 4), jnp.int32))
