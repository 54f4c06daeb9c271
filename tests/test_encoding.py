"""Tests for `softmax_jax.one_hot` and `softmax_jax.CategoryEncoder`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj

# ------------------------------------------------------------------------------------------------
# one_hot
# ------------------------------------------------------------------------------------------------


class TestOneHot:

  def test_hand_vector(self):
    out = sj.one_hot(jnp.array([0, 2, 1]), 3)
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert out.dtype == jnp.float32
    assert out.shape == (3, 3)

  def test_scalar_label(self):
    np.testing.assert_array_equal(sj.one_hot(2, 4), [0, 0, 1, 0])

  def test_dtype(self):
    out = sj.one_hot(jnp.array([1, 0]), 2, dtype=jnp.int32)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
    assert sj.one_hot(jnp.array([1, 0]), 2, dtype=jnp.bfloat16).dtype == jnp.bfloat16

  def test_axis_zero_equals_moveaxis(self):
    labels = jnp.array([[0, 2, 1], [1, 1, 0]])
    out = sj.one_hot(labels, 3, axis=0)
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out, np.moveaxis(np.asarray(sj.one_hot(labels, 3)), -1, 0))
    # Hand check: out[c, i, j] = [labels[i, j] == c].
    np.testing.assert_array_equal(out, np.arange(3)[:, None, None] == np.asarray(labels)[None])

  def test_middle_axis(self):
    labels = jnp.array([[0, 2, 1], [1, 1, 0]])
    out = sj.one_hot(labels, 3, axis=1)
    np.testing.assert_array_equal(out, np.moveaxis(np.asarray(sj.one_hot(labels, 3)), -1, 1))

  def test_equals_jax_nn_one_hot_for_valid_ids(self):
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 5, size=(2, 3)), jnp.int32)
    np.testing.assert_array_equal(sj.one_hot(labels, 5), jax.nn.one_hot(labels, 5))
    np.testing.assert_array_equal(sj.one_hot(labels, 5, axis=0), jax.nn.one_hot(labels, 5, axis=0))

  def test_rows_sum_to_one(self):
    labels = jnp.arange(6) % 4
    out = sj.one_hot(labels, 4)
    np.testing.assert_array_equal(jnp.sum(out, axis=-1), np.ones(6))
    np.testing.assert_array_equal(jnp.argmax(out, axis=-1), labels)

  @pytest.mark.parametrize("bad", [3, -1])
  def test_out_of_range_raises_eagerly(self, bad):
    with pytest.raises(ValueError, match=rf"got {bad}\b"):
      sj.one_hot(jnp.array([0, bad, 1]), 3)

  def test_out_of_range_reported_under_checked_jit(self):
    fn = jax.jit(sj.checked(lambda y: sj.one_hot(y, 3)))
    err, out = fn(jnp.array([0, 2, 1]))
    assert err.get() is None
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    err, _ = fn(jnp.array([0, 3, 1]))
    assert err.get() is not None
    assert "class ids in [0, 3)" in err.get()
    assert "got 3" in err.get()
    with pytest.raises(ValueError, match="got 3"):
      err.throw()
    err, _ = fn(jnp.array([0, 1, -1]))
    assert err.get() is not None and "got -1" in err.get()

  def test_out_of_range_row_is_nan_under_plain_jit(self):
    out = jax.jit(lambda y: sj.one_hot(y, 3))(jnp.array([0, 3, -1, 2]))
    np.testing.assert_array_equal(out[0], [1, 0, 0])
    np.testing.assert_array_equal(out[3], [0, 0, 1])
    # Not a silent all-zero row, as jax.nn.one_hot gives.
    assert jnp.all(jnp.isnan(out[1])), out[1]
    assert jnp.all(jnp.isnan(out[2])), out[2]

  def test_float_labels(self):
    with pytest.raises(TypeError, match="integer"):
      sj.one_hot(jnp.array([0.0, 1.0]), 3)

  @pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
  def test_bad_num_classes(self, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
      sj.one_hot(jnp.array([0, 1]), num_classes)

  def test_axis_out_of_range(self):
    with pytest.raises(ValueError, match="axis"):
      sj.one_hot(jnp.array([0, 1]), 3, axis=2)


# Labels stored in a narrow integer dtype (uint8 bytes for a 256-class byte model, int8, int16)
# with a num_classes that does not fit that dtype. Valid ids must encode as jax.nn.one_hot does.
_NARROW = [(jnp.uint8, 256, [0, 50, 255]), (jnp.int8, 200, [0, 5, 127]),
           (jnp.int16, 40000, [0, 5, 32767])]


class TestOneHotNarrowIntegerLabels:

  @pytest.mark.parametrize("dtype,num_classes,ids", _NARROW)
  def test_eager(self, dtype, num_classes, ids):
    labels = jnp.array(ids, dtype)
    expected = jax.nn.one_hot(jnp.array(ids, jnp.int32), num_classes)
    np.testing.assert_array_equal(sj.one_hot(labels, num_classes), expected)

  @pytest.mark.parametrize("dtype,num_classes,ids", _NARROW)
  def test_plain_jit_gives_no_nan_for_valid_ids(self, dtype, num_classes, ids):
    labels = jnp.array(ids, dtype)
    out = jax.jit(lambda y: sj.one_hot(y, num_classes))(labels)
    np.testing.assert_array_equal(out, jax.nn.one_hot(jnp.array(ids, jnp.int32), num_classes))

  @pytest.mark.parametrize("dtype,num_classes,ids", _NARROW)
  def test_checked_jit_reports_no_error_for_valid_ids(self, dtype, num_classes, ids):
    err, _ = jax.jit(sj.checked(lambda y: sj.one_hot(y, num_classes)))(jnp.array(ids, dtype))
    assert err.get() is None, err.get()


# ------------------------------------------------------------------------------------------------
# CategoryEncoder
# ------------------------------------------------------------------------------------------------

_ANIMALS = ["cat", "chicken", "dog", "cat", "dog"]


class TestCategoryEncoder:

  def test_text_example(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    assert enc.categories == ("cat", "chicken", "dog")
    assert enc.num_classes == 3
    out = enc.transform(["cat", "chicken", "dog"])
    assert out.shape == (3, 3)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = enc.transform(_ANIMALS)
    assert out.shape == (5, 3)
    np.testing.assert_array_equal(
        out, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])

  def test_categories_are_sorted(self):
    enc = sj.CategoryEncoder().fit(["dog", "cat", "chicken", "dog"])
    assert enc.categories == ("cat", "chicken", "dog")
    np.testing.assert_array_equal(enc.transform(["dog"]), [[0, 0, 1]])

  def test_docstring_example(self):
    enc = sj.CategoryEncoder("animal").fit(_ANIMALS)
    np.testing.assert_array_equal(enc.transform(["dog", "cat"]), [[0, 0, 1], [1, 0, 0]])

  def test_feature_names(self):
    enc = sj.CategoryEncoder(name="animal").fit(_ANIMALS)
    assert enc.feature_names == ("animal_cat", "animal_chicken", "animal_dog")
    names = enc.get_feature_names_out()
    assert isinstance(names, np.ndarray)
    assert names.tolist() == ["animal_cat", "animal_chicken", "animal_dog"]

  def test_default_name_is_x0(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    assert enc.feature_names == ("x0_cat", "x0_chicken", "x0_dog")

  def test_fit_transform(self):
    enc = sj.CategoryEncoder()
    out = enc.fit_transform(_ANIMALS)
    np.testing.assert_array_equal(out, sj.CategoryEncoder().fit(_ANIMALS).transform(_ANIMALS))
    assert enc.categories == ("cat", "chicken", "dog")

  def test_encode_gives_class_ids(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    ids = enc.encode(["dog", "cat", "chicken"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 0, 1])
    # The one-hot rows are the one_hot of the ids.
    np.testing.assert_array_equal(enc.transform(_ANIMALS), sj.one_hot(enc.encode(_ANIMALS), 3))

  def test_inverse_transform_round_trips(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    assert enc.inverse_transform(enc.transform(_ANIMALS)) == _ANIMALS
    assert enc.inverse_transform(np.array([[0, 1, 0], [0, 0, 1]])) == ["chicken", "dog"]

  def test_transform_before_fit(self):
    # The source text's snippet makes this mistake: OneHotEncoder().transform without fit.
    enc = sj.CategoryEncoder()
    with pytest.raises(RuntimeError, match="fit"):
      enc.transform(["cat"])
    for method in (lambda: enc.categories, lambda: enc.feature_names, lambda: enc.num_classes,
                   lambda: enc.encode(["cat"]), lambda: enc.get_feature_names_out(),
                   lambda: enc.inverse_transform(np.eye(3))):
      with pytest.raises(RuntimeError, match="fit"):
        method()

  def test_unknown_category_raises_naming_it(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    with pytest.raises(ValueError, match="'bird'"):
      enc.transform(["cat", "bird"])
    with pytest.raises(ValueError, match="'bird'"):
      enc.encode(["bird"])

  def test_handle_unknown_zeros(self):
    enc = sj.CategoryEncoder(handle_unknown="zeros").fit(_ANIMALS)
    out = enc.transform(["cat", "bird", "dog"])
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(enc.encode(["bird", "dog"]), [-1, 2])
    assert enc.inverse_transform(out) == ["cat", None, "dog"]

  def test_all_zero_row_is_an_error_without_handle_unknown(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    with pytest.raises(ValueError, match="row 1"):
      enc.inverse_transform(np.array([[1, 0, 0], [0, 0, 0]]))

  def test_inverse_transform_rejects_non_one_hot(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    with pytest.raises(ValueError, match="row 0"):
      enc.inverse_transform(np.array([[0.2, 0.8, 0.0]]))
    with pytest.raises(ValueError, match="row 1"):
      enc.inverse_transform(np.array([[1, 0, 0], [1, 1, 0]]))
    with pytest.raises(ValueError, match="row 0"):
      enc.inverse_transform(np.array([[2, 0, 0]]))
    zeros = sj.CategoryEncoder(handle_unknown="zeros").fit(_ANIMALS)
    with pytest.raises(ValueError, match="row 0"):
      zeros.inverse_transform(np.array([[0.2, 0.8, 0.0]]))

  def test_inverse_transform_wrong_shape(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    with pytest.raises(ValueError, match="shape"):
      enc.inverse_transform(np.array([[1, 0]]))
    with pytest.raises(ValueError, match="shape"):
      enc.inverse_transform(np.array([1, 0, 0]))

  @pytest.mark.parametrize("single", ["cat", b"cat"])
  def test_single_string_raises_type_error(self, single):
    with pytest.raises(TypeError, match="wrap it in a list"):
      sj.CategoryEncoder().fit(single)
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    with pytest.raises(TypeError):
      enc.transform(single)

  def test_column_input_is_accepted(self):
    enc = sj.CategoryEncoder().fit([["cat"], ["dog"], ["chicken"]])
    assert enc.categories == ("cat", "chicken", "dog")
    out = enc.transform(np.array([["dog"], ["cat"]]))
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0]])

  def test_two_column_input_is_rejected(self):
    with pytest.raises(ValueError, match="shape"):
      sj.CategoryEncoder().fit([["cat", "dog"], ["dog", "cat"]])

  def test_integer_categories_are_sorted(self):
    enc = sj.CategoryEncoder("digit").fit([3, 1, 2, 3, 10])
    assert enc.categories == (1, 2, 3, 10)
    assert enc.feature_names == ("digit_1", "digit_2", "digit_3", "digit_10")
    np.testing.assert_array_equal(enc.transform([10, 1]), [[0, 0, 0, 1], [1, 0, 0, 0]])
    # numpy integers are the same categories as Python ints.
    np.testing.assert_array_equal(enc.transform(np.array([2, 3])), [[0, 1, 0, 0], [0, 0, 1, 0]])
    assert enc.inverse_transform(enc.transform([3, 10])) == [3, 10]

  def test_numpy_integer_fit(self):
    enc = sj.CategoryEncoder().fit(np.array([5, 4, 5], np.int64))
    assert enc.categories == (4, 5)
    np.testing.assert_array_equal(enc.transform([4]), [[1, 0]])

  def test_mixed_kinds_raise_type_error(self):
    with pytest.raises(TypeError, match="sortable"):
      sj.CategoryEncoder().fit(["cat", 1])

  def test_invalid_values(self):
    with pytest.raises(ValueError, match="no values"):
      sj.CategoryEncoder().fit([])
    with pytest.raises(ValueError, match="not a valid category"):
      sj.CategoryEncoder().fit(["cat", None])
    with pytest.raises(ValueError, match="not a valid category"):
      sj.CategoryEncoder().fit([1.0, float("nan")])

  def test_dtype(self):
    enc = sj.CategoryEncoder(dtype=jnp.int32).fit(_ANIMALS)
    out = enc.transform(["chicken"])
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, [[0, 1, 0]])

  def test_bad_constructor_arguments(self):
    with pytest.raises(ValueError, match="handle_unknown"):
      sj.CategoryEncoder(handle_unknown="ignore")
    with pytest.raises(TypeError, match="name"):
      sj.CategoryEncoder(name="")

  def test_refit_replaces_categories(self):
    enc = sj.CategoryEncoder().fit(_ANIMALS)
    enc.fit(["b", "a"])
    assert enc.categories == ("a", "b")
    with pytest.raises(ValueError, match="'cat'"):
      enc.transform(["cat"])

  def test_repr(self):
    enc = sj.CategoryEncoder("animal")
    assert "unfitted" in repr(enc)
    enc.fit(_ANIMALS)
    assert "chicken" in repr(enc)
