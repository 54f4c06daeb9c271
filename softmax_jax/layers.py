r"""Output layers cheaper than the fully connected ``xW + b``: low-rank, PHM and Fastfood.

D2L §4.1 closes by noting that a fully connected layer from ``d`` inputs to ``q`` outputs costs
``O(dq)`` parameters and arithmetic, and that structured approximations cut that cost. This module
holds four interchangeable output layers, each as pure functions:

===========  ==========================================  ==================================
layer        logits of one example ``x`` (``[d]``)        parameters (bias included)
===========  ==========================================  ==================================
dense        ``x W + b``                                  ``dq + q``
low_rank     ``(x U) V + b``, ``U: d×r``, ``V: r×q``      ``r(d + q) + q``
phm          ``x (Σᵢ Aᵢ ⊗ Sᵢ) + b``                       ``n³ + dq/n + q``
fastfood     ``(S H G Π H B pad(x))[:q] / d' + b``        ``2k·d' + 2q``, ``k = ⌈q/d'⌉``
===========  ==========================================  ==================================

What each saves (per example, multiply-adds = FLOPs/2): low-rank cuts both storage and arithmetic
to ``r(d + q)``; PHM cuts storage by about ``n`` but not arithmetic (``dq + n²·min(d, q)``, since
applying ``n`` Kronecker products touches every ``Sᵢ`` once); Fastfood cuts storage to ``O(max(d,
q))`` and arithmetic to ``O(max(d, q) log d)``, which beats ``dq`` only when ``q`` is well above
``log₂ d`` (so not for 10 classes of 784 features, where it costs 1.4× dense).

Every layer has ``init_<name>(key, d, q, *, ...) -> params``, ``<name>_logits(params, x)`` (for one
example ``[d]`` or a batch ``[..., d]``: dense, low-rank and PHM are written per example and
``jax.vmap``-ped over the leading axes; Fastfood acts on the last axis of a batch directly, which
is faster than its vmapped version on CPU), and two formulas, ``<name>_num_params(d, q, ...)`` and
``<name>_flops(d, q, ...)``, gathered in the registry :data:`LAYERS` (what an absl
``DEFINE_enum`` enumerates). :func:`num_params` counts the trainable entries of any of them.
**The bias (``q`` entries) is counted in every layer.**

FLOPs are per example: a multiply-add is 2, any other add or multiply 1; padding, reshapes and the
permutation (a gather) are free; work on the parameters alone (e.g. ``S/d'``) is done once per
batch and not counted. The overflow guard below (a max over ``d`` entries, ``2d`` scalings of the
input and ``2q`` of the output, the same for every layer) is not counted either.

**Extreme inputs.** All four maps are linear in ``x``, so each computes ``o = s·f(x/s) + b`` with
``s = 2^t`` the power of two for which ``max|x|/s ∈ [2^h, 2^(h+1))``, ``h`` the headroom of
:func:`guard_headroom` (float32: ``h = 32``; ``s = 1`` when ``max|x| < 2^(h+1) ≈ 8.6e9``, so
ordinary inputs are untouched; float16: ``h = 0``, a scaling to ``[1, 2)``, so there an entry below
``max|x|·2^-14`` is a float16 subnormal once scaled and loses precision). Scaling by a power of two
is exact, so this is ``f(x) + b`` up to rounding, but the inner sums stay below the float range
unless a column of weights sums (in absolute value) beyond ``2^(maxexp−h−2)`` (float32: ``2^94 ≈
2e28``). Finite inputs therefore give finite logits or ``±inf`` (an honest overflow of the result,
e.g. ``|x| ≈ 3e38`` with weights near 1), never the NaN that ``inf − inf`` inside a sum would give.
Infinite or NaN inputs are not guarded. :func:`fwht` guards itself the same way, row by row. **Known
limit:** an entry below ``max|x|·2^-(126+h)`` (float32: ``2^-158``, so below ``2^-30 ≈ 9e-10`` next
to ``3e38``) becomes subnormal once scaled, and XLA:CPU flushes it to 0, so it drops out of the
value, and of its own weights' gradient; that is far below rounding unless the large entries'
weights are 0 or tiny. (Until 2026-11-30 inputs were scaled to ``[1, 2)``: ``x = [3e38, 1.5]`` with
``W = [[0], [1]]`` gave 0, not 1.5.) The derivatives in ``x`` are those of the unscaled map, exact
for every entry (`_guarded`).

**Fastfood's permutation.** ``Π`` is fixed at init and never trained. It is stored as static
pytree metadata (``aux_data``) of :class:`FastfoodParams`, a tuple of Python ints, not as a leaf:
so ``jax.grad``, optax and :func:`num_params` see only the float leaves ``S, G, B, b``, and
``jit`` specialises on the permutation (a compile-time constant gather). Two Fastfood layers with
different permutations are different pytree structures.

References:
  Zhang et al., Dive into Deep Learning, §4.1 (the closing discussion of the ``O(dq)`` cost).
  Le, Sarlós & Smola, Fastfood — approximating kernel expansions in loglinear time, ICML 2013.
  Yang et al., Deep Fried Convnets, ICCV 2015.
  Zhang et al., Beyond Fully-Connected Layers with Quaternions: Parameterization of
  Hypercomplex Multiplications with 1/n Parameters, ICLR 2021.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax._precision import dot
from softmax_jax._precision import einsum
from softmax_jax._precision import times_pow2
from softmax_jax.model import Params as DenseParams

# --- validation and shared pieces ----------------------------------------------------------------


def _positive_int(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name} must be a positive int; got {value!r}.")
  return int(value)


def _dims(d: Any, q: Any) -> tuple[int, int]:
  return _positive_int(d, "d"), _positive_int(q, "q")


def _check_scale(scale: Any) -> float:
  if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
      math.isfinite(scale) and scale >= 0):
    raise ValueError(f"scale must be a finite non-negative number; got {scale!r}.")
  return float(scale)


def _check_rank(rank: Any, d: int, q: int) -> int:
  if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not (
      1 <= rank <= min(d, q)):
    raise ValueError(f"rank must be an int in [1, min(d, q)] = [1, {min(d, q)}] for d={d}, "
                     f"q={q}; got rank={rank!r}.")
  return int(rank)


def _check_n(n: Any, d: int, q: int) -> int:
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"n must be a positive int; got n={n!r}.")
  if d % n or q % n:
    raise ValueError(f"n must divide both d and q; got d={d}, q={q}, n={n} (pad d or q to a "
                     f"multiple of n).")
  return int(n)


def _check_float_dtype(dtype: Any) -> None:
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be floating point; got {dtype!r}.")


def _check_x(x: ArrayLike, d: int, layer: str) -> jax.Array:
  x = v.as_float_array(x, "x")
  if x.ndim == 0 or x.shape[-1] != d:
    raise ValueError(f"x must have shape (d,) or (..., d) with d = {d} (the {layer} layer's "
                     f"input size); got {x.shape}.")
  return x


def _shape_error(layer: str, expected: str, got: dict[str, tuple[int, ...]]) -> ValueError:
  shapes = ", ".join(f"{k} {s}" for k, s in got.items())
  return ValueError(f"{layer} params must hold {expected}; got {shapes}.")


def pow2_exponent(x: jax.Array, axis: int = -1, *, headroom: int = 0) -> jax.Array:
  """``t >= 0`` with ``max|x|/2^t ∈ [2^h, 2^(h+1))`` when ``max|x| >= 2^h`` (``h = headroom``),
  else ``t = 0`` (int, keepdims).

  ``t = 0`` also when ``max|x|`` is ``inf`` or NaN (``frexp`` gives no exponent; an infinite
  input is passed on unscaled, rather than doubled, which turned ``inf − 3e38`` into ``inf − inf``).
  """
  m = lax.stop_gradient(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
  _, e = jnp.frexp(m)  # m = f·2^e with f ∈ [0.5, 1)
  return jnp.where((m > 1) & (m < jnp.inf), jnp.maximum(e - 1 - headroom, 0), 0)


def guard_headroom(dtype: Any) -> int:
  """The overflow guard's ``headroom``: half the dtype's exponent range less 32, at least 0
  (float32 and bfloat16: 32, float64: 480, float16: 0). With float32, inputs below ``2^33 ≈
  8.6e9`` are not scaled at all and larger ones are scaled to ``[2^32, 2^33)``: an entry below
  ``max|x|·2^-158`` is then subnormal (scaled to ``[1, 2)``, one below ``max|x|·2^-126`` was,
  so ``1.5`` next to ``3e38``), and the inner sums overflow only where a column of weights sums
  beyond ``2^94 ≈ 2e28``. float16 keeps ``[1, 2)``: its range is too narrow for headroom (sums of
  256 weights of 1 overflowed at inputs of 300)."""
  return max(int(jnp.finfo(dtype).maxexp) // 2 - 32, 0)


def _batched(fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array) -> jax.Array:
  """Maps the per-example ``fn(params, x_D)`` over every leading axis of ``x`` with vmap."""
  for _ in range(x.ndim - 1):
    fn = jax.vmap(fn, in_axes=(None, 0))
  return fn(params, x)


def _guarded(linear: Callable[[Any, jax.Array], jax.Array]):
  """``linear(params, x)`` for a map linear in ``x``, computed as ``2^t·linear(params, x·2^-t)``
  with ``t = pow2_exponent(x, headroom=guard_headroom(x.dtype))`` (per row of ``x``'s last
  axis): the overflow guard of the module docstring.

  The derivative in ``x`` is that of the unscaled map, ``linear(params, dx)`` (the map is linear
  in ``x``): through the scaled chain a tangent times ``2^-t`` came out 0 for ``t >= 126``
  (XLA:CPU flushes subnormals), and a cotangent times ``2^t`` overflowed. The derivative in the
  parameters keeps the scaled chain, whose inner sums over ``x`` cannot overflow (the unscaled
  ``x·U`` of a low-rank layer can); so, as in the value, an entry below ``max|x|·2^-158``
  (float32; :func:`guard_headroom`) drops out of its own weights' gradient.
  """

  def chain(params, x):
    t = pow2_exponent(x, headroom=guard_headroom(x.dtype))
    return times_pow2(linear(params, times_pow2(x, -t)), t)

  scaled = jax.custom_jvp(chain)

  def scaled_jvp(primals, tangents):
    params, x = primals
    dparams, dx = tangents
    out = scaled(params, x)
    d_out = jnp.zeros_like(out)
    if not all(v.is_zero_tangent(leaf) for leaf in jax.tree.leaves(dparams)):
      dparams = jax.tree.map(lambda d, p: jnp.zeros_like(p) if v.is_zero_tangent(d) else d,
                             dparams, params)
      d_out = d_out + jax.jvp(lambda p: chain(p, x), (params,), (dparams,))[1]
    if not v.is_zero_tangent(dx):
      d_out = d_out + linear(params, dx)  # linear in x
    return out, d_out

  scaled.defjvp(scaled_jvp, symbolic_zeros=True)
  return scaled


def _layer_apply(linear: Callable[[Any, jax.Array], jax.Array]):
  """The jitted batched apply of a layer whose bias-free map of one example is ``linear``.

  Per example it computes ``2^t·linear(params, x_D·2^-t) + b`` (`_guarded`), and it is vmapped
  over the leading axes of ``x``. The public functions validate their arguments, then call this
  (one compiled executable per shape, also when called eagerly).
  """
  guarded = _guarded(linear)

  def one(params, x_D):
    return guarded(params, x_D) + params.b

  return jax.jit(lambda params, x: _batched(one, params, x))


def num_params(params: Any) -> int:
  """The number of trainable entries: the sizes of ``params``' leaves, summed.

  Fastfood's permutation is static metadata, not a leaf, so it is not counted. The bias is a leaf
  of every layer here, so it is counted. Shapes suffice: ``num_params(jax.eval_shape(init_phm,
  key, d, q, n=n))`` counts without drawing anything (Fastfood's init needs concrete values).
  """
  return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


# --- dense ---------------------------------------------------------------------------------------


def init_dense(key: jax.Array, d: int, q: int, *, scale: float = 0.01,
               dtype=jnp.float32) -> DenseParams:
  r"""The fully connected layer of softmax regression: ``W ~ N(0, scale²)``, ``b = 0``.

  Args:
    key: a PRNG key.
    d: inputs.
    q: outputs.
    scale: standard deviation of ``W``.
    dtype: a floating dtype.

  Returns:
    ``softmax_jax.Params(W [d, q], b [q])``, the same pytree as :func:`softmax_jax.init_params`.
  """
  d, q = _dims(d, q)
  scale = _check_scale(scale)
  _check_float_dtype(dtype)
  return _draw_dense(key, scale, d=d, q=q, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("d", "q", "dtype"))
def _draw_dense(key, scale, *, d, q, dtype):
  W = (scale * jax.random.normal(key, (d, q), dtype)).astype(dtype)
  return DenseParams(W=W, b=jnp.zeros((q,), dtype))


def _check_dense(params: DenseParams) -> tuple[int, int]:
  W, b = params.W, params.b
  if jnp.ndim(W) != 2 or jnp.shape(b) != (jnp.shape(W)[1],):
    raise _shape_error("dense", "W of shape (d, q) and b of shape (q,)",
                       {"W": jnp.shape(W), "b": jnp.shape(b)})
  return jnp.shape(W)


def dense_logits(params: DenseParams, x: ArrayLike) -> jax.Array:
  r"""``o = x W + b``, for one example ``[d]`` or a batch ``[..., d]``.

  Args:
    params: from :func:`init_dense` (or :func:`softmax_jax.init_params`).
    x: features, shape ``(d,)`` or ``(..., d)``.

  Returns:
    Logits of shape ``(q,)`` or ``(..., q)``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1 (eq. 4.1.2).
  """
  d, _ = _check_dense(params)
  return _dense_apply(params, _check_x(x, d, "dense"))


_dense_apply = _layer_apply(lambda p, x_D: dot(x_D, p.W))


def dense_num_params(d: int, q: int) -> int:
  """``dq + q``: weights and biases."""
  d, q = _dims(d, q)
  return d * q + q


def dense_flops(d: int, q: int) -> int:
  """``2dq + q`` per example: ``dq`` multiply-adds, ``q`` bias adds."""
  d, q = _dims(d, q)
  return 2 * d * q + q


# --- low rank ------------------------------------------------------------------------------------


class LowRankParams(NamedTuple):
  """``W = U V`` of rank at most ``r``.

  Attributes:
    U: shape ``(d, r)``.
    V: shape ``(r, q)``.
    b: shape ``(q,)``.
  """

  U: jax.Array
  V: jax.Array
  b: jax.Array


def init_low_rank(key: jax.Array, d: int, q: int, *, rank: int, scale: float = 0.01,
                  dtype=jnp.float32) -> LowRankParams:
  r"""A rank-``r`` factorisation ``W = U V``: ``U ~ N(0, 1/r)``, ``V ~ N(0, scale²)``, ``b = 0``.

  With these variances the entries of ``U V`` have variance ``scale²``, as the dense layer's.

  Args:
    key: a PRNG key.
    d: inputs.
    q: outputs.
    rank: ``r`` in ``[1, min(d, q)]``.
    scale: standard deviation of the entries of ``W = U V`` at init.
    dtype: a floating dtype.

  Returns:
    ``LowRankParams(U [d, r], V [r, q], b [q])``.

  Raises:
    ValueError: ``d``, ``q`` not positive ints, or ``rank`` outside ``[1, min(d, q)]`` (the
      message gives rank, d and q).
  """
  d, q = _dims(d, q)
  rank = _check_rank(rank, d, q)
  scale = _check_scale(scale)
  _check_float_dtype(dtype)
  return _draw_low_rank(key, scale, d=d, q=q, rank=rank, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("d", "q", "rank", "dtype"))
def _draw_low_rank(key, scale, *, d, q, rank, dtype):
  ku, kv = jax.random.split(key)
  U = jax.random.normal(ku, (d, rank), dtype) / math.sqrt(rank)
  V = scale * jax.random.normal(kv, (rank, q), dtype)
  return LowRankParams(U=U.astype(dtype), V=V.astype(dtype), b=jnp.zeros((q,), dtype))


def _check_low_rank(params: LowRankParams) -> tuple[int, int]:
  U, V, b = params
  if (jnp.ndim(U) != 2 or jnp.ndim(V) != 2 or jnp.shape(U)[1] != jnp.shape(V)[0]
      or jnp.shape(b) != (jnp.shape(V)[1],)):
    raise _shape_error("low_rank", "U (d, r), V (r, q) and b (q,)",
                       {"U": jnp.shape(U), "V": jnp.shape(V), "b": jnp.shape(b)})
  return jnp.shape(U)[0], jnp.shape(V)[1]


def low_rank_logits(params: LowRankParams, x: ArrayLike) -> jax.Array:
  r"""``o = (x U) V + b``: ``r(d + q)`` multiply-adds instead of ``dq``.

  .. math:: o = x\,U V + b, \qquad U \in \mathbb{R}^{d\times r},\ V \in \mathbb{R}^{r\times q}

  Args:
    params: from :func:`init_low_rank`.
    x: features, shape ``(d,)`` or ``(..., d)``.

  Returns:
    Logits of shape ``(q,)`` or ``(..., q)``.

  References:
    Sainath et al., Low-rank matrix factorization for deep neural network training with
    high-dimensional output targets, ICASSP 2013.
  """
  d, _ = _check_low_rank(params)
  return _low_rank_apply(params, _check_x(x, d, "low_rank"))


_low_rank_apply = _layer_apply(lambda p, x_D: dot(dot(x_D, p.U), p.V))


def low_rank_num_params(d: int, q: int, *, rank: int) -> int:
  """``r(d + q) + q``."""
  d, q = _dims(d, q)
  rank = _check_rank(rank, d, q)
  return rank * (d + q) + q


def low_rank_flops(d: int, q: int, *, rank: int) -> int:
  """``2r(d + q) + q`` per example."""
  d, q = _dims(d, q)
  rank = _check_rank(rank, d, q)
  return 2 * rank * (d + q) + q


# --- PHM: parameterised hypercomplex multiplication ----------------------------------------------


class PHMParams(NamedTuple):
  r"""``W = Σᵢ Aᵢ ⊗ Sᵢ`` (Kronecker products), ``i = 1..n``.

  Attributes:
    A: shape ``(n, n, n)``: ``A[i]`` is the ``n×n`` matrix ``Aᵢ`` (the learned "multiplication
      rule"; fixed to the Hamilton product's it would give a quaternion layer, ``n = 4``).
    S: shape ``(n, d/n, q/n)``: ``S[i]`` is ``Sᵢ``.
    b: shape ``(q,)``.
  """

  A: jax.Array
  S: jax.Array
  b: jax.Array


def init_phm(key: jax.Array, d: int, q: int, *, n: int, scale: float = 0.01,
             dtype=jnp.float32) -> PHMParams:
  r"""A PHM layer: ``Aᵢ ~ N(0, 1/n)``, ``Sᵢ ~ N(0, scale²)``, ``b = 0``.

  Each entry of ``W = Σᵢ Aᵢ ⊗ Sᵢ`` is a sum of ``n`` products, so it has variance ``scale²``
  at init, as the dense layer's.

  Args:
    key: a PRNG key.
    d: inputs; ``n`` must divide it.
    q: outputs; ``n`` must divide it.
    n: the number of Kronecker terms and the size of each ``Aᵢ``.
    scale: standard deviation of the entries of ``W`` at init.
    dtype: a floating dtype.

  Returns:
    ``PHMParams(A [n, n, n], S [n, d/n, q/n], b [q])``.

  Raises:
    ValueError: ``n`` not a positive int or not dividing both ``d`` and ``q`` (the message gives
      d, q and n).
  """
  d, q = _dims(d, q)
  n = _check_n(n, d, q)
  scale = _check_scale(scale)
  _check_float_dtype(dtype)
  return _draw_phm(key, scale, d=d, q=q, n=n, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("d", "q", "n", "dtype"))
def _draw_phm(key, scale, *, d, q, n, dtype):
  ka, ks = jax.random.split(key)
  A = jax.random.normal(ka, (n, n, n), dtype) / math.sqrt(n)
  S = scale * jax.random.normal(ks, (n, d // n, q // n), dtype)
  return PHMParams(A=A.astype(dtype), S=S.astype(dtype), b=jnp.zeros((q,), dtype))


def _check_phm(params: PHMParams) -> tuple[int, int, int]:
  A, S, b = params
  n = jnp.shape(A)[0] if jnp.ndim(A) == 3 else -1
  if (jnp.shape(A) != (n, n, n) or jnp.ndim(S) != 3 or jnp.shape(S)[0] != n
      or jnp.shape(b) != (n * jnp.shape(S)[2],)):
    raise _shape_error("phm", "A (n, n, n), S (n, d/n, q/n) and b (q,)",
                       {"A": jnp.shape(A), "S": jnp.shape(S), "b": jnp.shape(b)})
  return n * jnp.shape(S)[1], n * jnp.shape(S)[2], n


def _phm_one(params: PHMParams, x_D: jax.Array) -> jax.Array:
  # With X = x.reshape(n, d/n): x (A ⊗ S) = vec(Aᵀ X S) (row-major), so
  # o = Σᵢ Aᵢᵀ X Sᵢ. Contract the larger of d, q first (its dq multiply-adds are unavoidable) and
  # let the n×n matrices meet the smaller: dq + n²·min(d, q) multiply-adds.
  A, S, _ = params
  n, dn, qn = S.shape
  X = x_D.reshape(n, dn)
  if qn <= dn:
    Z = einsum("ap,ips->ias", X, S)  # Xᵢ Sᵢ: n · n(d/n)(q/n) = dq
    O = einsum("iac,ias->cs", A, Z)  # Σᵢ Aᵢᵀ (X Sᵢ): n · n·n·(q/n) = n²q
  else:
    T = einsum("iac,ap->icp", A, X)  # Aᵢᵀ X: n · n·n·(d/n) = n²d
    O = einsum("icp,ips->cs", T, S)  # Σᵢ (Aᵢᵀ X) Sᵢ: dq
  return O.reshape(n * qn)


def phm_logits(params: PHMParams, x: ArrayLike) -> jax.Array:
  r"""``o = x (Σᵢ Aᵢ ⊗ Sᵢ) + b``, without forming the ``d×q`` matrix.

  .. math:: o = \mathrm{vec}\Big(\sum_{i=1}^n A_i^\top X S_i\Big) + b, \qquad
     X = \mathrm{reshape}(x, [n, d/n])

  (``vec`` row-major), which is ``x W + b`` with ``W = Σᵢ kron(Aᵢ, Sᵢ)``.

  Args:
    params: from :func:`init_phm`.
    x: features, shape ``(d,)`` or ``(..., d)``.

  Returns:
    Logits of shape ``(q,)`` or ``(..., q)``.

  References:
    Zhang et al., Beyond Fully-Connected Layers with Quaternions: Parameterization of
    Hypercomplex Multiplications with 1/n Parameters, ICLR 2021, §3.
  """
  d, _, _ = _check_phm(params)
  return _phm_apply(params, _check_x(x, d, "phm"))


_phm_apply = _layer_apply(_phm_one)


def phm_num_params(d: int, q: int, *, n: int) -> int:
  """``n³ + dq/n + q``: the ``Aᵢ``, the ``Sᵢ`` and the bias."""
  d, q = _dims(d, q)
  n = _check_n(n, d, q)
  return n**3 + d * q // n + q


def phm_flops(d: int, q: int, *, n: int) -> int:
  """``2(dq + n²·min(d, q)) + q`` per example, in the contraction order of :func:`phm_logits`.

  PHM saves parameters (a factor near ``n``), not per-example arithmetic: applying a sum of ``n``
  Kronecker products costs at least the ``dq`` multiply-adds of ``X Sᵢ`` over all ``i``.
  """
  d, q = _dims(d, q)
  n = _check_n(n, d, q)
  return 2 * (d * q + n * n * min(d, q)) + q


# --- Fastfood / Deep Fried -----------------------------------------------------------------------


def _is_pow2(n: int) -> bool:
  return n >= 1 and n & (n - 1) == 0


def next_pow2(d: int) -> int:
  """The smallest power of two ``>= d`` (``d' `` of the Fastfood layer)."""
  d = _positive_int(d, "d")
  return 1 << (d - 1).bit_length()


def _fwht_raw(x: jax.Array) -> jax.Array:
  n = x.shape[-1]
  lead = x.shape[:-1]
  h = 1
  while h < n:  # log2(n) butterfly stages of n adds/subtracts each
    y = x.reshape(*lead, n // (2 * h), 2, h)
    a, b = y[..., 0, :], y[..., 1, :]
    x = jnp.stack([a + b, a - b], axis=-2).reshape(*lead, n)
    h *= 2
  return x


def fwht(x: ArrayLike) -> jax.Array:
  r"""The fast Walsh–Hadamard transform along the last axis: ``x H_n`` in ``n log₂ n`` adds.

  ``H_n`` is the unnormalised Sylvester–Hadamard matrix (``scipy.linalg.hadamard(n)``), entries
  ``±1``, symmetric, with ``H_n H_n = n I``:

  .. math:: H_1 = [1], \qquad H_{2m} = \begin{bmatrix} H_m & H_m \\ H_m & -H_m \end{bmatrix}

  Each of the ``log₂ n`` stages reshapes the axis to ``[n/2h, 2, h]`` and replaces the pair
  ``(a, b)`` by ``(a + b, a − b)``. Rows whose largest entry reaches ``2^(h+1)``
  (:func:`guard_headroom`; float32: ``8.6e9``) are first divided by a power of two (exactly) and
  the result multiplied back, so finite input gives finite output or ``±inf``, never
  ``inf − inf = NaN``.

  Args:
    x: shape ``[..., n]`` with ``n`` a power of two; floating point.

  Returns:
    ``x @ H_n``, the same shape and dtype as ``x``.

  Raises:
    ValueError: a scalar, or a last axis that is not a power of two.
    TypeError: a non-floating dtype.

  References:
    Fino & Algazi, Unified matrix treatment of the fast Walsh–Hadamard transform, IEEE Trans.
    Computers, 1976; Le, Sarlós & Smola, ICML 2013 (its use in Fastfood).
  """
  x = v.as_float_array(x, "x")
  if x.ndim == 0 or not _is_pow2(x.shape[-1]):
    raise ValueError(f"fwht needs a last axis whose length is a power of two; got shape "
                     f"{x.shape}.")
  return _fwht_guarded(x)


_fwht_scaled = _guarded(lambda _, x: _fwht_raw(x))
_fwht_guarded = jax.jit(lambda x: _fwht_scaled((), x))


@jax.tree_util.register_pytree_node_class
class FastfoodParams:
  r"""``k = ⌈q/d'⌉`` stacked blocks ``Vⱼ = diag(Sⱼ) H diag(Gⱼ) Πⱼ H diag(Bⱼ) / d'``.

  Leaves (trained): ``S`` ``[q]`` (the scaling of the ``q`` rows that are kept), ``G`` and ``B``
  ``[k, d']`` and the bias ``b`` ``[q]``. Static metadata (never trained, not counted):
  ``perm``, ``k`` tuples of ``d'`` ints, with ``(Πⱼ z)ᵢ = z[perm[j][i]]``, and ``d``, the input
  size before zero-padding to ``d'``.
  """

  def __init__(self, S, G, B, b, *, perm: tuple[tuple[int, ...], ...], d: int):
    self.S, self.G, self.B, self.b = S, G, B, b
    self.perm, self.d = perm, d

  def tree_flatten(self):
    return (self.S, self.G, self.B, self.b), (self.perm, self.d)

  @classmethod
  def tree_unflatten(cls, aux, children):
    perm, d = aux
    return cls(*children, perm=perm, d=d)

  def __repr__(self):
    return (f"FastfoodParams(S={jnp.shape(self.S)}, G={jnp.shape(self.G)}, "
            f"B={jnp.shape(self.B)}, b={jnp.shape(self.b)}, d={self.d}, "
            f"perm=<{len(self.perm)} fixed permutations>)")


def init_fastfood(key: jax.Array, d: int, q: int, *, scale: float = 0.01,
                  dtype=jnp.float32) -> FastfoodParams:
  r"""A Fastfood layer as in Deep Fried Convnets: ``S, G, B`` learned, ``Π`` fixed.

  Following Le et al. (2013): ``B`` has random signs ``±1``, ``G ~ N(0, 1)``, and ``Πⱼ`` is a
  uniform random permutation (one per block). Row ``i`` of ``H G Π H B / d'`` has norm
  ``‖Gⱼ‖/√d' ≈ 1``, so ``S = scale·√d'`` gives the effective ``d×q`` weight columns of norm
  about ``scale·√d'``, like a dense ``N(0, scale²)`` layer's.

  Args:
    key: a PRNG key.
    d: inputs (zero-padded to ``d' = next_pow2(d)``).
    q: outputs (``k = ⌈q/d'⌉`` blocks of ``d'``, truncated to ``q``).
    scale: the dense-equivalent weight scale.
    dtype: a floating dtype.

  Returns:
    :class:`FastfoodParams`.
  """
  d, q = _dims(d, q)
  scale = _check_scale(scale)
  _check_float_dtype(dtype)
  dp = next_pow2(d)
  k = -(-q // dp)
  S, G, B, b, perm = _draw_fastfood(key, scale, q=q, k=k, dp=dp, dtype=dtype)
  perm = tuple(tuple(int(i) for i in row) for row in np.asarray(perm))
  return FastfoodParams(S=S, G=G, B=B, b=b, perm=perm, d=d)


@functools.partial(jax.jit, static_argnames=("q", "k", "dp", "dtype"))
def _draw_fastfood(key, scale, *, q, k, dp, dtype):
  kb, kg, kp = jax.random.split(key, 3)
  B = jax.random.rademacher(kb, (k, dp), dtype)
  G = jax.random.normal(kg, (k, dp), dtype)
  perm = jax.vmap(lambda j: jax.random.permutation(jax.random.fold_in(kp, j), dp))(jnp.arange(k))
  S = jnp.full((q,), math.sqrt(dp), dtype) * scale
  return S.astype(dtype), G, B, jnp.zeros((q,), dtype), perm


def _check_fastfood(params: FastfoodParams) -> tuple[int, int, int, int]:
  if not isinstance(params, FastfoodParams):
    raise TypeError(f"params must be FastfoodParams (from init_fastfood); got "
                    f"{type(params).__name__}.")
  S, G, B, b = params.S, params.G, params.B, params.b
  d = params.d
  k, dp = jnp.shape(G) if jnp.ndim(G) == 2 else (-1, -1)
  q = jnp.shape(b)[0] if jnp.ndim(b) == 1 else -1
  ok = (isinstance(d, int) and _is_pow2(dp) and next_pow2(max(d, 1)) == dp and jnp.shape(B)
        == (k, dp) and jnp.shape(S) == (q,) and q >= 1 and k == -(-q // dp)
        and len(params.perm) == k and all(sorted(p) == list(range(dp)) for p in params.perm))
  if not ok:
    raise _shape_error("fastfood", "S (q,), G and B (k, d') with d' = next_pow2(d) and "
                       "k = ceil(q/d'), b (q,) and k permutations of range(d')",
                       {"S": jnp.shape(S), "G": jnp.shape(G), "B": jnp.shape(B),
                        "b": jnp.shape(b), "d": (d,), "perm": (len(params.perm),)})
  return d, q, k, dp


def _fastfood_linear(params: FastfoodParams, x: jax.Array) -> jax.Array:
  # Written for x of shape [..., d] directly (every step acts on the last axis), not vmapped: a
  # vmapped per-example version runs about 1.5x slower on CPU (the permutation's gather, batched
  # by vmap, becomes a general gather). The overflow guard is applied row by row, by
  # `_fastfood_rows`.
  d, q = params.d, params.b.shape[0]
  k, dp = params.G.shape
  lead = x.shape[:-1]
  # Πⱼ as one gather along the flattened k·d' axis: a compile-time constant index.
  flat = (np.asarray(params.perm, np.int32) + dp * np.arange(k, dtype=np.int32)[:, None]).ravel()
  def lead_axes(a):  # explicit broadcasting over the leading axes
    return a.reshape((1,) * len(lead) + a.shape)

  z = jnp.pad(x, [(0, 0)] * len(lead) + [(0, dp - d)])[..., None, :] * lead_axes(params.B)
  z = _fwht_raw(z)  # H B x, [..., k, d']
  z = z.reshape(*lead, k * dp)[..., flat].reshape(*lead, k, dp)  # Π
  z = _fwht_raw(z * lead_axes(params.G))  # H G Π H B x
  # Keep the first q of the k·d' outputs; 1/d' makes both H's orthonormal (H H = d' I).
  o = z.reshape(*lead, k * dp)[..., :q] * lead_axes(params.S / dp)
  return o


_fastfood_scaled = _guarded(_fastfood_linear)


def _fastfood_rows(params: FastfoodParams, x: jax.Array) -> jax.Array:
  o = _fastfood_scaled(params, x)
  return o + params.b.reshape((1,) * (o.ndim - 1) + params.b.shape)


def fastfood_logits(params: FastfoodParams, x: ArrayLike) -> jax.Array:
  r"""``o = (V pad(x))[:q] + b`` with ``V = [V₁; …; V_k]``, ``Vⱼ = S H G Πⱼ H B / d'``.

  .. math:: V_j = \tfrac{1}{d'}\,\mathrm{diag}(S_j)\, H_{d'}\, \mathrm{diag}(G_j)\, \Pi_j\,
     H_{d'}\, \mathrm{diag}(B_j)

  ``x`` is zero-padded to ``d'`` (a power of two); each block costs two :func:`fwht` of
  ``d' log₂ d'`` adds and ``2d'`` multiplies, so the layer is ``O(k·d' log d') = O(max(q, d)
  log d)`` arithmetic with ``O(max(q, d))`` parameters, against ``O(dq)`` for dense.

  Args:
    params: from :func:`init_fastfood`.
    x: features, shape ``(d,)`` or ``(..., d)``.

  Returns:
    Logits of shape ``(q,)`` or ``(..., q)``.

  References:
    Le, Sarlós & Smola, Fastfood, ICML 2013, §3; Yang et al., Deep Fried Convnets, ICCV 2015, §3
    (adaptive Fastfood: S, G, B learned).
  """
  d, _, _, _ = _check_fastfood(params)
  return _fastfood_apply(params, _check_x(x, d, "fastfood"))


_fastfood_apply = jax.jit(_fastfood_rows)


def fastfood_num_params(d: int, q: int) -> int:
  """``2k·d' + 2q``: ``G`` and ``B`` (``k`` blocks of ``d'``), ``S`` and the bias (``q`` each)."""
  d, q = _dims(d, q)
  dp = next_pow2(d)
  return 2 * -(-q // dp) * dp + 2 * q


def fastfood_flops(d: int, q: int) -> int:
  """``k(2d' log₂ d' + 2d') + 2q`` per example.

  Per block: two FWHTs of ``d' log₂ d'`` adds each and the ``B``, ``G`` multiplies; then ``S``
  and the bias on the ``q`` kept outputs.
  """
  d, q = _dims(d, q)
  dp = next_pow2(d)
  k = -(-q // dp)
  return k * (2 * dp * (dp.bit_length() - 1) + 2 * dp) + 2 * q


# --- the registry --------------------------------------------------------------------------------


class Layer(NamedTuple):
  """One output layer: its functions and formulas.

  Attributes:
    init: ``(key, d, q, **hyper) -> params``.
    apply: ``(params, x [..., d]) -> logits [..., q]``.
    param_count: ``(d, q, **hyper) -> int``, the formula :func:`num_params` must match.
    flops: ``(d, q, **hyper) -> int``, FLOPs per example.
    hyperparameter: the keyword the layer needs (``"rank"``, ``"n"``) or None.
  """

  init: Callable[..., Any]
  apply: Callable[[Any, ArrayLike], jax.Array]
  param_count: Callable[..., int]
  flops: Callable[..., int]
  hyperparameter: str | None


LAYERS: dict[str, Layer] = {
    "dense": Layer(init_dense, dense_logits, dense_num_params, dense_flops, None),
    "low_rank": Layer(init_low_rank, low_rank_logits, low_rank_num_params, low_rank_flops, "rank"),
    "phm": Layer(init_phm, phm_logits, phm_num_params, phm_flops, "n"),
    "fastfood": Layer(init_fastfood, fastfood_logits, fastfood_num_params, fastfood_flops, None),
}
"""The output layers by name, for ``flags.DEFINE_enum("layer", "dense", list(LAYERS), ...)``."""
