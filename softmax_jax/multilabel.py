r"""Multi-label classification (D2L §4.1.1): tags, the label powerset, and their metrics.

When several labels can hold at once (the text's news article about entertainment, business and
space flight at the same time), a target is a vector ``t ∈ {0, 1}^L`` rather than one class. Two
classical reductions (Tsoumakas & Katakis 2007):

* binary relevance: ``L`` independent logistic outputs, trained with
  :func:`softmax_jax.sigmoid_cross_entropy`;
* the label powerset: one softmax over the ``2^L`` tag vectors, each read as the integer
  ``Σ_l t_l 2^l`` (:func:`powerset_encode`, :func:`powerset_decode`).

To have real multi-label targets without a new data set, :func:`digit_tags` derives four tags
from a handwritten digit: even, prime, greater than 4, and drawn with a closed loop.

Metrics, for ``n`` examples and ``L`` tags (``y`` the truth, ``ŷ`` the prediction, both 0/1):

.. math::
   F_1^{(l)} = \frac{2\,TP_l}{2\,TP_l + FP_l + FN_l}, \qquad
   \text{Hamming loss} = \frac{1}{nL}\sum_{i,l} [y_{il} \ne \hat y_{il}], \qquad
   \text{subset accuracy} = \frac1n \sum_i [y_i = \hat y_i].

References:
  Tsoumakas & Katakis, Multi-label classification: an overview, IJDWM 2007; Zhang et al., Dive
  into Deep Learning, §4.1.1 (multi-label classification).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softmax_jax import _validation as v

DIGIT_TAG_NAMES = ("is_even", "is_prime", "is_greater_than_4", "has_a_closed_loop")
PRIME_DIGITS = (2, 3, 5, 7)
CLOSED_LOOP_DIGITS = (0, 6, 8, 9)
"""Digits drawn with a closed loop. 4 is left out: in the handwritten digits (scikit-learn's
8×8 set, the mean image of a 4) it is written open at the top, as most people write it; in a
typeface with a closed-top 4 pass ``closed_loop_digits=(0, 4, 6, 8, 9)``. 2 is drawn without a loop
in the usual style."""
MAX_TAGS = 30  # 2^30 powerset classes already exceed any softmax one would build


def _check_digits(digits: Any, name: str) -> tuple[int, ...]:
  try:
    values = tuple(digits)
  except TypeError:
    raise TypeError(f"{name} must be a sequence of digits 0-9; got {digits!r}.") from None
  for d in values:
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 0 <= d <= 9:
      raise ValueError(f"{name} must hold digits 0-9; got {d!r} in {digits!r}.")
  return values


def digit_tag_table(*, closed_loop_digits: Any = CLOSED_LOOP_DIGITS) -> np.ndarray:
  """The ``[10, 4]`` 0/1 table of :data:`DIGIT_TAG_NAMES` for the digits 0-9 (row = digit)."""
  loops = _check_digits(closed_loop_digits, "closed_loop_digits")
  d = np.arange(10)
  return np.stack([d % 2 == 0, np.isin(d, PRIME_DIGITS), d > 4, np.isin(d, loops)],
                  -1).astype(np.int32)


def digit_tags(labels: ArrayLike, *, closed_loop_digits: Any = CLOSED_LOOP_DIGITS
               ) -> tuple[jax.Array, tuple[str, ...]]:
  """Four tags of each digit label: a real multi-label target built from a class label.

  ====================  ======================================================
  tag                   digits with the tag
  ====================  ======================================================
  ``is_even``           0, 2, 4, 6, 8
  ``is_prime``          2, 3, 5, 7
  ``is_greater_than_4`` 5, 6, 7, 8, 9
  ``has_a_closed_loop`` 0, 6, 8, 9 (``closed_loop_digits``; see :data:`CLOSED_LOOP_DIGITS`)
  ====================  ======================================================

  With the default loops, 5 and 7 share the tag vector (odd, prime, > 4, open), and so do 6 and 8
  (even, not prime, > 4, closed): 8 of the 16 possible tag vectors occur.

  Args:
    labels: integer digit labels in ``[0, 9]``, any shape ``[...]``.
    closed_loop_digits: the digits that get ``has_a_closed_loop``.

  Returns:
    ``(tags, names)``: int32 0/1 tags of shape ``[..., 4]`` and :data:`DIGIT_TAG_NAMES`.

  Raises:
    TypeError: non-integer labels. ValueError: a label outside ``[0, 9]`` (eagerly; under
    ``jit`` through :func:`softmax_jax.checked`), or a bad ``closed_loop_digits``.
  """
  table = jnp.asarray(digit_tag_table(closed_loop_digits=closed_loop_digits))
  labels = v.widen_ids(v.check_integer_labels(labels))
  v.check_all((labels >= 0) & (labels <= 9), labels,
              "labels must be digits in [0, 9]; got {value} at index {index} ({count} such).")
  return table[jnp.clip(labels, 0, 9)], DIGIT_TAG_NAMES


def _check_binary_matrix(tags: Any, name: str) -> jax.Array:
  tags = jnp.asarray(tags)
  if not (jnp.issubdtype(tags.dtype, jnp.integer) or tags.dtype == jnp.bool_):
    raise TypeError(f"{name} must be 0/1 integers or booleans; got dtype {tags.dtype}.")
  if tags.ndim == 0:
    raise ValueError(f"{name} must have a tag axis (last); got a scalar.")
  v.check_all((tags == 0) | (tags == 1), tags,
              f"{name} must be 0 or 1; got {{value}} at index {{index}} ({{count}} such).")
  return tags.astype(jnp.int32)


def powerset_encode(tags: ArrayLike) -> jax.Array:
  r"""Each tag vector as one powerset class id: ``Σ_l t_l · 2^l`` (tag 0 is the lowest bit).

  Args:
    tags: 0/1 (integer or bool) of shape ``[..., L]``, ``1 <= L <= 30``.

  Returns:
    int32 class ids in ``[0, 2^L)``, shape ``[...]``; :func:`powerset_decode` inverts it.

  Raises:
    TypeError: a float dtype. ValueError: values other than 0/1, or ``L`` outside ``[1, 30]``.

  References:
    Tsoumakas & Katakis 2007 (the label powerset).
  """
  tags = _check_binary_matrix(tags, "tags")
  num_tags = tags.shape[-1]
  if not 1 <= num_tags <= MAX_TAGS:
    raise ValueError(f"tags must have 1 to {MAX_TAGS} tags on the last axis; got shape "
                     f"{tags.shape}.")
  bits = jnp.arange(num_tags, dtype=jnp.int32).reshape((1,) * (tags.ndim - 1) + (num_tags,))
  return jnp.sum(tags << bits, axis=-1)


def powerset_decode(ids: ArrayLike, *, num_tags: int) -> jax.Array:
  """The tag vector of each powerset class id: bit ``l`` of the id is tag ``l``.

  Args:
    ids: integer class ids in ``[0, 2^num_tags)``, any shape ``[...]``.
    num_tags: ``L``, in ``[1, 30]``.

  Returns:
    int32 0/1 tags of shape ``[..., L]``.

  Raises:
    TypeError: non-integer ids. ValueError: ``num_tags`` out of range, or an id outside
    ``[0, 2^L)``.
  """
  if isinstance(num_tags, bool) or not isinstance(num_tags, numbers.Integral) \
      or not 1 <= num_tags <= MAX_TAGS:
    raise ValueError(f"num_tags must be an int in [1, {MAX_TAGS}]; got {num_tags!r}.")
  ids = v.widen_ids(v.check_integer_labels(ids, "ids"))
  v.check_class_ids(ids, 2**num_tags, name="ids")
  bits = jnp.arange(num_tags, dtype=ids.dtype).reshape((1,) * ids.ndim + (num_tags,))
  return ((ids[..., None] >> bits) & 1).astype(jnp.int32)


def _check_pair(y_true: Any, y_pred: Any) -> tuple[jax.Array, jax.Array]:
  y_true = _check_binary_matrix(y_true, "y_true")
  y_pred = _check_binary_matrix(y_pred, "y_pred")
  if y_true.shape != y_pred.shape or y_true.ndim != 2:
    raise ValueError(f"y_true and y_pred must both be [n, L]; got {y_true.shape} and "
                     f"{y_pred.shape}.")
  if y_true.shape[0] == 0:
    raise ValueError("y_true and y_pred have no examples (n = 0): the metrics are undefined.")
  return y_true, y_pred


def per_tag_f1(y_true: ArrayLike, y_pred: ArrayLike, *, zero_division: float = 0.0) -> jax.Array:
  r"""F1 of each tag: ``2TP / (2TP + FP + FN)``, the harmonic mean of precision and recall.

  The 0/0 convention: a tag that is neither true nor predicted anywhere (``2TP + FP + FN = 0``)
  gets ``zero_division``, 0 by default as in scikit-learn's ``f1_score(average=None)``; pass
  ``1.0`` to count "never present, never predicted" as perfect.

  Args:
    y_true: 0/1 truth, shape ``[n, L]``.
    y_pred: 0/1 predictions, shape ``[n, L]``.
    zero_division: the value for 0/0, in ``[0, 1]``.

  Returns:
    float32 ``[L]``.
  """
  y_true, y_pred = _check_pair(y_true, y_pred)
  if isinstance(zero_division, bool) or not isinstance(zero_division, numbers.Real) \
      or not 0 <= zero_division <= 1:
    raise ValueError(f"zero_division must be a number in [0, 1]; got {zero_division!r}.")
  tp = jnp.sum(y_true * y_pred, 0)
  denominator = jnp.sum(y_true, 0) + jnp.sum(y_pred, 0)  # 2TP + FP + FN
  safe = jnp.where(denominator > 0, denominator, 1)
  return jnp.where(denominator > 0, 2 * tp / safe, zero_division).astype(jnp.float32)


def hamming_loss(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
  """The fraction of (example, tag) entries predicted wrong, in ``[0, 1]``; float32 scalar.

  Args:
    y_true: 0/1 truth, shape ``[n, L]``.
    y_pred: 0/1 predictions, shape ``[n, L]``.
  """
  y_true, y_pred = _check_pair(y_true, y_pred)
  return jnp.mean(y_true != y_pred, dtype=jnp.float32)


def subset_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
  """The fraction of examples whose whole tag vector is right (exact match); float32 scalar.

  Args:
    y_true: 0/1 truth, shape ``[n, L]``.
    y_pred: 0/1 predictions, shape ``[n, L]``.
  """
  y_true, y_pred = _check_pair(y_true, y_pred)
  return jnp.mean(jnp.all(y_true == y_pred, axis=-1), dtype=jnp.float32)
