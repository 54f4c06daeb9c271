r"""Log-sum-exp, softmax and log-softmax, stable at any logits (D2L §4.1.1, §4.1.2 and §4.5).

Each function is written for one example, a vector ``x_C`` of ``C`` class scores, and is
``jax.vmap``-ped over every other axis. Rows are shifted by their max (the log-sum-exp trick), so
nothing overflows for finite logits, and the limits are defined rather than NaN:

* a masked entry (``where=False``) or a ``-inf`` logit gets probability exactly 0;
* a row with no mass at all (all ``-inf`` or fully masked) has ``logsumexp = -inf``, softmax 0
  and log-softmax ``-inf``, with zero gradients;
* ``+inf`` logits are the limit ``x_i -> inf``: the ``+inf`` entries share the whole mass equally
  (``softmax([inf, 0]) = [1, 0]``, ``softmax([inf, inf, 0]) = [.5, .5, 0]``), ``logsumexp = +inf``,
  and the gradients are those of that limit, finite;
* a NaN logit (not masked) makes its whole row NaN, values and gradients, as in ``jax.nn``.

Derivatives are closed-form ``custom_jvp`` rules, differentiable to any order:
``d logsumexp = softmax · dx`` and ``d softmax = p ⊙ (dx − p·dx)``; so the Hessian of
``logsumexp`` is ``diag(p) − p pᵀ`` (:func:`softmax_hessian`, exercise 1 of §4.1).

float16 and bfloat16 inputs are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softmax_jax import _validation as v

# ----------------------------------------------------------------------------------------------
# Per-example kernels: x_C is one row of class scores in the compute dtype, mask_C a bool row or
# None. Each public function maps them over the batch with `vmap_rows`.
# ----------------------------------------------------------------------------------------------


def _shifted(x_C: jax.Array, mask_C: jax.Array | None):
  """Returns ``z_C = x_C − max(x_C)`` with the limits above, ``max`` and ``s = Σ exp(z)``."""
  if mask_C is not None:
    x_C = jnp.where(mask_C, x_C, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(x_C))
  finite = jnp.isfinite(m)
  # Finite max: the usual shift. max = +inf: the +inf entries are 0, the rest -inf (their limit).
  # max = -inf: every entry is -inf, and stays so (x - 0). A NaN entry stays NaN in every case,
  # so that s, and with it the whole row, is NaN: XLA:CPU's fused max can drop a NaN (returning
  # the max of the rest, or even -inf), so the max alone cannot be trusted to carry it.
  z_C = jnp.where(finite, x_C - jnp.where(finite, m, 0),
                  jnp.where(x_C == jnp.inf, 0.0, jnp.where(jnp.isnan(x_C), x_C, -jnp.inf)))
  e_C = jnp.exp(z_C)
  s = jnp.sum(e_C)  # >= 1 when the row has mass (the max entry contributes exp(0)); 0 if none
  return z_C, m, e_C, s


def _safe_log(s: jax.Array) -> jax.Array:
  """log(s) for s >= 0 (or NaN) whose derivative is 0 (not NaN) at s = 0, where it is -inf."""
  zero = s == 0
  return jnp.where(zero, -jnp.inf, jnp.log(jnp.where(zero, 1, s)))


def _masked_dot(p_C: jax.Array, dx_C: jax.Array) -> jax.Array:
  """Σ p·dx, where entries with p = 0 contribute 0 even if dx is not finite there (NaN p: NaN).

  ``dx`` is zeroed before the product, not the product after it: the derivative of the product
  in ``p`` is ``dx``, and a zero cotangent times an infinite ``dx`` was NaN (the second derivative
  in the temperature of a saturated log-softmax, whose exact value overflows to ``−inf``)."""
  return jnp.sum(p_C * jnp.where(p_C == 0, 0, dx_C))


@jax.custom_jvp
def logsumexp_row(x_C: jax.Array, mask_C: jax.Array | None) -> jax.Array:
  z_C, m, _, s = _shifted(x_C, mask_C)
  del z_C
  # m = -inf means s = 0 and the sum is -inf; m = +inf gives +inf; otherwise m + log s. A NaN
  # anywhere in the row makes s NaN, whatever m came out as.
  return jnp.where(jnp.isfinite(m), jnp.where(jnp.isfinite(m), m, 0) + _safe_log(s),
                   jnp.where(jnp.isnan(s), s, m))


@logsumexp_row.defjvp
def _logsumexp_row_jvp(primals, tangents):
  x_C, mask_C = primals
  dx_C, _ = tangents
  p_C = softmax_row(x_C, mask_C)
  return logsumexp_row(x_C, mask_C), _masked_dot(p_C, dx_C)


@jax.custom_jvp
def softmax_row(x_C: jax.Array, mask_C: jax.Array | None) -> jax.Array:
  _, _, e_C, s = _shifted(x_C, mask_C)
  return e_C / jnp.where(s == 0, 1, s)  # an empty row stays all 0; a NaN row is all NaN


@softmax_row.defjvp
def _softmax_row_jvp(primals, tangents):
  x_C, mask_C = primals
  dx_C, _ = tangents
  p_C = softmax_row(x_C, mask_C)
  dx_C = jnp.where(p_C == 0, 0, dx_C)
  return p_C, p_C * (dx_C - jnp.sum(p_C * dx_C))


@jax.custom_jvp
def log_softmax_row(x_C: jax.Array, mask_C: jax.Array | None,
                    alive_C: jax.Array | None = None) -> jax.Array:
  """``alive_C``: the entries whose tangent is kept even where their value is ``-inf``; by default
  `_alive` of ``x_C`` (finite, unmasked logits of a row whose max is finite). Callers that pass
  logits divided by a temperature pass `_alive` of the undivided ones."""
  del alive_C  # used by the derivative only
  z_C, _, _, s = _shifted(x_C, mask_C)
  return z_C - jnp.where(s == 0, 0, _safe_log(s))  # an empty row stays all -inf; NaN: NaN


@log_softmax_row.defjvp
def _log_softmax_row_jvp(primals, tangents):
  x_C, mask_C, *alive = primals
  dx_C = tangents[0]
  alive_C = alive[0] if alive else None
  ls_C = log_softmax_row(x_C, mask_C)
  p_C = softmax_row(x_C, mask_C)
  # Entries that are -inf because they are masked, -inf logits, or finite logits in a row whose
  # max is +inf (the limit) are constant: their tangent is 0. A finite logit in a finite row
  # whose value overflowed (x − max below the float range, [3e38, −3e38]; or x/T) keeps the
  # exact tangent dx − p·dx.
  if alive_C is None:
    alive_C = _alive(x_C, mask_C)
  return ls_C, jnp.where((ls_C == -jnp.inf) & ~alive_C, 0, dx_C - _masked_dot(p_C, dx_C))


def _alive(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """`log_softmax_row`'s ``alive_C`` for rows along the last axis of ``x`` (before any division
  by a temperature, which can turn a finite ``x − max`` into ``-inf``)."""
  xm = x if mask is None else jnp.where(mask, x, -jnp.inf)
  return jnp.isfinite(xm) & jnp.isfinite(jnp.max(xm, axis=-1, keepdims=True))


def vmap_rows(fn, num_batch_dims: int, in_axes: tuple[Any, ...]):
  """``fn`` written for one example, vmapped over ``num_batch_dims`` leading axes."""
  for _ in range(num_batch_dims):
    fn = jax.vmap(fn, in_axes=in_axes)
  return fn


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _prepare(x: ArrayLike, axis: Any, where: Any, name: str = "x"):
  x = v.as_float_array(x, name)
  if x.ndim == 0:
    raise ValueError(f"{name} must have a class axis; got a scalar.")
  axis = v.normalize_axis(axis, x.ndim)
  if x.shape[axis] == 0:
    raise ValueError(f"{name} of shape {x.shape} has no classes along axis {axis}.")
  return x, axis, v.broadcast_mask(where, x.shape)


@jax.custom_jvp
def _unit_ratio(t: jax.Array) -> jax.Array:
  """``T₀/T`` with ``T₀ = T`` held constant: the value 1, the derivative ``−1/T``.

  Autodiff's ``−T₀·T⁻²`` forms ``T²``, which overflows or flushes to 0 for float32 ``T`` beyond
  about ``1e±19`` (the derivative came out NaN or 0 there), and so does ``(T₀/T)/T``, which XLA
  rewrites as ``T₀/(T·T)``. The rule is ``−(T₀/T)·(1/T)``, a product XLA leaves alone, written
  with `_unit_ratio` itself so that higher derivatives are those of ``T₀/T`` (the second is
  ``2/T²``, formed as ``(1/T)·(1/T)``).
  """
  return jax.lax.stop_gradient(t) / t


@_unit_ratio.defjvp
def _unit_ratio_jvp(primals, tangents):
  (t,), (dt,) = primals, tangents
  ratio = _unit_ratio(t)
  return ratio, -(dt * ratio) * _reciprocal(t)


@jax.custom_jvp
def _reciprocal(t: jax.Array) -> jax.Array:
  """``1/T`` whose derivative ``−1/T²`` is formed as ``−(dT·(1/T))·(1/T)``: autodiff's ``T²``
  flushed to 0 or overflowed for float32 ``T`` beyond about ``1e±19``, and a zero cotangent times
  that ``1/T² = inf`` made the second derivative in ``T`` NaN (a saturated softmax at
  ``T = 1e-25``), where it is 0, or ``±inf`` when it truly overflows."""
  return 1 / t


@_reciprocal.defjvp
def _reciprocal_jvp(primals, tangents):
  (t,), (dt,) = primals, tangents
  r = _reciprocal(t)
  return r, -(dt * r) * r


def _divide_shifted(x: jax.Array, mask: jax.Array | None, temperature: jax.Array, *,
                    probabilities: bool = False) -> jax.Array:
  """``(x − max x)/T`` along the last axis, the same distribution as ``x/T``, with ties exact.

  Dividing first lets XLA round ``x/T`` differently in the max and in the exponent (a division
  here, a multiplication by 1/T there), so tied maxima got 0.49998 and 0.50002 at T = 1e-3. The
  shifted maxima are exactly 0 before the division. Where ``x − max`` overflows (entries near
  ±3e38) the unshifted ``x/T − max/T`` is used, and a non-finite max is not shifted by.

  The derivative in ``T``, ``dz/dT = −z/T``, is attached as ``z·(T₀/T)`` (``T₀ = T`` held
  constant, so the value is unchanged) where ``z`` is finite, and not at all where it is ``±inf``
  (a class of probability 0, or the ``+inf`` limit, both constant in ``T``): differentiating the
  divisions there gave ``0·inf = NaN`` for a traced ``T`` at logits of ``±3e38``. ``T₀/T`` is
  `_unit_ratio`, whose derivative ``−1/T`` is formed without ``T²``.

  With ``probabilities`` (the softmax, not the log-softmax), entries whose ``exp(z)`` is below the
  smallest normal number (XLA:CPU flushes it to 0) are constant in ``T`` too: their probability
  and its derivatives are 0. At a tiny ``T`` the derivatives of ``T₀/T`` overflow, and a
  saturated row's zero cotangents times them made ``jax.hessian`` in ``T`` NaN (``T = 1e-25``),
  where it is 0; masked entries and the entries of a ``+inf`` row are left out for the same
  reason. Known limits below ``T ≈ 1e-19`` (float32), where ``1/T²`` overflows:
  forward-over-reverse derivatives (``jax.hessian``) of a log-softmax entry that is constant in
  ``T`` while others in its row are not (the argmax's ``0``, a masked or ``−inf`` entry) are
  NaN: its zero cotangent meets the overflowed ``1/T²`` in JAX's product rule (``grad(grad)``
  and ``jacfwd(jacfwd)`` give 0). In rows that are not saturated, second derivatives form
  ``1/T²`` before multiplying by ``z``, so they overflow to ``±inf`` (sometimes of the wrong
  sign, or NaN) even where the exact value ``∝ z²/T⁴ + z/T³`` is finite or of the other sign.
  """
  m = jnp.max(x if mask is None else jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True)
  plus_inf_row = m == jnp.inf  # its finite entries are the limit, constant in T
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0))
  t0 = jax.lax.stop_gradient(temperature)
  d = x - m
  z = jnp.where(jnp.isfinite(d) | ~jnp.isfinite(x), d / t0, x / t0 - m / t0)
  # z = 0 (the max, constant in T) and z = ±inf are left out of the product too: at a tiny T the
  # derivatives of T₀/T overflow, and 0·inf was NaN in forward mode's second derivative.
  # So are masked entries and the entries of a +inf row, all constant in T.
  live = ~plus_inf_row if mask is None else mask & ~plus_inf_row
  scaled = jnp.isfinite(z) & (z != 0) & live
  if probabilities:
    info = jnp.finfo(z.dtype)
    scaled = scaled & (z >= float(np.log(info.tiny)))  # float32: −87.3; exp flushes below
  # An unmasked NaN entry keeps T: its row's derivative in T is NaN.
  scaled = scaled | (jnp.isnan(z) if mask is None else jnp.isnan(z) & mask)
  # A row with no such entry does not see T at all (T₀/T of 1): a zero cotangent times the
  # overflowed derivative of T₀/T is NaN, even where every entry is left out of the product.
  t_row = jnp.where(jnp.any(scaled, axis=-1, keepdims=True), temperature, 1)
  return jnp.where(scaled, jnp.where(scaled, z, 1) * _unit_ratio(t_row), z)


@functools.partial(jax.jit, static_argnames=("row_fn", "axis", "keep_axis", "scaled",
                                             "probabilities"))
def _apply_rows(x, mask, temperature, *, row_fn, axis, keep_axis, scaled=True,
                probabilities=False):
  dtype = x.dtype
  x = jnp.moveaxis(x.astype(v.compute_dtype(dtype)), axis, -1)
  if mask is not None:
    mask = jnp.moveaxis(mask, axis, -1)
  # log_softmax_row is told which entries were finite before the division (see its rule).
  alive = (_alive(x, mask),) if scaled and row_fn is log_softmax_row else ()
  if scaled:
    x = _divide_shifted(x, mask, temperature, probabilities=probabilities)
  in_axes = (0, None if mask is None else 0, *(0 for _ in alive))
  out = vmap_rows(row_fn, x.ndim - 1, in_axes)(x, mask, *alive)
  if keep_axis:
    out = jnp.moveaxis(out, -1, axis)
  return out.astype(dtype)


def logsumexp(x: ArrayLike, axis: int = -1, *, where: ArrayLike | None = None) -> jax.Array:
  r"""Log-sum-exp along ``axis``, computed stably (the LogSumExp trick).

  .. math:: \operatorname{LSE}(x) = \log \sum_j \exp x_j = m + \log\sum_j \exp(x_j - m),
     \quad m = \max_j x_j

  Its gradient is :func:`softmax` and its Hessian ``diag(p) − ppᵀ``. It is the log-partition
  function of §4.1 exercise 6 (convex, and ``LSE(x + b) = LSE(x) + b``) and the RealSoftMax of
  exercise 5: ``max(x) <= LSE(x) <= max(x) + log C``.

  Args:
    x: logits, shape ``[..., C, ...]`` with ``C`` classes along ``axis``; floating point.
    axis: the class axis.
    where: optional boolean mask broadcastable to ``x``; ``False`` entries are left out.

  Returns:
    Shape of ``x`` without ``axis``, dtype of ``x``. ``-inf`` for a row with no mass (all
    ``-inf`` or fully masked), ``+inf`` if the row holds ``+inf``. Never NaN for non-NaN input.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.2 and §4.5 (the LogSumExp trick).
  """
  x, axis, mask = _prepare(x, axis, where)
  return _apply_rows(x, mask, 1.0, row_fn=logsumexp_row, axis=axis, keep_axis=False,
                     scaled=False)


def softmax(x: ArrayLike, axis: int = -1, *, temperature: ArrayLike = 1.0,
            where: ArrayLike | None = None) -> jax.Array:
  r"""Softmax along ``axis``, with temperature: the Gibbs/Boltzmann distribution.

  .. math:: \mathrm{softmax}(x)_i = \frac{\exp(x_i/T)}{\sum_j \exp(x_j/T)}

  With logits ``x = −E`` (energies) this is Gibbs' ``exp(−E/kT)`` distribution: ``T → 0`` gives
  the one-hot of the argmax, ``T → ∞`` the uniform distribution. The order of the entries is
  preserved, so ``argmax softmax(x) = argmax x``.

  Args:
    x: logits, floating point, with ``C`` classes along ``axis``.
    axis: the class axis.
    temperature: ``T > 0``, a Python float or a scalar array (differentiable, e.g. to fit a
      calibration temperature). ``T <= 0``, non-finite, or outside the normal range of the
      dtype it is computed in (float32 logits: ``[1.18e-38, 3.4e38]``, where XLA would flush a
      smaller ``T`` to 0 and round a larger one to ``inf``) raises ``ValueError``.
    where: optional boolean mask broadcastable to ``x``; masked entries get probability 0.

  Returns:
    Probabilities of the shape and dtype of ``x``, summing to 1 along ``axis`` (all 0 for a row
    with no mass; see the module docstring for ``±inf``).

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1 (softmax) and §4.1.5 (Gibbs, temperature);
    Gibbs, Elementary Principles in Statistical Mechanics, 1902.
  """
  x, axis, mask = _prepare(x, axis, where)
  temperature = v.check_temperature(temperature, v.compute_dtype(x.dtype))
  return _apply_rows(x, mask, temperature, row_fn=softmax_row, axis=axis, keep_axis=True,
                     scaled=not (isinstance(temperature, float) and temperature == 1.0),
                     probabilities=True)


def log_softmax(x: ArrayLike, axis: int = -1, *, temperature: ArrayLike = 1.0,
                where: ArrayLike | None = None) -> jax.Array:
  r"""Log of the softmax along ``axis``, computed stably.

  .. math:: \log\mathrm{softmax}(x)_i = x_i/T - \log\sum_j \exp(x_j/T)

  Args:
    x: logits, floating point, with ``C`` classes along ``axis``.
    axis: the class axis.
    temperature: ``T > 0`` as in :func:`softmax`.
    where: optional boolean mask broadcastable to ``x``.

  Returns:
    Array of the shape and dtype of ``x``; masked entries and ``-inf`` logits give ``-inf``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.2 and §4.5.
  """
  x, axis, mask = _prepare(x, axis, where)
  temperature = v.check_temperature(temperature, v.compute_dtype(x.dtype))
  return _apply_rows(x, mask, temperature, row_fn=log_softmax_row, axis=axis, keep_axis=True,
                     scaled=not (isinstance(temperature, float) and temperature == 1.0))


def softmax_hessian(logits: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  r"""Hessian of the cross-entropy with respect to the logits: the softmax covariance.

  .. math:: \frac{\partial^2 l}{\partial o_i \partial o_j} = \mathrm{diag}(p) - p p^\top,
     \quad p = \mathrm{softmax}(o)

  It does not depend on the label, and it is the covariance of the one-hot vector of a class
  drawn from ``p`` (§4.1 exercise 1). It is also the Hessian of :func:`logsumexp`, which is
  therefore convex (exercise 6). With class weights or soft labels that sum to ``s``, the
  Hessian of the loss is ``s`` times this.

  Args:
    logits: shape ``[..., C]``; the classes are on the last axis.
    where: optional boolean mask broadcastable to ``logits``; masked classes get zero rows and
      columns.

  Returns:
    Shape ``[..., C, C]``, dtype of ``logits``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.3 and exercise 4.1.1.
  """
  dtype = v.as_float_array(logits, "logits").dtype
  p = softmax(jnp.asarray(logits).astype(v.compute_dtype(dtype)), where=where)
  eye = jnp.eye(p.shape[-1], dtype=bool)
  # The diagonal is p_i (1 − p_i) with 1 − p_i summed from the other classes: p_i − p_i² would
  # lose every digit of 1 − p_i when p_i is near 1.
  others = jnp.sum(jnp.where(eye, 0, p[..., None, :]), axis=-1)
  outer = p[..., :, None] * p[..., None, :]
  hess = jnp.where(eye, (p * others)[..., :, None], -outer)
  return hess.astype(dtype)
