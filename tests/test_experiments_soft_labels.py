"""experiments/soft_labels.py: the distillation loss, and the experiment's main at tiny size."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

import softmax_jax as sj
from experiments import soft_labels
from tests.conftest import run_main

TINY = {"dataset": "toy", "soft_labels_repeats": 2, "soft_labels_steps": 50,
        "soft_labels_epsilons": ["0", "0.2"], "soft_labels_temperatures": ["1", "4"],
        "soft_labels_teacher_hidden": 16, "soft_labels_teacher_steps": 50,
        "soft_labels_teacher_learning_rate": 0.1}


def _main(capsys, **overrides):
  return run_main(soft_labels, capsys, **{**TINY, **overrides})


def _identity_student(o_NxC):
  """x = I and W = o, b = 0: the student's logits are exactly ``o``."""
  n, c = o_NxC.shape
  return sj.Params(W=o_NxC, b=jnp.zeros(c)), jnp.eye(n)


def test_distillation_loss_reduces_to_cross_entropy():
  o = jnp.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]])
  params, x = _identity_student(jnp.concatenate([o, jnp.zeros((1, 3))]))
  soft = jnp.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
  labels = jnp.array([1, 0, 2])
  packed = soft_labels.pack_targets(soft, labels)
  assert packed.shape == (3, 4)
  np.testing.assert_array_equal(packed[:, -1], [1, 0, 2])
  logits = jnp.concatenate([o, jnp.zeros((1, 3))])
  loss = jax.jit(soft_labels.distillation_loss, static_argnames=("temperature", "alpha", "hinton"))
  # α = 1, T = 1: the soft-label cross-entropy; α = 0: the hard one ([9.00013, 3.0696733, log 3]).
  np.testing.assert_allclose(loss(params, x, packed, temperature=1.0, alpha=1.0),
                             sj.cross_entropy(logits, soft, reduction="mean"), rtol=1e-6)
  np.testing.assert_allclose(loss(params, x, packed, temperature=3.0, alpha=0.0),
                             (9.00013 + 3.0696733 + np.log(3)) / 3, rtol=1e-5)
  # Hinton: T²·H(p, softmax(o/T)); plain: H(p, softmax(o)) whatever T. Mixed with weight α.
  t, a = 4.0, 0.25
  hinton = t * t * sj.cross_entropy(logits / t, soft, reduction="mean")
  hard = sj.cross_entropy(logits, labels, reduction="mean")
  np.testing.assert_allclose(loss(params, x, packed, temperature=t, alpha=a),
                             a * hinton + (1 - a) * hard, rtol=1e-6)
  np.testing.assert_allclose(loss(params, x, packed, temperature=t, alpha=1.0, hinton=False),
                             sj.cross_entropy(logits, soft, reduction="mean"), rtol=1e-6)


def test_t_squared_keeps_the_gradient_scale_and_tends_to_logit_matching():
  # Hinton et al. §2.1: the gradient of T²·H(softmax(z/T), softmax(o/T)) with respect to o is
  # T·(softmax(o/T) − softmax(z/T)), which for large T tends to (o − z)/C (zero-mean logits).
  key_o, key_z = jax.random.split(jax.random.key(0))
  o = jax.random.normal(key_o, (4, 5))
  z = 3.0 * jax.random.normal(key_z, (4, 5))
  o, z = o - o.mean(1, keepdims=True), z - z.mean(1, keepdims=True)
  params, x = _identity_student(o)
  norms = []
  for t in (1.0, 10.0, 1000.0):
    packed = soft_labels.pack_targets(sj.softmax(z, temperature=t), jnp.zeros(4, jnp.int32))
    g = jax.grad(soft_labels.distillation_loss)(params, x, packed, temperature=t, alpha=1.0).W
    expected = t * (sj.softmax(o, temperature=t) - sj.softmax(z, temperature=t)) / 4  # the mean
    # t·(p − q) cancels: float32 rounding of p and q (~1e-8 each) is scaled by t/4.
    np.testing.assert_allclose(g, expected, rtol=2e-4, atol=max(1e-6, 3e-8 * t))
    norms.append(float(jnp.linalg.norm(g)))
  np.testing.assert_allclose(g, (o - z) / 5 / 4, atol=1e-3)  # error O(|o|² / T)
  assert norms[1] / norms[2] < 1.5 and norms[2] > 0.1 * norms[0]  # same order at every T


def test_main_tiny(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  out = _main(capsys, workdir=workdir)
  assert "| distill (Hinton) |" in out and "| label smoothing  | 0.2" in out
  assert "| teacher (MLP)" in out
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["dataset"] == "toy" and results["config"]["repeats"] == 2
  rows = {(r["method"], r["epsilon"], r["temperature"]): r for r in results["rows"]}
  assert list(rows) == [("hard labels", 0.0, None), ("label smoothing", 0.2, None),
                        ("distill (Hinton)", None, 1.0), ("distill (Hinton)", None, 4.0),
                        ("distill (plain)", None, 4.0)]
  for r in [*results["rows"], results["teacher"]]:
    assert len(r["accuracy"]) == 2
    for m in ("accuracy", "ece", "agree"):
      assert 0 <= r[m + "_mean"] <= 1, (r, m)
    assert 0 < r["nll_mean"] < np.log(3)  # better than the uniform guess
  hard = rows[("hard labels", 0.0, None)]
  assert hard["accuracy_mean"] > 0.9 and results["teacher"]["accuracy_mean"] > 0.9
  assert hard["delta_accuracy"] == [0.0, 0.0]
  # Smoothing and plain soft targets at T = 4 make the student less confident: a higher NLL.
  assert rows[("label smoothing", 0.2, None)]["nll_mean"] > hard["nll_mean"]
  assert (rows[("distill (plain)", None, 4.0)]["nll_mean"]
          > rows[("distill (Hinton)", None, 4.0)]["nll_mean"])
  assert os.path.getsize(os.path.join(workdir, "soft_labels.png")) > 10_000

  before = open(os.path.join(workdir, "results.json")).read()
  with pytest.raises(ValueError, match="already holds results.json"):
    _main(capsys, workdir=workdir)
  assert open(os.path.join(workdir, "results.json")).read() == before


@pytest.mark.parametrize("flag, value", [
    ("soft_labels_epsilons", ["0", "1.5"]),
    ("soft_labels_epsilons", ["0", "x"]),
    ("soft_labels_epsilons", []),
    ("soft_labels_temperatures", ["0", "2"]),
    ("soft_labels_temperatures", ["-1"]),
    ("soft_labels_alpha", 1.5),
    ("soft_labels_steps", 0),
    ("soft_labels_learning_rate", 0.0),
    ("soft_labels_repeats", 0),
    ("soft_labels_teacher_hidden", 0),
    ("soft_labels_num_bins", 0),
])
def test_bad_flags_are_refused(tmp_path, capsys, flag, value):
  with pytest.raises(flags.IllegalFlagValueError, match=flag):
    _main(capsys, workdir=str(tmp_path / "run"), **{flag: value})
  assert not os.path.exists(tmp_path / "run")


def test_dataset_without_splits_is_refused_before_work(tmp_path, capsys):
  with pytest.raises(ValueError, match="--dataset='fashion_mnist'.*digits"):
    _main(capsys, workdir=str(tmp_path / "run"), dataset="fashion_mnist")
  assert not os.path.exists(tmp_path / "run")
  with pytest.raises(ValueError, match="--workdir is required"):
    _main(capsys, workdir=None)
