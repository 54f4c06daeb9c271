r"""A one-hidden-layer perceptron in pure JAX: a bigger model than softmax regression.

.. math:: h = \phi(x W_1 + b_1), \qquad o = h W_2 + b_2, \qquad \hat y = \mathrm{softmax}(o)

With ``d`` features, ``H`` hidden units and ``C`` classes it has ``dH + H + HC + C`` parameters.
Softmax regression is the case with no hidden layer (§4.1.1: one affine map); the hidden layer
and its nonlinearity ``φ`` (ReLU or tanh) make the decision boundaries non-linear. The
experiments use it as a teacher whose softened outputs a softmax-regression student is trained on
(``experiments/soft_labels.py``).

References:
  Zhang et al., Dive into Deep Learning, §4.1.1 (the affine output layer) and §5.1 (multilayer
  perceptrons); He et al., Delving Deep into Rectifiers, ICCV 2015 (the initialisation).
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
from softmax_jax import layers
from softmax_jax._precision import dot

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}
"""The hidden layer's nonlinearity ``φ``, by name."""


class MLPParams(NamedTuple):
  """Parameters of a one-hidden-layer perceptron, a pytree.

  Attributes:
    W1: ``(d, H)`` input-to-hidden weights.
    b1: ``(H,)`` hidden biases.
    W2: ``(H, C)`` hidden-to-output weights.
    b2: ``(C,)`` output biases.
  """

  W1: jax.Array
  b1: jax.Array
  W2: jax.Array
  b2: jax.Array


def _positive_int(n, name: str) -> int:
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"{name} must be a positive int; got {n!r}.")
  return int(n)


def init_mlp(key: jax.Array, num_features: int, num_hidden: int, num_classes: int, *,
             dtype=jnp.float32) -> MLPParams:
  r"""He-normal weights and zero biases: ``W1 ~ N(0, 2/d)``, ``W2 ~ N(0, 1/H)``.

  The variance ``2/d`` keeps the ReLU layer's activations of the order of the inputs; ``1/H``
  (LeCun's) keeps the output logits of order one.

  Args:
    key: a PRNG key.
    num_features: ``d >= 1``.
    num_hidden: ``H >= 1``.
    num_classes: ``C >= 1``.
    dtype: a floating dtype.

  Returns:
    ``MLPParams`` with ``W1 (d, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)``.

  Raises:
    ValueError: a size that is not a positive int.
    TypeError: a non-floating ``dtype``.

  References:
    He et al., Delving Deep into Rectifiers, ICCV 2015.
  """
  d = _positive_int(num_features, "num_features")
  h = _positive_int(num_hidden, "num_hidden")
  c = _positive_int(num_classes, "num_classes")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be floating point; got {dtype!r}.")
  k1, k2 = jax.random.split(key)
  W1 = math.sqrt(2.0 / d) * jax.random.normal(k1, (d, h), dtype)
  W2 = math.sqrt(1.0 / h) * jax.random.normal(k2, (h, c), dtype)
  return MLPParams(W1=W1.astype(dtype), b1=jnp.zeros((h,), dtype), W2=W2.astype(dtype),
                   b2=jnp.zeros((c,), dtype))


def _check(params: MLPParams, x: ArrayLike, activation: str) -> tuple[MLPParams, jax.Array]:
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}.")
  if not isinstance(params, tuple) or len(params) != 4:
    raise TypeError(f"params must be MLPParams(W1, b1, W2, b2); got {type(params).__name__}.")
  W1, b1, W2, b2 = (jnp.asarray(a) for a in params)
  d, h = W1.shape if W1.ndim == 2 else (None, None)
  if (W1.ndim != 2 or b1.shape != (h,) or W2.ndim != 2 or W2.shape[0] != h
      or b2.shape != W2.shape[1:]):
    raise ValueError(f"params must hold W1 (d, H), b1 (H,), W2 (H, C) and b2 (C,); got W1 "
                     f"{W1.shape}, b1 {b1.shape}, W2 {W2.shape}, b2 {b2.shape}.")
  x = v.as_float_array(x, "x")
  if x.ndim == 0 or x.shape[-1] != d:
    raise ValueError(f"x must have shape (d,) or (..., d) with d = {d} features (W1 is "
                     f"{W1.shape}); got {x.shape}.")
  return MLPParams(W1, b1, W2, b2), x


_first_layer = layers._guarded(lambda W1_DxH, x_D: dot(x_D, W1_DxH))


def _mlp_logits_one(params: MLPParams, x_D: jax.Array, *, activation: str) -> jax.Array:
  """One example: ``o_C = φ(x_D W1_DxH + b1_H) W2_HxC + b2_C``."""
  # x·W1 as 2^t·((x·2^-t)·W1), layers' overflow guard: a power-of-two scaling is exact, and it
  # keeps the partial sums of inputs near ±3e38 from overflowing to inf − inf = NaN (the product
  # may still round to ±inf, which tanh maps to ±1). Its derivatives in x are those of x·W1 (the
  # scaled chain flushed tangents to 0 and overflowed cotangents near 3e38).
  pre_H = _first_layer(params.W1, x_D)
  h_H = ACTIVATIONS[activation](pre_H + params.b1)
  return dot(h_H, params.W2) + params.b2


def mlp_logits(params: MLPParams, x: ArrayLike, *, activation: str = "relu") -> jax.Array:
  r"""The perceptron's logits ``o = φ(xW_1 + b_1)W_2 + b_2``, for one example or a batch.

  Written for one example ``x`` of shape ``(d,)`` and ``jax.vmap``-ped over every leading axis,
  as :func:`softmax_jax.logits` is. Feed the logits to :func:`softmax_jax.softmax` or
  :func:`softmax_jax.cross_entropy`, never a softmax of them to a log.

  Numerics: the logits are finite whenever ``x`` and the parameters are and no product
  overflows; with ``activation="tanh"`` the hidden units are bounded by 1, so the logits stay
  finite for any finite ``x``, even ``±3e38`` (ReLU passes such an input on and may overflow to
  ``±inf``, as any linear layer would). The first product has :mod:`softmax_jax.layers`' overflow
  guard, with its known limit: features below ``max|x|·2^-158`` drop out of the value and of
  their weights' gradient (not of the derivatives in ``x``), which matters only where the large
  features' weights are 0 or tiny.

  Args:
    params: ``MLPParams(W1, b1, W2, b2)``.
    x: features, shape ``(d,)`` or ``(..., d)``; floating point.
    activation: ``"relu"`` (default) or ``"tanh"``.

  Returns:
    Logits of shape ``(C,)`` or ``(..., C)``.

  Raises:
    ValueError: an unknown activation, or parameters and ``x`` of inconsistent shapes.
    TypeError: non-floating ``x``, or ``params`` that are not four arrays.

  References:
    Zhang et al., Dive into Deep Learning, §5.1 (multilayer perceptrons).
  """
  params, x = _check(params, x, activation)
  fn = functools.partial(_mlp_logits_one, activation=activation)
  for _ in range(x.ndim - 1):
    fn = jax.vmap(fn, in_axes=(None, 0))
  return fn(params, x)
