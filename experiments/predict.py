r"""Classifies inputs with a trained checkpoint: class names with their probabilities.

Commands:

  python -m experiments.train --workdir=/tmp/sj_train
  python -m experiments.predict --checkpoint=/tmp/sj_train --split=test --limit=5
  python -m experiments.predict --checkpoint=/tmp/sj_train --input=x.npz --output_csv=p.csv

``--checkpoint`` is a ``checkpoint.npz`` or the work directory holding it. Inputs come from an
``.npz`` (array ``X`` or ``x``), a CSV of numeric features (no header, or a header line that is
skipped), or ``--split=train|test`` of the data set the checkpoint was trained on (read from
``--data_dir`` if given). Each example
prints its top ``--top_k`` classes; a split also prints the accuracy, which matches the last
line of the run's ``metrics.jsonl``.
"""

import csv
import os
import sys

import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging

import softmax_jax as sj
from experiments import common
from softmax_jax import checkpoint
from softmax_jax import run

FLAGS = flags.FLAGS
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "checkpoint.npz, or its workdir.",
                                  required=True)
_INPUT = flags.DEFINE_string("input", None, "An .npz (X) or .csv of features to classify.")
_SPLIT = flags.DEFINE_enum("split", None, ["train", "test"], "Classify a split of the data set.")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Classes printed per example.", lower_bound=1)
_LIMIT = flags.DEFINE_integer("limit", 20, "Examples printed (all go to the CSV).", lower_bound=0)
_OUTPUT_CSV = flags.DEFINE_string("output_csv", None, "Write every probability here.")


def read_features(path: str) -> np.ndarray:
  """Features from an .npz (``X`` or ``x``) or a numeric CSV, as a float32 (n, d) array."""
  if not os.path.exists(path):
    raise ValueError(f"no input file at {path}.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      key = next((k for k in ("X", "x") if k in f.files), None)
      if key is None:
        raise ValueError(f"{path} holds {f.files}; expected an array named X or x.")
      x = f[key]
  elif path.endswith(".csv"):
    with open(path, newline="") as f:
      rows = [r for r in csv.reader(f) if r]
    try:
      float(rows[0][0])
    except (ValueError, IndexError):
      rows = rows[1:]  # a header
    try:
      x = np.asarray(rows, dtype=np.float64)
    except ValueError as e:
      raise ValueError(f"{path}: every CSV field must be a number ({e}).") from None
  else:
    raise ValueError(f"{path}: inputs must be .npz or .csv.")
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or not np.all(np.isfinite(x)):
    raise ValueError(f"{path}: features must be a finite 2-D array; got shape {x.shape}.")
  return x


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if (_INPUT.value is None) == (_SPLIT.value is None):
    raise app.UsageError("give exactly one of --input and --split.")
  path = _CHECKPOINT.value
  if os.path.isdir(path):
    path = os.path.join(path, run.CHECKPOINT)
  try:
    params, config = run.load_params(path)
    labels = None
    if _SPLIT.value:
      ds = common.load_dataset(config["dataset"])
      x, labels = (ds.x_train, ds.y_train) if _SPLIT.value == "train" else (ds.x_test, ds.y_test)
    else:
      x = read_features(_INPUT.value)
    if x.shape[1] != params.num_features:
      raise ValueError(f"the inputs have {x.shape[1]} features; the checkpoint's model takes "
                       f"{params.num_features}.")
  except (ValueError, OSError, checkpoint.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  names = config["class_names"]
  proba = np.asarray(sj.predict_proba(params, jnp.asarray(x)))
  top = np.argsort(-proba, axis=1, kind="stable")[:, :_TOP_K.value]
  for i in range(min(_LIMIT.value, len(x))):
    guesses = ", ".join(f"{names[j]} {proba[i, j]:.3f}" for j in top[i])
    truth = "" if labels is None else f"  (true: {names[labels[i]]})"
    print(f"{i:>5}: {guesses}{truth}")
  if labels is not None:
    print(f"accuracy: {np.mean(proba.argmax(1) == labels):.4f} on {len(labels)} examples")
  if _OUTPUT_CSV.value:
    rows = [[i, names[int(p.argmax())], *(f"{v:.6g}" for v in p)] for i, p in enumerate(proba)]
    with checkpoint.atomic_open(_OUTPUT_CSV.value, "w") as f:
      writer = csv.writer(f)
      writer.writerow(["index", "prediction", *names])
      writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {_OUTPUT_CSV.value}")


if __name__ == "__main__":
  app.run(main)
