"""The shared experiment plumbing: workdir refusal, atomic results.json, Markdown tables."""

import json

import numpy as np
import pytest
from absl.testing import flagsaver

from experiments import common


@pytest.fixture(autouse=True)
def _parsed():
  common.flags.FLAGS.mark_as_parsed()


def test_require_workdir_refuses_unset_and_existing_results(tmp_path):
  with flagsaver.flagsaver(workdir=None), pytest.raises(ValueError, match="--workdir is required"):
    common.require_workdir()
  workdir = str(tmp_path / "run")
  with flagsaver.flagsaver(workdir=workdir):
    assert common.require_workdir() == workdir
    common.write_results(workdir, {"a": 1})
    with pytest.raises(ValueError, match="already holds results.json.*--overwrite"):
      common.require_workdir()
    assert json.load(open(tmp_path / "run" / "results.json")) == {"a": 1}  # not lost
  with flagsaver.flagsaver(workdir=workdir, overwrite=True):
    assert common.require_workdir() == workdir


def test_require_workdir_refuses_a_file(tmp_path):
  path = tmp_path / "f"
  path.write_text("x")
  with flagsaver.flagsaver(workdir=str(path)), pytest.raises(ValueError, match="not a directory"):
    common.require_workdir()


def test_write_results_converts_arrays_and_non_finite(tmp_path):
  path = common.write_results(str(tmp_path), {"x": np.arange(3), "y": np.float32(0.5),
                                              "z": float("inf"), 1: (1.0, float("nan"))})
  assert json.load(open(path)) == {"x": [0, 1, 2], "y": 0.5, "z": "inf", "1": [1.0, "nan"]}


def test_format_table():
  table = common.format_table([{"T": 0.5, "name": "a"}, {"T": 2.0, "name": "bb"}])
  assert table.splitlines() == ["| T   | name |", "| --- | ---- |", "| 0.5 | a    |",
                                "| 2   | bb   |"]
  assert common.format_table([]) == ""
