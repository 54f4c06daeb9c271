"""The benchmark scripts run (tiny sizes; no timing is asserted: speed is measured, not tested)."""

from tests.conftest import run_main

_run = run_main


def test_cross_entropy_benchmark_runs(capsys):
  from benchmarks import cross_entropy
  out = _run(cross_entropy, capsys, shapes=["64x10"], dtypes=["float32", "bfloat16"],
             modes=["fresh", "donated"], labels=["ids", "probs"], repeats=5)
  rows = [l for l in out.splitlines() if l.strip().startswith("64x10")]
  assert len(rows) == 8 and sum(" probs |" in r for r in rows) == 4
  assert all(float(r.split("|")[2].split()[0]) > 0 for r in rows)  # optax/ours ratio


def test_epoch_benchmark_runs(capsys):
  from benchmarks import epoch
  out = _run(epoch, capsys, examples=600, features=16, classes=3, minibatch=64, repeats=5)
  assert "scan" in out and "per-step" in out and "bound" in out
  assert "sj.logits (per example, vmapped)" in out


def test_solve_benchmark_runs(capsys):
  from benchmarks import solve
  out = _run(solve, capsys, synthetic=False, repeats=5, sklearn_repeats=1)
  rows = [l.split() for l in out.splitlines() if " newton " in l or " lbfgs " in l]
  # The split, then all; "lbfgs f32" is L-BFGS with float32 products.
  labels = [" ".join(r[-12:-10]) if r[-11] == "f32" else r[-11] for r in rows]
  assert [r[0] for r in rows] == ["digits"] * 6
  assert labels == ["newton", "lbfgs", "lbfgs f32"] * 2
  assert all(abs(float(r[-9])) < 1e-6 for r in rows[:3])  # the split: scikit-learn's optimum
  assert all(float(r[-5].rstrip("s")) > 0 and float(r[-4].rstrip("s")) > 0 for r in rows)
