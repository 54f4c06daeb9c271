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
  assert [r[0] + r[-11] for r in rows] == ["digitsnewton", "digitslbfgs"] * 2  # split, then all
  assert abs(float(rows[0][4])) < 1e-6  # the split: the same optimum as scikit-learn
  assert all(float(r[-5].rstrip("s")) > 0 and float(r[-4].rstrip("s")) > 0 for r in rows)
