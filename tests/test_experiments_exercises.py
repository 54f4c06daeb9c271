"""experiments/exercises.py: each exercise's answer against a hand-derived value, and the script."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import exercises as ex
from tests.conftest import run_main

LOG2 = math.log(2)


# --- 1 ------------------------------------------------------------------------------------------


# The unit tests use the shapes of the script's smoke test below, which then reuses their
# compiled functions (jit caches are per process).


def test_ce_hessian_is_the_softmax_covariance():
  # p = [1/2, 1/2, 0, 0, 0] (to float32): diag(p) − ppᵀ is 1/4·[[1, −1], [−1, 1]] in the corner.
  out = ex.ce_hessian([0.0, 0.0, -200.0, -200.0, -200.0], num_samples=2000,
                      key=jax.random.PRNGKey(0))
  expected = np.zeros((5, 5))
  expected[:2, :2] = [[0.25, -0.25], [-0.25, 0.25]]
  np.testing.assert_allclose(out["closed"], expected, atol=1e-7)
  assert out["autodiff_max_diff"] <= 1e-6
  assert out["mc_tol"] == pytest.approx(2.5 / math.sqrt(2000))
  assert out["mc_max_diff"] <= out["mc_tol"]
  assert out["null_residual"] <= 1e-6 and out["min_eigenvalue"] >= -1e-7
  out = ex.ce_hessian([3.0, -1.0, 0.5, 0.0, 1.0], num_samples=2000, key=jax.random.PRNGKey(1))
  p = out["p"]
  np.testing.assert_allclose(out["closed"], np.diag(p) - np.outer(p, p), atol=1e-7)
  assert out["mc_max_diff"] <= out["mc_tol"]


# --- 2 ------------------------------------------------------------------------------------------


def test_fixed_length_code_rates():
  assert [ex.fixed_length_bits(m) for m in (1, 2, 3, 4, 9, 27, 81, 243)] == [0, 1, 2, 2, 4, 5, 7, 8]
  # ceil(n·log2 3)/n for n = 1..5: 2, 2, 5/3, 7/4, 8/5.
  rates = [ex.fixed_length_bits(3**n) / n for n in range(1, 6)]
  np.testing.assert_allclose(rates, [2, 2, 5 / 3, 7 / 4, 8 / 5])
  assert ex.fixed_length_code(3) == ["00", "01", "10"]  # "11" unused: the waste of exercise 2.1


def test_huffman_code():
  code = ex.huffman_code([1, 1, 1])
  assert sorted(map(len, code)) == [1, 2, 2] and ex.is_prefix_free(code)
  assert ex.kraft_sum(code) == 1.0
  # Dyadic weights give lengths −log2 p exactly.
  assert [len(w) for w in ex.huffman_code([4, 2, 1, 1])] == [1, 2, 3, 3]
  assert ex.huffman_code([5]) == ["0"]
  # M equiprobable outcomes: L + 2(M − 2^L)/M bits; 5/3 for M = 3, 29/9 for M = 9.
  assert ex.huffman_uniform_length(3) == pytest.approx(5 / 3)
  assert ex.huffman_uniform_length(9) == pytest.approx(29 / 9)
  assert ex.huffman_uniform_length(8) == 3.0
  for m in (3, 9, 27, 10, 100):
    code = ex.huffman_code([1] * m)
    assert np.mean([len(w) for w in code]) == pytest.approx(ex.huffman_uniform_length(m))
  with pytest.raises(ValueError, match="weights must be > 0"):
    ex.huffman_code([1, 0])


def test_prefix_free_and_round_trip():
  assert ex.is_prefix_free(["0", "10", "11"])
  assert not ex.is_prefix_free(["0", "01", "11"])
  assert not ex.is_prefix_free(["0", "0"])
  symbols = np.random.default_rng(0).integers(0, 3, 60)
  for code in (ex.huffman_code([1] * 9), ex.fixed_length_code(9)):
    bits = ex.encode_blocks(symbols, 2, code)
    np.testing.assert_array_equal(ex.decode_blocks(bits, 2, code), symbols)
  with pytest.raises(ValueError, match="end inside a codeword"):
    ex.decode_blocks("0", 1, ["00", "01", "10"])
  with pytest.raises(ValueError, match="not a multiple of block=2"):
    ex.encode_blocks(symbols[:5], 2, ex.fixed_length_code(9))


def test_coding_rates_approach_log2_3():
  rows = ex.coding_rates(3, sequence_length=120, seed=0)
  assert [r["fixed_measured_rate"] for r in rows] == [2.0, 2.0, 5 / 3]  # fixed length: exact
  np.testing.assert_allclose([r["huffman_expected_rate"] for r in rows],
                             [5 / 3, 29 / 18, (4 + 2 * (27 - 16) / 27) / 3])
  for r in rows:
    assert r["fixed_decoded_ok"] and r["huffman_decoded_ok"]
    assert r["fixed_prefix_free"] and r["huffman_prefix_free"]
    assert r["huffman_kraft"] == 1.0
    assert abs(r["huffman_measured_rate"] - r["huffman_expected_rate"]) <= r["huffman_rate_tol"]
    assert math.log2(3) <= r["huffman_expected_rate"] <= math.log2(3) + 1 / r["n"]


# --- 3 ------------------------------------------------------------------------------------------


def test_digits_needed():
  assert ex.digits_needed(8, 3) == 2  # 3² = 9 >= 8
  assert ex.digits_needed(8, 2) == 3
  assert [ex.digits_needed(n, 3) for n in (1, 2, 3, 4, 9, 10, 27, 28)] == [0, 1, 1, 2, 2, 3, 3, 4]
  assert ex.digits_needed(2**29, 2) == 29
  # The float formula is one too many at 5³ = 125 (log 125 / log 5 = 3.0000000000000004).
  assert ex.float_formula_failure() == {"N": 125, "base": 5, "digits": 3, "float_formula": 4}
  with pytest.raises(ValueError, match="base >= 2"):
    ex.digits_needed(8, 1)


# --- 4 ------------------------------------------------------------------------------------------


def test_bradley_terry_is_a_two_way_softmax():
  s_i = jnp.array([0.0, 1.0, -2.0, 1e4, 3e38, -3e38])
  s_j = jnp.array([0.0, 0.0, 1.0, -1e4, -3e38, 3e38])
  np.testing.assert_allclose(ex.bt_probability(s_i, s_j),
                             [0.5, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(3)), 1.0, 1.0, 0.0],
                             rtol=1e-6)


def test_fit_choice_model_recovers_scores():
  scores = jnp.array([-1.0, 0.0, 1.5])
  for s0, key in ((None, 0), (-0.5, 1)):
    pairs, choices = ex.simulate_choices(jax.random.PRNGKey(key), scores, 1500, s_neither=s0)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert set(np.unique(choices)) == ({0, 1} if s0 is None else {0, 1, 2})
    fit = ex.fit_choice_model(pairs, choices, 3, neither=s0 is not None)
    truth = ex.centred(np.asarray(scores), s0)
    assert fit["grad_norm"] <= 1e-8
    assert np.all(np.abs(fit["theta"] - truth) <= 4 * fit["se"])
    assert np.all(fit["se"] < 0.2)  # 1500 games pin the scores down to about ±0.1


def test_neither_option_reduces_to_bradley_terry():
  rows = ex.neither_limit(1.0, 0.0, [0.0, -10.0, -math.inf])
  bt = 1 / (1 + math.exp(-1))
  # s_0 = 0: softmax([1, 0, 0])_0 = e/(e + 2).
  assert rows[0]["p_i"] == pytest.approx(math.e / (math.e + 2), rel=1e-6)
  assert rows[0]["bound"] == pytest.approx(1 / (math.e + 1))
  assert rows[-1]["gap"] == 0.0 and rows[-1]["p_neither"] == 0.0
  for r in rows:
    assert r["gap"] <= r["bound"] + 1e-7
    assert r["conditional"] == pytest.approx(bt, rel=1e-6)


# --- 5 ------------------------------------------------------------------------------------------


def test_real_softmax():
  assert float(ex.real_softmax(0.0, 0.0)) == pytest.approx(LOG2, rel=1e-6)
  assert float(ex.real_softmax(1.0, 0.0)) == pytest.approx(math.log(math.e + 1), rel=1e-6)
  assert float(ex.real_softmax(1e4, 1e4)) == pytest.approx(1e4 + LOG2, rel=1e-7)
  assert float(ex.real_softmax(3e38, -3e38)) == pytest.approx(3e38, rel=1e-7)
  assert float(ex.real_softmax(-3e38, -3e38)) == pytest.approx(-3e38, rel=1e-7)
  assert float(ex.soft_min(0.0, 0.0)) == pytest.approx(-LOG2, rel=1e-6)
  assert float(ex.soft_min(2.0, -1e4)) == pytest.approx(-1e4, rel=1e-7)
  for lam in (1.0, 10.0, 100.0):
    gap = float(ex.scaled_real_softmax(0.3, 0.3, lam)) - 0.3
    assert gap == pytest.approx(LOG2 / lam, rel=1e-4, abs=1e-6)  # equality at a = b
    assert float(ex.scaled_real_softmax(1.3, 0.3, lam)) - 1.3 <= LOG2 / lam
  # float32: the gap e^{−a} falls below half an ulp of a (2^-20 on [8, 16)) near a = 14.5.
  assert 14.0 < ex.first_exact_max(jnp.float32) < 15.0


# --- 6 ------------------------------------------------------------------------------------------


def test_log_partition():
  out = ex.log_partition_checks(jax.random.PRNGKey(0))
  assert out["hessian_vs_covariance"] <= 1e-6
  assert out["min_eigenvalue"] >= -1e-7
  assert out["quadratic_vs_variance"] <= 1e-5
  assert out["max_jensen_gap"] <= 1e-5
  assert out["shift_max_rel_err"] <= 1e-6


def test_naive_logsumexp_overflows_and_the_shift_does_not():
  rows = {r["case"]: r for r in ex.overflow_cases()}
  large, small = rows["large"], rows["very negative"]
  assert large["naive"] == math.inf and small["naive"] == -math.inf
  assert large["exact"] == pytest.approx(1000 + math.log(1 + math.exp(-1) + math.exp(-2)))
  assert large["shifted"] == pytest.approx(large["exact"], rel=1e-7)
  assert small["shifted"] == pytest.approx(-1000 + math.log(1 + math.exp(-1) + math.exp(-2)),
                                           rel=1e-7)
  assert float(ex.shifted_logsumexp(jnp.array([0.0, 0.0]))) == pytest.approx(LOG2)


# --- 7 ------------------------------------------------------------------------------------------


def test_power_checks():
  out = ex.power_checks([1.0, 1.0, 0.0, -1.0])
  assert out["double_new_temperature"] == 2.0 and out["half_new_temperature"] == 0.5
  assert out["double_max_err"] <= 1e-6 and out["half_max_err"] <= 1e-6
  assert out["alpha_inf_max_err"] <= 1e-6  # [1/2, 1/2, 0, 0]
  assert out["alpha_zero_max_err"] <= 1e-5  # [1/4] * 4


# --- §4.5 ---------------------------------------------------------------------------------------


def test_exp_range_float16_and_float32():
  r = ex.exp_range(jnp.float16)
  # float16 is spaced 2^-7 on [8, 16): 11.0859375 is the last below log(65504) = 11.08987.
  assert r["measured"]["x_max"] == 11.0859375
  assert r["confirm"]["exp(next above x_max)"] == math.inf
  assert r["derived"]["x_subnormal"] == pytest.approx(math.log(2.0**-24))
  # Subnormal results survive (computed in float32, then rounded): exp(x) > 0 once exp(x) > 2^-25.
  assert not r["flushes_subnormals"]
  assert r["measured"]["x_nonzero"] == -17.328125  # the first float16 above log(2^-25) = −17.3287
  r = ex.exp_range(jnp.float32)
  assert r["measured"]["x_max"] == pytest.approx(math.log(float(np.finfo(np.float32).max)),
                                                 abs=2 * r["ulp"]["x_max"])
  assert r["derived"]["x_normal"] == pytest.approx(-87.33654475)


def test_exp_range_float64(x64):
  del x64
  r = ex.exp_range(jnp.float64)
  assert r["measured"]["x_max"] == pytest.approx(709.782712893384, abs=1e-12)
  assert r["derived"]["x_subnormal"] == pytest.approx(-744.4400719213812)


def test_ordered_float_keys_round_trip():
  for dtype in (np.float16, np.float32, np.float64, jnp.bfloat16):
    values = np.asarray([-3.5, -1.0, -0.0, 0.0, 1e-3, 2.0, 7.0], dtype)
    keys = [ex._to_key(v) for v in values]
    assert keys == sorted(keys)
    assert all(ex._from_key(k, dtype) == v for k, v in zip(keys, values, strict=True))


# --- The script ---------------------------------------------------------------------------------

TINY = {"exercises_mc_samples": 2000, "exercises_max_block": 2, "exercises_sequence_length": 60,
        "exercises_bt_items": 3, "exercises_bt_games": 1500}


def _main(capsys, **kwargs):
  return run_main(ex, capsys, **TINY, **kwargs)


def test_main_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
  workdir = tmp_path / "run"
  out = _main(capsys, workdir=str(workdir))
  results = json.loads((workdir / "results.json").read_text())
  checks = results["checks"]
  assert len(checks) > 40 and all(c["pass"] for c in checks), [c for c in checks if not c["pass"]]
  assert results["all_pass"] and results["digits"]["trits_for_8"] == 2
  assert results["entropy_bits"] == pytest.approx(math.log2(3), rel=1e-6)
  assert [r["fixed_measured_rate"] for r in results["coding"]] == [2.0, 2.0]
  assert (workdir / "exercises.png").stat().st_size > 10_000
  assert "| ex " in out and "trits for {0..7}" in out and f"{len(checks)}/{len(checks)}" in out
  before = (workdir / "results.json").read_text()
  with pytest.raises(ValueError, match="already holds results.json"):
    _main(capsys, workdir=str(workdir))
  assert (workdir / "results.json").read_text() == before


@pytest.mark.parametrize("name,value", [("exercises_mc_samples", 10),
                                        ("exercises_max_block", 13),
                                        ("exercises_sequence_length", 0),
                                        ("exercises_bt_items", 1),
                                        ("exercises_bt_games", 5)])
def test_bad_flags_are_refused(name, value):
  with pytest.raises(flags.IllegalFlagValueError, match=name):
    with flagsaver.flagsaver(**{name: value}):
      pass


def test_missing_workdir_is_refused_before_work(capsys):
  with pytest.raises(ValueError, match="--workdir is required"):
    _main(capsys, workdir=None)
  assert capsys.readouterr().out == ""
