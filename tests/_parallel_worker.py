"""Runs softmax_jax.parallel in a fresh process for tests/test_parallel.py; prints one JSON line.

The number of CPU devices is fixed when JAX starts, so the multi-device checks cannot run in the
test session (one device). Two modes:

  python -m tests._parallel_worker devices                 # 4 CPU devices, one process
  python -m tests._parallel_worker process ADDR N RANK     # one of N processes, 2 devices each

The parent sets XLA_FLAGS and computes every single-device reference itself, from the same
:func:`problem`, and compares. Importing this module (as the parent does) starts nothing.
"""

from __future__ import annotations

import functools
import json
import re
import sys

import numpy as np

SEED = 0
N_TRAIN, N_TEST, D, Q = 103, 37, 6, 5  # 103 and 37 are odd: every split needs padding
EPOCHS = 2
TRAIN_KW = {"batch_size": 10, "l2": 0.01, "label_smoothing": 0.1}
CP_N, CP_D, CP_Q = 13, 5, 10  # 10 classes over 4 shards: 3 per shard, 2 padding columns
# A NaN logit in the class-parallel loss: q classes, shard_stats, where the NaN is (x or W).
CP_NAN_CHUNK = {16: 3, 8192: 1000}  # chunked_shard_stats' chunk: 2 and 3 chunks per shard
CP_NAN_CASES = [f"{q}-{stats}-{where}" for q in CP_NAN_CHUNK for stats in ("dense", "chunked")
                for where in ("x", "W")]


def problem():
  """The data every process and the parent share (NumPy, deterministic)."""
  rng = np.random.default_rng(SEED)
  centers = rng.normal(size=(Q, D)).astype(np.float32)
  y = rng.integers(0, Q, N_TRAIN + N_TEST).astype(np.int32)
  x = (centers[y] + rng.normal(size=(y.size, D))).astype(np.float32)
  cp = {"x": rng.normal(size=(CP_N, CP_D)).astype(np.float32),
        "W": rng.normal(size=(CP_D, CP_Q)).astype(np.float32),
        "b": rng.normal(size=CP_Q).astype(np.float32),
        "y": rng.integers(0, CP_Q, CP_N).astype(np.int32),
        "mask": rng.random(CP_N) < 0.8}
  return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], cp


def big_logits():
  """Ten logits near 1e6, float32: the class-parallel smoothing check's."""
  return (1e6 + np.random.default_rng(5).normal(size=CP_Q)).astype(np.float32)


def cp_nan_problem(q, where):
  """x (4, 8), W (8, q), b, labels with one NaN: in row 1 of x, or in column q/2 + 1 of W."""
  rng = np.random.default_rng(q)
  x = rng.normal(size=(4, 8)).astype(np.float32)
  W = (0.3 * rng.normal(size=(8, q))).astype(np.float32)
  b = rng.normal(size=q).astype(np.float32)
  y = rng.integers(0, q, 4).astype(np.int32)
  if where == "x":
    x[1, 2] = np.nan
  else:
    W[3, q // 2 + 1] = np.nan
  return x, W, b, y


# Infinite logits in the class-parallel loss (7 classes over 4 shards: 2 per shard, 1 padding
# column): a +inf in a late shard, in two shards (with a −inf), in the first one beside ±3e38,
# and a row of −inf only. The loss and gradients must be the dense loss's limits, not NaN.
CP_INF_BIASES = {
    "plus-inf-late": [0.0, 1.0, -1.0, 0.5, 2.0, np.inf, 0.0],
    "plus-inf-twice": [0.0, np.inf, -1.0, -np.inf, 2.0, np.inf, 0.0],
    "plus-inf-first": [np.inf, 1.0, -1.0, 0.5, 2.0, 3e38, -3e38],
    "all-minus-inf": [-np.inf] * 7,
}
CP_INF_CASES = [f"{bias}-{stats}-{eps}" for bias in CP_INF_BIASES
                for stats in ("dense", "chunked") for eps in (0.0, 0.1)]


def cp_inf_problem(bias):
  """x (3, 2), W (2, 7), b (one of CP_INF_BIASES), labels and per-example cotangents."""
  x = np.array([[1.0, 0.5], [-0.5, 2.0], [0.3, -1.0]], np.float32)
  W = np.array([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.3], [1.0, 0.2, -0.3, 0.7, 0.0, 1.5, -2.0]],
               np.float32)
  y = np.array([5, 1, 0], np.int32)  # at a +inf logit in some cases, below it in others
  return x, W, np.array(CP_INF_BIASES[bias], np.float32), y, np.array([1.0, 0.5, 2.0], np.float32)


def dataset():
  from softmax_jax.data import Dataset

  x_train, y_train, x_test, y_test, _ = problem()
  return Dataset(x_train, y_train, x_test, y_test, tuple("abcde"), (D,), "test")


def optimizer():
  from softmax_jax import train

  return train.make_optimizer("momentum", 0.1)


def _list(a):
  return np.asarray(a, np.float64).tolist()


def _collectives(text: str) -> list[str]:
  return re.findall(r"all[-_]reduce|all[-_]gather|all[-_]to[-_]all|collective[-_]permute|"
                    r"reduce[-_]scatter", text)


def _train(parallel, train, mesh, **kw):
  """EPOCHS data-parallel epochs from the seed's initial state; losses and final params."""
  import jax

  opt = optimizer()
  x_train, y_train, *_ = problem()
  state = train.create_train_state(jax.random.PRNGKey(SEED), D, Q, opt)
  kw = {**TRAIN_KW, **kw}
  losses, rel = [], []
  for epoch in range(EPOCHS):
    state, metrics = parallel.train_epoch_data_parallel(state, x_train, y_train, epoch,
                                                        optimizer=opt, mesh=mesh, **kw)
    losses += _list(metrics["loss"])
    if "grad_max_rel_diff" in metrics:
      rel.append(float(np.max(np.asarray(metrics["grad_max_rel_diff"]))))
  return state, {"losses": losses, "W": _list(state.params.W), "b": _list(state.params.b),
                 "step": int(np.asarray(state.step)), "grad_rel": max(rel, default=0.0),
                 "replicated": bool(state.params.W.sharding.is_fully_replicated)}


def run_devices():
  import jax
  import jax.numpy as jnp

  from softmax_jax import parallel
  from softmax_jax import train

  jax.config.update("jax_numpy_rank_promotion", "raise")
  out = {"num_devices": jax.device_count(), "jax": jax.__version__}
  mesh = parallel.make_mesh()
  x_train, y_train, x_test, y_test, cp = problem()

  # (a) Data parallel, batches of 10 = 3 per device after padding to 12.
  state, out["dp"] = _train(parallel, train, mesh, check_grad_every=1)
  # A batch of 3, smaller than the mesh (padded to 4): one epoch through the compiled program,
  # whose HLO must hold the all-reduce of the partial gradients.
  opt = optimizer()
  init = parallel.replicate(train.create_train_state(jax.random.PRNGKey(SEED), D, Q, opt), mesh)
  xs, ys = parallel.replicate((x_train, y_train), mesh)
  compiled = parallel._train_epoch_dp.lower(
      init, xs, ys, np.int32(0), mesh=mesh, axis="data", batch_size=3, optimizer=opt, l2=0.0,
      label_smoothing=0.0, check_grad_every=0, loss_fn=train.objective, progress=None).compile()
  out["dp_compiled_collectives"] = _collectives(compiled.as_text())
  small, metrics = compiled(init, xs, ys, np.int32(0))
  out["dp_small_batch"] = {"losses": _list(metrics["loss"]), "W": _list(small.params.W),
                           "b": _list(small.params.b)}
  out["eval"] = parallel.evaluate_data_parallel(state.params, x_test, y_test, batch_size=8,
                                                mesh=mesh)
  steps = []
  out["run_epochs"] = [
      {k: r[k] for k in ("epoch", "train_loss", "test_loss", "test_accuracy", "num_devices")}
      for _, r in parallel.run_epochs_data_parallel(
          dataset(), train.TrainConfig(batch_size=16, epochs=2, learning_rate=0.5), mesh=mesh,
          progress=lambda step, num_steps: steps.append([int(step), int(num_steps)]))]
  jax.effects_barrier()
  out["progress"] = steps

  # (b) Class parallel: loss and gradients for each shard_stats and smoothing.
  cmesh = parallel.make_mesh(axis_names=("classes",))
  out["cp"] = {}
  for name, stats, eps in (("dense", parallel.dense_shard_stats, 0.0),
                           ("chunked", parallel.chunked_shard_stats(2), 0.1)):
    def loss(x, W, b, eps=eps, stats=stats):
      return parallel.class_parallel_cross_entropy(
          x, W, b, cp["y"], mesh=cmesh, label_smoothing=eps, where=cp["mask"],
          shard_stats=stats)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(cp["x"], cp["W"], cp["b"])
    out["cp"][f"{name}_{eps}"] = {"loss": float(value), "grads": [_list(g) for g in grads]}
  out["cp_none"] = _list(parallel.class_parallel_cross_entropy(
      cp["x"], cp["W"], cp["b"], cp["y"], mesh=cmesh, reduction="none"))

  # Label smoothing at logits near 1e6 (x = 1, W = 0: the logits are b, exactly): the shards'
  # smoothing sums are shifted by their max and re-shifted to the global one.
  out["cp_smooth_big"] = {}
  for name, stats in (("dense", parallel.dense_shard_stats),
                      ("chunked", parallel.chunked_shard_stats(2))):
    out["cp_smooth_big"][name] = _list(parallel.class_parallel_cross_entropy(
        np.ones((CP_N, 1), np.float32), np.zeros((1, CP_Q), np.float32), big_logits(),
        cp["y"], mesh=cmesh, label_smoothing=0.1, reduction="none", shard_stats=stats))

  def plain(x, W, b):
    return parallel.class_parallel_cross_entropy(x, W, b, cp["y"], mesh=cmesh)

  # A NaN logit: its rows' losses (and the mean) and gradients must be NaN, the others exact.
  out["cp_nan"] = {}
  for case in CP_NAN_CASES:
    q, stats, where = case.split("-")
    x, W, b, y = cp_nan_problem(int(q), where)
    stats = (parallel.dense_shard_stats if stats == "dense"
             else parallel.chunked_shard_stats(CP_NAN_CHUNK[int(q)]))
    loss = functools.partial(parallel.class_parallel_cross_entropy, labels=y, mesh=cmesh,
                             shard_stats=stats)
    none, (mean, (dx, dW, db)) = jax.jit(lambda x, W, b, loss=loss: (
        loss(x, W, b, reduction="none"), jax.value_and_grad(loss, (0, 1, 2))(x, W, b)))(x, W, b)
    out["cp_nan"][case] = {"none": _list(none), "mean": float(mean), "dx": _list(dx),
                           "dW_nan": float(np.isnan(dW).mean()),
                           "db_nan": float(np.isnan(db).mean())}

  out["cp_inf"] = {}
  for case in CP_INF_CASES:
    bias, stats, eps = case.rsplit("-", 2)
    x, W, b, y, ct = cp_inf_problem(bias)
    stats = parallel.dense_shard_stats if stats == "dense" else parallel.chunked_shard_stats(1)
    loss = functools.partial(parallel.class_parallel_cross_entropy, labels=y, mesh=cmesh,
                             shard_stats=stats, label_smoothing=float(eps), reduction="none")
    none, grads = jax.jit(lambda x, W, b, loss=loss, ct=ct: (
        loss(x, W, b), jax.grad(lambda *a: jnp.sum(ct * loss(*a)), (0, 1, 2))(x, W, b)))(x, W, b)
    out["cp_inf"][case] = {"none": _list(none), "grads": [_list(g) for g in grads]}

  # A masked row of x holding NaN and inf: it must reach no gradient (dW and db were all NaN).
  x_bad = cp["x"].copy()
  masked = np.flatnonzero(~cp["mask"])
  x_bad[masked[0]] = np.nan
  x_bad[masked[-1], 0] = np.inf
  masked_loss = functools.partial(
      parallel.class_parallel_cross_entropy, labels=cp["y"], mesh=cmesh, label_smoothing=0.1,
      where=cp["mask"], shard_stats=parallel.chunked_shard_stats(2))
  value, grads = jax.jit(jax.value_and_grad(masked_loss, argnums=(0, 1, 2)))(
      x_bad, cp["W"], cp["b"])
  out["cp_masked_nan"] = {"loss": float(value), "grads": [_list(g) for g in grads]}

  args = (cp["x"], cp["W"], cp["b"])
  out["cp_forward_collectives"] = _collectives(jax.jit(plain).lower(*args).as_text())
  out["cp_grad_collectives"] = _collectives(
      jax.jit(jax.grad(plain, argnums=(0, 1, 2))).lower(*args).as_text())

  # Class parallel as the loss of the single-device epoch (q = 5 over 4 class shards: padded to
  # 8), and data × class parallel on a 2 × 2 mesh (padded to 6).
  init = train.create_train_state(jax.random.PRNGKey(SEED), D, Q, opt)
  loss_fn = functools.partial(parallel.class_parallel_objective, mesh=cmesh)
  state, metrics = train.train_epoch(init, jnp.asarray(x_train), jnp.asarray(y_train),
                                     jnp.int32(0), optimizer=opt, loss_fn=loss_fn, **TRAIN_KW)
  out["cp_epoch"] = {"losses": _list(metrics["loss"]), "W": _list(state.params.W),
                     "b": _list(state.params.b)}
  split = parallel.shard_classes(train.init_params(jax.random.PRNGKey(0), D, 8), cmesh)
  out["shard_classes_spec"] = [list(split.W.sharding.spec), list(split.b.sharding.spec),
                               list(split.W.addressable_shards[1].data.shape)]
  mesh2 = parallel.make_mesh(shape=(2, 2), axis_names=("data", "classes"))
  loss_fn = functools.partial(parallel.class_parallel_objective, mesh=mesh2, batch_axis="data")
  out["dp_cp"] = _train(parallel, train, mesh2, loss_fn=loss_fn)[1]
  print(json.dumps(out))


def run_process(address: str, num_processes: int, process_id: int):
  from softmax_jax import parallel

  parallel.initialize(address, num_processes=num_processes, process_id=process_id)

  import jax

  from softmax_jax import train

  jax.config.update("jax_numpy_rank_promotion", "raise")
  mesh = parallel.make_mesh()
  out = {"process_index": jax.process_index(), "process_count": jax.process_count(),
         "num_devices": jax.device_count(), "local_devices": jax.local_device_count()}
  state, out["dp"] = _train(parallel, train, mesh)
  # The test split as each process would load it: only its own rows (a contiguous block),
  # padded to the same length everywhere; the mask marks the real rows.
  *_, x_test, y_test, _ = problem()
  per = -(-N_TEST // num_processes)
  rows = slice(process_id * per, (process_id + 1) * per)
  length = -(-per // jax.local_device_count()) * jax.local_device_count()
  (x, y), mask = parallel.pad_rows((x_test[rows], y_test[rows]), length=length)
  x, y, mask = parallel.shard_batch((x, y, mask), mesh, process_local=True)
  out["eval"] = parallel.evaluate_data_parallel(state.params, x, y, where=mask, mesh=mesh)
  print(json.dumps(out), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  if sys.argv[1] == "devices":
    run_devices()
  else:
    run_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
