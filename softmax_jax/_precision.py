"""Matrix products at full float32 precision on every backend.

JAX's default precision lets GPUs and TPUs multiply float32 matrices in TF32 or bf16 passes (a
10- or 8-bit mantissa): ``x @ W`` then differs from the exact product by ~1e-3 relative, and the
closed-form gradient check of ``softmax_jax.train`` fails on a GPU. PyTorch keeps float32 matmuls
exact by default (``torch.backends.cuda.matmul.allow_tf32 = False``). Every product in the library
goes through here so that float32 means float32 everywhere; on a CPU it changes nothing.

Also the exact power-of-two scalings that keep products of huge inputs from overflowing in their
partial sums (:func:`pow2_exponent`, :func:`times_pow2`): the layers, the MLP and
:func:`softmax_jax.logits` compute ``2^t·f(x·2^-t)`` for a linear ``f``.
"""

import jax
import jax.numpy as jnp
from jax import lax

PRECISION = jax.lax.Precision.HIGHEST


def dot(a, b):
  """``a @ b`` (``jnp.matmul`` semantics) at :data:`PRECISION`."""
  return jnp.matmul(a, b, precision=PRECISION)


def einsum(subscripts, *operands):
  """``jnp.einsum`` at :data:`PRECISION`."""
  return jnp.einsum(subscripts, *operands, precision=PRECISION)


def pow2_exponent(x: jax.Array, axis: int = -1) -> jax.Array:
  """``t >= 0`` with ``max|x|/2^t ∈ [1, 2)`` when ``max|x| > 1``, else ``t = 0`` (int, keepdims).

  ``t = 0`` also when ``max|x|`` is ``inf`` or NaN (``frexp`` gives no exponent; an infinite
  input is passed on unscaled, rather than doubled, which turned ``inf − 3e38`` into ``inf − inf``).
  """
  m = lax.stop_gradient(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
  _, e = jnp.frexp(m)  # m = f·2^e with f ∈ [0.5, 1)
  return jnp.where((m > 1) & (m < jnp.inf), e - 1, 0)


def times_pow2(x: jax.Array, t: jax.Array) -> jax.Array:
  """``x·2^t``, exactly (barring overflow or underflow), for ``|t| <= 128``.

  ``2^t`` is applied as two factors ``2^a·2^b`` (``a = t//2``) so that neither is subnormal: XLA
  on CPU flushes subnormals to zero, and ``2^-127`` is one. A power-of-two scaling is exact, so a
  linear ``f`` satisfies ``f(x) = 2^t f(x·2^-t)`` to rounding; entries smaller than the largest by
  ``~2^-149`` may underflow, but their share of any sum is below rounding anyway.
  """
  one = jnp.ones((), x.dtype)
  a = t // 2
  return x * jnp.ldexp(one, a).astype(x.dtype) * jnp.ldexp(one, t - a).astype(x.dtype)
