"""Exact arithmetic helpers: matrix products at full float32 precision on every backend, and
scaling by powers of two that XLA:CPU's flushing of subnormals cannot spoil.

JAX's default precision lets GPUs and TPUs multiply float32 matrices in TF32 or bf16 passes (a
10- or 8-bit mantissa): ``x @ W`` then differs from the exact product by ~1e-3 relative, and the
closed-form gradient check of ``softmax_jax.train`` fails on a GPU. PyTorch keeps float32 matmuls
exact by default (``torch.backends.cuda.matmul.allow_tf32 = False``). Every product in the library
goes through here so that float32 means float32 everywhere; on a CPU it changes nothing.
"""

import jax
import jax.numpy as jnp

PRECISION = jax.lax.Precision.HIGHEST


def dot(a, b):
  """``a @ b`` (``jnp.matmul`` semantics) at :data:`PRECISION`."""
  return jnp.matmul(a, b, precision=PRECISION)


def einsum(subscripts, *operands):
  """``jnp.einsum`` at :data:`PRECISION`."""
  return jnp.einsum(subscripts, *operands, precision=PRECISION)


def times_pow2(x, t):
  """``x·2^t``, exactly (barring overflow or underflow), for ``|t|`` up to twice the largest
  normal exponent (float32: 254), ``t`` an int array broadcasting against ``x``.

  ``2^t`` is applied as two factors ``2^a·2^b`` (``a = t//2``) so that neither is subnormal: XLA
  on CPU flushes subnormals to zero, and ``2^-127`` is one. A power-of-two scaling is exact, so a
  linear ``f`` satisfies ``f(x) = 2^t f(x·2^-t)`` to rounding; entries that the scaling makes
  subnormal are flushed to 0. Used by the layers' overflow guard, ``solve.hessian`` and the
  ``"mean"`` of class-weighted losses.
  """
  one = jnp.ones((), x.dtype)
  a = t // 2
  return x * jnp.ldexp(one, a).astype(x.dtype) * jnp.ldexp(one, t - a).astype(x.dtype)
