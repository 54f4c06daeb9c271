r"""Cross-entropy losses with closed-form derivatives (D2L §4.1.2 and §4.1.3).

:func:`cross_entropy` is the softmax cross-entropy with the semantics of PyTorch's
``torch.nn.functional.cross_entropy`` (``weight``, ``ignore_index`` as ``where``, ``reduction``,
``label_smoothing``, hard or soft targets), so the two compare one to one.
:func:`sigmoid_cross_entropy` is the per-label binary form for multi-label classification.

The per-example loss is written for one example and ``vmap``-ped over the batch. Its derivative
is a ``custom_jvp`` whose tangent is the closed form ``softmax(o) − y``: reverse mode transposes
it, so ``jax.grad`` evaluates exactly ``(softmax(o) − y) · ct`` and never differentiates through
``exp`` or ``log``. Forward mode, ``jax.hessian`` and any higher order work as well (a
``custom_vjp`` would rule them out); the second derivative is ``diag(p) − ppᵀ``. Class ids, what
training differentiates, and probability labels take batch-level rules of the same closed form
for every reduction (``"mean"``/``"sum"`` folded in, ``"none"`` per row): they write the
gradient in one pass and, with donated logits, into their buffer, also when the caller reduces
``"none"`` with ``.mean()`` (the fastest cross-entropy here; see BENCHMARKS.md). Tests hold them
equal to the per-example rules, their reference, limits included.

Numerics: logits are shifted by their row max; ``0 · log 0 = 0`` (a class with zero target mass
contributes nothing even if its logit is ``-inf``); float16/bfloat16 accumulate in float32 and
the loss is float32. A loss whose exact value exceeds the float range (the label's logit
``−3e38`` while another is ``+3e38``) rounds to ``+inf``, as IEEE arithmetic does; it is never NaN
for non-NaN input. A loss that fits is finite even where the logits span more than the float
range: the sums weighted by ``ε/C``, soft labels or class weights are taken in halves
(`_half_shifted`). NaN logits give a NaN loss, as in optax and PyTorch, unless masked out.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax._precision import times_pow2
from softmax_jax.softmax import vmap_rows

_is_zero = v.is_zero_tangent


@jax.custom_jvp
def _times(a: jax.Array, b: jax.Array) -> jax.Array:
  """a·b with 0·(±inf) = 0: a class with zero weight contributes nothing.

  Its derivative in ``a`` is ``b`` wherever ``b`` is finite, ``a = 0`` included (the select alone
  gave 0 there, so the derivative of the weight gradient ``−t_c·ls_c`` in a zero target ``t_c``
  came out 0 instead of ``−ls_c``). Where ``a = 0`` and ``b`` is not finite it is 0: the class
  does not enter the loss, and a masked row's NaN stays out of its tangent.
  """
  return jnp.where(a == 0, 0, a * b)


def times_tangent(a, b, da, db, like):
  """`_times`' tangent (``da``, ``db`` may be symbolic zeros; ``like`` is its value): a constant
  ``a`` beside ``b = −inf`` adds 0, not NaN. Shared with :mod:`softmax_jax.info`."""
  zero = a == 0
  dout = jnp.zeros_like(like)
  if not _is_zero(da):
    dout = dout + da * jnp.where(zero & ~jnp.isfinite(b), 0, b)
  if not _is_zero(db):
    dout = dout + jnp.where(zero, 0, a * db)
  return dout


def _times_jvp(primals, tangents):
  out = _times(*primals)
  return out, times_tangent(*primals, *tangents, like=out)


_times.defjvp(_times_jvp, symbolic_zeros=True)


# ----------------------------------------------------------------------------------------------
# Per-example kernels, in the compute dtype. `eps` is the label smoothing (static); `w_C` the
# class weights or None; `m` the example's mask (bool scalar) or None.
#
# Speed (issue: the fastest cross-entropy in JAX) comes from the shape of the derivative rule.
# The tangent is written as (Σv/s)·Σ_c e_c·do_c − Σ_c v_c·do_c with e = exp(o − max) and
# s = Σ e: the exponentials computed for the log-sum-exp are the only residual, so reverse mode
# evaluates exp once per logit, and the label's −v_y·do_y is a gather whose transpose is a
# scatter of n values, not a dense one-hot (an iota == label compare inside the gradient's loop
# fusion made it 2.5× slower on CPU).
# ----------------------------------------------------------------------------------------------


class _Row(NamedTuple):
  """One example's loss and the coefficients of its derivatives, already masked.

  A masked example has loss 0 and zero coefficients (whatever its logits: even NaN logits give
  a zero gradient, as the coefficients, not the cotangents, are masked). An invalid class id has
  a NaN loss and NaN coefficients.
  """

  loss: jax.Array  # scalar
  e_C: jax.Array  # exp(o − max): the softmax before normalising
  scale: jax.Array  # Σ_c v_c / s: the gradient is e·scale − v
  v_C: jax.Array | None  # the weighted target (soft labels); None for class ids
  label: jax.Array  # class ids: the label and its coefficient (1−ε)·w_y
  label_coef: jax.Array
  smooth_coef: jax.Array  # class ids: ε/C, the coefficient of Σ_c w_c·do_c
  zh_C: jax.Array  # (o − max)/2 (`_half_shifted`); with log_s, the halved log-softmax that the
  # derivatives in the weights and targets use (only formed where needed)
  log_s: jax.Array

  @property
  def lsh_C(self) -> jax.Array:
    """``ls/2``, finite wherever ``o`` is (``ls`` itself overflows where a row spans more than
    the float range)."""
    return self.zh_C - 0.5 * self.log_s


def _shift(m):
  """The row shift and whether the row's max is +inf: the max, but 0 where it is ±inf.

  A row of −inf stays −inf (its ``Σ exp`` is 0). A NaN max stays NaN, so that NaN logits give a
  NaN loss, as in optax and PyTorch."""
  return jnp.where(jnp.isinf(m), 0, m), m == jnp.inf


def _in_plus_inf_row(o):
  """``o − max`` in a row whose max is +inf: 0 for the +inf entries, −inf for the rest."""
  return jnp.where(o == jnp.inf, 0.0, -jnp.inf)


@jax.custom_jvp
def _shifted(o, shift, plus_inf):
  """``o − max``; in a row whose max is +inf, 0 for the +inf entries and −inf for the rest.

  Its tangent is ``do − dshift`` everywhere, the limit from finite logits: the selects alone
  would make the +inf entries constants, and the derivative of the gradient (the Hessian
  ``diag(p) − ppᵀ``) 0 instead of ¼ at two tied +inf logits.
  """
  return jnp.where(plus_inf, _in_plus_inf_row(o), o - shift)


@_shifted.defjvp
def _shifted_jvp(primals, tangents):
  o, shift, _ = primals
  do, dshift, _ = tangents
  return _shifted(o, shift, primals[2]), do - dshift


@jax.custom_jvp
def _half_shifted(o, shift, plus_inf):
  """``_shifted(o)/2``, computed as ``o/2 − shift/2``, which cannot overflow.

  ``o − max`` overflows to −inf when a row spans more than the float range (``−3e38`` beside
  ``+3e38``), although a loss that weighs it by ``v ≤ 1`` (label smoothing's ``ε/C``, a soft
  label, a class weight) is finite. Weighted sums of halves, doubled at the end, are finite
  wherever the loss is. Halving is exact (but for subnormals), so each term rounds as
  ``v·(o − max)`` would. Its tangent is ``(do − dshift)/2`` everywhere, as `_shifted`'s is
  ``do − dshift``: the derivatives in the weights and targets are taken in halves, and their own
  derivative in a +inf logit is the limit from finite logits, not 0.
  """
  return jnp.where(plus_inf, _in_plus_inf_row(o), 0.5 * o - 0.5 * shift)


@_half_shifted.defjvp
def _half_shifted_jvp(primals, tangents):
  o, shift, _ = primals
  do, dshift, _ = tangents
  return _half_shifted(o, shift, primals[2]), 0.5 * do - 0.5 * dshift


def _row_stats(o_C):
  """The halves of the shifted logits ``z = o − max`` (`_half_shifted`), ``e = exp(z)``,
  ``s = Σ e`` and ``log s``, with softmax.py's limits."""
  shift, plus_inf = _shift(jax.lax.stop_gradient(jnp.max(o_C)))
  z_C = _shifted(o_C, shift, plus_inf)
  e_C = jnp.exp(z_C)
  s = jnp.sum(e_C)
  empty = s == 0  # a row of −inf; a NaN s stays NaN
  s_safe = jnp.where(empty, 1, s)
  return _half_shifted(o_C, shift, plus_inf), e_C, s_safe, jnp.where(empty, 0, jnp.log(s_safe))


def _masked(m, *xs):
  """Each of ``xs`` where the example is kept, 0 where masked (``m`` None: all kept)."""
  return xs if m is None else tuple(jnp.where(m, x, 0) for x in xs)


def _hard_row(eps: float, o_C, y, w_C, m) -> _Row:
  num_classes = o_C.shape[0]
  zh_C, e_C, s, log_s = _row_stats(o_C)
  in_range = (y >= 0) & (y < num_classes)
  y = jnp.where(in_range, y, 0)
  w_y = jnp.ones((), o_C.dtype) if w_C is None else w_C[y]
  # l = −(1−ε)·w_y·ls_y − (ε/C)·Σ_c w_c·ls_c: the one-hot is never formed. In halves
  # (`_half_shifted`), so that a row spanning more than the float range gives a finite loss
  # wherever the loss is finite.
  lsh_C = zh_C - 0.5 * log_s  # ls/2
  loss = -2 * _times((1 - eps) * w_y, lsh_C[y])  # ε = 1: 0, even at a −inf logit
  total = (1 - eps) * w_y  # Σ_c v_c, the mass of the weighted target v
  if eps > 0:
    w_or_1 = jnp.ones_like(o_C) if w_C is None else w_C
    loss = loss - 2 * jnp.sum(_times(eps / num_classes * w_or_1, lsh_C))
    total = total + eps / num_classes * jnp.sum(w_or_1)
  # An out-of-range id (possible only under a plain jit, where values cannot be checked) gives
  # NaN, never a clamped index.
  nan_if_bad = jnp.where(in_range, 0, jnp.nan)
  loss, scale, label_coef = loss + nan_if_bad, total / s + nan_if_bad, (1 - eps) * w_y
  loss, scale, label_coef, smooth_coef = _masked(m, loss, scale, label_coef,
                                                 jnp.asarray(eps / num_classes, o_C.dtype))
  e_C, zh_C, log_s = _masked(m, e_C, zh_C, log_s)  # a masked row's ls/2 = zh − log s/2 is 0 too
  return _Row(loss, e_C, scale, None, y, label_coef, smooth_coef, zh_C, log_s)


def _soft_row(eps: float, o_C, t_C, w_C, m) -> _Row:
  num_classes = o_C.shape[0]
  zh_C, e_C, s, log_s = _row_stats(o_C)
  t_C = (1 - eps) * t_C + eps / num_classes if eps > 0 else t_C
  v_C = t_C if w_C is None else w_C * t_C
  loss = -2 * jnp.sum(_times(v_C, zh_C - 0.5 * log_s))  # in halves, as in _hard_row
  # A masked row's ls/2 = zh − log s/2 is 0 too, so that its targets and weights get no gradient.
  loss, scale, e_C, v_C, zh_C, log_s = _masked(m, loss, jnp.sum(v_C) / s, e_C, v_C, zh_C, log_s)
  zero = jnp.zeros((), o_C.dtype)
  return _Row(loss, e_C, scale, v_C, jnp.zeros((), jnp.int32), zero, zero, zh_C, log_s)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _hard_loss_row(eps, o_C, y, w_C, m):
  return _hard_row(eps, o_C, y, w_C, m).loss


def _hard_loss_row_jvp(eps, primals, tangents):
  o_C, y, w_C, m = primals
  do_C, _, dw_C, _ = tangents
  row = _hard_row(eps, o_C, y, w_C, m)
  out = jnp.zeros_like(row.loss)
  if not _is_zero(do_C):
    # dl = (Σv/s)·Σ e·do − (1−ε)·w_y·do_y − (ε/C)·Σ w·do
    out = row.scale * jnp.sum(row.e_C * do_C) - row.label_coef * do_C[row.label]
    if eps > 0:
      out = out - row.smooth_coef * jnp.sum(do_C if w_C is None else w_C * do_C)
  if w_C is not None and not _is_zero(dw_C):  # ∂l/∂w_c = −((1−ε)·[c = y] + ε/C)·ls_c
    # In halves, doubled last: finite wherever the derivative is, as for the loss.
    lsh_C = row.lsh_C
    dt = jnp.zeros_like(row.loss)
    if eps < 1:  # at ε = 1 the label's term is absent, not 0·(−inf) = NaN at a −inf logit
      dt = (1 - eps) * lsh_C[row.label] * dw_C[row.label]
    if eps > 0:
      dt = dt + jnp.sum(eps / o_C.shape[0] * lsh_C * dw_C)
    out = out - 2 * dt
  return row.loss, out


_hard_loss_row.defjvp(_hard_loss_row_jvp, symbolic_zeros=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _soft_loss_row(eps, o_C, t_C, w_C, m):
  return _soft_row(eps, o_C, t_C, w_C, m).loss


def _soft_loss_row_jvp(eps, primals, tangents):
  o_C, t_C, w_C, m = primals
  do_C, dt_C, dw_C, _ = tangents
  row = _soft_row(eps, o_C, t_C, w_C, m)
  out = jnp.zeros_like(row.loss)
  if not _is_zero(do_C):
    out = row.scale * jnp.sum(row.e_C * do_C) - jnp.sum(row.v_C * do_C)
  # _times: a class of zero weight (or zero target) does not enter the loss, so its derivative
  # is 0 even where ls = −inf. In halves (ls/2), doubled last, as for the loss.
  lsh_C = row.lsh_C
  if not _is_zero(dt_C) and eps < 1:  # ∂l/∂t_c = −(1−ε)·w_c·ls_c: 0 at ε = 1, even at ls = −inf
    coef_C = (1 - eps) * (lsh_C if w_C is None else _times(w_C, lsh_C))
    out = out - 2 * jnp.sum(coef_C * dt_C)
  if w_C is not None and not _is_zero(dw_C):  # ∂l/∂w_c = −t'_c·ls_c
    t_C = (1 - eps) * t_C + eps / o_C.shape[0] if eps > 0 else t_C
    out = out - 2 * jnp.sum(_times(t_C, lsh_C) * dw_C)
  return row.loss, out


_soft_loss_row.defjvp(_soft_loss_row_jvp, symbolic_zeros=True)


def _hard_grad_row(eps, o_C, y, w_C, m):
  """The closed-form gradient of one example: e·(Σv/s) − v, v's label entry scattered in."""
  row = _hard_row(eps, o_C, y, w_C, m)
  grad_C = row.e_C * row.scale
  if eps > 0:
    grad_C = grad_C - row.smooth_coef * (1 if w_C is None else w_C)
  return grad_C.at[row.label].add(-row.label_coef)


def _soft_grad_row(eps, o_C, t_C, w_C, m):
  row = _soft_row(eps, o_C, t_C, w_C, m)
  return row.e_C * row.scale - row.v_C


# ----------------------------------------------------------------------------------------------
# The loss of class ids, every reduction: one batch-level rule, the fast path.
#
# The rule forms the closed-form gradient of what it returns while differentiating: for "mean"
# and "sum" that of the *reduced* loss, G = r_n·(Σv_n·softmax(o_n) − v_n) with r_n = 1/norm
# ("mean") or 1 ("sum"), with the tangent Σ G·do; for "none" each row's, with the tangent
# Σ_c G_nc·do_nc per row. Reverse mode transposes either into ct·G, one elementwise pass: training
# differentiates a scalar, `jax.grad` seeds its cotangent with the constant 1, and XLA folds it
# (after a caller's `.mean()` of "none", ct is the constant 1/N, folded the same way), so the
# gradient is written once, by one fusion. The per-example rules above (the reference for the
# batch rules here, of class ids and of probability labels) are vmapped per row; for class ids
# they differentiate `do[label]`, a gather whose transpose scatters into the gradient, and each
# row is scaled by its own cotangent afterwards. Details that make the most of it on a CPU
# (BENCHMARKS.md):
# * With donated logits XLA copied them first (128 MiB at 1024 × 32768), because the gather of
#   the label logits was not ordered before the gradient's write into their buffer; the row max
#   is taken as max(max_c o_c, o_y), the same number, which orders the two.
# * Row vectors that enter the gradient's write end in a division, which XLA does not recompute
#   per entry, unlike cheap selects and compares.
# The values are those of the per-example kernels; tests compare the two, limits included.
# ----------------------------------------------------------------------------------------------

# Rows longer than this are summed as k rows of C/k: XLA:CPU's row sum ran 7× slower on rows of
# 131072 floats than on rows of 32768 (jax 0.10.2; see BENCHMARKS.md).
_MAX_REDUCED_ROW = 32768


_UNROLLED_ROW = 12


def _row_reduce(reduce, x_NC):
  """``reduce(x, axis=1)``, long rows reduced in pieces of at most 32768 entries.

  Rows of at most 12 entries are reduced as a chain of elementwise ops, which XLA fuses with
  their neighbours: with 10 classes the whole value_and_grad went from 0.97–1.02× optax to
  1.22–1.30× on a CPU (4096 rows). At 16 classes the chain was slower than a reduction.
  """
  n, c = x_NC.shape
  if c <= _UNROLLED_ROW:
    op = {jnp.max: jnp.maximum, jnp.sum: jnp.add}[reduce]
    return functools.reduce(op, [x_NC[:, j] for j in range(c)])
  k = 1
  if c > _MAX_REDUCED_ROW:
    k = next((k for k in range(2, c) if c % k == 0 and c // k <= _MAX_REDUCED_ROW), 1)
  return reduce(reduce(x_NC.reshape(n * k, c // k), axis=1).reshape(n, k), axis=1)


@jax.custom_jvp
def _exp_shifted(o_NC, m_N):
  """``exp(_shifted(o))`` for a batch with row maxima ``m``, with one select per entry.

  ``exp(clamp(a·o) − shift)`` with, per row, ``shift = m`` clipped to the finite range and
  ``a = 1``, except ``a = ½`` where ``m = +inf``, and ``clamp`` taking +inf to the float maximum:
  for a finite or NaN ``m`` the argument is exactly ``o − m``; a row of −inf stays −inf (its
  ``Σ exp`` is 0); in a row whose max is +inf the +inf entries give ``exp(0) = 1`` and every
  other entry, even the float maximum, ``exp(≤ −max/2) = 0``. `_shifted`'s selects, per entry,
  made this pass 1.2× slower on a CPU (0.37 against 0.30 ms for the whole value_and_grad at
  4096 × 10).

  The clamp is a select, not ``jnp.minimum``. XLA:CPU's fused reductions drop a NaN through
  min and max, at 4096 classes and more. With ``minimum`` a NaN logit gave ``exp(max) = inf``
  and a loss of +inf. With the select it stays NaN, and so do ``Σ exp`` and the row's loss and
  gradient. The cost measured the same.
  """
  return _exp_shifted_value(o_NC, m_N)


def _exp_shifted_value(o_NC, m_N, log_s_N=None):
  """`_exp_shifted`'s value, not differentiated (``linear_ce`` has rules of its own); with
  ``log_s_N``, ``exp(z − log s)``: the softmax from a row's max and ``log Σ exp``."""
  big = jnp.finfo(o_NC.dtype).max
  a_N = 1 - 0.5 * jnp.clip(m_N - big, 0, 1)  # ½ where m = +inf, else 1
  scaled = o_NC * a_N[:, None]
  z_NC = jnp.where(scaled > big, big, scaled) - jnp.clip(m_N, -big, big)[:, None]
  return jnp.exp(z_NC if log_s_N is None else z_NC - log_s_N[:, None])


@_exp_shifted.defjvp
def _exp_shifted_jvp(primals, tangents):
  """``e·(do − dm)``: the limit from finite logits, also at +inf entries (see `_shifted`)."""
  o_NC, m_N = primals
  do_NC, dm_N = tangents
  e_NC = _exp_shifted(o_NC, m_N)
  return e_NC, e_NC * (do_NC - dm_N[:, None])


class _Batch(NamedTuple):
  """A batch of class ids: its loss (per row for ``"none"``) and the row vectors of its gradient.

  The gradient of ``loss`` is ``G = e·scale − smooth·w − label·onehot(y)``, masked, with
  ``e = exp(_shifted(o))`` (`_exp_shifted`). The row vectors it reads are each the result of a
  division, which XLA does not recompute per entry; cheaper row arithmetic fused into the
  gradient's write was recomputed for every logit there and made it 2.8× slower.
  """

  loss: jax.Array  # the loss: [N] for "none", else reduced
  e_NC: jax.Array  # exp(_shifted(o)), from `_exp_shifted`
  shift_N: jax.Array  # `_shift` of the row max
  plus_inf_N: jax.Array
  log_s_N: jax.Array
  y_N: jax.Array  # in-range ids (0 where out of range)
  z_y_N: jax.Array  # `_shifted` logit of the label
  lsh_y_N: jax.Array  # its half, from `_half_shifted` (finite wherever the logits are)
  scale_N: jax.Array  # r·Σv/s
  label_N: jax.Array  # r·(1−ε)·w_y
  smooth_N: jax.Array  # r·ε/C
  keep_N: jax.Array  # 1 for a kept example, 0 for a masked one (or if nothing is kept), NaN
  # for an out-of-range id
  norm: jax.Array  # the "mean" normaliser (1 for "sum")


def _batch(eps: float, reduction: str, o_NC, y_N, w_C, m_N) -> _Batch:
  """``o_NC`` in its own dtype: float16/bfloat16 are widened inside each fusion that reads them,
  never written out widened (that conversion was a pass of its own)."""
  n, num_classes = o_NC.shape
  cdtype = v.compute_dtype(o_NC.dtype)
  in_range = (y_N >= 0) & (y_N < num_classes)
  y_N = jnp.where(in_range, y_N, 0)
  # Gathered per row (vmap), so that a batch sharded over devices stays sharded.
  o_y = jax.vmap(lambda o_C, y: o_C[y])(o_NC, y_N).astype(cdtype)
  # max(m, o_y) is m (o_y is in the row), but it makes the gradient's write depend on the gather
  # of o_y, so that XLA overwrites donated logits in place instead of copying them first.
  m = jax.lax.stop_gradient(jnp.maximum(_row_reduce(jnp.max, o_NC).astype(cdtype), o_y))
  shift, plus_inf = _shift(m)
  o_NC = o_NC.astype(cdtype)
  e_NC = _exp_shifted(o_NC, m)
  s = _row_reduce(jnp.sum, e_NC)
  s = jnp.where(s == 0, 1, s)  # a row of −inf: s = 1, log s = 0; NaN stays NaN
  log_s = jnp.log(s)
  z_y = _shifted(o_y, shift, plus_inf)
  ls_y = z_y - log_s
  lsh_y = _half_shifted(o_y, shift, plus_inf) - 0.5 * log_s
  w_y = jnp.ones((), cdtype) if w_C is None else w_C[y_N]
  if w_C is None and eps == 0:
    loss = -ls_y  # overflows only where the loss does
  else:
    # In halves (`_half_shifted`), as in `_hard_row`: finite wherever the loss is. (Not for
    # plain class ids, where it added a row fusion and 16 KB of temp memory at 4096 × 10.)
    loss = -2 * _times((1 - eps) * w_y, lsh_y)  # ε = 1: 0, even at a −inf logit
  total = (1 - eps) * w_y  # Σv, the mass of the weighted target
  if eps > 0:
    a = eps / num_classes
    if w_C is None:
      # (ε/C)·Σ_c ls_c = (ε/C)·Σ_c (o_c − shift) − ε·log s; in a row whose max is +inf it is
      # −inf unless every entry is +inf (then s = C and each ls_c = −log C). Where the plain
      # sum is −inf (it overflowed, a row spanning more than the float range, or a logit is
      # −inf) it is taken again in halves, 2·Σ_c (ε/C)·(o_c/2 − shift/2), finite wherever the
      # loss is. Only then: the halves in every call made the smoothed loss 5–10% slower at
      # 4096 × 1000 on a CPU.
      sum_z = _row_reduce(jnp.sum, o_NC - shift[:, None])
      over = (sum_z == -jnp.inf) & ~plus_inf

      def in_halves():
        sum_zh = _row_reduce(jnp.sum, a * (0.5 * o_NC - 0.5 * shift[:, None]))
        return jnp.where(over, 2 * sum_zh, a * sum_z)

      a_sum_z = jax.lax.cond(jnp.any(over), in_halves, lambda: a * sum_z)
      a_sum_z = jnp.where(plus_inf, jnp.where(s == num_classes, 0, -jnp.inf), a_sum_z)
      loss = loss - (a_sum_z - eps * log_s)
      total = total + eps
    else:
      lsh = _half_shifted(o_NC, shift[:, None], plus_inf[:, None]) - 0.5 * log_s[:, None]
      loss = loss - 2 * jnp.sum(_times(a * w_C[None, :], lsh), axis=1)
      total = total + a * jnp.sum(w_C)
  # An out-of-range id that is not masked (possible only under a plain jit, where values cannot
  # be checked) gives NaN, never a clamped index.
  nan_if_bad = jnp.where(in_range if m_N is None else in_range | ~m_N, 0, jnp.nan)
  loss = loss + nan_if_bad
  kept = in_range if m_N is None else in_range & m_N
  if m_N is not None:
    loss = jnp.where(m_N, loss, 0)
  if reduction == "mean":
    norm = _mean_norm(n, None if w_C is None else w_y, m_N, cdtype)
  else:
    norm = jnp.ones((), cdtype)
  has = norm > 0
  norm = jnp.where(has, norm, 1)
  reduced = loss if reduction == "none" else jnp.where(has, jnp.sum(loss) / norm, 0)
  # Each coefficient is keep·x/norm: x/norm for a kept example, 0 for a masked one (or when
  # nothing is kept), NaN for an out-of-range id.
  keep = jnp.where(has & kept, 1, 0).astype(cdtype) + nan_if_bad
  return _Batch(reduced, e_NC, shift, plus_inf, log_s, y_N, z_y, lsh_y,
                keep * total / (norm * s),
                keep * ((1 - eps) * w_y) / norm, keep * (eps / num_classes) / norm, keep, norm)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _hard_loss_batch(eps, reduction, o_NC, y_N, w_C, m_N):
  return _batch(eps, reduction, o_NC, y_N, w_C, m_N).loss


def _batch_grad(eps, b: _Batch, o_NC, w_C, m_N):
  """``G``, the gradient of ``b.loss`` (each row's, for ``"none"``), in the logits' dtype.

  The label's entry, ``e_y·scale − v_y``, is computed per row in the compute dtype and selected
  in; masked rows are 0 even where their logits are NaN.
  """
  g_NC = b.e_NC * b.scale_N[:, None]
  g_y = jnp.exp(b.z_y_N) * b.scale_N - b.label_N
  if eps > 0:
    g_NC = g_NC - b.smooth_N[:, None] * (1 if w_C is None else w_C[None, :])
    g_y = g_y - b.smooth_N * (1 if w_C is None else w_C[b.y_N])
  if m_N is not None:
    g_NC = jnp.where(m_N[:, None], g_NC, 0)
    g_y = jnp.where(m_N, g_y, 0)
  # A select, not a scatter: XLA:CPU scatters 16-bit floats through float32 copies of the
  # whole gradient, and a select keeps it one elementwise pass on every backend and sharding.
  at_y = jnp.arange(o_NC.shape[1])[None, :] == b.y_N[:, None]
  return jnp.where(at_y, g_y[:, None], g_NC).astype(o_NC.dtype)


def _logits_tangent(reduction, loss, do_NC, grad_fn):
  """The batch rules' sum over tangents, and the part of the loss's tangent from the logits.

  ``total`` sums per row for ``"none"`` (one term per example) and over everything for
  ``"mean"``/``"sum"`` (their 1/norm is in the coefficients). The logits' part is ``total(G·do)``
  with ``G = grad_fn()``, the product taken in the logits' dtype so that reverse mode's ``ct·G``
  stays in it (and folds); 0 when ``do`` is a symbolic zero.
  """
  total = functools.partial(jnp.sum, axis=1 if reduction == "none" else None)
  if _is_zero(do_NC):
    return total, jnp.zeros_like(loss)
  return total, total((grad_fn() * do_NC).astype(loss.dtype))


def _hard_loss_batch_jvp(eps, reduction, primals, tangents):
  o_NC, y_N, w_C, m_N = primals
  do_NC, _, dw_C, _ = tangents
  b = _batch(eps, reduction, o_NC, y_N, w_C, m_N)
  total, out = _logits_tangent(reduction, b.loss, do_NC,
                               lambda: _batch_grad(eps, b, o_NC, w_C, m_N))
  if w_C is not None and not _is_zero(dw_C):
    # L = T/norm: dL = (dT − L·dnorm)/norm with ∂l_n/∂w_c = −((1−ε)·[c = y_n] + ε/C)·ls_nc,
    # taken in halves (ls/2) and doubled, as the loss is: finite wherever dT is. (Dividing each
    # row by norm first lost the exact 0 of dT − L·dnorm where w_c cancels from the mean.)
    r = b.keep_N
    # _times: a masked row (r = 0) adds 0 even where its log-softmax is −inf.
    dt = jnp.zeros(b.lsh_y_N.shape, b.loss.dtype)
    if eps < 1:  # at ε = 1 the label's term is absent, not 0·(−inf) = NaN at a −inf logit
      dt = (1 - eps) * (_times(r, b.lsh_y_N) * dw_C[b.y_N])
    if reduction != "none":
      dt = jnp.sum(dt)
    if eps > 0:
      lsh = (_half_shifted(o_NC.astype(b.loss.dtype), b.shift_N[:, None], b.plus_inf_N[:, None])
             - 0.5 * b.log_s_N[:, None])
      dt = dt + total(_times(r[:, None], eps / o_NC.shape[1] * lsh) * dw_C[None, :])
    dt = -2 * dt
    if reduction == "mean":
      # A select, so that reverse mode passes a masked row 0, not 0·(−L/norm) (NaN if L = inf).
      dnorm = jnp.sum(jnp.where(r != 0, dw_C[b.y_N], 0))
      dt = (dt - b.loss * dnorm) / b.norm
    out = out + dt
  return b.loss, out


_hard_loss_batch.defjvp(_hard_loss_batch_jvp, symbolic_zeros=True)


# Probability labels: the same batch rule, with the target a full row v = w ⊙ ((1−ε)t + ε/C).


class _SoftBatch(NamedTuple):
  """A batch of probability labels: its loss (per row for ``"none"``) and its gradient's parts,
  ``G = e·scale − r·v`` (masked), with ``r = keep/norm`` and ``scale = r·Σv/s``."""

  loss: jax.Array
  e_NC: jax.Array  # exp(_shifted(o))
  v_NC: jax.Array  # w ⊙ t', the weighted smoothed target
  t_NC: jax.Array  # t', the smoothed target
  shift_N: jax.Array
  plus_inf_N: jax.Array
  log_s_N: jax.Array
  scale_N: jax.Array
  r_N: jax.Array


def _soft_batch(eps: float, reduction: str, o_NC, t_NC, w_C, m_N) -> _SoftBatch:
  n, num_classes = o_NC.shape
  cdtype = v.compute_dtype(o_NC.dtype)
  m = jax.lax.stop_gradient(_row_reduce(jnp.max, o_NC).astype(cdtype))
  shift, plus_inf = _shift(m)
  o_NC = o_NC.astype(cdtype)
  t_NC = t_NC.astype(cdtype)
  if eps > 0:
    t_NC = (1 - eps) * t_NC + eps / num_classes
  v_NC = t_NC if w_C is None else w_C[None, :] * t_NC
  total = _row_reduce(jnp.sum, v_NC)  # Σv
  # l = −Σ v·(z − log s) = −Σ v·z + Σv·log s: both terms ≥ 0, so nothing cancels, and the pass
  # over the logits (Σ v·z) needs no log s. exp(z) is written into donated logits, so it must
  # wait for that pass, or XLA copies the logits first: max(m, min(m, −|Σ v·z|)) is m (NaN only
  # where the row's loss is NaN anyway), and makes it wait, as max(m, o_y) does for class ids.
  # In halves (`_half_shifted`), doubled only in the loss: finite wherever the loss is (a
  # factor 2 applied to the row sum itself split this pass in two at 10 classes, 1.2× slower).
  v_zh = _row_reduce(jnp.sum, _times(v_NC, _half_shifted(o_NC, shift[:, None], plus_inf[:, None])))
  m = jnp.maximum(m, jnp.minimum(m, -jnp.abs(jax.lax.stop_gradient(v_zh))))
  e_NC = _exp_shifted(o_NC, m)
  s = _row_reduce(jnp.sum, e_NC)
  s = jnp.where(s == 0, 1, s)  # a row of −inf: s = 1, log s = 0; NaN stays NaN
  log_s = jnp.log(s)
  loss = -2 * v_zh + _times(total, log_s)
  kept = jnp.ones((n,), bool) if m_N is None else m_N
  if m_N is not None:
    loss = jnp.where(m_N, loss, 0)
  norm = (_mean_norm(n, None, m_N, cdtype) if reduction == "mean" else jnp.ones((), cdtype))
  has = norm > 0
  norm = jnp.where(has, norm, 1)
  reduced = loss if reduction == "none" else jnp.where(has, jnp.sum(loss) / norm, 0)
  r = jnp.where(has & kept, 1, 0).astype(cdtype) / norm
  return _SoftBatch(reduced, e_NC, v_NC, t_NC, shift, plus_inf, log_s, r * total / s, r)


def _soft_batch_grad(b: _SoftBatch, o_NC, m_N):
  """``G = e·scale − r·v``, masked rows 0 (even with NaN logits), in the logits' dtype."""
  g_NC = b.e_NC * b.scale_N[:, None] - b.r_N[:, None] * b.v_NC
  if m_N is not None:
    g_NC = jnp.where(m_N[:, None], g_NC, 0)
  return g_NC.astype(o_NC.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _soft_loss_batch(eps, reduction, o_NC, t_NC, w_C, m_N):
  return _soft_batch(eps, reduction, o_NC, t_NC, w_C, m_N).loss


def _soft_loss_batch_jvp(eps, reduction, primals, tangents):
  o_NC, t_NC, w_C, m_N = primals
  do_NC, dt_NC, dw_C, _ = tangents
  b = _soft_batch(eps, reduction, o_NC, t_NC, w_C, m_N)
  total, out = _logits_tangent(reduction, b.loss, do_NC, lambda: _soft_batch_grad(b, o_NC, m_N))
  if _is_zero(dt_NC) and (w_C is None or _is_zero(dw_C)):
    return b.loss, out
  # ∂l/∂t_c = −(1−ε)·w_c·ls_c and ∂l/∂w_c = −t'_c·ls_c, times r (0 for a masked row, where ls
  # may be NaN or −inf: hence _times). In halves (ls/2), doubled last, as for the loss.
  lsh = (_half_shifted(o_NC.astype(b.loss.dtype), b.shift_N[:, None], b.plus_inf_N[:, None])
         - 0.5 * b.log_s_N[:, None])
  r_lsh = _times(b.r_N[:, None], lsh)
  if not _is_zero(dt_NC) and eps < 1:  # at ε = 1 the targets do not enter the loss
    coef = (1 - eps) * (r_lsh if w_C is None else _times(w_C[None, :], r_lsh))
    out = out - 2 * total(coef * dt_NC.astype(b.loss.dtype))
  if w_C is not None and not _is_zero(dw_C):
    out = out - 2 * total(_times(b.t_NC, r_lsh) * dw_C[None, :])
  return b.loss, out


_soft_loss_batch.defjvp(_soft_loss_batch_jvp, symbolic_zeros=True)


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

  labels = v.as_label_array(labels)
  hard = v.label_kind(
      labels, ids_shape=batch_shape, probs_shape=logits.shape,
      ids_desc=f"the batch shape of logits {logits.shape} without the class axis {axis}",
      probs_desc="the shape of the logits")

  label_smoothing = v.check_label_smoothing(label_smoothing)
  class_weights = v.check_class_weights(
      class_weights, num_classes, f"class of logits {logits.shape} along axis {axis}",
      v.compute_dtype(logits.dtype))

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


def scaled_for_mean(w: jax.Array) -> jax.Array:
  """Class weights in the compute dtype, with very large ones brought down by a power of two,
  for ``"mean"`` with class ids: that mean is a ratio of two sums linear in the weights, so the
  scaling changes neither it nor its derivatives (the factor is a constant), but its sums cannot
  overflow (weights of ``2e38`` gave ``inf/inf = NaN``) nor its terms underflow (label smoothing's
  ``ε/q·w`` at weights of ``1e-37``). Only weights whose max reaches ``2^k``, ``k = maxexp/2``
  (float32: ``1.8e19``), or stays below ``2^-k`` (``5.4e-20``), are scaled, to just below
  ``2^k`` or just below ``2^-k``: scaling ordinary weights down would scale the derivatives'
  intermediates up (``∂/∂w`` of a ``1.2e38`` mean at weights of 2 overflowed at a scale of ¼)."""
  w = w.astype(v.compute_dtype(w.dtype))
  k = int(jnp.finfo(w.dtype).maxexp) // 2
  m = jax.lax.stop_gradient(jnp.max(w))
  _, e = jnp.frexp(m)  # m in [2^(e−1), 2^e)
  t = jnp.where((m >= 2.0**k) & (m < jnp.inf), e - k, jnp.where((m > 0) & (m < 2.0**-k), e + k, 0))
  return times_pow2(w, -t)


def reduce_losses(loss: jax.Array, reduction: str, *, mask: jax.Array | None = None,
                  labels: jax.Array | None = None,
                  class_weights: jax.Array | None = None) -> jax.Array:
  """Applies ``reduction`` to per-example losses with PyTorch's ``"mean"`` normalisation.

  ``"mean"`` divides the sum by the total weight of the kept examples' class ids when ``labels``
  and ``class_weights`` are given, else by the number of kept entries. When nothing is kept (all
  masked, or zero total weight) it is 0, not PyTorch's 0/0 = NaN. Shared by every loss here.
  """
  if reduction == "none":
    return loss
  total = jnp.sum(loss)
  if reduction == "sum":
    return total
  w_y = None
  if labels is not None and class_weights is not None:
    safe = jnp.clip(v.widen_ids(labels), 0, class_weights.shape[0] - 1)  # range is checked
    w_y = class_weights.astype(loss.dtype)[safe]
  norm = _mean_norm(loss.size, w_y, mask, loss.dtype)
  return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1), 0)


def _mean_norm(count: int, w_y: jax.Array | None, mask: jax.Array | None, dtype) -> jax.Array:
  """PyTorch's ``"mean"`` normaliser: ``Σ w_y`` over the kept examples (their number without
  weights); shared by `reduce_losses` and the batch rule of class ids."""
  if w_y is not None:
    return jnp.sum(w_y if mask is None else jnp.where(mask, w_y, 0))
  return jnp.asarray(count if mask is None else jnp.sum(mask), dtype)


@functools.partial(jax.jit, static_argnames=("hard", "axis", "eps", "reduction"))
def _cross_entropy(logits, labels, class_weights, mask, *, hard, axis, eps, reduction):
  # The batch rules, every reduction.
  o = jnp.moveaxis(logits, axis, -1)
  rule = _hard_loss_batch if hard else _soft_loss_batch
  loss = rule(eps, reduction, *_flat_batch(o, labels, hard, axis, class_weights, mask))
  return loss.reshape(o.shape[:-1]) if reduction == "none" else loss


@functools.partial(jax.jit, static_argnames=("hard", "axis", "eps", "reduction"))
def _cross_entropy_per_example(logits, labels, class_weights, mask, *, hard, axis, eps,
                               reduction):
  """The per-example kernels, vmapped: the reference that tests hold the batch rules to."""
  row = _hard_loss_row if hard else _soft_loss_row
  loss = _per_example(row, eps, logits, labels, hard, axis, class_weights, mask)
  return reduce_losses(loss, reduction, mask=mask, labels=labels if hard else None,
                       class_weights=class_weights)


def _flat_batch(o, labels, hard, axis, class_weights, mask):
  """The batch rules' arguments: logits ``[N, C]`` (classes moved last, in their own dtype),
  class ids ``[N]`` or probability labels ``[N, C]`` (their own dtype), weights in the compute
  dtype, mask ``[N]``."""
  num_classes = o.shape[-1]
  if hard:
    t = v.widen_ids(labels).reshape(-1)
  else:
    t = jnp.moveaxis(labels, axis, -1).reshape(-1, num_classes)
  return (o.reshape(-1, num_classes), t,
          None if class_weights is None else class_weights.astype(v.compute_dtype(o.dtype)),
          None if mask is None else mask.reshape(-1))


@functools.partial(jax.jit, static_argnames=("hard", "axis", "eps"))
def _cross_entropy_grad(logits, labels, class_weights, mask, *, hard, axis, eps):
  # Widened first, so that G is written in the compute dtype.
  o = jnp.moveaxis(logits, axis, -1).astype(v.compute_dtype(logits.dtype))
  o_NC, t, w_C, m_N = _flat_batch(o, labels, hard, axis, class_weights, mask)
  if hard:
    g_NC = _batch_grad(eps, _batch(eps, "none", o_NC, t, w_C, m_N), o_NC, w_C, m_N)
  else:
    g_NC = _soft_batch_grad(_soft_batch(eps, "none", o_NC, t, w_C, m_N), o_NC, m_N)
  return jnp.moveaxis(g_NC.reshape(o.shape), -1, axis)


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

  It is differentiable to any order in the logits, and also in probability labels
  (``∂l/∂y_j = −(1−ε)·w_j·ls_j``, ``ls = log softmax(o)``) and in the class weights
  (``∂l/∂w_j = −y'_j·ls_j``). Losses and these derivatives are taken in halves (``ls/2``,
  doubled last), so they are finite wherever the exact value is, even where ``ls`` itself
  overflows (a row spanning more than the float range). Where ``ls_j = −inf`` the derivative in
  ``w_j`` is +inf, and forward mode gives NaN beside it (``inf·0``, as ``jax.jacfwd(jnp.log)``
  at 0); reverse mode does not.

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
    class_weights: optional ``[C]`` non-negative weights, one per class; each 0 or a normal
      number of the compute dtype (float32: ``[1.18e-38, 3.4e38]``) and not subnormal in its
      own dtype, as XLA flushes subnormals to 0 (a ``ValueError`` otherwise).
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
  if w is not None and hard and reduction == "mean":
    w = scaled_for_mean(w)
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
  return reduce_losses(loss, reduction, mask=mask)
