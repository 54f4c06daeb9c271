r"""Cross-entropy losses with closed-form derivatives (D2L §4.1.2 and §4.1.3).

:func:`cross_entropy` is the softmax cross-entropy with the semantics of PyTorch's
``torch.nn.functional.cross_entropy`` (``weight``, ``ignore_index`` as ``where``, ``reduction``,
``label_smoothing``, hard or soft targets), so the two compare one to one.
:func:`sigmoid_cross_entropy` is the per-label binary form for multi-label classification.

The per-example loss is written for one example and ``vmap``-ped over the batch. Its derivative
is a ``custom_jvp`` whose tangent is the closed form ``softmax(o) − y``: reverse mode transposes
it, so ``jax.grad`` evaluates exactly ``(softmax(o) − y) · ct`` and never differentiates through
``exp`` or ``log``. Forward mode, ``jax.hessian`` and any higher order work as well (a
``custom_vjp`` would rule them out); the second derivative is ``diag(p) − ppᵀ``.

Numerics: logits are shifted by their row max; ``0 · log 0 = 0`` (a class with zero target mass
contributes nothing even if its logit is ``-inf``); float16/bfloat16 accumulate in float32 and
the loss is float32. A loss whose exact value exceeds the float range (the label's logit
``−3e38`` while another is ``+3e38``) rounds to ``+inf``, as IEEE arithmetic does; it is never NaN.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax.softmax import log_softmax_row
from softmax_jax.softmax import softmax_row
from softmax_jax.softmax import vmap_rows

_SymbolicZero = jax.custom_derivatives.SymbolicZero


def _is_zero(t: Any) -> bool:
  return t is None or isinstance(t, _SymbolicZero)


def _times(a: jax.Array, b: jax.Array) -> jax.Array:
  """a·b with 0·(±inf) = 0: a class with zero weight contributes nothing."""
  return jnp.where(a == 0, 0, a * b)


# ----------------------------------------------------------------------------------------------
# Per-example kernels, in the compute dtype. `eps` is the label smoothing (static); `w_C` the
# class weights or None; `m` the example's mask (bool scalar) or None. Each returns
# (loss, dloss/do_C, dloss/dlabel or None, dloss/dw_C or None).
# ----------------------------------------------------------------------------------------------


def _hard_terms(eps: float, o_C, y, w_C, m):
  num_classes = o_C.shape[0]
  ls_C = log_softmax_row(o_C, None)
  p_C = softmax_row(o_C, None)
  in_range = (y >= 0) & (y < num_classes)
  y = jnp.where(in_range, y, 0)
  ls_y = ls_C[y]
  w_y = jnp.ones((), o_C.dtype) if w_C is None else w_C[y]
  on_y = (jnp.arange(num_classes) == y).astype(o_C.dtype)
  # l = −(1−ε)·w_y·ls_y − (ε/C)·Σ_c w_c·ls_c: the one-hot is never formed for the loss.
  loss = -(1 - eps) * _times(w_y, ls_y)
  total = (1 - eps) * w_y  # Σ_c v_c, the mass of the weighted target v
  if eps > 0:
    w_or_1 = jnp.ones_like(o_C) if w_C is None else w_C
    loss = loss - eps / num_classes * jnp.sum(_times(w_or_1, ls_C))
    total = total + eps / num_classes * jnp.sum(w_or_1)
  # dl/do = softmax(o)·Σv − v, with v = (1−ε)·w_y·e_y + (ε/C)·w.
  grad_C = p_C * total - (1 - eps) * w_y * on_y
  if eps > 0:
    grad_C = grad_C - eps / num_classes * (1 if w_C is None else w_C)
  dw_C = None if w_C is None else -((1 - eps) * on_y + eps / num_classes) * ls_C
  # Out of range (possible only under a plain jit, where values cannot be checked): NaN, never a
  # clamped index. Masked examples contribute exactly 0, whatever their logits and labels.
  ok = in_range if m is None else (in_range | ~m)
  loss, grad_C = jnp.where(ok, loss, jnp.nan), jnp.where(ok, grad_C, jnp.nan)
  if m is not None:
    loss, grad_C = jnp.where(m, loss, 0), jnp.where(m, grad_C, 0)
    dw_C = None if dw_C is None else jnp.where(m, dw_C, 0)
  return loss, grad_C, None, dw_C


def _soft_terms(eps: float, o_C, t_C, w_C, m):
  num_classes = o_C.shape[0]
  ls_C = log_softmax_row(o_C, None)
  p_C = softmax_row(o_C, None)
  t_C = (1 - eps) * t_C + eps / num_classes if eps > 0 else t_C
  v_C = t_C if w_C is None else w_C * t_C
  loss = -jnp.sum(_times(v_C, ls_C))
  grad_C = p_C * jnp.sum(v_C) - v_C
  dt_C = -(1 - eps) * (ls_C if w_C is None else w_C * ls_C)
  dw_C = None if w_C is None else -t_C * ls_C
  if m is not None:
    loss, grad_C, dt_C = jnp.where(m, loss, 0), jnp.where(m, grad_C, 0), jnp.where(m, dt_C, 0)
    dw_C = None if dw_C is None else jnp.where(m, dw_C, 0)
  return loss, grad_C, dt_C, dw_C


def _make_loss_row(terms):
  """The per-example loss as a custom_jvp whose tangent is the closed-form derivative."""

  @functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
  def loss_row(eps, o_C, label, w_C, m):
    return terms(eps, o_C, label, w_C, m)[0]

  def loss_row_jvp(eps, primals, tangents):
    o_C, label, w_C, m = primals
    do_C, dlabel, dw_C, _ = tangents
    loss, grad_C, dlabel_coef, dw_coef = terms(eps, o_C, label, w_C, m)
    out = jnp.zeros_like(loss)
    if not _is_zero(do_C):
      out = out + jnp.sum(grad_C * do_C)
    if dlabel_coef is not None and not _is_zero(dlabel):
      out = out + jnp.sum(dlabel_coef * dlabel)
    if dw_coef is not None and not _is_zero(dw_C):
      out = out + jnp.sum(dw_coef * dw_C)
    return loss, out

  loss_row.defjvp(loss_row_jvp, symbolic_zeros=True)
  return loss_row


_hard_loss_row = _make_loss_row(_hard_terms)
_soft_loss_row = _make_loss_row(_soft_terms)


def _grad_row(terms):
  def grad_row(eps, o_C, label, w_C, m):
    return terms(eps, o_C, label, w_C, m)[1]

  return grad_row


# ----------------------------------------------------------------------------------------------
# Validation and batching
# ----------------------------------------------------------------------------------------------


def _prepare(logits, labels, axis, label_smoothing, class_weights, where):
  logits = v.as_float_array(logits, "logits")
  if logits.ndim == 0:
    raise ValueError("logits must have a class axis; got a scalar.")
  axis = v.normalize_axis(axis, logits.ndim)
  num_classes = logits.shape[axis]
  if num_classes == 0:
    raise ValueError(f"logits of shape {logits.shape} have no classes along axis {axis}.")
  batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]

  labels = jnp.asarray(labels)
  if labels.shape == batch_shape:
    hard = True
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(
          f"labels of shape {labels.shape} match the batch shape of logits {logits.shape}, so "
          f"they are read as class ids, but their dtype is {labels.dtype}; class ids must be "
          f"integers (cast with .astype(jnp.int32)), and probability labels must have the shape "
          f"of the logits.")
  elif labels.shape == logits.shape:
    hard = False
    if not jnp.issubdtype(labels.dtype, jnp.floating):
      raise TypeError(
          f"labels of shape {labels.shape} match the shape of the logits, so they are read as "
          f"probability vectors, but their dtype is {labels.dtype}; probabilities must be "
          f"floating point, and class ids must have the batch shape {batch_shape}.")
  else:
    raise ValueError(
        f"labels of shape {labels.shape} match neither the batch shape {batch_shape} of logits "
        f"{logits.shape} (class ids, classes on axis {axis}) nor the shape of the logits "
        f"(probability vectors).")

  if (isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real)):
    raise TypeError(f"label_smoothing must be a Python float in [0, 1]; got {label_smoothing!r}.")
  if not 0.0 <= float(label_smoothing) <= 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing!r}.")

  if class_weights is not None:
    class_weights = v.as_float_array(class_weights, "class_weights")
    if class_weights.shape != (num_classes,):
      raise ValueError(f"class_weights must have shape ({num_classes},), one weight per class "
                       f"of logits {logits.shape} along axis {axis}; got {class_weights.shape}.")
    v.check_all(jnp.isfinite(class_weights) & (class_weights >= 0), class_weights,
                "class_weights must be finite and >= 0; got {value} at index {index}.")

  mask = v.broadcast_mask(where, batch_shape)
  if hard:
    v.check_class_ids(labels, num_classes, where=mask)
  else:
    v.check_distribution(labels, axis, "labels", where=mask)
  return logits, labels, hard, axis, float(label_smoothing), class_weights, mask


def _per_example(row_fn, eps, logits, labels, hard, axis, class_weights, mask):
  """Maps ``row_fn(eps, o_C, label, w_C, m)`` over the batch, classes moved last."""
  cdtype = v.compute_dtype(logits.dtype)
  o = jnp.moveaxis(logits.astype(cdtype), axis, -1)
  labels = v.widen_ids(labels) if hard else jnp.moveaxis(labels.astype(cdtype), axis, -1)
  w = None if class_weights is None else class_weights.astype(cdtype)
  in_axes = (0, 0, None, None if mask is None else 0)
  fn = vmap_rows(functools.partial(row_fn, eps), o.ndim - 1, in_axes)
  return fn(o, labels, w, mask)


@functools.partial(jax.jit, static_argnames=("hard", "axis", "eps", "reduction"))
def _cross_entropy(logits, labels, class_weights, mask, *, hard, axis, eps, reduction):
  row = _hard_loss_row if hard else _soft_loss_row
  loss = _per_example(row, eps, logits, labels, hard, axis, class_weights, mask)
  if reduction == "none":
    return loss
  total = jnp.sum(loss)
  if reduction == "sum":
    return total
  # "mean": torch's normalisation. Class ids: Σ of the weights of the kept examples' labels
  # (their count without weights). Probability labels: the number of kept examples.
  if hard and class_weights is not None:
    safe = jnp.clip(v.widen_ids(labels), 0, logits.shape[axis] - 1)  # to gather; range checked
    kept = class_weights.astype(loss.dtype)[safe]
    norm = jnp.sum(kept if mask is None else jnp.where(mask, kept, 0))
  else:
    norm = jnp.asarray(loss.size if mask is None else jnp.sum(mask), loss.dtype)
  # Nothing kept (all masked, or zero total weight): the loss is 0, not torch's 0/0 = NaN.
  return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1), 0)


@functools.partial(jax.jit, static_argnames=("hard", "axis", "eps"))
def _cross_entropy_grad(logits, labels, class_weights, mask, *, hard, axis, eps):
  row = _grad_row(_hard_terms if hard else _soft_terms)
  grad = _per_example(row, eps, logits, labels, hard, axis, class_weights, mask)
  return jnp.moveaxis(grad, -1, axis)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def cross_entropy(logits: ArrayLike, labels: ArrayLike, *, axis: int = -1,
                  label_smoothing: float = 0.0, class_weights: ArrayLike | None = None,
                  where: ArrayLike | None = None, reduction: str = "none") -> jax.Array:
  r"""Softmax cross-entropy between logits and class ids or probability vectors.

  For one example with logits ``o``, target ``y`` (one-hot of a class id, or a probability
  vector), smoothing ``ε`` and class weights ``w``:

  .. math::
     y' = (1-ε)\,y + ε/C, \qquad
     l(o, y) = -\sum_j w_j\, y'_j \log\mathrm{softmax}(o)_j
             = \Big(\sum_j w_j y'_j\Big)\operatorname{LSE}(o) - \sum_j w_j y'_j o_j

  and its gradient is the closed form ``∂l/∂o = softmax(o)·Σ_j w_j y'_j − w ⊙ y'``, which is
  ``softmax(o) − y`` without weights or smoothing.

  Semantics are those of ``torch.nn.functional.cross_entropy`` (``weight=class_weights``,
  ``label_smoothing``, ``reduction``; ``where=False`` plays ``ignore_index``):

  * ``"none"``: the per-example losses, masked ones 0.
  * ``"sum"``: their sum.
  * ``"mean"``: with class ids, the sum divided by the total weight ``Σ_n w_{y_n}`` of the kept
    examples (their count without weights); with probability labels, divided by the number of
    kept examples. When nothing is kept this returns 0 where PyTorch returns NaN.

  Bad input raises eagerly (labels out of ``[0, C)``, probabilities that are negative or do not
  sum to 1, mismatched shapes, the wrong label dtype, weights of the wrong length). Under ``jit``
  wrap the caller in :func:`softmax_jax.checked` for the same checks; unchecked, an out-of-range
  class id gives a NaN loss for that example, never a silently clamped index.

  Args:
    logits: shape ``[..., C, ...]`` with the ``C`` classes along ``axis``; floating point.
    labels: integer class ids of the logits' shape without ``axis``, or floating probability
      vectors of the logits' shape (soft labels such as ``(0.1, 0.2, 0.7)``).
    axis: the class axis of ``logits`` (and of probability labels).
    label_smoothing: ``ε`` in ``[0, 1]``, mixing the target with the uniform distribution.
    class_weights: optional ``[C]`` non-negative weights, one per class.
    where: optional boolean mask of the batch shape (logits without ``axis``); ``False``
      examples are ignored: loss 0, gradient 0, and left out of the ``"mean"``.
    reduction: ``"none"``, ``"mean"`` or ``"sum"``.

  Returns:
    float32 (float64 for float64 logits): the batch shape for ``"none"``, else a scalar.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.2 (log-likelihood) and §4.1.3 (softmax and
    cross-entropy loss, derivatives); Szegedy et al., 2016 (label smoothing).
  """
  v.check_reduction(reduction)
  logits, labels, hard, axis, eps, w, mask = _prepare(logits, labels, axis, label_smoothing,
                                                      class_weights, where)
  return _cross_entropy(logits, labels, w, mask, hard=hard, axis=axis, eps=eps,
                        reduction=reduction)


def cross_entropy_grad(logits: ArrayLike, labels: ArrayLike, *, axis: int = -1,
                       label_smoothing: float = 0.0, class_weights: ArrayLike | None = None,
                       where: ArrayLike | None = None) -> jax.Array:
  r"""The closed-form gradient of each example's :func:`cross_entropy` with respect to its logits.

  .. math:: \frac{\partial l}{\partial o} = \mathrm{softmax}(o)\sum_j w_j y'_j - w \odot y'

  which is ``softmax(o) − y`` without weights or smoothing. It is what the loss's backward pass
  evaluates; this function exposes it for tests and notebooks. Masked examples get 0. For a
  reduction, scale it: by 1 for ``"sum"``, by ``1/norm`` for ``"mean"``.

  Args:
    logits, labels, axis, label_smoothing, class_weights, where: as in :func:`cross_entropy`.

  Returns:
    Array of the shape of ``logits``, in float32 (float64 for float64 logits).

  References:
    Zhang et al., Dive into Deep Learning, §4.1.3 (eq. 4.1.10).
  """
  logits, labels, hard, axis, eps, w, mask = _prepare(logits, labels, axis, label_smoothing,
                                                      class_weights, where)
  return _cross_entropy_grad(logits, labels, w, mask, hard=hard, axis=axis, eps=eps)


def _softplus(x: jax.Array) -> jax.Array:
  """log(1 + e^x) without overflow: max(x, 0) + log1p(e^−|x|); exact for |x| up to float max."""
  return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@jax.custom_jvp
def _sigmoid_ce(o, y, m):
  # −[y log σ(o) + (1−y) log(1−σ(o))] = y·softplus(−o) + (1−y)·softplus(o); 0·inf = 0.
  loss = _times(y, _softplus(-o)) + _times(1 - y, _softplus(o))
  return loss if m is None else jnp.where(m, loss, 0)


@_sigmoid_ce.defjvp
def _sigmoid_ce_jvp(primals, tangents):
  o, y, m = primals
  do, dy, _ = tangents
  grad_o = jax.nn.sigmoid(o) - y  # closed form, finite for any o
  grad_y = -o  # softplus(−o) − softplus(o)
  if m is not None:
    grad_o, grad_y = jnp.where(m, grad_o, 0), jnp.where(m, grad_y, 0)
  return _sigmoid_ce(o, y, m), grad_o * do + grad_y * dy


def sigmoid_cross_entropy(logits: ArrayLike, labels: ArrayLike, *,
                          where: ArrayLike | None = None, reduction: str = "none") -> jax.Array:
  r"""Binary cross-entropy of independent labels, for multi-label classification.

  Each entry is its own Bernoulli with ``p = σ(o)``:

  .. math:: l(o, y) = -[y \log p + (1-y)\log(1-p)] = y\,\mathrm{sp}(-o) + (1-y)\,\mathrm{sp}(o),
     \quad \frac{\partial l}{\partial o} = \sigma(o) - y

  with ``sp(x) = max(x, 0) + log1p(exp(−|x|))``, which is exact and finite for ``|o|`` up to the
  float maximum (3.4e38 in float32). The loss of an example is the sum over its labels:
  ``sigmoid_cross_entropy(o, y).sum(-1)``. Semantics follow PyTorch's
  ``binary_cross_entropy_with_logits``: ``"mean"`` averages over the kept entries.

  Args:
    logits: floating point, any shape.
    labels: floating point of the same shape, each in ``[0, 1]`` (multi-hot or probabilities).
    where: optional boolean mask broadcastable to ``logits``; masked entries give 0.
    reduction: ``"none"`` (elementwise), ``"mean"`` or ``"sum"``.

  Returns:
    float32 (float64 for float64 logits): the shape of ``logits`` for ``"none"``, else a scalar.

  References:
    Zhang et al., Dive into Deep Learning, §4.1 (multi-label classification);
    Tsoumakas & Katakis, Multi-label classification: an overview, 2007.
  """
  v.check_reduction(reduction)
  logits = v.as_float_array(logits, "logits")
  labels = jnp.asarray(labels)
  if labels.shape != logits.shape:
    raise ValueError(f"labels of shape {labels.shape} must have the shape of logits "
                     f"{logits.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    raise TypeError(f"labels must be floating point in [0, 1]; got dtype {labels.dtype}. Cast "
                    f"multi-hot integer labels with .astype(jnp.float32).")
  mask = v.broadcast_mask(where, logits.shape)
  ok = (labels >= 0) & (labels <= 1)
  v.check_all(ok if mask is None else ok | ~mask, labels,
              "labels must be in [0, 1]; got {value} at index {index} ({count} such entries).")
  return _sigmoid_cross_entropy(logits, labels, mask, reduction=reduction)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _sigmoid_cross_entropy(logits, labels, mask, *, reduction):
  cdtype = v.compute_dtype(logits.dtype)
  loss = _sigmoid_ce(logits.astype(cdtype), labels.astype(cdtype), mask)
  if reduction == "none":
    return loss
  total = jnp.sum(loss)
  if reduction == "sum":
    return total
  norm = jnp.asarray(loss.size if mask is None else jnp.sum(mask), cdtype)
  return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1), 0)
