r"""Calibration: expected calibration error and the reliability diagram's bins.

A classifier is calibrated when, among the examples it predicts with confidence ``c``, a fraction
``c`` is right. Bin the examples by confidence ``max_j p_j`` into ``num_bins`` equal bins; then

.. math:: \mathrm{ECE} = \sum_b \frac{n_b}{n}\,\lvert \mathrm{acc}_b - \mathrm{conf}_b\rvert.

References:
  Guo et al., On Calibration of Modern Neural Networks, ICML 2017.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _check(probs: ArrayLike, labels: ArrayLike, num_bins: Any) -> tuple[jax.Array, jax.Array]:
  if not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"num_bins must be an int >= 1; got {num_bins!r}.")
  probs, labels = jnp.asarray(probs), jnp.asarray(labels)
  if probs.ndim != 2 or labels.shape != probs.shape[:1]:
    raise ValueError(f"probs must be [n, C] and labels [n]; got probs {probs.shape} and labels "
                     f"{labels.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be integer class ids; got dtype {labels.dtype}.")
  return probs, labels


def reliability_bins(probs: ArrayLike, labels: ArrayLike, *, num_bins: int = 15) -> dict[str, Any]:
  """Per-bin counts, mean confidence and accuracy, for a reliability diagram.

  Args:
    probs: predicted probabilities, shape ``[n, C]``.
    labels: integer class ids, shape ``[n]``.
    num_bins: equal-width confidence bins on [0, 1].

  Returns:
    NumPy arrays of shape ``[num_bins]``: ``count``, ``confidence`` (mean, NaN for an empty bin),
    ``accuracy`` (NaN for an empty bin), and ``edges`` of shape ``[num_bins + 1]``.
  """
  probs, labels = _check(probs, labels, num_bins)
  confidence = jnp.max(probs, -1)
  correct = (jnp.argmax(probs, -1) == labels).astype(probs.dtype)
  bins = jnp.clip((confidence * num_bins).astype(jnp.int32), 0, num_bins - 1)
  count = np.asarray(jnp.zeros(num_bins).at[bins].add(1.0))
  conf_sum = np.asarray(jnp.zeros(num_bins).at[bins].add(confidence))
  correct_sum = np.asarray(jnp.zeros(num_bins).at[bins].add(correct))
  with np.errstate(invalid="ignore", divide="ignore"):
    return {"count": count, "confidence": np.where(count > 0, conf_sum / count, np.nan),
            "accuracy": np.where(count > 0, correct_sum / count, np.nan),
            "edges": np.linspace(0.0, 1.0, num_bins + 1)}


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, *, num_bins: int = 15) -> float:
  r"""The expected calibration error (the module docstring's formula), with equal-width bins.

  It uses the same bins as ``softmax_jax.train.evaluate``'s ``ece``.

  Args:
    probs: predicted probabilities, shape ``[n, C]``.
    labels: integer class ids, shape ``[n]``.
    num_bins: equal-width confidence bins on [0, 1].

  Returns:
    ECE in [0, 1], as a Python float.
  """
  bins = reliability_bins(probs, labels, num_bins=num_bins)
  n = bins["count"].sum()
  gaps = np.nan_to_num(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"]))
  return float(gaps.sum() / n) if n else 0.0
