r"""Is the probit model worse than the softmax, and a worse optimisation problem? (D2L §4.1.2)

The text (§4.1.2, in its Korean rendering of D2L) grants that the probit model ``y = o + ε``,
``ε ~ N(0, σ²)`` (Fechner 1860) is attractive, but says that it works less well than the softmax
and does not give a particularly nice optimisation problem. This experiment tests both halves on
real data.

Tasks and models (linear ``o = xW + b`` throughout; pixels that are constant in the training set
are dropped, so that every weight is identified):

* binary: digits even vs odd, digits 3 vs 8, toy cat vs dog: logistic regression
  (``-log σ(±o)``) against the probit (``-log Φ(±o)``, ``softmax_jax.probit.probit_loss``);
* multiclass: digits (10 classes) and toy (3): softmax regression; the multinomial probit with
  iid ``N(0, 1)`` noise (Thurstone case V: ``P(k) = ∫ φ(z) Π_{j≠k} Φ(z + o_k − o_j) dz`` by
  adaptive Gauss–Hermite quadrature, trained by its exact likelihood); and classification as
  vector-valued regression (squared error on one-hot targets, predicting the argmax; for NLL and
  ECE its outputs become probabilities by clipping to ``[1e-3, 1]`` and renormalising).

Every model minimises its mean loss plus ``(l2/2)·‖W‖²`` by full-batch gradient descent from zero,
with the same budget: ``--probit_steps`` steps at each learning rate of ``--probit_learning_rates``
(all rates at once, vmapped over ``softmax_jax.minimize.minimize``). The probit's ``o`` is about
the logit divided by 1.7 (``Φ(o) ≈ σ(1.702 o)``), so the same ``l2`` is a weaker prior for it;
the binary tasks add ``probit_l2x2.9``, the probit with ``l2·1.702²``, the logistic's prior on
its scale.

Columns: ``acc``, ``NLL`` (nats) and ``ECE`` (15 bins) on the test set at the exact optimum, free
of any optimiser (float64 Newton for the binary tasks, float64 L-BFGS warm-started from the best
GD iterate for softmax and probit, the ridge closed form for the regression). ``lr`` is the best
rate of the sweep: the one whose objective first comes within ``--probit_rtol`` (relative) of
that optimum ``J*``, after ``steps`` steps, else the one with the lowest final objective; ``gap``
is its final ``(J − J*)/J*``; ``max lr`` the largest rate that did not diverge; ``κ`` the
condition number of the Hessian at the optimum (gradient descent needs ``O(κ log 1/ε)`` steps).

Command (about 55 s on two slow, shared CPU cores; the multinomial probit's sweep on the digits
is most of it):

  python -m experiments.probit_vs_softmax --workdir=/tmp/probit

Expected (defaults: 500 steps, rates 0.1 0.2 0.5 1 2 5 10, l2 = 1e-3, 12 nodes):

  task            model          acc     NLL     ECE    lr   steps  gap      max lr  κ
  digits_even_odd logistic       0.9248  0.2107  0.054  2    >500   1.6e-3   5       1140
  digits_even_odd probit         0.9192  0.1979  0.046  0.2  >500   8.2e-2   0.2     2390
  digits_even_odd probit_l2x2.9  0.9248  0.2069  0.054  0.2  >500   2.9e-2   0.2     1120
  digits_3_vs_8   logistic       0.9861  0.0410  0.034  5    420    6.7e-4   10      1190
  digits_3_vs_8   probit         1.0000  0.0281  0.024  0.2  >500   0.36     0.5     1600
  digits_3_vs_8   probit_l2x2.9  0.9861  0.0392  0.033  0.2  >500   6.9e-2   0.5     1220
  toy_cat_vs_dog  logistic       1.0000  0.0442  0.042  10   75     2.3e-7   10      107
  toy_cat_vs_dog  probit         1.0000  0.0188  0.018  2    403    4.0e-4   2       152
  toy_cat_vs_dog  probit_l2x2.9  1.0000  0.0387  0.037  2    140    3.1e-6   2       111
  digits          softmax        0.9526  0.2065  0.078  2    >500   7.2e-3   5
  digits          probit         0.9554  0.1769  0.051  1    >500   2.7e-2   1
  digits          regression     0.9248  0.7435  0.412  0.1  >500   3.0e-2   0.1
  toy             softmax        1.0000  0.0467  0.044  10   81     3.3e-7   10
  toy             probit         1.0000  0.0306  0.029  2    405    5.1e-4   2
  toy             regression     1.0000  0.2031  0.177  0.5  379    4.0e-4   0.5

A GD step of the multinomial probit costs 25-30x the softmax's (3.7 ms against 0.15 ms on the
digits: ``q`` quadrature integrals per example instead of one log-sum-exp).

Verdict. "Does not work as well": not supported. The probit is never significantly less accurate
(differences within 2 binomial standard errors) and its test NLL is lower on every task (×0.43 to
×0.94 of the logistic/softmax's; ×0.88 to ×0.98 with the prior matched). "Not a particularly nice
optimization problem": supported for gradient descent, with a caveat. The probit NLL is convex and
as well conditioned at its optimum (κ ×0.98 to ×1.04 of the logistic's with the prior matched),
but on a misclassified point its gradient grows linearly with the margin and its curvature tends
to 1, where the logistic's gradient stays below 1 and its curvature tends to 0. So GD diverges at
5-25x smaller rates and, at its best rate, is slower on every task (5 of 5); the multinomial
version has no closed form and costs ~25x more per step. Vector regression is the clear loser on
calibration (NLL 0.74, ECE 0.41 on the digits).

Outputs in ``--workdir``: ``results.json`` (every number above, the per-rate sweep, the verdict),
``curves.png`` (objective and gradient norm per step at each model's best rate, log scale) and
``lr_sweep.png`` (final objective gap against learning rate).

References: Fechner, Elemente der Psychophysik, 1860; Thurstone 1927; Bliss 1934; Zhang et al.,
Dive into Deep Learning, §4.1.2.
"""

from __future__ import annotations

import functools
import math
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
from softmax_jax import calibration
from softmax_jax import minimize
from softmax_jax import plots
from softmax_jax import probit
from softmax_jax.solve import enable_x64

# task -> (data set, kind, classes kept (None: all), positive class for binary tasks)
TASKS = {
    "digits_even_odd": ("digits", "binary", None, "even"),
    "digits_3_vs_8": ("digits", "binary", (3, 8), 8),
    "toy_cat_vs_dog": ("toy", "binary", (0, 2), 2),
    "digits": ("digits", "multiclass", None, None),
    "toy": ("toy", "multiclass", None, None),
}
BINARY_MODELS = ("logistic", "probit", "probit_l2x2.9")
MATCHED = "probit_l2x2.9"  # the probit with l2·1.702²: the logistic's prior on the probit's scale
MULTICLASS_MODELS = ("softmax", "probit", "regression")
REGRESSION_FLOOR = 1e-3  # vector regression's outputs -> probabilities: clip to [floor, 1], renorm
PROBIT_TO_LOGIT = 1.702  # Φ(o) ≈ σ(1.702 o): the probit's o is the logit divided by ~1.7

_STEPS = flags.DEFINE_integer("probit_steps", 500, "Gradient-descent steps per learning rate.",
                              lower_bound=1, upper_bound=100_000)
_LRS = flags.DEFINE_list("probit_learning_rates", ["0.1", "0.2", "0.5", "1", "2", "5", "10"],
                         "Learning rates of the sweep (each model is reported at its best).")
_L2 = flags.DEFINE_float("probit_l2", 1e-3, "L2 penalty (l2/2)·‖W‖² on the weights (not the "
                         "biases), the same for every model.", lower_bound=0.0)
_NODES = flags.DEFINE_integer("probit_nodes", 12, "Gauss–Hermite nodes of the multinomial probit.",
                              lower_bound=1, upper_bound=probit.MAX_NODES)
_RTOL = flags.DEFINE_float("probit_rtol", 1e-3, "Converged: objective within this relative "
                           "distance of the reference optimum.", lower_bound=1e-12)
_TASKS = flags.DEFINE_list("probit_tasks", list(TASKS), f"Tasks to run, from {list(TASKS)}.")
FLAGS = flags.FLAGS


def _parse_rates(rates: Sequence[str]) -> list[float]:
  out = []
  for r in rates:
    try:
      value = float(r)
    except ValueError:
      raise ValueError(f"--probit_learning_rates must be numbers; got {r!r}.") from None
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"--probit_learning_rates must be positive and finite; got {r!r}.")
    out.append(value)
  if not out:
    raise ValueError("--probit_learning_rates is empty.")
  return out


def _check_rates(rates):
  try:
    _parse_rates(rates)
  except ValueError as e:
    raise flags.ValidationError(str(e)) from None
  return True


def _check_tasks(tasks):
  bad = [t for t in tasks if t not in TASKS]
  if bad or not tasks:
    raise flags.ValidationError(f"--probit_tasks must be a non-empty list from {list(TASKS)}; "
                                f"got {tasks!r}.")
  return True


flags.register_validator("probit_learning_rates", _check_rates,
                         "--probit_learning_rates must be positive, finite numbers.")
flags.register_validator("probit_tasks", _check_tasks)


# --- data -----------------------------------------------------------------------------------------


def task_data(task: str) -> dict:
  """The task's train/test arrays; binary labels are 0/1 (1 = the positive class)."""
  name, kind, keep, positive = TASKS[task]
  ds = sj.data.load(name)
  out = {}
  for split in ("train", "test"):
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    if keep is not None:
      rows = np.isin(y, keep)
      x, y = x[rows], y[rows]
    if kind == "binary":
      y = (y % 2 == 0) if positive == "even" else (y == positive)
    out[split] = (x.astype(np.float32), y.astype(np.int32))
  varying = out["train"][0].std(0) > 0  # constant pixels carry no information: drop them
  for split in out:
    out[split] = (out[split][0][:, varying], out[split][1])
  out["kind"] = kind
  out["num_classes"] = 2 if kind == "binary" else ds.num_classes
  return out


# --- models -----------------------------------------------------------------------------------


def _logits(params, x):
  b = params["b"]
  return x @ params["w"] + (b if b.ndim == 0 else b[None, :])


def _penalty(params, l2):
  return 0.5 * l2 * jnp.sum(params["w"] ** 2)


def _data_loss(model: str, o, y, num_nodes: int):
  """Mean training loss of ``model`` at logits ``o`` (binary: ``[n]``; multiclass: ``[n, q]``)."""
  if model == "logistic":
    return sj.sigmoid_cross_entropy(o, y.astype(o.dtype), reduction="mean")
  if model in ("probit", MATCHED) and o.ndim == 1:
    return probit.probit_loss(o, y, reduction="mean")
  if model == "probit":
    return probit.multinomial_probit_loss(o, y, num_nodes=num_nodes, reduction="mean")
  if model == "softmax":
    return sj.cross_entropy(o, y, reduction="mean")
  if model == "regression":
    return 0.5 * jnp.mean(jnp.sum((o - jax.nn.one_hot(y, o.shape[-1], dtype=o.dtype)) ** 2, -1))
  raise ValueError(f"unknown model {model!r}")


def objective(params, x, y, *, model: str, l2: float, num_nodes: int):
  """The training objective: mean loss plus (l2/2)·‖W‖²."""
  return _data_loss(model, _logits(params, x), y, num_nodes) + _penalty(params, l2)


_NODES_EVAL = 20  # evaluation runs once: more nodes than training needs


def _log_probs(model: str, o):
  """Test-time log-probabilities ``[n, q]`` (binary: ``[log P(0), log P(1)]``)."""
  if o.ndim == 1:
    if model in ("probit", MATCHED):
      return jnp.stack([probit.log_normal_cdf(-o), probit.log_normal_cdf(o)], -1)
    return jnp.stack([jax.nn.log_sigmoid(-o), jax.nn.log_sigmoid(o)], -1)
  if model == "softmax":
    return sj.log_softmax(o)
  if model == "probit":
    return probit.multinomial_probit_log_probs(o, num_nodes=_NODES_EVAL)
  clipped = jnp.clip(o, REGRESSION_FLOOR, 1.0)  # regression: clip and renormalise
  return jnp.log(clipped / jnp.sum(clipped, -1, keepdims=True))


@functools.partial(jax.jit, static_argnames=("model",))
def _eval_arrays(params, x, y, *, model: str):
  o = _logits(params, x)
  log_p = _log_probs(model, o)
  pred = (o > 0).astype(jnp.int32) if o.ndim == 1 else jnp.argmax(o, -1)
  nll = -jnp.mean(jnp.take_along_axis(log_p, y[:, None], -1))
  return jnp.exp(log_p), nll, jnp.mean(pred == y)


def evaluate(model: str, params, x, y) -> dict:
  """Accuracy, NLL (nats per example) and ECE (15 bins) of ``model`` on ``(x, y)``."""
  p, nll, acc = _eval_arrays(jax.tree.map(jnp.asarray, params), jnp.asarray(x), jnp.asarray(y),
                             model=_base(model))
  return {"accuracy": float(acc), "nll": float(nll),
          "ece": calibration.expected_calibration_error(p, jnp.asarray(y))}


# --- optimisation -------------------------------------------------------------------------------


def _init(model: str, d: int, num_classes: int):
  shape = () if num_classes == 2 and model in BINARY_MODELS else (num_classes,)
  return {"w": jnp.zeros((d, *shape)), "b": jnp.zeros(shape)}


def sweep(loss_fn, params0, x, y, rates: Sequence[float], steps: int):
  """Full-batch GD from ``params0`` at every rate at once (vmapped ``minimize``).

  Returns:
    ``(params, history, final objective, seconds per step per rate)``, the first three stacked
    over the rates; the time excludes compilation.
  """
  def one(lr):
    params, hist = minimize.minimize(loss_fn, params0, x, y, optimizer=optax.sgd(lr),
                                     num_steps=steps)
    return params, hist, loss_fn(params, x, y)

  lrs = jnp.asarray(rates, jnp.float32)
  compiled = jax.jit(jax.vmap(one)).lower(lrs).compile()
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(lrs))
  return (*out, (time.perf_counter() - start) / (steps * len(rates)))


def _base(model: str) -> str:
  """The loss a model name uses (the matched-l2 probit is the probit with another l2)."""
  return "probit" if model == MATCHED else model


def _flat_objective(theta, x, y, l2, *, model):
  d = x.shape[1]
  return objective({"w": theta[:d], "b": theta[d]}, x, y, model=model, l2=l2, num_nodes=1)


_value_and_grad = jax.jit(jax.value_and_grad(_flat_objective), static_argnames=("model",))
_hessian = jax.jit(jax.hessian(_flat_objective), static_argnames=("model",))


def exact_optimum(model: str, x, y, *, l2: float, max_iter: int = 100) -> dict:
  """The binary objective's exact minimiser by damped Newton in float64, and its Hessian."""
  d = x.shape[1]
  model = _base(model)
  with enable_x64():
    args = (jnp.asarray(x, jnp.float64), jnp.asarray(y), jnp.float64(l2))
    theta = jnp.zeros(d + 1, jnp.float64)
    value, grad = _value_and_grad(theta, *args, model=model)
    newton_steps = 0
    while newton_steps < max_iter and float(jnp.max(jnp.abs(grad))) >= 1e-11:
      newton_steps += 1
      step = jnp.linalg.solve(_hessian(theta, *args, model=model), grad)
      t = 1.0
      while True:  # backtracking: Newton's full step can overshoot far from the optimum
        new_value, new_grad = _value_and_grad(theta - t * step, *args, model=model)
        if float(new_value) <= float(value) or t < 1e-8:
          break
        t *= 0.5
      theta, value, grad = theta - t * step, new_value, new_grad
    eig = np.linalg.eigvalsh(np.asarray(_hessian(theta, *args, model=model)))
    return {"params": {"w": np.asarray(theta[:d], np.float32),
                       "b": np.asarray(theta[d], np.float32)},
            "objective": float(value), "grad_max": float(jnp.max(jnp.abs(grad))),
            "newton_steps": newton_steps, "hessian_max": float(eig[-1]),
            "hessian_min": float(eig[0]),
            "condition_number": float(eig[-1] / eig[0])}


def lbfgs_optimum(loss_fn, params0, x, y, *, max_iter: int = 200, tol: float = 1e-6) -> dict:
  """``min J`` by L-BFGS in float64 from ``params0`` (the best GD iterate)."""
  with enable_x64():
    x64 = jnp.asarray(x, jnp.float64)
    p0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params0)

    def f(p):
      return loss_fn(p, x64, y)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def body(carry):
      p, state, it, _ = carry
      value, grad = value_and_grad(p, state=state)
      updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
      norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grad)))
      return optax.apply_updates(p, updates), state, it + 1, norm

    @jax.jit
    def solve(p):
      p, _, it, norm = jax.lax.while_loop(
          lambda c: (c[2] < max_iter) & (c[3] > tol), body,
          (p, opt.init(p), 0, jnp.asarray(jnp.inf, jnp.float64)))
      return p, f(p), it, norm

    p, value, it, norm = solve(p0)
    return {"params": jax.tree.map(lambda a: np.asarray(a, np.float32), p),
            "objective": float(value), "iterations": int(it), "grad_norm": float(norm)}


def ridge_optimum(x, y, num_classes: int, *, l2: float) -> dict:
  """The vector regression's exact optimum (ridge regression on one-hot targets, float64)."""
  x = np.asarray(x, np.float64)
  t = np.eye(num_classes)[np.asarray(y)]
  n = len(x)
  mx, mt = x.mean(0), t.mean(0)
  xc, tc = x - mx, t - mt  # the bias is not penalised: centre it out
  w = np.linalg.solve(xc.T @ xc / n + l2 * np.eye(x.shape[1]), xc.T @ tc / n)
  r = xc @ w - tc
  return {"params": {"w": w.astype(np.float32), "b": (mt - mx @ w).astype(np.float32)},
          "objective": float(0.5 * np.mean(np.sum(r * r, -1)) + 0.5 * l2 * np.sum(w * w))}


def _take(tree, i: int):
  """Row ``i`` of every leaf: one learning rate's result from the vmapped sweep."""
  return jax.tree.map(lambda a: a[i], tree)


def _steps_to(history: np.ndarray, final: float, target: float) -> int | None:
  hit = np.flatnonzero(history <= target)
  if hit.size:
    return int(hit[0])
  return len(history) if final <= target else None


def _choose(rates, histories, finals, target):
  """Index of the best rate: fewest steps to ``target``, else the lowest finite final value."""
  steps = [_steps_to(h, f, target) for h, f in zip(histories, finals, strict=True)]
  reached = [i for i, s in enumerate(steps) if s is not None]
  if reached:
    return min(reached, key=lambda i: (steps[i], finals[i])), steps
  finite = [i for i, f in enumerate(finals) if np.isfinite(f)]
  if not finite:
    raise FloatingPointError(f"every learning rate in {rates} diverged")
  return min(finite, key=lambda i: finals[i]), steps


# --- the experiment -----------------------------------------------------------------------------


def run_task(task: str, *, steps: int, rates: Sequence[float], l2: float, num_nodes: int,
             rtol: float) -> dict:
  data = task_data(task)
  (x, y), (x_test, y_test) = data["train"], data["test"]
  kind, q = data["kind"], data["num_classes"]
  models = BINARY_MODELS if kind == "binary" else MULTICLASS_MODELS
  out = {"kind": kind, "num_train": len(y), "num_test": len(y_test), "num_features": x.shape[1],
         "num_classes": q, "models": {}}
  for model in models:
    model_l2 = l2 * PROBIT_TO_LOGIT**2 if model == MATCHED else l2
    loss_fn = functools.partial(objective, model=model, l2=model_l2, num_nodes=num_nodes)
    params, hist, finals, seconds = sweep(loss_fn, _init(model, x.shape[1], q), jnp.asarray(x),
                                          jnp.asarray(y), rates, steps)
    losses, grads = np.asarray(hist["loss"], np.float64), np.asarray(hist["grad_norm"])
    finals = np.asarray(finals, np.float64)
    if kind == "binary":
      opt = exact_optimum(model, x, y, l2=model_l2)
      opt["method"] = "float64 Newton"
    elif model == "regression":
      opt = ridge_optimum(x, y, q, l2=l2)
      opt["method"] = "closed form (ridge)"
    else:  # warm-started at the lowest final GD iterate
      seen = int(np.nanargmin(np.where(np.isfinite(finals), finals, np.nan)))
      opt = lbfgs_optimum(loss_fn, _take(params, seen), x, jnp.asarray(y))
      opt["method"] = "float64 L-BFGS from the best GD iterate"
    opt["test"] = evaluate(model, opt.pop("params"), x_test, y_test)
    reference = min(opt["objective"], float(np.nanmin(np.where(np.isfinite(finals), finals,
                                                                np.nan))))
    rec = {"optimum": opt}
    target = reference + rtol * abs(reference)
    best, steps_each = _choose(rates, losses, finals, target)
    stable = [r for r, h, f in zip(rates, losses, finals, strict=True)
              if np.isfinite(f) and f < h[0]]
    best_params = _take(params, best)
    rec.update({
        "reference_objective": reference,
        "learning_rate": rates[best], "steps_to_converge": steps_each[best],
        "final_objective": float(finals[best]),
        "final_gap": float((finals[best] - reference) / abs(reference)),
        "final_grad_norm": float(grads[best, -1]),
        "ms_per_step": 1e3 * seconds,
        "max_stable_learning_rate": max(stable) if stable else None,
        "test": evaluate(model, best_params, x_test, y_test),
        "sweep": [{"learning_rate": r, "final_objective": float(f),
                   "final_gap": float((f - reference) / abs(reference)), "steps_to_converge": s}
                  for r, f, s in zip(rates, finals, steps_each, strict=True)],
        "curve_loss": losses[best], "curve_grad_norm": grads[best],
    })
    out["models"][model] = rec
  return out


def _significant(diff: float, p: float, n: int) -> int:
  """+1/-1 when an accuracy difference exceeds 2 binomial standard errors ``√(p(1-p)/n)``."""
  se = math.sqrt(max(p * (1 - p), 1.0 / n) / n)  # at least 1/n: a perfect score is not certain
  return 0 if abs(diff) <= 2 * se else (1 if diff > 0 else -1)


def _slower(a: dict, b: dict, factor: float = 1.5) -> bool:
  """Whether run ``a`` converged more slowly than ``b``: more steps, or a larger final gap."""
  sa, sb = a["steps_to_converge"], b["steps_to_converge"]
  if sa is not None and sb is not None:
    return sa > factor * sb
  if sa is None and sb is None:
    return a["final_gap"] > factor * b["final_gap"]
  return sa is None


def verdict(tasks: dict) -> dict:
  """The probit against its logistic/softmax counterpart, task by task, and the two claims."""
  per_task, worse, slower = {}, 0, 0
  for task, res in tasks.items():
    base = "logistic" if res["kind"] == "binary" else "softmax"
    a, b = res["models"]["probit"], res["models"][base]
    ta, tb = a["optimum"]["test"], b["optimum"]["test"]  # free of the optimiser
    diff = ta["accuracy"] - tb["accuracy"]
    entry = {
        "baseline": base, "accuracy_diff": diff,
        "significant": _significant(diff, (ta["accuracy"] + tb["accuracy"]) / 2,
                                    res["num_test"]),
        "nll_ratio": ta["nll"] / tb["nll"], "ece_diff": ta["ece"] - tb["ece"],
        "gd_accuracy_diff": a["test"]["accuracy"] - b["test"]["accuracy"],
        "steps": [a["steps_to_converge"], b["steps_to_converge"]],
        "final_gap": [a["final_gap"], b["final_gap"]],
        "probit_slower": _slower(a, b),
        "max_stable_lr": [a["max_stable_learning_rate"], b["max_stable_learning_rate"]],
        "ms_per_step_ratio": a["ms_per_step"] / b["ms_per_step"],
    }
    if res["kind"] == "binary":
      entry["kappa_ratio"] = a["optimum"]["condition_number"] / b["optimum"]["condition_number"]
      m = res["models"][MATCHED]
      entry["kappa_ratio_matched_l2"] = (m["optimum"]["condition_number"] /
                                         b["optimum"]["condition_number"])
      entry["nll_ratio_matched_l2"] = m["optimum"]["test"]["nll"] / tb["nll"]
      entry["matched_l2_slower"] = _slower(m, b)
      entry["max_stable_lr_matched_l2"] = m["max_stable_learning_rate"]
    entry["probit_worse"] = entry["significant"] < 0 or entry["nll_ratio"] > 1.05
    worse += entry["probit_worse"]
    slower += entry["probit_slower"]
    per_task[task] = entry
  n = len(tasks)
  kappas = [e["kappa_ratio_matched_l2"] for e in per_task.values() if "kappa_ratio" in e]
  return {"per_task": per_task, "num_tasks": n,
          "kappa_ratio_matched_l2_geomean": (float(np.exp(np.mean(np.log(kappas))))
                                             if kappas else None),
          "probit_worse_in": int(worse), "claim_worse_supported": worse * 2 > n,
          "probit_slower_in": int(slower), "claim_harder_optimisation_supported": slower * 2 > n}


def run(*, tasks: Sequence[str], steps: int, rates: Sequence[float], l2: float, num_nodes: int,
        rtol: float) -> dict:
  """All tasks; returns the results dict (curves included)."""
  results = {task: run_task(task, steps=steps, rates=rates, l2=l2, num_nodes=num_nodes,
                            rtol=rtol) for task in tasks}
  return {"config": {"steps": steps, "learning_rates": list(rates), "l2": l2,
                     "num_nodes": num_nodes, "rtol": rtol, "optimizer": "full-batch GD (optax.sgd)",
                     "regression_probabilities": f"clip to [{REGRESSION_FLOOR}, 1], renormalise",
                     "multinomial_probit": "Thurstone case V, adaptive Gauss-Hermite quadrature"},
          "tasks": results, "verdict": verdict(results)}


def table_rows(results: dict) -> list[dict]:
  """One row per task and model: test metrics at the optimum, then gradient descent's numbers."""
  rows = []
  for task, res in results["tasks"].items():
    for model, rec in res["models"].items():
      s = rec["steps_to_converge"]
      test = rec["optimum"]["test"]
      kappa = rec["optimum"].get("condition_number")
      rows.append({"task": task, "model": model, "test acc": test["accuracy"],
                   "test NLL": test["nll"], "ECE": test["ece"], "GD lr": rec["learning_rate"],
                   "steps": str(s) if s is not None else f">{results['config']['steps']}",
                   "gap": rec["final_gap"], "max lr": rec["max_stable_learning_rate"],
                   "ms/step": rec["ms_per_step"],
                   "κ": f"{kappa:.3g}" if kappa is not None else ""})
  return rows


def verdict_text(v: dict) -> str:
  lines = []
  for task, e in v["per_task"].items():
    sig = {1: "probit better", 0: "not significant", -1: "probit worse"}[e["significant"]]
    kappa = (f"; κ ×{e['kappa_ratio']:.2g} (l2 matched: ×{e['kappa_ratio_matched_l2']:.2g}, "
             f"NLL ×{e['nll_ratio_matched_l2']:.3f}, slower: {e['matched_l2_slower']})"
             if "kappa_ratio" in e else "")
    lines.append(
        f"  {task}: acc {e['accuracy_diff']:+.4f} ({sig}), NLL ×{e['nll_ratio']:.3f} vs "
        f"{e['baseline']}; max stable lr {e['max_stable_lr'][0]} vs {e['max_stable_lr'][1]}; "
        f"probit slower: {e['probit_slower']}{kappa}; cost/step ×{e['ms_per_step_ratio']:.2g}")
  lines.append(f"'probit does not work as well as softmax': "
               f"{'SUPPORTED' if v['claim_worse_supported'] else 'NOT SUPPORTED'} (probit less "
               f"accurate or >5% higher NLL in {v['probit_worse_in']} of {v['num_tasks']} tasks)")
  kappa = v["kappa_ratio_matched_l2_geomean"]
  lines.append(f"'not a particularly nice optimization problem': "
               f"{'SUPPORTED' if v['claim_harder_optimisation_supported'] else 'NOT SUPPORTED'}"
               f" (GD at the best rate >1.5x slower in {v['probit_slower_in']} of "
               f"{v['num_tasks']} tasks" + (f"; yet κ at the optimum, l2 matched, is ×{kappa:.2g} "
                                             f"the logistic's" if kappa else "") + ")")
  return "\n".join(lines)


def plot(results: dict, workdir: str) -> list[str]:
  import matplotlib

  matplotlib.use("Agg", force=False)
  from matplotlib import pyplot as plt

  tasks = results["tasks"]
  fig, axes = plt.subplots(len(tasks), 2, figsize=(9, 2.6 * len(tasks)), squeeze=False)
  for row, (task, res) in zip(axes, tasks.items(), strict=True):
    for model, rec in res["models"].items():
      steps = np.arange(len(rec["curve_loss"]))
      gap = np.maximum(rec["curve_loss"] - rec["reference_objective"], 1e-12)
      row[0].plot(steps, gap, label=f"{model} (lr {rec['learning_rate']:g})")
      row[1].plot(steps, rec["curve_grad_norm"], label=model)
    row[0].set_title(f"{task}: J(t) − J*", fontsize=9)
    row[1].set_title(f"{task}: ‖∇J(t)‖", fontsize=9)
    for ax in row:
      ax.set_yscale("log")
      ax.set_xlabel("GD step")
      ax.grid(alpha=0.3)
    row[0].legend(fontsize=7)
  curves = os.path.join(workdir, "curves.png")
  plots.save_figure(fig, curves)

  fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3), squeeze=False)
  for ax, (task, res) in zip(axes[0], tasks.items(), strict=True):
    for model, rec in res["models"].items():
      rates = [s["learning_rate"] for s in rec["sweep"]]
      gaps = [s["final_gap"] if np.isfinite(s["final_gap"]) else np.nan for s in rec["sweep"]]
      ax.plot(rates, np.maximum(np.asarray(gaps, float), 1e-9), "o-", label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_title(f"{task}: final (J − J*)/J*", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  sweep_path = os.path.join(workdir, "lr_sweep.png")
  plots.save_figure(fig, sweep_path)
  return [curves, sweep_path]


def main(argv):
  del argv
  workdir = common.require_workdir()
  rates = _parse_rates(_LRS.value)
  results = run(tasks=_TASKS.value, steps=_STEPS.value, rates=rates, l2=_L2.value,
                num_nodes=_NODES.value, rtol=_RTOL.value)
  results["config"]["seed"] = common.SEED.value  # GD from zero, full batch: deterministic
  figures = plot(results, workdir)
  results["figures"] = [os.path.basename(f) for f in figures]
  common.write_results(workdir, results)
  print(common.format_table(table_rows(results)))
  print(verdict_text(results["verdict"]))


if __name__ == "__main__":
  app.run(main)
