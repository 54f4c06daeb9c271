r"""Training: a pure ``train_step``, an epoch as one ``lax.scan``, exact evaluation by sums.

The objective is the mean cross-entropy of a minibatch plus an optional L2 term,

.. math:: J(W, b) = \frac1n\sum_i l(x_i W + b, y_i) + \frac\lambda2\|W\|^2,

minimised with any optax ``GradientTransformation`` (D2L's default: ``optax.sgd(0.1)``). The
autodiff gradient can be checked at every step against the closed form
``∂J/∂W = Xᵀ(softmax(O) − Y)/n + λW`` and ``∂J/∂b = mean(softmax(O) − Y)``.

Batches: an epoch shuffles the training set with ``fold_in(key, epoch)`` and cuts it into
``ceil(n / batch_size)`` batches. The last, short batch is kept: it is padded and its padding
masked out with ``where``, so its gradient is the mean over its real examples (PyTorch's
``drop_last=False``), and every example is seen once per epoch.
"""

from __future__ import annotations

import functools
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from softmax_jax.losses import cross_entropy
from softmax_jax.losses import cross_entropy_grad
from softmax_jax.model import Params
from softmax_jax.model import init_params
from softmax_jax.model import logits


class TrainState(NamedTuple):
  """Everything that changes during training, as one pytree.

  Attributes:
    params: the model's ``Params``.
    opt_state: the optax optimizer's state.
    step: the number of updates made, int32.
    key: the PRNG key the epochs' shuffles are folded from.
  """

  params: Params
  opt_state: Any
  step: jax.Array
  key: jax.Array


class Batch(NamedTuple):
  """A minibatch: ``x`` ``(B, d)``, ``y`` ``(B,)`` int32, ``mask`` ``(B,)`` bool (False = pad)."""

  x: jax.Array
  y: jax.Array
  mask: jax.Array


def create_train_state(key: jax.Array, num_features: int, num_classes: int,
                       optimizer: optax.GradientTransformation, *,
                       init_scale: float = 0.01) -> TrainState:
  """Initial state: ``W ~ N(0, init_scale²)``, ``b = 0``, the optimizer's initial state."""
  init_key, data_key = jax.random.split(key)
  params = init_params(init_key, num_features, num_classes, scale=init_scale)
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), data_key)


def objective(params: Params, batch: Batch, *, l2: float = 0.0,
              label_smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy over the batch's real examples, plus ``l2/2 · ‖W‖²``."""
  loss = cross_entropy(logits(params, batch.x), batch.y, where=batch.mask, reduction="mean",
                       label_smoothing=label_smoothing)
  return loss + 0.5 * l2 * jnp.sum(jnp.square(params.W))


def closed_form_grad(params: Params, batch: Batch, *, l2: float = 0.0,
                     label_smoothing: float = 0.0) -> Params:
  r"""The objective's gradient in closed form: ``Xᵀ G / n + λW`` and ``Σ_i G_i / n``.

  ``G = softmax(O) − Y`` row by row (with label smoothing, ``Y`` is the smoothed target), zero
  for masked rows, and ``n`` is the number of real examples.
  """
  g_BxC = cross_entropy_grad(logits(params, batch.x), batch.y, where=batch.mask,
                             label_smoothing=label_smoothing)
  n = jnp.maximum(jnp.sum(batch.mask), 1).astype(g_BxC.dtype)
  return Params(W=batch.x.T @ g_BxC / n + l2 * params.W, b=jnp.sum(g_BxC, 0) / n)


def train_step(state: TrainState, batch: Batch, *, optimizer: optax.GradientTransformation,
               l2: float = 0.0, label_smoothing: float = 0.0,
               check_grad: bool = False) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on one minibatch; pure, so it jits and scans.

  Hyperparameters are keywords: bind them with ``functools.partial`` before ``jax.jit``.

  Returns:
    ``(new_state, metrics)`` with metrics ``loss`` (the objective before the update) and, with
    ``check_grad``, ``grad_max_abs_diff`` and ``grad_max_rel_diff`` between the autodiff and the
    closed-form gradient.
  """
  obj = functools.partial(objective, l2=l2, label_smoothing=label_smoothing)
  loss, grads = jax.value_and_grad(obj)(state.params, batch)
  metrics = {"loss": loss}
  if check_grad:
    closed = closed_form_grad(state.params, batch, l2=l2, label_smoothing=label_smoothing)
    diff = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), grads, closed)
    scale = jax.tree.map(lambda b: jnp.max(jnp.abs(b)), closed)
    metrics["grad_max_abs_diff"] = jnp.max(jnp.stack(jax.tree.leaves(diff)))
    metrics["grad_max_rel_diff"] = metrics["grad_max_abs_diff"] / jnp.maximum(
        jnp.max(jnp.stack(jax.tree.leaves(scale))), jnp.finfo(loss.dtype).tiny)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state, state.step + 1, state.key), metrics


def make_batches(x: jax.Array, y: jax.Array, batch_size: int,
                 perm: jax.Array | None = None) -> Batch:
  """Stacks ``(x, y)`` into ``[num_batches, batch_size, ...]``, padding and masking the tail."""
  n = x.shape[0]
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  idx = jnp.arange(n) if perm is None else perm
  idx = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)])
  mask = jnp.arange(num_batches * batch_size) < n
  shape = (num_batches, batch_size)
  return Batch(x[idx].reshape(shape + x.shape[1:]), y[idx].reshape(shape), mask.reshape(shape))


@functools.partial(jax.jit, static_argnames=("batch_size", "optimizer", "l2", "label_smoothing",
                                             "check_grad"), donate_argnums=(0,))
def train_epoch(state: TrainState, x: jax.Array, y: jax.Array, epoch: jax.Array, *,
                batch_size: int, optimizer: optax.GradientTransformation, l2: float = 0.0,
                label_smoothing: float = 0.0,
                check_grad: bool = False) -> tuple[TrainState, dict[str, jax.Array]]:
  """One epoch: shuffle with ``fold_in(state.key, epoch)``, then ``lax.scan`` the steps.

  Returns:
    ``(state, metrics)`` where each metric is stacked over the epoch's steps.
  """
  perm = jax.random.permutation(jax.random.fold_in(state.key, epoch), x.shape[0])
  batches = make_batches(x, y, batch_size, perm)
  step = functools.partial(train_step, optimizer=optimizer, l2=l2,
                           label_smoothing=label_smoothing, check_grad=check_grad)
  return jax.lax.scan(step, state, batches)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _eval_sums(params: Params, x: jax.Array, y: jax.Array, *, batch_size: int):
  batches = make_batches(x, y, batch_size)

  def body(carry, batch):
    o = logits(params, batch.x)
    loss_sum = cross_entropy(o, batch.y, where=batch.mask, reduction="sum")
    correct = (jnp.argmax(o, -1) == batch.y) & batch.mask
    return carry, (loss_sum, jnp.sum(correct))

  _, (loss_sums, n_correct) = jax.lax.scan(body, None, batches)
  return jnp.sum(loss_sums), jnp.sum(n_correct)


def evaluate(params: Params, x: jax.Array, y: jax.Array, *,
             batch_size: int = 1024) -> dict[str, float]:
  """Exact loss and accuracy over a whole split: sums on device, divided on the host.

  Summing per batch and dividing once by the true count is exact however the last batch falls
  (averaging per-batch means is not, when the last batch is short).
  """
  loss_sum, n_correct = _eval_sums(params, x, y, batch_size=batch_size)
  n = int(np.shape(y)[0])
  return {"loss": float(loss_sum) / n, "accuracy": int(n_correct) / n, "n": n}


OPTIMIZERS = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": lambda lr: optax.adam(lr),
}


def make_optimizer(name: str, learning_rate: float, *,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
  """An optax optimizer by name (``sgd``, ``momentum``, ``adam``), with optional weight decay.

  Weight decay adds ``weight_decay · θ`` to the gradient (``optax.add_decayed_weights``) before
  the optimizer, i.e. an L2 penalty for SGD.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}; got {name!r}.")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}.")
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
  opt = OPTIMIZERS[name](learning_rate)
  if weight_decay:
    opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt


class GradientCheckError(RuntimeError):
  """The autodiff gradient disagreed with the closed form beyond tolerance."""


def fit(data, *, epochs: int = 10, batch_size: int = 256, optimizer_name: str = "sgd",
        learning_rate: float = 0.1, weight_decay: float = 0.0, l2: float = 0.0,
        label_smoothing: float = 0.0, seed: int = 0, check_grad: bool = True,
        grad_rtol: float = 1e-4, on_epoch=None) -> tuple[TrainState, list[dict[str, float]]]:
  """Trains softmax regression on ``data`` (a :class:`softmax_jax.data.Dataset`).

  Each epoch is one compiled ``lax.scan``; after it the whole test split is evaluated exactly.
  With ``check_grad``, every step compares the autodiff gradient with the closed form and the run
  stops with :class:`GradientCheckError` if their relative difference exceeds ``grad_rtol``.

  Args:
    data: the train/test split.
    epochs, batch_size: the schedule (D2L: 10 epochs of 256).
    optimizer_name, learning_rate, weight_decay: see :func:`make_optimizer`.
    l2: the L2 penalty ``λ`` in the objective.
    label_smoothing: ``ε`` of the training loss.
    seed: seeds initialisation and shuffling; the same seed gives the same run.
    check_grad: check the gradient at every step.
    grad_rtol: the tolerance of that check.
    on_epoch: called with each epoch's record as it is made.

  Returns:
    The final state and one record per epoch: ``epoch``, ``train_loss``, ``test_loss``,
    ``test_accuracy``, ``examples_per_sec``, ``wall_time`` and, with ``check_grad``,
    ``grad_check_max_abs_diff`` and ``grad_check_max_rel_diff``.
  """
  import time

  if epochs < 0:
    raise ValueError(f"epochs must be >= 0; got {epochs}.")
  optimizer = make_optimizer(optimizer_name, learning_rate, weight_decay=weight_decay)
  state = create_train_state(jax.random.PRNGKey(seed), data.num_features, data.num_classes,
                             optimizer)
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  history = []
  start = time.perf_counter()
  for epoch in range(epochs):
    t0 = time.perf_counter()
    state, metrics = train_epoch(state, x_train, y_train, jnp.int32(epoch),
                                 batch_size=batch_size, optimizer=optimizer, l2=l2,
                                 label_smoothing=label_smoothing, check_grad=check_grad)
    train_loss = float(jnp.mean(metrics["loss"]))
    seconds = time.perf_counter() - t0
    test = evaluate(state.params, x_test, y_test)
    record = {"epoch": epoch + 1, "train_loss": train_loss, "test_loss": test["loss"],
              "test_accuracy": test["accuracy"],
              "examples_per_sec": len(data.y_train) / seconds,
              "wall_time": time.perf_counter() - start}
    if check_grad:
      record["grad_check_max_abs_diff"] = float(jnp.max(metrics["grad_max_abs_diff"]))
      record["grad_check_max_rel_diff"] = float(jnp.max(metrics["grad_max_rel_diff"]))
    history.append(record)
    if on_epoch is not None:
      on_epoch(record)
    if check_grad and not record["grad_check_max_rel_diff"] <= grad_rtol:
      raise GradientCheckError(
          f"epoch {epoch + 1}: the autodiff gradient differs from the closed form "
          f"Xᵀ(softmax(O) − Y)/n + λW by {record['grad_check_max_rel_diff']:.3g} (relative), "
          f"above grad_rtol={grad_rtol}.")
  return state, history
