"""Label encodings: one-hot vectors of class ids, and a one-hot encoder of categories (§4.1.1).

A label ``y`` of ``q`` classes becomes the vector with a 1 at ``y`` and 0 elsewhere: the text's
"cat", "chicken", "dog" become ``(1, 0, 0)``, ``(0, 1, 0)``, ``(0, 0, 1)``. One-hot vectors carry
no order between categories, unlike the integers ``{1, 2, 3}``.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Hashable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softmax_jax import _validation as v


def one_hot(labels: ArrayLike, num_classes: int, *, dtype=jnp.float32, axis: int = -1) -> jax.Array:
  """One-hot encodes integer class ids.

  Unlike ``jax.nn.one_hot``, which silently returns a zero row for an id outside
  ``[0, num_classes)``, an out-of-range id is an error (eagerly, or under
  :func:`softmax_jax.checked`; under a plain ``jit`` its row is NaN).

  Args:
    labels: integer class ids, any shape.
    num_classes: ``q >= 1``.
    dtype: dtype of the result.
    axis: where the new class axis goes in the result.

  Returns:
    Array of shape ``labels.shape`` with a class axis of length ``q`` inserted at ``axis``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1.1.
  """
  labels = v.check_integer_labels(labels)
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or \
      num_classes < 1:
    raise ValueError(f"num_classes must be a positive int; got {num_classes!r}.")
  axis = v.normalize_axis(axis, labels.ndim + 1)
  v.check_class_ids(labels, int(num_classes))
  return _one_hot(v.widen_ids(labels), num_classes=int(num_classes), dtype=jnp.dtype(dtype),
                  axis=axis)


@functools.partial(jax.jit, static_argnames=("num_classes", "dtype", "axis"))
def _one_hot(labels, *, num_classes, dtype, axis):
  out = jax.nn.one_hot(labels, num_classes, dtype=dtype, axis=axis)
  if jnp.issubdtype(dtype, jnp.floating):
    ok = (labels >= 0) & (labels < num_classes)
    out = jnp.where(jnp.expand_dims(ok, axis), out, jnp.nan)
  return out


class CategoryEncoder:
  """One-hot encoder of categorical values, such as strings, for one feature.

  ``fit`` learns the vocabulary (sorted, as scikit-learn's ``OneHotEncoder`` does); ``transform``
  maps values to one-hot rows; ``inverse_transform`` maps rows back. Using the encoder before
  ``fit`` raises an error that says so (the source text's snippet calls ``transform`` on an
  unfitted encoder). An unknown value raises an error naming it, unless the encoder was built
  with ``handle_unknown="zeros"``, which encodes it as an all-zero row.

  Example::

    enc = CategoryEncoder("animal").fit(["cat", "chicken", "dog", "cat", "dog"])
    enc.transform(["dog", "cat"])   # [[0, 0, 1], [1, 0, 0]]
    enc.feature_names               # ('animal_cat', 'animal_chicken', 'animal_dog')

  Args:
    name: the feature's name, the prefix of the feature names (``animal`` gives
      ``animal_cat``). Defaults to ``x0``, as scikit-learn names an unnamed first feature.
    handle_unknown: ``"error"`` (default) or ``"zeros"``.
    dtype: dtype of the one-hot arrays.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1.1.
  """

  def __init__(self, name: str = "x0", *, handle_unknown: str = "error", dtype=jnp.float32):
    if not isinstance(name, str) or not name:
      raise TypeError(f"name must be a non-empty str; got {name!r}.")
    if handle_unknown not in ("error", "zeros"):
      raise ValueError(f"handle_unknown must be 'error' or 'zeros'; got {handle_unknown!r}.")
    self.name = name
    self.handle_unknown = handle_unknown
    self.dtype = jnp.dtype(dtype)
    self._categories: tuple[Hashable, ...] | None = None
    self._index: dict[Hashable, int] = {}

  def __repr__(self) -> str:
    state = "unfitted" if self._categories is None else f"categories={list(self._categories)}"
    return f"CategoryEncoder(name={self.name!r}, {state})"

  @staticmethod
  def _values(values: Iterable[Any]) -> list[Any]:
    if isinstance(values, (str, bytes)):
      kind = type(values).__name__
      raise TypeError(f"values must be a sequence of categories, not a single {kind} "
                      f"{values!r}; wrap it in a list.")
    if not isinstance(values, np.ndarray):
      values = list(values)  # sets, generators, tuples
    arr = np.asarray(values, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
      arr = arr[:, 0]
    if arr.ndim != 1:
      raise ValueError(f"values must be 1-D (or of shape (n, 1)); got shape {arr.shape}.")
    out = [a.item() if isinstance(a, np.generic) else a for a in arr]
    for i, a in enumerate(out):
      if not isinstance(a, Hashable) or a is None or (isinstance(a, float) and np.isnan(a)):
        raise ValueError(f"value {a!r} at index {i} is not a valid category.")
    return out

  def _require_fitted(self, method: str) -> tuple[Hashable, ...]:
    if self._categories is None:
      raise RuntimeError(f"CategoryEncoder.{method} was called before fit: call "
                         f".fit(values) first (or .fit_transform(values)) so that the encoder "
                         f"learns its categories.")
    return self._categories

  def fit(self, values: Iterable[Any]) -> CategoryEncoder:
    """Learns the sorted vocabulary of ``values``; returns ``self``."""
    vals = self._values(values)
    if not vals:
      raise ValueError("cannot fit a CategoryEncoder on no values.")
    kinds = {type(a) for a in vals}
    try:
      cats = tuple(sorted(set(vals)))
    except TypeError:
      names = sorted(k.__name__ for k in kinds)
      raise TypeError(f"categories must be of one sortable kind; got {names}.") from None
    self._categories = cats
    self._index = {c: i for i, c in enumerate(cats)}
    return self

  @property
  def categories(self) -> tuple[Hashable, ...]:
    """The learned categories, sorted; their order is the order of the one-hot columns."""
    return self._require_fitted("categories")

  @property
  def num_classes(self) -> int:
    return len(self._require_fitted("num_classes"))

  @property
  def feature_names(self) -> tuple[str, ...]:
    """One name per column, ``f"{name}_{category}"``, e.g. ``animal_cat``."""
    return tuple(f"{self.name}_{c}" for c in self._require_fitted("feature_names"))

  def get_feature_names_out(self) -> np.ndarray:
    """The feature names as an array of str, as scikit-learn spells it."""
    return np.asarray(self.feature_names, dtype=object)

  def encode(self, values: Iterable[Any]) -> np.ndarray:
    """Maps values to class ids (int32); unknown values are -1 with ``handle_unknown="zeros"``."""
    self._require_fitted("encode")
    vals = self._values(values)
    ids = np.fromiter((self._index.get(a, -1) for a in vals), dtype=np.int32, count=len(vals))
    unknown = np.flatnonzero(ids < 0)
    if unknown.size and self.handle_unknown == "error":
      examples = sorted({repr(vals[i]) for i in unknown[:5]})
      raise ValueError(f"unknown categor{'y' if len(examples) == 1 else 'ies'} "
                       f"{', '.join(examples)} at index {int(unknown[0])} ({unknown.size} "
                       f"unknown in all); known: {list(self._categories)}. Build the encoder "
                       f"with handle_unknown='zeros' to encode them as all-zero rows.")
    return ids

  def transform(self, values: Sequence[Any]) -> jax.Array:
    """One-hot rows of shape ``(n, q)``; an unknown value is an error or, if opted in, zeros."""
    ids = self.encode(values)
    out = np.zeros((ids.shape[0], self.num_classes), dtype=self.dtype)
    rows = np.flatnonzero(ids >= 0)
    out[rows, ids[rows]] = 1
    return jnp.asarray(out)

  def fit_transform(self, values: Sequence[Any]) -> jax.Array:
    return self.fit(values).transform(values)

  def inverse_transform(self, onehot: ArrayLike) -> list[Any]:
    """Maps one-hot rows ``(n, q)`` back to categories.

    Every row must be one-hot (a single 1, zeros elsewhere); an all-zero row maps to ``None``
    when ``handle_unknown="zeros"`` and is an error otherwise. Scores or probabilities are not
    accepted: take their argmax with :func:`softmax_jax.predict` and index :attr:`categories`.
    """
    cats = self._require_fitted("inverse_transform")
    arr = np.asarray(onehot)
    if arr.ndim != 2 or arr.shape[1] != len(cats):
      raise ValueError(f"expected one-hot rows of shape (n, {len(cats)}); got {arr.shape}.")
    ones, zeros = arr == 1, arr == 0
    n_ones = ones.sum(axis=1)
    valid = (ones | zeros).all(axis=1) & (n_ones <= 1)
    if self.handle_unknown == "error":
      valid &= n_ones == 1
    if not valid.all():
      i = int(np.flatnonzero(~valid)[0])
      raise ValueError(f"row {i} is not one-hot: {arr[i].tolist()}.")
    idx = ones.argmax(axis=1)
    return [cats[j] if k == 1 else None for j, k in zip(idx, n_ones, strict=True)]
