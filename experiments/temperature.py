r"""Temperature: the Gibbs/Boltzmann reading of the softmax, exercise 7, and calibration (§4.1.5).

Four checks of the text's claims about ``softmax(o / T)``:

1. Sweep ``T`` over fixed logits: the probabilities flatten and the entropy rises with ``T``.
2. ``Q ∝ P^α`` is the softmax at ``T / α`` (exercise 7): ``α = 1/2`` doubles ``T``, ``α = 2``
   halves it.
3. ``T → 0`` gives the one-hot of the argmax (tied maxima share the mass); ``T → ∞`` the uniform
   distribution, within the bounds ``(C−1)·e^{−Δ/T}`` and ``(e^{R/T} − 1)/C`` (``Δ`` the gap to
   the runner-up, ``R`` the range of the logits) plus the float32 rounding of ``o/T``.
4. Temperature scaling (Guo et al., 2017) on digits: softmax regression fitted exactly
   (:func:`softmax_jax.solve.fit_exact`, L2 ``λ = 1/(C·n)``) on 80% of the training split, ``T``
   fitted by maximum likelihood on the stratified other 20%
   (:func:`softmax_jax.temperature.fit_temperature`), evaluated on the test split.

Command:

  python -m experiments.temperature --workdir=/tmp/sj_temperature

Expected (seed 0; about 30 s on 2 CPU cores): the entropy rises monotonically from 0 to
log2 5 = 2.32 bits; every identity and limit check passes (largest power-identity error 4.5e-8;
tied maxima at ``T = 1e-3`` exactly 1/2 each; see :func:`temperature_limits` for the bounds
and their rounding slack). Calibration, 1,151 fit / 287 validation / 359 test digits:

  | C   | T*    | test NLL before → after | test accuracy   | test ECE before → after |
  | 1   | 0.485 | 0.210 → 0.180           | 0.944 (same)    | 0.067 → 0.024           |
  | 1e4 | 2.22  | 0.269 → 0.168           | 0.947 (same)    | 0.043 → 0.031           |

The sklearn-default ``C = 1`` is *under*-confident (``T* < 1`` sharpens it); the nearly
unregularised ``C = 1e4`` is over-confident (``T* > 1`` softens it). Either way one scalar fitted
on 287 examples cuts the test NLL and the ECE and leaves the accuracy exactly as it was. (The
ECE of 359 test examples in 15 bins is itself noisy: most bins hold a handful of examples.)
Writes ``results.json``, ``softmax_temperature.png`` (probabilities and entropy against ``T``)
and ``reliability.png`` (test reliability diagrams before and after, with each bin's count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

import softmax_jax as sj
from experiments import common
from softmax_jax import calibration
from softmax_jax import data as sj_data
from softmax_jax import plots
from softmax_jax import temperature as tm

_C = flags.DEFINE_list("temperature_C", ["1", "1e4"], "Inverse L2 strengths C (scikit-learn's, "
                       "l2 = 1/(C·n)) of the softmax regressions to calibrate; each > 0.")
_VAL_FRACTION = flags.DEFINE_float("temperature_val_fraction", 0.2, "Share of each class of the "
                                   "training split held out to fit T; in (0, 1).")
_NUM_BINS = flags.DEFINE_integer("temperature_num_bins", 15, "Confidence bins of the ECE and the "
                                 "reliability diagram.", lower_bound=1, upper_bound=1000)
_LOGITS = flags.DEFINE_list("temperature_logits", ["2", "1", "0.5", "0.5", "-1"],
                            "The fixed logits of the temperature sweep (at least 2, finite).")
FLAGS = flags.FLAGS

SWEEP_TEMPERATURES = np.logspace(-2, 2, 81)
TABLE_TEMPERATURES = (0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0)
POWERS = (0.5, 2.0, 0.1, 3.7)
POWER_BASE_TEMPERATURES = (0.5, 1.0, 3.0)
POWER_TOL = 1e-6  # float32: a few ulps of the probabilities
EPS32 = float(np.finfo(np.float32).eps)


def _floats(values: Sequence[str], name: str) -> list[float]:
  try:
    return [float(s) for s in values]
  except ValueError:
    raise ValueError(f"--{name} must be a comma-separated list of numbers; got "
                     f"{','.join(values)!r}.") from None


def check_flags() -> dict[str, Any]:
  """The flags' values, each checked before any work (``ValueError`` names flag and value)."""
  cs = _floats(_C.value, "temperature_C")
  if not cs or not all(math.isfinite(c) and c > 0 for c in cs):
    raise ValueError(f"--temperature_C must be finite numbers > 0; got {_C.value}.")
  if not 0 < _VAL_FRACTION.value < 1:
    raise ValueError(f"--temperature_val_fraction must be in (0, 1); got {_VAL_FRACTION.value}.")
  logits = _floats(_LOGITS.value, "temperature_logits")
  if len(logits) < 2 or not all(math.isfinite(o) for o in logits):
    raise ValueError(f"--temperature_logits must be at least 2 finite numbers; got "
                     f"{_LOGITS.value}.")
  return {"C_values": cs, "val_fraction": _VAL_FRACTION.value, "num_bins": _NUM_BINS.value,
          "logits": logits}


# --- 1. The sweep -------------------------------------------------------------------------------


def temperature_sweep(logits: Sequence[float], temperatures: Sequence[float]) -> dict[str, Any]:
  """Softmax probabilities and entropy (nats, bits) of fixed ``logits`` at each temperature."""
  o = jnp.asarray(logits, jnp.float32)
  probs = np.stack([np.asarray(sj.softmax(o, temperature=float(t))) for t in temperatures])
  h_nats = np.asarray(sj.info.entropy(jnp.asarray(probs)))
  h_bits = np.asarray(sj.info.entropy(jnp.asarray(probs), base=2))
  return {"logits": list(logits), "temperatures": np.asarray(temperatures), "probs": probs,
          "entropy_nats": h_nats, "entropy_bits": h_bits,
          "entropy_max_bits": math.log2(len(logits)),
          # Rounding may make neighbouring entropies equal; it must never make them fall by more.
          "entropy_monotone": bool(np.all(np.diff(h_nats) >= -4 * EPS32 * math.log(len(logits))))}


# --- 2. Q ∝ P^α is a change of temperature ------------------------------------------------------


def power_identity(logits: Sequence[float], *, powers: Sequence[float] = POWERS,
                   temperatures: Sequence[float] = POWER_BASE_TEMPERATURES,
                   tol: float = POWER_TOL) -> list[dict[str, Any]]:
  """``max |normalise(softmax(o/T)^α) − softmax(o/(T/α))|`` for each ``α`` and ``T``."""
  o = jnp.asarray(logits, jnp.float32)
  rows = []
  for t in temperatures:
    p = sj.softmax(o, temperature=t)
    for alpha in powers:
      new_t = tm.power_to_temperature(alpha, temperature=t)
      err = float(jnp.max(jnp.abs(tm.power_distribution(p, alpha=alpha) -
                                  sj.softmax(o, temperature=new_t))))
      rows.append({"T": t, "alpha": alpha, "T/alpha": new_t, "max_abs_diff": err, "tol": tol,
                   "pass": err <= tol})
  return rows


# --- 3. The limits T → 0 and T → ∞ --------------------------------------------------------------


def _rounding_slack(scale: float, t: float) -> float:
  """float32 rounding of ``o/T`` (``|o| <= scale``) moves a probability by at most this."""
  return 2 * EPS32 * scale / t + 4 * EPS32


def temperature_limits(logits: Sequence[float]) -> list[dict[str, Any]]:
  """Distance of ``softmax(o/T)`` from its limits, against the analytic bounds.

  ``T → 0``: the limit puts ``1/k`` on each of the ``k`` tied maxima; the rest of the mass is at
  most ``(C − 1)·e^{−Δ/T}``, ``Δ`` the gap from the maxima to the next logit. ``T → ∞``: every
  ratio ``p_i/p_j = e^{(o_i − o_j)/T}`` lies in ``[e^{−R/T}, e^{R/T}]``, so
  ``|p_i − 1/C| <= (e^{R/T} − 1)/C``.

  Rounding: ``o/T`` is rounded to float32, an error of up to ``δ = eps·max|o|/T`` in each scaled
  logit, which moves each probability by up to ``2δ`` (relative to 1); so each bound gets
  ``2·eps·max|o|/T + 4·eps`` of slack. ``sj.softmax`` divides ``o − max o`` by ``T``, so tied
  maxima stay exactly tied (0.5 and 0.5 at ``T = 1e-3``; dividing first once gave 0.49998 and
  0.50002, as XLA rounded ``o/T`` differently in the max and in the exponent).
  """
  rows = []
  cases = {"given": np.asarray(logits, np.float64),
           "tied max": np.asarray([3.0, 3.0, 1.0, 0.0, -2.0])}
  for name, o in cases.items():
    c = o.size
    top = o == o.max()
    k = int(top.sum())
    gap = float(o.max() - o[~top].max()) if k < c else math.inf
    spread = float(o.max() - o.min())
    target0 = np.where(top, 1.0 / k, 0.0)
    scale = float(np.abs(o).max())
    for t in (1e-1, 1e-2, 1e-3):
      p = np.asarray(sj.softmax(jnp.asarray(o, jnp.float32), temperature=t), np.float64)
      err = float(np.max(np.abs(p - target0)))
      bound = (c - 1) * math.exp(-gap / t) + _rounding_slack(scale, t)
      rows.append({"logits": name, "limit": "T->0 (argmax, ties split)", "T": t,
                   "max_abs_err": err, "bound": bound, "pass": err <= bound})
    for t in (1e2, 1e4, 1e6):
      p = np.asarray(sj.softmax(jnp.asarray(o, jnp.float32), temperature=t), np.float64)
      err = float(np.max(np.abs(p - 1.0 / c)))
      bound = math.expm1(spread / t) / c + _rounding_slack(scale, t)
      rows.append({"logits": name, "limit": "T->inf (uniform)", "T": t, "max_abs_err": err,
                   "bound": bound, "pass": err <= bound})
  return rows


# --- 4. Temperature scaling on a data set -------------------------------------------------------


def _metrics(logits: np.ndarray, labels: np.ndarray, temperature: float,
             num_bins: int) -> dict[str, float]:
  o = jnp.asarray(logits, jnp.float32)
  probs = sj.softmax(o, temperature=temperature)
  return {"nll": float(tm.temperature_nll(o, labels, temperature=temperature)),
          "accuracy": float(np.mean(np.argmax(np.asarray(probs), 1) == labels)),
          "ece": calibration.expected_calibration_error(probs, labels, num_bins=num_bins)}


def calibrate(dataset: sj_data.Dataset, *, C: float, val_fraction: float, num_bins: int,
              seed: int) -> dict[str, Any]:
  """Fits softmax regression on part of the training split and its temperature on the rest.

  Returns:
    ``C``, ``n_fit``/``n_val``/``n_test``, the fit (``temperature``, ``iterations``,
    ``converged``, ``at_bound``), ``val``/``test`` metrics ``before`` and ``after``
    (``nll``, ``accuracy``, ``ece``), and the test reliability bins before and after.
  """
  fit_idx, val_idx = sj_data.stratified_split(dataset.y_train, test_fraction=val_fraction,
                                              seed=seed)
  x_fit, y_fit = dataset.x_train[fit_idx], dataset.y_train[fit_idx]
  x_val, y_val = dataset.x_train[val_idx], dataset.y_train[val_idx]
  params, info = sj.solve.fit_exact(x_fit, y_fit, l2=1.0 / (C * len(y_fit)),
                                    num_classes=dataset.num_classes)

  def logits_of(x):
    return np.asarray(x, np.float64) @ params.W + params.b

  o_val, o_test = logits_of(x_val), logits_of(dataset.x_test)
  fit = tm.fit_temperature(o_val, y_val)
  t_star = fit.temperature
  result = {"C": C, "n_fit": len(y_fit), "n_val": len(y_val), "n_test": len(dataset.y_test),
            "solver_converged": info.converged, "max_abs_weight": float(np.abs(params.W).max()),
            "fit": fit._asdict()}
  for split, o, y in (("val", o_val, y_val), ("test", o_test, dataset.y_test)):
    result[split] = {"before": _metrics(o, y, 1.0, num_bins),
                     "after": _metrics(o, y, t_star, num_bins)}
  o32 = jnp.asarray(o_test, jnp.float32)
  result["test_bins"] = {
      name: calibration.reliability_bins(sj.softmax(o32, temperature=t), dataset.y_test,
                                         num_bins=num_bins)
      for name, t in (("before", 1.0), ("after", t_star))}
  return result


# --- Figures ------------------------------------------------------------------------------------


def plot_sweep(sweep: dict[str, Any], path: str) -> None:
  """Probabilities and entropy against ``T`` (log x-axis)."""
  from matplotlib import pyplot as plt

  fig, (ax_p, ax_h) = plt.subplots(1, 2, figsize=(9, 3.4))
  t = sweep["temperatures"]
  for i, o in enumerate(sweep["logits"]):
    ax_p.plot(t, sweep["probs"][:, i], label=f"o = {o:g}")
  ax_p.axhline(1 / len(sweep["logits"]), color="gray", ls=":", lw=1, label="uniform 1/C")
  ax_p.set(xscale="log", xlabel="temperature T", ylabel="softmax(o / T)",
           title="probabilities flatten as T grows")
  ax_p.legend(fontsize=7)
  ax_h.plot(t, sweep["entropy_bits"], color="C3")
  ax_h.axhline(sweep["entropy_max_bits"], color="gray", ls=":", lw=1,
               label=f"log2 C = {sweep['entropy_max_bits']:.3f}")
  ax_h.set(xscale="log", xlabel="temperature T", ylabel="entropy (bits)",
           title="entropy rises with T")
  ax_h.legend(fontsize=7)
  for ax in (ax_p, ax_h):
    ax.grid(alpha=0.3)
  plots.save_figure(fig, path)


def plot_reliability(models: Sequence[dict[str, Any]], path: str) -> None:
  """Reliability diagrams of the test split, one row per model, before and after scaling."""
  from matplotlib import pyplot as plt

  fig, axes = plt.subplots(len(models), 2, figsize=(8, 3.6 * len(models)), squeeze=False)
  for row, m in zip(axes, models, strict=True):
    for ax, when in zip(row, ("before", "after"), strict=True):
      bins = m["test_bins"][when]
      edges = bins["edges"]
      centers = (edges[:-1] + edges[1:]) / 2
      filled = bins["count"] > 0
      ax.bar(centers[filled], bins["accuracy"][filled], width=np.diff(edges)[filled],
             edgecolor="k", alpha=0.7, label="accuracy")
      ax.plot(bins["confidence"][filled], bins["accuracy"][filled], "o", ms=3, color="C3",
              label="(confidence, accuracy)")
      ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
      for x, n in zip(centers[filled], bins["count"][filled], strict=True):
        ax.text(x, 0.01, f"{int(n)}", ha="center", va="bottom", fontsize=6)
      t = 1.0 if when == "before" else m["fit"]["temperature"]
      ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
             title=f"C={m['C']:g}, T={t:.3g}: ECE {m['test'][when]['ece']:.3f}")
      ax.legend(fontsize=7, loc="upper left")
  plots.save_figure(fig, path)


# --- The experiment -----------------------------------------------------------------------------


def run(dataset: sj_data.Dataset, *, C_values: Sequence[float], val_fraction: float,
        num_bins: int, logits: Sequence[float], seed: int, workdir: str) -> dict[str, Any]:
  """Runs the four checks, writes the figures to ``workdir``, and returns the results."""
  sweep = temperature_sweep(logits, SWEEP_TEMPERATURES)
  identity = power_identity(logits)
  limits = temperature_limits(logits)
  models = [calibrate(dataset, C=c, val_fraction=val_fraction, num_bins=num_bins, seed=seed)
            for c in C_values]
  plot_sweep(sweep, f"{workdir}/softmax_temperature.png")
  plot_reliability(models, f"{workdir}/reliability.png")
  return {"sweep": sweep, "power_identity": identity, "limits": limits, "calibration": models,
          "all_checks_pass": bool(sweep["entropy_monotone"] and all(r["pass"] for r in identity)
                                  and all(r["pass"] for r in limits)),
          "config": {"C_values": list(C_values), "val_fraction": val_fraction,
                     "num_bins": num_bins, "seed": seed}}


def tables(results: dict[str, Any]) -> str:
  """The Markdown tables the experiment prints."""
  sweep = results["sweep"]
  rows = []
  for t in TABLE_TEMPERATURES:
    i = int(np.argmin(np.abs(np.log(sweep["temperatures"]) - math.log(t))))
    rows.append({"T": float(sweep["temperatures"][i]), "p_max": float(sweep["probs"][i].max()),
                 "H (nats)": float(sweep["entropy_nats"][i]) + 0.0,  # no "-0"
                 "H (bits)": float(sweep["entropy_bits"][i]) + 0.0})
  out = [f"Softmax of logits {sweep['logits']} (entropy monotone in T: "
         f"{sweep['entropy_monotone']}):", common.format_table(rows), ""]
  worst = max(results["power_identity"], key=lambda r: r["max_abs_diff"])
  out += ["Q ∝ P^α == softmax(o / (T/α)) (α = 1/2 doubles T, α = 2 halves it):",
          common.format_table([r for r in results["power_identity"] if r["T"] == 1.0]),
          f"worst over all T: {worst['max_abs_diff']:.3g} (tol {POWER_TOL:g})", ""]
  out += ["Limits:", common.format_table(results["limits"], floatfmt=".3g"), ""]
  cal = []
  for m in results["calibration"]:
    cal.append({"C": m["C"], "T*": m["fit"]["temperature"],
                "val NLL": f"{m['val']['before']['nll']:.4f} -> {m['val']['after']['nll']:.4f}",
                "test NLL": f"{m['test']['before']['nll']:.4f} -> {m['test']['after']['nll']:.4f}",
                "test acc": f"{m['test']['before']['accuracy']:.4f} -> "
                            f"{m['test']['after']['accuracy']:.4f}",
                "test ECE": f"{m['test']['before']['ece']:.4f} -> {m['test']['after']['ece']:.4f}"})
  m0 = results["calibration"][0]
  out += [f"Temperature scaling ({m0['n_fit']} fit / {m0['n_val']} validation / {m0['n_test']} "
          f"test):", common.format_table(cal)]
  return "\n".join(out)


def main(argv):
  del argv
  workdir = common.require_workdir()
  config = check_flags()
  dataset = common.load_dataset()
  results = run(dataset, seed=common.SEED.value, workdir=workdir, **config)
  results["config"]["dataset"] = common.DATASET.value
  common.write_results(workdir, results)
  print(tables(results))


if __name__ == "__main__":
  app.run(main)
