r"""Linear + cross-entropy without the ``n × q`` logits: chunked over classes, memory-lean.

:func:`linear_cross_entropy` is ``cross_entropy(x @ W + b, labels)`` (PyTorch's semantics, as in
:func:`softmax_jax.cross_entropy`) for a classifier head with many classes ``q`` (a language
model's vocabulary). The dense form materialises the ``n × q`` logits, and reverse mode a second
``n × q`` array, their gradient. Here neither exists: the loss streams over blocks of
``chunk_size`` classes, and the gradients are recomputed block by block in the backward pass
(Cut Cross-Entropy). The largest temporaries are a few ``n × chunk_size`` blocks.

Forward. Block ``k`` holds the logits ``O_k = x W_k + b_k`` (``n × chunk``). An online
log-sum-exp keeps, per example, the running max ``m`` and the rescaled running sum ``s``:

.. math:: m' = \max(m, \max_j O_{kj}), \qquad s' = s\,e^{m - m'} + \sum_j e^{O_{kj} - m'}

so that ``LSE = m + log s`` at the end. With the target ``v`` (the one-hot of the class id,
smoothed and weighted; or a probability vector), ``S = Σ_j v_j`` and the loss is
``l = S·LSE − Σ_j v_j o_j``. For class ids, ``Σ_j v_j o_j = (1−ε) w_y o_y + (ε/q) Σ_j w_j o_j``:
the label's logit ``o_y`` is gathered from the block that holds it (``n`` entries, so
``LSE − o_y = log s + (m − o_y)`` is exactly ``log s`` when the label holds the max); with
smoothing, ``Σ_j (ε/q) w_j (o_j − m)`` is summed over each block (re-shifted as ``m`` grows), as
for probability labels, whose ``S`` and ``A = Σ_j v_j (o_j − m)`` are accumulated per block. The
residuals are the inputs and three ``n``-vectors: ``m`` and ``log s`` kept apart (``m + log s``
rounds ``log s`` away once ``|m| ≫ log s``), and ``S``.

Backward. With the cotangent ``c`` of each example's loss, block ``k`` is recomputed and
``G_k = c ⊙ (S·exp((O_k − m) − log s) − v_k)`` (the exact softmax: ``m`` and ``s`` are final)
gives
``dx += G_k W_kᵀ``, ``dW_k = xᵀ G_k`` and ``db_k = Σ_n G_k``; each ``dW`` and ``db`` block is
written once, in place. ``v_k`` is formed per block, by comparing the class ids with the block's
column indices: nothing is one-hot encoded at full size.

Cost: four matmuls of ``n·d·q`` (the dense form has three: the logits, ``dx`` and ``dW``), but
every elementwise pass works on a block that stays in cache instead of streaming ``n × q`` arrays
through memory. On 2 CPU cores that makes it faster than the dense form
(``benchmarks/linear_cross_entropy.py``). Liger Kernel's fused variant (gradients computed in the
forward pass, by blocks of rows holding all ``q`` logits; three matmuls) was measured slower on
CPU, its ``dW`` accumulated ``n / rows`` times through memory, and is not offered.

A ``q`` that is not a multiple of ``chunk_size`` needs no padded copy of ``W``: the last block is
the last ``chunk_size`` columns, and the columns it shares with the previous block are masked
(``-inf`` logits, zero target, their ``dW`` and ``db`` left as the previous block wrote them).

Optional gradient filtering (Cut Cross-Entropy's): with ``filter_eps`` set, a block whose
gradient entries are all below ``filter_eps·max|c|`` skips its ``dx`` and ``dW`` matmuls. It pays
off when the softmax is peaked (a trained model), not at initialisation; it is off by default,
so that the gradients are exact.

Numerics: float16/bfloat16 inputs are computed in float32 (``x`` and each block of ``W`` are
upcast; the loss is float32), and the gradients are returned in the dtype of each input. Large
logits (±1e4) are exact: every ``exp`` is of a shifted, non-positive argument. Infinite logits
take the dense loss's limits: a row whose max is +inf has its softmax uniform over the +inf
logits, a row of −inf logits has a softmax of 0 and a loss of +inf, and the loss is +inf where
the target has mass on a logit infinitely below the max. A masked-out row contributes exactly 0
to every gradient, even where its features, logits or target are not finite (its row of ``x`` is
read as zeros, and its rows of ``G`` and ``dx`` are set to 0).

References:
  Wijmans et al., Cut Your Losses in Large-Vocabulary Language Models, 2024 (Cut Cross-Entropy);
  Milakov & Gimelshein, Online normalizer calculation for softmax, 2018;
  Hsu et al., Liger Kernel: Efficient Triton Kernels for LLM Training, 2024 (fused linear CE);
  Zhang et al., Dive into Deep Learning, §4.1.2–§4.1.3 and §4.5.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax._precision import dot
from softmax_jax.losses import _exp_shifted_value
from softmax_jax.losses import reduce_losses
from softmax_jax.losses import scaled_for_mean

DEFAULT_CHUNK_SIZE = 1024


class _Config(NamedTuple):
  """Static configuration of one call (hashable: a ``nondiff_argnums`` of the custom_vjp)."""
  chunk: int  # classes per block, <= num_classes
  num_classes: int
  eps: float  # label smoothing
  hard: bool  # class ids (True) or probability vectors (False)
  filtered: bool  # gradient filtering on (its threshold is a traced argument) or off (exact)


# ----------------------------------------------------------------------------------------------
# Blocks. `k` is the (traced) block index; block k covers columns [start, start + chunk) with
# start = min(k·chunk, q − chunk), of which those below k·chunk belong to block k − 1 (only in
# the last block, when chunk does not divide q) and are masked.
# ----------------------------------------------------------------------------------------------


def _compute_dtype(x, W, b) -> jnp.dtype:
  """The dtype of the arithmetic: float32 for half-precision inputs (as cross_entropy's)."""
  return v.compute_dtype(jnp.result_type(x.dtype, W.dtype, *(() if b is None else (b.dtype,))))


def _num_blocks(cfg: _Config) -> int:
  return -(-cfg.num_classes // cfg.chunk)


def _ragged(cfg: _Config) -> bool:
  return cfg.num_classes % cfg.chunk != 0


def _block_logits(cfg, k, x_NxD, W_DxQ, b_Q):
  """Returns the block's logits ``O`` (n × chunk, compute dtype), ``W_k``, columns, start, valid."""
  cdtype = x_NxD.dtype
  start = jnp.minimum(k * cfg.chunk, cfg.num_classes - cfg.chunk)
  W_DxK = lax.dynamic_slice_in_dim(W_DxQ, start, cfg.chunk, axis=1).astype(cdtype)
  o_NxK = dot(x_NxD, W_DxK)
  if b_Q is not None:
    b_K = lax.dynamic_slice_in_dim(b_Q, start, cfg.chunk).astype(cdtype)
    o_NxK = o_NxK + b_K[None, :]
  cols_K = start + lax.iota(jnp.int32, cfg.chunk)
  valid_K = (cols_K >= k * cfg.chunk) if _ragged(cfg) else None
  return o_NxK, W_DxK, cols_K, start, valid_K


def _block_target(cfg, labels, w_Q, wy_N, start, cols_K, valid_K, cdtype):
  """The block of the weighted, smoothed target ``v`` (n × chunk): never wider than a block."""
  eps, q = cfg.eps, cfg.num_classes
  w_K = None if w_Q is None else lax.dynamic_slice_in_dim(w_Q, start, cfg.chunk).astype(cdtype)
  if cfg.hard:
    # v = (1−ε)·w_y·e_y + (ε/q)·w, with the one-hot e_y compared block by block.
    hit_NxK = labels[:, None] == cols_K[None, :]
    v_NxK = jnp.where(hit_NxK, ((1 - eps) * wy_N)[:, None], jnp.zeros((), cdtype))
    if eps > 0:
      smooth = jnp.full((1, cfg.chunk), eps / q, cdtype) if w_K is None else (eps / q * w_K)[None]
      v_NxK = v_NxK + smooth
  else:
    # v = w ⊙ ((1−ε)·t + ε/q).
    t_NxK = lax.dynamic_slice_in_dim(labels, start, cfg.chunk, axis=1).astype(cdtype)
    v_NxK = (1 - eps) * t_NxK + eps / q if eps > 0 else t_NxK
    if w_K is not None:
      v_NxK = v_NxK * w_K[None, :]
  if valid_K is not None:
    v_NxK = jnp.where(valid_K[None, :], v_NxK, 0)
  return v_NxK


def _label_weights(cfg, labels, w_Q, n, cdtype):
  """``w_y`` per example for class ids (ones without class weights); None for probabilities."""
  if not cfg.hard:
    return None
  if w_Q is None:
    return jnp.ones((n,), cdtype)
  return w_Q.astype(cdtype)[jnp.clip(labels, 0, cfg.num_classes - 1)]


# ----------------------------------------------------------------------------------------------
# The per-example loss, a custom_vjp. Arguments after cfg: x (n, d), W (d, q), b (q,) or None,
# labels (n,) int or (n, q) float, w (q,) or None, mask (n,) bool or None, and the filter's
# threshold tau (a scalar, or None).
# ----------------------------------------------------------------------------------------------


def _safe(m_N):
  """The shift of the running sums: the running max, or 0 while it is −inf."""
  return jnp.where(m_N == -jnp.inf, 0, m_N)


def _reshifted(a_N, mass, m_N, m_new_N):
  """A sum ``a = Σ_j v_j (o_j/2 − m/2)`` of target mass ``mass = Σ_j v_j``, re-shifted to the
  new max: ``a + mass·(m/2 − m_new/2)`` (the shifts through `_safe`). Unchanged where the max
  did not move (also at +inf, where the difference is inf − inf) or where there is no mass yet
  (0·−inf); −inf where the max became +inf and mass sits on the finite logits before it."""
  diff_N = 0.5 * _safe(m_N) - 0.5 * _safe(m_new_N)
  return a_N + jnp.where((mass == 0) | (m_N == m_new_N), 0, mass * diff_N)


def _shifted_sum(v_NxK, o_NxK, m_N):
  """``Σ_j v_j (o_j/2 − m/2)`` (``m`` through `_safe`); a zero ``v_j`` adds 0, even where
  ``o_j = −inf`` (0·inf), and so does a +inf logit (in a row whose max is +inf it is at the
  max: ``o − m = 0``, the dense loss's limit). In halves: ``o − m`` overflows when a row spans
  more than the float range."""
  terms = v_NxK * (0.5 * o_NxK - 0.5 * _safe(m_N)[:, None])
  return jnp.sum(jnp.where((v_NxK == 0) | (o_NxK == jnp.inf), 0, terms), axis=1)


def _forward(cfg, x, W, b, labels, w, mask):
  """Streams over the class blocks: per-example loss, LSE and target mass S (compute dtype)."""
  cdtype = _compute_dtype(x, W, b)
  x_NxD = _masked_rows_zeroed(x.astype(cdtype), mask)
  n, eps, q = x.shape[0], cfg.eps, cfg.num_classes
  wy_N = _label_weights(cfg, labels, w, n, cdtype)

  def lse_update(m_N, s_N, o_NxK, valid_K):
    """One step of the online log-sum-exp; also returns the new max (the shift, kept finite)."""
    om_NxK = o_NxK if valid_K is None else jnp.where(valid_K[None, :], o_NxK, -jnp.inf)
    m_new_N = jnp.maximum(m_N, jnp.max(om_NxK, axis=1))
    # m = −inf before the first block (s = 0), and after blocks whose logits were all −inf (a
    # vocabulary masked by −inf biases): the sums are shifted by 0 there (_safe), not by −inf,
    # which gave exp(−inf − −inf) = NaN. A sum of nothing (s = 0) is not rescaled, nor is one
    # whose max did not move (at +inf, exp(inf − inf) is NaN); a max that became +inf scales
    # the finite logits' sum by exp(m − inf) = 0.
    rescale_N = jnp.where(m_N == m_new_N, 1,
                          jnp.where(m_N == -jnp.inf, 0, jnp.exp(m_N - m_new_N)))
    # exp(o − m) with the dense loss's limits: in a row whose max is +inf, 1 at the +inf logits
    # and 0 elsewhere (exp(inf − inf) was NaN). One select expression, as in the dense loss; a
    # lax.cond that kept finite rows on plain exp(o − m) measured the same without vmap, and 16%
    # slower under it, where both branches run.
    s_N = s_N * rescale_N + jnp.sum(_exp_shifted_value(om_NxK, m_new_N), axis=1)
    return m_new_N, s_N

  def hard_body(k, carry):
    # Class ids: the label's logit is gathered from the block that holds it (n entries). The
    # smoothing term, with a = (ε/q)·w, is summed over the block like the soft labels' target
    # (one more pass over the n × chunk block; it was x·(W a) + b·a, with no n × chunk work,
    # but that cancelled against Σ_j a_j·m at large logits).
    m_N, s_N, oy_N, a_N, sa = carry
    o_NxK, _, cols_K, start, valid_K = _block_logits(cfg, k, x_NxD, W, b)
    m_new_N, s_N = lse_update(m_N, s_N, o_NxK, valid_K)
    here_N = (labels >= k * cfg.chunk) & (labels < start + cfg.chunk)
    at_N = jnp.clip(labels - start, 0, cfg.chunk - 1)
    oy_N = jnp.where(here_N, jnp.take_along_axis(o_NxK, at_N[:, None], axis=1)[:, 0], oy_N)
    if eps > 0:
      w_K = eps / q * (jnp.ones((cfg.chunk,), cdtype) if w is None
                       else lax.dynamic_slice_in_dim(w, start, cfg.chunk).astype(cdtype))
      if valid_K is not None:
        w_K = jnp.where(valid_K, w_K, 0)
      # The smoothing term as the soft labels' is: Σ_j a_j (o_j − m), re-shifted as m grows, so
      # that it does not cancel against Σ_j a_j·m (a loss 1% off at logits near 1e6).
      a_N = _reshifted(a_N, sa, m_N, m_new_N) + _shifted_sum(w_K[None, :], o_NxK, m_new_N)
      sa = sa + jnp.sum(w_K)
    return m_new_N, s_N, oy_N, a_N, sa

  def soft_body(k, carry):
    m_N, s_N, a_N, sv_N = carry
    o_NxK, _, cols_K, start, valid_K = _block_logits(cfg, k, x_NxD, W, b)
    m_new_N, s_N = lse_update(m_N, s_N, o_NxK, valid_K)
    v_NxK = _block_target(cfg, labels, w, wy_N, start, cols_K, valid_K, cdtype)
    a_N = _reshifted(a_N, sv_N, m_N, m_new_N) + _shifted_sum(v_NxK, o_NxK, m_new_N)
    sv_N = sv_N + jnp.sum(v_NxK, axis=1)
    return m_new_N, s_N, a_N, sv_N

  zeros_N = jnp.zeros((n,), cdtype)
  minus_inf_N = jnp.full((n,), -jnp.inf, cdtype)
  if cfg.hard:
    init = (minus_inf_N, zeros_N, zeros_N, zeros_N, jnp.zeros((), cdtype))
    m_N, s_N, oy_N, a_N, sa = lax.fori_loop(0, _num_blocks(cfg), hard_body, init)
    log_s_N = _log_sum(s_N)
    m_N = _safe(m_N)
    # l = S·LSE − (1−ε)·w_y·o_y − (ε/q)·Σ_j w_j o_j, with LSE − o_y = log s + (m − o_y): exact
    # (0 + log s) when the label holds the max, also at +inf (inf − inf). In halves, doubled at
    # the end: m − o_y overflows when a row spans more than the float range, (1−ε)·w_y times
    # it may not.
    sv_N = (1 - eps) * wy_N
    gap_N = jnp.where(oy_N == m_N, 0, 0.5 * m_N - 0.5 * oy_N)
    # A zero coefficient (ε = 1, or a class weight of 0) gives 0, even at a −inf label logit.
    loss_N = 2 * jnp.where(sv_N == 0, 0, sv_N * (0.5 * log_s_N + gap_N))
    if eps > 0:  # + Σ_j a_j·LSE − Σ_j a_j o_j = Σ_j a_j·log s − Σ_j a_j (o_j − m)
      loss_N = loss_N + (sa * log_s_N - 2 * a_N)
      sv_N = sv_N + sa
  else:
    init = (minus_inf_N, zeros_N, zeros_N, zeros_N)
    m_N, s_N, a_N, sv_N = lax.fori_loop(0, _num_blocks(cfg), soft_body, init)
    log_s_N = _log_sum(s_N)
    m_N = _safe(m_N)
    loss_N = sv_N * log_s_N - 2 * a_N  # S·LSE − Σ v·o
  loss_N = _finish(cfg, loss_N, labels, mask)
  # The LSE is kept as m and log s: m + log s rounds log s away once |m| ≫ log s, and the
  # backward's softmax exp(o − LSE) was then wrong (both of two tied logits of 3e38 got p = 1).
  return loss_N, (m_N, log_s_N), sv_N


def _log_sum(s_N):
  """``log s``: s >= 1 (the max contributes exp(0)) but in a row of −inf logits, whose s = 0
  is taken as 1 (log s = 0), as in the dense loss: its loss is +inf and its softmax 0, where
  ``log 0`` gave a NaN loss and NaN gradients."""
  return jnp.log(jnp.where(s_N == 0, 1, s_N))


def _masked_rows_zeroed(x_NxD, mask):
  """An ``(n, ·)`` array (``x``, ``dx``) with the masked-out rows set to 0: a NaN or inf in a
  masked row of ``x`` reaches neither the loss nor any gradient (``0·NaN`` made ``dW`` and ``db``
  NaN)."""
  return x_NxD if mask is None else jnp.where(mask[:, None], x_NxD, 0)


def _row_ok(cfg, labels, mask):
  """False for a kept example whose class id is out of range (possible only under plain jit)."""
  if not cfg.hard:
    return None
  ok = (labels >= 0) & (labels < cfg.num_classes)
  return ok if mask is None else ok | ~mask


def _finish(cfg, loss_N, labels, mask):
  ok = _row_ok(cfg, labels, mask)
  if ok is not None:  # NaN for an out-of-range id, never a silently clamped index
    loss_N = jnp.where(ok, loss_N, jnp.nan)
  return loss_N if mask is None else jnp.where(mask, loss_N, 0)


def _backward(cfg, x, W, b, labels, w, mask, tau, lse_N, sv_N, ct_N):
  """Recomputes each block and accumulates dx, writes the dW and db blocks."""
  m_N, log_s_N = lse_N
  cdtype = m_N.dtype
  x_NxD = _masked_rows_zeroed(x.astype(cdtype), mask)
  xT_DxN = x_NxD.T  # materialised once, so that dW's matmul is a plain one
  n = x.shape[0]
  wy_N = _label_weights(cfg, labels, w, n, cdtype)
  c_N = ct_N.astype(cdtype)
  if mask is not None:
    c_N = jnp.where(mask, c_N, 0)
  ok = _row_ok(cfg, labels, mask)
  if ok is not None:
    c_N = jnp.where(ok, c_N, jnp.nan)
  cs_N = c_N * sv_N
  if cfg.filtered:
    threshold = tau.astype(cdtype) * jnp.max(jnp.abs(c_N))

  def write(acc, blk, start, valid_K):
    """Writes a block of dW (axis 1) or db (axis 0); shared columns keep the earlier block's."""
    axis = acc.ndim - 1
    if valid_K is not None:
      old = lax.dynamic_slice_in_dim(acc, start, cfg.chunk, axis=axis)
      blk = jnp.where(valid_K if axis == 0 else valid_K[None, :], blk.astype(acc.dtype), old)
    return lax.dynamic_update_slice_in_dim(acc, blk.astype(acc.dtype), start, axis=axis)

  def body(k, carry):
    dx_NxD, dW_DxQ, db_Q = carry
    o_NxK, W_DxK, cols_K, start, valid_K = _block_logits(cfg, k, x_NxD, W, b)
    v_NxK = _block_target(cfg, labels, w, wy_N, start, cols_K, valid_K, cdtype)
    p_NxK = _exp_shifted_value(o_NxK, m_N, log_s_N)  # the softmax block: m, log s are final
    if valid_K is not None:
      p_NxK = jnp.where(valid_K[None, :], p_NxK, 0)
    g_NxK = p_NxK * cs_N[:, None] - v_NxK * c_N[:, None]
    if mask is not None:  # exactly 0, even where a masked row's logits or target are not finite
      g_NxK = jnp.where(mask[:, None], g_NxK, 0)
    # The columns the last block shares with the one before have G = 0; their weights are
    # zeroed too, so that an infinite weight there adds 0, not 0·inf = NaN, to dx.
    Wdx_DxK = W_DxK if valid_K is None else jnp.where(valid_K[None, :], W_DxK, 0)

    def update(dx_NxD):
      dx_NxD = dx_NxD + dot(g_NxK, Wdx_DxK.T)
      return dx_NxD, dot(xT_DxN, g_NxK)

    if not cfg.filtered:
      dx_NxD, dW_DxK = update(dx_NxD)
    else:
      # Cut Cross-Entropy's filter: skip the block if every |G| is below τ·max|c|. Compared
      # entry by entry, not as max|G| < τ·max|c|: XLA:CPU's fused max drops a NaN in a large
      # block, which would skip a block of NaN gradients (and leave dx and dW finite).
      small = jnp.all(jnp.abs(g_NxK) < threshold)
      dx_NxD, dW_DxK = lax.cond(
          small, lambda dx: (dx, jnp.zeros((x.shape[1], cfg.chunk), cdtype)), update, dx_NxD)
    dW_DxQ = write(dW_DxQ, dW_DxK, start, valid_K)
    if db_Q is not None:
      db_Q = write(db_Q, jnp.sum(g_NxK, axis=0), start, valid_K)
    return dx_NxD, dW_DxQ, db_Q

  init = (jnp.zeros(x.shape, cdtype), jnp.zeros(W.shape, W.dtype),
          None if b is None else jnp.zeros(b.shape, b.dtype))
  dx_NxD, dW_DxQ, db_Q = lax.fori_loop(0, _num_blocks(cfg), body, init)
  # A masked row's dx is 0 (G·Wᵀ with G = 0 is NaN where W holds an inf).
  dx_NxD = _masked_rows_zeroed(dx_NxD, mask)
  return dx_NxD.astype(x.dtype), dW_DxQ, db_Q


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loss_rows(cfg, x, W, b, labels, w, mask, tau):
  del tau  # the gradient filter's threshold: used in the backward pass only
  return _forward(cfg, x, W, b, labels, w, mask)[0]


def _loss_rows_fwd(cfg, x, W, b, labels, w, mask, tau):
  loss_N, lse_N, sv_N = _forward(cfg, x, W, b, labels, w, mask)
  return loss_N, (x, W, b, labels, w, mask, tau, lse_N, sv_N)


def _loss_rows_bwd(cfg, res, ct_N):
  x, W, b, labels, w, mask, tau, lse_N, sv_N = res
  dx, dW, db = _backward(cfg, x, W, b, labels, w, mask, tau, lse_N, sv_N, ct_N)
  # Labels, class weights, the mask and τ are constants (see the docstring): zero cotangents.
  return dx, dW, db, None, None, None, None


_loss_rows.defvjp(_loss_rows_fwd, _loss_rows_bwd)


# ----------------------------------------------------------------------------------------------
# Validation and the public function
# ----------------------------------------------------------------------------------------------


def _check_positive_int(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be a positive int; got {value!r}.")
  if value <= 0:
    raise ValueError(f"{name} must be a positive int; got {value!r}.")
  return int(value)


def _prepare(x, W, b, labels, chunk_size, label_smoothing, class_weights, where, reduction,
             filter_eps):
  v.check_reduction(reduction)
  chunk_size = _check_positive_int(chunk_size, "chunk_size")
  x = v.as_float_array(x, "x")
  W = v.as_float_array(W, "W")
  if x.ndim != 2:
    raise ValueError(f"x must have shape (n, d), one row of d features per example; got shape "
                     f"{x.shape}.")
  if W.ndim != 2 or W.shape[0] != x.shape[1]:
    raise ValueError(f"W must have shape (d, q) = ({x.shape[1]}, q) to multiply x of shape "
                     f"{x.shape}; got shape {W.shape}.")
  n, q = x.shape[0], W.shape[1]
  if q == 0:
    raise ValueError(f"W of shape {W.shape} has no classes (q = 0).")
  if b is not None:
    b = v.as_float_array(b, "b")
    if b.shape != (q,):
      raise ValueError(f"b must have shape ({q},), one bias per column of W {W.shape}; got "
                       f"shape {b.shape}.")

  labels = v.as_label_array(labels)
  hard = v.label_kind(labels, ids_shape=(n,), probs_shape=(n, q),
                      ids_desc=f"one per row of x {x.shape}",
                      probs_desc=f"over the {q} columns of W")

  label_smoothing = v.check_label_smoothing(label_smoothing)

  if filter_eps is not None:
    if isinstance(filter_eps, bool) or not isinstance(filter_eps, numbers.Real):
      raise TypeError(f"filter_eps must be None or a Python float >= 0; got {filter_eps!r}.")
    if not 0.0 <= float(filter_eps) < float("inf"):
      raise ValueError(f"filter_eps must be finite and >= 0; got {filter_eps!r}.")
    filter_eps = jnp.asarray(float(filter_eps))

  class_weights = v.check_class_weights(class_weights, q, f"column of W {W.shape}",
                                       _compute_dtype(x, W, b))

  mask = v.broadcast_mask(where, (n,))
  if hard:
    v.check_class_ids(labels, q, where=mask)
    labels = v.widen_ids(labels)
  else:
    v.check_distribution(labels, 1, "labels", where=mask)
  cfg = _Config(chunk=min(chunk_size, q), num_classes=q, eps=float(label_smoothing), hard=hard,
                filtered=filter_eps is not None)
  return x, W, b, labels, class_weights, mask, filter_eps, cfg


@functools.partial(jax.jit, static_argnames=("cfg", "reduction"))
def _linear_cross_entropy(x, W, b, labels, w, mask, tau, *, cfg, reduction):
  labels, w, mask, tau = jax.tree.map(lax.stop_gradient, (labels, w, mask, tau))
  loss_N = _loss_rows(cfg, x, W, b, labels, w, mask, tau)
  return reduce_losses(loss_N, reduction, mask=mask, labels=labels if cfg.hard else None,
                       class_weights=w)


def linear_cross_entropy(x: ArrayLike, W: ArrayLike, b: ArrayLike | None, labels: ArrayLike, *,
                         chunk_size: int = DEFAULT_CHUNK_SIZE, label_smoothing: float = 0.0,
                         class_weights: ArrayLike | None = None, where: ArrayLike | None = None,
                         reduction: str = "mean", filter_eps: float | None = None) -> jax.Array:
  r"""Cross-entropy of the logits ``x W + b``, without materialising the ``n × q`` logits.

  The value is that of ``cross_entropy(x @ W + b, labels, ...)`` with the same keywords
  (PyTorch's ``F.cross_entropy`` semantics): for each example, with target ``y`` (one-hot of a
  class id, or a probability vector), smoothing ``ε`` and class weights ``w``,

  .. math::
     o = x W + b, \quad v = w \odot \big((1-ε)\,y + ε/q\big), \quad
     l = \Big(\sum_j v_j\Big)\operatorname{LSE}(o) - \sum_j v_j o_j

  and, with ``G = softmax(o)·Σ_j v_j − v`` scaled by each example's cotangent, the gradients are
  ``∂/∂x = G Wᵀ``, ``∂/∂W = xᵀ G`` and ``∂/∂b = Σ_n G``. The forward pass streams over blocks of
  ``chunk_size`` classes with an online log-sum-exp and keeps only the ``n``-vector ``LSE``; the
  backward pass recomputes each block's logits (Cut Cross-Entropy). The largest temporaries are
  ``n × chunk_size``; see the module docstring.

  Reverse mode only (``jax.grad``, ``jax.vjp``). The gradient flows to ``x``, ``W`` and ``b``;
  ``labels``, ``class_weights`` and ``where`` are constants (their cotangents are zero).

  Bad input raises eagerly (labels out of ``[0, q)``, probabilities that are negative or do not
  sum to 1, mismatched shapes, the wrong dtypes). Under ``jit`` wrap the caller in
  :func:`softmax_jax.checked` for the value checks; unchecked, an out-of-range class id gives a
  NaN loss (and NaN gradients), never a silently clamped index.

  Args:
    x: features, shape ``(n, d)``; floating point.
    W: weights, shape ``(d, q)``; floating point.
    b: biases, shape ``(q,)``, or None for no bias.
    labels: integer class ids of shape ``(n,)``, or floating probability vectors ``(n, q)``.
    chunk_size: classes per block, a positive int (``min(chunk_size, q)`` is used). The
      temporaries grow as ``n × chunk_size``; on 2 CPU cores 512–2048 are fastest.
    label_smoothing: ``ε`` in ``[0, 1]``, mixing the target with the uniform distribution.
    class_weights: optional ``(q,)`` non-negative weights, one per class; each 0 or a normal
      number of the compute dtype and of its own (see :func:`softmax_jax.cross_entropy`).
    where: optional boolean mask of shape ``(n,)`` (or broadcastable to it); ``False`` examples
      are ignored: loss 0, gradient 0, left out of the ``"mean"``, even where their features are
      NaN or inf (the dense form's ``∂/∂W`` is NaN there, ``xᵀG`` multiplying them by 0).
    reduction: ``"none"``, ``"mean"`` or ``"sum"``, as in :func:`softmax_jax.cross_entropy`.
    filter_eps: None (exact, the default), or a threshold ``τ >= 0`` for Cut Cross-Entropy's
      gradient filtering: in the backward pass, a block whose gradient entries ``|G|`` are all
      below ``τ·max_n |c_n|`` (``c`` the per-example cotangents) skips its ``dx`` and ``dW``
      matmuls. Each dropped entry is below that bound. CCE's choice is the input dtype's
      ``jnp.finfo(dtype).eps``; it saves time only when the softmax is peaked.

  Returns:
    float32 (float64 for float64 inputs): shape ``(n,)`` for ``"none"``, else a scalar.

  References:
    Wijmans et al., Cut Your Losses in Large-Vocabulary Language Models, 2024;
    Milakov & Gimelshein, Online normalizer calculation for softmax, 2018;
    Zhang et al., Dive into Deep Learning, §4.1.3 (the gradient ``softmax(o) − y``).
  """
  x, W, b, labels, w, mask, tau, cfg = _prepare(x, W, b, labels, chunk_size, label_smoothing,
                                                class_weights, where, reduction, filter_eps)
  if w is not None and cfg.hard and reduction == "mean":
    w = scaled_for_mean(w)  # the same mean, with sums that cannot overflow
  return _linear_cross_entropy(x, W, b, labels, w, mask, tau, cfg=cfg, reduction=reduction)
