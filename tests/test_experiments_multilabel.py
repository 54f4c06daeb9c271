"""experiments/multilabel.py: runs at tiny size, writes its results, refuses bad flags."""

import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import multilabel as exp
from tests.conftest import run_main

_NEVER = [4, 5, 7, 8, 10, 11, 14, 15]  # tag vectors no digit has (5 ≡ 7 and 6 ≡ 8)


def _main(capsys, **flag_values):
  return run_main(exp, capsys, **flag_values)


def test_runs_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
  workdir = str(tmp_path / "multilabel")
  out = _main(capsys, workdir=workdir, multilabel_steps=150)
  assert "| sigmoid " in out and "| powerset " in out and "F1 has_a_closed_loop" in out
  assert f"never occurring in training: {_NEVER} (8 of 16)" in out
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert os.path.getsize(os.path.join(workdir, "f1.png")) > 1000
  assert results["powerset_never_occurring"] == _NEVER
  assert results["closed_loop_digits"] == [0, 6, 8, 9]
  models = results["models"]
  assert [models[m]["num_params"] for m in exp.MODELS] == [260, 1040, 650]
  for rec in models.values():
    assert set(rec["per_tag_f1"]) == set(results["tags"])
    assert all(0.75 < f <= 1 for f in rec["per_tag_f1"].values())
    s, h = rec["subset_accuracy"], rec["hamming_loss"]
    assert 0.6 < s <= 1
    assert (1 - s) / 4 - 1e-6 <= h <= 1 - s + 1e-6  # each wrong row has 1 to 4 wrong tags
  # A softmax only ever predicts tag vectors it was trained on; the sigmoids need not.
  assert models["powerset"]["test_predictions_never_seen_in_training"] == 0
  assert models["powerset"]["subset_accuracy"] > models["sigmoid"]["subset_accuracy"]
  with pytest.raises(ValueError, match="already holds results.json"):
    _main(capsys, workdir=workdir, multilabel_steps=150)
  assert json.load(open(os.path.join(workdir, "results.json"))) == results


def test_closed_four_merges_four_with_zero():
  results = exp.run(steps=2, learning_rate=0.05, l2=0.0, closed_four=True)
  assert results["tag_table"]["4"] == results["tag_table"]["0"] == [1, 0, 0, 1]
  assert len(results["powerset_present"]) == 7


@pytest.mark.parametrize("flag_values", [
    {"multilabel_steps": 0}, {"multilabel_learning_rate": 0.0},
    {"multilabel_learning_rate": 100.0}, {"multilabel_l2": -1.0},
])
def test_bad_flags_are_refused(flag_values, tmp_path):
  with pytest.raises(flags.IllegalFlagValueError):
    with flagsaver.flagsaver(workdir=str(tmp_path), **flag_values):
      pass
  assert not os.listdir(tmp_path)
