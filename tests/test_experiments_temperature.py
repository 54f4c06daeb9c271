"""experiments/temperature.py: the sweep, the power identity, the limits, calibration, the script."""

import json
import math

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import temperature as exp_t
from softmax_jax import data
from tests.conftest import run_main


def test_sweep_flattens_and_entropy_rises():
  sweep = exp_t.temperature_sweep([2.0, 1.0, 0.0], [1e-3, 1.0, 1e3])
  np.testing.assert_allclose(sweep["probs"][0], [1, 0, 0], atol=1e-7)
  e = np.exp([2.0, 1.0, 0.0])
  np.testing.assert_allclose(sweep["probs"][1], e / e.sum(), rtol=1e-6)
  np.testing.assert_allclose(sweep["probs"][2], [1 / 3] * 3, atol=2e-3)
  assert sweep["entropy_nats"][0] == pytest.approx(0.0, abs=1e-6)
  assert sweep["entropy_bits"][2] == pytest.approx(math.log2(3), abs=1e-5)
  np.testing.assert_allclose(sweep["entropy_bits"], sweep["entropy_nats"] / math.log(2), rtol=1e-6)
  assert sweep["entropy_monotone"]
  # Decreasing temperatures make it fall: the check can fail.
  assert not exp_t.temperature_sweep([2.0, 1.0, 0.0], [1e3, 1.0, 1e-3])["entropy_monotone"]


def test_power_identity_and_limits_pass():
  rows = exp_t.power_identity([1.0, -2.0, 0.5])
  assert {(r["alpha"], r["T/alpha"]) for r in rows if r["T"] == 1.0} >= {(0.5, 2.0), (2.0, 0.5)}
  assert all(r["pass"] and r["max_abs_diff"] <= 1e-6 for r in rows)
  limits = exp_t.temperature_limits([2.0, 1.0, 0.0])
  assert all(r["pass"] for r in limits), [r for r in limits if not r["pass"]]
  assert {r["logits"] for r in limits} == {"given", "tied max"}
  # The tied maxima share the mass at T -> 0 (within the rounding slack).
  tied = [r for r in limits if r["logits"] == "tied max" and r["T"] == 1e-2]
  assert tied[0]["max_abs_err"] <= 1e-6


def test_calibrate_keeps_accuracy_and_lowers_validation_nll():
  toy = data.load("toy", num_train=240, num_test=90, noise=0.4)
  m = exp_t.calibrate(toy, C=1e3, val_fraction=0.25, num_bins=10, seed=0)
  assert m["n_fit"] + m["n_val"] == 240 and m["n_test"] == 90
  assert 0.01 <= m["fit"]["temperature"] <= 100 and m["fit"]["converged"]
  for split in ("val", "test"):
    assert m[split]["after"]["accuracy"] == m[split]["before"]["accuracy"]
  # T* minimises the validation NLL, so it can only go down there.
  assert m["val"]["after"]["nll"] <= m["val"]["before"]["nll"] + 1e-6
  assert 0 <= m["test"]["after"]["ece"] <= 1
  assert m["test_bins"]["after"]["count"].sum() == 90


def _main(capsys, **kwargs):
  return run_main(exp_t, capsys, dataset="toy", temperature_C=["1e3"], **kwargs)


def test_main_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
  workdir = tmp_path / "run"
  out = _main(capsys, workdir=str(workdir))
  results = json.loads((workdir / "results.json").read_text())
  assert results["all_checks_pass"]
  (m,) = results["calibration"]
  assert m["C"] == 1e3 and m["test"]["before"]["accuracy"] == m["test"]["after"]["accuracy"]
  assert m["val"]["after"]["nll"] <= m["val"]["before"]["nll"] + 1e-6
  assert len(results["sweep"]["temperatures"]) == len(results["sweep"]["entropy_bits"]) == 81
  for name in ("softmax_temperature.png", "reliability.png"):
    assert (workdir / name).stat().st_size > 10_000
  assert "Temperature scaling" in out and "| T " in out and "T->0" in out
  before = (workdir / "results.json").read_text()
  with pytest.raises(ValueError, match="already holds results.json"):
    _main(capsys, workdir=str(workdir))
  assert (workdir / "results.json").read_text() == before
  _main(capsys, workdir=str(workdir), overwrite=True)  # --overwrite replaces it


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature_C": ["-1"]}, "--temperature_C must be finite numbers > 0"),
    ({"temperature_C": ["x"]}, "--temperature_C must be a comma-separated list of numbers"),
    ({"temperature_val_fraction": 1.0}, "--temperature_val_fraction must be in"),
    ({"temperature_logits": ["1"]}, "--temperature_logits must be at least 2 finite numbers"),
    ({"temperature_logits": ["1", "inf"]}, "--temperature_logits must be at least 2 finite")])
def test_bad_flags_raise_before_work(tmp_path, capsys, kwargs, match):
  workdir = tmp_path / "bad"
  with flagsaver.flagsaver(workdir=str(workdir), **kwargs):
    exp_t.FLAGS.mark_as_parsed()
    with pytest.raises(ValueError, match=match):
      exp_t.main(["temperature"])
  assert not (workdir / "results.json").exists()
  assert capsys.readouterr().out == ""


def test_num_bins_bounds():
  with pytest.raises(flags.IllegalFlagValueError, match="temperature_num_bins"):
    with flagsaver.flagsaver(temperature_num_bins=0):
      pass
