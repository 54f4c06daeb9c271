r"""The softmax regression model: an affine map to logits, then softmax (D2L §4.1.1).

.. math:: o = x W + b, \qquad \hat y = \mathrm{softmax}(o)

For ``d`` features and ``q`` classes the model has ``d·q`` weights and ``q`` biases: the text's
2×2 greyscale images (4 features) in 3 classes give 12 weights and 3 biases. The output layer is
fully connected, so it costs ``O(dq)`` to store and to apply.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax._precision import dot
from softmax_jax.softmax import softmax


class Params(NamedTuple):
  """Parameters of softmax regression, a pytree.

  Attributes:
    W: weights, shape ``(d, q)``: ``d`` features, ``q`` classes.
    b: biases, shape ``(q,)``.
  """

  W: jax.Array
  b: jax.Array

  @property
  def num_features(self) -> int:
    return self.W.shape[0]

  @property
  def num_classes(self) -> int:
    return self.W.shape[1]


def init_params(key: jax.Array, num_features: int, num_classes: int, *, scale: float = 0.01,
                dtype=jnp.float32) -> Params:
  r"""Draws ``W ~ N(0, scale²)`` and sets ``b = 0``, as D2L's from-scratch code does.

  Args:
    key: a PRNG key.
    num_features: ``d``, the input dimension.
    num_classes: ``q``, the number of classes.
    scale: standard deviation of the weights (``>= 0``).
    dtype: a floating dtype.

  Returns:
    ``Params(W, b)`` with ``W`` of shape ``(d, q)`` and ``b`` of shape ``(q,)``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1.2 and §4.4.1 (initialisation).
  """
  for name, n in (("num_features", num_features), ("num_classes", num_classes)):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
      raise ValueError(f"{name} must be a positive int; got {n!r}.")
  if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
      math.isfinite(scale) and scale >= 0):
    raise ValueError(f"scale must be a finite non-negative number; got {scale!r}.")
  num_features, num_classes, scale = int(num_features), int(num_classes), float(scale)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be floating point; got {dtype!r}.")
  W = scale * jax.random.normal(key, (num_features, num_classes), dtype)
  return Params(W=W.astype(dtype), b=jnp.zeros((num_classes,), dtype))


def _check(params: Params, x: ArrayLike) -> tuple[Params, jax.Array]:
  W, b = (jnp.asarray(a) for a in params)
  if W.ndim != 2 or b.shape != (W.shape[-1],):
    raise ValueError(f"params must hold W of shape (d, q) and b of shape (q,); got W {W.shape} "
                     f"and b {b.shape}.")
  x = v.as_float_array(x, "x")
  if x.ndim == 0 or x.shape[-1] != W.shape[0]:
    raise ValueError(f"x must have shape (d,) or (..., d) with d = {W.shape[0]} features (W is "
                     f"{W.shape}); got {x.shape}.")
  return Params(W, b), x


def _logits_one(params: Params, x_D: jax.Array) -> jax.Array:
  """Logits of a single example: ``o_C = x_D W_DxC + b_C``."""
  return dot(x_D, params.W) + params.b


def logits(params: Params, x: ArrayLike) -> jax.Array:
  r"""The affine map ``o = xW + b``, for one example or a batch.

  Written for a single example ``x`` of shape ``(d,)`` and ``jax.vmap``-ped over the batch, so
  ``x`` of shape ``(n, d)`` (or ``(..., d)``, flattened to ``(n, d)`` and back) works too; vmap
  turns the per-example vector–matrix products into one matrix product.

  A batch has a derivative rule of its own (:func:`_batch_logits`): the same tangent
  ``dx W + x dW + db``, written so that reverse mode's weight gradient ``xᵀ G`` is a product XLA
  runs fast on a CPU. Forward mode, reverse mode and ``jax.hessian`` all work.

  Args:
    params: ``Params(W, b)``.
    x: features, shape ``(d,)`` or ``(..., d)``.

  Returns:
    Logits of shape ``(q,)`` or ``(..., q)``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1.2 (eq. 4.1.2) and §4.1.1.4 (vectorisation).
  """
  params, x = _check(params, x)
  if x.ndim == 1:
    return _logits_one(params, x)
  o_NC = _batch_logits(params, x.reshape(-1, x.shape[-1]))
  return o_NC.reshape(*x.shape[:-1], o_NC.shape[-1])


def _vmapped_logits(params: Params, x_ND: jax.Array) -> jax.Array:
  return jax.vmap(_logits_one, in_axes=(None, 0))(params, x_ND)


# ----------------------------------------------------------------------------------------------
# The derivative of a batch. Reverse mode transposes the tangent's x·dW into the weight gradient
# dW = xᵀ·G, a product whose left operand is contracted along its rows. XLA:CPU (jax 0.10) runs
# that product through a generic kernel, 1.7–1.9× slower than (Gᵀ·x)ᵀ, the same numbers with
# the rows of x contracted by a rows-by-columns kernel (34 against 18 ms over 60,000 × 784 × 10).
# XLA folds the transposes that turn one into the other back into the product unless an
# optimisation barrier keeps them, so on a CPU the tangent is written as ((dWᵀ)·xᵀ)ᵀ with barriers
# around the transposes (2,560 and 7,840 floats at 256 × 784 × 10): the epoch of
# `benchmarks/epoch.py` ran 23% faster (BENCHMARKS.md).
# Other backends keep the plain product, since their matrix units take transposed operands as
# they are. JAX 0.4.35 cannot transpose an optimisation barrier, and there the batch keeps plain
# autodiff.
# ----------------------------------------------------------------------------------------------


@functools.cache
def _barrier_transposes() -> bool:
  """Whether this JAX can transpose ``lax.optimization_barrier`` (needed by reverse mode)."""
  try:
    jax.make_jaxpr(jax.linear_transpose(jax.lax.optimization_barrier, 0.0))(1.0)
  except NotImplementedError:
    return False
  return True


def _batch_logits(params: Params, x_ND: jax.Array) -> jax.Array:
  if not _barrier_transposes():
    return _vmapped_logits(params, x_ND)
  return _batch_logits_rule(params, x_ND)


@jax.custom_jvp
def _batch_logits_rule(params: Params, x_ND: jax.Array) -> jax.Array:
  return _vmapped_logits(params, x_ND)


def _x_dw_cpu(x_ND: jax.Array, dW_DxC: jax.Array) -> jax.Array:
  """``x·dW`` as ``((dWᵀ)·xᵀ)ᵀ``, the transposes kept, so that its transpose is ``(Gᵀ·x)ᵀ``."""
  barrier = jax.lax.optimization_barrier
  return barrier(dot(barrier(dW_DxC.T), x_ND.T)).T


def _batch_logits_jvp(primals, tangents):
  params, x_ND = primals
  dparams, dx_ND = tangents
  out = _vmapped_logits(params, x_ND)
  terms = []
  if not v.is_zero_tangent(dx_ND):
    terms.append(dot(dx_ND, params.W))
  if not v.is_zero_tangent(dparams.W):
    terms.append(jax.lax.platform_dependent(x_ND, dparams.W, cpu=_x_dw_cpu, default=dot))
  if not v.is_zero_tangent(dparams.b):
    terms.append(jnp.broadcast_to(dparams.b, out.shape))
  if not terms:
    return out, jnp.zeros_like(out)
  return out, functools.reduce(jnp.add, terms).astype(out.dtype)


_batch_logits_rule.defjvp(_batch_logits_jvp, symbolic_zeros=True)


def predict(params: Params, x: ArrayLike) -> jax.Array:
  """The most likely class, ``argmax_j o_j``, as int32.

  Softmax preserves the order of the logits, so no softmax is computed: the argmax of the logits
  is the argmax of the probabilities (§4.1.1.3).

  Args:
    params: ``Params(W, b)``.
    x: features, shape ``(d,)`` or ``(..., d)``.

  Returns:
    Class ids of shape ``()`` or ``(...)``.
  """
  return jnp.argmax(logits(params, x), axis=-1).astype(jnp.int32)


def predict_proba(params: Params, x: ArrayLike) -> jax.Array:
  """Class probabilities ``softmax(xW + b)``, shape ``(q,)`` or ``(..., q)``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1.3 (eq. 4.1.3).
  """
  return softmax(logits(params, x), axis=-1)
