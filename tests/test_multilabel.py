"""Tests for softmax_jax.multilabel: digit tags, the label powerset and the multi-label metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics

import softmax_jax as sj
from softmax_jax import multilabel


def test_digit_tags_by_hand():
  tags, names = multilabel.digit_tags(jnp.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
  assert names == ("is_even", "is_prime", "is_greater_than_4", "has_a_closed_loop")
  np.testing.assert_array_equal(tags, [
      [1, 0, 0, 1],  # 0: even, closed loop
      [0, 0, 0, 0],  # 1
      [1, 1, 0, 0],  # 2: even and prime
      [0, 1, 0, 0],  # 3
      [1, 0, 0, 0],  # 4: open at the top in handwriting
      [0, 1, 1, 0],  # 5
      [1, 0, 1, 1],  # 6
      [0, 1, 1, 0],  # 7: the same tags as 5
      [1, 0, 1, 1],  # 8: the same tags as 6
      [0, 0, 1, 1],  # 9
  ])
  assert tags.dtype == jnp.int32
  closed_four, _ = multilabel.digit_tags(jnp.array([4]), closed_loop_digits=(0, 4, 6, 8, 9))
  np.testing.assert_array_equal(closed_four, [[1, 0, 0, 1]])
  batched = jax.jit(lambda y: multilabel.digit_tags(y)[0])(jnp.array([[3, 8], [9, 0]]))
  assert batched.shape == (2, 2, 4)


@pytest.mark.parametrize("labels, kwargs, error, match", [
    (jnp.array([3, 10]), {}, ValueError, r"digits in \[0, 9\]; got 10 at index \[1\]"),
    (jnp.array([-1, 2]), {}, ValueError, "got -1"),
    (jnp.array([1.0, 2.0]), {}, TypeError, "integer"),
    (jnp.array([1]), {"closed_loop_digits": (0, 12)}, ValueError, "closed_loop_digits.*12"),
    (jnp.array([1]), {"closed_loop_digits": 8}, TypeError, "sequence"),
])
def test_digit_tags_bad_input(labels, kwargs, error, match):
  with pytest.raises(error, match=match):
    multilabel.digit_tags(labels, **kwargs)


def test_powerset_round_trip_by_hand():
  tags = jnp.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1], [1, 0, 1, 1]])
  ids = jax.jit(multilabel.powerset_encode)(tags)
  np.testing.assert_array_equal(ids, [0, 1, 10, 15, 13])  # tag l is bit l
  np.testing.assert_array_equal(multilabel.powerset_decode(ids, num_tags=4), tags)
  every = jnp.arange(16)
  np.testing.assert_array_equal(
      multilabel.powerset_encode(multilabel.powerset_decode(every, num_tags=4)), every)
  np.testing.assert_array_equal(multilabel.powerset_encode(tags.astype(bool)), ids)
  # The digits use 8 of the 16 tag vectors: 5 ≡ 7 and 6 ≡ 8.
  digit_ids = multilabel.powerset_encode(multilabel.digit_tags(jnp.arange(10))[0])
  np.testing.assert_array_equal(digit_ids, [9, 0, 3, 2, 1, 6, 13, 6, 13, 12])
  assert len(set(np.asarray(digit_ids).tolist())) == 8


def test_powerset_and_digit_tags_at_integer_extremes():
  # The widest powerset (30 tags: ids up to 2^30 − 1 in int32) round-trips; narrow unsigned and
  # signed ids and labels are widened before the range checks, never wrapped (255 is not −1).
  tags = jnp.ones((2, 30), jnp.int32).at[1, :29].set(0)
  ids = jax.jit(multilabel.powerset_encode)(tags)
  np.testing.assert_array_equal(ids, [2**30 - 1, 2**29])
  np.testing.assert_array_equal(multilabel.powerset_decode(ids, num_tags=30), tags)
  np.testing.assert_array_equal(multilabel.powerset_decode(jnp.array([255], jnp.uint8), num_tags=8),
                                [[1] * 8])
  with pytest.raises(ValueError, match=r"\[0, 1073741824\); got 1073741824"):
    multilabel.powerset_decode(jnp.array([2**30]), num_tags=30)
  for bad in (jnp.array([255], jnp.uint8), jnp.array([-128], jnp.int8)):
    with pytest.raises(ValueError, match=f"got {int(bad[0])} at index"):
      multilabel.digit_tags(bad)


@pytest.mark.parametrize("call, error, match", [
    (lambda: multilabel.powerset_encode(jnp.array([[0, 2]])), ValueError, "0 or 1; got 2"),
    (lambda: multilabel.powerset_encode(jnp.array([[0.0, 1.0]])), TypeError, "float32"),
    (lambda: multilabel.powerset_encode(jnp.zeros((2, 31), jnp.int32)), ValueError, "1 to 30"),
    (lambda: multilabel.powerset_encode(jnp.zeros((2, 0), jnp.int32)), ValueError, "1 to 30"),
    (lambda: multilabel.powerset_encode(jnp.int32(1)), ValueError, "scalar"),
    (lambda: multilabel.powerset_decode(jnp.array([16]), num_tags=4), ValueError,
     r"\[0, 16\); got 16"),
    (lambda: multilabel.powerset_decode(jnp.array([-1]), num_tags=4), ValueError, "got -1"),
    (lambda: multilabel.powerset_decode(jnp.array([1]), num_tags=0), ValueError, "num_tags"),
    (lambda: multilabel.powerset_decode(jnp.array([1.0]), num_tags=2), TypeError, "integer"),
])
def test_powerset_bad_input(call, error, match):
  with pytest.raises(error, match=match):
    call()


class TestMetrics:

  def setup_method(self):
    self.y_true = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    self.y_pred = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 1, 0]])
    # By hand. Tag 0: TP 2, FP 1, FN 0 -> 4/5. Tag 1: TP 1, FP 0, FN 1 -> 2/3.
    # Tag 2: TP 2, FP 0, FN 1 -> 4/5. Tag 3: never true, never predicted -> 0/0.
    self.f1 = [0.8, 2 / 3, 0.8, 0.0]
    self.hamming = 3 / 16  # entries (0, 2), (2, 1) and (3, 0) are wrong
    self.subset = 1 / 4  # only row 1 is exactly right

  def test_hand_values(self):
    np.testing.assert_allclose(multilabel.per_tag_f1(self.y_true, self.y_pred), self.f1,
                               rtol=1e-6)
    np.testing.assert_allclose(multilabel.per_tag_f1(self.y_true, self.y_pred,
                                                     zero_division=1.0)[3], 1.0)
    np.testing.assert_allclose(multilabel.hamming_loss(self.y_true, self.y_pred), self.hamming)
    np.testing.assert_allclose(multilabel.subset_accuracy(self.y_true, self.y_pred), self.subset)

  def test_against_sklearn(self):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, (50, 5))
    y_pred = np.where(rng.random((50, 5)) < 0.8, y_true, 1 - y_true)
    y_pred[:, 4] = 0
    y_true[:, 4] = 0  # a 0/0 tag
    for zero_division in (0.0, 1.0):
      np.testing.assert_allclose(
          multilabel.per_tag_f1(y_true, y_pred, zero_division=zero_division),
          metrics.f1_score(y_true, y_pred, average=None, zero_division=zero_division), rtol=1e-6)
    np.testing.assert_allclose(multilabel.hamming_loss(y_true, y_pred),
                               metrics.hamming_loss(y_true, y_pred), rtol=1e-6)
    np.testing.assert_allclose(multilabel.subset_accuracy(y_true, y_pred),
                               metrics.accuracy_score(y_true, y_pred), rtol=1e-6)

  def test_perfect_and_inverted(self):
    assert multilabel.hamming_loss(self.y_true, self.y_true) == 0
    assert multilabel.subset_accuracy(self.y_true, self.y_true) == 1
    assert multilabel.hamming_loss(self.y_true, 1 - self.y_true) == 1
    np.testing.assert_allclose(multilabel.per_tag_f1(self.y_true, 1 - self.y_true)[:3], 0)

  @pytest.mark.parametrize("kwargs, error, match", [
      ({"y_pred": np.zeros((4, 3), np.int32)}, ValueError, r"\(4, 4\) and \(4, 3\)"),
      ({"y_pred": np.full((4, 4), 2)}, ValueError, "y_pred must be 0 or 1; got 2"),
      ({"y_true": np.zeros((4, 4))}, TypeError, "y_true.*float64|y_true.*float32"),
      ({"y_true": np.zeros((0, 4), int), "y_pred": np.zeros((0, 4), int)}, ValueError, "n = 0"),
      ({"y_true": np.zeros(4, int), "y_pred": np.zeros(4, int)}, ValueError, r"\[n, L\]"),
  ])
  def test_bad_input(self, kwargs, error, match):
    args = {"y_true": self.y_true, "y_pred": self.y_pred} | kwargs
    for fn in (multilabel.per_tag_f1, multilabel.hamming_loss, multilabel.subset_accuracy):
      with pytest.raises(error, match=match):
        fn(**args)

  def test_bad_zero_division(self):
    with pytest.raises(ValueError, match="zero_division.*2"):
      multilabel.per_tag_f1(self.y_true, self.y_pred, zero_division=2)

  def test_bad_values_under_jit_are_caught_by_checked(self):
    err, _ = jax.jit(sj.checked(multilabel.hamming_loss))(self.y_true, self.y_pred + 1)
    with pytest.raises(ValueError, match="0 or 1"):
      err.throw()
