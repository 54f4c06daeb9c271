"""A training run in a work directory: config, metrics, curves and checkpoints, with resume.

Files in ``workdir``:

* ``config.json``: every setting of the run, written before the first epoch;
* ``metrics.jsonl``: one JSON object per epoch, appended and flushed as each epoch ends;
* ``checkpoint.npz``: params, optimizer state, step and PRNG key, replaced atomically at every
  epoch end (see :mod:`softmax_jax.checkpoint`);
* ``curves.png``: loss and accuracy against epoch, redrawn every few seconds and at the end.

A run killed at any moment (SIGKILL included) loses at most the epoch in progress: the
checkpoint is the last completed epoch, and ``resume=True`` continues from it. Epoch ``e``
shuffles with ``fold_in(key, e)`` and the state is restored bit for bit, so a resumed run ends
with params bit-identical to an uninterrupted one. Metrics lines of epochs after the checkpoint
(an epoch whose checkpoint did not land) are dropped on resume and recomputed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from softmax_jax import checkpoint
from softmax_jax import plots
from softmax_jax import train

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.npz"
CURVES = "curves.png"

# Settings that may change between a run and its resumption: the length of the run and the
# gradient check (and the raw command-line flags, which name the workdir and --resume). Every
# other setting must match, or the result would not be the same run.
RESUMABLE_CHANGES = ("epochs", "check_grad_every", "grad_rtol", "flags")


class RunError(ValueError):
  """The work directory does not fit the requested run."""


class Progress:
  """Prints where an epoch is when it has run longer than ``after`` seconds (a host callback)."""

  def __init__(self, after: float = 5.0, out=sys.stderr):
    self.after = after
    self.out = out
    self.epoch = 0
    self.start = time.perf_counter()

  def begin(self, epoch: int) -> None:
    self.epoch, self.start = epoch, time.perf_counter()

  def __call__(self, step, num_steps) -> None:
    elapsed = time.perf_counter() - self.start
    if elapsed > self.after:
      print(f"  epoch {self.epoch}: step {int(step)}/{int(num_steps)} ({elapsed:.0f}s)",
            file=self.out, flush=True)


def _read_metrics(path: str) -> list[dict[str, Any]]:
  records = []
  with open(path) as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        # A line cut by a kill mid-write: everything before it is intact.
        print(f"warning: {path} line {i + 1} is incomplete; dropped", file=sys.stderr)
        break
  return records


def describe(config: train.TrainConfig, dataset_name: str, data) -> dict[str, Any]:
  """The JSON written to ``config.json``: every setting plus the data's shape."""
  return {"dataset": dataset_name, **config._asdict(), "num_features": data.num_features,
          "num_classes": data.num_classes, "class_names": list(data.class_names),
          "image_shape": list(data.image_shape)}


def train_and_evaluate(data, config: train.TrainConfig, workdir: str | os.PathLike, *,
                       dataset_name: str, resume: bool = False,
                       log: Callable[[dict[str, Any]], None] | None = None,
                       progress_after: float = 5.0, loss_fn=train.objective,
                       extra_config: dict[str, Any] | None = None,
                       plot_every: float = 3.0,
                       run_epochs_fn=train.run_epochs) -> list[dict[str, Any]]:
  """Trains with checkpoints and metrics in ``workdir``; returns every epoch's record.

  Args:
    data: a :class:`softmax_jax.data.Dataset`.
    config: the hyperparameters (validated before anything is written).
    workdir: the run's directory; created if missing.
    dataset_name: recorded in the config and checked on resume.
    resume: continue from ``workdir``'s checkpoint. Without it, a ``workdir`` that already holds
      a run is refused, so nothing written is ever overwritten.
    log: called with each epoch's record (after it is written).
    progress_after: report progress inside an epoch that runs longer than this (seconds).
    loss_fn: see :func:`softmax_jax.train.train_step`.
    extra_config: more JSON-able settings to record in ``config.json`` (e.g. every flag).
    plot_every: redraw ``curves.png`` at most this often (seconds), and after the last epoch.
    run_epochs_fn: the epoch loop: :func:`softmax_jax.train.run_epochs`, or
      :func:`softmax_jax.parallel.run_epochs_data_parallel` to split each batch over devices.

  Raises:
    RunError: ``workdir`` holds another run, or a run whose config differs on resume.
    softmax_jax.checkpoint.CheckpointError: the checkpoint is corrupt or incompatible.
    softmax_jax.train.NonFiniteLossError, softmax_jax.train.GradientCheckError: the run stopped;
      the files hold the last good epoch.
  """
  config.validate()
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  paths = {name: os.path.join(workdir, name) for name in (CONFIG, METRICS, CHECKPOINT, CURVES)}
  described = {**describe(config, dataset_name, data), **(extra_config or {})}

  state, history, start_epoch = None, [], 0
  has_checkpoint = os.path.exists(paths[CHECKPOINT])
  if not resume and (has_checkpoint or os.path.exists(paths[METRICS])):
    raise RunError(f"{workdir} already holds a run ({CHECKPOINT} or {METRICS} exists); pass "
                   f"resume=True (--resume) to continue it, or choose another workdir.")
  if resume and has_checkpoint:
    meta = checkpoint.read_meta(paths[CHECKPOINT])
    saved = meta.get("config", {})
    differ = sorted(k for k in set(saved) | set(described)
                    if k not in RESUMABLE_CHANGES and saved.get(k) != described.get(k))
    if differ:
      details = ", ".join(f"{k}: {saved.get(k)!r} -> {described.get(k)!r}" for k in differ)
      raise RunError(f"cannot resume {workdir}: its run was made with other settings ({details}).")
    optimizer = train.make_optimizer(config.optimizer, config.learning_rate,
                                     weight_decay=config.weight_decay)
    import jax

    template = train.create_train_state(jax.random.PRNGKey(config.seed), data.num_features,
                                        data.num_classes, optimizer)
    state, meta = checkpoint.restore(paths[CHECKPOINT], template)
    start_epoch = int(meta["epoch"])
    if os.path.exists(paths[METRICS]):
      history = [r for r in _read_metrics(paths[METRICS]) if r["epoch"] <= start_epoch]
    checkpoint.write_text(paths[METRICS], "".join(json.dumps(r) + "\n" for r in history))
  checkpoint.write_json(paths[CONFIG], described)

  progress = Progress(progress_after)
  start = time.perf_counter()
  wall_offset = history[-1]["wall_time"] if history else 0.0
  epochs = run_epochs_fn(data, config, state=state, start_epoch=start_epoch, progress=progress,
                         loss_fn=loss_fn)
  progress.begin(start_epoch + 1)
  last_plot = -float("inf")
  with open(paths[METRICS], "a") as metrics_file:
    for state, record in epochs:
      record["wall_time"] = wall_offset + time.perf_counter() - start
      metrics_file.write(json.dumps(record) + "\n")
      metrics_file.flush()
      os.fsync(metrics_file.fileno())
      checkpoint.save(paths[CHECKPOINT], state,
                      meta={"epoch": record["epoch"], "step": int(state.step),
                            "config": described})
      history.append(record)
      # Drawing takes ~0.1 s: redraw at most every few seconds, and after the last epoch.
      if record["epoch"] == config.epochs or time.perf_counter() - last_plot > plot_every:
        plots.plot_curves(history, paths[CURVES])
        last_plot = time.perf_counter()
      if log is not None:
        log(record)
      progress.begin(record["epoch"] + 1)
  return history


def load_params(path: str | os.PathLike):
  """The params of a checkpoint and its recorded config (for prediction).

  Returns:
    ``(params, config)`` where ``config`` is the dict written to ``config.json``.
  """
  import jax
  import jax.numpy as jnp

  from softmax_jax.model import Params

  path = os.fspath(path)
  meta = checkpoint.read_meta(path)
  config = meta.get("config")
  if not config or "num_features" not in config:
    raise checkpoint.CheckpointError(f"checkpoint {path} records no model config.")
  cfg = train.TrainConfig(**{k: config[k] for k in train.TrainConfig._fields})
  optimizer = train.make_optimizer(cfg.optimizer, cfg.learning_rate,
                                   weight_decay=cfg.weight_decay)
  template = train.create_train_state(jax.random.PRNGKey(0), config["num_features"],
                                      config["num_classes"], optimizer)
  state, _ = checkpoint.restore(path, template)
  return Params(*(jnp.asarray(a) for a in state.params)), config
