"""Data sets as device-ready arrays: features in [0, 1], flattened; labels int32.

``digits`` is the embedded default: the 1,797 real 8×8 handwritten digits (10 classes) that ship
inside scikit-learn, so it works offline. It is split 80/20, stratified, deterministically.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
  """A train/test split with its metadata.

  Attributes:
    x_train: ``(n_train, d)`` float32 features in ``[0, 1]``.
    y_train: ``(n_train,)`` int32 class ids.
    x_test: ``(n_test, d)`` float32.
    y_test: ``(n_test,)`` int32.
    class_names: one name per class.
    image_shape: the shape of one image before flattening.
    source: where the data came from.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: tuple[str, ...]
  image_shape: tuple[int, ...]
  source: str

  @property
  def num_features(self) -> int:
    return self.x_train.shape[1]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def stratified_split(y: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
  """Indices of a stratified split: each class keeps its share in train and test.

  Deterministic for a given ``seed``: every class is shuffled with its own generator stream and
  ``round(test_fraction · n_class)`` of it goes to test.
  """
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    n_test = int(round(test_fraction * idx.size))
    test.append(idx[:n_test])
    train.append(idx[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """The scikit-learn digits: 1,797 8×8 images of 0–9, pixels 0–16 scaled to [0, 1].

  Args:
    test_fraction: the share of each class held out for test.
    seed: the split's seed.

  Returns:
    A :class:`Dataset` of 64 features and 10 classes (1,437 train and 360 test at the defaults).

  References:
    Alpaydin & Kaynak, Optical Recognition of Handwritten Digits, UCI, 1998 (as shipped by
    scikit-learn's ``load_digits``).
  """
  from sklearn.datasets import load_digits as _sk_load_digits  # a heavy import; only here

  bunch = _sk_load_digits()
  x = (bunch.data / 16.0).astype(np.float32)
  y = bunch.target.astype(np.int32)
  train, test = stratified_split(y, test_fraction=test_fraction, seed=seed)
  return Dataset(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
                 class_names=tuple(str(c) for c in bunch.target_names), image_shape=(8, 8),
                 source="sklearn.datasets.load_digits (bundled with scikit-learn)")


DATASETS = {"digits": load_digits}
