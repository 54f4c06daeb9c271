"""experiments/probit_vs_softmax.py: runs at tiny size, writes its results, refuses bad flags."""

import json
import math
import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from sklearn.linear_model import LogisticRegression

from experiments import probit_vs_softmax as exp
from tests.conftest import run_main

_TINY = {"probit_tasks": ["toy_cat_vs_dog", "toy"], "probit_steps": 60,
         "probit_learning_rates": ["0.5", "4", "1000"]}


def _main(capsys, **flag_values):
  return run_main(exp, capsys, **flag_values)


def test_runs_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
  workdir = str(tmp_path / "probit")
  out = _main(capsys, workdir=workdir, **_TINY)
  assert "| toy_cat_vs_dog | logistic" in out and "| toy            | regression" in out
  assert "'probit does not work as well as softmax'" in out
  results = json.load(open(os.path.join(workdir, "results.json")))
  for name in ("curves.png", "lr_sweep.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000
  assert set(results["tasks"]) == {"toy_cat_vs_dog", "toy"}
  binary = results["tasks"]["toy_cat_vs_dog"]["models"]
  multi = results["tasks"]["toy"]["models"]
  assert set(binary) == {"logistic", "probit", "probit_l2x2.9"}
  assert set(multi) == {"softmax", "probit", "regression"}
  for rec in [*binary.values(), *multi.values()]:
    test = rec["optimum"]["test"]
    assert 0.9 <= test["accuracy"] <= 1 and 0 < test["nll"] < 1 and 0 <= test["ece"] < 0.5
    assert rec["learning_rate"] in (0.5, 4.0)  # 1000 diverges for every model
    assert len(rec["curve_loss"]) == len(rec["curve_grad_norm"]) == 60
    assert rec["final_gap"] >= -1e-6 and rec["ms_per_step"] > 0
    assert rec["sweep"][2]["final_objective"] in ("nan", "inf") or \
        rec["sweep"][2]["final_objective"] > rec["sweep"][0]["final_objective"]
  for rec in binary.values():
    opt = rec["optimum"]
    assert opt["grad_max"] < 1e-9 and opt["condition_number"] > 1
    assert opt["hessian_min"] > 0  # convex, strictly (the L2 term)
  assert binary["probit"]["optimum"]["objective"] < binary["logistic"]["optimum"]["objective"]
  verdict = results["verdict"]
  assert verdict["num_tasks"] == 2 and isinstance(verdict["claim_worse_supported"], bool)
  assert set(verdict["per_task"]) == {"toy_cat_vs_dog", "toy"}
  # Timed, so only recorded (speed is for benchmarks, never for tests: on a GPU both are
  # launch-bound and the ratio is about 1).
  assert verdict["per_task"]["toy"]["ms_per_step_ratio"] > 0
  kappa = verdict["per_task"]["toy_cat_vs_dog"]["kappa_ratio_matched_l2"]
  assert 0.5 < kappa < 2 and kappa == pytest.approx(
      binary["probit_l2x2.9"]["optimum"]["condition_number"] /
      binary["logistic"]["optimum"]["condition_number"])
  with pytest.raises(ValueError, match="already holds results.json"):
    _main(capsys, workdir=workdir, **_TINY)
  assert json.load(open(os.path.join(workdir, "results.json"))) == results


@pytest.mark.parametrize("flag_values", [
    {"probit_steps": 0}, {"probit_l2": -1.0}, {"probit_nodes": 0}, {"probit_nodes": 101},
    {"probit_rtol": 0.0}, {"probit_learning_rates": ["0.1", "-2"]},
    {"probit_learning_rates": ["abc"]}, {"probit_tasks": ["mnist"]}, {"probit_tasks": []},
])
def test_bad_flags_are_refused(flag_values, tmp_path):
  with pytest.raises(flags.IllegalFlagValueError):
    with flagsaver.flagsaver(workdir=str(tmp_path), **flag_values):
      pass
  assert not os.listdir(tmp_path)


def test_exact_optimum_matches_sklearn():
  data = exp.task_data("toy_cat_vs_dog")
  x, y = data["train"]
  l2 = 1e-2
  opt = exp.exact_optimum("logistic", x, y, l2=l2)
  ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-12, max_iter=10_000).fit(
      x.astype(np.float64), y)
  np.testing.assert_allclose(opt["params"]["w"], ref.coef_[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(opt["params"]["b"], ref.intercept_[0], rtol=1e-4, atol=1e-5)


def test_ridge_optimum_is_the_minimum():
  data = exp.task_data("toy")
  x, y = data["train"]
  opt = exp.ridge_optimum(x, y, 3, l2=1e-2)
  obj = float(exp.objective(opt["params"], x, y, model="regression", l2=1e-2, num_nodes=1))
  assert math.isclose(obj, opt["objective"], rel_tol=1e-5)
  nudged = {"w": opt["params"]["w"] + 1e-2, "b": opt["params"]["b"]}
  assert float(exp.objective(nudged, x, y, model="regression", l2=1e-2, num_nodes=1)) > obj


def test_convergence_helpers():
  hist = np.array([5.0, 2.0, 1.05, 1.0005])
  assert exp._steps_to(hist, 1.0, 1.001) == 3
  assert exp._steps_to(hist, 1.0, 1.0001) == 4  # only the final value reaches it
  assert exp._steps_to(hist, 1.5, 1.0001) is None
  best, steps = exp._choose([0.1, 1, 10], np.array([hist, hist * 0.5, hist]),
                            [1.0, 0.4, np.nan], 0.6)
  assert best == 1 and steps == [None, 2, None]
  with pytest.raises(FloatingPointError, match="diverged"):
    exp._choose([1.0], np.array([hist]), [np.inf], 0.5)
  fast = {"steps_to_converge": 10, "final_gap": 0.0}
  assert exp._slower({"steps_to_converge": 20, "final_gap": 0.0}, fast)
  assert not exp._slower({"steps_to_converge": 12, "final_gap": 0.0}, fast)
  assert exp._slower({"steps_to_converge": None, "final_gap": 0.1}, fast)
  assert exp._slower({"steps_to_converge": None, "final_gap": 0.2},
                     {"steps_to_converge": None, "final_gap": 0.1})
  assert exp._significant(-0.05, 0.9, 400) == -1 and exp._significant(0.01, 0.9, 400) == 0
