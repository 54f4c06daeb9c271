r"""Information theory of discrete distributions: entropy, surprisal, cross-entropy, KL (§4.1.4).

All quantities are in nats by default; ``base=2`` gives bits (divide by ``log base``).
Conventions, as in Cover & Thomas: ``0 · log 0 = 0``, so an impossible outcome adds nothing to an
entropy; ``H(P, Q) = KL(P‖Q) = +inf`` when some outcome has ``q = 0 < p``. No function returns
NaN for valid distributions, and the gradients are finite wherever the value is (at ``p = 0``
the derivative of ``p log p`` is taken as 0, its value from the right being ``-inf``). The
derivative of ``p log q`` in ``p`` is ``log q`` at ``p = 0`` too, where ``q > 0``: the gradient of
``H(P, Q)`` in ``P`` is ``−log q`` wherever ``q > 0`` (0 at ``p = q = 0``, by the convention
above), and ``KL = H(P, Q) − H(P)`` holds for gradients.

Arguments are validated like soft labels: entries ``>= 0`` that sum to 1 along ``axis`` within a
dtype tolerance (eagerly, or under :func:`softmax_jax.checked`). Unchecked, under a plain ``jit``,
a NaN (or negative) entry makes its result NaN, never a finite number or ``±inf``.

References:
  Shannon, A mathematical theory of communication, 1948; Cover & Thomas, Elements of Information
  Theory, 1999; Zhang et al., Dive into Deep Learning, §4.1.4.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax.losses import _times
from softmax_jax.losses import times_tangent


def _log_base(base: Any) -> float:
  if base is None:
    return 1.0
  if isinstance(base, bool) or not isinstance(base, numbers.Real) or not (
      math.isfinite(base) and base > 0 and base != 1):
    raise ValueError(f"base must be None (nats) or a positive number other than 1, e.g. 2 for "
                     f"bits; got {base!r}.")
  return math.log(base)


def _distribution(p: ArrayLike, axis: int, name: str) -> tuple[jax.Array, int]:
  p = v.as_float_array(p, name)
  if p.ndim == 0:
    raise ValueError(f"{name} must have an outcome axis; got a scalar.")
  axis = v.normalize_axis(axis, p.ndim)
  v.check_distribution(p, axis, name)
  return p.astype(v.compute_dtype(p.dtype)), axis


def _safe_log(x: jax.Array) -> jax.Array:
  """log x, with a gradient of 0 instead of inf/NaN at x = 0 (where the value is -inf).

  Only ``x == 0`` is special-cased: a NaN (or, unchecked under ``jit``, a negative) ``x`` gives
  NaN, never the ``-inf`` of an impossible event.
  """
  zero = x == 0
  return jnp.where(zero, -jnp.inf, jnp.log(jnp.where(zero, 1, x)))


# p · log_x with 0 · (−inf) = 0 (losses' `_times`, with its derivative): in p it is log_x, exact
# wherever that is finite (p log q is linear in p, so a zero p beside a positive q has the
# derivative log q, not 0); where p = 0 and log_x = −inf (p log p at an impossible outcome, or
# q = 0) the value jumps to +inf, or its slope to −inf, as p leaves 0, and the derivative is
# taken as 0, so that gradients are finite wherever the value is.
_p_times = _times


@jax.custom_jvp
def _p_log_ratio(p: jax.Array, log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """``p · (log p − log q)``, the terms of KL, in one product (so that ``KL(P‖P) = 0``
  exactly); its derivative is that of ``p log p − p log q``, each by `_p_times`' rule, so that
  ``KL = H(P, Q) − H(P)`` holds for gradients too (at ``p = 0 < q``: ``−log q``)."""
  return _p_times(p, log_p - log_q)


def _p_log_ratio_jvp(primals, tangents):
  p, log_p, log_q = primals
  dp, dlog_p, dlog_q = tangents
  out = _p_log_ratio(p, log_p, log_q)
  return out, (times_tangent(p, log_p, dp, dlog_p, like=out)
               - times_tangent(p, log_q, dp, dlog_q, like=out))


_p_log_ratio.defjvp(_p_log_ratio_jvp, symbolic_zeros=True)


def _pair(p: ArrayLike, q: ArrayLike, axis: int) -> tuple[jax.Array, jax.Array, int]:
  p_arr, q_arr = jnp.asarray(p), jnp.asarray(q)
  if p_arr.shape != q_arr.shape:
    raise ValueError(f"p and q must have the same shape; got {p_arr.shape} and {q_arr.shape}.")
  p, axis = _distribution(p_arr, axis, "p")
  q, _ = _distribution(q_arr, axis, "q")
  dtype = jnp.promote_types(p.dtype, q.dtype)
  return p.astype(dtype), q.astype(dtype), axis


def surprisal(p: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Surprisal (self-information) of outcomes with probabilities ``p``: ``−log p``.

  .. math:: I(p) = -\log_b p

  Elementwise, so there is no ``axis``: ``p`` holds probabilities of events, not necessarily
  whole distributions. ``p = 0`` gives ``+inf`` (an impossible event is infinitely surprising).

  Args:
    p: probabilities in ``[0, 1]``, any shape.
    base: ``None`` for nats, ``2`` for bits.

  Returns:
    The shape of ``p``, float32 or wider.

  References:
    Shannon, 1948; Zhang et al., Dive into Deep Learning, §4.1.4.2 (surprisal).
  """
  scale = _log_base(base)
  p = v.as_float_array(p, "p")
  v.check_all((p >= 0) & (p <= 1), p,
              "p must be probabilities in [0, 1]; got {value} at index {index} ({count} such).")
  return -_safe_log(p.astype(v.compute_dtype(p.dtype))) / scale


def entropy(p: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
  r"""Entropy of the distribution ``p`` along ``axis``.

  .. math:: H(P) = -\sum_j p_j \log_b p_j, \qquad 0 \log 0 = 0

  Its maximum, ``log_b C``, is reached by the uniform distribution (``log2 3 ≈ 1.585`` bits for
  three equiprobable classes, §4.1 exercise 2).

  Args:
    p: a distribution along ``axis`` (``>= 0``, sums to 1).
    axis: the outcome axis.
    base: ``None`` for nats, ``2`` for bits.

  Returns:
    The shape of ``p`` without ``axis``.

  References:
    Shannon, 1948; Zhang et al., Dive into Deep Learning, §4.1.4.1.
  """
  scale = _log_base(base)
  p, axis = _distribution(p, axis, "p")
  return -jnp.sum(_p_times(p, _safe_log(p)), axis=axis) / scale


def cross_entropy(p: ArrayLike, q: ArrayLike, *, axis: int = -1,
                  base: float | None = None) -> jax.Array:
  r"""Cross-entropy ``H(P, Q)`` between two distributions along ``axis``.

  .. math:: H(P, Q) = -\sum_j p_j \log_b q_j = H(P) + \mathrm{KL}(P\|Q) \ge H(P)

  The expected surprisal of an observer who believes ``Q`` when the data come from ``P``;
  ``+inf`` where ``q_j = 0 < p_j``. (For a loss on logits, use
  :func:`softmax_jax.cross_entropy`.)

  Args:
    p: the true distribution along ``axis``.
    q: the believed distribution, same shape.
    axis: the outcome axis.
    base: ``None`` for nats, ``2`` for bits.

  Returns:
    The shape of ``p`` without ``axis``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.4.3; Cover & Thomas, 1999, §2.3.
  """
  scale = _log_base(base)
  p, q, axis = _pair(p, q, axis)
  return -jnp.sum(_p_times(p, _safe_log(q)), axis=axis) / scale


def kl_divergence(p: ArrayLike, q: ArrayLike, *, axis: int = -1,
                  base: float | None = None) -> jax.Array:
  r"""Kullback–Leibler divergence ``KL(P‖Q)`` along ``axis``.

  .. math:: \mathrm{KL}(P\|Q) = \sum_j p_j \log_b \frac{p_j}{q_j} \ge 0

  Zero iff ``P = Q`` (Gibbs' inequality); ``+inf`` where ``q_j = 0 < p_j``.

  Args:
    p: the true distribution along ``axis``.
    q: the approximating distribution, same shape.
    axis: the outcome axis.
    base: ``None`` for nats, ``2`` for bits.

  Returns:
    The shape of ``p`` without ``axis``; non-negative up to rounding (a few ulps).

  References:
    Cover & Thomas, 1999, §2.3; Zhang et al., Dive into Deep Learning, §4.1.4.3.
  """
  scale = _log_base(base)
  p, q, axis = _pair(p, q, axis)
  # Σ p (log p − log q), with log q = −inf at q = 0 making the term +inf when p > 0.
  return jnp.sum(_p_log_ratio(p, _safe_log(p), _safe_log(q)), axis=axis) / scale
