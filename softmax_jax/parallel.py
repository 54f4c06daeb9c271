r"""Multi-device training on JAX's own runtime: data parallel, class (vocab) parallel, multi-host.

Three layouts, all over one ``jax.sharding.Mesh`` (which may span several processes):

* **Data parallel** (:func:`train_epoch_data_parallel`, :func:`evaluate_data_parallel`,
  :func:`run_epochs_data_parallel`). Params and optimizer state are replicated; every minibatch
  is split along its batch axis over the mesh axis ``"data"``. Training is the single-device
  :func:`softmax_jax.train.train_step`, unchanged, jitted with the batches constrained to
  ``P(None, "data")``: the loss is the mean over the *global* batch, so XLA's SPMD partitioner
  sums the per-device partial gradients with one all-reduce per step. A batch whose size the
  device count does not divide is padded with masked examples, which the masked mean ignores, so
  the loss and the params are those of the single-device run up to the order of float sums.
* **Class parallel** (:func:`class_parallel_cross_entropy`, :func:`class_parallel_objective`).
  ``W (d, q)`` and ``b (q,)`` are split over classes along the mesh axis ``"classes"``; each
  device forms the logits of its own classes only, and the per-example log-sum-exp is combined as
  in Megatron-LM's vocab-parallel cross-entropy, with one ``pmax`` and one packed ``psum``.
* **Multi-process**: call :func:`initialize` (``jax.distributed.initialize``) in every process;
  :func:`make_mesh` then spans every process's devices, and :func:`replicate` /
  :func:`shard_batch` build the global arrays (``jax.make_array_from_callback`` /
  ``jax.make_array_from_process_local_data``) that the functions above take.

Launching, for example on 2 hosts with 8 GPUs each, in every process::

  sj.parallel.initialize("10.0.0.1:1234", num_processes=2, process_id=RANK)  # TPU/SLURM: ()
  mesh = sj.parallel.make_mesh()  # 16 devices, axis "data"
  for state, record in sj.parallel.run_epochs_data_parallel(data, config, mesh=mesh): ...

References:
  Shoeybi et al., Megatron-LM: Training Multi-Billion Parameter Language Models Using Model
  Parallelism, 2019, §3 (the parallel cross-entropy of the output embedding); Xu et al., GSPMD:
  General and Scalable Parallelization for ML Computation Graphs, 2021 (sharding propagation);
  the JAX guides "Distributed arrays and automatic parallelization", "Manual parallelism with
  shard_map" and "Multi-host and multi-process environments".
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from softmax_jax import _validation as v
from softmax_jax import train
from softmax_jax._precision import dot
from softmax_jax.calibration import bin_sums
from softmax_jax.losses import _exp_shifted
from softmax_jax.losses import _half_shifted
from softmax_jax.losses import reduce_losses
from softmax_jax.model import Params
from softmax_jax.softmax import log_softmax
from softmax_jax.softmax import softmax

try:  # jax >= 0.6: jax.shard_map; replication checking is `check_vma` from 0.7 on.
  from jax import shard_map as _shard_map
except ImportError:  # jax 0.4.35 (the lower bound): the experimental home, with `check_rep`.
  from jax.experimental.shard_map import shard_map as _shard_map

_CHECK_KW = ("check_vma" if "check_vma" in inspect.signature(_shard_map).parameters
             else "check_rep")

DATA = "data"
CLASSES = "classes"


def shard_map(f: Callable, *, mesh: Mesh, in_specs: Any, out_specs: Any,
              check: bool = True) -> Callable:
  """``shard_map`` of any supported jax, keywords only (``check`` is ``check_rep``/``check_vma``).

  With ``check=True`` jax tracks which values are replicated over which mesh axes; that is what
  makes the transpose of an input replicated over an axis a ``psum`` over it (the gradient of a
  replicated ``x`` sums the contributions of every class shard) and the transpose of a ``psum``
  a no-op.
  """
  return _shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **{_CHECK_KW: check})


# ----------------------------------------------------------------------------------------------
# Processes, meshes and global arrays
# ----------------------------------------------------------------------------------------------


def initialize(coordinator_address: str | None = None, *, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               cpu_collectives: str | None = "gloo") -> None:
  """Joins this process to a multi-process JAX job: ``jax.distributed.initialize``.

  Call it first, before any other JAX call, in every process. On Cloud TPU, and under SLURM or
  Open MPI, JAX reads everything from the environment: call it with no arguments. Elsewhere pass
  the coordinator (process 0's ``host:port``, reachable from every process), the number of
  processes and this process's id in ``[0, num_processes)``.

  Args:
    coordinator_address: ``"host:port"`` of process 0.
    num_processes: the number of processes.
    process_id: this process's rank.
    local_device_ids: restrict this process to these local devices (e.g. one GPU per process).
    cpu_collectives: the CPU collectives library (``"gloo"``, ``"mpi"``), set before the
      backend starts so that CPU devices of different processes can all-reduce; ``None`` leaves
      the setting alone. It does not affect GPUs (NCCL) or TPUs (ICI).
  """
  if cpu_collectives is not None:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = {"coordinator_address": coordinator_address, "num_processes": num_processes,
            "process_id": process_id}
  if local_device_ids is not None:
    kwargs["local_device_ids"] = list(local_device_ids)
  jax.distributed.initialize(**kwargs)


def make_mesh(devices: Sequence[jax.Device] | None = None, *,
              shape: Sequence[int] | None = None,
              axis_names: Sequence[str] = (DATA,)) -> Mesh:
  """A ``Mesh`` over ``devices`` (default: ``jax.devices()``, every process's devices).

  Args:
    devices: the devices in mesh order: a sequence, or an array already of the mesh's shape
      (e.g. from ``jax.experimental.mesh_utils.create_device_mesh``, which follows a TPU's
      interconnect). ``jax.devices()`` lists the devices of process 0 first, then those of
      process 1, and so on, so a 1-D mesh over it gives each process a contiguous block of the
      data axis: the layout :func:`shard_batch` with ``process_local=True`` builds.
    shape: the mesh's shape; default ``devices``' own shape if it has one per axis name, else
      ``(len(devices),)``. E.g. ``(2, 2)`` with ``axis_names=("data", "classes")`` for data ×
      class parallelism.
    axis_names: one name per mesh axis.

  Returns:
    A :class:`jax.sharding.Mesh`.
  """
  devices = np.asarray(jax.devices() if devices is None else devices, dtype=object)
  if devices.size == 0:
    raise ValueError("make_mesh needs at least one device; got none.")
  axis_names = tuple(axis_names)
  if shape is None:
    shape = devices.shape if devices.ndim == len(axis_names) else (devices.size,)
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(axis_names) or len(set(axis_names)) != len(axis_names):
    raise ValueError(f"shape {shape} and axis_names {axis_names} must have the same length and "
                     f"distinct names.")
  if math.prod(shape) != devices.size:
    raise ValueError(f"a mesh of shape {shape} needs {math.prod(shape)} devices; got "
                     f"{devices.size}.")
  return Mesh(devices.reshape(shape), axis_names)


def _check_axis(mesh: Mesh, axis: str | None, name: str = "axis") -> None:
  if not isinstance(mesh, Mesh):
    raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
  if axis is not None and axis not in mesh.axis_names:
    raise ValueError(f"{name}={axis!r} is not an axis of the mesh {dict(mesh.shape)}.")


def _on_mesh(leaf: Any, mesh: Mesh) -> bool:
  """True if ``leaf`` is a ``jax.Array`` laid out over exactly the mesh's devices."""
  return (isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
          and leaf.sharding.device_set == set(mesh.devices.flat))


def _put(leaf: Any, sharding: NamedSharding) -> jax.Array:
  """``leaf`` (host data, or an array on other devices) as a global array with ``sharding``.

  One process: ``jax.device_put``. Several: every process holds the whole value, and each
  supplies the shards of its own devices (``jax.make_array_from_callback``).
  """
  if jax.dtypes.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
    data = _put(jax.random.key_data(leaf), NamedSharding(sharding.mesh, P()))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
  if jax.process_count() == 1:
    return jax.device_put(leaf, sharding)
  host = np.asarray(leaf)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf of ``tree`` replicated on every device of ``mesh`` (sharding ``P()``).

  Leaves already laid out over the mesh's devices are kept as they are (so class-sharded params
  stay sharded). In a multi-process job every process must pass the same values.
  """
  _check_axis(mesh, None)
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda a: a if _on_mesh(a, mesh) else _put(a, sharding), tree)


def shard_batch(tree: Any, mesh: Mesh, *, axis: str = DATA,
                process_local: bool = False) -> Any:
  """Every leaf of ``tree`` split along its leading (example) axis over the mesh axis ``axis``.

  Args:
    tree: a pytree of arrays with a common leading axis (e.g. ``(x, y, mask)``).
    mesh: the mesh.
    axis: the mesh axis the examples are split over.
    process_local: ``False``: the leaves are the global arrays (every process holds all of
      them). ``True``: each process passes only its own rows, the same number in every process,
      and the global array stacks them in process order
      (``jax.make_array_from_process_local_data``).

  Returns:
    The tree of global arrays, sharded ``P(axis)``.

  Raises:
    ValueError: the (global) number of rows is not a multiple of ``mesh.shape[axis]``; pad
      first with :func:`pad_rows`, which also returns the mask of the real rows.
  """
  _check_axis(mesh, axis)
  sharding = NamedSharding(mesh, P(axis))
  count = mesh.shape[axis]
  scale = jax.process_count() if process_local else 1

  def put(a):
    shape = np.shape(a)
    if not shape or (shape[0] * scale) % count:
      raise ValueError(f"shard_batch splits the leading axis over {count} devices "
                       f"(mesh axis {axis!r}); got an array of shape {shape}"
                       f"{' per process' if process_local else ''}. Pad it with pad_rows.")
    if process_local:
      return jax.make_array_from_process_local_data(sharding, np.asarray(a))
    return _put(a, sharding)

  return jax.tree.map(put, tree)


def pad_rows(tree: Any, *, multiple: int = 1, length: int | None = None) -> tuple[Any, Any]:
  """Pads the leading axis of every leaf with zeros, to ``length`` or the next ``multiple``.

  Returns:
    ``(padded_tree, mask)`` with ``mask[i]`` True for the real rows. NumPy leaves stay NumPy.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError("pad_rows needs at least one array.")
  n = np.shape(leaves[0])[0]
  if any(np.shape(a)[0] != n for a in leaves):
    raise ValueError(f"every leaf must have the same number of rows; got "
                     f"{[np.shape(a) for a in leaves]}.")
  if length is None:
    length = -(-n // multiple) * multiple
  if length < n or length % multiple:
    raise ValueError(f"length={length} must be >= the {n} rows and a multiple of {multiple}.")

  def pad(a):
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.pad(a, [(0, length - n)] + [(0, 0)] * (np.ndim(a) - 1))

  return jax.tree.map(pad, tree), np.arange(length) < n


# ----------------------------------------------------------------------------------------------
# Data parallel: training
# ----------------------------------------------------------------------------------------------


def _pad_batch_axis(batches: train.Batch, multiple: int) -> train.Batch:
  """Pads axis 1 (the examples of each batch) to a multiple, the new examples masked."""
  pad = -batches.y.shape[1] % multiple
  if not pad:
    return batches
  return jax.tree.map(
      lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)), batches)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "batch_size", "optimizer", "l2",
                                             "label_smoothing", "check_grad_every", "loss_fn",
                                             "progress"),
                   donate_argnums=(0,))
def _train_epoch_dp(state, x, y, epoch, *, mesh, axis, batch_size, optimizer, l2,
                    label_smoothing, check_grad_every, loss_fn, progress):
  # The single-device epoch (softmax_jax.train.train_epoch), with one line more: the batches
  # are split over the data axis. Same permutation, same batches, same masked means.
  perm = train.shuffle(jax.random.fold_in(state.key, epoch), x.shape[0])
  batches = _pad_batch_axis(train.make_batches(x, y, batch_size, perm), mesh.shape[axis])
  batches = jax.lax.with_sharding_constraint(batches, NamedSharding(mesh, P(None, axis)))
  num_steps = batches.y.shape[0]
  step = functools.partial(train.train_step, optimizer=optimizer, l2=l2,
                           label_smoothing=label_smoothing, check_grad_every=check_grad_every,
                           loss_fn=loss_fn)

  def body(state, indexed):
    i, batch = indexed
    if progress is not None:
      every = max(1, num_steps // 10)
      jax.lax.cond(i % every == 0, lambda: jax.debug.callback(progress, i, num_steps),
                   lambda: None)
    return step(state, batch)

  return jax.lax.scan(body, state, (jnp.arange(num_steps), batches))


def train_epoch_data_parallel(state: train.TrainState, x: ArrayLike, y: ArrayLike,
                              epoch: ArrayLike, *, batch_size: int,
                              optimizer: optax.GradientTransformation, l2: float = 0.0,
                              label_smoothing: float = 0.0, check_grad_every: int = 0,
                              loss_fn=train.objective, progress=None, mesh: Mesh | None = None,
                              axis: str = DATA) -> tuple[train.TrainState, dict[str, jax.Array]]:
  r"""One epoch of :func:`softmax_jax.train.train_epoch`, each minibatch split over devices.

  The same shuffle (``fold_in(state.key, epoch)``), the same minibatches and the same
  ``train_step``: only the layout differs. Each of the ``D = mesh.shape[axis]`` devices takes
  ``B/D`` examples of every batch; the objective is the masked mean over the whole batch,

  .. math:: J = \frac{1}{\sum_i m_i}\sum_{k=1}^{D}\sum_{i\in\text{shard }k} m_i\, l_i,

  so XLA computes each device's partial sums and all-reduces them: the gradient, the loss and
  hence the new params are the single-device ones up to float summation order. ``B`` need not be
  a multiple of ``D``: every batch is padded to the next multiple with masked examples (``m_i =
  0``), which change neither the sum nor the count.

  Inputs not yet on the mesh are placed: ``state``, ``x`` and ``y`` replicated (see
  :func:`replicate`; in a multi-process job every process must then pass the same values). Each
  device holds the whole training split, as the single-device loop does, and gathers only its own
  slice of each batch. Params already on the mesh (e.g. split over classes for
  :func:`class_parallel_objective`) keep their layout.

  Args:
    state, x, y, epoch, batch_size, optimizer, l2, label_smoothing, check_grad_every, loss_fn,
      progress: as in :func:`softmax_jax.train.train_epoch`. ``state`` is donated.
    mesh: the mesh (default :func:`make_mesh`: every device, one axis ``"data"``).
    axis: the mesh axis the batch is split over.

  Returns:
    ``(state, metrics)``, as :func:`softmax_jax.train.train_epoch`; every array is a global array
    replicated on the mesh, so every process can read it.
  """
  mesh = make_mesh() if mesh is None else mesh
  _check_axis(mesh, axis)
  if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or (
      batch_size < 1):
    raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
  if np.ndim(x) != 2 or np.shape(y) != np.shape(x)[:1]:
    raise ValueError(f"x must be (n, d) and y (n,); got {np.shape(x)} and {np.shape(y)}.")
  state, x, y = replicate((state, x, y), mesh)
  return _train_epoch_dp(state, x, y, np.int32(epoch), mesh=mesh, axis=axis,
                         batch_size=int(batch_size), optimizer=optimizer, l2=l2,
                         label_smoothing=label_smoothing, check_grad_every=check_grad_every,
                         loss_fn=loss_fn, progress=progress)


# ----------------------------------------------------------------------------------------------
# Data parallel: evaluation
# ----------------------------------------------------------------------------------------------


def _batch_sums(params: Params, x, y, mask, num_classes: int, num_bins: int):
  """The sums of :func:`softmax_jax.train.evaluate` over one batch (``mask`` False = padding)."""
  o = dot(x, params.W) + params.b[None, :]
  p = softmax(o)
  confidence = jnp.max(p, -1)
  correct = (jnp.argmax(o, -1) == y) & mask
  safe_y = jnp.where(mask, y, 0)  # a padded row's label may be anything; it adds 0
  return {
      # −log softmax(o)_y, as cross_entropy computes it (whose value checks shard_map can't host).
      "loss_sum": -jnp.sum(jnp.where(mask, jnp.take_along_axis(
          log_softmax(o), safe_y[:, None], -1)[:, 0], 0)),
      "n": jnp.sum(mask.astype(jnp.int32)),
      "n_correct": jnp.sum(correct.astype(jnp.int32)),
      "class_correct": jnp.zeros(num_classes, jnp.int32).at[safe_y].add(correct),
      "class_count": jnp.zeros(num_classes, jnp.int32).at[safe_y].add(mask),
      **bin_sums(confidence, correct, mask, num_bins=num_bins),
  }


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "batch_size", "num_classes",
                                             "num_bins"))
def _eval_sums_dp(params, x, y, mask, *, mesh, axis, batch_size, num_classes, num_bins):
  # Each device sums over its own rows, batch by batch; one psum at the end. Order of examples
  # is irrelevant to sums, so the rows need not be shuffled or interleaved.
  def local(params, x, y, mask):
    rows = x.shape[0]
    size = min(batch_size, rows)
    num_batches = -(-rows // size)
    (x, y, mask), _ = pad_rows((x, y, mask), length=num_batches * size)
    stack = lambda a: a.reshape((num_batches, size) + a.shape[1:])  # noqa: E731

    def body(sums, batch):
      new = _batch_sums(params, *batch, num_classes, num_bins)
      return jax.tree.map(jnp.add, sums, new), None

    # The first batch starts the carry (rather than zeros), so that inside shard_map the carry is
    # already "varying" over the data axis, as the loop's output is.
    batches = (stack(x), stack(y), stack(mask))
    sums = _batch_sums(params, *(a[0] for a in batches), num_classes, num_bins)
    if num_batches > 1:
      sums, _ = jax.lax.scan(body, sums, tuple(a[1:] for a in batches))
    return jax.lax.psum(sums, axis)

  return shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P(axis), P(axis)),
                   out_specs=P())(params, x, y, mask)


def evaluate_data_parallel(params: Params, x: ArrayLike, y: ArrayLike, *,
                           where: ArrayLike | None = None, batch_size: int = 1024,
                           num_bins: int = 15, mesh: Mesh | None = None,
                           axis: str = DATA) -> dict[str, Any]:
  r""":func:`softmax_jax.train.evaluate` with the split's rows spread over the devices.

  Each of the ``D`` devices sums the loss, the hits, the per-class counts and the calibration
  bins over its own rows, in batches of ``ceil(batch_size / D)``; one ``psum`` adds the ``D``
  partial sums and the host divides by the count of real rows, exactly as ``evaluate`` does.

  Args:
    params: ``Params`` (replicated onto the mesh if they are not on it).
    x, y: the split, ``(n, d)`` and ``(n,)``. Arrays not on the mesh are padded to a multiple of
      ``D`` with masked rows and split over ``axis``. Global arrays already split over the mesh
      (e.g. from :func:`shard_batch` with ``process_local=True``, where each process loaded its
      own rows) are used as they are; pass their padding as ``where``.
    where: optional ``(n,)`` boolean mask, False for rows to leave out (padding).
    batch_size: the global batch size (memory only: the sums do not depend on it).
    num_bins: calibration bins, as in ``evaluate``.
    mesh: the mesh (default :func:`make_mesh`).
    axis: the mesh axis the rows are split over.

  Returns:
    The dict of :func:`softmax_jax.train.evaluate`: ``loss``, ``accuracy``,
    ``per_class_accuracy``, ``ece`` and ``n`` (the number of kept rows).

  References:
    Guo et al., On Calibration of Modern Neural Networks, 2017 (ECE).
  """
  mesh = make_mesh() if mesh is None else mesh
  _check_axis(mesh, axis)
  count = mesh.shape[axis]
  n = np.shape(y)[0] if np.ndim(y) == 1 else None
  if np.ndim(x) != 2 or n != np.shape(x)[0]:
    raise ValueError(f"x must be (n, d) and y (n,); got {np.shape(x)} and {np.shape(y)}.")
  if where is not None and np.shape(where) != (n,):
    raise ValueError(f"where must have shape ({n},); got {np.shape(where)}.")
  if _on_mesh(x, mesh) and _on_mesh(y, mesh):
    if n % count:
      raise ValueError(f"x and y are split over {count} devices but have {n} rows; pad them "
                       f"with pad_rows and pass the mask as where.")
    where = np.ones(n, bool) if where is None else where
    if not _on_mesh(where, mesh):
      where = shard_batch(np.asarray(where), mesh, axis=axis)
  else:
    where = np.ones(n, bool) if where is None else _host(where)
    (x, y, where), _ = pad_rows((_host(x), _host(y), where), multiple=count)
    x, y, where = shard_batch((x, y, where), mesh, axis=axis)
  if not jnp.issubdtype(y.dtype, jnp.integer) or where.dtype != jnp.bool_:
    raise TypeError(f"y must be integer class ids and where boolean; got {y.dtype} and "
                    f"{where.dtype}.")
  params = replicate(Params(*params), mesh)
  num_classes = params.b.shape[0]
  per_device = max(1, -(-int(batch_size) // count))
  sums = _eval_sums_dp(params, x, y, where, mesh=mesh, axis=axis, batch_size=per_device,
                       num_classes=num_classes, num_bins=int(num_bins))
  sums = {k: np.asarray(a) for k, a in sums.items()}  # replicated: every process can read them
  n = int(sums["n"])
  per_class_n = sums["class_count"]
  with np.errstate(invalid="ignore", divide="ignore"):
    per_class = np.where(per_class_n > 0, sums["class_correct"] / per_class_n, np.nan)
  gaps = np.abs(sums["bin_correct"] - sums["bin_confidence"])  # n_b·|acc_b − conf_b|
  denom = max(n, 1)
  return {"loss": float(sums["loss_sum"]) / denom, "accuracy": int(sums["n_correct"]) / denom,
          "per_class_accuracy": [float(a) for a in per_class], "ece": float(gaps.sum()) / denom,
          "n": n}


def _host(a: Any) -> Any:
  """A NumPy copy of a fully addressable array (host data passes through)."""
  return a if isinstance(a, np.ndarray) else np.asarray(a)


# ----------------------------------------------------------------------------------------------
# Data parallel: a whole run
# ----------------------------------------------------------------------------------------------


def run_epochs_data_parallel(data, config: train.TrainConfig, *, mesh: Mesh | None = None,
                             axis: str = DATA, state: train.TrainState | None = None,
                             start_epoch: int = 0, progress=None, loss_fn=train.objective):
  """:func:`softmax_jax.train.run_epochs`, data parallel: the same records, epoch by epoch.

  The training split is replicated on every device once; each epoch is one
  :func:`train_epoch_data_parallel` call and the test split is evaluated by
  :func:`evaluate_data_parallel`. Errors are those of ``run_epochs``
  (:class:`softmax_jax.train.NonFiniteLossError`, :class:`softmax_jax.train.GradientCheckError`).
  In a multi-process job every process runs this generator with the same data and config, and
  every process gets the same states and records (write files from ``jax.process_index() == 0``).

  Args:
    data: a :class:`softmax_jax.data.Dataset`.
    config: the hyperparameters; ``batch_size`` is the global batch.
    mesh, axis: see :func:`train_epoch_data_parallel`.
    state, start_epoch, progress, loss_fn: as in ``run_epochs``.

  Yields:
    ``(state, record)`` as ``run_epochs`` does; ``state`` is replicated over the mesh.
  """
  config.validate()
  mesh = make_mesh() if mesh is None else mesh
  _check_axis(mesh, axis)
  optimizer = train.make_optimizer(config.optimizer, config.learning_rate,
                                   weight_decay=config.weight_decay)
  if state is None:
    state = train.create_train_state(jax.random.PRNGKey(config.seed), data.num_features,
                                     data.num_classes, optimizer)
  state = replicate(state, mesh)
  x_train, y_train = replicate((np.asarray(data.x_train), np.asarray(data.y_train)), mesh)
  (x_test, y_test), mask = pad_rows((np.asarray(data.x_test), np.asarray(data.y_test)),
                                    multiple=mesh.shape[axis])
  x_test, y_test, mask = shard_batch((x_test, y_test, mask), mesh, axis=axis)
  for epoch in range(start_epoch, config.epochs):
    first_step = int(np.asarray(state.step))
    t0 = time.perf_counter()
    state, metrics = train_epoch_data_parallel(
        state, x_train, y_train, epoch, batch_size=config.batch_size, optimizer=optimizer,
        l2=config.l2, label_smoothing=config.label_smoothing,
        check_grad_every=config.check_grad_every, loss_fn=loss_fn, progress=progress,
        mesh=mesh, axis=axis)
    metrics = jax.device_get(metrics)  # waits for the epoch
    seconds = time.perf_counter() - t0
    record = train.epoch_record(
        config, epoch, first_step, metrics, seconds, len(data.y_train),
        functools.partial(evaluate_data_parallel, state.params, x_test, y_test, where=mask,
                          mesh=mesh, axis=axis))
    record["num_devices"] = mesh.shape[axis]
    yield state, record


# ----------------------------------------------------------------------------------------------
# Class (vocab) parallel cross-entropy
# ----------------------------------------------------------------------------------------------


class ShardStats(NamedTuple):
  r"""What one class shard contributes to each example's loss, all of shape ``(n,)``.

  For the shard's classes ``S`` (padding excluded) and logits ``o = xW_S + b_S``:

  Attributes:
    max: ``m_S = max_{j∈S} o_j``, a constant of the computation (``stop_gradient``); ``-inf``
      if ``S`` is empty.
    sumexp: ``Σ_{j∈S} exp(o_j − m_S)``, in ``[1, |S|]`` (0 if ``S`` is empty or its logits are
      all −inf); differentiable. Where ``m_S = +inf`` it is the limit from finite logits, the
      number of +inf logits (``losses._exp_shifted``), with the derivative ``exp(o_j − m_S)``.
    label_logit: ``o_y`` if the label ``y`` is in ``S``, else 0.
    label_count: 1 if ``y`` is in ``S``, else 0 (summed over shards: 1 for a valid label).
    logit_sum: ``Σ_{j∈S} a·(o_j − m̃_S)`` for the requested scale ``a`` (label smoothing asks
      for ``ε/q``), with ``m̃_S`` the max, or 0 where it is ``−inf``; where ``m_S = +inf``, 0 for
      the +inf logits and −inf for the others (``losses._half_shifted``); ``None`` when not asked
      for. Shifted by the max, so that it does not cancel against ``ε·M`` in the loss (an
      unshifted ``Σ a·o_j`` lost 1% of the loss at logits near 1e6 in float32). Summed in halves
      and doubled, so that logits spanning beyond the float range give a finite sum wherever
      the loss is finite.
    logit_mass: ``Σ_{j∈S} a``, with ``logit_sum`` (to re-shift it when maxima merge); ``None``
      when ``logit_sum`` is.
  """

  max: jax.Array
  sumexp: jax.Array
  label_logit: jax.Array
  label_count: jax.Array
  logit_sum: jax.Array | None
  logit_mass: jax.Array | None = None


def _shift(m):
  """The shift of a shard's sums: its max, or 0 where that is ±inf (an empty shard)."""
  return jnp.where(jnp.isfinite(m), m, 0)


def _reshifted(stats: ShardStats, new_max: jax.Array) -> jax.Array:
  """``stats.logit_sum`` shifted by the max ``new_max >= stats.max`` instead of its own:
  ``+ mass·(m̃ − m̃_new)``, in halves. Unchanged where the max is the same (also at ±inf) or
  there is no mass; −inf where ``new_max = +inf`` and the shard's max is below it (its logits
  are infinitely below the max)."""
  step = jnp.where(new_max == jnp.inf, -jnp.inf, 0.5 * _shift(stats.max) - 0.5 * _shift(new_max))
  same = (stats.max == new_max) | (stats.logit_mass == 0)
  return stats.logit_sum + jnp.where(same, 0, 2 * (stats.logit_mass * step))


def _rescale(m, new_max):
  """``exp(m − new_max)``, the factor that moves a sum shifted by ``m`` to ``new_max >= m``: 1
  where they are equal (also at ±inf, where the difference is NaN), NaN if either is."""
  return jnp.where(m == new_max, 1, jnp.exp(m - new_max))


@jax.custom_jvp
def _label_gap(top, o_y):
  """``top/2 − o_y/2`` (``top`` the row's max, 0 for a row of −inf),
  0 where the label holds a +inf max (inf − inf), with the tangent ``(dtop − do_y)/2``
  everywhere: the limit from finite logits (the ``−1`` of ``softmax − onehot`` at the label)."""
  return jnp.where(o_y == top, 0, 0.5 * top - 0.5 * o_y)


@_label_gap.defjvp
def _label_gap_jvp(primals, tangents):
  dtop, do_y = tangents
  return _label_gap(*primals), 0.5 * dtop - 0.5 * do_y


def dense_shard_stats(x_NxD: jax.Array, W_DxC: jax.Array, b_C: jax.Array, labels_N: jax.Array,
                      valid_C: jax.Array | None, *,
                      logit_sum_scale: float | None = None) -> ShardStats:
  """:class:`ShardStats` from the shard's whole ``(n, C)`` block of logits (the default).

  Args:
    x_NxD: the examples, in the compute dtype.
    W_DxC, b_C: this shard's columns of ``W`` and entries of ``b``.
    labels_N: labels relative to the shard, ``y − offset``: outside ``[0, C)`` means the label
      belongs to another shard.
    valid_C: ``None``, or False for padding columns (when the shards do not divide ``q``).
    logit_sum_scale: ``a``, to compute ``logit_sum = Σ_j a·(o_j − m̃)`` and ``logit_mass``
      (label smoothing needs them); ``None``: not computed.
  """
  o_NxC = dot(x_NxD, W_DxC) + b_C[None, :]
  valid_NxC = None if valid_C is None else jnp.broadcast_to(valid_C, o_NxC.shape)
  if valid_NxC is not None:
    o_NxC = jnp.where(valid_NxC, o_NxC, -jnp.inf)
  m_N = jax.lax.stop_gradient(jnp.max(o_NxC, -1))
  shift_N = _shift(m_N)  # an empty shard: exp(−inf − 0) = 0
  # exp(o − m), with the dense loss's limits where m = +inf (1 at the +inf logits, else 0).
  sumexp_N = jnp.sum(_exp_shifted(o_NxC, m_N), -1)
  inside = (labels_N >= 0) & (labels_N < o_NxC.shape[-1])
  picked = jnp.take_along_axis(o_NxC, jnp.where(inside, labels_N, 0)[:, None], -1)[:, 0]
  logit_sum = logit_mass = None
  if logit_sum_scale is not None:
    plus_inf_N = m_N == jnp.inf
    ao_NxC = logit_sum_scale * _half_shifted(o_NxC, shift_N[:, None], plus_inf_N[:, None])
    count = o_NxC.shape[-1] if valid_C is None else jnp.sum(valid_C)
    if valid_NxC is not None:
      ao_NxC = jnp.where(valid_NxC, ao_NxC, 0)
    logit_sum = 2 * jnp.sum(ao_NxC, -1)
    logit_mass = jnp.broadcast_to(logit_sum_scale * count, m_N.shape).astype(o_NxC.dtype)
  return ShardStats(m_N, sumexp_N, jnp.where(inside, picked, 0), inside.astype(o_NxC.dtype),
                    logit_sum, logit_mass)


def combine_stats(a: ShardStats, b: ShardStats) -> ShardStats:
  r"""The stats of the union of two disjoint sets of classes (the online log-sum-exp).

  .. math:: m = \max(m_a, m_b), \quad s = s_a e^{m_a - m} + s_b e^{m_b - m}
  """
  m = jnp.maximum(a.max, b.max)
  s = a.sumexp * _rescale(a.max, m) + b.sumexp * _rescale(b.max, m)
  total = mass = None
  if a.logit_sum is not None:
    total = _reshifted(a, m) + _reshifted(b, m)
    mass = a.logit_mass + b.logit_mass
  return ShardStats(m, s, a.label_logit + b.label_logit, a.label_count + b.label_count, total,
                    mass)


def chunked_shard_stats(chunk_size: int) -> Callable[..., ShardStats]:
  """A :class:`ShardStats` function that never forms more than ``(n, chunk_size)`` logits.

  The shard's classes are visited ``chunk_size`` at a time by ``lax.scan`` and merged with
  :func:`combine_stats`; each chunk is ``jax.checkpoint``-ed, so the backward pass recomputes its
  logits instead of storing them. Plug it in as
  ``class_parallel_cross_entropy(..., shard_stats=chunked_shard_stats(4096))``; a chunked linear
  cross-entropy kernel fits the same slot.
  """
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or (
      chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
  return functools.partial(_chunked_shard_stats, chunk_size=int(chunk_size))


def _chunked_shard_stats(x_NxD, W_DxC, b_C, labels_N, valid_C, *, chunk_size,
                         logit_sum_scale=None):
  num_classes = W_DxC.shape[1]
  size = min(chunk_size, num_classes)
  num_chunks = -(-num_classes // size)
  pad = num_chunks * size - num_classes
  valid = jnp.ones(num_classes, bool) if valid_C is None else valid_C
  # A label of another shard must not land in a padding column of the last chunk.
  labels_N = jnp.where((labels_N >= 0) & (labels_N < num_classes), labels_N, -1)
  W_KxDxS = jnp.pad(W_DxC, ((0, 0), (0, pad))).reshape(-1, num_chunks, size).transpose(1, 0, 2)
  b_KxS = jnp.pad(b_C, (0, pad)).reshape(num_chunks, size)
  valid_KxS = jnp.pad(valid, (0, pad)).reshape(num_chunks, size)

  @jax.checkpoint
  def chunk_stats(k, W_DxS, b_S, valid_S):
    return dense_shard_stats(x_NxD, W_DxS, b_S, labels_N - k * size, valid_S,
                             logit_sum_scale=logit_sum_scale)

  def body(carry, chunk):
    return combine_stats(carry, chunk_stats(*chunk)), None

  # The first chunk starts the carry (rather than zeros), so that inside shard_map the carry is
  # already "varying" over the class axis, as the loop's output is.
  chunks = (jnp.arange(num_chunks), W_KxDxS, b_KxS, valid_KxS)
  stats = chunk_stats(*(a[0] for a in chunks))
  if num_chunks > 1:
    stats, _ = jax.lax.scan(body, stats, tuple(a[1:] for a in chunks))
  return stats


@functools.partial(jax.jit, static_argnames=("mesh", "class_axis", "batch_axis", "eps",
                                             "reduction", "shard_stats"))
def _class_parallel_ce(x, W, b, labels, mask, *, mesh, class_axis, batch_axis, eps, reduction,
                       shard_stats):
  n, num_classes = x.shape[0], W.shape[1]
  shards = mesh.shape[class_axis]
  per_shard = -(-num_classes // shards)
  class_pad = per_shard * shards - num_classes
  row_pad = 0 if batch_axis is None else -n % mesh.shape[batch_axis]
  cdtype = v.compute_dtype(jnp.result_type(x, W, b))
  x = x.astype(cdtype)
  if mask is not None:
    # Masked rows are read as zeros: a NaN or inf there would meet the 0 cotangent of their loss
    # (0·NaN) and make dW and db NaN (review). With an infinite weight the zeroed row's logits
    # are still 0·inf = NaN, and so are dW and db: a known limit (linear_cross_entropy, whose
    # gradient rule is its own, sets such rows of G to 0).
    x = jnp.where(mask[:, None], x, 0)
  x = jnp.pad(x, ((0, row_pad), (0, 0)))
  W = jnp.pad(W.astype(cdtype), ((0, 0), (0, class_pad)))
  b = jnp.pad(b.astype(cdtype), (0, class_pad))
  labels = jnp.pad(v.widen_ids(labels), (0, row_pad))
  need_sum = eps > 0

  def local(x, W, b, labels):
    offset = jax.lax.axis_index(class_axis) * per_shard
    valid = None
    if class_pad:
      valid = offset + jnp.arange(per_shard) < num_classes
    stats = shard_stats(x, W, b, labels - offset, valid,
                        logit_sum_scale=eps / num_classes if need_sum else None)
    # One pmax, of the shards' max logits: M = max_j o_j. One psum, of the stacked (k, n) array
    #   Σ_s s_s·e^{m_s − M},  Σ_s o_y·[y∈s],  Σ_s [y∈s]  (and Σ_s Σ_{j∈s} (ε/q)·o_j with
    #   smoothing).
    top = jax.lax.pmax(jax.lax.stop_gradient(stats.max), class_axis)
    rows = [stats.sumexp * _rescale(stats.max, top), stats.label_logit, stats.label_count]
    if need_sum:
      rows.append(_reshifted(stats, top))  # Σ_{j∈s} (ε/q)·(o_j − M)
    total = jax.lax.psum(jnp.stack(rows), class_axis)
    # l = LSE − (1−ε)·o_y − (ε/q)·Σ_j o_j with LSE = M + log Σ_j e^{o_j − M}, and Σ_j ε/q = ε:
    # l = log Σ_j e^{o_j − M} + (1−ε)·(M − o_y) − Σ_j (ε/q)·(o_j − M). Every term is a
    # difference from M, formed before the log is added, as log_softmax does, so a small loss
    # keeps its relative precision (the unshifted ε·M − Σ (ε/q)·o_j cancelled). M − o_y in
    # halves, doubled: it overflows when the logits span more than the float range, where the
    # loss may not (halving is exact, so the rounding is the same).
    # Limits as in softmax_jax.cross_entropy: a row of −inf logits has Σ = 0, taken as 1 (its
    # softmax is 0 and its loss +inf); in a row whose max is +inf, Σ counts the +inf logits and
    # M − o_y is 0 at them (_label_gap).
    loss = jnp.log(jnp.where(total[0] == 0, 1, total[0]))
    if eps < 1:  # ε = 1 gives the label no weight, even at a −inf logit (not 0·inf = NaN)
      top = jnp.where(top == -jnp.inf, 0, top)
      loss = loss + 2 * ((1 - eps) * _label_gap(top, total[1]))
    if need_sum:
      loss = loss - total[3]
    # A label in no shard (out of [0, q)) is NaN, as in softmax_jax.cross_entropy under jit.
    return jnp.where(total[2] > 0, loss, jnp.nan)

  rows = P(batch_axis)
  loss = shard_map(local, mesh=mesh, in_specs=(P(batch_axis, None), P(None, class_axis),
                                               P(class_axis), rows),
                   out_specs=rows)(x, W, b, labels)[:n]
  if mask is not None:
    loss = jnp.where(mask, loss, 0)
  return reduce_losses(loss, reduction, mask=mask)


def class_parallel_cross_entropy(x: ArrayLike, W: ArrayLike, b: ArrayLike, labels: ArrayLike, *,
                                 mesh: Mesh, class_axis: str = CLASSES,
                                 batch_axis: str | None = None, label_smoothing: float = 0.0,
                                 where: ArrayLike | None = None, reduction: str = "mean",
                                 shard_stats: Callable[..., ShardStats] = dense_shard_stats
                                 ) -> jax.Array:
  r"""Softmax cross-entropy of ``o = xW + b`` with ``W`` and ``b`` split over classes.

  Device ``s`` of the mesh axis ``class_axis`` holds the columns ``S_s`` of ``W`` and ``b`` and
  never sees another shard's logits. With the shard's max logit ``m_s`` and
  ``s_s = Σ_{j∈S_s} exp(o_j − m_s)`` (:class:`ShardStats`), and ``M = max_s m_s``,

  .. math::
     \operatorname{LSE}(o) = M + \log\sum_s s_s\, e^{m_s - M}, \qquad
     l = \operatorname{LSE}(o) - (1-ε)\,o_y - \frac{ε}{q}\sum_j o_j,

  which is :func:`softmax_jax.cross_entropy` with label smoothing ``ε``. The per-example
  combination costs exactly two collectives of ``O(n)`` values, as in Megatron-LM's
  vocab-parallel cross-entropy: one ``lax.pmax`` of ``m_s`` and one ``lax.psum`` of the stacked
  ``[s_s e^{m_s − M}, o_y·[y∈S_s], [y∈S_s]]`` (plus ``Σ_{j∈S_s} (ε/q)(o_j − M)`` when
  ``ε > 0``, summed shifted by the shard's max and re-shifted to ``M``, so that it does not
  cancel). Every
  exponent is ``<= 0``, so nothing overflows. Infinite logits take
  :func:`softmax_jax.cross_entropy`'s limits: a row whose max is +inf has its softmax uniform
  over the +inf logits, and a row of −inf logits a softmax of 0 and a loss of +inf (a custom
  ``shard_stats`` follows :class:`ShardStats` there).

  Gradient: plain autodiff through ``shard_map`` (no custom rule), chosen so that any
  differentiable ``shard_stats`` plugs in. The maxima are constants (``stop_gradient``; the loss
  does not depend on them), so ``∂l/∂o_j = e^{o_j − M}/Σ_k e^{o_k − M} − y'_j``: the closed form
  ``softmax(o) − y'`` on each shard's own columns. ``∂W_s = xᵀG_s`` and ``∂b_s = Σ_i G_{s,i}``
  stay on their shard; ``∂x = Σ_s G_s W_sᵀ`` is one ``psum`` over the class axis, which
  ``shard_map`` inserts because ``x`` is replicated over that axis (its replication checking,
  ``check_rep``/``check_vma``, is on), and the ``psum`` of the forward pass transposes to no
  communication at all. So the backward pass adds one collective, of ``(n, d)`` values.

  Args:
    x: ``(n, d)`` features.
    W: ``(d, q)`` weights; ``b``: ``(q,)`` biases. Any layout: ``jit`` moves them to
      ``P(None, class_axis)`` and ``P(class_axis)`` (place them so beforehand with
      :func:`shard_classes` to avoid the copy). ``q`` need not divide evenly: the last shards are
      padded with classes that get no probability.
    labels: ``(n,)`` integer class ids in ``[0, q)``.
    mesh: a mesh with the axis ``class_axis``.
    class_axis: the mesh axis the classes are split over.
    batch_axis: optionally a second mesh axis the examples are split over (data × class
      parallelism on a 2-D mesh); ``None`` replicates ``x`` over the mesh.
    label_smoothing: ``ε`` in ``[0, 1]``.
    where: optional ``(n,)`` boolean mask; False examples count for nothing (their features are
      read as zeros, so a NaN there reaches no gradient; an infinite weight still makes their
      ``0·inf`` logits NaN, and with them ``∂W`` and ``∂b``).
    reduction: ``"none"``, ``"mean"`` (over the kept examples; 0 if none) or ``"sum"``.
    shard_stats: computes one shard's :class:`ShardStats` as
      ``shard_stats(x_NxD, W_DxC, b_C, labels_N, valid_C, *, logit_sum_scale)``:
      :func:`dense_shard_stats` (default), :func:`chunked_shard_stats`, or any differentiable
      function with that signature (e.g. a fused/chunked linear cross-entropy kernel); with
      label smoothing it returns ``logit_sum`` shifted by its max, and ``logit_mass``.

  Returns:
    float32 (float64 for float64 inputs): ``(n,)`` for ``"none"``, else a scalar.

  References:
    Shoeybi et al., Megatron-LM, 2019, §3; Zhang et al., Dive into Deep Learning, §4.1.2 and
    §4.5 (the LogSumExp trick).
  """
  v.check_reduction(reduction)
  _check_axis(mesh, class_axis, "class_axis")
  _check_axis(mesh, batch_axis, "batch_axis")
  if batch_axis == class_axis:
    raise ValueError(f"batch_axis and class_axis must differ; both are {class_axis!r}.")
  x = v.as_float_array(x, "x")
  W = v.as_float_array(W, "W")
  b = v.as_float_array(b, "b")
  if x.ndim != 2 or W.ndim != 2 or W.shape[0] != x.shape[1] or b.shape != W.shape[1:]:
    raise ValueError(f"x must be (n, d), W (d, q) and b (q,); got x {x.shape}, W {W.shape} and "
                     f"b {b.shape}.")
  labels = v.check_integer_labels(labels)
  if labels.shape != x.shape[:1]:
    raise ValueError(f"labels must have shape ({x.shape[0]},), one per row of x; got "
                     f"{labels.shape}.")
  if (isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real)
      or not 0 <= label_smoothing <= 1):
    raise ValueError(f"label_smoothing must be a float in [0, 1]; got {label_smoothing!r}.")
  mask = v.broadcast_mask(where, labels.shape)
  v.check_class_ids(labels, W.shape[1], where=mask)
  return _class_parallel_ce(x, W, b, labels, mask, mesh=mesh, class_axis=class_axis,
                            batch_axis=batch_axis, eps=float(label_smoothing),
                            reduction=reduction, shard_stats=shard_stats)


def class_parallel_objective(params: Params, batch: train.Batch, *, l2: float = 0.0,
                             label_smoothing: float = 0.0, mesh: Mesh,
                             class_axis: str = CLASSES, batch_axis: str | None = None,
                             shard_stats: Callable[..., ShardStats] = dense_shard_stats
                             ) -> jax.Array:
  """:func:`softmax_jax.train.objective` with a class-parallel cross-entropy.

  A drop-in ``loss_fn`` for ``train_step``/``train_epoch``: bind the mesh with
  ``functools.partial(class_parallel_objective, mesh=mesh)``. The L2 term sums each shard's
  ``‖W_s‖²`` (XLA adds the partial sums).
  """
  loss = class_parallel_cross_entropy(batch.x, params.W, params.b, batch.y, mesh=mesh,
                                      class_axis=class_axis, batch_axis=batch_axis,
                                      label_smoothing=label_smoothing, where=batch.mask,
                                      reduction="mean", shard_stats=shard_stats)
  return train.add_l2(loss, params.W, l2=l2)


def shard_classes(params: Params, mesh: Mesh, *, class_axis: str = CLASSES) -> Params:
  """``Params`` laid out for the class-parallel loss: ``W`` ``P(None, class_axis)``, ``b``
  ``P(class_axis)``.

  Raises:
    ValueError: ``q`` is not a multiple of ``mesh.shape[class_axis]`` (then leave the params
      as they are: :func:`class_parallel_cross_entropy` pads the classes itself).
  """
  _check_axis(mesh, class_axis, "class_axis")
  W, b = params
  q, count = np.shape(b)[0], mesh.shape[class_axis]
  if q % count:
    raise ValueError(f"{q} classes do not split evenly over {count} devices (mesh axis "
                     f"{class_axis!r}).")
  return Params(_put(W, NamedSharding(mesh, P(None, class_axis))),
                _put(b, NamedSharding(mesh, P(class_axis))))
