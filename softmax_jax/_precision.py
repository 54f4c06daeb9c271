"""Matrix products at full float32 precision on every backend.

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
