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
import math
import numbers
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from softmax_jax._precision import dot
from softmax_jax.calibration import bin_sums
from softmax_jax.losses import cross_entropy
from softmax_jax.losses import cross_entropy_grad
from softmax_jax.model import Params
from softmax_jax.model import init_params
from softmax_jax.model import logits
from softmax_jax.softmax import softmax


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
  return add_l2(loss, params.W, l2=l2)


def add_l2(loss: jax.Array, W: jax.Array, *, l2: float) -> jax.Array:
  """``loss + l2/2 · ‖W‖²``; a Python ``l2 = 0`` returns ``loss`` without a pass over ``W``.

  The penalty is summed as ``½ Σ (l2·W)·W``, not ``l2/2 · Σ W²``: ``W²`` overflowed for
  ``|W| > 1.8e19`` in float32 (and autodiff's ``2W`` at ``|W| > 1.7e38``), where the penalty and
  its gradient ``l2·W`` may be finite, and a traced ``l2 = 0`` gave ``0·inf = NaN`` there. It is
  differentiable in ``l2`` too (``½‖W‖²``, also at 0).

  Raises:
    ValueError: a Python ``l2`` that is negative or not finite.
  """
  if isinstance(l2, numbers.Real):
    if not (math.isfinite(l2) and l2 >= 0):
      raise ValueError(f"l2 must be a finite number >= 0; got {l2!r}.")
    if l2 == 0:
      return loss
  return loss + 0.5 * jnp.sum((l2 * W) * W)


def closed_form_grad(params: Params, batch: Batch, *, l2: float = 0.0,
                     label_smoothing: float = 0.0) -> Params:
  r"""The objective's gradient in closed form: ``Xᵀ G / n + λW`` and ``Σ_i G_i / n``.

  ``G = softmax(O) − Y`` row by row (with label smoothing, ``Y`` is the smoothed target), zero
  for masked rows, and ``n`` is the number of real examples.
  """
  g_BxC = cross_entropy_grad(logits(params, batch.x), batch.y, where=batch.mask,
                             label_smoothing=label_smoothing)
  n = jnp.maximum(jnp.sum(batch.mask), 1).astype(g_BxC.dtype)
  return Params(W=dot(batch.x.T, g_BxC) / n + l2 * params.W, b=jnp.sum(g_BxC, 0) / n)


def _grad_diffs(grads: Params, closed: Params) -> tuple[jax.Array, jax.Array]:
  """Max absolute difference of two gradients, and that relative to the closed form's max."""
  diff = jnp.max(jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in zip(grads, closed, strict=True)]))
  scale = jnp.max(jnp.stack([jnp.max(jnp.abs(b)) for b in closed]))
  return diff, diff / jnp.maximum(scale, jnp.finfo(diff.dtype).tiny)


def train_step(state: TrainState, batch: Batch, *, optimizer: optax.GradientTransformation,
               l2: float = 0.0, label_smoothing: float = 0.0, check_grad_every: int = 0,
               loss_fn=objective) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on one minibatch; pure, so it jits and scans.

  Hyperparameters are keywords: bind them with ``functools.partial`` before ``jax.jit``.

  Args:
    state: the current state.
    batch: one minibatch.
    optimizer: an optax transformation.
    l2: the L2 penalty ``λ`` of the objective.
    label_smoothing: ``ε`` of the loss.
    check_grad_every: every this many steps (counted by ``state.step``), compare the autodiff
      gradient with the closed form ``Xᵀ(softmax(O) − Y)/n + λW``, ``mean(softmax(O) − Y)``;
      0 never does.
    loss_fn: the objective ``loss_fn(params, batch, *, l2, label_smoothing)`` to differentiate
      (default :func:`objective`; the gradient check assumes it).

  Returns:
    ``(new_state, metrics)`` with ``loss`` (the objective before the update) and, when checking,
    ``grad_checked`` (bool), ``grad_max_abs_diff`` and ``grad_max_rel_diff`` (0 when unchecked).
  """
  obj = functools.partial(loss_fn, l2=l2, label_smoothing=label_smoothing)
  loss, grads = jax.value_and_grad(obj)(state.params, batch)
  metrics = {"loss": loss}
  if check_grad_every > 0:
    def check():
      closed = closed_form_grad(state.params, batch, l2=l2, label_smoothing=label_smoothing)
      return _grad_diffs(grads, closed)

    def skip():
      return jnp.zeros((), loss.dtype), jnp.zeros((), loss.dtype)

    checked = state.step % check_grad_every == 0
    abs_diff, rel_diff = check() if check_grad_every == 1 else jax.lax.cond(checked, check, skip)
    metrics.update(grad_checked=checked, grad_max_abs_diff=abs_diff, grad_max_rel_diff=rel_diff)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state, state.step + 1, state.key), metrics


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~½."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def shuffle(key: jax.Array, n: int, *, rounds: int = 6) -> jax.Array:
  """A pseudo-random permutation of ``[0, n)`` keyed by ``key``, without a sort.

  Index ``i`` goes to ``E(i)``, a ``rounds``-round balanced Feistel network on the ``2b``-bit
  integers (``4^b ≥ n``) with MurmurHash3's finaliser of the half-word xor a round key as its
  round function; values that land outside ``[0, n)`` are encrypted again until they fall inside
  (cycle walking), which keeps it a bijection on ``[0, n)``. This is how grain's ``index_shuffle``
  and TensorFlow's ``index_shuffle`` shuffle; the permutation is keyed (a new key, a new
  shuffle), not drawn uniformly from all ``n!``. It replaces ``jax.random.permutation`` in the
  epochs, whose two key-value sorts of 60,000 indices took 38 ms of a 122 ms epoch on the 2-core
  CPU; this takes about a millisecond (BENCHMARKS.md).

  Args:
    key: a PRNG key.
    n: the number of indices, ``1 ≤ n < 2^31``.
    rounds: Feistel rounds (4 make a pseudo-random permutation in theory; 6 by default).

  Returns:
    int32 ``[n]`` holding each of ``0 … n−1`` once.
  """
  if not 1 <= n < 2**31:
    raise ValueError(f"n must be in [1, 2^31); got {n}.")
  half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)  # 4^half >= n
  mask = jnp.uint32((1 << half) - 1)
  round_keys = jax.random.bits(key, (rounds,), jnp.uint32)

  def encrypt(x):
    left, right = x >> half, x & mask
    for r in range(rounds):
      left, right = right, left ^ (_fmix32(right ^ round_keys[r]) & mask)
    return (left << half) | right

  def walk(y):
    return jnp.where(y >= n, encrypt(y), y)

  y = encrypt(jnp.arange(n, dtype=jnp.uint32))
  y = jax.lax.while_loop(lambda y: jnp.any(y >= n), walk, y)
  return y.astype(jnp.int32)


def batch_indices(n: int, batch_size: int,
                  perm: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Indices ``[num_batches, batch_size]`` into ``n`` examples and the mask of the padded tail."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  idx = jnp.arange(n) if perm is None else perm
  idx = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)])
  mask = jnp.arange(num_batches * batch_size) < n
  shape = (num_batches, batch_size)
  return idx.reshape(shape), mask.reshape(shape)


def make_batches(x: jax.Array, y: jax.Array, batch_size: int,
                 perm: jax.Array | None = None) -> Batch:
  """Stacks ``(x, y)`` into ``[num_batches, batch_size, ...]``, padding and masking the tail."""
  idx, mask = batch_indices(x.shape[0], batch_size, perm)
  return Batch(x[idx], y[idx], mask)


@functools.partial(jax.jit, static_argnames=("batch_size", "optimizer", "l2", "label_smoothing",
                                             "check_grad_every", "loss_fn", "progress"),
                   donate_argnums=(0,))
def train_epoch(state: TrainState, x: jax.Array, y: jax.Array, epoch: jax.Array, *,
                batch_size: int, optimizer: optax.GradientTransformation, l2: float = 0.0,
                label_smoothing: float = 0.0, check_grad_every: int = 0, loss_fn=objective,
                progress=None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One epoch: :func:`shuffle` with ``fold_in(state.key, epoch)``, then ``lax.scan`` the steps.

  The whole epoch is one compiled program over device-resident arrays; ``state`` is donated.

  Args:
    state, x, y: the state and the whole training split.
    epoch: the epoch's index (an int32 array, so that every epoch reuses one compilation).
    batch_size, optimizer, l2, label_smoothing, check_grad_every, loss_fn: see
      :func:`train_step`.
    progress: optional host function ``progress(step, num_steps)``, called through
      ``jax.debug.callback`` about ten times an epoch.

  Returns:
    ``(state, metrics)`` where each metric is stacked over the epoch's steps.
  """
  perm = shuffle(jax.random.fold_in(state.key, epoch), x.shape[0])
  # Scan over index batches and gather each minibatch inside the step: a shuffled copy of the
  # whole training set would be a fresh buffer as large as the data, written every epoch (on a
  # CPU that copy cost more than the epoch's arithmetic).
  idx, mask = batch_indices(x.shape[0], batch_size, perm)
  num_steps = idx.shape[0]
  step = functools.partial(train_step, optimizer=optimizer, l2=l2,
                           label_smoothing=label_smoothing, check_grad_every=check_grad_every,
                           loss_fn=loss_fn)

  def body(state, indexed):
    i, idx_B, mask_B = indexed
    if progress is not None:
      every = max(1, num_steps // 10)
      jax.lax.cond(i % every == 0, lambda: jax.debug.callback(progress, i, num_steps),
                   lambda: None)
    return step(state, Batch(x[idx_B], y[idx_B], mask_B))

  return jax.lax.scan(body, state, (jnp.arange(num_steps), idx, mask))


@functools.partial(jax.jit, static_argnames=("batch_size", "num_classes", "num_bins"))
def _eval_sums(params: Params, x: jax.Array, y: jax.Array, *, batch_size: int, num_classes: int,
               num_bins: int) -> dict[str, jax.Array]:
  def body(sums, indexed):
    idx_B, mask_B = indexed
    batch = Batch(x[idx_B], y[idx_B], mask_B)
    o = logits(params, batch.x)
    p = softmax(o)
    confidence = jnp.max(p, -1)
    pred = jnp.argmax(o, -1)
    correct = (pred == batch.y) & batch.mask
    new = {
        "loss_sum": cross_entropy(o, batch.y, where=batch.mask, reduction="sum"),
        "n_correct": jnp.sum(correct),
        "class_correct": jnp.zeros(num_classes, jnp.int32).at[batch.y].add(correct),
        "class_count": jnp.zeros(num_classes, jnp.int32).at[batch.y].add(batch.mask),
        **bin_sums(confidence, correct, batch.mask, num_bins=num_bins),
    }
    # In the carry's dtypes: with jax_enable_x64, a sum of bools is int64 and the carry's zeros
    # float64, which the scan rejected (evaluate raised a TypeError under x64).
    return jax.tree.map(lambda s, n: s + n.astype(s.dtype), sums, new), None

  zeros = {"loss_sum": jnp.zeros(()), "n_correct": jnp.zeros((), jnp.int32),
           "class_correct": jnp.zeros(num_classes, jnp.int32),
           "class_count": jnp.zeros(num_classes, jnp.int32),
           "bin_count": jnp.zeros(num_bins), "bin_confidence": jnp.zeros(num_bins),
           "bin_correct": jnp.zeros(num_bins)}
  sums, _ = jax.lax.scan(body, zeros, batch_indices(x.shape[0], batch_size))
  return sums


def evaluate(params: Params, x: jax.Array, y: jax.Array, *, batch_size: int = 1024,
             num_bins: int = 15) -> dict[str, Any]:
  r"""Exact metrics over a whole split: sums on device, divided once on the host.

  Summing per batch and dividing by the true count is exact however the last batch falls
  (averaging per-batch means is not when the last batch is short; D2L §4.3 exercise 1).

  The expected calibration error bins the examples by confidence ``max_j p_j`` into
  ``num_bins`` equal bins and averages ``|accuracy − confidence|`` weighted by the bins' sizes:

  .. math:: \mathrm{ECE} = \sum_b \frac{n_b}{n}\,\lvert \mathrm{acc}_b - \mathrm{conf}_b\rvert

  Returns:
    ``loss``, ``accuracy``, ``per_class_accuracy`` (a list; NaN for a class absent from the
    split), ``ece`` and ``n``.

  References:
    Guo et al., On Calibration of Modern Neural Networks, 2017 (ECE).
  """
  num_classes = params.b.shape[0]
  sums = jax.device_get(_eval_sums(params, x, y, batch_size=batch_size,
                                   num_classes=num_classes, num_bins=num_bins))
  n = int(np.shape(y)[0])
  count = sums["class_count"]
  with np.errstate(invalid="ignore", divide="ignore"):
    per_class = np.where(count > 0, sums["class_correct"] / count, np.nan)
  gaps = np.abs(sums["bin_correct"] - sums["bin_confidence"])  # n_b·|acc_b − conf_b|
  return {"loss": float(sums["loss_sum"]) / n, "accuracy": int(sums["n_correct"]) / n,
          "per_class_accuracy": [float(a) for a in per_class], "ece": float(gaps.sum()) / n,
          "n": n}


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
  if not weight_decay >= 0:
    raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
  opt = OPTIMIZERS[name](learning_rate)
  if weight_decay:
    opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt


class TrainConfig(NamedTuple):
  """Hyperparameters of a training run (the flags of ``experiments/train.py``).

  Attributes:
    batch_size: minibatch size (>= 1).
    epochs: number of epochs (>= 0).
    optimizer: a name in :data:`OPTIMIZERS`.
    learning_rate: > 0.
    weight_decay: >= 0, see :func:`make_optimizer`.
    l2: >= 0, the L2 penalty ``λ`` in the objective.
    label_smoothing: in [0, 1].
    seed: seeds the initialisation and every epoch's shuffle.
    check_grad_every: check the gradient every this many steps; 0 never.
    grad_rtol: the largest relative difference the check accepts.
  """

  batch_size: int = 256
  epochs: int = 10
  optimizer: str = "sgd"
  learning_rate: float = 0.1
  weight_decay: float = 0.0
  l2: float = 0.0
  label_smoothing: float = 0.0
  seed: int = 0
  check_grad_every: int = 1
  grad_rtol: float = 1e-4

  def validate(self) -> TrainConfig:
    """Raises ``ValueError`` naming the first bad value; returns ``self``."""
    if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
      raise ValueError(f"batch_size must be a positive int; got {self.batch_size!r}.")
    if not (isinstance(self.epochs, int) and self.epochs >= 0):
      raise ValueError(f"epochs must be an int >= 0; got {self.epochs!r}.")
    if not (isinstance(self.check_grad_every, int) and self.check_grad_every >= 0):
      raise ValueError(f"check_grad_every must be an int >= 0; got {self.check_grad_every!r}.")
    if not self.l2 >= 0:
      raise ValueError(f"l2 must be >= 0; got {self.l2!r}.")
    if not 0 <= self.label_smoothing <= 1:
      raise ValueError(f"label_smoothing must be in [0, 1]; got {self.label_smoothing!r}.")
    make_optimizer(self.optimizer, self.learning_rate, weight_decay=self.weight_decay)
    return self


class GradientCheckError(RuntimeError):
  """The autodiff gradient disagreed with the closed form beyond tolerance."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite."""


def epoch_record(config: TrainConfig, epoch: int, first_step: int, metrics: dict[str, Any],
                 seconds: float, num_train: int, evaluate_test) -> dict[str, Any]:
  """Checks one epoch's step metrics and makes its record (shared by every epoch loop).

  Raises :class:`NonFiniteLossError` naming the first bad step, or :class:`GradientCheckError`;
  otherwise calls ``evaluate_test()`` (a dict as :func:`evaluate` returns) and returns the record.
  """
  losses = np.asarray(metrics["loss"])
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    i = int(bad[0])
    raise NonFiniteLossError(
        f"the training loss became {losses[i]} at step {first_step + i} (epoch {epoch + 1}, "
        f"batch {i + 1} of {losses.size}); lower the learning rate. Nothing of this epoch "
        f"was kept.")
  record = {"epoch": epoch + 1, "train_loss": float(losses.mean())}
  if config.check_grad_every and np.asarray(metrics["grad_checked"]).any():
    record["grad_check_max_abs_diff"] = float(np.asarray(metrics["grad_max_abs_diff"]).max())
    rel = float(np.asarray(metrics["grad_max_rel_diff"]).max())
    record["grad_check_max_rel_diff"] = rel
    if not rel <= config.grad_rtol:
      raise GradientCheckError(
          f"epoch {epoch + 1}: the autodiff gradient differs from the closed form "
          f"Xᵀ(softmax(O) − Y)/n + λW by {rel:.3g} (relative), above grad_rtol="
          f"{config.grad_rtol}.")
  test = evaluate_test()
  record.update(test_loss=test["loss"], test_accuracy=test["accuracy"], test_ece=test["ece"],
                test_per_class_accuracy=test["per_class_accuracy"],
                examples_per_sec=num_train / seconds, epoch_seconds=seconds)
  return record


def run_epochs(data, config: TrainConfig, *, state: TrainState | None = None,
               start_epoch: int = 0, progress=None, loss_fn=objective):
  """Trains epoch by epoch, yielding ``(state, record)`` after each one.

  Each epoch is one :func:`train_epoch` call; the test split is then evaluated exactly. The
  generator raises :class:`NonFiniteLossError` (naming the step) if a loss is NaN or infinite,
  and :class:`GradientCheckError` if the gradient check fails; the state of the failed epoch
  is not yielded, so whatever the caller saved before stays the last good one.

  Args:
    data: a :class:`softmax_jax.data.Dataset`.
    config: the run's hyperparameters.
    state: a state to continue from (a resumed checkpoint); a fresh one from ``config.seed``
      if ``None``.
    start_epoch: the number of epochs ``state`` has done.
    progress: forwarded to :func:`train_epoch`.
    loss_fn: forwarded to :func:`train_step`.

  Yields:
    ``(state, record)``; the record holds ``epoch`` (1-based), ``train_loss`` (the mean of the
    epoch's step losses), ``test_loss``, ``test_accuracy``, ``test_ece``,
    ``test_per_class_accuracy``, ``examples_per_sec``, ``epoch_seconds`` and, when checking,
    ``grad_check_max_abs_diff`` and ``grad_check_max_rel_diff``.
  """
  import time

  config.validate()
  optimizer = make_optimizer(config.optimizer, config.learning_rate,
                             weight_decay=config.weight_decay)
  if state is None:
    state = create_train_state(jax.random.PRNGKey(config.seed), data.num_features,
                               data.num_classes, optimizer)
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  for epoch in range(start_epoch, config.epochs):
    first_step = int(state.step)
    t0 = time.perf_counter()
    state, metrics = train_epoch(state, x_train, y_train, jnp.int32(epoch),
                                 batch_size=config.batch_size, optimizer=optimizer,
                                 l2=config.l2, label_smoothing=config.label_smoothing,
                                 check_grad_every=config.check_grad_every, loss_fn=loss_fn,
                                 progress=progress)
    metrics = jax.device_get(metrics)  # waits for the epoch
    seconds = time.perf_counter() - t0
    record = epoch_record(config, epoch, first_step, metrics, seconds, len(data.y_train),
                          functools.partial(evaluate, state.params, x_test, y_test))
    yield state, record


def fit(data, config: TrainConfig | None = None, **overrides) -> tuple[TrainState, list[dict]]:
  """Trains softmax regression on ``data`` in memory; returns the final state and the records.

  ``fit(data, epochs=5)`` overrides fields of the default :class:`TrainConfig`. For a run with
  checkpoints, metrics files and resume, see :func:`softmax_jax.run.train_and_evaluate`.
  """
  config = (config or TrainConfig())._replace(**overrides)
  state, history = None, []
  for state, record in run_epochs(data, config):  # noqa: B007 (the last state is kept)
    history.append(record)
  return state, history
