r"""Trains softmax regression with minibatch SGD, checking its gradient against the closed form.

Command (no flags: the embedded digits data set):

  python -m experiments.train [--workdir=/tmp/sj_train]

Expected (seed 0, 1,438 train / 359 test digits, about 2 s on 2 CPU cores with compilation):
test accuracy 0.961 after the digits preset's 200 epochs (test loss 0.14), with the autodiff
gradient within 1e-6 (relative) of Xᵀ(softmax(O) − Y)/n at every step.

Unset ``--batch_size``, ``--epochs`` and ``--learning_rate`` take the data set's preset:
D2L's 256 / 10 / 0.1 for fashion_mnist and mnist; 32 / 200 / 0.5 for digits, whose 1,438 training
images give D2L's schedule only 60 SGD steps (test accuracy 0.88).
"""

import sys

import jax
from absl import app
from absl import flags
from absl import logging

from experiments import common
from softmax_jax import checkpoint
from softmax_jax import parallel
from softmax_jax import run
from softmax_jax import train

PRESETS = {  # batch_size, epochs, learning_rate
    "digits": (32, 200, 0.5),
    "fashion_mnist": (256, 10, 0.1),
    "mnist": (256, 10, 0.1),
}
DEFAULT_PRESET = (256, 10, 0.1)  # D2L §4.4

FLAGS = flags.FLAGS
_DATASET = common.DATASET
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Minibatch size (default: preset).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Number of epochs (default: preset).")
_LR = flags.DEFINE_float("learning_rate", None, "Learning rate (default: preset).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "sgd", sorted(train.OPTIMIZERS), "Optimizer.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.0, "Weight decay.")
_L2 = flags.DEFINE_float("l2", 0.0, "L2 penalty λ/2·‖W‖² in the objective.")
_LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing ε.")
_SEED = common.SEED
_CHECK_GRAD_EVERY = flags.DEFINE_integer(
    "check_grad_every", 1, "Compare autodiff with the closed-form gradient every k steps; 0 off.")
_WORKDIR = common.WORKDIR  # config, metrics, curves and checkpoints; nothing written if unset
_RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its checkpoint.")
_DATA_PARALLEL = flags.DEFINE_bool(
    "data_parallel", False, "Split each minibatch over all devices (of every process); the same "
    "losses and params as one device, up to the order of float sums.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: process 0's host:port (jax.distributed). Leave "
    "unset on one host; on TPU pods and under SLURM set --num_processes=0 to read the "
    "environment.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: how many.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this one's rank.")


def config_from_flags() -> train.TrainConfig:
  batch_size, epochs, lr = PRESETS.get(_DATASET.value, DEFAULT_PRESET)
  return train.TrainConfig(
      batch_size=batch_size if _BATCH_SIZE.value is None else _BATCH_SIZE.value,
      epochs=epochs if _EPOCHS.value is None else _EPOCHS.value,
      learning_rate=lr if _LR.value is None else _LR.value,
      optimizer=_OPTIMIZER.value, weight_decay=_WEIGHT_DECAY.value, l2=_L2.value,
      label_smoothing=_LABEL_SMOOTHING.value, seed=_SEED.value,
      check_grad_every=_CHECK_GRAD_EVERY.value).validate()


def print_record(r):
  print(f"{r['epoch']:>5} {r['train_loss']:>10.4f} {r['test_loss']:>9.4f} "
        f"{r['test_accuracy']:>8.4f} {r['examples_per_sec']:>10.0f} "
        f"{r.get('grad_check_max_rel_diff', float('nan')):>9.2e} {r['wall_time']:>6.1f}s",
        flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if _COORDINATOR.value or _NUM_PROCESSES.value is not None:
    parallel.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value or None,
                        process_id=_PROCESS_ID.value)
  run_epochs_fn = parallel.run_epochs_data_parallel if _DATA_PARALLEL.value else train.run_epochs
  writes = jax.process_index() == 0  # in a multi-process job, process 0 writes the files
  try:
    config = config_from_flags()  # bad values fail here, before any work
    dataset = common.load_dataset()
  except (ValueError, OSError) as e:
    raise app.UsageError(str(e)) from None
  print(f"{_DATASET.value}: {len(dataset.y_train)} train, {len(dataset.y_test)} test, "
        f"{dataset.num_features} features, {dataset.num_classes} classes; "
        f"batch {config.batch_size}, {config.epochs} epochs, {config.optimizer} "
        f"lr {config.learning_rate}")
  print(f"{'epoch':>5} {'train_loss':>10} {'test_loss':>9} {'test_acc':>8} {'examples/s':>10} "
        f"{'grad_diff':>9} {'time':>7}")
  try:
    if _WORKDIR.value and writes:
      flag_values = {f.name: f.value for m in (sys.modules[__name__], common)
                     for f in FLAGS.get_flags_for_module(m)}
      run.train_and_evaluate(dataset, config, _WORKDIR.value, dataset_name=_DATASET.value,
                             resume=_RESUME.value, log=print_record,
                             extra_config={"flags": flag_values}, run_epochs_fn=run_epochs_fn)
    else:
      import time
      start = time.perf_counter()
      for _, record in run_epochs_fn(dataset, config):
        print_record({**record, "wall_time": time.perf_counter() - start})
  except (run.RunError, checkpoint.CheckpointError, train.NonFiniteLossError,
          train.GradientCheckError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
