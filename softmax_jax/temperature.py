r"""Temperature: powers of a distribution, and temperature scaling for calibration (§4.1.5).

The softmax with temperature ``T`` is Gibbs' distribution ``p_i ∝ exp(o_i / T)`` (with logits
``o = −E``, the negative energies). Raising it to a power ``α > 0`` and renormalising changes only
the temperature:

.. math:: Q_i = \frac{p_i^\alpha}{\sum_j p_j^\alpha}
   = \frac{\exp(\alpha o_i / T)}{\sum_j \exp(\alpha o_j / T)}
   = \mathrm{softmax}(o;\ T/\alpha)_i,

so ``α = 1/2`` doubles the temperature and ``α = 2`` halves it (§4.1 exercise 7);
:func:`power_distribution` computes ``Q`` and :func:`power_to_temperature` the new ``T``.

Temperature scaling (Guo et al., 2017) fits one ``T`` to held-out data by maximum likelihood:
``T* = argmin_T mean_i −log softmax(o_i / T)_{y_i}``. Dividing the logits by ``T`` leaves every
argmax (and so the accuracy) unchanged and only moves the confidences. :func:`fit_temperature`
finds ``T*`` in float64 with a safeguarded Newton method on ``β = 1/T``, in which the NLL is
convex (see its docstring).

References:
  Gibbs, Elementary Principles in Statistical Mechanics, 1902; Zhang et al., Dive into Deep
  Learning, §4.1.5 (exercise 7); Guo et al., On Calibration of Modern Neural Networks, ICML 2017.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax.softmax import _shifted as shifted_row
from softmax_jax.softmax import log_softmax
from softmax_jax.softmax import softmax
from softmax_jax.softmax import vmap_rows
from softmax_jax.solve import enable_x64


def _positive_float(value: Any, name: str) -> float:
  """A finite Python number ``> 0``, as a float; else ``ValueError``/``TypeError`` naming it."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a positive finite number; got {value!r}.")
  if not (math.isfinite(value) and value > 0):
    raise ValueError(f"{name} must be a positive finite number; got {value!r}.")
  return float(value)


def _quotient(a: float, b: float, what: str) -> float:
  """``a / b`` for positive finite floats; ``ValueError`` if it is not a positive finite float."""
  q = a / b
  if not (math.isfinite(q) and q > 0):
    raise ValueError(f"{what} = {a!r} / {b!r} is not a positive finite float64 (it is {q!r}).")
  return q


def power_to_temperature(alpha: float, *, temperature: float = 1.0) -> float:
  r"""The temperature of ``Q ∝ P^α`` when ``P`` is a softmax at ``temperature``: ``T / α``.

  .. math:: \mathrm{softmax}(o; T)^\alpha \propto \exp(\alpha o / T) = \exp(o / (T/\alpha))

  Args:
    alpha: the power ``α > 0``.
    temperature: the temperature ``T > 0`` of ``P``.

  Returns:
    ``T / α``: ``α = 1/2`` doubles ``T``, ``α = 2`` halves it; ``α → ∞`` is ``T → 0`` (the
    argmax) and ``α → 0`` is ``T → ∞`` (uniform).

  Raises:
    ValueError, TypeError: ``alpha`` or ``temperature`` not a positive finite number, or a
      quotient ``T / α`` that overflows to ``inf`` or underflows to 0 in float64.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.5, exercise 7.
  """
  return _quotient(_positive_float(temperature, "temperature"), _positive_float(alpha, "alpha"),
                   "temperature / alpha")


def temperature_to_power(new_temperature: float, *, temperature: float = 1.0) -> float:
  """The power ``α = T / T'`` turning a softmax at ``temperature`` into one at ``new_temperature``.

  The inverse of :func:`power_to_temperature`: ``temperature_to_power(2.0)`` is ``0.5``.

  Raises:
    ValueError, TypeError: either temperature not a positive finite number, or a quotient that
      overflows to ``inf`` or underflows to 0 in float64.
  """
  return _quotient(_positive_float(temperature, "temperature"),
                   _positive_float(new_temperature, "new_temperature"),
                   "temperature / new_temperature")


def power_distribution(p: ArrayLike, *, alpha: ArrayLike, axis: int = -1) -> jax.Array:
  r"""``Q ∝ P^α`` along ``axis``, computed as ``softmax(α · log P)``.

  .. math:: Q_i = \frac{p_i^\alpha}{\sum_j p_j^\alpha} = \mathrm{softmax}(\alpha \log p)_i

  Working with ``α log p`` never forms ``p^α``, which under- or overflows for large ``α``
  (``1e-30 ** 2`` is 0 in float32); an impossible outcome (``p_i = 0``, ``log p_i = −inf``) stays
  impossible for every ``α > 0``. So ``α → ∞`` gives the uniform distribution over the most
  probable outcomes (the mass splits over ties), and ``α → 0`` the uniform distribution over the
  support of ``P``.

  Derivatives in ``p`` at a zero entry: ``p^α`` has slope 0 there for ``α > 1`` (exact), ``+inf``
  for ``α < 1`` (taken as 0), and at ``α = 1``, where ``Q = P/ΣP``, the exact ``δ_ik/S − Q_i/S``.

  Args:
    p: a distribution along ``axis`` (entries ``>= 0`` summing to 1; checked eagerly, or under
      :func:`softmax_jax.checked`).
    alpha: the power, ``α > 0``: a Python float or a float scalar array (differentiable).
    axis: the outcome axis.

  Returns:
    ``Q``, the shape and dtype of ``p``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.5, exercise 7.
  """
  p = v.as_float_array(p, "p")
  if p.ndim == 0:
    raise ValueError("p must have an outcome axis; got a scalar.")
  axis = v.normalize_axis(axis, p.ndim)
  v.check_distribution(p, axis, "p")
  if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
    alpha = _positive_float(alpha, "alpha")
  else:
    alpha_arr = jnp.asarray(alpha)
    if alpha_arr.ndim != 0 or not jnp.issubdtype(alpha_arr.dtype, jnp.floating):
      raise TypeError(f"alpha must be a positive float scalar; got dtype {alpha_arr.dtype} with "
                      f"shape {alpha_arr.shape}.")
    v.check(jnp.isfinite(alpha_arr) & (alpha_arr > 0),
            "alpha must be a positive finite number; got {}.", alpha_arr)
    alpha = alpha_arr
  return _power_distribution(p, alpha, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _power_distribution(p, alpha, *, axis):
  p32 = p.astype(v.compute_dtype(p.dtype))
  support = p32 != 0  # a NaN (unchecked under jit) stays in, and makes its row NaN
  # log 0 = −inf is left out by the mask (not multiplied by α), so that its gradient is 0, not
  # 0·inf = NaN; log is evaluated at 1 there.
  scaled = alpha * jnp.log(jnp.where(support, p32, 1))
  q = softmax(scaled, axis=axis, where=support)
  # The mask makes a zero entry a constant: its derivative 0, exact for α > 1 (p^α has slope 0
  # at 0) and the convention for α < 1 (slope +inf). At α = 1, Q = P/ΣP is smooth there,
  # ∂Q_i/∂p_k = δ_ik/S − Q_i/S: a term of value 0 (e) carries that derivative.
  e = jnp.where(support, 0, p32 - jax.lax.stop_gradient(p32)) * (alpha == 1)
  total = jnp.sum(p32, axis=axis, keepdims=True)
  q = q + (e - q * jnp.sum(e, axis=axis, keepdims=True)) / jnp.where(total == 0, 1, total)
  return q.astype(p.dtype)


# ------------------------------------------------------------------------------------------------
# Temperature scaling
# ------------------------------------------------------------------------------------------------


def _check_logits_labels(logits: Any, labels: Any) -> tuple[jax.Array, jax.Array]:
  logits = v.as_float_array(logits, "logits")
  labels = v.check_integer_labels(labels)
  if logits.ndim != 2 or logits.shape[1] == 0:
    raise ValueError(f"logits must have shape [n, C] with C >= 1; got {logits.shape}.")
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"labels must have shape ({logits.shape[0]},), one class id per row of "
                     f"logits {logits.shape}; got {labels.shape}.")
  v.check_class_ids(labels, logits.shape[1])
  return logits, labels


def _shifted_logits(logits: jax.Array) -> jax.Array:
  """``z = o − max(o)`` per row, so that ``z <= 0`` (the softmax does not see a shift), with
  :mod:`softmax_jax.softmax`'s limits (its own shift): in a row whose max is ``+inf``, 0 for the
  ``+inf`` entries and ``−inf`` for the rest; a row of ``−inf`` stays ``−inf``; a NaN stays NaN.

  The max, not the log-sum-exp: ``o − LSE(o)`` rounds every entry to the resolution of ``LSE``
  (``0.69`` for two logits 1e-6 apart), which ``1/T`` then magnifies (an NLL of 0.297 for 0.313
  at ``T = 1e-6`` in float32). Subtracting the max is exact for entries near it. The max is not
  differentiated: the result does not depend on the shift.
  """
  return vmap_rows(lambda o_C: shifted_row(o_C, None)[0], logits.ndim - 1, (0,))(logits)


def _scaled_log_probs(logits: jax.Array, temperature: jax.Array) -> jax.Array:
  """``log softmax(o/T)`` written so that no ``inf·0`` appears in a value or a derivative.

  The logits are first shifted by their row max (`_shifted_logits`), so that ``z <= 0``;
  entries with ``z = −inf`` (``−inf`` logits, or logits infinitely far below the max) are
  masked. :func:`~softmax_jax.log_softmax` then divides by ``T``, attaching the derivative in
  ``T`` only where ``z/T`` is finite, and without forming ``T²``: finite derivatives where
  ``z/T`` overflows to ``−inf``, and at ``T`` down to ``1e-20`` or up to ``1e20`` in float32
  (``1/T`` and its derivative ``−1/T²`` overflowed there, and the NLL's derivative was NaN or 0).
  """
  z = _shifted_logits(logits)
  mask = z != -jnp.inf  # NaN entries (a NaN logit's row) stay in: the NLL is NaN, not +inf
  return log_softmax(jnp.where(mask, z, 0), temperature=temperature, where=mask)


def temperature_nll(logits: ArrayLike, labels: ArrayLike, *, temperature: ArrayLike) -> jax.Array:
  r"""The mean negative log-likelihood of the labels under ``softmax(logits / T)``.

  .. math:: \mathrm{NLL}(T) = \frac1n \sum_i \Big[\log\sum_j e^{o_{ij}/T} - o_{i y_i}/T\Big]

  Differentiable in ``temperature`` (and the logits) to any order, with finite gradients at
  extreme logits (``±3e38``, ``−inf``). A true class of probability 0 at every ``T`` (its logit
  ``−inf``, or finite while another is ``+inf``) gives an infinite NLL, not NaN; a NaN logit
  (possible under ``jit``, where nothing is checked) gives a NaN NLL.

  Args:
    logits: shape ``[n, C]``, floating point.
    labels: integer class ids, shape ``[n]``.
    temperature: ``T > 0``, a Python float or a float scalar array; it is computed in the
      logits' compute dtype and must be a normal number there (float32: ``[1.18e-38, 3.4e38]``),
      else ``ValueError``.

  Returns:
    A scalar in the logits' compute dtype (float32, or float64 for float64 logits).

  References:
    Guo et al., On Calibration of Modern Neural Networks, ICML 2017, §4.2.
  """
  logits, labels = _check_logits_labels(logits, labels)
  temperature = v.check_temperature(temperature, v.compute_dtype(logits.dtype), promote=False)
  return _temperature_nll(logits.astype(v.compute_dtype(logits.dtype)), labels,
                          jnp.asarray(temperature, v.compute_dtype(logits.dtype)))


@jax.jit
def _temperature_nll(logits, labels, temperature):
  ls = _scaled_log_probs(logits, temperature)
  return -jnp.mean(jnp.take_along_axis(ls, labels[:, None].astype(jnp.int32), axis=1))


class TemperatureFit(NamedTuple):
  """The result of :func:`fit_temperature`.

  Attributes:
    temperature: ``T*``, a Python float.
    nll: the mean NLL at ``T*``.
    nll_at_one: the mean NLL at ``T = 1`` (the uncalibrated logits).
    grad: ``d NLL / d log T`` at ``T*`` (0 at an interior optimum).
    iterations: the Newton/bisection steps taken.
    converged: ``|grad| <= tol``; or ``T*`` at a bound with the NLL still falling towards it;
      or the bracket shrunk to one float64 number (a ``tol`` below rounding level).
    at_bound: ``T*`` is ``min_temperature`` or ``max_temperature``: the NLL does not fall
      inwards from that bound, so the optimum is at it or beyond it.
  """

  temperature: float
  nll: float
  nll_at_one: float
  grad: float
  iterations: int
  converged: bool
  at_bound: bool


@jax.jit
def _nll_and_derivatives(beta, z, mask, labels):
  """The NLL and its first two derivatives in ``β``, in closed form.

  With ``p = softmax(β z)`` per row: ``d/dβ = mean_i(E_p[z_i] − z_{i,y})`` and
  ``d²/dβ² = mean_i Var_p[z_i] >= 0``; masked entries (``z = −inf``) have ``p = 0`` and are
  left out of both sums.
  """
  zf = jnp.where(mask, z, 0)
  ls = log_softmax(zf * beta, where=mask)
  p = jnp.where(mask, jnp.exp(ls), 0)
  z_y = jnp.take_along_axis(zf, labels[:, None], axis=1)[:, 0]
  ls_y = jnp.take_along_axis(ls, labels[:, None], axis=1)[:, 0]
  mean_z = jnp.sum(p * zf, axis=1)
  var_z = jnp.sum(p * jnp.square(zf - mean_z[:, None]), axis=1)
  return -jnp.mean(ls_y), jnp.mean(mean_z - z_y), jnp.mean(var_z)


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, min_temperature: float = 1e-2,
                    max_temperature: float = 1e2, tol: float = 1e-10,
                    max_iter: int = 100) -> TemperatureFit:
  r"""The temperature that minimises the labels' mean NLL (temperature scaling, Guo et al.).

  .. math:: T^* = \arg\min_{T \in [T_{min}, T_{max}]} \frac1n\sum_i
     \Big[\log\sum_j e^{\beta o_{ij}} - \beta o_{i y_i}\Big]_{\beta = 1/T}

  As a function of ``β = 1/T`` the NLL is convex: it is a log-sum-exp of functions linear in
  ``β``, with second derivative ``mean_i Var_{p_i}[o_i] >= 0`` (the softmax covariance of §4.1
  exercise 1, seen along ``o``). So its derivative in ``β`` is increasing and has at most one
  root in the bracket ``[1/T_max, 1/T_min]``; this finds it by Newton's method with the closed-form
  first and second derivatives, falling back to a geometric bisection of the bracket whenever a
  Newton step would leave it (Numerical Recipes' ``rtsafe``). Every evaluation is in float64
  (whatever the global x64 setting), on the log-softmax of the logits, so logits of ``±3e38``
  and ``−inf`` entries are exact. If the derivative has the same sign over the whole bracket,
  ``T*`` is the bound the NLL decreases towards and ``at_bound`` is set (e.g. ``T_min`` when every
  training label is predicted correctly: the NLL then falls to 0 as ``T → 0``).

  The accuracy is unchanged by any ``T > 0``: dividing a row by ``T`` keeps its argmax.

  Args:
    logits: validation logits, ``[n, C]``, floating point (not NaN).
    labels: validation class ids, ``[n]``.
    min_temperature: ``T_min > 0``, the bracket's lower end.
    max_temperature: ``T_max > T_min``, finite.
    tol: stop when ``|d NLL / d log T| <= tol`` (``>= 0``).
    max_iter: the most Newton/bisection steps (``>= 1``).

  Returns:
    A :class:`TemperatureFit` (Python floats and ints).

  Raises:
    TypeError: non-float logits or non-integer labels.
    ValueError: bad shapes, NaN logits, labels outside ``[0, C)``, a true class of probability 0
      at every temperature (its logit ``−inf``, or finite below a ``+inf``), bad bounds, ``tol``
      or ``max_iter``.

  References:
    Guo et al., On Calibration of Modern Neural Networks, ICML 2017; Press et al., Numerical
    Recipes, 3rd ed., 2007, §9.4 (rtsafe).
  """
  logits, labels = _check_logits_labels(logits, labels)
  t_lo = _positive_float(min_temperature, "min_temperature")
  t_hi = _positive_float(max_temperature, "max_temperature")
  if not t_lo < t_hi:
    raise ValueError(f"min_temperature must be < max_temperature; got {t_lo!r} and {t_hi!r}.")
  if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
    raise ValueError(f"tol must be a number >= 0; got {tol!r}.")
  if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
    raise ValueError(f"max_iter must be an int >= 1; got {max_iter!r}.")
  o = np.asarray(logits, np.float64)
  if np.isnan(o).any():
    row = int(np.argwhere(np.isnan(o))[0, 0])
    raise ValueError(f"logits must not be NaN; row {row} holds a NaN.")

  with enable_x64():
    z = _shifted_logits(jnp.asarray(o))
    mask = z > -jnp.inf
    y = jnp.asarray(labels, jnp.int32)
    dead = ~np.asarray(jnp.take_along_axis(mask, y[:, None], axis=1)[:, 0])
    if dead.any():
      row = int(np.flatnonzero(dead)[0])
      raise ValueError(
          f"row {row}: the true class {int(labels[row])} has probability 0 at every temperature "
          f"(its logit is -inf, or finite while another is +inf), so the NLL is +inf for every "
          f"T; {int(dead.sum())} such rows.")

    def derivs(beta):
      nll, d1, d2 = _nll_and_derivatives(jnp.float64(beta), z, mask, y)
      return float(nll), float(d1), float(d2)

    nll_at_one = derivs(1.0)[0]
    lo, hi = 1.0 / t_hi, 1.0 / t_lo  # the bracket in β
    _, d_lo, _ = derivs(lo)
    _, d_hi, _ = derivs(hi)
    iterations = 0
    collapsed = False
    if d_lo >= 0:  # the NLL rises with β over the bracket: the optimum is at β_lo (T_max)
      beta, at_bound = lo, True
    elif d_hi <= 0:  # it falls over the bracket: the optimum is at β_hi (T_min)
      beta, at_bound = hi, True
    else:
      at_bound = False
      beta = min(max(1.0, lo), hi)  # T = 1, the uncalibrated model, is the natural start
      while iterations < max_iter:
        _, d1, d2 = derivs(beta)
        if abs(beta * d1) <= tol:  # d NLL / d log T = −β · d NLL / dβ
          break
        if d1 < 0:
          lo = beta
        else:
          hi = beta
        iterations += 1
        step = beta - d1 / d2 if d2 > 0 else math.nan
        beta = step if lo < step < hi else math.sqrt(lo * hi)
        if hi / lo - 1 <= 4 * np.finfo(np.float64).eps:  # the bracket is a float64 point
          collapsed = True
          break
    nll, d1, _ = derivs(beta)
  grad = -beta * d1
  converged = at_bound or collapsed or abs(grad) <= tol
  return TemperatureFit(temperature=1.0 / beta, nll=nll, nll_at_one=nll_at_one, grad=grad,
                        iterations=iterations, converged=bool(converged), at_bound=bool(at_bound))
