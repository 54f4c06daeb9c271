r"""Compressed output layers: what do low-rank, PHM and Fastfood layers save, and what do they cost?

D2L §4.1 ends by noting that a fully connected layer costs ``O(dq)`` parameters and FLOPs, and
that Fastfood ("Deep Fried Convnets", Yang et al. 2015) and PHM (Zhang et al. 2021, ``O(dq/n)``)
trade "a small amount of accuracy" for less storage and compute. This trains softmax regression
with each output layer of ``softmax_jax.layers`` in place of ``xW + b`` (cross-entropy via
``sj.cross_entropy``, ``softmax_jax.minimize`` with adam, the same minibatches for every layer)
and reports the parameter count (checked against the layer's formula), FLOPs per example, the
measured training time (one compiled program: init, the steps and the final predictions;
compilation excluded) and test accuracy, on digits (d = 64) and on
Fashion-MNIST-shaped synthetic data (d = 784, q = 10; see :func:`fashion_synthetic`). It also
tabulates the formulas at ``d = q = 4096``, the square layer where the savings are meant to pay.

PHM needs ``n`` to divide ``d`` and ``q``: the inputs are padded with zero features to a multiple
of ``n`` and the classes with extra outputs that are sliced off before the softmax (masked: they
take no part in the loss or the prediction). The padded sizes are the ``d``, ``q`` of each row, and
the parameters and FLOPs count them (bias included, as for every layer).

Command:

  python -m experiments.compressed --workdir=/tmp/compressed

Expected (about 70 s on 2 slow shared CPU cores, 3 s of it compiling each layer; 1,000 adam steps
of 128 examples, lr 0.01; digits 1,438/359 examples, fashion_synthetic 6,000/1,000; ``train s``
is the compiled training program's wall time)::

  | data    | layer             | d×q    | params | /dense | FLOPs/dense | train s | test  |
  | ------- | ----------------- | ------ | ------ | ------ | ----------- | ------- | ----- |
  | digits  | dense             | 64×10  | 650    | 1.00   | 1.00        | 0.17    | 0.953 |
  | digits  | low_rank (rank=1) | 64×10  | 84     | 0.13   | 0.12        | 0.05    | 0.421 |
  | digits  | low_rank (rank=2) | 64×10  | 158    | 0.24   | 0.24        | 0.08    | 0.694 |
  | digits  | low_rank (rank=4) | 64×10  | 306    | 0.47   | 0.47        | 0.08    | 0.914 |
  | digits  | phm (n=2)         | 64×10  | 338    | 0.52   | 1.06        | 0.12    | 0.897 |
  | digits  | phm (n=4)         | 64×12  | 268    | 0.41   | 1.50        | 0.12    | 0.925 |
  | digits  | phm (n=5)         | 65×10  | 265    | 0.41   | 1.40        | 0.14    | 0.928 |
  | digits  | fastfood          | 64×10  | 148    | 0.23   | 0.71        | 0.37    | 0.883 |
  | fashion | dense             | 784×10 | 7850   | 1.00   | 1.00        | 0.36    | 0.853 |
  | fashion | low_rank (rank=1) | 784×10 | 804    | 0.10   | 0.10        | 0.19    | 0.197 |
  | fashion | low_rank (rank=2) | 784×10 | 1598   | 0.20   | 0.20        | 0.29    | 0.418 |
  | fashion | low_rank (rank=4) | 784×10 | 3186   | 0.41   | 0.41        | 0.29    | 0.674 |
  | fashion | phm (n=2)         | 784×10 | 3938   | 0.50   | 1.01        | 0.62    | 0.812 |
  | fashion | phm (n=4)         | 784×12 | 2428   | 0.31   | 1.22        | 0.48    | 0.805 |
  | fashion | phm (n=5)         | 785×10 | 1705   | 0.22   | 1.03        | 0.66    | 0.805 |
  | fashion | fastfood          | 784×10 | 2068   | 0.26   | 1.44        | 9.35    | 0.843 |

  At d = q = 4096 (formulas): low_rank r=64 has 3.1% of dense's parameters and FLOPs, phm n=16
  6.3% of the parameters but 106% of the FLOPs, fastfood 0.098% of the parameters and 0.34% of
  the FLOPs.

Read: every parameter count matches its formula. Compression costs accuracy, and how much
depends on the layer more than on the count: Fastfood, with a quarter of the parameters, loses
7 points on digits but 1 on the synthetic set (0.843 against 0.853), and PHM keeps 94–97% of
dense's accuracy with 22–52% of its parameters; low rank is the worst trade here: telling 10
well-spread classes apart needs weights of rank up to 9, and rank 4 keeps 96% (digits) and 79%
(synthetic) of dense's accuracy. The savings the text names are in
storage, not always in arithmetic: PHM does as many FLOPs as dense (``dq + n²·min(d, q)``
multiply-adds), and Fastfood's ``O(d log d)`` beats ``dq`` only when ``q`` is well above
``log₂ d`` (at q = 10 it is 1.44× dense). Measured time agrees with neither count: Fastfood's
FWHT, ten memory-bound butterfly passes, takes 26× dense's training time on CPU, where a 784×10
matmul is almost free, which is the text's closing point that efficient execution, not the
FLOP count, decides. (Timings vary ±30% on a shared machine; accuracies are deterministic for a
seed on one platform.)

Writes ``results.json`` (every row, the at-scale formulas and the configuration) and
``accuracy_vs_params.png`` (test accuracy against parameter count, log x, one panel per data set).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

import softmax_jax as sj
from experiments import common
from softmax_jax import data
from softmax_jax import layers
from softmax_jax import plots
from softmax_jax.minimize import minimize

DATASETS = ("digits", "fashion_synthetic")
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}
AT_SCALE = {"d": 4096, "q": 4096, "ranks": (64, 512), "ns": (4, 16)}
FIGURE = "accuracy_vs_params.png"
_MAX_HYPER = 10  # ranks and PHM n: at most min(d, q) = 10 for both data sets

_DATASETS = flags.DEFINE_multi_enum("compressed_datasets", list(DATASETS), list(DATASETS),
                                    "Data sets to train on (repeat the flag for several).")
_LAYERS = flags.DEFINE_multi_enum("compressed_layers", list(layers.LAYERS), list(layers.LAYERS),
                                  "Output layers to compare (softmax_jax.layers.LAYERS).")
_RANKS = flags.DEFINE_list("compressed_ranks", ["1", "2", "4"],
                           f"Ranks of the low_rank layer, ints in [1, {_MAX_HYPER}].")
_NS = flags.DEFINE_list("compressed_phm_ns", ["2", "4", "5"],
                        f"PHM n (Kronecker terms), ints in [2, {_MAX_HYPER}]; d and q are padded "
                        "to multiples of n.")
_STEPS = flags.DEFINE_integer("compressed_steps", 1000, "Optimizer steps per layer.",
                              lower_bound=1, upper_bound=100_000)
_BATCH = flags.DEFINE_integer("compressed_batch_size", 128, "Minibatch size (at most the "
                              "smallest training set).", lower_bound=1, upper_bound=1024)
_LR = flags.DEFINE_float("compressed_learning_rate", 0.01, "Learning rate, in (0, 10].",
                         upper_bound=10.0)
_OPTIMIZER = flags.DEFINE_enum("compressed_optimizer", "adam", list(OPTIMIZERS), "optax optimizer.")
_TRAIN_SIZE = flags.DEFINE_integer("compressed_train_size", 6000, "Training examples of "
                                   "fashion_synthetic.", lower_bound=100, upper_bound=60_000)
_TEST_SIZE = flags.DEFINE_integer("compressed_test_size", 1000, "Test examples of "
                                  "fashion_synthetic.", lower_bound=100, upper_bound=10_000)
FLAGS = flags.FLAGS  # --workdir, --seed and --overwrite are in experiments/common.


def _int_list(values: Sequence[str], lo: int, hi: int) -> bool:
  try:
    ints = [int(v) for v in values]
  except ValueError:
    return False
  return bool(ints) and all(lo <= i <= hi for i in ints)


flags.register_validator("compressed_ranks", lambda v: _int_list(v, 1, _MAX_HYPER),
                         f"--compressed_ranks must be a non-empty list of ints in "
                         f"[1, {_MAX_HYPER}] (min(d, q) for both data sets).")
flags.register_validator("compressed_phm_ns", lambda v: _int_list(v, 2, _MAX_HYPER),
                         f"--compressed_phm_ns must be a non-empty list of ints in "
                         f"[2, {_MAX_HYPER}].")
flags.register_validator("compressed_learning_rate", lambda v: v > 0,
                         "--compressed_learning_rate must be > 0.")
for _name in ("compressed_datasets", "compressed_layers"):
  flags.register_validator(_name, bool, f"--{_name} must name at least one.")
flags.register_multi_flags_validator(
    ["compressed_batch_size", "compressed_train_size"],
    lambda f: f["compressed_batch_size"] <= f["compressed_train_size"],
    "--compressed_batch_size must be at most --compressed_train_size.")


def fashion_synthetic(*, num_train: int = 6000, num_test: int = 1000, seed: int = 0,
                      noise: float = 0.7, pixel_noise: float = 0.3) -> data.Dataset:
  r"""Fashion-MNIST-shaped synthetic data: 28×28 "images" (784 features in [0, 1]), 10 classes.

  Each class has a smooth prototype, ``sigmoid(2·up(Z_c))`` with ``Z_c`` a 7×7 standard normal
  image upsampled ×4 (blocks of 4×4 pixels); an example of class ``y`` is its prototype plus
  smooth noise (``noise·up(N(0, I₄₉))``) and pixel noise (``pixel_noise·N(0, I₇₈₄)``), clipped to
  ``[0, 1]``. Labels are uniform. The noise levels are set so that L2-regularised softmax
  regression (scikit-learn, C = 1) reaches about the 84% test accuracy it reaches on the real
  Fashion-MNIST, while fitting the 6,000 training examples perfectly.

  Args:
    num_train: training examples.
    num_test: test examples.
    seed: the NumPy generator's seed (prototypes, labels and noise).
    noise: amplitude of the smooth (4×4-block) noise.
    pixel_noise: amplitude of the independent pixel noise.

  Returns:
    A :class:`softmax_jax.data.Dataset` with float32 ``x`` of shape ``(n, 784)``.
  """
  rng = np.random.default_rng(seed)

  def up(a):
    return np.repeat(np.repeat(a, 4, axis=-2), 4, axis=-1)

  prototypes = 1 / (1 + np.exp(-2 * up(rng.normal(size=(10, 7, 7)))))
  n = num_train + num_test
  y = rng.integers(0, 10, size=n).astype(np.int32)
  x = prototypes[y] + noise * up(rng.normal(size=(n, 7, 7))) + pixel_noise * rng.normal(
      size=(n, 28, 28))
  x = np.clip(x, 0, 1).reshape(n, 784).astype(np.float32)
  return data.Dataset(x_train=x[:num_train], y_train=y[:num_train], x_test=x[num_train:],
                      y_test=y[num_train:], class_names=tuple(f"class {c}" for c in range(10)),
                      image_shape=(28, 28), source=f"fashion_synthetic(seed={seed})")


def _round_up(a: int, n: int) -> int:
  return -(-a // n) * n


def _configs(layer_names: Sequence[str], ranks: Sequence[int],
             ns: Sequence[int]) -> list[tuple[str, int | None]]:
  hypers = {"dense": [None], "low_rank": list(ranks), "phm": list(ns), "fastfood": [None]}
  return [(name, h) for name in layers.LAYERS if name in layer_names for h in hypers[name]]


def _padded(name: str, hyper: int | None, d: int, q: int) -> tuple[int, int]:
  return (_round_up(d, hyper), _round_up(q, hyper)) if name == "phm" else (d, q)


def _label(name: str, hyper: int | None) -> str:
  h = layers.LAYERS[name].hyperparameter
  return f"{name} ({h}={hyper})" if h else name


def _loss(apply, q, params, x, y):
  # x: [1, B, d], one of the fixed batches of _batches. Extra (padding) classes are sliced off:
  # they take no part in the softmax.
  return sj.cross_entropy(apply(params, x)[..., :q], y, reduction="mean")


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The training set shuffled once into ``⌈n/B⌉`` batches ``[nb, B, ...]``, wrapping around.

  Each step draws one of these batches (``minimize`` with ``batch_size=1`` over the batch axis,
  with replacement), from the same key for every layer, so all layers see the same minibatches;
  the last batch reuses the first few rows.
  """
  n = len(y)
  nb = -(-n // batch_size)
  idx = np.random.default_rng(seed).permutation(n)[np.arange(nb * batch_size) % n]
  return (x[idx].reshape(nb, batch_size, *x.shape[1:]), y[idx].reshape(nb, batch_size))


_INIT_OUTSIDE_JIT = ("fastfood",)


def _init_key(key):
  return jax.random.fold_in(key, 0)


def train_one(dataset: data.Dataset, name: str, hyper: int | None, *, steps: int,
              batch_size: int, learning_rate: float, optimizer: str, seed: int) -> dict:
  """Trains softmax regression with one output layer; returns its row of results.

  Raises:
    RuntimeError: the parameter count differs from the layer's formula.
  """
  layer = layers.LAYERS[name]
  d, q = dataset.num_features, dataset.num_classes
  dp, qp = _padded(name, hyper, d, q)
  kw = {layer.hyperparameter: hyper} if layer.hyperparameter else {}
  init = functools.partial(layer.init, d=dp, q=qp, **kw)
  key = jax.random.key(seed)
  # Fastfood's permutations must be concrete (static pytree data), so it is drawn here; the
  # other layers are drawn inside the compiled program (one compilation per layer, not two).
  params = init(_init_key(key)) if name in _INIT_OUTSIDE_JIT else None
  x_train = np.pad(dataset.x_train, ((0, 0), (0, dp - d)))
  x_test = np.pad(dataset.x_test, ((0, 0), (0, dp - d)))
  xb, yb = _batches(x_train, dataset.y_train, batch_size, seed)
  loss_fn = functools.partial(_loss, layer.apply, q)
  opt = OPTIMIZERS[optimizer](learning_rate)

  def train_and_predict(params, xb, yb, key, x_train, x_test):
    # One compiled program: init, the training steps, then the predictions (a forward pass over
    # train and test, under 1% of the time).
    if params is None:
      params = init(_init_key(key))
    trained, history = minimize(loss_fn, params, xb, yb, optimizer=opt, num_steps=steps,
                                batch_size=1, key=jax.random.fold_in(key, 1))
    predict = [jnp.argmax(layer.apply(trained, x)[:, :q], axis=-1) for x in (x_train, x_test)]
    return history, *predict

  args = (params, xb, yb, key, x_train, x_test)
  t0 = time.perf_counter()
  compiled = jax.jit(train_and_predict).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  history, train_pred, test_pred = jax.block_until_ready(compiled(*args))
  train_s = time.perf_counter() - t0

  if params is None:
    params = jax.eval_shape(init, _init_key(key))
  count, formula = layers.num_params(params), layer.param_count(dp, qp, **kw)
  if count != formula:
    raise RuntimeError(f"{_label(name, hyper)}: {count} parameters, but the formula gives "
                       f"{formula}.")
  dense_params, dense_flops = layers.dense_num_params(d, q), layers.dense_flops(d, q)
  flops = layer.flops(dp, qp, **kw)
  losses = np.asarray(history["loss"])
  return {
      "layer": name, "hyper": hyper, "label": _label(name, hyper), "d": dp, "q": qp,
      "params": count, "params_formula": formula, "params_vs_dense": count / dense_params,
      "flops": flops, "flops_vs_dense": flops / dense_flops,
      "compile_s": compile_s, "train_s": train_s, "us_per_step": 1e6 * train_s / steps,
      "final_loss": float(np.mean(losses[-max(1, steps // 20):])),
      "train_accuracy": float(np.mean(train_pred == dataset.y_train)),
      "test_accuracy": float(np.mean(test_pred == dataset.y_test)),
  }


def at_scale(d: int = AT_SCALE["d"], q: int = AT_SCALE["q"], *, ranks=AT_SCALE["ranks"],
             ns=AT_SCALE["ns"]) -> list[dict]:
  """Parameters and FLOPs per example from the formulas alone, for a ``d×q`` layer."""
  rows = []
  for name, hyper in _configs(list(layers.LAYERS), ranks, ns):
    layer = layers.LAYERS[name]
    kw = {layer.hyperparameter: hyper} if layer.hyperparameter else {}
    p, f = layer.param_count(d, q, **kw), layer.flops(d, q, **kw)
    rows.append({"d": d, "q": q, "label": _label(name, hyper), "params": p,
                 "params_vs_dense": p / layers.dense_num_params(d, q), "flops": f,
                 "flops_vs_dense": f / layers.dense_flops(d, q)})
  return rows


def run(*, datasets: Sequence[str] = DATASETS, layer_names: Sequence[str] = tuple(layers.LAYERS),
        ranks: Sequence[int] = (1, 2, 4), ns: Sequence[int] = (2, 4, 5), steps: int = 1000,
        batch_size: int = 128, learning_rate: float = 0.01, optimizer: str = "adam",
        train_size: int = 6000, test_size: int = 1000, seed: int = 0) -> dict:
  """Trains every configured layer on every data set; returns the rows, formulas and config.

  Raises:
    ValueError: an unknown data set or layer, a rank above ``min(d, q)`` of a data set, or a
      batch larger than a training set (all checked before any training).
  """
  for what, given, known in (("dataset", datasets, DATASETS), ("layer", layer_names,
                                                                layers.LAYERS)):
    unknown = [g for g in given if g not in known]
    if unknown or not given:
      raise ValueError(f"unknown or no {what}s {list(given)!r}: use some of {list(known)}.")
  sets = {}
  for name in datasets:
    sets[name] = (data.load("digits") if name == "digits" else
                  fashion_synthetic(num_train=train_size, num_test=test_size, seed=seed))
  for name, ds in sets.items():
    n, d, q = len(ds.y_train), ds.num_features, ds.num_classes
    if batch_size > n:
      raise ValueError(f"--compressed_batch_size={batch_size} exceeds the {n} training examples "
                       f"of {name}.")
    if "low_rank" in layer_names and max(ranks) > min(d, q):
      raise ValueError(f"--compressed_ranks: rank {max(ranks)} exceeds min(d, q) = {min(d, q)} "
                       f"of {name} (d={d}, q={q}).")
  rows = []
  for ds_name, ds in sets.items():
    for name, hyper in _configs(layer_names, ranks, ns):
      row = train_one(ds, name, hyper, steps=steps, batch_size=batch_size,
                      learning_rate=learning_rate, optimizer=optimizer, seed=seed)
      rows.append({"dataset": ds_name, **row})
  config = {"datasets": list(datasets), "layers": list(layer_names), "ranks": list(ranks),
            "phm_ns": list(ns), "steps": steps, "batch_size": batch_size,
            "learning_rate": learning_rate, "optimizer": optimizer, "train_size": train_size,
            "test_size": test_size, "seed": seed, "backend": jax.default_backend(),
            "sizes": {k: {"train": len(v.y_train), "test": len(v.y_test),
                          "d": v.num_features, "q": v.num_classes} for k, v in sets.items()}}
  return {"config": config, "rows": rows, "at_scale": at_scale()}


_MARKERS = {"dense": "o", "low_rank": "s", "phm": "^", "fastfood": "D"}


def plot(rows: Sequence[dict], path: str) -> None:
  """Test accuracy against parameter count (log x), one panel per data set, a marker per layer."""
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  import matplotlib
  import matplotlib.ticker

  matplotlib.use("Agg", force=False)
  from matplotlib import pyplot as plt

  fig, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.6), squeeze=False)
  axes = axes[0]
  for ax, ds in zip(axes, datasets, strict=True):
    sub = [r for r in rows if r["dataset"] == ds]
    for i, name in enumerate(layers.LAYERS):
      pts = [r for r in sub if r["layer"] == name]
      if not pts:
        continue
      ax.plot([r["params"] for r in pts], [r["test_accuracy"] for r in pts], _MARKERS[name],
              color=f"C{i}", label=name, markersize=7, linestyle="-" if len(pts) > 1 else "")
      for r in pts:
        if r["hyper"] is not None:
          h = layers.LAYERS[name].hyperparameter
          ax.annotate(f"{h}={r['hyper']}", (r["params"], r["test_accuracy"]), fontsize=7,
                      xytext=(4, -9), textcoords="offset points")
    dense = [r for r in sub if r["layer"] == "dense"]
    if dense:
      ax.axhline(dense[0]["test_accuracy"], color="0.6", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters (bias included)")
    ax.set_ylabel("test accuracy")
    ax.set_title(ds)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
  plots.save_figure(fig, path)


def main(argv):
  del argv
  workdir = common.require_workdir()
  results = run(datasets=_DATASETS.value, layer_names=_LAYERS.value,
                ranks=[int(r) for r in _RANKS.value], ns=[int(n) for n in _NS.value],
                steps=_STEPS.value, batch_size=_BATCH.value, learning_rate=_LR.value,
                optimizer=_OPTIMIZER.value, train_size=_TRAIN_SIZE.value,
                test_size=_TEST_SIZE.value, seed=common.SEED.value)
  plot(results["rows"], os.path.join(workdir, FIGURE))
  common.write_results(workdir, results)
  print(common.format_table(results["rows"], ["dataset", "label", "d", "q", "params",
                                              "params_vs_dense", "flops", "flops_vs_dense",
                                              "train_s", "test_accuracy"], floatfmt=".3g"))
  print()
  print(f"Formulas at d = q = {AT_SCALE['d']}:")
  print(common.format_table(results["at_scale"], ["label", "params", "params_vs_dense", "flops",
                                                  "flops_vs_dense"], floatfmt=".3g"))


if __name__ == "__main__":
  app.run(main)
