"""Tests for checkpoints, the work-directory runner, and experiments/train.py and predict.py."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import flagsaver

from softmax_jax import checkpoint
from softmax_jax import data
from softmax_jax import run
from softmax_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("examples_per_sec", "epoch_seconds", "wall_time")


@pytest.fixture(scope="module")
def digits():
  return data.load_digits()


@pytest.fixture(scope="module")
def small(digits):
  return digits._replace(x_train=digits.x_train[:400], y_train=digits.y_train[:400])


CFG = train.TrainConfig(batch_size=64, epochs=4, learning_rate=0.5)


def _strip(records):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


# ------------------------------------------------------------------------------------------------
# checkpoint
# ------------------------------------------------------------------------------------------------


def _state(seed=0, opt="adam"):
  return train.create_train_state(jax.random.PRNGKey(seed), 5, 3,
                                  train.make_optimizer(opt, 0.1))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
  state = _state()
  state = state._replace(params=jax.tree.map(lambda a: a + 0.123456789, state.params))
  checkpoint.save(tmp_path / "c.npz", state, meta={"epoch": 3})
  restored, meta = checkpoint.restore(tmp_path / "c.npz", _state(seed=1))
  assert meta == {"epoch": 3}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  assert checkpoint.read_meta(tmp_path / "c.npz") == {"epoch": 3}


def test_checkpoint_errors(tmp_path):
  path = tmp_path / "c.npz"
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
    checkpoint.restore(path, _state())
  path.write_bytes(b"not a zip file at all")
  with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
    checkpoint.restore(path, _state())
  checkpoint.save(path, _state())
  blob = path.read_bytes()
  path.write_bytes(blob[: len(blob) // 2])  # truncated
  with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
    checkpoint.restore(path, _state())
  checkpoint.save(path, _state(opt="adam"))
  with pytest.raises(checkpoint.CheckpointError, match="different structure"):
    checkpoint.restore(path, _state(opt="sgd"))
  other = train.create_train_state(jax.random.PRNGKey(0), 6, 3, train.make_optimizer("adam", 0.1))
  with pytest.raises(checkpoint.CheckpointError, match=r"shape \(5, 3\).*\(6, 3\)"):
    checkpoint.restore(path, other)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
  path = tmp_path / "f.txt"
  checkpoint.write_text(path, "old")
  with pytest.raises(RuntimeError):
    with checkpoint.atomic_open(path, "w") as f:
      f.write("half of the new")
      raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["f.txt"]  # no temporary file left behind
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would, not mkstemp's 0600


# ------------------------------------------------------------------------------------------------
# evaluate, gradient check, non-finite loss
# ------------------------------------------------------------------------------------------------


def test_evaluate_per_class_accuracy_and_ece_by_hand():
  # Two classes, two features; logits = x directly (W = I, b = 0).
  params = train.Params(W=jnp.eye(2), b=jnp.zeros(2))
  x = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0], [0.5, 0.0]])
  y = jnp.array([0, 1, 1, 0, 0])
  out = train.evaluate(params, x, y, batch_size=2, num_bins=2)
  p = np.asarray(jax.nn.softmax(x))
  conf, pred = p.max(1), p.argmax(1)
  correct = pred == np.asarray(y)
  assert out["accuracy"] == correct.mean()
  np.testing.assert_allclose(out["per_class_accuracy"], [2 / 3, 1 / 2])
  # All confidences are > 0.5, so with 2 bins every example falls in the upper bin.
  np.testing.assert_allclose(out["ece"], abs(correct.mean() - conf.mean()), rtol=1e-6)


def test_gradient_check_fires_on_a_wrong_gradient(small):
  with pytest.raises(train.GradientCheckError, match="closed form"):
    list(train.run_epochs(small, CFG, loss_fn=_wrong))


def _wrong(params, batch, *, l2, label_smoothing):  # a term the closed form lacks
  return train.objective(params, batch, l2=l2, label_smoothing=label_smoothing) + jnp.sum(
      (params.b - 1.0) ** 2)


def test_gradient_check_every_k_steps(small):
  x, y = jnp.asarray(small.x_train), jnp.asarray(small.y_train)
  opt = train.make_optimizer("sgd", 0.1)
  state = train.create_train_state(jax.random.PRNGKey(0), 64, 10, opt)
  _, m = train.train_epoch(state, x, y, jnp.int32(0), batch_size=64, optimizer=opt,
                           check_grad_every=3, loss_fn=_wrong)
  np.testing.assert_array_equal(m["grad_checked"], [True, False, False, True, False, False, True])
  assert np.all(np.asarray(m["grad_max_rel_diff"])[~np.asarray(m["grad_checked"])] == 0)
  assert np.all(np.asarray(m["grad_max_rel_diff"])[np.asarray(m["grad_checked"])] > 0)


def _diverging(params, batch, *, l2, label_smoothing):
  loss = train.objective(params, batch, l2=l2, label_smoothing=label_smoothing)
  return jnp.where(jnp.sum(params.W ** 2) > 60.0, jnp.nan, loss)


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_files(small, tmp_path):
  cfg = CFG._replace(epochs=50, check_grad_every=0)
  with pytest.raises(train.NonFiniteLossError, match=r"became nan at step \d+ \(epoch (\d+)"):
    run.train_and_evaluate(small, cfg, tmp_path, dataset_name="digits", loss_fn=_diverging)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  meta = checkpoint.read_meta(tmp_path / "checkpoint.npz")
  assert len(lines) == meta["epoch"] >= 1
  assert all(np.isfinite(json.loads(l)["train_loss"]) for l in lines)
  params, _ = run.load_params(tmp_path / "checkpoint.npz")
  assert all(np.all(np.isfinite(a)) for a in params)


# ------------------------------------------------------------------------------------------------
# run: resume, determinism, refusals
# ------------------------------------------------------------------------------------------------


def test_resume_is_bit_identical_to_an_uninterrupted_run(small, tmp_path):
  full = run.train_and_evaluate(small, CFG, tmp_path / "full", dataset_name="digits")
  run.train_and_evaluate(small, CFG._replace(epochs=2), tmp_path / "cut", dataset_name="digits")
  resumed = run.train_and_evaluate(small, CFG, tmp_path / "cut", dataset_name="digits",
                                   resume=True)
  assert _strip(resumed) == _strip(full)
  a, _ = run.load_params(tmp_path / "full" / "checkpoint.npz")
  b, _ = run.load_params(tmp_path / "cut" / "checkpoint.npz")
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)
  lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3, 4]
  for name in ("config.json", "curves.png"):
    assert (tmp_path / "cut" / name).stat().st_size > 0


def test_same_seed_same_metrics_other_seed_other_metrics(small):
  _, h1 = train.fit(small, CFG)
  _, h2 = train.fit(small, CFG)
  _, h3 = train.fit(small, CFG._replace(seed=1))
  assert _strip(h1) == _strip(h2)
  assert _strip(h1) != _strip(h3)


def test_resume_drops_metrics_of_an_epoch_whose_checkpoint_did_not_land(small, tmp_path):
  run.train_and_evaluate(small, CFG._replace(epochs=2), tmp_path, dataset_name="digits")
  with open(tmp_path / "metrics.jsonl", "a") as f:  # as if killed after the metrics line
    f.write(json.dumps({"epoch": 3, "train_loss": 1.0}) + "\n" + '{"epoch": 4, "tr')
  history = run.train_and_evaluate(small, CFG._replace(epochs=3), tmp_path,
                                   dataset_name="digits", resume=True)
  assert [r["epoch"] for r in history] == [1, 2, 3]
  assert history[-1]["train_loss"] != 1.0


def test_refuses_to_overwrite_or_resume_a_different_run(small, tmp_path):
  run.train_and_evaluate(small, CFG._replace(epochs=1), tmp_path, dataset_name="digits")
  before = (tmp_path / "checkpoint.npz").read_bytes()
  with pytest.raises(run.RunError, match="already holds a run"):
    run.train_and_evaluate(small, CFG, tmp_path, dataset_name="digits")
  with pytest.raises(run.RunError, match=r"learning_rate: 0.5 -> 0.1"):
    run.train_and_evaluate(small, CFG._replace(learning_rate=0.1), tmp_path,
                           dataset_name="digits", resume=True)
  assert (tmp_path / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize("field,value,msg", [
    ("batch_size", 0, "batch_size"), ("learning_rate", 0.0, "learning_rate"),
    ("epochs", -1, "epochs"), ("optimizer", "lbfgs", "optimizer"),
    ("label_smoothing", 2.0, "label_smoothing"),
])
def test_bad_config_fails_before_any_work(small, tmp_path, field, value, msg):
  with pytest.raises(ValueError, match=msg):
    run.train_and_evaluate(small, CFG._replace(**{field: value}), tmp_path / "w",
                           dataset_name="digits")
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------------------------
# experiments/train.py and predict.py through their flags
# ------------------------------------------------------------------------------------------------


def _run_main(module, **flags):
  with flagsaver.flagsaver(**flags):
    module.FLAGS.mark_as_parsed()
    module.main([module.__name__])


def test_train_experiment_end_to_end(tmp_path, capsys):
  from experiments import train as exp
  _run_main(exp, epochs=3, workdir=str(tmp_path))
  out = capsys.readouterr().out
  assert "batch 32, 3 epochs, sgd lr 0.5" in out  # the digits preset, epochs overridden
  for name in ("config.json", "metrics.jsonl", "curves.png", "checkpoint.npz"):
    assert (tmp_path / name).stat().st_size > 0, name
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["flags"]["epochs"] == 3 and config["batch_size"] == 32
  rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
  for key in ("epoch", "train_loss", "test_loss", "test_accuracy", "grad_check_max_abs_diff",
              "examples_per_sec", "wall_time"):
    assert key in rec, key
  assert rec["epoch"] == 3 and rec["test_accuracy"] > 0.8
  assert rec["grad_check_max_rel_diff"] < 1e-5
  # --resume with more epochs continues; the first lines stay as they were.
  first = (tmp_path / "metrics.jsonl").read_text()
  _run_main(exp, epochs=4, workdir=str(tmp_path), resume=True)
  text = (tmp_path / "metrics.jsonl").read_text()
  assert text.startswith(first) and len(text.splitlines()) == 4

  from experiments import predict
  _run_main(predict, checkpoint=str(tmp_path), split="test", limit=2)
  out = capsys.readouterr().out
  assert "accuracy: " in out and "(true: " in out
  acc = float(out.split("accuracy: ")[1].split()[0])
  assert abs(acc - json.loads(text.splitlines()[-1])["test_accuracy"]) < 1e-4
  np.savez(tmp_path / "x.npz", X=data.load_digits().x_test[:7])
  _run_main(predict, checkpoint=str(tmp_path / "checkpoint.npz"), input=str(tmp_path / "x.npz"),
            output_csv=str(tmp_path / "p.csv"), split=None)
  rows = (tmp_path / "p.csv").read_text().splitlines()
  assert len(rows) == 8 and rows[0].startswith("index,prediction,0,1,")
  probs = np.array([[float(v) for v in r.split(",")[2:]] for r in rows[1:]])
  np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_train_experiment_rejects_bad_flags_before_work(tmp_path):
  from absl import app

  from experiments import train as exp
  with pytest.raises(app.UsageError, match="batch_size"):
    _run_main(exp, batch_size=0, workdir=str(tmp_path / "w"))
  with pytest.raises(app.UsageError, match="learning_rate"):
    _run_main(exp, learning_rate=-1.0, workdir=str(tmp_path / "w"))
  with pytest.raises(app.UsageError, match="epochs"):
    _run_main(exp, epochs=-1, workdir=str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_predict_rejects_bad_inputs(tmp_path, capsys):
  from experiments import predict
  (tmp_path / "bad.npz").write_bytes(b"junk")
  with pytest.raises(SystemExit):
    _run_main(predict, checkpoint=str(tmp_path / "bad.npz"), split="test")
  assert "corrupt" in capsys.readouterr().err


def test_sigkill_mid_run_loses_at_most_one_epoch(tmp_path):
  """A real process, killed with SIGKILL while training; resume finishes the same run."""
  workdir = tmp_path / "killed"
  cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", "--epochs=100000",
         "--batch_size=64", "--learning_rate=0.5"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  try:
    while time.time() < deadline:
      if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
        break
      assert proc.poll() is None, proc.stderr.read().decode()
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  done = len(metrics.read_text().splitlines())
  epoch = checkpoint.read_meta(workdir / "checkpoint.npz")["epoch"]
  assert done - 1 <= epoch <= done  # at most the epoch in progress is lost
  target = epoch + 2
  subprocess.run(cmd[:4] + [f"--epochs={target}", "--batch_size=64", "--learning_rate=0.5",
                            "--resume"], cwd=ROOT, check=True, capture_output=True)
  subprocess.run(cmd[:3] + [f"--workdir={tmp_path / 'straight'}", f"--epochs={target}",
                            "--batch_size=64", "--learning_rate=0.5"],
                 cwd=ROOT, check=True, capture_output=True)
  a, _ = run.load_params(workdir / "checkpoint.npz")
  b, _ = run.load_params(tmp_path / "straight" / "checkpoint.npz")
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)


def test_train_experiment_on_a_user_file_and_unknown_dataset(tmp_path, capsys):
  from absl import app

  from experiments import train as exp
  ds = data.load_toy(seed=3)
  np.savez(tmp_path / "mine.npz", X=np.concatenate([ds.x_train, ds.x_test]),
           y=np.concatenate([ds.y_train, ds.y_test]))
  _run_main(exp, dataset=str(tmp_path / "mine.npz"), epochs=5, batch_size=16,
            learning_rate=0.5, workdir=str(tmp_path / "w"))
  rec = json.loads((tmp_path / "w" / "metrics.jsonl").read_text().splitlines()[-1])
  assert rec["test_accuracy"] > 0.6  # three well-separated 2×2 patterns
  config = json.loads((tmp_path / "w" / "config.json").read_text())
  assert config["num_features"] == 4 and config["num_classes"] == 3
  with pytest.raises(app.UsageError, match="unknown dataset 'imagenet'.*digits"):
    _run_main(exp, dataset="imagenet", workdir=str(tmp_path / "x"))
  with pytest.raises(app.UsageError, match="do not apply"):
    _run_main(exp, dataset="digits", data_dir=str(tmp_path))
  assert not (tmp_path / "x").exists()


def test_progress_inside_a_long_epoch(small):
  import io
  out = io.StringIO()
  progress = run.Progress(after=-1.0, out=out)  # report at once
  progress.begin(1)
  x, y = jnp.asarray(small.x_train), jnp.asarray(small.y_train)
  opt = train.make_optimizer("sgd", 0.1)
  state = train.create_train_state(jax.random.PRNGKey(0), 64, 10, opt)
  state, _ = train.train_epoch(state, x, y, jnp.int32(0), batch_size=8, optimizer=opt,
                               progress=progress)
  jax.block_until_ready(state)
  jax.effects_barrier()
  lines = out.getvalue().splitlines()
  assert lines and lines[0].startswith("  epoch 1: step 0/50")
  assert len(lines) == 10  # every 5th of the 50 steps
  quiet = io.StringIO()
  progress = run.Progress(after=1e9, out=quiet)
  train.train_epoch(state, x, y, jnp.int32(1), batch_size=8, optimizer=opt, progress=progress)
  jax.effects_barrier()
  assert quiet.getvalue() == ""


def test_train_experiment_data_parallel_flag_matches(capsys):
  from experiments import train as exp
  _run_main(exp, epochs=2)
  single = capsys.readouterr().out.splitlines()[-1].split()[:4]
  _run_main(exp, epochs=2, data_parallel=True)
  parallel = capsys.readouterr().out.splitlines()[-1].split()[:4]
  assert single == parallel  # epoch, train loss, test loss, test accuracy (4 decimals)
