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

from softmax_jax import _validation as v


def _check(probs: ArrayLike, labels: ArrayLike, num_bins: Any) -> tuple[jax.Array, jax.Array]:
  if not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"num_bins must be an int >= 1; got {num_bins!r}.")
  probs, labels = jnp.asarray(probs), v.as_label_array(labels)
  if probs.ndim != 2 or labels.shape != probs.shape[:1]:
    raise ValueError(f"probs must be [n, C] and labels [n]; got probs {probs.shape} and labels "
                     f"{labels.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be integer class ids; got dtype {labels.dtype}.")
  # A NaN would be binned as if nothing happened (XLA:CPU's fused max drops it in long rows) or
  # poison every bin, which the ECE's skipping of empty bins would then hide: refuse it.
  v.check_all(jnp.isfinite(probs), probs, "probs must be finite; got {value} at index {index} "
                                          "({count} non-finite entries).")
  # A confidence outside [0, 1] was clipped into the first or last bin and counted: refuse it,
  # allowing the rounding of a normalisation (exp of a normalised log-probability may be 1 + ulp).
  if jnp.issubdtype(probs.dtype, jnp.floating):
    tol = v.probability_tolerance(probs.dtype, probs.shape[1])
    v.check_all((probs >= 0) & (probs <= 1 + tol), probs,
                "probs must be probabilities in [0, 1]; got {value} at index {index} ({count} "
                "such entries).")
  return probs, labels


def bin_sums(confidence_B: jax.Array, correct_B: jax.Array, mask_B: jax.Array, *,
             num_bins: int) -> dict[str, jax.Array]:
  """Per confidence bin: the number of kept examples, their confidence sum and correct count.

  The sums behind ECE and the reliability diagram, shared with ``train.evaluate``. Written as
  masked column sums of a ``[B, num_bins]`` one-hot rather than a float scatter-add, whose order
  of additions, and so whose last bits, vary from run to run on a GPU: evaluations are
  bit-identical across runs (resume and same-seed reruns compare equal).

  Args:
    confidence_B: ``max_j p_j`` per example, in [0, 1].
    correct_B: whether each prediction is right (bool).
    mask_B: which examples count (bool).
    num_bins: equal-width bins on [0, 1]; a confidence of 1 falls in the last.

  Returns:
    ``bin_count``, ``bin_confidence`` and ``bin_correct``, each of shape ``[num_bins]``. A kept
    example whose confidence is not finite (the row of a NaN logit) makes ``bin_confidence``
    NaN (in its bin, at least), so the ECE is NaN; a masked example's confidence is never read.
  """
  dtype = confidence_B.dtype
  # The max of a NaN row is NaN, or −inf where XLA:CPU's fused max drops the NaN (long rows): both
  # become NaN, so that the ECE is NaN, never ±inf (nor a finite number).
  confidence_B = jnp.where(mask_B, jnp.where(jnp.isfinite(confidence_B), confidence_B, jnp.nan),
                           0)
  bins = jnp.clip((confidence_B * num_bins).astype(jnp.int32), 0, num_bins - 1)
  in_bin_BxK = (bins[:, None] == jnp.arange(num_bins)[None, :]) & mask_B[:, None]
  w_BxK = in_bin_BxK.astype(dtype)
  return {"bin_count": jnp.sum(w_BxK, 0),
          "bin_confidence": jnp.sum(w_BxK * confidence_B[:, None], 0),
          "bin_correct": jnp.sum(w_BxK * correct_B.astype(dtype)[:, None], 0)}


def reliability_bins(probs: ArrayLike, labels: ArrayLike, *, num_bins: int = 15) -> dict[str, Any]:
  """Per-bin counts, mean confidence and accuracy, for a reliability diagram.

  Args:
    probs: predicted probabilities, shape ``[n, C]``.
    labels: integer class ids, shape ``[n]``.
    num_bins: equal-width confidence bins on [0, 1].

  Returns:
    NumPy arrays of shape ``[num_bins]``: ``count``, ``confidence`` (mean, NaN for an empty bin),
    ``accuracy`` (NaN for an empty bin), and ``edges`` of shape ``[num_bins + 1]``.

  Raises:
    ValueError: an entry of ``probs`` is NaN, ±inf or outside ``[0, 1]`` (the message names the
      first), or ``num_bins`` is not a positive int.
  """
  probs, labels = _check(probs, labels, num_bins)
  confidence = jnp.max(probs, -1)
  correct = jnp.argmax(probs, -1) == labels
  sums = jax.device_get(bin_sums(confidence, correct, jnp.ones(correct.shape, bool),
                                 num_bins=num_bins))
  count, conf_sum, correct_sum = (np.asarray(sums[k], np.float64)
                                  for k in ("bin_count", "bin_confidence", "bin_correct"))
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

  Raises:
    ValueError: as :func:`reliability_bins` (a NaN, infinite or out-of-range probability, a bad
      ``num_bins``).
  """
  bins = reliability_bins(probs, labels, num_bins=num_bins)
  n = bins["count"].sum()
  gaps = np.nan_to_num(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"]))
  return float(gaps.sum() / n) if n else 0.0
