r"""A generic optax minimiser for the research experiments' models (probit, MLP, compressed layers).

``softmax_jax.train`` is the softmax-regression loop with its gradient check, checkpoints and
exact epochs. The experiments compare other models and losses, so they need the plainest loop
that works for any differentiable ``loss_fn(params, x, y) -> scalar``: one ``lax.scan`` over
``num_steps`` optax updates, full-batch or on minibatches drawn with ``fold_in(key, step)``
(with replacement),
recording the loss and the gradient's global norm at every step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def _check(x, y, num_steps, batch_size, key):
  if not isinstance(num_steps, int) or num_steps < 0:
    raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}.")
  n = jnp.shape(x)[0]
  if jnp.shape(y)[0] != n:
    raise ValueError(f"x and y must have the same number of rows; got x {jnp.shape(x)} and "
                     f"y {jnp.shape(y)}.")
  if batch_size is not None:
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
      raise ValueError(f"batch_size must be an int in [1, {n}] (the number of examples) or None "
                       f"for full batch; got {batch_size!r}.")
    if key is None:
      raise ValueError("minibatches need a PRNG key: pass key=jax.random.key(seed).")


@functools.partial(jax.jit, static_argnames=("loss_fn", "optimizer", "num_steps", "batch_size"))
def _run(params, x, y, key, *, loss_fn, optimizer, num_steps, batch_size):
  n = x.shape[0]

  def step(carry, t):
    params, opt_state = carry
    if batch_size is None:
      xb, yb = x, y
    else:
      # With replacement: O(batch) per step (a permutation of all n rows cost more than the step).
      idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
      xb, yb = x[idx], y[idx]
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    return (params, opt_state), (loss, grad_norm)

  (params, _), (losses, grad_norms) = jax.lax.scan(
      step, (params, optimizer.init(params)), jnp.arange(num_steps))
  return params, {"loss": losses, "grad_norm": grad_norms}


def minimize(loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any,
             x: jax.Array, y: jax.Array, *, optimizer: optax.GradientTransformation,
             num_steps: int, batch_size: int | None = None,
             key: jax.Array | None = None) -> tuple[Any, dict[str, jax.Array]]:
  r"""Minimises ``loss_fn(params, x, y)`` with ``num_steps`` optax updates, as one ``lax.scan``.

  .. math:: \theta_{t+1} = \theta_t + \mathrm{update}(\nabla_\theta L(\theta_t; X_t, Y_t))

  where ``(X_t, Y_t)`` is the whole set (``batch_size=None``) or ``batch_size`` rows drawn uniformly
  with replacement with ``jax.random.fold_in(key, t)`` (SGD's sampling; O(batch) per step).

  Args:
    loss_fn: a pure, differentiable ``(params, x_BxD, y_B...) -> scalar``; hashable (a module
      function or a ``functools.partial`` of one), since it is a static argument of ``jit``.
    params: any pytree of arrays.
    x: inputs, shape ``[n, ...]``.
    y: targets, shape ``[n, ...]``.
    optimizer: an optax ``GradientTransformation``; hashable (optax's are).
    num_steps: number of updates (>= 0).
    batch_size: rows per step, or None for full batch.
    key: PRNG key for the minibatches (required when ``batch_size`` is set).

  Returns:
    ``(params, history)`` where ``history["loss"]`` and ``history["grad_norm"]`` have shape
    ``[num_steps]``: the loss at, and global norm of the gradient at, the params *before* each
    update.

  Raises:
    ValueError: ``num_steps`` < 0, a ``batch_size`` outside ``[1, n]``, minibatches without a
      key, or ``x`` and ``y`` with different numbers of rows.
  """
  _check(x, y, num_steps, batch_size, key)
  if key is None:
    key = jax.random.key(0)  # unused: full batch
  return _run(params, jnp.asarray(x), jnp.asarray(y), key, loss_fn=loss_fn, optimizer=optimizer,
              num_steps=num_steps, batch_size=batch_size)
