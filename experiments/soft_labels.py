r"""Training on distributions instead of one-hot labels: label smoothing and distillation.

The text (§4.1.2) notes that the cross-entropy works unchanged when the label is a probability
vector such as ``(0.1, 0.2, 0.7)`` instead of a one-hot: it is then the expected loss under that
distribution. This experiment trains softmax regression on three kinds of target and compares
test accuracy, NLL and ECE (15 bins):

* **hard labels**: the one-hot ``y`` (the baseline, ``ε = 0``);
* **label smoothing** (Szegedy et al., 2016): ``(1 − ε)·y + ε/C`` for each ``ε``;
* **distillation** (Hinton et al., 2015) from a teacher, a one-hidden-layer ReLU perceptron
  (``softmax_jax.mlp``) trained here on the same training split. For each temperature ``T`` the
  teacher's logits ``z`` give the soft targets ``p_T = softmax(z/T)`` and the student's logits
  ``o`` are trained with Hinton's loss

  .. math::
     L = α\,T^2\,H\big(p_T, \mathrm{softmax}(o/T)\big) + (1-α)\,H\big(y, \mathrm{softmax}(o)\big)

  (``α = --soft_labels_alpha``, 1 by default: soft targets only). The student is deployed at
  ``T = 1``. The factor ``T²`` keeps the soft term's gradient, ``T·(softmax(o/T) − p_T)``, of
  the same size for every ``T`` (for large ``T`` it tends to ``(o − z)/C`` for zero-mean logits:
  matching the logits), so ``α`` weighs the two terms the same way at every ``T``.
  For contrast, **distill (plain)** trains the student's own ``softmax(o)`` on ``p_T`` (no
  division of ``o``, no ``T²``, the same ``α`` mixing): the student then learns ``z/T`` and is as
  under-confident as the softened targets.

Every student is full-batch Adam (``--soft_labels_steps`` steps, ``softmax_jax.minimize``) from
the same initialisation. Each repeat uses a fresh stratified train/test split of the data set
(``data.load(name, seed=--seed + r)``) and a fresh teacher; the table gives mean ± std over the
repeats; ``agree`` is the fraction of test examples on which student and teacher predict the
same class, and ``Δacc`` the accuracy minus the hard-label student's on the same split (paired).

Command (digits, 5 repeats; 37 s on two busy CPU cores, 26 s of CPU time, mostly compilation):

  python -m experiments.soft_labels --workdir=/tmp/soft_labels

Expected (digits, 1,438 train / 359 test per split, 5 splits; teacher: 128 hidden units, 300
Adam steps, lr 0.01; students: 500 Adam steps, lr 0.05):

  | method           | ε    | T | accuracy    | NLL         | ECE         | agree | Δacc         |
  | ---------------- | ---- | - | ----------- | ----------- | ----------- | ----- | ------------ |
  | teacher (MLP)    |      |   | 0.975±0.008 | 0.082±0.040 | 0.017±0.006 |       |              |
  | hard labels      | 0    |   | 0.966±0.005 | 0.106±0.023 | 0.019±0.005 | 0.979 | +0.000±0.000 |
  | label smoothing  | 0.05 |   | 0.960±0.009 | 0.179±0.017 | 0.079±0.007 | 0.966 | -0.006±0.010 |
  | label smoothing  | 0.1  |   | 0.953±0.010 | 0.255±0.018 | 0.135±0.007 | 0.959 | -0.013±0.012 |
  | label smoothing  | 0.2  |   | 0.955±0.008 | 0.394±0.019 | 0.237±0.009 | 0.959 | -0.011±0.010 |
  | label smoothing  | 0.3  |   | 0.954±0.008 | 0.535±0.019 | 0.325±0.008 | 0.955 | -0.012±0.009 |
  | distill (Hinton) |      | 1 | 0.966±0.005 | 0.105±0.023 | 0.018±0.005 | 0.979 | +0.000±0.000 |
  | distill (Hinton) |      | 2 | 0.967±0.009 | 0.114±0.037 | 0.021±0.006 | 0.980 | +0.001±0.008 |
  | distill (Hinton) |      | 4 | 0.967±0.003 | 0.121±0.042 | 0.021±0.004 | 0.982 | +0.001±0.004 |
  | distill (Hinton) |      | 8 | 0.967±0.006 | 0.122±0.043 | 0.021±0.004 | 0.979 | +0.001±0.005 |
  | distill (plain)  |      | 2 | 0.967±0.004 | 0.110±0.019 | 0.026±0.005 | 0.982 | +0.001±0.004 |
  | distill (plain)  |      | 4 | 0.969±0.007 | 0.241±0.023 | 0.145±0.017 | 0.986 | +0.003±0.005 |
  | distill (plain)  |      | 8 | 0.969±0.005 | 0.704±0.031 | 0.447±0.017 | 0.982 | +0.003±0.004 |

What it says (one test example is 0.0028 of accuracy): on digits the hard-label student is
already well calibrated (ECE 0.019), so label smoothing only makes it under-confident: NLL and ECE
grow steadily with ``ε`` (ECE 0.079 at ``ε = 0.05``, 0.325 at 0.3) and accuracy drops by about one
point. Distillation with Hinton's loss keeps ECE near the baseline's (0.021) at every ``T``, but
its accuracy gain is within noise (+0.001 ± 0.004–0.008, paired), and the linear student stays
below its teacher (0.967 against 0.975): the teacher's edge is a non-linear boundary that softmax
regression cannot represent, whatever its targets. At ``T = 1`` the teacher's training outputs
are nearly one-hot, so that row equals the hard-label one. Training the student's plain softmax
on ``softmax(z/T)`` copies the softened confidence (ECE 0.447 at ``T = 8``) while the argmax, and
so the accuracy, stays (+0.003 ± 0.004).

Outputs in ``--workdir``: ``results.json`` (every repeat's numbers and their means),
``soft_labels.png`` (accuracy, NLL and ECE against ``ε`` and against ``T``, with the hard-label
baseline and the teacher as reference lines).

References:
  Zhang et al., Dive into Deep Learning, §4.1.2 (soft labels in the cross-entropy); Szegedy et
  al., Rethinking the Inception Architecture, CVPR 2016 (label smoothing); Hinton, Vinyals &
  Dean, Distilling the Knowledge in a Neural Network, 2015; Müller, Kornblith & Hinton, When
  Does Label Smoothing Help?, NeurIPS 2019; Guo et al., On Calibration of Modern Neural
  Networks, ICML 2017 (ECE).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

import softmax_jax as sj
from experiments import common
from softmax_jax import calibration
from softmax_jax import data
from softmax_jax import minimize
from softmax_jax import mlp
from softmax_jax import plots

DATASETS = ("digits", "toy")  # the data sets whose loader draws a fresh split from a seed


def _float_list_validator(name: str, *, lo: float, hi: float, lo_open: bool = False):
  def check(values):
    try:
      floats = [float(s) for s in values]
    except (TypeError, ValueError):
      raise flags.ValidationError(f"--{name} must be a comma-separated list of numbers; got "
                                  f"{values!r}.") from None
    bad = [f for f in floats if not (lo < f if lo_open else lo <= f) or not f <= hi]
    if not floats or bad:
      interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
      raise flags.ValidationError(f"--{name} must be a non-empty list of numbers in {interval}; "
                                  f"got {values!r} ({bad} out of range).")
    return True

  flags.register_validator(name, check)


_EPSILONS = flags.DEFINE_list(
    "soft_labels_epsilons", ["0", "0.05", "0.1", "0.2", "0.3"],
    "Label-smoothing ε values, each in [0, 0.99]; 0 (the hard-label baseline) is always run.")
_TEMPERATURES = flags.DEFINE_list(
    "soft_labels_temperatures", ["1", "2", "4", "8"],
    "Distillation temperatures T, each in (0, 100].")
_ALPHA = flags.DEFINE_float(
    "soft_labels_alpha", 1.0, "Weight α of the soft (teacher) term in the distillation loss; "
    "1 - α goes to the hard labels.", lower_bound=0.0, upper_bound=1.0)
_STEPS = flags.DEFINE_integer("soft_labels_steps", 500, "Full-batch Adam steps per student.",
                              lower_bound=1, upper_bound=100_000)
_LR = flags.DEFINE_float("soft_labels_learning_rate", 0.05, "The students' Adam learning rate.",
                         lower_bound=1e-6, upper_bound=10.0)
_HIDDEN = flags.DEFINE_integer("soft_labels_teacher_hidden", 128,
                               "Hidden units of the MLP teacher.", lower_bound=1,
                               upper_bound=65_536)
_TEACHER_STEPS = flags.DEFINE_integer("soft_labels_teacher_steps", 300,
                                      "Full-batch Adam steps for the teacher.", lower_bound=1,
                                      upper_bound=100_000)
_TEACHER_LR = flags.DEFINE_float("soft_labels_teacher_learning_rate", 0.01,
                                 "The teacher's Adam learning rate.", lower_bound=1e-6,
                                 upper_bound=10.0)
_REPEATS = flags.DEFINE_integer("soft_labels_repeats", 5, "Independent train/test splits (each "
                                "with its own teacher).", lower_bound=1, upper_bound=100)
_NUM_BINS = flags.DEFINE_integer("soft_labels_num_bins", 15, "Confidence bins of the ECE.",
                                 lower_bound=1, upper_bound=1000)
_float_list_validator("soft_labels_epsilons", lo=0.0, hi=0.99)
_float_list_validator("soft_labels_temperatures", lo=0.0, hi=100.0, lo_open=True)
FLAGS = flags.FLAGS  # --dataset, --seed, --workdir, --overwrite are in experiments/common.

METRICS = ("accuracy", "nll", "ece", "agree")
DISTILL, SOFT_T1 = "distill (Hinton)", "distill (plain)"


# ---- Losses (module functions: with their hyperparameters bound by functools.partial they are
# the static loss_fn of softmax_jax.minimize, and each binding compiles once for all repeats). ----


def _teacher_loss(params: mlp.MLPParams, x_NxD: jax.Array, y_N: jax.Array) -> jax.Array:
  return sj.cross_entropy(mlp.mlp_logits(params, x_NxD), y_N, reduction="mean")


def _smoothed_loss(params: sj.Params, x_NxD: jax.Array, y_N: jax.Array, *,
                   epsilon: float) -> jax.Array:
  """Mean cross-entropy against ``(1 − ε)·onehot(y) + ε/C``."""
  return sj.cross_entropy(sj.logits(params, x_NxD), y_N, label_smoothing=epsilon,
                          reduction="mean")


def pack_targets(soft_NxC: jax.Array, labels_N: jax.Array) -> jax.Array:
  """``[soft targets | label]``, shape ``[N, C + 1]``: one array, the ``y`` of ``minimize``."""
  return jnp.concatenate([soft_NxC, labels_N[:, None].astype(soft_NxC.dtype)], axis=1)


def distillation_loss(params: sj.Params, x_NxD: jax.Array, packed_NxC1: jax.Array, *,
                      temperature: float, alpha: float, hinton: bool = True) -> jax.Array:
  r"""Hinton et al.'s distillation loss for a softmax-regression student (mean over the batch).

  With student logits ``o = xW + b``, soft targets ``p_T`` and hard labels ``y``:

  .. math::
     L = α\,T^2\,H\big(p_T, \mathrm{softmax}(o/T)\big) + (1-α)\,H\big(y, \mathrm{softmax}(o)\big)

  ``hinton=False`` is the contrast: ``α·H(p_T, softmax(o)) + (1−α)·H(y, softmax(o))``.

  Args:
    params: the student.
    x_NxD: features.
    packed_NxC1: :func:`pack_targets` of ``p_T`` (``[N, C]``) and the labels.
    temperature: ``T > 0`` (used only for ``hinton=True``; ``p_T`` is already softened).
    alpha: weight of the soft term, in ``[0, 1]``.
    hinton: divide the student's logits by ``T`` and scale by ``T²``.

  Returns:
    The scalar loss.

  References:
    Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015, §2.
  """
  soft_NxC, labels_N = packed_NxC1[:, :-1], packed_NxC1[:, -1].astype(jnp.int32)
  o_NxC = sj.logits(params, x_NxD)
  t = temperature if hinton else 1.0
  loss = alpha * t * t * sj.cross_entropy(o_NxC / t, soft_NxC, reduction="mean")
  if alpha < 1:
    loss = loss + (1 - alpha) * sj.cross_entropy(o_NxC, labels_N, reduction="mean")
  return loss


# ---- The experiment. ----------------------------------------------------------------------------


def _metrics(logits_NxC: jax.Array, labels_N: jax.Array, teacher_pred_N: jax.Array | None, *,
             num_bins: int) -> dict[str, float]:
  probs = sj.softmax(logits_NxC)
  pred = jnp.argmax(logits_NxC, -1)
  out = {"accuracy": float(jnp.mean(pred == labels_N)),
         "nll": float(sj.cross_entropy(logits_NxC, labels_N, reduction="mean")),
         "ece": calibration.expected_calibration_error(probs, labels_N, num_bins=num_bins)}
  out["agree"] = 1.0 if teacher_pred_N is None else float(jnp.mean(pred == teacher_pred_N))
  return out


def _mean_std(values: np.ndarray) -> tuple[float, float]:
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def _summary(per_repeat: list[dict[str, float]],
             baseline: list[dict[str, float]] | None = None) -> dict[str, Any]:
  """Each metric's values, mean and std over the repeats; with ``baseline``, also the paired
  differences ``delta_<metric>`` (this run minus the baseline's run on the same split)."""
  out: dict[str, Any] = {}
  for m in METRICS:
    values = np.array([r[m] for r in per_repeat])
    out[m] = values.tolist()
    out[f"{m}_mean"], out[f"{m}_std"] = _mean_std(values)
    if baseline is not None:
      delta = values - np.array([r[m] for r in baseline])
      out[f"delta_{m}"] = delta.tolist()
      out[f"delta_{m}_mean"], out[f"delta_{m}_std"] = _mean_std(delta)
  return out


def run(datasets: Sequence[data.Dataset], *, epsilons: Sequence[float],
        temperatures: Sequence[float], alpha: float = 1.0, steps: int = 500,
        learning_rate: float = 0.05, teacher_hidden: int = 128, teacher_steps: int = 300,
        teacher_learning_rate: float = 0.01, seed: int = 0, num_bins: int = 15) -> dict[str, Any]:
  """Trains the teacher and every student on each data set (one repeat each); returns results.

  Returns:
    ``{"config", "teacher", "rows", "seconds"}``; ``teacher`` and each row (``method``,
    ``epsilon`` or ``temperature``, the other None) hold every repeat's ``accuracy``, ``nll``,
    ``ece``, ``agree`` and their ``_mean`` and ``_std``; each row also holds ``delta_<metric>``
    (and its ``_mean``, ``_std``): its difference from the hard-label run on the same split. The
    first row is the hard-label baseline (``ε = 0``).
  """
  if not datasets:
    raise ValueError("run needs at least one data set (one per repeat).")
  epsilons = sorted({0.0, *map(float, epsilons)})
  temperatures = sorted(set(map(float, temperatures)))
  t0 = time.perf_counter()
  # (method, ε, T, loss_fn, needs teacher targets at T): built once, so that each compiles once.
  configs = [("hard labels" if e == 0 else "label smoothing", e, None,
              functools.partial(_smoothed_loss, epsilon=e), False) for e in epsilons]
  for hinton in (True, False):
    method = DISTILL if hinton else SOFT_T1
    configs += [(method, None, t, functools.partial(distillation_loss, temperature=t, alpha=alpha,
                                                   hinton=hinton), True)
                for t in temperatures if hinton or t != 1.0]  # at T = 1 the two are the same
  teacher_opt, student_opt = optax.adam(teacher_learning_rate), optax.adam(learning_rate)

  teacher_runs, student_runs = [], [[] for _ in configs]
  for r, ds in enumerate(datasets):
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    key = jax.random.fold_in(jax.random.key(seed), r)
    teacher_key, student_key = jax.random.split(key)
    teacher0 = mlp.init_mlp(teacher_key, ds.num_features, teacher_hidden, ds.num_classes)
    teacher, _ = minimize.minimize(_teacher_loss, teacher0, x, y, optimizer=teacher_opt,
                                   num_steps=teacher_steps)
    z_train, z_test = mlp.mlp_logits(teacher, x), mlp.mlp_logits(teacher, x_test)
    teacher_pred = jnp.argmax(z_test, -1)
    teacher_runs.append(_metrics(z_test, y_test, None, num_bins=num_bins))
    student0 = sj.init_params(student_key, ds.num_features, ds.num_classes)
    for i, (_, _, t, loss_fn, distilled) in enumerate(configs):
      targets = pack_targets(sj.softmax(z_train, temperature=t), y) if distilled else y
      student, hist = minimize.minimize(loss_fn, student0, x, targets, optimizer=student_opt,
                                        num_steps=steps)
      if not np.isfinite(float(hist["loss"][-1])):
        raise FloatingPointError(f"the student's loss became {float(hist['loss'][-1])} "
                                 f"(config {configs[i][:3]}); lower --soft_labels_learning_rate.")
      student_runs[i].append(_metrics(sj.logits(student, x_test), y_test, teacher_pred,
                                      num_bins=num_bins))

  rows = [{"method": m, "epsilon": e, "temperature": t, **_summary(runs, student_runs[0])}
          for (m, e, t, _, _), runs in zip(configs, student_runs, strict=True)]
  ds = datasets[0]
  return {"config": {"repeats": len(datasets), "epsilons": epsilons,
                     "temperatures": temperatures, "alpha": alpha, "steps": steps,
                     "learning_rate": learning_rate, "teacher_hidden": teacher_hidden,
                     "teacher_steps": teacher_steps,
                     "teacher_learning_rate": teacher_learning_rate, "seed": seed,
                     "num_bins": num_bins, "num_train": len(ds.y_train),
                     "num_test": len(ds.y_test), "num_features": ds.num_features,
                     "num_classes": ds.num_classes},
          "teacher": _summary(teacher_runs), "rows": rows,
          "seconds": time.perf_counter() - t0}


def table_rows(results: dict[str, Any]) -> list[dict[str, str]]:
  """The Markdown table's rows: the teacher, then every student, metrics as mean ± std."""
  def fmt(r, m, sign=""):
    return f"{r[m + '_mean']:{sign}.3f}±{r[m + '_std']:.3f}"

  teacher = results["teacher"]
  rows = [{"method": "teacher (MLP)", "ε": "", "T": "", "accuracy": fmt(teacher, "accuracy"),
           "NLL": fmt(teacher, "nll"), "ECE": fmt(teacher, "ece"), "agree": "", "Δacc": ""}]
  for r in results["rows"]:
    rows.append({"method": r["method"], "ε": "" if r["epsilon"] is None else f"{r['epsilon']:g}",
                 "T": "" if r["temperature"] is None else f"{r['temperature']:g}",
                 "accuracy": fmt(r, "accuracy"), "NLL": fmt(r, "nll"), "ECE": fmt(r, "ece"),
                 "agree": f"{r['agree_mean']:.3f}", "Δacc": fmt(r, "delta_accuracy", "+")})
  return rows


def plot(results: dict[str, Any], path: str | os.PathLike) -> None:
  """Accuracy, NLL and ECE against ε (top) and T (bottom), with the reference lines."""
  import matplotlib

  matplotlib.use("Agg", force=False)
  from matplotlib import pyplot as plt
  from matplotlib import ticker

  plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
  sparse = ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")

  fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
  rows, teacher = results["rows"], results["teacher"]
  hard = rows[0]
  smooth = [r for r in rows if r["temperature"] is None]
  names = {"accuracy": "test accuracy", "nll": "test NLL (nats)", "ece": "test ECE"}
  for j, m in enumerate(("accuracy", "nll", "ece")):
    top, bottom = axes[0, j], axes[1, j]
    top.errorbar([r["epsilon"] for r in smooth], [r[m + "_mean"] for r in smooth],
                 [r[m + "_std"] for r in smooth], marker="o", capsize=3, label="label smoothing")
    top.set_xlabel("label smoothing ε")
    for method, marker in ((DISTILL, "s"), (SOFT_T1, "^")):
      sel = [r for r in rows if r["method"] == method]
      if method == SOFT_T1:  # at T = 1 the two variants are the same run
        sel = [r for r in rows if r["method"] == DISTILL and r["temperature"] == 1] + sel
      if sel:
        bottom.errorbar([r["temperature"] for r in sel], [r[m + "_mean"] for r in sel],
                        [r[m + "_std"] for r in sel], marker=marker, capsize=3, label=method)
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(results["config"]["temperatures"])
    bottom.xaxis.set_major_formatter(plain)
    bottom.set_xlabel("distillation temperature T")
    for ax in (top, bottom):
      ax.axhline(hard[m + "_mean"], color="gray", ls="--", lw=1, label="hard labels")
      ax.axhline(teacher[m + "_mean"], color="k", ls=":", lw=1, label="teacher (MLP)")
      ax.set_ylabel(names[m])
      ax.grid(alpha=0.3)
      if m != "accuracy":
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(sparse)
  axes[0, 0].legend(fontsize=8)
  axes[1, 0].legend(fontsize=8)
  cfg = results["config"]
  fig.suptitle(f"Soft labels: softmax regression, {cfg['num_train']} train / {cfg['num_test']} "
               f"test, mean ± std over {cfg['repeats']} splits", fontsize=10)
  plots.save_figure(fig, path)


def main(argv):
  del argv
  name = common.DATASET.value
  if name not in DATASETS:
    raise ValueError(f"--dataset={name!r}: soft_labels draws a fresh split per repeat, so it "
                     f"takes one of {DATASETS}.")
  workdir = common.require_workdir()
  datasets = [data.load(name, seed=common.SEED.value + r) for r in range(_REPEATS.value)]
  results = run(datasets, epsilons=[float(e) for e in _EPSILONS.value],
                temperatures=[float(t) for t in _TEMPERATURES.value], alpha=_ALPHA.value,
                steps=_STEPS.value, learning_rate=_LR.value, teacher_hidden=_HIDDEN.value,
                teacher_steps=_TEACHER_STEPS.value,
                teacher_learning_rate=_TEACHER_LR.value, seed=common.SEED.value,
                num_bins=_NUM_BINS.value)
  results["dataset"] = name
  plot(results, os.path.join(workdir, "soft_labels.png"))
  common.write_results(workdir, results)
  cfg = results["config"]
  print(f"{name}: {cfg['num_train']} train / {cfg['num_test']} test, {cfg['repeats']} repeats, "
        f"α = {cfg['alpha']:g}; {results['seconds']:.1f} s")
  print(common.format_table(table_rows(results)))


if __name__ == "__main__":
  app.run(main)
