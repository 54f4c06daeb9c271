"""Tests for softmax_jax.parallel: data parallel, class parallel, multi-process.

The test session has one CPU device, fixed when JAX started. The multi-device checks therefore run
in fresh processes (tests/_parallel_worker.py): one with 4 CPU devices
(``--xla_force_host_platform_device_count=4``) and two that form one 2-process job over
127.0.0.1 (2 devices each, gloo collectives). They start together when this module's first test
runs, and print their results as JSON; every single-device reference is computed here, in the
test session, with softmax_jax.train itself, from the same data.
"""

import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import parallel
from softmax_jax import train
from tests import _parallel_worker as worker

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds, for each group of worker processes
RTOL, ATOL = 1e-5, 1e-6  # float sums in another order (and over 2 epochs of momentum SGD)


# ----------------------------------------------------------------------------------------------
# Worker processes
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(num_devices: int) -> dict:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  # Optimization level 0 compiles these small programs about a third faster.
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={num_devices}",
                                       "--xla_backend_optimization_level=0"])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


class _Group:
  """Worker processes started together; ``results()`` waits for all (or kills all)."""

  def __init__(self, commands: list[list[str]], num_devices: int):
    self.procs, self.files = [], []
    for cmd in commands:
      out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
      self.files.append((out, err))
      self.procs.append(subprocess.Popen(
          [sys.executable, "-m", "tests._parallel_worker", *cmd], cwd=ROOT,
          env=_env(num_devices), stdout=out, stderr=err, text=True))
    self.deadline = time.monotonic() + TIMEOUT
    self._results = None

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()

  def results(self) -> list[dict]:
    if self._results is not None:
      return self._results
    try:
      # Poll all: if one process fails, the others may wait for it forever (a collective).
      while any(p.poll() is None for p in self.procs):
        if any(p.returncode not in (None, 0) for p in self.procs):
          break
        if time.monotonic() > self.deadline:
          pytest.fail(f"worker processes did not finish in {TIMEOUT} s: {self._stderr()}")
        time.sleep(0.05)
    finally:
      self.kill()
    bad = [p.returncode for p in self.procs if p.returncode != 0]
    if bad:
      pytest.fail(f"worker processes exited with {bad}: {self._stderr()}")
    results = []
    for out, _ in self.files:
      out.seek(0)
      results.append(json.loads(out.read().strip().splitlines()[-1]))
    self._results = results
    return results

  def _stderr(self) -> str:
    text = []
    for _, err in self.files:
      err.seek(0)
      text.append(err.read()[-3000:])
    return "\n----\n".join(text)

  def close(self):
    self.kill()
    for out, err in self.files:
      out.close()
      err.close()


@pytest.fixture(scope="module", autouse=True)
def workers():
  """Starts every worker at once (they run while the in-process tests do); kills them at the end."""
  address = f"127.0.0.1:{_free_port()}"
  groups = {"devices": _Group([["devices"]], num_devices=4),
            "processes": _Group([["process", address, "2", str(i)] for i in range(2)],
                                num_devices=2)}
  yield groups
  for g in groups.values():
    g.close()


@pytest.fixture(scope="module")
def devices(workers):
  (result,) = workers["devices"].results()
  assert result["num_devices"] == 4
  return result


@pytest.fixture(scope="module")
def reference():
  """The single-device run the workers must reproduce: softmax_jax.train.train_epoch itself."""
  x_train, y_train, *_ = worker.problem()
  opt = worker.optimizer()
  state = train.create_train_state(jax.random.PRNGKey(worker.SEED), worker.D, worker.Q, opt)
  losses, first = [], None
  for epoch in range(worker.EPOCHS):
    state, metrics = train.train_epoch(state, jnp.asarray(x_train), jnp.asarray(y_train),
                                       jnp.int32(epoch), optimizer=opt, **worker.TRAIN_KW)
    losses += np.asarray(metrics["loss"]).tolist()
    if first is None:
      first = {"losses": list(losses), "W": np.asarray(state.params.W),
               "b": np.asarray(state.params.b)}
  return {"losses": losses, "W": np.asarray(state.params.W), "b": np.asarray(state.params.b),
          "step": int(state.step), "epoch_1": first}


def _assert_same_run(got: dict, want: dict):
  np.testing.assert_allclose(got["losses"], want["losses"], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(got["W"], want["W"], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(got["b"], want["b"], rtol=RTOL, atol=ATOL)


def _assert_same_eval(got: dict, want: dict):
  assert got["n"] == want["n"]
  assert got["accuracy"] == want["accuracy"]
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
  np.testing.assert_allclose(got["ece"], want["ece"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got["per_class_accuracy"], want["per_class_accuracy"])


# ----------------------------------------------------------------------------------------------
# In the test session (one device): meshes, padding, placement, validation
# ----------------------------------------------------------------------------------------------


def test_make_mesh_validates_its_shape():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count() == 1
  mesh = parallel.make_mesh(shape=(1, 1), axis_names=("data", "classes"))
  assert dict(mesh.shape) == {"data": 1, "classes": 1}
  with pytest.raises(ValueError, match="needs 2 devices; got 1"):
    parallel.make_mesh(shape=(2,))
  with pytest.raises(ValueError, match="same length and distinct names"):
    parallel.make_mesh(shape=(1,), axis_names=("a", "b"))
  with pytest.raises(ValueError, match="same length and distinct names"):
    parallel.make_mesh(shape=(1, 1), axis_names=("a", "a"))


def test_pad_rows_masks_the_padding_and_shard_batch_places_rows():
  x = np.arange(10, dtype=np.float32).reshape(5, 2)
  y = np.arange(5, dtype=np.int32)
  (px, py), mask = parallel.pad_rows((x, y), multiple=4)
  assert isinstance(px, np.ndarray) and px.shape == (8, 2) and py.shape == (8,)
  np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
  np.testing.assert_array_equal(px[:5], x)
  np.testing.assert_array_equal(px[5:], 0)
  (_, py), mask = parallel.pad_rows((x, jnp.asarray(y)), length=7)
  assert isinstance(py, jax.Array) and py.shape == (7,) and mask.sum() == 5
  with pytest.raises(ValueError, match="length=4 must be >= the 5 rows"):
    parallel.pad_rows(x, length=4)
  with pytest.raises(ValueError, match="same number of rows"):
    parallel.pad_rows((x, y[:3]))

  mesh = parallel.make_mesh()
  sx, sy = parallel.shard_batch((px, py), mesh)
  assert sx.sharding.spec == jax.sharding.PartitionSpec("data")
  np.testing.assert_array_equal(np.asarray(sx), px)
  with pytest.raises(ValueError, match="not an axis of the mesh"):
    parallel.shard_batch(px, mesh, axis="classes")
  r = parallel.replicate({"a": x, "k": jax.random.key(0)}, mesh)
  assert r["a"].sharding.is_fully_replicated
  assert jax.dtypes.issubdtype(r["k"].dtype, jax.dtypes.prng_key)


def test_data_parallel_rejects_bad_arguments():
  x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
  opt = worker.optimizer()
  state = train.create_train_state(jax.random.PRNGKey(0), 3, 2, opt)
  mesh = parallel.make_mesh()
  kw = {"optimizer": opt, "mesh": mesh}
  with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
    parallel.train_epoch_data_parallel(state, x, y, 0, batch_size=0, **kw)
  with pytest.raises(ValueError, match=r"x must be \(n, d\) and y \(n,\)"):
    parallel.train_epoch_data_parallel(state, x, y[:3], 0, batch_size=2, **kw)
  with pytest.raises(ValueError, match="axis='model' is not an axis"):
    parallel.train_epoch_data_parallel(state, x, y, 0, batch_size=2, axis="model", **kw)
  with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
    parallel.evaluate_data_parallel(state.params, x, y, mesh="data")
  with pytest.raises(ValueError, match=r"where must have shape \(4,\)"):
    parallel.evaluate_data_parallel(state.params, x, y, where=np.ones(3, bool), mesh=mesh)


def test_evaluate_data_parallel_on_one_device_equals_evaluate():
  *_, x_test, y_test, _ = worker.problem()
  params = sj.init_params(jax.random.PRNGKey(3), worker.D, worker.Q, scale=1.0)
  got = parallel.evaluate_data_parallel(params, x_test, y_test, batch_size=8)
  _assert_same_eval(got, train.evaluate(params, x_test, y_test, batch_size=8))
  # Masked rows count for nothing: the first 20 rows alone.
  mask = np.arange(len(y_test)) < 20
  got = parallel.evaluate_data_parallel(params, x_test, y_test, where=mask)
  _assert_same_eval(got, train.evaluate(params, x_test[:20], y_test[:20]))


class TestClassParallelOneShard:
  """The class-parallel loss on a 1-device mesh (no collective to combine): semantics, checks."""

  def setup_method(self):
    self.mesh = parallel.make_mesh(axis_names=("classes",))
    # optax's vectors: logits [[10, 1, -2], [1, 4, 0.2]] with labels [1, 0] give
    # [9.00013, 3.0696733]; here as x = I, W = logits, b = 0.
    self.x = jnp.eye(2)
    self.W = jnp.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]])
    self.b = jnp.zeros(3)
    self.y = jnp.array([1, 0])

  def test_hand_computed_values(self):
    got = parallel.class_parallel_cross_entropy(self.x, self.W, self.b, self.y, mesh=self.mesh,
                                                reduction="none")
    np.testing.assert_allclose(got, [9.00013, 3.0696733], rtol=1e-6)
    got = parallel.class_parallel_cross_entropy(self.x, self.W, self.b, self.y, mesh=self.mesh,
                                                where=jnp.array([False, True]))
    np.testing.assert_allclose(got, 3.0696733, rtol=1e-6)
    got = parallel.class_parallel_cross_entropy(self.x, self.W, self.b, self.y, mesh=self.mesh,
                                                where=jnp.array([False, False]))
    assert float(got) == 0.0

  @pytest.mark.parametrize("eps", [0.0, 0.3])
  def test_gradients_equal_autodiff_of_the_dense_loss(self, eps):
    rng = np.random.default_rng(0)
    x, W, b = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 4), (4, 5), (5,)))
    y = jnp.asarray(rng.integers(0, 5, 6))

    def dense(x, W, b):
      return sj.cross_entropy(x @ W + b[None, :], y, label_smoothing=eps, reduction="mean")

    def split(x, W, b):
      return parallel.class_parallel_cross_entropy(
          x, W, b, y, mesh=self.mesh, label_smoothing=eps,
          shard_stats=parallel.chunked_shard_stats(2))

    split = jax.jit(split)
    np.testing.assert_allclose(split(x, W, b), dense(x, W, b), rtol=1e-6)
    grads = jax.jit(jax.grad(split, (0, 1, 2)))(x, W, b)
    for g1, g2 in zip(grads, jax.grad(dense, (0, 1, 2))(x, W, b), strict=True):
      np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
    check_grads(split, (x, W, b), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)

  @pytest.mark.parametrize("eps", [0.0, 0.3])
  @pytest.mark.parametrize("minus_inf_bias", [False, True])
  @pytest.mark.parametrize("chunked", [False, True])
  def test_extreme_logits_match_float64(self, eps, minus_inf_bias, chunked):
    # x = I: the logits are W + b, rows at ±1e4, ±3e38 and optionally a −inf bias (a class
    # switched off). The loss is float64's LSE(o) − (1−ε)·o_y − (ε/q)·Σ_j o_j rounded (+inf
    # where o holds −inf and ε > 0); the bias gradient is softmax(o) − y', finite.
    W = np.array([[1e4, -1e4, 0.0], [3e38, -3e38, 0.0], [0.0, 1.0, 2.0]], np.float32)
    b = np.array([0.0, 0.0, -np.inf if minus_inf_bias else 0.0], np.float32)
    y = np.array([0, 0, 1])
    o = W.astype(np.float64) + b
    m = o.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(o - m).sum(1))
    want = lse - (1 - eps) * o[np.arange(3), y] - (eps / 3 * o.sum(1) if eps else 0)
    target = (1 - eps) * np.eye(3)[y] + eps / 3
    want_db = np.exp(o - lse[:, None]) - target
    stats = parallel.chunked_shard_stats(2) if chunked else parallel.dense_shard_stats

    def f(x, W, b):
      return parallel.class_parallel_cross_entropy(
          x, W, b, jnp.asarray(y), mesh=self.mesh, label_smoothing=eps, reduction="none",
          shard_stats=stats)

    loss = jax.jit(f)(jnp.eye(3), jnp.asarray(W), jnp.asarray(b))
    assert not np.any(np.isnan(loss))
    np.testing.assert_allclose(loss, want.astype(np.float32), rtol=1e-6, atol=1e-6)
    # Each example's gradient (a Jacobian: one cotangent per example, whose loss may be inf).
    dW, db = jax.jit(jax.jacrev(f, (1, 2)))(jnp.eye(3), jnp.asarray(W), jnp.asarray(b))
    assert np.all(np.isfinite(dW)) and np.all(np.isfinite(db))
    np.testing.assert_allclose(db, want_db, atol=1e-6)
    np.testing.assert_allclose(dW, np.einsum("ni,nj->nij", np.eye(3), want_db), atol=1e-6)

  def test_full_smoothing_at_a_minus_inf_label_logit_is_inf_not_nan(self):
    """ε = 1 gives the label no weight: at a −inf label logit the loss is the smoothing term's
    +inf, not 0·inf = NaN (found by review: NaN before)."""
    W = jnp.array([[1.0, 2.0, 3.0], [0.5, 0.0, 1.0]])
    b = jnp.array([-jnp.inf, 0.0, 0.0])
    got = parallel.class_parallel_cross_entropy(jnp.eye(2), W, b, jnp.array([0, 2]),
                                                mesh=self.mesh, label_smoothing=1.0,
                                                reduction="none")
    np.testing.assert_array_equal(got, [np.inf, np.inf])

  @pytest.mark.parametrize("chunked", [False, True])
  def test_smoothing_with_logits_summing_beyond_the_float_range(self, chunked):
    """The shard sums are of (ε/q)·o_j and the loss is taken in halves, so logits summing or
    spanning beyond the float range give the finite loss (they gave −inf and +inf).

    x = I, so the rows of W are the logits. Hand-computed, ε = 0.3 (ε/q = 0.1):
    [3e38, 3e38, −3e38], y = 0: 0.7·log 2 + 0.1·(6e38 + 3·log 2) ≈ 6e37;
    [3e38, 3e38, 0], y = 0: ≈ 0.1·3e38 = 3e37 (Σ_j o_j = 6e38 is beyond the range);
    [3e38, −3e38, 0], y = 2: 0.7·3e38 + 0.1·(6e38 + 3e38) = 3e38;
    [1, 2, 3], y = 0: 2.107606 (the dense loss).
    """
    W = jnp.array([[3e38, 3e38, -3e38], [3e38, 3e38, 0.0], [3e38, -3e38, 0.0], [1.0, 2.0, 3.0]])
    y = jnp.array([0, 0, 2, 0])
    stats = parallel.chunked_shard_stats(2) if chunked else parallel.dense_shard_stats
    cp = functools.partial(parallel.class_parallel_cross_entropy, mesh=self.mesh,
                           reduction="none", shard_stats=stats)
    got = cp(jnp.eye(4), W, jnp.zeros(3), y, label_smoothing=0.3)
    np.testing.assert_allclose(got, [6e37, 3e37, 3e38, 2.107606], rtol=1e-5)
    # ε = 0.8: 1.6e38, 8e37 and 0.2·3e38 + (0.8/3)·9e38 = 3e38: finite, though 0.2·(M − o_y)
    # is so only in halves.
    got = cp(jnp.eye(3), W[:3], jnp.zeros(3), y[:3], label_smoothing=0.8)
    np.testing.assert_allclose(got, [1.6e38, 8e37, 3e38], rtol=1e-5)
    # Equal to the dense cross-entropy wherever both are finite.
    want = sj.cross_entropy(W, y, label_smoothing=0.3)
    np.testing.assert_allclose(cp(jnp.eye(4), W, jnp.zeros(3), y, label_smoothing=0.3), want,
                               rtol=1e-5)

  @pytest.mark.parametrize("offset", [0.0, 1e4, 1e6])
  @pytest.mark.parametrize("chunk", [None, 1, 3])
  def test_smoothing_at_large_logits_equals_dense(self, offset, chunk):
    """The smoothing term is summed shifted by the max: ε·M − Σ (ε/q)·o_j cancelled at large
    logits, 1% of the loss off near 1e6 in float32 (found by review). Chunks re-shift their
    sums as the max grows (combine_stats)."""
    o = offset + jnp.asarray(np.random.default_rng(0).normal(size=(2, 8)), jnp.float32)
    y = jnp.array([3, 6])
    stats = parallel.dense_shard_stats if chunk is None else parallel.chunked_shard_stats(chunk)
    got = parallel.class_parallel_cross_entropy(jnp.eye(2), o, jnp.zeros(8), y, mesh=self.mesh,
                                                label_smoothing=0.1, reduction="none",
                                                shard_stats=stats)
    want = sj.cross_entropy(o, y, label_smoothing=0.1)
    np.testing.assert_allclose(got, want, rtol=2e-6)

  @pytest.mark.parametrize("l2", [0.0, 0.1])
  def test_objective_equals_train_objective_at_extremes(self, l2):
    params = sj.Params(W=jnp.array([[1e4, -1e4, 0.0], [3e38, -3e38, 0.0], [0.0, 1.0, 2.0]]),
                       b=jnp.array([0.0, 0.0, -jnp.inf]))
    batch = train.Batch(jnp.eye(3), jnp.array([0, 0, 1]), jnp.array([True, True, False]))
    cp = functools.partial(parallel.class_parallel_objective, mesh=self.mesh, l2=l2)
    got = jax.jit(jax.value_and_grad(cp))(params, batch)
    want = jax.jit(jax.value_and_grad(functools.partial(train.objective, l2=l2)))(params, batch)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)  # 0, or inf: 0.05·9e76
    assert not np.isnan(got[0])
    for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1]), strict=True):
      assert np.all(np.isfinite(g))
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)

  def test_rejects_bad_arguments(self):
    f = functools.partial(parallel.class_parallel_cross_entropy, mesh=self.mesh)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\); got 3"):
      f(self.x, self.W, self.b, jnp.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be integer class ids"):
      f(self.x, self.W, self.b, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"x must be \(n, d\), W \(d, q\) and b \(q,\)"):
      f(self.x, self.W, jnp.zeros(2), self.y)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
      f(self.x, self.W, self.b, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"label_smoothing must be a float in \[0, 1\]"):
      f(self.x, self.W, self.b, self.y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="class_axis='classes' is not an axis"):
      parallel.class_parallel_cross_entropy(self.x, self.W, self.b, self.y,
                                            mesh=parallel.make_mesh())
    with pytest.raises(ValueError, match="reduction must be one of"):
      f(self.x, self.W, self.b, self.y, reduction="avg")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
      parallel.chunked_shard_stats(0)
    # A masked example's label is never read; unmasked out of range under jit is NaN.
    ok = f(self.x, self.W, self.b, jnp.array([1, 7]), where=jnp.array([True, False]))
    np.testing.assert_allclose(ok, 9.00013, rtol=1e-6)
    bad = jax.jit(lambda y: f(self.x, self.W, self.b, y, reduction="none"))(jnp.array([1, 7]))
    assert np.isfinite(bad[0]) and np.isnan(bad[1])


# ----------------------------------------------------------------------------------------------
# (a) Data parallel on 4 devices
# ----------------------------------------------------------------------------------------------


def test_data_parallel_epochs_equal_the_single_device_run(devices, reference):
  got = devices["dp"]
  assert got["step"] == reference["step"] == 2 * 11  # 103 examples, batches of 10 (3 per device)
  _assert_same_run(got, reference)
  assert got["replicated"]
  assert got["grad_rel"] < 1e-4  # autodiff vs the closed form, on the split batches


def test_data_parallel_batch_smaller_than_the_mesh_and_its_all_reduce(devices):
  x_train, y_train, *_ = worker.problem()
  opt = worker.optimizer()
  state = train.create_train_state(jax.random.PRNGKey(worker.SEED), worker.D, worker.Q, opt)
  state, metrics = train.train_epoch(state, jnp.asarray(x_train), jnp.asarray(y_train),
                                     jnp.int32(0), batch_size=3, optimizer=opt)
  want = {"losses": np.asarray(metrics["loss"]), "W": state.params.W, "b": state.params.b}
  got = devices["dp_small_batch"]
  assert len(got["losses"]) == 35
  _assert_same_run(got, want)
  # The batch is split, so the gradient needs an all-reduce; nothing gathers the batch back.
  assert "all-reduce" in devices["dp_compiled_collectives"]
  assert "all-gather" not in devices["dp_compiled_collectives"]


def test_evaluate_data_parallel_equals_evaluate(devices):
  *_, x_test, y_test, _ = worker.problem()
  params = sj.Params(jnp.asarray(devices["dp"]["W"], jnp.float32),
                     jnp.asarray(devices["dp"]["b"], jnp.float32))
  _assert_same_eval(devices["eval"], train.evaluate(params, x_test, y_test))


def test_run_epochs_data_parallel_records_equal_run_epochs(devices):
  config = train.TrainConfig(batch_size=16, epochs=2, learning_rate=0.5)
  want = [r for _, r in train.run_epochs(worker.dataset(), config)]
  got = devices["run_epochs"]
  assert [r["epoch"] for r in got] == [1, 2] and {r["num_devices"] for r in got} == {4}
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g["train_loss"], w["train_loss"], rtol=RTOL)
    np.testing.assert_allclose(g["test_loss"], w["test_loss"], rtol=RTOL)
    assert g["test_accuracy"] == w["test_accuracy"]
  # The progress callback runs once per call, not once per device: 7 steps, 2 epochs.
  assert sorted(map(tuple, devices["progress"])) == sorted([(i, 7) for i in range(7)] * 2)


# ----------------------------------------------------------------------------------------------
# (b) Class parallel on 4 devices
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["dense_0.0", "chunked_0.1"])
def test_class_parallel_loss_and_gradients_equal_the_dense_loss(devices, case):
  cp = worker.problem()[-1]
  eps = float(case.split("_")[1])

  def dense(x, W, b):
    return sj.cross_entropy(x @ W + b[None, :], cp["y"], where=cp["mask"],
                            label_smoothing=eps, reduction="mean")

  args = tuple(jnp.asarray(cp[k]) for k in ("x", "W", "b"))
  got = devices["cp"][case]
  np.testing.assert_allclose(got["loss"], dense(*args), rtol=1e-6)
  for name, g, w in zip("xWb", got["grads"], jax.grad(dense, (0, 1, 2))(*args), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=f"d loss / d {name}")


def test_class_parallel_per_example_losses(devices):
  cp = worker.problem()[-1]
  want = sj.cross_entropy(cp["x"] @ cp["W"] + cp["b"][None, :], cp["y"])
  np.testing.assert_allclose(devices["cp_none"], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stats", ["dense", "chunked"])
def test_class_parallel_smoothing_at_logits_near_1e6(devices, stats):
  # Over 4 shards (3 classes each, 2 padding columns): the per-example losses equal the dense
  # ones (the unshifted smoothing sums lost 1% of the loss here).
  cp = worker.problem()[-1]
  o = np.broadcast_to(worker.big_logits(), (worker.CP_N, worker.CP_Q))
  want = sj.cross_entropy(jnp.asarray(o), jnp.asarray(cp["y"]), label_smoothing=0.1)
  np.testing.assert_allclose(devices["cp_smooth_big"][stats], want, rtol=2e-6)


@pytest.mark.parametrize("case", worker.CP_NAN_CASES)
def test_class_parallel_a_nan_logit_makes_its_loss_and_gradients_nan(devices, case):
  # NaN in row 1 of x: that row's logits; in a column of W: one logit of every row, on one shard.
  # At 8192 classes (2048 per shard) XLA:CPU's fused max may drop a NaN: the loss must not rely
  # on the shard maxima (nor their pmax) to carry it.
  q, _, where = case.split("-")
  x, W, b, y = (jnp.asarray(a) for a in worker.cp_nan_problem(int(q), where))

  def dense(x, W, b, reduction="mean"):
    return sj.cross_entropy(x @ W + b[None, :], y, reduction=reduction)

  want_none = np.asarray(dense(x, W, b, "none"))
  want_dx, want_dW, want_db = jax.grad(dense, (0, 1, 2))(x, W, b)
  assert np.isnan(want_none[1]) and np.isfinite(want_none[0]) == (where == "x")
  got = devices["cp_nan"][case]
  # assert_allclose: NaN exactly where the dense loss has it, the rest equal.
  np.testing.assert_allclose(got["none"], want_none, rtol=1e-5, atol=1e-6)
  assert np.isnan(got["mean"])
  np.testing.assert_allclose(got["dx"], want_dx, rtol=1e-5, atol=1e-6)
  # Every dW and db entry sums over the examples, one of which is NaN.
  assert got["dW_nan"] == got["db_nan"] == np.isnan(want_dW).mean() == np.isnan(want_db).mean() == 1


@pytest.mark.parametrize("case", worker.CP_INF_CASES)
def test_class_parallel_infinite_logits_equal_the_dense_limits(devices, case):
  """Rows whose max is +inf and rows of −inf, over 4 class shards: the dense loss's limits
  (softmax uniform over the +inf logits, 0 in a row of −inf; a loss of +inf where the target has
  mass below a +inf max). They were NaN ("logits are assumed finite")."""
  bias, _, eps = case.rsplit("-", 2)
  x, W, b, y, ct = (jnp.asarray(a) for a in worker.cp_inf_problem(bias))

  def dense(x, W, b):
    return sj.cross_entropy(x @ W + b[None, :], y, label_smoothing=float(eps), reduction="none")

  want_none = np.asarray(dense(x, W, b))
  want_grads = jax.grad(lambda *a: jnp.sum(ct * dense(*a)), (0, 1, 2))(x, W, b)
  for leaf in (want_none, *want_grads):  # the limits are not NaN: NaN cannot pass as equal
    assert not np.any(np.isnan(leaf))
  got = devices["cp_inf"][case]
  np.testing.assert_allclose(got["none"], want_none, rtol=1e-6)
  for name, g, w in zip("xWb", got["grads"], want_grads, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"d loss / d {name}")
  if bias == "plus-inf-twice" and eps == "0.0":  # by hand: a label at one of two +inf logits
    # costs log 2 (with smoothing, mass on the finite logits makes it +inf)
    np.testing.assert_allclose(got["none"][:2], [np.log(2)] * 2, rtol=1e-6)
  if bias == "all-minus-inf":
    assert got["none"] == [np.inf] * 3


def test_class_parallel_masked_rows_with_nan_features_reach_no_gradient(devices):
  """Masked rows of x holding NaN and inf: the loss and gradients are those of the kept rows, and
  the masked rows' dx is 0 (review: dW, db and those rows' dx were NaN; the dense form's dW is
  NaN too, its xᵀG multiplying the NaN by 0)."""
  cp = worker.problem()[-1]
  mask = jnp.asarray(cp["mask"])
  args = tuple(jnp.asarray(cp[k]) for k in ("x", "W", "b"))

  def dense(x, W, b):  # the worker used chunked_shard_stats(2) and ε = 0.1
    return sj.cross_entropy(x @ W + b[None, :], cp["y"], where=mask, label_smoothing=0.1,
                            reduction="mean")

  clean = (jnp.where(mask[:, None], args[0], 0.0), *args[1:])
  got = devices["cp_masked_nan"]
  np.testing.assert_allclose(got["loss"], dense(*clean), rtol=1e-6)
  for name, g, w in zip("xWb", got["grads"], jax.grad(dense, (0, 1, 2))(*clean), strict=True):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=f"d loss / d {name}")
  assert np.all(np.asarray(got["grads"][0])[~np.asarray(cp["mask"])] == 0)


def test_class_parallel_forward_is_one_pmax_and_one_packed_psum(devices):
  # Forward: the pmax of the shard log-sum-exps and the psum of the stacked O(n) terms. Reverse
  # adds one psum, of ∂x over the class shards; ∂W and ∂b stay on their shards.
  assert devices["cp_forward_collectives"] == ["all_reduce", "all_reduce"]
  assert devices["cp_grad_collectives"] == ["all_reduce"] * 3


def test_class_parallel_loss_trains_like_the_dense_objective(devices, reference):
  got = devices["cp_epoch"]  # train.train_epoch with loss_fn=class_parallel_objective
  _assert_same_run(got, reference["epoch_1"])
  assert devices["shard_classes_spec"] == [[None, "classes"], ["classes"], [6, 2]]


def test_data_times_class_parallel_on_a_2x2_mesh(devices, reference):
  _assert_same_run(devices["dp_cp"], reference)


# ----------------------------------------------------------------------------------------------
# (c) Two processes, one job
# ----------------------------------------------------------------------------------------------


def test_two_processes_train_like_one(workers, reference):
  results = workers["processes"].results()
  assert [r["process_index"] for r in results] == [0, 1]
  for r in results:
    assert (r["process_count"], r["num_devices"], r["local_devices"]) == (2, 4, 2)
    _assert_same_run(r["dp"], reference)
    assert r["dp"]["step"] == reference["step"]
  # Both processes hold the same replicated result, bit for bit.
  assert results[0]["dp"] == results[1]["dp"]
  assert results[0]["eval"] == results[1]["eval"]
  *_, x_test, y_test, _ = worker.problem()
  params = sj.Params(jnp.asarray(results[0]["dp"]["W"], jnp.float32),
                     jnp.asarray(results[0]["dp"]["b"], jnp.float32))
  _assert_same_eval(results[0]["eval"], train.evaluate(params, x_test, y_test))
