r"""Fits L2-regularised softmax regression exactly (Newton or L-BFGS, float64), like scikit-learn.

Command (the embedded default data set, scikit-learn's digits; ``--dataset`` also takes the other
registered names or the path of your own .npz/.csv, as in experiments/train.py):

  python -m experiments.solve --workdir=/tmp/solve

Expected (1,438 train / 359 test; C = 1, so λ = 1/(C·n) = 6.954e-4): Newton takes 5 steps to
max|∇J| = 6.1e-7 and J = 0.2106418675 (scikit-learn's ``C·Σl + ½‖W‖²`` = C·n·J = 302.90301),
within 2.4e-9 (relative) of ``LogisticRegression(C=1.0, tol=1e-10)``'s optimum, with the same
test accuracy, 0.9526 (train 0.9889). On two CPU cores compilation takes about 1 s and the solve
about 0.4 s (scikit-learn's fit: 0.14 s). ``--method=lbfgs`` (on centred features) takes 36 steps
to max|∇J| = 8.4e-7, J = 0.2106418714: 0.09 s on this first call, about 0.02 s once compiled
(``benchmarks/solve.py``). ``--product_dtype=float32`` (L-BFGS with float32 products) takes the
same 36 steps and reports J = 0.2106418736, its float32 products' rounding (1e-8 relative; the
float64 J of its solution is 0.2106418714). The record is written to ``--workdir/solve.json``.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from experiments import common
from softmax_jax import solve

_C = flags.DEFINE_float("C", 1.0, "Inverse regularisation strength (scikit-learn's): "
                        "l2 = 1/(C·n_train).", lower_bound=0)
_TOL = flags.DEFINE_float("tol", 1e-6, "Stop when max|grad J| <= tol.", lower_bound=0)
_METHOD = flags.DEFINE_enum("method", "auto", list(solve.METHODS),
                            "newton, lbfgs, or auto (by problem size).")
_PRODUCT_DTYPE = flags.DEFINE_enum(
    "product_dtype", "float64", list(solve.PRODUCT_DTYPES), "The dtype of the products with x: "
    "float32 is L-BFGS's faster mode for well-scaled features (see solve.fit_exact).")
FLAGS = flags.FLAGS  # --dataset, --data_dir, --cache_dir and --workdir are in experiments/common.


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  dataset = common.load_dataset()
  print(f"{common.DATASET.value}: {len(dataset.y_train)} train, {len(dataset.y_test)} test, "
        f"{dataset.num_features} features, {dataset.num_classes} classes")
  _, record = solve.fit_and_evaluate(dataset, C=_C.value, method=_METHOD.value, tol=_TOL.value,
                                     product_dtype=_PRODUCT_DTYPE.value)
  record["dataset"] = common.DATASET.value
  print(f"{record['method']}: J = {record['objective']:.12g} (C·n·J = "
        f"{record['sklearn_objective']:.10g}), max|grad| = {record['grad_norm']:.2e}, "
        f"{record['iterations']} steps, converged = {record['converged']}")
  print(f"compile {record['compile_seconds']:.2f}s, solve {record['solve_seconds']:.3f}s; "
        f"train accuracy {record['train_accuracy']:.4f}, test accuracy "
        f"{record['test_accuracy']:.4f}")
  if common.WORKDIR.value:
    os.makedirs(common.WORKDIR.value, exist_ok=True)
    with open(os.path.join(common.WORKDIR.value, "solve.json"), "w") as f:
      json.dump(record, f, indent=2)


if __name__ == "__main__":
  app.run(main)
