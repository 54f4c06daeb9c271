#!/usr/bin/env bash
# The GPU table of BENCHMARKS.md: every benchmark once on a CUDA machine whose python3 already
# holds jax[cuda], optax, chex, absl-py, scikit-learn and torch, plus a CUDA run of the numeric
# tests. Usage: OUT=/some/dir bash benchmarks/gpu.sh   (each log is also written under $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sj_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.txt, remember failures
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  [[ $rc == 0 ]] || { echo "=== $name FAILED rc=$rc"; status=1; }
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/machine.txt"
"$PY" -c "import jax, optax, sklearn, torch; print('jax', jax.__version__, jax.devices(), 'optax', optax.__version__, 'sklearn', sklearn.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/machine.txt"
step ce 150 "$PY" -m benchmarks.cross_entropy --repeats=20
step epoch 45 "$PY" -m benchmarks.epoch --repeats=10
step lce 60 "$PY" -m benchmarks.linear_cross_entropy --rss=false --repeats=10
step solve 100 "$PY" -m benchmarks.solve --repeats=5 --sklearn_repeats=1
step tests 120 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_softmax.py tests/test_losses.py \
  tests/test_linear_ce.py tests/test_train.py
exit $status
