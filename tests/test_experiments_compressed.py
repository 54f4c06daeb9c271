"""experiments/compressed.py: the synthetic data, the batches, the formulas and the script."""

import json

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import compressed
from softmax_jax import layers
from tests.conftest import run_main


def test_fashion_synthetic_shape_range_and_seed():
  ds = compressed.fashion_synthetic(num_train=120, num_test=30, seed=3)
  assert ds.x_train.shape == (120, 784) and ds.x_test.shape == (30, 784)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_features == 784 and ds.num_classes == 10 and ds.image_shape == (28, 28)
  assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
  assert set(np.unique(ds.y_train)) <= set(range(10)) and len(np.unique(ds.y_train)) >= 8
  again = compressed.fashion_synthetic(num_train=120, num_test=30, seed=3)
  np.testing.assert_array_equal(ds.x_train, again.x_train)
  other = compressed.fashion_synthetic(num_train=120, num_test=30, seed=4)
  assert not np.array_equal(ds.x_train, other.x_train)


def test_batches_cover_every_example():
  x = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  y = np.arange(10, dtype=np.int32)
  xb, yb = compressed._batches(x, y, 4, seed=0)
  assert xb.shape == (3, 4, 3) and yb.shape == (3, 4)
  assert set(yb.ravel()) == set(range(10))  # 12 slots: all 10 examples, 2 of them twice
  np.testing.assert_array_equal(xb[..., 0], yb)  # rows stay with their labels


def test_at_scale_formulas():
  rows = {r["label"]: r for r in compressed.at_scale(64, 64, ranks=(8,), ns=(4,))}
  assert rows["dense"]["params"] == 64 * 64 + 64 and rows["dense"]["flops_vs_dense"] == 1
  assert rows["low_rank (rank=8)"]["params"] == 8 * 128 + 64
  assert rows["phm (n=4)"]["params"] == 64 + 64 * 64 // 4 + 64
  assert rows["fastfood"]["params"] == 2 * 64 + 2 * 64
  assert rows["fastfood"]["flops"] == 2 * 64 * 6 + 2 * 64 + 2 * 64


def test_run_rejects_bad_arguments_before_training():
  with pytest.raises(ValueError, match=r"rank 11 exceeds min\(d, q\) = 10 of fashion_synthetic"):
    compressed.run(datasets=["fashion_synthetic"], ranks=[11], train_size=200, test_size=100)
  with pytest.raises(ValueError, match=r"--compressed_batch_size=128 exceeds the 100 training"):
    compressed.run(datasets=["fashion_synthetic"], train_size=100, test_size=100, batch_size=128)
  with pytest.raises(ValueError, match=r"unknown or no layers \['conv'\]"):
    compressed.run(layer_names=["conv"])
  with pytest.raises(ValueError, match=r"unknown or no datasets \[\]"):
    compressed.run(datasets=[])


SMALL = {"compressed_steps": 40, "compressed_batch_size": 32, "compressed_learning_rate": 0.05,
         "compressed_train_size": 200, "compressed_test_size": 100}


def _main(capsys, **kwargs):
  return run_main(compressed, capsys, **{**SMALL, **kwargs})


def test_main_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
  workdir = tmp_path / "run"
  out = _main(capsys, workdir=str(workdir), compressed_datasets=["fashion_synthetic"],
              compressed_ranks=["2"], compressed_phm_ns=["4"])
  results = json.loads((workdir / "results.json").read_text())
  rows = {r["label"]: r for r in results["rows"]}
  assert list(rows) == ["dense", "low_rank (rank=2)", "phm (n=4)", "fastfood"]
  for r in rows.values():
    assert r["dataset"] == "fashion_synthetic"
    assert r["params"] == r["params_formula"] > 0
    assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1
    assert r["train_s"] > 0 and r["compile_s"] > 0 and np.isfinite(r["final_loss"])
  assert rows["dense"]["params"] == 7850 and rows["dense"]["flops"] == 15690
  assert (rows["phm (n=4)"]["d"], rows["phm (n=4)"]["q"]) == (784, 12)  # q padded to 12
  assert rows["phm (n=4)"]["params"] == 64 + 784 * 12 // 4 + 12
  assert rows["fastfood"]["params"] == 2 * 1024 + 20
  assert rows["low_rank (rank=2)"]["params_vs_dense"] == pytest.approx(1598 / 7850)
  # 40 adam steps on 200 examples: the dense layer learns (chance is 0.1).
  assert rows["dense"]["train_accuracy"] > 0.5 and rows["dense"]["test_accuracy"] > 0.2
  assert results["config"]["sizes"]["fashion_synthetic"] == {"train": 200, "test": 100,
                                                            "d": 784, "q": 10}
  assert len(results["at_scale"]) == 6
  assert (workdir / compressed.FIGURE).stat().st_size > 10_000
  assert "| fashion_synthetic | dense" in out and "phm (n=4)" in out and "d = q = 4096" in out

  before = (workdir / "results.json").read_text()
  with pytest.raises(ValueError, match="already holds results.json"):
    _main(capsys, workdir=str(workdir))
  assert (workdir / "results.json").read_text() == before


def test_main_on_digits_pads_d_for_phm(tmp_path, capsys):
  workdir = tmp_path / "digits"
  _main(capsys, workdir=str(workdir), compressed_datasets=["digits"],
        compressed_layers=["dense", "phm"], compressed_phm_ns=["5"])
  rows = json.loads((workdir / "results.json").read_text())["rows"]
  dense, phm = rows
  assert (phm["d"], phm["q"]) == (65, 10)  # 64 features padded to 65
  assert phm["params"] == phm["params_formula"] == 125 + 65 * 10 // 5 + 10
  assert dense["test_accuracy"] > 0.6  # 40 adam steps on the real digits
  assert (workdir / compressed.FIGURE).stat().st_size > 10_000


@pytest.mark.parametrize("kwargs,match", [
    ({"compressed_ranks": ["0"]}, "compressed_ranks"),
    ({"compressed_ranks": ["11"]}, "compressed_ranks"),
    ({"compressed_ranks": ["x"]}, "compressed_ranks"),
    ({"compressed_phm_ns": ["1"]}, "compressed_phm_ns"),
    ({"compressed_layers": []}, "compressed_layers"),
    ({"compressed_datasets": []}, "compressed_datasets"),
    ({"compressed_learning_rate": 0.0}, "compressed_learning_rate"),
    ({"compressed_learning_rate": 11.0}, "compressed_learning_rate"),
    ({"compressed_steps": 0}, "compressed_steps"),
    ({"compressed_batch_size": 2000}, "compressed_batch_size"),
    ({"compressed_train_size": 50}, "compressed_train_size"),
    ({"compressed_test_size": 10**5}, "compressed_test_size"),
    ({"compressed_batch_size": 200, "compressed_train_size": 100}, "compressed_batch_size"),
])
def test_bad_flags_are_refused(kwargs, match):
  with pytest.raises(flags.IllegalFlagValueError, match=match):
    with flagsaver.flagsaver(**kwargs):
      pass


def test_bad_layer_name_raises_before_work(tmp_path, capsys):
  # A multi_enum assigned directly (not parsed) escapes absl's check; run() catches it.
  workdir = tmp_path / "bad"
  with pytest.raises(ValueError, match=r"unknown or no layers \['conv'\]"):
    _main(capsys, workdir=str(workdir), compressed_layers=["conv"])
  assert not (workdir / "results.json").exists()


def test_layers_registry_is_the_flag_enum():
  assert compressed._LAYERS.default == list(layers.LAYERS)
